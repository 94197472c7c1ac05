"""Newton trainable learning rate (TLR; Retsinas et al.) and its first-order comparators.

Windows. Every ``K`` steps (``K = update_every``, or ``max(1, round(p * steps_per_epoch))``,
raised by ``window_floor`` below; ``window_length(group)``) the rule closes a *window* ``k``
and forms its "gradient"::

    g_k = sum over the window's steps of  u_t,       u_t = d_t (+ weight_decay * p_t, AdamW)

the displacement per unit of rate: while the rate is constant over the window this is exactly
the paper's ``(w_start - w_end) / alpha_k`` (weight change over K steps divided by the rate),
so it contains momentum, weight decay and Adam's scaling. Accumulating ``u_t`` instead of
dividing the weight change by the rate gives the same vector, and stays defined when a
scheduler sets ``lr = 0`` or changes ``lr`` inside a window.

TLR (rule ``"tlr"``, Eq. 8 with the paper's "two previous windows" approximation): with the
previous window ``g_{k-1}`` playing ``u`` and ``grad L(w_{t-1})``, and the latest ``g_k``
playing ``grad L(w_hat)``::

    num    = <g_{k-1}, g_k>_b                           (per block b)
    den    = <g_{k-1}, g_{k-1} - g_k>_b                 (alpha * second derivative)
    factor = 1 + gamma * num / den
    alpha_b <- alpha_b * clamp(factor, min_factor, max_factor)     if den > 0 and finite
    alpha_b <- alpha_b                                             otherwise

Which multiplier the factor multiplies (``newton_base``). The gradient change
``g_{k-1} - g_k`` the denominator measures was produced mostly by the steps of window ``k-1``
(for ``K = 1`` only by them), taken with the multiplier ``alpha_{k-1}`` that was in force then;
Eq. 8 is a Newton step on *that* rate. ``"current"`` (the paper's literal rule and the authors'
code, the default) multiplies the current ``alpha_k`` instead; ``"window"`` multiplies
``alpha_{k-1}`` (state ``"tlr.alpha_prev"``)::

    "current":  alpha_b <- alpha_k     * factor
    "window":   alpha_b <- alpha_{k-1} * factor

For ``0.5 x^T A x`` with one full-batch SGD step per window (``K = 1``) and ``gamma = 1``,
``"window"`` gives exactly the line-search rate ``u^T u / u^T A u`` along the older window's
direction ``u = g_{k-1}`` at *every* update. ``"current"`` gives it at the first update only
(there ``alpha_k = alpha_{k-1}``); later it is off by ``alpha_k / alpha_{k-1}``, the previous
factor, so the factors compound (tests/test_tlr.py: 1.523 against the exact 0.283).

Safeguards (hyperparameters; the defaults are the paper's, i.e. off; ``window_floor`` and
``max_alpha`` apply to both rules of this module):

* ``window_floor`` (``c >= 0``, 0 = off): ``K = max(K_base, ceil(c / (1 - mu)))`` with ``mu``
  the direction's memory (Adam's ``beta1``, the heavy-ball / Nesterov / RMSprop ``momentum``,
  0 for plain SGD). Windows as short as the direction's memory correlate through it, which
  raises every factor even on pure noise (``window_length`` gives the effective ``K``).
* ``newton_base``: ``"current"`` (the paper) or ``"window"`` (above). TLR only.
* ``max_alpha`` (``> 0``, ``inf`` = off): ``alpha <- min(alpha, max_alpha)`` at every window
  close, after the factor: from the first close on the effective rate is at most
  ``lr * max_alpha``.

Guards (the paper's, plus a floor): a non-positive denominator keeps the rate (the paper:
"keeping the learning rate unchanged when the denominator is negative"; the authors' code
tests ``||g_{k-1}||^2 < 0`` instead, which never fires); the factor is clamped to at most
``max_factor = 100`` (commented out in the authors' code) and, our addition, to at least
``min_factor = 0.01``, so the rate stays positive; a non-finite factor (NaN / inf gradients,
zero windows) keeps the rate.

Hypergradient windows (rule ``"hypergradient-window"``, the paper's Table 1 comparators, on
the same windows; ``eta`` in the paper's absolute units)::

    form="additive":        lr alpha  <-  lr alpha + eta <g_k, g_{k-1}>
    form="multiplicative":  alpha     <-  alpha (1 + eta cos(g_k, g_{k-1}))

with the same clamp of the factor ``new / old`` (so the additive form cannot reach zero or a
negative rate either) and the same non-finite guard; a group with ``lr == 0`` does not adapt.

State (the public contract): per block ``"<rule>.alpha"`` (the multiplier), ``"<rule>.factor"``
(the last clamped factor, applied to the base multiplier, 1 if none), ``"<rule>.count"`` (int,
steps in the open window), ``"<rule>.windows"`` (int, windows closed), with
``newton_base="window"`` ``"tlr.alpha_prev"`` (the multiplier in force during the last closed
window; created at the first window close); per parameter ``"<rule>.acc"`` (open window) and
``"<rule>.prev"`` (last closed window), at least float32.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..blocks import Partition, acc_dtype
from ..hyper import Hyper, choice, integer, real
from .base import Rule, StepContext

__all__ = ["TLR", "HypergradientWindow", "base_window_length", "direction_memory", "window_length"]

_WINDOW: dict[str, Hyper] = {
    "p": Hyper(0.2, real(0.0, lo_open=True), "fraction of an epoch per window"),
    "steps_per_epoch": Hyper(None, integer(1, optional=True), "K = round(p * steps_per_epoch)"),
    "update_every": Hyper(None, integer(1, optional=True), "K directly (instead of p)"),
    "max_factor": Hyper(100.0, real(1.0), "largest factor of one rate update"),
    "min_factor": Hyper(0.01, real(0.0, 1.0, lo_open=True), "smallest factor (keeps rate > 0)"),
    "window_floor": Hyper(
        0.0, real(0.0), "K >= ceil(window_floor / (1 - mu)), mu the direction's memory (0: off)"
    ),
    "max_alpha": Hyper(
        math.inf, real(0.0, lo_open=True, allow_inf=True), "cap on the multiplier (inf: off)"
    ),
}


def base_window_length(group: dict[str, Any]) -> int:
    """``K_base``: ``update_every``, or ``max(1, round(p * steps_per_epoch))``."""
    if group["update_every"] is not None:
        return int(group["update_every"])
    return max(1, round(group["p"] * group["steps_per_epoch"]))


def direction_memory(group: dict[str, Any]) -> float:
    """``mu``: the memory of the group's direction, ``1 / (1 - mu)`` steps. Adam's ``beta1``,
    the ``momentum`` of heavy-ball, Nesterov and RMSprop, 0 for a direction with neither (a
    group holds exactly its direction's and rule's hyperparameters; no rule has these)."""
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return 0.0


def window_length(group: dict[str, Any]) -> int:
    """The effective ``K``: ``max(K_base, ceil(window_floor / (1 - mu)))`` (``K_base`` from
    ``base_window_length``, ``mu`` from ``direction_memory``; a floor of 0 is off).

    >>> window_length({"direction": "adam", "betas": (0.9, 0.999), "update_every": 6,
    ...                "p": 0.2, "steps_per_epoch": None, "window_floor": 3.0})
    30
    """
    k = base_window_length(group)
    floor = group.get("window_floor", 0.0)
    if floor > 0:
        v = floor / (1.0 - direction_memory(group))
        k = max(k, math.ceil(v * (1 - 1e-12)))  # 3 / (1 - 0.9) = 30.000000000000004 -> 30
    return k


class _Windowed(Rule):
    """Shared machinery: accumulate ``u_t`` over windows of ``K`` steps (``window_length``); on
    closing a window, multiply the block's base alpha (``newton_base``: the current one, or the
    one in force during the previous window) by the clamped ``factor`` the subclass computes,
    then cap it at ``max_alpha``."""

    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        "update_every": (1, 2, 3),
        "max_factor": (1.0, 10.0, 1e3),
        "min_factor": (1e-3, 0.5, 1.0),
    }

    def collectives(
        self, group: dict[str, Any], step: int, *, sharded: bool
    ) -> frozenset[int] | None:
        """FSDP2: one packed call when a window other than the first closes (step ``n`` from
        0 closes window ``(n + 1) / K`` when ``K`` divides ``n + 1``), none otherwise."""
        k_len, t = window_length(group), step + 1
        return frozenset({int(sharded and t % k_len == 0 and t // k_len >= 2)})

    def check(self, group: dict[str, Any], owner: str) -> None:
        spe, every = group["steps_per_epoch"], group["update_every"]
        if (spe is None) == (every is None):
            raise ValueError(
                f"Invalid steps_per_epoch / update_every: {spe!r} / {every!r} (expected exactly "
                "one of them: steps_per_epoch (with p) gives K = max(1, round(p * "
                f"steps_per_epoch)), update_every gives K directly) [{owner}]"
            )
        if group["min_factor"] > group["max_factor"]:
            raise ValueError(
                f"Invalid min_factor: {group['min_factor']!r} (expected min_factor <= "
                f"max_factor = {group['max_factor']!r}) [{owner}]"
            )

    def factor(
        self, num: Tensor, sq_prev: Tensor, sq_acc: Tensor, alpha: Tensor, ctx: StepContext
    ) -> Tensor:
        """The factor of one block from ``num = <g_{k-1}, g_k>``, ``||g_{k-1}||^2``,
        ``||g_k||^2`` and the multiplier it will multiply; NaN means "keep the rate"."""
        raise NotImplementedError

    def _param_state(self, ctx: StepContext, i: int, name: str) -> Tensor:
        st = ctx.state(i)
        k = self.key(name)
        if k not in st:
            p = ctx.params[i]
            st[k] = torch.zeros_like(p, dtype=acc_dtype(p.dtype))
        return st[k]

    def rates(self, ctx: StepContext) -> list[Tensor]:
        wd = ctx.decoupled_wd
        idx = ctx.active
        accs = [self._param_state(ctx, i, "acc") for i in idx]
        ds = [ctx.directions[i] for i in idx]
        if ctx.foreach and all(d is not None and d.dtype == a.dtype for d, a in zip(ds, accs)):
            torch._foreach_add_(accs, ds)  # type: ignore[arg-type]
            if wd != 0:
                torch._foreach_add_(accs, [ctx.params[i].detach() for i in idx], alpha=wd)
        else:  # the reference
            for i, acc, d in zip(idx, accs, ds):
                assert d is not None
                acc.add_(d.to(acc.dtype))
                if wd != 0:
                    acc.add_(ctx.params[i].detach().to(acc.dtype), alpha=wd)
        out = []
        for s in ctx.partition.sets:
            st = ctx.block_state(s)
            st.setdefault(self.key("count"), 0)
            st.setdefault(self.key("windows"), 0)
            self.ensure(ctx, s, "factor", 1.0)
            out.append(self.ensure(ctx, s, "alpha", 1.0))
        return out

    def end(self, ctx: StepContext) -> None:
        k_len = window_length(ctx.group)
        due, opened = [], []
        for s in ctx.partition.sets:
            st = ctx.block_state(s)
            st[self.key("count")] += 1
            if st[self.key("count")] >= k_len:
                due.append(s)
                opened.append(st[self.key("windows")] >= 1)
        if not due:
            return
        part = Partition(due, ctx.partition.params, ctx.partition.kind)
        accs: list[Tensor | None] = [None] * len(ctx.params)
        prevs: list[Tensor | None] = [None] * len(ctx.params)
        for s in due:
            for i in s.members:
                accs[i] = self._param_state(ctx, i, "acc")
                prevs[i] = self._param_state(ctx, i, "prev")
        if any(opened):
            num, sq_prev, sq_acc = part.inner_many(  # one packed all-reduce under FSDP2
                [(prevs, accs), (prevs, prevs), (accs, accs)], foreach=ctx.foreach
            )
        by_window = "newton_base" in self.hyper and ctx.group["newton_base"] == "window"
        max_alpha = ctx.group.get("max_alpha", math.inf)
        prev_key = self.key("alpha_prev")
        for b, s in enumerate(due):
            st = ctx.block_state(s)
            alpha = st[self.key("alpha")]  # the multiplier of the window now closing
            base = alpha
            if by_window:  # the multiplier of the previous window; created at the first close
                if prev_key not in st:  # (or after a switch from "current": the paper's base)
                    st[prev_key] = alpha.clone()
                base = st[prev_key]
            if opened[b]:
                f = self.factor(num[b], sq_prev[b], sq_acc[b], base, ctx)
                ok = torch.isfinite(f)
                f = torch.where(ok, f, torch.ones_like(f))
                f = f.clamp(ctx.group["min_factor"], ctx.group["max_factor"])
                f = torch.where(ok, f, torch.ones_like(f))
                new = base * f
                if by_window:
                    base.copy_(alpha)  # the next close's base (new is computed already)
                self.accept(ctx, s, alpha, new, ok)  # NaN factor / overflow: kept
                st[self.key("factor")].copy_(f)
            elif by_window:
                base.copy_(alpha)
            if max_alpha < math.inf:
                alpha.clamp_(max=max_alpha)
            for i in s.members:
                prev, acc = prevs[i], accs[i]
                assert prev is not None and acc is not None
                prev.copy_(acc)
                acc.zero_()
            st[self.key("count")] = 0
            st[self.key("windows")] += 1


class TLR(_Windowed):
    """Damped Newton step on the rate every ``K`` steps (Eq. 8); see the module docstring."""

    name = "tlr"
    hyper: ClassVar[dict[str, Hyper]] = {
        "gamma": Hyper(0.33, real(0.0, 1.0, lo_open=True), "Newton damping (0, 1]"),
        "newton_base": Hyper(
            "current",
            choice(("current", "window")),
            "multiplier the factor multiplies: the current one (paper) or the previous window's",
        ),
        **_WINDOW,
    }
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        **_Windowed.fuzz_examples,
        "gamma": (0.01, 0.5, 1.0),
    }

    def factor(
        self, num: Tensor, sq_prev: Tensor, sq_acc: Tensor, alpha: Tensor, ctx: StepContext
    ) -> Tensor:
        den = sq_prev - num
        f = 1 + ctx.group["gamma"] * num / den
        return torch.where(den > 0, f, torch.full_like(f, float("nan")))


class HypergradientWindow(_Windowed):
    """First-order rate updates on TLR's windows (the paper's Table 1 comparators)."""

    name = "hypergradient-window"
    hyper: ClassVar[dict[str, Hyper]] = {
        "eta": Hyper(1e-2, real(0.0), "meta rate (paper units: absolute rate per dot product)"),
        "form": Hyper("additive", choice(("additive", "multiplicative")), "update form"),
        **_WINDOW,
    }
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        **_Windowed.fuzz_examples,
        "eta": (0.0, 1e-2, 10.0),
        "form": ("additive", "multiplicative"),
    }

    def factor(
        self, num: Tensor, sq_prev: Tensor, sq_acc: Tensor, alpha: Tensor, ctx: StepContext
    ) -> Tensor:
        eta, lr = ctx.group["eta"], ctx.group["lr"]
        if ctx.group["form"] == "multiplicative":
            return 1 + eta * num / torch.sqrt(sq_prev * sq_acc)
        if lr <= 0:  # no rate to adapt; the NaN marks "keep"
            return torch.full_like(num, float("nan"))
        return 1 + eta * num / (lr * alpha)
