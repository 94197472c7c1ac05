"""Per-block curvature, in one place: exact Hessian blocks, Gauss-Newton blocks and the output
Jacobian-vector products behind them, finite differences, and the loss Hessians.

For a parameter vector split into blocks ``b`` (a block: a list of parameter tensors, e.g. the
weight and bias of one layer) and a vector ``d`` with one tensor per parameter, this package
computes, per block,

* **Hessian block**  ``q_b = d_b^T H_bb d_b``  where ``H_bb`` is the *diagonal block* of the
  Hessian of the loss w.r.t. the block's parameters (the other blocks held fixed);
* **Gauss-Newton block**  ``q_b = (J_b d_b)^T Q (J_b d_b)``  where ``J_b`` is the Jacobian of
  the network outputs w.r.t. the block and ``Q`` the Hessian of the loss w.r.t. the outputs
  (PSD for convex losses). For networks that are piecewise linear in each single layer (ReLU,
  no BatchNorm) the two coincide.

Neither is ``d_b . (H d)_b`` with the *full* ``d``: that adds the cross-block terms
``d_b^T H_bc d_c``, which on an MLP changed the value by 5x and even its sign (DESIGN.md §4).

The modules, and who uses them (LW: ``lrfree.rules.layerwise``; ADLER: ``lrfree.rules.adler``):

* ``hessian``: ``hessian_block_forms(grads, params, vectors, blocks)`` from gradients that
  carry a graph (``loss.backward(create_graph=True)``): one double backward per block,
  restricted to the block's parameters, reusing the one graph. Exact. LW's graph mode.
  ``full_hessian_dense`` (a test oracle).
* ``ggn``: ``jvp_double_vjp`` (``J u_b`` through the live graph of the outputs),
  ``LinearGraph`` (the same through a gradient graph kept linear in ``dL/dF``) and
  ``jvp_forward`` (forward-mode AD); ``ggn_block_forms(outputs, params, vectors, blocks,
  loss_fn)`` = ``jvp_double_vjp`` + autograd ``Q v``. Exact. LW's ``curvature="ggn"`` and all
  of ADLER's routes use these.
* ``fd``: ``fd_hessian_block_forms(grad_fn, params, vectors, blocks)``: finite differences of
  gradients along each block direction, for setups where no graph is available (a closure,
  DDP / FSDP2, compiled models), on plain or sharded (DTensor) parameters alike. ``L + 1``
  gradient evaluations (forward differences) or ``2 L`` (central). Approximate: see
  docs/layerwise.md for its measured error. The context managers that make the extra
  evaluations invisible: ``preserve_forward_buffers``, ``preserve_buffers``, ``preserve_rng``.
  LW's closure mode.
* ``loss``: ``Q`` of named losses in closed form and of any callable by autograd
  (``quadratic_form``, ``hessian_vector_product``, ``loss_output_hvp``, ...); also importable
  as ``lrfree.loss_hessian``.

Imports point one way: ``lrfree.distributed`` (the collectives) does not import this package;
``fd`` uses its shard-completion helpers.

All block functions return one 0-d tensor per block (dtype: float32, or float64 for float64
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

from ._common import second_order_errors
from .fd import fd_hessian_block_forms, preserve_buffers, preserve_forward_buffers, preserve_rng
from .ggn import LinearGraph, ggn_block_forms, jvp_double_vjp, jvp_forward
from .hessian import full_hessian_dense, hessian_block_forms
from .loss import loss_output_hvp

__all__ = [
    "LinearGraph",
    "fd_hessian_block_forms",
    "full_hessian_dense",
    "ggn_block_forms",
    "hessian_block_forms",
    "jvp_double_vjp",
    "jvp_forward",
    "loss_output_hvp",
    "preserve_buffers",
    "preserve_forward_buffers",
    "preserve_rng",
    "second_order_errors",
]
