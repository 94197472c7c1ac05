"""What every curvature route shares: the block type, the accumulating dot product, the block's
accumulation dtype, and the error for attention kernels without double backward."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..dtypes import acc_dtype

Blocks = Sequence[Sequence[int]]
"""Blocks as lists of parameter indices."""

PairBlocks = Sequence[Sequence[tuple[int, Tensor]]]
"""Blocks as ``(parameter index, vector)`` pairs (the vector: the block's part of ``d``)."""

# torch's message when a fused attention kernel (CPU flash, CUDA flash / efficient / cuDNN) is
# differentiated twice: "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward
# is not implemented"
_NO_DOUBLE_BACKWARD_ATTENTION = re.compile(
    r"derivative for aten::_?\w*(scaled_dot_product|flash_attention|efficient_attention)\w*"
    r" is not implemented"
)


def _op_name(err: BaseException) -> str:
    m = re.search(r"aten::\w+", str(err))
    return m.group(0) if m else "torch"


@contextlib.contextmanager
def second_order_errors(who: str, alternative: str) -> Iterator[None]:
    """Turn torch's raw error for an attention kernel without double backward into one that
    names the fix.

    ``F.scaled_dot_product_attention`` picks a fused kernel (on the CPU the flash kernel) whose
    backward has no derivative, so any second-order pass through it fails with
    ``derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented``. The MATH backend is differentiable twice. Re-raised as a ``RuntimeError``
    naming ``who`` (the rule and route), the fix and ``alternative`` (a route that needs no
    double backward), chained to the original (``from err``); other errors pass unchanged.

    >>> with second_order_errors("my rule", "use the closure route"):
    ...     pass  # a second-order pass; any other error passes through unchanged
    """
    try:
        yield
    except RuntimeError as err:
        if not _NO_DOUBLE_BACKWARD_ATTENTION.search(str(err)):
            raise
        raise RuntimeError(
            f"{who}: the model's scaled_dot_product_attention ran a fused attention kernel "
            f"that has no double backward ({_op_name(err)}). Wrap the forward in "
            "`with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):` "
            f"(the MATH backend is differentiable twice), or {alternative}"
        ) from err


def dot(xs: Sequence[Tensor | None], ys: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """``sum_i <x_i, y_i>`` in ``dtype``, accumulated in order from a 0-d zero (``None``
    entries of ``xs`` are skipped); differentiable. ``ys`` must not be empty."""
    acc = torch.zeros((), dtype=dtype, device=ys[0].device)
    for x, y in zip(xs, ys):
        if x is not None:
            acc = acc + (x.to(dtype) * y.to(dtype)).sum()
    return acc


def block_dtype(params: Sequence[Tensor], idx: Sequence[int]) -> torch.dtype:
    """The accumulation dtype of a block's numbers (``lrfree.dtypes.acc_dtype``)."""
    return acc_dtype(*(params[i].dtype for i in idx))
