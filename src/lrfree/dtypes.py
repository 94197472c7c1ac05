"""The accumulation dtype of rates and reductions (imported by blocks, curvature and
distributed, at the bottom of the import graph)."""

from __future__ import annotations

import torch

__all__ = ["acc_dtype"]


def acc_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype rates and reductions use: at least float32, float64 for float64 params.

    >>> import torch
    >>> acc_dtype(torch.bfloat16), acc_dtype(torch.float32, torch.float64)
    (torch.float32, torch.float64)
    """
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out
