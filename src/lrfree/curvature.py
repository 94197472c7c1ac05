"""Per-block curvature: exact quadratic forms of the Hessian and Gauss-Newton diagonal blocks.

For a parameter vector split into blocks ``b`` (a block: a list of parameter tensors, e.g. the
weight and bias of one layer) and a vector ``d`` with one tensor per parameter, this module
computes, per block,

* **Hessian block**  ``q_b = d_b^T H_bb d_b``  where ``H_bb`` is the *diagonal block* of the
  Hessian of the loss w.r.t. the block's parameters (the other blocks held fixed);
* **Gauss-Newton block**  ``q_b = (J_b d_b)^T Q (J_b d_b)``  where ``J_b`` is the Jacobian of
  the network outputs w.r.t. the block and ``Q`` the Hessian of the loss w.r.t. the outputs
  (PSD for convex losses). For networks that are piecewise linear in each single layer (ReLU,
  no BatchNorm) the two coincide.

Neither is ``d_b . (H d)_b`` with the *full* ``d``: that adds the cross-block terms
``d_b^T H_bc d_c``, which on an MLP changed the value by 5x and even its sign (DESIGN.md §4).

Three routes, all sharing the gradient's graph / batch:

* ``hessian_block_forms(grads, params, vectors, blocks)``: the gradients carry a graph
  (``loss.backward(create_graph=True)`` or ``torch.autograd.grad(..., create_graph=True)``);
  one double backward per block, each one restricted to the block's parameters, reusing the
  one graph. Exact.
* ``ggn_block_forms(outputs, params, vectors, blocks, loss_fn)``: the outputs' graph is alive
  (``retain_graph``); ``J_b d_b`` by the double-VJP trick (a backward through the linear
  vector-Jacobian graph per block), ``Q v`` by autograd on ``loss_fn(outputs)`` (exact for any
  loss, no closed form needed). Exact.
* ``fd_hessian_block_forms(grad_fn, params, vectors, blocks)``: finite differences of
  gradients along each block direction, for setups where no graph is available (a closure,
  DDP / FSDP2, compiled models). ``L + 1`` gradient evaluations (forward differences) or ``2 L``
  (central). Approximate: see docs/layerwise.md for its measured error.

All functions return one 0-d tensor per block (dtype: float32, or float64 for float64
parameters), never synchronise with the host and never write ``.grad``.

Example::

    >>> import torch
    >>> from lrfree.curvature import hessian_block_forms
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    >>> params = list(net.parameters())
    >>> loss = net(torch.randn(5, 3)).pow(2).sum()
    >>> grads = torch.autograd.grad(loss, params, create_graph=True)
    >>> ones = [torch.ones_like(p) for p in params]
    >>> q = hessian_block_forms(grads, params, ones, [[0, 1], [2, 3]])
    >>> len(q), q[1].dtype
    (2, torch.float32)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .dtypes import acc_dtype

__all__ = [
    "fd_hessian_block_forms",
    "full_hessian_dense",
    "ggn_block_forms",
    "hessian_block_forms",
    "loss_output_hvp",
    "preserve_buffers",
    "preserve_forward_buffers",
    "preserve_rng",
    "second_order_errors",
]

Blocks = Sequence[Sequence[int]]

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


def _dot(xs: Sequence[Tensor | None], ys: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    acc = torch.zeros((), dtype=dtype, device=ys[0].device)
    for x, y in zip(xs, ys):
        if x is not None:
            acc = acc + (x.to(dtype) * y.to(dtype)).sum()
    return acc


def _dtype(params: Sequence[Tensor], idx: Sequence[int]) -> torch.dtype:
    return acc_dtype(*(params[i].dtype for i in idx))


# ------------------------------------------------------------------- Hessian
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
            dtype = _dtype(params, idx)
            live = [i for i in idx if vectors[i] is not None and grads[i].requires_grad]
            if not live:
                out.append(torch.zeros((), dtype=dtype, device=params[idx[0]].device))
                continue
            s = _dot(
                [grads[i] for i in live], [vectors[i].detach() for i in live], grads[live[0]].dtype
            )
            hv = torch.autograd.grad(
                s,
                [params[i] for i in live],
                retain_graph=True,  # the graph is shared by every block (and maybe the user)
                allow_unused=True,
            )
            out.append(_dot(list(hv), [vectors[i] for i in live], dtype).detach())
    return out


# ---------------------------------------------------------------- Gauss-Newton
def loss_output_hvp(
    outputs: Tensor, loss_fn: Callable[[Tensor], Tensor], vectors: Sequence[Tensor]
) -> list[Tensor]:
    """``Q v`` for each ``v``, ``Q`` the Hessian of ``loss_fn`` at ``outputs`` (autograd).

    ``loss_fn`` maps the outputs to the scalar loss with the same reduction as the training
    loss (``lambda z: F.cross_entropy(z, y)``). Exact for any twice-differentiable loss.
    """
    with torch.enable_grad():
        z = outputs.detach().requires_grad_(True)
        (gz,) = torch.autograd.grad(loss_fn(z), z, create_graph=True)
        res = []
        for k, v in enumerate(vectors):
            (qv,) = torch.autograd.grad(gz, z, v, retain_graph=k < len(vectors) - 1)
            res.append(qv.detach())
    return res


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
        params, vectors, blocks: as ``hessian_block_forms``.
        loss_fn: the loss as a function of the outputs (targets bound), same reduction.

    ``J_b d_b`` by the double-VJP trick: ``w(u) = J^T u`` is built once with a dummy ``u``
    (``create_graph``), and ``J_b d_b = d <w_b(u), d_b> / du`` is one backward through that
    linear graph per block. ``Q v`` by autograd on ``loss_fn`` (``loss_output_hvp``).
    """
    dev = outputs.device
    with torch.enable_grad():
        u = torch.zeros_like(outputs, requires_grad=True)
        used = sorted({i for idx in blocks for i in idx if vectors[i] is not None})
        w = torch.autograd.grad(
            outputs, [params[i] for i in used], u, create_graph=True, allow_unused=True
        )
        w_of = dict(zip(used, w))
        jvps: list[Tensor | None] = []
        for idx in blocks:
            live = [i for i in idx if vectors[i] is not None and w_of.get(i) is not None]
            if not live:
                jvps.append(None)
                continue
            s = _dot([w_of[i] for i in live], [vectors[i].detach() for i in live], outputs.dtype)
            if not s.requires_grad:  # the outputs do not depend on this block's parameters
                jvps.append(None)
                continue
            (jv,) = torch.autograd.grad(s, u, retain_graph=True)
            jvps.append(jv.detach())
    todo = [v for v in jvps if v is not None]
    qvs = iter(loss_output_hvp(outputs, loss_fn, todo)) if todo else iter(())
    out = []
    for idx, jv in zip(blocks, jvps):
        dtype = _dtype(params, idx)
        if jv is None:
            out.append(torch.zeros((), dtype=dtype, device=dev))
        else:
            out.append((jv.to(dtype) * next(qvs).to(dtype)).sum())
    return out


# ------------------------------------------------------------ finite differences
@contextlib.contextmanager
def preserve_rng(device: torch.device | None = None) -> Iterator[None]:
    """Restore the CPU (and the device's CUDA) RNG state on exit: every gradient evaluation
    inside sees the same random numbers (dropout masks) and the training stream is
    unaffected."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=True):
        yield


@contextlib.contextmanager
def preserve_buffers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Restore every buffer of ``modules`` (BatchNorm running statistics,
    ``num_batches_tracked``) on exit, also on error."""
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

    The parameters are restored bit for bit afterwards, also on error. ``grad_fn`` runs
    ``len(blocks) + 1`` times (forward; ``+1`` only without ``base_grads``) or
    ``2 * len(blocks)`` times (central). This function does not touch RNG state or buffers:
    wrap it in ``preserve_rng`` / ``preserve_buffers``.
    """
    dt = params[0].dtype if params[0].is_floating_point() else torch.float32
    eps = torch.finfo(dt).eps
    rel = rel_step if rel_step is not None else (eps ** (1 / 3) if central else eps**0.5)
    saved = [p.detach().clone() for p in params]
    out = []
    try:
        if not central and base_grads is None:
            base_grads = [None if g is None else g.detach().clone() for g in grad_fn()]
        for idx in blocks:
            dtype = _dtype(params, idx)
            live = [i for i in idx if vectors[i] is not None]
            dev = params[idx[0]].device
            if not live:
                out.append(torch.zeros((), dtype=dtype, device=dev))
                continue
            dn = _dot([vectors[i] for i in live], [vectors[i] for i in live], dtype).sqrt()
            wn = _dot([saved[i] for i in live], [saved[i] for i in live], dtype).sqrt()
            h = rel * (wn + 1e-3) / dn.clamp_min(torch.finfo(dtype).tiny)

            plus = _grads_at(grad_fn, params, saved, vectors, live, h, dtype)
            if central:
                minus = _grads_at(grad_fn, params, saved, vectors, live, -h, dtype)
                denom = 2 * h
            else:
                assert base_grads is not None
                minus = [
                    torch.zeros_like(params[i]) if base_grads[i] is None else base_grads[i]
                    for i in live
                ]
                denom = h
            diff = [a.to(dtype) - b.to(dtype) for a, b in zip(plus, minus)]
            out.append(_dot(diff, [vectors[i] for i in live], dtype) / denom)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return out


# ------------------------------------------------------------------ oracles
def full_hessian_dense(loss_of_params: Callable[..., Tensor], params: Sequence[Tensor]) -> Tensor:
    """The dense Hessian of ``loss_of_params(*params)`` (a test oracle for tiny networks)."""
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    sizes = [p.numel() for p in params]
    shapes = [p.shape for p in params]

    def f(v: Tensor) -> Tensor:
        parts = torch.split(v, sizes)
        return loss_of_params(*[t.reshape(s) for t, s in zip(parts, shapes)])

    return torch.autograd.functional.hessian(f, flat)
