"""Exact Hessian blocks: ``d_b^T H_bb d_b`` by double backward, and a dense oracle.

``H_bb`` is the *diagonal block* of the Hessian of the loss w.r.t. block ``b``'s parameters (the
other blocks held fixed). Not ``d_b . (H d)_b`` with the *full* ``d``: that adds the cross-block
terms ``d_b^T H_bc d_c``, which on an MLP changed the value by 5x and even its sign.

>>> import torch
>>> from lrfree.curvature import full_hessian_dense, hessian_block_forms
>>> w = torch.tensor([1.0, 2.0], requires_grad=True)
>>> (g,) = torch.autograd.grad((w**3).sum(), [w], create_graph=True)  # H = diag(6 w)
>>> float(hessian_block_forms([g], [w], [torch.ones(2)], [[0]])[0])  # 6 + 12
18.0
>>> full_hessian_dense(lambda v: (v**3).sum(), [w])
tensor([[ 6.,  0.],
        [ 0., 12.]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._common import Blocks, block_dtype, dot

__all__ = ["full_hessian_dense", "hessian_block_forms"]


def hessian_block_forms(
    grads: Sequence[Tensor],
    params: Sequence[Tensor],
    vectors: Sequence[Tensor | None],
    blocks: Blocks,
) -> list[Tensor]:
    """``d_b^T H_bb d_b`` per block from gradients that carry a graph.

    Args:
        grads: ``dL/dp`` per parameter, computed with ``create_graph=True``.
        params: the parameters (leaves of the graph), indexed like ``grads``.
        vectors: ``d`` per parameter (``None``: not in any block).
        blocks: lists of parameter indices.

    For each block ``b``: ``s_b = sum_{i in b} <g_i, d_i>`` and ``(H_bb d_b) = d s_b / d p_b``
    (a backward restricted to the block's parameters), then ``q_b = <d_b, H_bb d_b>``.
    Parameters of the block whose gradient has no graph (they do not influence the loss
    twice, e.g. a last-layer bias under MSE has a graph; an unused one has none) contribute 0.
    """
    out = []
    with torch.enable_grad():
        for idx in blocks:
            dtype = block_dtype(params, idx)
            live = [i for i in idx if vectors[i] is not None and grads[i].requires_grad]
            if not live:
                out.append(torch.zeros((), dtype=dtype, device=params[idx[0]].device))
                continue
            s = dot(
                [grads[i] for i in live], [vectors[i].detach() for i in live], grads[live[0]].dtype
            )
            hv = torch.autograd.grad(
                s,
                [params[i] for i in live],
                retain_graph=True,  # the graph is shared by every block (and maybe the user)
                allow_unused=True,
            )
            out.append(dot(list(hv), [vectors[i] for i in live], dtype).detach())
    return out


def full_hessian_dense(loss_of_params: Callable[..., Tensor], params: Sequence[Tensor]) -> Tensor:
    """The dense Hessian of ``loss_of_params(*params)`` (a test oracle for tiny networks)."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]

    def f(v: Tensor) -> Tensor:
        parts = torch.split(v, sizes)
        return loss_of_params(*[t.reshape(s) for t, s in zip(parts, shapes)])

    return torch.autograd.functional.hessian(f, flat)
