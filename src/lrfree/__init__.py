"""lrfree: PyTorch optimizers that choose their own learning rate.

Public API only; see ``lrfree.Composed`` for the composition of a direction, a step-size
rule and a block partition, and the named optimizers for each paper's defaults.
"""

from __future__ import annotations

from .blocks import GRANULARITIES
from .directions import DIRECTIONS
from .optimizer import Composed
from .rules import RULES

__version__ = "0.1.0.dev0"

__all__ = [
    "DIRECTIONS",
    "GRANULARITIES",
    "RULES",
    "Composed",
    "__version__",
]
