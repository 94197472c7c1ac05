"""Adam and AdamW directions (torch.optim.Adam / AdamW, including ``amsgrad``).

    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
    d  = (m / (1 - beta1^t)) / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Adam adds ``weight_decay * p`` to ``g``; AdamW decays the parameter itself,
``p <- p (1 - lr * alpha * weight_decay)``, before the step (decoupled decay).
With ``beta1 = 0`` the first moment is ``g`` itself and no ``exp_avg`` buffer is kept (the
values are torch's; the direction of schedule-free AdamW, ``lrfree.averaging``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..hyper import Hyper, boolean, pair_of_unit, real
from .base import Direction, cpu_scalar, scalar_dtype

__all__ = ["Adam", "AdamW"]


def _ones(values: list[float] | list[Tensor]) -> bool:
    """Whether every bias correction is exactly 1.0 (Python floats; tensors under
    compilation are not read): multiplying or dividing by it changes nothing, so the pass
    is skipped with the same values."""
    return all(type(v) is float and v == 1.0 for v in values)


class Adam(Direction):
    name = "adam"
    hyper: ClassVar[dict[str, Hyper]] = {
        "betas": Hyper((0.9, 0.999), pair_of_unit(), "(beta1, beta2)"),
        "eps": Hyper(1e-8, real(0.0), "added to the denominator"),
        "weight_decay": Hyper(0.0, real(0.0), "L2 penalty added to the gradient"),
        "amsgrad": Hyper(False, boolean(), "use the running maximum of v"),
        "maximize": Hyper(False, boolean(), "maximise the objective instead"),
    }
    default_lr = 1e-3

    def _init(self, p: Tensor, state: dict[str, Any], group: dict) -> None:
        if "step" not in state:  # torch's keys, in torch's order
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
            if group["betas"][0] != 0:  # beta1 = 0: m = g, no buffer
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        elif "exp_avg" not in state and group["betas"][0] != 0:  # beta1 raised after a start
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _moments_foreach(
        self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]], group: dict
    ) -> tuple[list[Tensor], list[Tensor], list[float] | list[Tensor], list[float] | list[Tensor]]:
        """The buffers' update (torch's foreach Adam, kernel for kernel) and what the step is
        made of: ``(m, sqrt(v_hat), bias_correction1, bias_correction2_sqrt)`` with
        ``sqrt(v_hat)`` a fresh list, ``d = m / (bc1 (sqrt(v_hat) / bc2_sqrt + eps))``."""
        for p, st in zip(params, states):
            self._init(p, st, group)
        beta1, beta2 = group["betas"]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        if group["weight_decay"] != 0 and not self.decoupled_decay:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        steps = [st["step"] for st in states]
        torch._foreach_add_(steps, 1)
        exp_avg_sqs = [st["exp_avg_sq"] for st in states]
        if beta1 != 0:
            exp_avgs = [st["exp_avg"] for st in states]
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        else:  # the first moment is the gradient itself (schedule-free AdamW's direction)
            exp_avgs = list(grads)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        bias_correction1: list[float] | list[Tensor]
        bias_correction2_sqrt: list[float] | list[Tensor]
        if torch.compiler.is_compiling():  # no host read inside a compiled step: tensors
            t64 = [t.to(torch.float64) for t in steps]  # float64, as the Python floats below
            bias_correction1 = [1 - torch.pow(beta1, t) for t in t64]
            bias_correction2_sqrt = [(1 - torch.pow(beta2, t)).sqrt() for t in t64]
        else:  # the CPU step counter's value, as torch's foreach Adam (not capturable)
            step_values = [cpu_scalar(t) for t in steps]
            bias_correction1 = [1 - beta1**t for t in step_values]
            bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in step_values]
        if group["amsgrad"]:
            second = [st["max_exp_avg_sq"] for st in states]
            torch._foreach_maximum_(second, exp_avg_sqs)
        else:
            second = exp_avg_sqs
        return exp_avgs, list(torch._foreach_sqrt(second)), bias_correction1, bias_correction2_sqrt

    def _update_foreach(self, params, grads, states, group):
        exp_avgs, denom, bias_correction1, bias_correction2_sqrt = self._moments_foreach(
            params, grads, states, group
        )
        if not _ones(bias_correction2_sqrt):  # x / 1.0 = x: no pass (t > ~37000 at 0.999)
            torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        # d = m / (bc1 denom): equal to the loop's (m / bc1) / denom to 2 ulp, and on the CPU
        # written into denom, one parameter-sized temporary instead of two (a fresh CPU
        # allocation costs page faults, ~2.4x an in-place pass; benchmarks/reductions.py)
        if not _ones(bias_correction1):  # beta1 = 0 (1 - 0^t = 1), or t > ~350 at 0.9
            torch._foreach_mul_(denom, bias_correction1)
        if params[0].device.type == "cpu" and not torch.compiler.is_compiling():
            for m, dn in zip(exp_avgs, denom):
                torch.div(m, dn, out=dn)
            return denom
        return list(torch._foreach_div(exp_avgs, denom))

    def _step_foreach(self, params, grads, states, group, lr):
        """torch's foreach Adam / AdamW step, kernel for kernel (decay, then
        ``p <- p - (lr / bc1) m / denom`` by one ``addcdiv``)."""
        if torch.compiler.is_compiling():  # torch's compiled form differs: the generic path
            return super()._step_foreach(params, grads, states, group, lr)
        if self.decoupled_decay and group["weight_decay"] != 0:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        exp_avgs, denom, bias_correction1, bias_correction2_sqrt = self._moments_foreach(
            params, grads, states, group
        )
        if not _ones(bias_correction2_sqrt):  # x / 1.0 = x: the same values, no pass
            torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        step_size = [(lr / bc) * -1 for bc in bias_correction1]  # type: ignore[operator]
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)

    def _moments(
        self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict
    ) -> tuple[Tensor, Tensor, float]:
        """One parameter's buffer update (torch's for-loop Adam) and ``(m, denom, bc1)``,
        ``d = m / (bc1 denom)``."""
        self._init(p, state, group)
        beta1, beta2 = group["betas"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0 and not self.decoupled_decay:
            grad = grad.add(p, alpha=group["weight_decay"])
        state["step"] += 1
        exp_avg_sq = state["exp_avg_sq"]
        if beta1 != 0:
            exp_avg = state["exp_avg"]
            exp_avg.lerp_(grad, 1 - beta1)
        else:  # no first-moment buffer: m = g
            exp_avg = grad
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = cpu_scalar(state["step"])
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second = state["max_exp_avg_sq"]
        else:
            second = exp_avg_sq
        root = second.sqrt()
        if bias_correction2_sqrt != 1.0:  # x / 1.0 = x: no second temporary
            root = root / bias_correction2_sqrt
        return exp_avg, root.add_(group["eps"]), bias_correction1

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        exp_avg, denom, bias_correction1 = self._moments(p, grad, state, group)
        if bias_correction1 == 1.0:  # beta1 = 0 or a long run: the same values, one pass less
            return exp_avg.div(denom)
        return (exp_avg / bias_correction1).div_(denom)

    def step(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict, lr: float) -> None:
        """torch's for-loop Adam / AdamW step: decay, then one ``addcdiv``."""
        if self.decoupled_decay and group["weight_decay"] != 0:
            p.mul_(1 - lr * group["weight_decay"])
        exp_avg, denom, bias_correction1 = self._moments(p, grad, state, group)
        p.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


class AdamW(Adam):
    name = "adamw"
    hyper: ClassVar[dict[str, Hyper]] = {
        **Adam.hyper,
        "weight_decay": Hyper(1e-2, real(0.0), "decoupled decay: p <- p (1 - lr alpha wd)"),
    }
    decoupled_decay = True
