"""Newton trainable learning rate (TLR; Retsinas et al.) and its first-order comparators.

Windows. Every ``K`` steps (``K = update_every``, or ``max(1, round(p * steps_per_epoch))``)
the rule closes a *window* ``k`` and forms its "gradient"::

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

For ``0.5 x^T A x`` with one full-batch SGD step per window and ``gamma = 1`` the new rate
``lr * alpha`` is exactly the line-search rate ``u^T u / u^T A u`` along the window direction.

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
(the last factor applied, 1 if none), ``"<rule>.count"`` (int, steps in the open window),
``"<rule>.windows"`` (int, windows closed); per parameter ``"<rule>.acc"`` (open window) and
``"<rule>.prev"`` (last closed window), at least float32.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..blocks import Partition, acc_dtype
from ..directions import DIRECTIONS
from ..hyper import Hyper, choice, integer, real
from .base import Rule, StepContext

__all__ = ["TLR", "HypergradientWindow", "window_length"]

_WINDOW: dict[str, Hyper] = {
    "p": Hyper(0.2, real(0.0, lo_open=True), "fraction of an epoch per window"),
    "steps_per_epoch": Hyper(None, integer(1, optional=True), "K = round(p * steps_per_epoch)"),
    "update_every": Hyper(None, integer(1, optional=True), "K directly (instead of p)"),
    "max_factor": Hyper(100.0, real(1.0), "largest factor of one rate update"),
    "min_factor": Hyper(0.01, real(0.0, 1.0, lo_open=True), "smallest factor (keeps rate > 0)"),
}


def window_length(group: dict[str, Any]) -> int:
    """``K``: ``update_every``, or ``max(1, round(p * steps_per_epoch))``."""
    if group["update_every"] is not None:
        return int(group["update_every"])
    return max(1, round(group["p"] * group["steps_per_epoch"]))


class _Windowed(Rule):
    """Shared machinery: accumulate ``u_t`` over windows of ``K`` steps; on closing a window,
    multiply the block's alpha by the clamped ``factor`` the subclass computes."""

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
        ``||g_k||^2`` and the current multiplier; NaN means "keep the rate"."""
        raise NotImplementedError

    def _param_state(self, ctx: StepContext, i: int, name: str) -> Tensor:
        st = ctx.state(i)
        k = self.key(name)
        if k not in st:
            p = ctx.params[i]
            st[k] = torch.zeros_like(p, dtype=acc_dtype(p.dtype))
        return st[k]

    def rates(self, ctx: StepContext) -> list[Tensor]:
        direction = DIRECTIONS[ctx.group["direction"]]
        wd = ctx.group.get("weight_decay", 0.0) if direction.decoupled_decay else 0.0
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
        for b, s in enumerate(due):
            st = ctx.block_state(s)
            if opened[b]:
                alpha = st[self.key("alpha")]
                f = self.factor(num[b], sq_prev[b], sq_acc[b], alpha, ctx)
                ok = torch.isfinite(f)
                f = torch.where(ok, f, torch.ones_like(f))
                f = f.clamp(ctx.group["min_factor"], ctx.group["max_factor"])
                f = torch.where(ok, f, torch.ones_like(f))
                self.accept(ctx, s, alpha, alpha * f, ok)  # NaN factor / overflow: kept
                st[self.key("factor")].copy_(f)
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
        **_WINDOW,
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

    def factor(
        self, num: Tensor, sq_prev: Tensor, sq_acc: Tensor, alpha: Tensor, ctx: StepContext
    ) -> Tensor:
        eta, lr = ctx.group["eta"], ctx.group["lr"]
        if ctx.group["form"] == "multiplicative":
            return 1 + eta * num / torch.sqrt(sq_prev * sq_acc)
        if lr <= 0:  # no rate to adapt; the NaN marks "keep"
            return torch.full_like(num, float("nan"))
        return 1 + eta * num / (lr * alpha)
