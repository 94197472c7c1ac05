"""Iterate averaging for every composed optimizer: schedule-free interpolation.

With ``averaging="schedule_free"`` (Defazio et al., 2024, "The Road Less Scheduled") a
``Composed`` optimizer keeps three sequences per parameter instead of one. With ``s_t`` the
step size the rule chose for the block (``lr * alpha_b``) and ``d_t`` the direction at ``y_t``
(plus ``weight_decay * y_t`` for the decoupled-decay directions)::

    z_{t+1} = z_t - s_t d_t                              (the base optimizer's iterate)
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}        (the weighted average: evaluate here)
    y_{t+1} = (1 - beta) z_{t+1} + beta x_{t+1}          (the gradient is taken here)

    c_{t+1} = w_t / sum_{i <= t} w_i,    w_t = (max_{i <= t} s_i)^2   (0 where s_t = 0)

The parameters hold ``y`` while training and ``x`` after ``opt.eval()``; ``opt.train()``
goes back. Only ``z`` is stored (``"z"``, parameter-sized): ``x = (y - (1 - beta) z) / beta``.
The weights ``w`` are those of ``schedulefree.AdamWScheduleFree`` (``weight_lr_power=2``,
``r=0``): a rate that grows from a tiny start (a distance-based rule) gives its first iterates
almost no weight. One difference: a step whose rate is 0 (a scheduler at 0) has weight 0, so
nothing moves, where ``AdamWScheduleFree`` keeps averaging ``x`` towards ``z``. With
``direction="adamw"``, ``betas=(0, beta2)``, the constant rule and
``sf_beta=beta1`` this is ``AdamWScheduleFree`` step for step (tests/test_averaging.py).

Per block the weight sum is kept in ``"sf.weight_sum"`` and the running maximum rate in
``"sf.lr_max"`` (tensors of the rate's shape, in each parameter's state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["AVERAGING", "schedule_free_update", "to_eval", "to_train"]

AVERAGING = ("none", "schedule_free")


def _scale_tensor(scale: Tensor | float, p: Tensor) -> Tensor:
    if isinstance(scale, Tensor):
        return scale
    dtype = torch.promote_types(p.dtype, torch.float32)
    return torch.tensor(scale, dtype=dtype, device=p.device)


def schedule_free_update(
    params: Sequence[Tensor],
    directions: Sequence[Tensor],
    scales: Sequence[Tensor | float],
    states: Sequence[dict[str, Any]],
    *,
    beta: float,
    weight_decay: float = 0.0,
    foreach: bool = False,
) -> None:
    """One schedule-free step of ``y`` (the parameters) and ``z`` (``state["z"]``), in place.

    ``scales[i]``: the step size of parameter ``i`` (a float or a tensor that broadcasts
    against it); ``weight_decay``: decoupled decay, applied at ``y`` as schedule-free AdamW.
    Arithmetic in ``promote(param dtype, float32)``; a low-precision parameter is rounded once.
    ``foreach=True`` uses multi-tensor kernels where every parameter has its rate's dtype
    (the same values to rounding; tests/test_averaging.py).
    """
    if (
        foreach
        and params
        and _schedule_free_foreach(params, directions, scales, states, beta, weight_decay)
    ):
        return
    for p, d, scale, st in zip(params, directions, scales, states):
        s = _scale_tensor(scale, p)
        _init(p, s, st)
        z, wsum, lr_max = st["z"], st["sf.weight_sum"], st["sf.lr_max"]
        torch.maximum(lr_max, s, out=lr_max)
        w = torch.where(s > 0, lr_max.square(), torch.zeros_like(s))  # lr 0: nothing moves
        wsum.add_(w)
        c = torch.where(wsum > 0, w / wsum, torch.zeros_like(w))
        low = p.dtype != s.dtype
        y = p.detach().to(s.dtype) if low else p.detach()
        zz = z.to(s.dtype) if low else z
        dd = d.to(s.dtype)
        if weight_decay != 0:
            dd = torch.add(dd, y, alpha=weight_decay)
        coef = s * (beta * (1 - c) - 1)
        y.lerp_(zz, c.to(y.dtype) if c.dim() == 0 else c)
        y.addcmul_(dd, coef)
        zz.addcmul_(dd, s, value=-1)
        if low:
            p.detach().copy_(y)
            z.copy_(zz)


def _init(p: Tensor, s: Tensor, st: dict[str, Any]) -> None:
    if "z" not in st:
        st["z"] = p.detach().clone(memory_format=torch.preserve_format)
        st["sf.weight_sum"] = torch.zeros_like(s)
        st["sf.lr_max"] = torch.zeros_like(s)


def _schedule_free_foreach(
    params: Sequence[Tensor],
    directions: Sequence[Tensor],
    scales: Sequence[Tensor | float],
    states: Sequence[dict[str, Any]],
    beta: float,
    weight_decay: float,
) -> bool:
    """The multi-tensor path of ``schedule_free_update``; False (nothing done) where it does
    not apply (a parameter whose dtype is not its rate's: the reference rounds once)."""
    ss = [_scale_tensor(sc, p) for sc, p in zip(scales, params)]
    if any(p.dtype != s.dtype for p, s in zip(params, ss)):
        return False
    for p, s, st in zip(params, ss, states):
        _init(p, s, st)
    zs = [st["z"] for st in states]
    wsums = [st["sf.weight_sum"] for st in states]
    lr_maxs = [st["sf.lr_max"] for st in states]
    cs, coefs = _weights(ss, lr_maxs, wsums, beta)
    ys = [p.detach() for p in params]
    dds = list(directions)
    if weight_decay != 0:
        dds = list(torch._foreach_add(dds, ys, alpha=weight_decay))
    torch._foreach_lerp_(ys, zs, cs)
    torch._foreach_addcmul_(ys, dds, coefs, value=-1)
    torch._foreach_addcmul_(zs, dds, ss, value=-1)
    return True


def _weights(
    ss: list[Tensor], lr_maxs: list[Tensor], wsums: list[Tensor], beta: float
) -> tuple[list[Tensor], list[Tensor]]:
    """The averaging weights of the multi-tensor path: updates ``lr_maxs`` and ``wsums`` in
    place, returns ``(c, s (1 - beta + beta c))`` per parameter. Scalar rates of one dtype
    and device (``global`` / ``layer`` / ``tensor`` blocks) take a fixed number of kernels on
    stacked values (elementwise, so the same values as per tensor)."""
    s0 = ss[0]
    tiny = torch.finfo(s0.dtype).tiny
    if all(s.dim() == 0 and s.dtype == s0.dtype and s.device == s0.device for s in ss):
        s_ = torch.stack(ss)
        lr_max = torch.maximum(torch.stack(lr_maxs), s_)
        w = lr_max * lr_max
        w.mul_(torch.sign(s_))  # rate 0 (s >= 0): weight 0
        wsum = torch.stack(wsums).add_(w)
        c = w.div_(torch.clamp_min(wsum, tiny))  # 0 / tiny = 0
        coef = (c * beta).add_(1 - beta).mul_(s_)  # -coef = s (1 - beta + beta c)
        torch._foreach_copy_(lr_maxs, list(lr_max.unbind()))
        torch._foreach_copy_(wsums, list(wsum.unbind()))
        return list(c.unbind()), list(coef.unbind())
    torch._foreach_maximum_(lr_maxs, ss)
    ws = torch._foreach_mul(lr_maxs, lr_maxs)
    torch._foreach_mul_(ws, torch._foreach_sign(ss))  # rate 0 (s >= 0): weight 0
    torch._foreach_add_(wsums, ws)
    cs = torch._foreach_div(ws, torch._foreach_clamp_min(wsums, tiny))  # 0 / tiny = 0
    coefs = torch._foreach_mul(cs, beta)  # -coef = s (1 - beta + beta c)
    torch._foreach_add_(coefs, 1 - beta)
    torch._foreach_mul_(coefs, ss)
    return list(cs), list(coefs)


@torch.no_grad()
def to_eval(params: Sequence[Tensor], states: Sequence[dict[str, Any]], beta: float) -> None:
    """``y -> x = (y - (1 - beta) z) / beta`` for each parameter that has a ``z``."""
    for p, st in zip(params, states):
        z = st.get("z")
        if z is not None:
            p.lerp_(z.to(p.device), 1 - 1 / beta)


@torch.no_grad()
def to_train(params: Sequence[Tensor], states: Sequence[dict[str, Any]], beta: float) -> None:
    """``x -> y = (1 - beta) z + beta x`` for each parameter that has a ``z``."""
    for p, st in zip(params, states):
        z = st.get("z")
        if z is not None:
            p.lerp_(z.to(p.device), 1 - beta)
