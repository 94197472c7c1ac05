"""Gauss-Newton blocks and the output Jacobian-vector products they need (LW and ADLER).

The Gauss-Newton (GGN) block of block ``b`` along ``d_b`` is ``(J_b d_b)^T Q (J_b d_b)``: ``J_b``
the Jacobian of the network outputs w.r.t. the block's parameters, ``Q`` the Hessian of the loss
w.r.t. the outputs (PSD for convex losses; ``lrfree.curvature.loss``). The products
``v_b = J_b u_b`` come from one of three routes, all here:

* ``jvp_double_vjp(outputs, params, blocks)``: through the live graph of the user's forward
  (``retain_graph``) by the double-VJP trick: ``w(z) = J^T z`` is built once with a dummy ``z``
  (``create_graph``), and ``J u_b = d <w_b(z), u_b> / dz`` is one backward through that graph,
  linear in ``z``, per block. Used by ``ggn_block_forms`` (LW, ``curvature="ggn"``) and by
  ADLER's ``step(outputs=...)``.
* ``LinearGraph.tangents``: the same backward, through a gradient graph that is already linear
  in ``z = dL/dF`` (ADLER's ``backward(opt, loss, outputs)`` builds it during the gradient pass,
  so no second backward is needed).
* ``jvp_forward(model, inputs, params, blocks)``: forward-mode AD in an extra forward per block
  (ADLER's ``step(model=, inputs=)``).

``blocks`` in these functions are lists of ``(parameter index, u)`` pairs.

>>> import torch
>>> from lrfree.curvature import ggn_block_forms, jvp_double_vjp
>>> lin = torch.nn.Linear(2, 1, bias=False)
>>> with torch.no_grad():
...     _ = lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
>>> x = torch.tensor([[1.0, 2.0]])
>>> out = lin(x)  # J u = x u^T for the weight
>>> jvp_double_vjp(out, [lin.weight], [[(0, torch.ones(1, 2))]])
[tensor([[3.]])]
>>> q = ggn_block_forms(out, [lin.weight], [torch.ones(1, 2)], [[0]], lambda z: (z**2).sum())
>>> float(q[0])  # (J u)^T Q (J u) = 3 * 2 * 3
18.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._common import Blocks, PairBlocks, block_dtype
from .loss import loss_output_hvp

__all__ = ["LinearGraph", "ggn_block_forms", "jvp_double_vjp", "jvp_forward"]


# --------------------------------------------------------------- reverse mode
def _tangents(z: Tensor, w_of: dict[int, Tensor | None], blocks: PairBlocks) -> list[Tensor | None]:
    """``J u_b = d <w_b(z), u_b> / dz`` per block, ``w(z) = J^T z`` a graph linear in ``z``;
    ``None`` where the block's ``w`` has no graph (the outputs do not depend on the block).

    One backward through that graph per block (``grad_outputs = u``: no elementwise product
    and sum is recorded); the graph is kept for the caller.
    """
    out: list[Tensor | None] = []
    for blk in blocks:
        pairs = [(w_of[i], u) for i, u in blk if w_of.get(i) is not None]
        pairs = [(w, u) for w, u in pairs if w.requires_grad]  # type: ignore[union-attr]
        if not pairs:
            out.append(None)
            continue
        (jv,) = torch.autograd.grad(
            [w for w, _ in pairs],
            z,
            [u.to(w.dtype) for w, u in pairs],  # type: ignore[union-attr]
            retain_graph=True,
            allow_unused=True,
        )
        out.append(None if jv is None else jv.detach())
    return out


def _output_tangents(
    outputs: Tensor, params: Sequence[Tensor], blocks: PairBlocks, no_graph: str | None
) -> list[Tensor | None]:
    """``_tangents`` through the live graph of ``outputs`` (builds ``w(z) = J^T z``)."""
    used = sorted({i for blk in blocks for i, _ in blk})
    with torch.enable_grad():
        z = torch.zeros_like(outputs, requires_grad=True)
        try:
            ws = torch.autograd.grad(
                outputs, [params[i] for i in used], z, create_graph=True, allow_unused=True
            )
        except RuntimeError as e:
            if no_graph is None or "is not implemented" in str(e):  # no double backward
                raise
            raise RuntimeError(no_graph) from e
        return _tangents(z, dict(zip(used, ws)), blocks)


def jvp_double_vjp(
    outputs: Tensor, params: Sequence[Tensor], blocks: PairBlocks, *, no_graph: str | None = None
) -> list[Tensor]:
    """``J u_b`` per block through the live graph of ``outputs`` (the double-VJP trick).

    ``blocks``: per block, ``(index into params, u)`` pairs. ``w(z) = J^T z`` is built once
    with a dummy ``z`` (``create_graph``); ``J u_b = d <w_b(z), u_b> / dz`` is one backward
    through that graph (linear in ``z``) per block. A block the outputs do not depend on gets
    zeros. ``no_graph``: the message of the ``RuntimeError`` raised (chained to torch's) when
    the outputs' graph is gone (``None``: torch's error as it is).

    >>> import torch
    >>> w = torch.tensor([2.0, 3.0], requires_grad=True)
    >>> jvp_double_vjp(w * w, [w], [[(0, torch.ones(2))]])  # J = diag(2 w)
    [tensor([4., 6.])]
    """
    ts = _output_tangents(outputs, params, blocks, no_graph)
    return [torch.zeros_like(outputs) if t is None else t for t in ts]


class LinearGraph:
    """A gradient pass kept for the curvature step: ``z = dL/dF`` (a leaf that stood in for
    the loss gradient at the outputs ``F``), the parameter gradients ``w = J^T z + (terms
    without z)`` as a graph linear in ``z`` (by parameter ``id``), and ``dloss``: ``dL/dF``
    itself with the graph of the loss head (``create_graph``), so that
    ``Q v = d <dL/dF, v> / dF`` is the Hessian of the loss actually computed.

    ADLER's ``backward(opt, loss, outputs)`` builds it by swapping ``dL/dF`` for ``z`` in a
    hook on ``outputs`` during a ``create_graph`` gradient pass.

    >>> import torch
    >>> w = torch.tensor([2.0, 3.0], requires_grad=True)
    >>> out = w * w
    >>> z = torch.ones(2, requires_grad=True)  # stands in for dL/dF
    >>> (g,) = torch.autograd.grad(out, [w], z, create_graph=True)  # J^T z, linear in z
    >>> graph = LinearGraph(out, z, {id(w): g}, torch.zeros(2))
    >>> graph.tangents([w], [[(0, torch.ones(2))]]), graph.linear
    ([tensor([4., 6.])], True)
    """

    def __init__(
        self, outputs: Tensor, z: Tensor, grads: dict[int, Tensor | None], dloss: Tensor
    ) -> None:
        self.outputs, self.z, self.grads, self.dloss = outputs, z, grads, dloss

    @property
    def linear(self) -> bool:
        """Whether the loss is linear in the outputs (its gradient has no graph: ``Q = 0``)."""
        return not self.dloss.requires_grad

    def loss_hvp(self, vs: Sequence[Tensor]) -> list[Tensor]:
        """``Q v`` for each ``v``, ``Q = d^2 L / dF^2`` of the computed loss (autograd)."""
        if self.linear:
            return [torch.zeros_like(v) for v in vs]
        out = []
        with torch.enable_grad():
            for v in vs:
                (qv,) = torch.autograd.grad(
                    self.dloss, self.outputs, v.to(self.dloss.dtype), retain_graph=True,
                    allow_unused=True,
                )  # fmt: skip
                out.append(torch.zeros_like(v) if qv is None else qv.detach())
        return out

    def tangents(self, params: Sequence[Tensor], blocks: PairBlocks) -> list[Tensor]:
        """``J u_b`` per block (``jvp_double_vjp``'s backward, through this graph)."""
        w_of = {i: self.grads.get(id(params[i])) for blk in blocks for i, _ in blk}
        with torch.enable_grad():
            ts = _tangents(self.z, w_of, blocks)
        return [torch.zeros_like(self.z) if t is None else t for t in ts]


# --------------------------------------------------------------- forward mode
def jvp_forward(
    model: nn.Module,
    inputs: Any,
    params: Sequence[Tensor],
    blocks: PairBlocks,
    *,
    who: str = "step(model=...)",
) -> tuple[Tensor, list[Tensor]]:
    """``(outputs, [J u_b per block])`` by forward-mode AD, one extra forward per block.

    Buffers are passed as copies (BatchNorm running statistics of ``model`` stay untouched);
    ``inputs``: a tensor, a tuple of positional arguments or a dict of keyword arguments.
    Attention runs with the MATH SDPA backend (it has forward-mode AD on CPU). A parameter
    that ``model`` does not hold is a ``ValueError`` that starts with ``who``.

    >>> import torch
    >>> lin = torch.nn.Linear(2, 1)
    >>> x = torch.tensor([[1.0, 2.0]])
    >>> out, (jv,) = jvp_forward(lin, x, [lin.weight], [[(0, torch.ones(1, 2))]])
    >>> jv  # J u = x u^T
    tensor([[3.]])
    """
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    missing = [i for blk in blocks for i, _ in blk if id(params[i]) not in names]
    if missing:
        raise ValueError(
            f"{who}: the model does not hold some parameters of this optimizer "
            f"(indices {missing[:5]} of the group); pass the module they belong to, or use "
            "step(outputs=...)"
        )
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    args, kwargs = (
        ((), inputs)
        if isinstance(inputs, dict)
        else ((inputs,), {})
        if isinstance(inputs, Tensor)
        else (tuple(inputs), {})
    )
    outputs: Tensor | None = None
    jvps: list[Tensor] = []
    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        for blk in blocks:
            keys = [names[id(params[i])] for i, _ in blk]
            primals = {k: params[i].detach() for k, (i, _) in zip(keys, blk)}
            tangents = {k: u.to(params[i].dtype) for k, (i, u) in zip(keys, blk)}

            def f(ps: dict[str, Tensor]) -> Tensor:
                call = {**ps, **{n: b.clone() for n, b in buffers.items()}}
                return torch.func.functional_call(model, call, args, kwargs, strict=False)

            out, jv = torch.func.jvp(f, (primals,), (tangents,))
            outputs = out if outputs is None else outputs
            jvps.append(jv)
    assert outputs is not None
    return outputs, jvps


# ------------------------------------------------------------ Gauss-Newton blocks
def ggn_block_forms(
    outputs: Tensor,
    params: Sequence[Tensor],
    vectors: Sequence[Tensor | None],
    blocks: Blocks,
    loss_fn: Callable[[Tensor], Tensor],
) -> list[Tensor]:
    """``(J_b d_b)^T Q (J_b d_b)`` per block: the Gauss-Newton diagonal block (PSD).

    Args:
        outputs: the network outputs with their graph to ``params`` still alive.
        params: the parameters, indexed like ``vectors``.
        vectors: ``d`` per parameter (``None``: not in any block).
        blocks: lists of parameter indices.
        loss_fn: the loss as a function of the outputs (targets bound), same reduction.

    ``J_b d_b`` by ``jvp_double_vjp``, ``Q v`` by autograd on ``loss_fn``
    (``lrfree.curvature.loss.loss_output_hvp``: exact for any loss, no closed form needed).
    A block the outputs do not depend on gets 0 (no ``Q v`` is computed for it).
    """
    pairs = [[(i, v.detach()) for i in idx if (v := vectors[i]) is not None] for idx in blocks]
    jvps = _output_tangents(outputs, params, pairs, None)
    todo = [v for v in jvps if v is not None]
    qvs = iter(loss_output_hvp(outputs, loss_fn, todo)) if todo else iter(())
    out = []
    for idx, jv in zip(blocks, jvps):
        dtype = block_dtype(params, idx)
        if jv is None:
            out.append(torch.zeros((), dtype=dtype, device=outputs.device))
        else:
            out.append((jv.to(dtype) * next(qvs).to(dtype)).sum())
    return out
