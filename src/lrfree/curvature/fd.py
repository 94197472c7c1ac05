"""Hessian blocks by finite differences of gradients (no graph needed), local or sharded.

For setups where no second-order graph is available (a closure, DDP / FSDP2, compiled models):
only block ``b`` is moved, by ``h d_b``, and

    q_b ~= <d_b, g_b(W + h d_b) - g_b(W)> / h                 (forward)
    q_b ~= <d_b, g_b(W + h d_b) - g_b(W - h d_b)> / (2 h)     (central)

with ``h = rel_step * (||W_b|| + 1e-3) / ||d_b||``. One implementation serves plain and sharded
(FSDP2 / DTensor) parameters: on sharded ones the differences run on the local shards and the
block sums (the norms, then the final dot products) are completed across the shard groups by
``lrfree.distributed``'s collectives. Approximate: see docs/layerwise.md for the measured error.

Also here: the context managers that keep the extra gradient evaluations invisible to training
(``preserve_forward_buffers``, ``preserve_buffers``, ``preserve_rng``).

>>> import torch
>>> from lrfree.curvature import fd_hessian_block_forms
>>> w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
>>> def grad_fn():  # the gradient of sum(w^3) at the current w: H = diag(6 w)
...     return torch.autograd.grad((w**3).sum(), [w])
>>> q = fd_hessian_block_forms(grad_fn, [w], [torch.ones(2, dtype=torch.float64)], [[0]],
...                            central=True)
>>> round(float(q[0]), 6)  # 6 + 12
18.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..distributed import (
    block_partial_dot,
    block_shard_groups,
    complete_block_sums,
    is_sharded,
    local,
)
from ._common import Blocks, block_dtype, dot

__all__ = [
    "fd_hessian_block_forms",
    "preserve_buffers",
    "preserve_forward_buffers",
    "preserve_rng",
]


# ------------------------------------------------------------ state preservation
@contextlib.contextmanager
def preserve_rng(device: torch.device | None = None) -> Iterator[None]:
    """Restore the CPU (and the device's CUDA) RNG state on exit: every gradient evaluation
    inside sees the same random numbers (dropout masks) and the training stream is
    unaffected.

    >>> import torch
    >>> with preserve_rng():
    ...     a = torch.rand(1)
    >>> bool(torch.rand(1) == a)
    True
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=True):
        yield


@contextlib.contextmanager
def preserve_buffers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Restore every buffer of ``modules`` (BatchNorm running statistics,
    ``num_batches_tracked``) on exit, also on error.

    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(2)
    >>> with preserve_buffers([bn]):
    ...     _ = bn(torch.randn(4, 2))
    >>> int(bn.num_batches_tracked)
    0
    """
    saved = [(b, b.detach().clone()) for m in modules for b in m.buffers() if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


@contextlib.contextmanager
def preserve_forward_buffers(modules: Sequence[nn.Module] = ()) -> Iterator[None]:
    """Restore on exit (also on error) every buffer of every module whose forward runs inside
    the block, and every buffer of ``modules``.

    An optimizer holds parameters, not modules, so the modules that a closure runs are found
    as they run: a global forward pre-hook (``torch.nn.modules.module.
    register_module_forward_pre_hook``, removed on exit) records, before a module's first
    forward inside the block, the buffers of that module and of all its submodules (so also a
    buffer that a parent's forward updates in a child). On exit each recorded buffer gets its
    saved value back, in place; a buffer that a forward *replaced* by a new tensor is put back
    as the original tensor. BatchNorm running statistics and ``num_batches_tracked`` therefore
    end as they were before the block, however many forward passes ran inside it. Forwards
    that do not go through ``nn.Module.__call__`` (a compiled region whose outer module is not
    called) are not seen: name their modules in ``modules``. The hook is process-global: a
    module run concurrently by another thread inside the block would be restored as well.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    >>> with preserve_forward_buffers():
    ...     _ = net(torch.randn(4, 2))
    >>> int(net[1].num_batches_tracked)
    0
    """
    seen: set[int] = set()
    saved: list[tuple[nn.Module, str, Tensor, Tensor]] = []

    def record(root: nn.Module) -> None:
        if id(root) in seen:  # its whole subtree was recorded with it
            return
        for m in root.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            for name, b in m.named_buffers(recurse=False):
                if b is not None:
                    saved.append((m, name, b, b.detach().clone()))

    def pre_hook(module: nn.Module, args: Any) -> None:
        record(module)

    for m in modules:
        record(m)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()
        with torch.no_grad():
            for m, name, b, v in saved:
                b.copy_(v)
                if getattr(m, name, None) is not b:
                    setattr(m, name, b)


# ------------------------------------------------------------------ block sums
class _LocalSums:
    """Block sums over plain tensors: ``dot`` in the block's dtype, nothing to complete."""

    def partial(
        self, xs: Sequence[Tensor | None], ys: Sequence[Tensor | None], live: Sequence[int],
        dtype: torch.dtype,
    ) -> Tensor:  # fmt: skip
        return dot([xs[i] for i in live], [ys[i] for i in live], dtype)  # type: ignore[misc]

    def zero(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.zeros((), dtype=dtype, device=device)

    def scale(self, part: Tensor, denom: Tensor) -> Tensor:
        return part / denom

    def complete(self, parts: Sequence[Tensor], repeat: int = 1) -> list[Tensor]:
        return list(parts)


class _ShardSums:
    """Block sums over DTensor members: per-block partial sums on the local shards (sharded
    and plain members apart), completed by one packed all-reduce per shard group
    (``lrfree.distributed.complete_block_sums``)."""

    def __init__(self, params: Sequence[Tensor], blocks: Blocks) -> None:
        self.params = params
        self.groups = [
            block_shard_groups(params, idx, f"block {b}") for b, idx in enumerate(blocks)
        ]

    def partial(
        self, xs: Sequence[Tensor | None], ys: Sequence[Tensor | None], live: Sequence[int],
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        return block_partial_dot(self.params, xs, ys, live, dtype)

    def zero(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        z = torch.zeros((), dtype=dtype, device=device)
        return z, z.clone()

    def scale(self, part: tuple[Tensor, Tensor], denom: Tensor) -> tuple[Tensor, Tensor]:
        return part[0] / denom, part[1] / denom

    def complete(self, parts: Sequence[tuple[Tensor, Tensor]], repeat: int = 1) -> list[Tensor]:
        """``parts``: ``repeat`` lists of one partial per block, concatenated."""
        # every rank packs every block (zeros included): the collective sizes always agree
        return complete_block_sums(parts, self.groups * repeat)


# ------------------------------------------------------------ finite differences
def _grads_at(
    grad_fn: Callable[[], Sequence[Tensor | None]],
    params: Sequence[Tensor],
    saved: Sequence[Tensor],
    vectors: Sequence[Tensor | None],
    live: Sequence[int],
    h: Tensor,
    dtype: torch.dtype,
) -> list[Tensor]:
    """The gradients of the ``live`` parameters at ``W + h d`` (only ``live`` moved)."""
    with torch.no_grad():
        for i in live:
            v = vectors[i]
            assert v is not None
            params[i].copy_((saved[i].to(dtype) + h * v.to(dtype)).to(params[i].dtype))
    gs = grad_fn()
    with torch.no_grad():
        for i in live:
            params[i].copy_(saved[i])
    out = []
    for i in live:
        g = gs[i]
        out.append(torch.zeros_like(params[i]) if g is None else g.detach().clone())
    return out


def fd_hessian_block_forms(
    grad_fn: Callable[[], Sequence[Tensor | None]],
    params: Sequence[Tensor],
    vectors: Sequence[Tensor | None],
    blocks: Blocks,
    *,
    rel_step: float | None = None,
    central: bool = False,
    base_grads: Sequence[Tensor | None] | None = None,
    sq_norms: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
) -> list[Tensor]:
    """``d_b^T H_bb d_b`` per block by finite differences of gradients (no graph needed).

    ``q_b ~= <d_b, g_b(W + h d_b) - g_b(W)> / h`` (forward) or
    ``<d_b, g_b(W + h d_b) - g_b(W - h d_b)> / (2 h)`` (central), with only block ``b``
    moved, so the value is the diagonal block's. The step is
    ``h = rel_step * (||W_b|| + 1e-3) / ||d_b||`` (a move of ``rel_step`` relative to the
    weights); default ``rel_step``: ``sqrt(eps)`` (forward) or ``eps^(1/3)`` (central) of
    the parameter dtype.

    Args:
        grad_fn: evaluates the gradients at the current parameters (one per parameter, or
            ``None``), e.g. a training closure followed by reading ``p.grad``.
        base_grads: gradients at ``W`` evaluated by the same ``grad_fn`` (forward
            differences); computed if not given.
        sq_norms: ``(||d_b||^2, ||W_b||^2)`` per block, complete (e.g. packed into the
            caller's own reduction); computed if not given.

    Sharded (DTensor / FSDP2) parameters: the same differences on the local shards, with the
    norms and the final dot products completed across the shard groups: two packed
    all-reduces per call (the norms first, so every rank moves its shard by the same ``h``;
    one when ``sq_norms`` is given), plus what the ``grad_fn`` evaluations communicate
    (FSDP2's all-gathers and reduce-scatters). The gradients of a sharded model are already
    averaged over the data-parallel ranks, so the result is the global value.

    The parameters are restored bit for bit afterwards, also on error. ``grad_fn`` runs
    ``len(blocks) + 1`` times (forward; ``+1`` only without ``base_grads``) or
    ``2 * len(blocks)`` times (central). This function does not touch RNG state or buffers:
    wrap it in ``preserve_rng`` / ``preserve_forward_buffers``.
    """
    sharded = any(is_sharded(p) for p in params)
    sums: _LocalSums | _ShardSums = _ShardSums(params, blocks) if sharded else _LocalSums()
    dt = params[0].dtype if params[0].is_floating_point() else torch.float32
    eps = torch.finfo(dt).eps
    rel = rel_step if rel_step is not None else (eps ** (1 / 3) if central else eps**0.5)
    locs = [local(p.detach()) for p in params]  # plain tensors: the parameters' storage
    saved = [p.clone() for p in locs]
    vloc = [None if v is None else local(v).detach() for v in vectors]
    dtypes = [block_dtype(params, idx) for idx in blocks]
    lives = [[i for i in idx if vloc[i] is not None] for idx in blocks]
    nb = len(blocks)

    def block_sum(xs: Sequence[Tensor | None], ys: Sequence[Tensor | None], b: int) -> Any:
        if not lives[b]:  # a zero that still takes part in the packed reductions
            return sums.zero(dtypes[b], locs[blocks[b][0]].device)
        return sums.partial(xs, ys, lives[b], dtypes[b])

    if sq_norms is not None:
        norms = list(sq_norms[0]) + list(sq_norms[1])
    else:
        norms = sums.complete(
            [block_sum(vloc, vloc, b) for b in range(nb)]
            + [block_sum(saved, saved, b) for b in range(nb)],
            repeat=2,
        )

    def local_grads() -> list[Tensor | None]:
        return [None if g is None else local(g) for g in grad_fn()]

    parts = []
    try:
        if not central and base_grads is None:
            base_grads = [None if g is None else g.detach().clone() for g in local_grads()]
        for b, live in enumerate(lives):
            dtype = dtypes[b]
            if not live:
                parts.append(block_sum(vloc, vloc, b))
                continue
            dn, wn = norms[b].sqrt(), norms[nb + b].sqrt()
            h = rel * (wn + 1e-3) / dn.clamp_min(torch.finfo(dtype).tiny)
            plus = _grads_at(local_grads, locs, saved, vloc, live, h, dtype)
            if central:
                minus = _grads_at(local_grads, locs, saved, vloc, live, -h, dtype)
                denom = 2 * h
            else:
                assert base_grads is not None
                base = [base_grads[i] for i in live]
                minus = [
                    torch.zeros_like(locs[i]) if g is None else local(g) for i, g in zip(live, base)
                ]
                denom = h
            diff: list[Tensor | None] = [None] * len(params)  # by position, as block_sum reads
            for i, a, m in zip(live, plus, minus):
                diff[i] = a.to(dtype) - m.to(dtype)
            parts.append(sums.scale(block_sum(diff, vloc, b), denom))
    finally:
        with torch.no_grad():
            for p, s in zip(locs, saved):
                p.copy_(s)
    return sums.complete(parts)
