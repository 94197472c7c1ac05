"""AdaLip: a per-block Lipschitz estimate of the step size (Ioannou, Tagaris, Stafylopatis).

Per block ``b`` (default: each parameter tensor, as the authors' code; ``blocks="layer"`` is
the paper's per-layer version) and step ``t`` (the block's own step count, from 1)::

    r_t   = ||v_{t-1}||_b / (||v_t - v_{t-1}||_b + c_t)          (Eq. 7)
    S_t   = gamma S_{t-1} + (1 - gamma) r_t,      S_0 = S_1 = 1    (Eq. 8)
    A_t   = lr * sigma_t * S_t,   sigma_t = 1 / sqrt(t) ("sqrt")  or  1 ("constant")   (Eq. 9)

and the step is ``p <- p - A_t d_t`` with ``d`` the base direction (SGD, RMSProp, Adam, ...).
The multiplier kept in ``"<rule>.alpha"`` is ``sigma_t S_t``. The first step uses the plain
rate (``S_1 = S_0 = 1``: there is no ``v_0``), as the authors' code does.

* rule ``"lipschitz"`` (Algorithms 2-4): ``v_t = g_t``, the gradient of the objective the
  direction minimises (``ctx.objective``: ``p.grad``, negated under ``maximize``, plus
  ``weight_decay * p`` for coupled L2 decay).
* rule ``"lipschitz-u"`` (Appendix C, Eq. C4): ``v_{t-1} = u_{t-1}`` the step applied last
  time, ``v_t = u_hat_t = lr * sigma_t * (d_t + wd p_t)`` the step the base optimizer would
  take now at the base rate (``wd``: decoupled decay only).

Why ``r_t`` is a rate: for gradient descent on ``f`` with an ``L``-Lipschitz gradient,
``||g_t - g_{t-1}|| <= L lr ||g_{t-1}||``, so ``lr * r_t >= 1 / L`` (with equality along an
eigenvector of a quadratic, where ``lr * r_t = 1 / lambda``).

``c_schedule="theoretical"`` (Eq. A.3): ``c_t = max(c_req, c_{t-1})``, ``c_1 = c``, with::

    c_req = (1 - gamma) ||v_{t-1}|| / ((sigma_{t-1} / sigma_t - gamma) S_{t-1}) - ||v_t - v_{t-1}||

the smallest ``c_t`` with ``A_t <= A_{t-1}`` (Lemma 5; ``sigma_{t-1}/sigma_t = sqrt(t/(t-1))``
for "sqrt" as in the paper, 1 for "constant", where it makes ``S_t`` itself non-increasing).
``c_t`` is non-decreasing; it is kept per block in ``"<rule>.c"``.

Decisions the paper leaves open (see docs/adalip.md):

* ``||v_t - v_{t-1}|| == 0`` (the weights did not move, e.g. ``lr = 0`` from a scheduler, or
  an exactly repeated gradient) carries no curvature information: ``S`` is kept instead of
  jumping to ``||v_{t-1}|| / c`` (up to ``1e8 ||g||`` with the default ``c``).
* a non-finite ratio (NaN / inf gradients, ``0 / 0`` with ``c = 0``) keeps ``S``.
* ``||v_{t-1}|| = 0`` with a non-zero difference gives ``r_t = 0``, as the formula says.

State (the public contract): per block ``"<rule>.alpha"`` (``sigma_t S_t``), ``"<rule>.S"``,
``"<rule>.ratio"`` (last ``r_t``), ``"<rule>.c"`` (``c_t``), ``"<rule>.step"`` (int ``t``);
per parameter ``"<rule>.prev"`` (``v_{t-1}``, at least float32).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..blocks import acc_dtype
from ..hyper import Hyper, choice, real
from .base import Rule, StepContext

__all__ = ["Lipschitz", "LipschitzU"]


def sigma(schedule: str, t: int) -> float:
    """The schedule factor ``sigma_t``: ``1 / sqrt(t)`` or 1."""
    return 1.0 / math.sqrt(t) if schedule == "sqrt" else 1.0


class Lipschitz(Rule):
    """AdaLip's rate ``A_t = lr sigma_t S_t`` from gradients (see the module docstring)."""

    name = "lipschitz"
    hyper: ClassVar[dict[str, Hyper]] = {
        "gamma": Hyper(0.8, real(0.0, 1.0), "EMA factor of S (the authors' betaL)"),
        "c": Hyper(1e-8, real(0.0), "added to the denominator (c_1 for the theoretical c_t)"),
        "schedule": Hyper("constant", choice(("constant", "sqrt")), "sigma_t: 1 or 1/sqrt(t)"),
        "c_schedule": Hyper(
            "constant", choice(("constant", "theoretical")), "c_t: constant c or Eq. A.3"
        ),
    }
    uses_updates: ClassVar[bool] = False
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        "gamma": (0.0, 0.5, 0.8, 1.0),
        "c": (0.0, 1e-8, 1.0),
        "schedule": ("constant", "sqrt"),
        "c_schedule": ("constant", "theoretical"),
    }

    packed_reductions = True  # FSDP2: one packed all-reduce per step (rules.base.Rule.collectives)

    def _vectors(self, ctx: StepContext, steps: dict[int, int]) -> list[Tensor | None]:
        """``v_t`` per parameter (``None`` for parameters without a gradient)."""
        wd = ctx.decoupled_wd
        objective = None if self.uses_updates else ctx.objective
        out: list[Tensor | None] = [None] * len(ctx.params)
        for i in ctx.active:
            p = ctx.params[i]
            dt = acc_dtype(p.dtype)
            if objective is None:
                d = ctx.directions[i]
                assert d is not None
                v = d.to(dt)
                if wd != 0:
                    v = v + wd * p.detach().to(dt)
                out[i] = v * (ctx.lr * sigma(ctx.group["schedule"], steps[i]))
            else:
                g = objective[i]  # maximize and coupled L2 applied
                assert g is not None
                out[i] = g.to(dt)
        return out

    def rates(self, ctx: StepContext) -> list[Tensor]:
        if ctx.foreach:
            fast = self._rates_foreach(ctx)
            if fast is not None:
                return fast
        return self._rates_reference(ctx)

    def _rates_reference(self, ctx: StepContext) -> list[Tensor]:
        """The readable per-block reference (``foreach=False``)."""
        group, part = ctx.group, ctx.partition
        gamma, schedule = group["gamma"], group["schedule"]
        steps: dict[int, int] = {}
        ts = []
        for s in part.sets:
            st = ctx.block_state(s)
            t = st.get(self.key("step"), 0) + 1
            st[self.key("step")] = t
            ts.append(t)
            for i in s.members:
                steps[i] = t
        cur = self._vectors(ctx, steps)
        prevs: list[Tensor | None] = [None] * len(ctx.params)
        diffs: list[Tensor | None] = [None] * len(ctx.params)
        for i in ctx.active:
            st = ctx.state(i)
            k = self.key("prev")
            v = cur[i]
            assert v is not None
            if k not in st:
                st[k] = torch.zeros_like(v)
            prevs[i] = st[k]
            diffs[i] = v - st[k]
        sq_prev, sq_diff = part.inner_many([(prevs, prevs), (diffs, diffs)])  # one under FSDP2
        prev_norm = [x.sqrt() for x in sq_prev]
        diff_norm = [x.sqrt() for x in sq_diff]
        out = []
        for b, s in enumerate(part.sets):
            t = ts[b]
            S = self.ensure(ctx, s, "S", 1.0)
            c_t = self.ensure(ctx, s, "c", group["c"])
            ratio = self.ensure(ctx, s, "ratio", 1.0)
            alpha = self.ensure(ctx, s, "alpha", 1.0)
            if t >= 2:
                if group["c_schedule"] == "theoretical":
                    growth = sigma(schedule, t - 1) / sigma(schedule, t)
                    c_req = (1 - gamma) * prev_norm[b] / ((growth - gamma) * S) - diff_norm[b]
                    c_t.copy_(torch.fmax(c_req, c_t))  # fmax: a NaN requirement keeps c_{t-1}
                r = prev_norm[b] / (diff_norm[b] + c_t)
                ok = torch.isfinite(r) & (diff_norm[b] > 0)
                ratio.copy_(torch.where(ok, r, ratio))
                self.accept(ctx, s, S, gamma * S + (1 - gamma) * r, ok)  # S > 0, finite
            alpha.copy_(S * sigma(schedule, t))
            out.append(alpha)
        self._remember(ctx, cur, out)
        return out

    def _ensure_all(self, ctx: StepContext, sets: list, name: str, fill: float) -> list[Tensor]:
        """``ensure`` for every block set, with one state lookup per block."""
        key = self.key(name)
        out = []
        for s in sets:
            st = ctx.block_state(s)
            v = st.get(key)
            out.append(v if v is not None else self.ensure(ctx, s, name, fill))
        return out

    def _rates_foreach(self, ctx: StepContext) -> list[Tensor] | None:
        """The multi-tensor path (``foreach=True``): the same values as the reference with a
        fixed number of kernels per step, ``None`` where it does not apply (block values
        that are not scalars, mixed dtypes, blocks at different first/later steps).

        Per step, over the parameter-sized buffers: ``||v_{t-1}||`` (one ``_foreach_norm``),
        ``prev <- prev - v_t`` in place and its norm (no temporary), ``prev <- v_t`` (or
        ``u_t`` for -U); the per-block scalar arithmetic runs once on stacked vectors.
        """
        group, part = ctx.group, ctx.partition
        sets = part.sets
        idx = ctx.active
        if not sets or any(s.shape for s in sets):
            return None
        dtype = sets[0].dtype
        if any(s.dtype != dtype for s in sets) or any(ctx.params[i].dtype != dtype for i in idx):
            return None
        key_step = self.key("step")
        ts = [ctx.block_state(s).get(key_step, 0) + 1 for s in sets]
        later = all(t >= 2 for t in ts)
        if not later and any(t >= 2 for t in ts):  # some blocks joined late: the reference
            return None
        gamma, schedule = group["gamma"], group["schedule"]
        t_of = {i: t for s, t in zip(sets, ts) for i in s.members}
        wd = ctx.decoupled_wd
        ps = [ctx.params[i].detach() for i in idx]
        if self.uses_updates:  # w = d (+ wd p, decoupled);  v_t = lr sigma_t w
            ws = [ctx.directions[i] for i in idx]
            if wd != 0:
                ws = list(torch._foreach_add(ws, ps, alpha=wd))
        else:  # v_t = g: the objective gradient (maximize and coupled L2 applied)
            objective = ctx.objective
            ws = [objective[i] for i in idx]
        key = self.key("prev")
        for i, w in zip(idx, ws):
            st = ctx.state(i)
            if key not in st:
                st[key] = torch.zeros_like(w, dtype=dtype)
        prevs = [ctx.state(i)[key] for i in idx]
        full: list[Tensor | None] = [None] * len(ctx.params)
        for i, prev in zip(idx, prevs):
            full[i] = prev
        prev_sq = part.scalar_inner(full, full)
        if prev_sq is None:
            return None
        for s, t in zip(sets, ts):
            ctx.block_state(s)[key_step] = t
        if self.uses_updates:
            scales = [ctx.lr * sigma(schedule, t_of[i]) for i in idx]
            if len(set(scales)) == 1:
                torch._foreach_add_(prevs, ws, alpha=-scales[0])  # prev - v_t
            else:
                for prev, w, sc in zip(prevs, ws, scales):
                    prev.add_(w, alpha=-sc)
        else:
            torch._foreach_sub_(prevs, ws)  # prev - v_t  (the norm of v_t - v_{t-1})
        diff_sq = part.scalar_inner(full, full)
        assert diff_sq is not None
        S_l = self._ensure_all(ctx, sets, "S", 1.0)
        c_l = self._ensure_all(ctx, sets, "c", group["c"])
        ratio_l = self._ensure_all(ctx, sets, "ratio", 1.0)
        alpha_l = self._ensure_all(ctx, sets, "alpha", 1.0)
        device = prev_sq.device
        S = torch.stack(S_l)
        if later:
            prev_norm, diff_norm = prev_sq.sqrt(), diff_sq.sqrt()
            c_t = torch.stack(c_l)
            if group["c_schedule"] == "theoretical":
                growth = torch.tensor(
                    [sigma(schedule, t - 1) / sigma(schedule, t) for t in ts],
                    dtype=dtype,
                    device=device,
                )
                c_req = (1 - gamma) * prev_norm / ((growth - gamma) * S) - diff_norm
                c_t = torch.fmax(c_req, c_t)
                torch._foreach_copy_(c_l, list(c_t.unbind()))
            r = prev_norm / (diff_norm + c_t)
            ok = torch.isfinite(r) & (diff_norm > 0)
            torch._foreach_copy_(ratio_l, list(torch.where(ok, r, torch.stack(ratio_l)).unbind()))
            new = gamma * S + (1 - gamma) * r
            good = torch.isfinite(new) & (new > 0) & ok  # as Rule.accept, for all blocks at once
            S = torch.where(good, new, S)
            torch._foreach_copy_(S_l, list(S.unbind()))
            rejected = self._ensure_all(ctx, sets, "rejected", 0.0)
            torch._foreach_add_(rejected, list((~good).to(dtype).unbind()))
        if schedule == "sqrt":
            sig = torch.tensor([sigma(schedule, t) for t in ts], dtype=dtype, device=device)
            alphas = S * sig
        else:
            alphas = S * 1.0
        torch._foreach_copy_(alpha_l, list(alphas.unbind()))
        if self.uses_updates:  # prev <- u_t = w (alpha_b lr), the step applied now
            per_param = part.broadcast(alpha_l)
            torch._foreach_copy_(prevs, ws)
            torch._foreach_mul_(prevs, [per_param[i] * ctx.lr for i in idx])  # type: ignore[operator]
        else:
            torch._foreach_copy_(prevs, ws)
        return alpha_l

    def _remember(self, ctx: StepContext, cur: list[Tensor | None], alphas: list[Tensor]) -> None:
        """Store ``v_{t-1}`` for the next step: the gradient, or (-U) the applied step."""
        if self.uses_updates:
            per_param = ctx.partition.broadcast(alphas)
            wd = ctx.decoupled_wd
        for i in ctx.active:
            prev = ctx.state(i)[self.key("prev")]
            if self.uses_updates:
                d = ctx.directions[i]
                a = per_param[i]
                assert d is not None and a is not None
                u = d.to(prev.dtype)
                if wd != 0:
                    u = u + wd * ctx.params[i].detach().to(prev.dtype)
                prev.copy_(u * (a * ctx.lr))
            else:
                v = cur[i]
                assert v is not None
                prev.copy_(v)


class LipschitzU(Lipschitz):
    """AdaLip-U (Appendix C): the estimate from the previous applied step and the current
    tentative step at the base rate instead of gradients."""

    name = "lipschitz-u"
    uses_updates = True
