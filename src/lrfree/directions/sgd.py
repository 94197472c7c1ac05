"""SGD directions: plain, heavy-ball momentum (torch's dampened form) and Nesterov.

torch's buffer is ``m <- mu * m + (1 - dampening) * g`` (the first step stores ``g``).
``dampening=0`` (the default) is the papers' ``m = beta * m + g`` form; ``dampening=mu``
gives the exponential-moving-average form ``m = mu * m + (1 - mu) * g``.

    sgd:       d = g                        (+ weight_decay * p)
    momentum:  d = m
    nesterov:  d = g + mu * m
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..hyper import Hyper, boolean, real
from .base import Direction

__all__ = ["SGD", "Momentum", "Nesterov", "sgd_direction"]

_COMMON = {
    "weight_decay": Hyper(0.0, real(0.0), "L2 penalty added to the gradient"),
    "maximize": Hyper(False, boolean(), "maximise the objective instead"),
}


def sgd_direction(
    momentum: Any, dampening: Any = 0.0, nesterov: bool = False, owner: str = "SGD"
) -> tuple[str, dict[str, Any]]:
    """torch.optim.SGD's arguments -> our direction name and its hyperparameters.

    ``momentum == 0`` -> ``"sgd"``; ``nesterov`` -> ``"nesterov"`` (``dampening`` must be 0, as
    torch requires); otherwise ``"momentum"``. Values are validated later by ``Composed``.

        >>> sgd_direction(0.0), sgd_direction(0.9, nesterov=True)
        (('sgd', {}), ('nesterov', {'momentum': 0.9}))
    """
    if nesterov:
        if dampening != 0:
            raise ValueError(
                f"Invalid dampening: {dampening!r} (expected 0 with nesterov=True) [{owner}]"
            )
        return "nesterov", {"momentum": momentum}
    if isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and momentum == 0:
        return "sgd", {}
    return "momentum", {"momentum": momentum, "dampening": dampening}


class SGD(Direction):
    name = "sgd"
    hyper: ClassVar[dict[str, Hyper]] = dict(_COMMON)
    default_lr = 1e-3

    def _grad(self, p: Tensor, grad: Tensor, group: dict) -> Tensor:
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad.add(p, alpha=group["weight_decay"])
        return grad

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        return self._grad(p, grad, group)

    def _grads_foreach(self, params: list[Tensor], grads: list[Tensor], group: dict):
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        return list(grads)

    def _update_foreach(self, params, grads, states, group):
        return self._grads_foreach(params, grads, group)


class Momentum(SGD):
    name = "momentum"
    hyper: ClassVar[dict[str, Hyper]] = {
        "momentum": Hyper(0.9, real(0.0, 1.0, lo_open=True, hi_open=True), "mu"),
        "dampening": Hyper(0.0, real(0.0, 1.0), "torch's dampening (0: m = mu*m + g)"),
        **_COMMON,
    }

    def _buffer(self, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = torch.clone(grad).detach()
            state["momentum_buffer"] = buf
        else:
            buf.mul_(group["momentum"]).add_(grad, alpha=1 - group.get("dampening", 0.0))
        return buf

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        return self._buffer(self._grad(p, grad, group), state, group)

    def _buffers_foreach(self, grads: list[Tensor], states: list[dict[str, Any]], group: dict):
        old = [i for i, st in enumerate(states) if st.get("momentum_buffer") is not None]
        for i, st in enumerate(states):  # first step: the buffer is the gradient
            if st.get("momentum_buffer") is None:
                st["momentum_buffer"] = torch.clone(grads[i]).detach()
        if old:
            bufs = [states[i]["momentum_buffer"] for i in old]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(
                bufs, [grads[i] for i in old], alpha=1 - group.get("dampening", 0.0)
            )
        return [st["momentum_buffer"] for st in states]

    def _update_foreach(self, params, grads, states, group):
        return self._buffers_foreach(self._grads_foreach(params, grads, group), states, group)


class Nesterov(Momentum):
    name = "nesterov"
    hyper: ClassVar[dict[str, Hyper]] = {
        "momentum": Hyper(0.9, real(0.0, 1.0, lo_open=True, hi_open=True), "mu"),
        **_COMMON,
    }

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        g = self._grad(p, grad, group)
        buf = self._buffer(g, state, group)
        return g.add(buf, alpha=group["momentum"])

    def _update_foreach(self, params, grads, states, group):
        g = self._grads_foreach(params, grads, group)
        bufs = self._buffers_foreach(g, states, group)
        return list(torch._foreach_add(g, bufs, alpha=group["momentum"]))
