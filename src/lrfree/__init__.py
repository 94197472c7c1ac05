"""lrfree: PyTorch optimizers that choose their own learning rate.

Public API only; see ``lrfree.Composed`` for the composition of a direction, a step-size
rule and a block partition, and the named optimizers for each paper's defaults.
"""

from __future__ import annotations

from .auto import Auto
from .blocks import GRANULARITIES
from .directions import DIRECTIONS
from .optimizer import Composed
from .optimizers.adalip import AdaLip, AdaLipU, AdamLip, AdamLipU, RMSLip, RMSLipU
from .optimizers.adler import ADLER
from .optimizers.hypergradient import SGDCAMHD, SGDHD, SGDNCAMHD, SGDNHD, AdamCAMHD, AdamHD
from .optimizers.layerwise import SGDLW, AdamWLW
from .optimizers.tlr import SGDTLR, AdamTLR
from .rules import RULES

__version__ = "0.1.0.dev0"

__all__ = [
    "ADLER",
    "DIRECTIONS",
    "GRANULARITIES",
    "RULES",
    "SGDCAMHD",
    "SGDHD",
    "SGDLW",
    "SGDNCAMHD",
    "SGDNHD",
    "SGDTLR",
    "AdaLip",
    "AdaLipU",
    "AdamCAMHD",
    "AdamHD",
    "AdamLip",
    "AdamLipU",
    "AdamTLR",
    "AdamWLW",
    "Auto",
    "Composed",
    "RMSLip",
    "RMSLipU",
    "__version__",
]
