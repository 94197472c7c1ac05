"""RMSprop direction (torch.optim.RMSprop, including ``centered`` and ``momentum``).

    v <- a v + (1 - a) g^2,     avg = sqrt(v - centred mean^2) + eps
    d  = g / avg                 (momentum = 0)
    b <- mu b + g / avg,  d = b  (momentum > 0)

``alpha`` is torch's name for the smoothing constant ``a``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..hyper import Hyper, boolean, real
from .base import Direction, scalar_dtype

__all__ = ["RMSprop"]


class RMSprop(Direction):
    name = "rmsprop"
    hyper: ClassVar[dict[str, Hyper]] = {
        "alpha": Hyper(0.99, real(0.0, 1.0), "smoothing constant of the square average"),
        "eps": Hyper(1e-8, real(0.0), "added to the denominator"),
        "weight_decay": Hyper(0.0, real(0.0), "L2 penalty added to the gradient"),
        "momentum": Hyper(0.0, real(0.0, 1.0, hi_open=True), "momentum of the scaled step"),
        "centered": Hyper(False, boolean(), "normalise by the gradient's variance"),
        "maximize": Hyper(False, boolean(), "maximise the objective instead"),
    }
    default_lr = 1e-2

    def _avg_foreach(self, params, grads, states, group):
        """The buffers' update (torch's foreach RMSprop, kernel for kernel); returns
        ``(g, avg)`` with ``avg`` a fresh list."""
        for p, st in zip(params, states):
            self._init(p, st, group)
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        torch._foreach_add_([st["step"] for st in states], 1)
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        a = group["alpha"]
        square_avgs = [st["square_avg"] for st in states]
        torch._foreach_mul_(square_avgs, a)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - a)
        if group["centered"]:
            grad_avgs = [st["grad_avg"] for st in states]
            torch._foreach_lerp_(grad_avgs, grads, 1 - a)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, group["eps"])
        return grads, avg

    def _update_foreach(self, params, grads, states, group):
        grads, avg = self._avg_foreach(params, grads, states, group)
        if group["momentum"] > 0:
            bufs = [st["momentum_buffer"] for st in states]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, avg)
            return bufs
        if params[0].device.type == "cpu":  # no second temporary: g / avg written into avg
            for g, a in zip(grads, avg):
                torch.div(g, a, out=a)
            return list(avg)
        return list(torch._foreach_div(grads, avg))

    def _step_foreach(self, params, grads, states, group, lr):
        """torch's foreach RMSprop step: without momentum one ``addcdiv``."""
        if group["momentum"] > 0:
            return super()._step_foreach(params, grads, states, group, lr)
        grads, avg = self._avg_foreach(params, grads, states, group)
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)

    def step(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict, lr: float) -> None:
        """torch's for-loop RMSprop step: without momentum one ``addcdiv``."""
        if group["momentum"] > 0:
            return super().step(p, grad, state, group, lr)
        grad, avg = self._avg(p, grad, state, group)
        p.addcdiv_(grad, avg, value=-lr)

    def _init(self, p: Tensor, state: dict[str, Any], group: dict) -> None:
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _avg(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict):
        """One parameter's buffer update (torch's for-loop RMSprop); ``(g, avg)``."""
        self._init(p, state, group)
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad.add(p, alpha=group["weight_decay"])
        a = group["alpha"]
        square_avg = state["square_avg"]
        square_avg.mul_(a).addcmul_(grad, grad, value=1 - a)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - a)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        return grad, avg.add_(group["eps"])

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        grad, avg = self._avg(p, grad, state, group)
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf.mul_(group["momentum"]).addcdiv_(grad, avg)
            return buf
        return grad / avg
