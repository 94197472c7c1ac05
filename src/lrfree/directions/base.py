"""The direction interface: what a base optimizer would move along.

A direction turns a gradient into the vector ``d`` of the update ``p <- p - lr * alpha * d``.
It owns the torch-named buffers (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``,
``square_avg``, ``step``) and reproduces its torch optimizer exactly when ``alpha == 1``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..hyper import Hyper

__all__ = ["Direction", "cpu_scalar", "scalar_dtype"]


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim uses for ``state["step"]`` (float64 under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def cpu_scalar(t: Tensor) -> float:
    """The value of a step counter. torch.optim keeps ``state["step"]`` on the CPU (unless
    ``capturable``), so reading it is not a device synchronisation; torch's own for-loop
    Adam does the same."""
    return t.tolist() if isinstance(t, Tensor) else float(t)


class Direction:
    """Base class. Subclasses set ``name``, ``hyper``, ``default_lr`` and implement ``update``.

    ``decoupled_decay`` is True where weight decay is applied to the parameter itself
    (``p <- p * (1 - lr * alpha * weight_decay)``, AdamW) rather than added to the gradient.
    """

    name: ClassVar[str]
    hyper: ClassVar[dict[str, Hyper]]
    default_lr: ClassVar[float]
    decoupled_decay: ClassVar[bool] = False

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict) -> Tensor:
        """Update the buffers in ``state`` with ``grad`` and return the direction ``d``.

        ``grad`` is ``p.grad`` detached and untouched (``maximize`` and coupled weight decay
        are applied here, as torch does). ``d`` may alias a buffer: callers must not modify it.
        """
        raise NotImplementedError

    def update_many(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        group: dict,
        foreach: bool = False,
    ) -> list[Tensor]:
        """``update`` over a list of parameters; ``foreach=True`` uses multi-tensor kernels
        (``torch._foreach_*``, as torch.optim's ``foreach`` path) where the direction has them.
        Both paths agree to rounding (tested in float64)."""
        if foreach:
            return self._update_foreach(params, grads, states, group)
        return [self.update(p, g, st, group) for p, g, st in zip(params, grads, states)]

    def _update_foreach(
        self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]], group: dict
    ) -> list[Tensor]:
        return [self.update(p, g, st, group) for p, g, st in zip(params, grads, states)]

    def objective_grads(
        self, params: list[Tensor], grads: list[Tensor], group: dict, foreach: bool = False
    ) -> list[Tensor]:
        """The gradient of the objective this direction descends, as torch applies it:
        ``-grad`` under ``maximize``, then ``+ weight_decay * p`` where the decay is coupled
        (an L2 term of the objective; not for ``decoupled_decay``). ``grads`` are returned as
        they are when neither applies (callers must not modify them).

        >>> import torch
        >>> from lrfree.directions import DIRECTIONS
        >>> p, g = torch.ones(2), torch.tensor([1.0, -2.0])
        >>> DIRECTIONS["sgd"].objective_grads([p], [g], {"maximize": True, "weight_decay": 0.5})
        [tensor([-0.5000,  2.5000])]
        >>> DIRECTIONS["adamw"].objective_grads([p], [g], {"maximize": False, "weight_decay": 0.5})
        [tensor([ 1., -2.])]
        """
        wd = 0.0 if self.decoupled_decay else group.get("weight_decay", 0.0)
        maximize = group.get("maximize", False)
        if foreach and grads:
            out = grads
            if maximize:
                out = list(torch._foreach_neg(out))
            if wd != 0:
                out = list(torch._foreach_add(out, params, alpha=wd))
            return list(out)
        out = []
        for p, g in zip(params, grads):
            if maximize:
                g = -g
            out.append(g.add(p, alpha=wd) if wd != 0 else g)
        return out

    def step_many(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        group: dict,
        lr: float,
        foreach: bool = False,
    ) -> None:
        """``update_many`` and the step ``p <- p - lr d`` in one (decoupled decay first:
        ``p <- p (1 - lr wd)``), kernel for kernel the torch optimizer's ``step()`` (its
        ``foreach`` path or its for-loop): what the constant rule without averaging runs.
        The values are ``update_many``'s followed by the composed apply, to rounding (Adam and
        RMSprop fold ``1 / denom`` into the step, as torch does)."""
        if foreach:
            self._step_foreach(params, grads, states, group, lr)
        else:
            for p, g, st in zip(params, grads, states):
                self.step(p, g, st, group, lr)

    def _step_foreach(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        group: dict,
        lr: float,
    ) -> None:
        ds = self._update_foreach(params, grads, states, group)
        if self.decoupled_decay and group["weight_decay"] != 0:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_add_(params, ds, alpha=-lr)

    def step(self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict, lr: float) -> None:
        """``step_many`` for one parameter (torch's for-loop)."""
        d = self.update(p, grad, state, group)
        if self.decoupled_decay and group["weight_decay"] != 0:
            p.mul_(1 - lr * group["weight_decay"])
        p.add_(d, alpha=-lr)

    def __repr__(self) -> str:
        return f"<direction {self.name!r}>"
