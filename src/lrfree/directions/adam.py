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


class Adam(Direction):
    name = "adam"
    torch_equivalent = "torch.optim.Adam"
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

    def _update_foreach(self, params, grads, states, group):
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
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        # d = m / (bc1 denom): equal to the loop's (m / bc1) / denom to 2 ulp, and on the CPU
        # written into denom, one parameter-sized temporary instead of two (a fresh CPU
        # allocation costs page faults, ~2.4x an in-place pass; benchmarks/reductions.py)
        if beta1 != 0:  # 1 - 0^t = 1: no pass
            torch._foreach_mul_(denom, bias_correction1)
        if params[0].device.type == "cpu" and not torch.compiler.is_compiling():
            for m, dn in zip(exp_avgs, denom):
                torch.div(m, dn, out=dn)
            return list(denom)
        return list(torch._foreach_div(exp_avgs, denom))

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
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
        denom = (second.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        return (exp_avg / bias_correction1).div_(denom)


class AdamW(Adam):
    name = "adamw"
    torch_equivalent = "torch.optim.AdamW"
    hyper: ClassVar[dict[str, Hyper]] = {
        **Adam.hyper,
        "weight_decay": Hyper(1e-2, real(0.0), "decoupled decay: p <- p (1 - lr alpha wd)"),
    }
    decoupled_decay = True
