"""The Hessian ``Q`` of a loss with respect to the network outputs, as quadratic forms.

For a batch loss ``L(o)`` of the outputs ``o`` (all samples, the user's reduction), the
Gauss-Newton / GGN curvature along a parameter direction ``d`` is ``v^T Q v`` with
``v = J d`` (the Jacobian-vector product of the outputs along ``d``) and ``Q = d^2 L / do^2``.

API (all functions are differentiable plain torch and work under ``torch.func.vmap`` over a
leading batch of ``v``'s):

* ``quadratic_form(loss, outputs, v, targets=None, reduction="mean") -> Tensor`` (0-d):
  ``v^T Q v``;
* ``hessian_vector_product(loss, outputs, v, targets=None, reduction="mean") -> Tensor``:
  ``Q v`` (shape of ``outputs``);
* ``outer_gradient_form(loss, outputs, v, targets, reduction="mean") -> Tensor`` (0-d):
  ``(g^T v)^2`` with ``g = dL/do``, i.e. ``Q`` replaced by ``g g^T`` (ADLER's GN comparator);
* ``loss_value(loss, outputs, targets, reduction="mean") -> Tensor``: the loss itself
  (the torch functional the name stands for);
* ``loss_output_hvp(outputs, loss_fn, vectors) -> list[Tensor]``: ``Q v`` for several ``v`` by
  autograd on a callable (one gradient graph, one backward per ``v``): the autograd fallback of
  the functions above and the ``Q`` of ``ggn_block_forms``.

``loss`` is a name from ``LOSSES`` or a callable ``outputs -> scalar loss`` (the autograd
fallback: double backward, for any twice-differentiable loss; it must close over its targets
and apply its own reduction; a loss linear in the outputs has ``Q = 0``). Closed forms, per
sample / element, before the reduction:

=================== ====================================== ====================================
name                outputs                                ``v^T Q v``
=================== ====================================== ====================================
``cross_entropy``   logits ``(N, C)`` or ``(N, C, d...)``  ``sum p_c v_c^2 - (sum p_c v_c)^2``
``nll``             log-probabilities (same shapes)        as above, ``p = softmax(o)``
``mse``             any shape                              ``2 v^2``
``bce_with_logits`` any shape                              ``s (1 - s) v^2``, ``s = sigmoid(o)``
=================== ====================================== ====================================

``reduction="mean"`` divides by what torch's loss divides by: the number of (non-ignored)
targets for ``cross_entropy`` / ``nll`` (class dimension 1, ``ignore_index=-100`` honoured
when integer ``targets`` are given), the number of elements for ``mse`` and
``bce_with_logits``; ``"sum"`` does not divide. Targets do not enter ``Q`` otherwise (soft
labels and label smoothing leave it unchanged, since the target weights sum to one).

``nll``: the NLL of log-probabilities is *linear* in them, so its literal Hessian is zero. We
fold the final log-softmax into the loss (``log_softmax(o) = o`` for log-probabilities), which
gives the same ``Q`` as cross-entropy on the logits, the standard GGN choice. Not covered by the
closed forms: class weights, ``pos_weight``; pass a callable for those.

``lrfree.loss_hessian`` re-exports this module's public names (its older home). Example::

    >>> import torch
    >>> from lrfree.curvature.loss import quadratic_form
    >>> logits, v = torch.zeros(1, 2), torch.tensor([[1.0, -1.0]])
    >>> float(quadratic_form("cross_entropy", logits, v))  # p = (.5, .5): .5 + .5 - 0
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "REDUCTIONS",
    "hessian_vector_product",
    "loss_output_hvp",
    "loss_value",
    "outer_gradient_form",
    "quadratic_form",
]

LOSSES = ("cross_entropy", "nll", "mse", "bce_with_logits")
REDUCTIONS = ("mean", "sum")
IGNORE_INDEX = -100

LossSpec = str | Callable[[Tensor], Tensor]


def _check(loss: LossSpec, reduction: str) -> None:
    if not callable(loss) and loss not in LOSSES:
        raise ValueError(f"Invalid loss: {loss!r} (expected one of {list(LOSSES)} or a callable)")
    if reduction not in REDUCTIONS:
        raise ValueError(f"Invalid reduction: {reduction!r} (expected one of {list(REDUCTIONS)})")


def _weights(loss: str, outputs: Tensor, targets: Tensor | None, reduction: str) -> Tensor | float:
    """Per-position weights of the reduction: ``mask / count`` (mean) or ``mask`` (sum).

    For the softmax losses one weight per sample position (``outputs`` without dim 1), else a
    scalar ``1 / numel`` or ``1``.
    """
    if loss in ("cross_entropy", "nll"):
        pos_shape = outputs.shape[:1] + outputs.shape[2:]
        if targets is not None and not targets.is_floating_point():
            mask = (targets != IGNORE_INDEX).to(outputs.dtype).reshape(pos_shape)
        else:
            mask = outputs.new_ones(pos_shape)
        return mask / mask.sum() if reduction == "mean" else mask
    return 1.0 / outputs.numel() if reduction == "mean" else 1.0


def hessian_vector_product(
    loss: LossSpec,
    outputs: Tensor,
    v: Tensor,
    targets: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``Q v`` with ``Q`` the Hessian of the batch loss w.r.t. ``outputs`` (see module doc)."""
    _check(loss, reduction)
    if callable(loss):
        return loss_output_hvp(outputs, loss, [v])[0]
    o = outputs.detach()
    w = _weights(loss, o, targets, reduction)
    if loss in ("cross_entropy", "nll"):
        if o.dim() < 2:
            raise ValueError(
                f"{loss}: outputs need a class dimension 1, got shape {tuple(o.shape)}"
            )
        p = torch.softmax(o, dim=1)
        pv = (p * v).sum(dim=1, keepdim=True)
        return (p * v - p * pv) * w.unsqueeze(1)
    if loss == "mse":
        return 2.0 * w * v
    s = torch.sigmoid(o)
    return s * (1 - s) * w * v


def loss_output_hvp(
    outputs: Tensor, loss_fn: Callable[[Tensor], Tensor], vectors: Sequence[Tensor]
) -> list[Tensor]:
    """``Q v`` for each ``v``, ``Q`` the Hessian of ``loss_fn`` at ``outputs`` (autograd).

    ``loss_fn`` maps the outputs to the scalar loss with the same reduction as the training
    loss (``lambda z: F.cross_entropy(z, y)``). Exact for any twice-differentiable loss: the
    gradient ``dL/dz`` is built once with its graph, then ``Q v = d <dL/dz, v> / dz`` is one
    backward per ``v``. A loss linear in the outputs has ``Q = 0`` (zeros are returned).

    >>> import torch
    >>> (qv,) = loss_output_hvp(torch.zeros(3), lambda z: (z**2).sum(), [torch.ones(3)])
    >>> qv  # Q = 2 I
    tensor([2., 2., 2.])
    """
    with torch.enable_grad():
        z = outputs.detach().requires_grad_(True)
        (gz,) = torch.autograd.grad(loss_fn(z), z, create_graph=True)
        if not gz.requires_grad:  # the loss is linear in the outputs: Q = 0
            return [torch.zeros_like(v) for v in vectors]
        res = []
        for k, v in enumerate(vectors):
            (qv,) = torch.autograd.grad(
                gz, z, v, retain_graph=k < len(vectors) - 1, allow_unused=True
            )
            res.append(torch.zeros_like(v) if qv is None else qv.detach())
    return res


def quadratic_form(
    loss: LossSpec,
    outputs: Tensor,
    v: Tensor,
    targets: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``v^T Q v`` (0-d) with ``Q`` the Hessian of the batch loss w.r.t. ``outputs``."""
    _check(loss, reduction)
    if callable(loss):
        return (v * hessian_vector_product(loss, outputs, v, targets, reduction)).sum()
    o = outputs.detach()
    w = _weights(loss, o, targets, reduction)
    if loss in ("cross_entropy", "nll"):
        if o.dim() < 2:
            raise ValueError(
                f"{loss}: outputs need a class dimension 1, got shape {tuple(o.shape)}"
            )
        p = torch.softmax(o, dim=1)
        per_pos = (p * v * v).sum(dim=1) - (p * v).sum(dim=1) ** 2
        return (per_pos * w).sum()
    if loss == "mse":
        return 2.0 * w * (v * v).sum()
    s = torch.sigmoid(o)
    return w * (s * (1 - s) * v * v).sum()


def loss_value(
    loss: LossSpec, outputs: Tensor, targets: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """The batch loss: the torch functional a name stands for, or the callable itself."""
    _check(loss, reduction)
    if callable(loss):
        return loss(outputs)
    if targets is None:
        raise ValueError(f"loss {loss!r} needs targets")
    if loss == "cross_entropy":
        return F.cross_entropy(outputs, targets, reduction=reduction)
    if loss == "nll":
        return F.nll_loss(outputs, targets, reduction=reduction)
    if loss == "mse":
        return F.mse_loss(outputs, targets, reduction=reduction)
    return F.binary_cross_entropy_with_logits(outputs, targets, reduction=reduction)


def outer_gradient_form(
    loss: LossSpec,
    outputs: Tensor,
    v: Tensor,
    targets: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``(g^T v)^2`` with ``g = dL/d outputs`` of the batch loss: ``Q`` replaced by ``g g^T``.

    This is the "Gauss-Newton" of the ADLER paper (footnote 8). Note the identity
    ``g^T (J d) = (J^T g)^T d = G^T d`` when ``G`` is the parameter gradient of the same loss:
    along ``d = G`` the form is ``(G^T G)^2`` and needs no Jacobian-vector product.
    """
    with torch.enable_grad():
        o = outputs.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_value(loss, o, targets, reduction), o)
    return (g * v).sum() ** 2
