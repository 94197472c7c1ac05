"""Hypergradient descent on the step size (HD; Baydin et al.) and its multi-level
combination CAM-HD ("Adaptive Hierarchical Hyper-gradient Descent", Algorithm 1).

Notation. The composed optimizer steps ``theta_{t+1} = theta_t - lr * kappa_t * u_t`` where
``u_t`` is the *update direction*: the direction ``d_t`` (momentum buffer, Nesterov
combination, bias-corrected Adam direction, ...) plus ``weight_decay * theta_t`` for
decoupled decay (AdamW). So the exact derivative of the next loss with respect to the
multiplier used at step ``t`` is (a one-step unrolled graph)::

    dL(theta_{t+1}) / d alpha_t  =  -g_{t+1} . s_t,       s_t = lr_t * tau_t * u_t

``g`` is the gradient of the objective the direction minimises (``-grad`` with ``maximize``,
``+ weight_decay * theta`` for coupled L2 decay) and ``s_t`` ("prev", kept per parameter in
the rule state) is the displacement per unit of multiplier. ``tau_t`` is 1 unless the decay
below is on.

HD (rule ``"hypergradient"``), one rate per block ``b`` of the group's ``blocks``, updated
*before* the step with the current gradient, as in Baydin's code::

    alpha_b <- max(0, alpha_b - beta / lr^2 * dL/dalpha_b),   dL/dalpha_b = -<g, s>_b

Units. The paper's rate is absolute (``alpha_abs = lr * alpha``) and its hypergradient rate
``beta`` (``hypergrad_lr``) is given in those units: ``alpha_abs <- alpha_abs + beta g.u``.
Since ``dL/dalpha = lr * dL/dalpha_abs``, the same step on the multiplier is
``alpha <- alpha - beta / lr^2 * dL/dalpha``; with a constant ``lr`` the effective rate
``lr * alpha`` follows the paper's (and Baydin's code's) trajectory exactly, without ever
writing ``group["lr"]``. A group with ``lr == 0`` does not adapt.

Guards (no host sync): the rate is projected onto ``[0, inf)`` after each hypergradient step
(Baydin's code lets it go negative, which turns the step into gradient *ascent*); a block
whose hypergradient is not finite (NaN / inf gradients) keeps its rate.

Multiplicative form (``form="multiplicative"``; ``"additive"``, the default, is the paper's
rule above). The additive step is in absolute rate units, so it is not scale-free: multiplying
the loss by ``c`` multiplies ``<g, s>``, the rate's step, by ``c`` (Adam) or ``c^2`` (SGD at
the same ``lr``), and no single ``hypergrad_lr`` suits rates and losses of different sizes
(measured: from ``lr = 1e-3`` with ``hypergrad_lr = 1e-3`` SGD-HD's rate moved ~5e-5 per
step; Adam-HD's ``1e-8`` left it at 0.999e-3 after 960 steps). The multiplicative form
normalises the same inner product::

    cos_b   = <g, s>_b / (||g||_b ||s||_b)        (= -dL/dalpha_b / (||g||_b ||s||_b))
    alpha_b <- alpha_b * clamp(1 + hypergrad_lr * cos_b, MULT_FACTOR_MIN, MULT_FACTOR_MAX)

so ``hypergrad_lr`` is unit-free: the largest relative change of the rate in one step (per
unit cosine). The cosine does not change when the loss, the gradient or ``lr`` is rescaled
(``s`` is proportional to ``lr``), so the rate moves geometrically from any ``lr``. (The
precedent: TLR's ``"hypergradient-window"`` rule, ``alpha (1 + eta cos(g_k, g_{k-1}))``.)

Guards of the multiplicative form: the factor is clamped to ``[MULT_FACTOR_MIN,
MULT_FACTOR_MAX] = [1/2, 2]`` (it binds only for ``hypergrad_lr > 1/2``, where ``1 +
hypergrad_lr * cos`` could reach 0 or below); a cosine that is not finite (the first step,
where ``s = 0``; a block whose gradient is 0; NaN / inf gradients) keeps the rate; the cosine
is clamped to ``[-1, 1]`` (rounding; a squared norm that underflows). The rate stays positive;
a rate at exactly 0 (e.g. left by the additive form) stays 0. A group with ``lr == 0`` does not
adapt (its ``s`` is 0). The norms ride in the same packed reduction as the inner product (no
collective under DDP; one packed all-reduce per step under FSDP2, as in the additive form).

Decay (CAM-HD paper, Section 2.4; ``decay_rate = r > 0``): the applied multiplier is
``kappa_t = tau(t) alpha_t + (1 - tau(t)) alpha_inf`` with ``tau(t) = exp(-r t)`` (``t``: the
group's step count, from 1), so it tends to ``alpha_inf`` (a multiplier: the effective rate
tends to ``lr * alpha_inf``), and the hypergradient is scaled by ``tau`` (it is folded into
``s_t``).

CAM-HD (rule ``"cam-hd"``) keeps rates at several ``levels`` (finest first, e.g.
``("layer", "global")`` or ``("element", "layer", "global")``; each level's blocks must nest
in the next), combination weights ``gamma`` (globally shared, summing to 1) and per step::

    h_{j,b}     = sum_{p in b} -g_p s_p                       (Eq. 8, per level j, block b)
    alpha_{j,b} <- max(0, alpha_{j,b} - beta_j / lr^2 * gamma_j h_{j,b})
    gamma_j     <- gamma_j - delta * sum_b alpha_{j,b} h_{j,b}  (alpha, gamma: last step's)
    gamma       <- max(gamma, 0) / sum(max(gamma, 0))         (renormalised every step)
    alpha*_p    =  sum_j gamma_j alpha_{j, b_j(p)}            (new gamma, new alphas)

``gamma_j h_{j,b}`` and ``sum_b alpha_{j,b} h_{j,b}`` are the exact one-step derivatives of
the loss with respect to the rates and weights the last step applied. (Algorithm 1 combines
the new rates with the *previous* weights, so its rate update uses weights one step stale;
we update both first and combine with the new ones: the difference is one ``delta`` step.)

with ``beta_j = hypergrad_lr * K_j``, ``K_j`` the number of rate values at level ``j`` in the
group (1 for ``global``, the number of layers for ``layer``, of output units for ``filter``,
of scalars for ``element``): the paper's "beta_p = n_p beta, beta_l = n_l beta, beta_g = beta",
which puts every level's step on the scale of the global HD step. ``dL/dgamma`` is unit-free
(``h`` in multiplier units times the multiplier), so ``delta`` needs no conversion. A gamma
update that would give a non-finite or zero sum is skipped.

CAM-HD with ``form="multiplicative"``: the derivative of the parameters with respect to
``alpha_{j,b}`` is ``-gamma_j s`` on the block (``dL/dalpha_{j,b} = gamma_j h_{j,b}``), so the
normalised hypergradient of a level's rate is the cosine of ``g`` and ``gamma_j s`` over the
block: ``cos(g, s)_b`` when ``gamma_j > 0`` (the positive weight cancels) and 0 when
``gamma_j = 0`` (the rate has no effect, its exact hypergradient is 0: it does not move)::

    alpha_{j,b} <- alpha_{j,b} * clamp(1 + hypergrad_lr * cos_{j,b}, 1/2, 2)     (gamma_j > 0)

with the same guards as HD. No ``K_j``: a cosine lies in ``[-1, 1]`` at every level, so the
levels' rates already move on one (relative) scale. At ``element`` level the cosine of one
scalar pair is ``sign(g_p s_p)`` (kept where either is 0). The gamma update is the same in
both forms (it is unit-free already) and uses the rates before their update, as above.

The optimizer's ``blocks`` must be the finest level: ``rates`` returns the applied
``kappa`` per finest block (the levels' values broadcast and combined there).

State keys (the public contract): per block ``"hypergradient.rate"`` (learned alpha),
``"hypergradient.alpha"`` (applied kappa), ``"hypergradient.hypergrad"`` (last
``dL/dalpha``); CAM-HD per level block ``"cam-hd.alpha.<level>"`` and
``"cam-hd.hypergrad.<level>"`` (``dL/dalpha_j = gamma_j h_j``), per finest block
``"cam-hd.alpha"`` (applied); per parameter ``"<rule>.prev"`` (``s``, in float32 at least);
in the group's first parameter ``"<rule>.step"`` (int) and, for CAM-HD, ``"cam-hd.gamma"``
and ``"cam-hd.gamma_grad"``.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..blocks import GRANULARITIES, Partition, acc_dtype, inner_each
from ..hyper import Hyper, choice, real
from .base import Rule, StepContext

__all__ = [
    "CAMHD",
    "FORMS",
    "MULT_FACTOR_MAX",
    "MULT_FACTOR_MIN",
    "Hypergradient",
    "default_gammas",
]

FORMS = ("additive", "multiplicative")
"""The forms of the hypergradient step (``form``): ``"additive"`` (the paper's, absolute rate
units) and ``"multiplicative"`` (scale-free, on the cosine; see the module docstring)."""

MULT_FACTOR_MIN, MULT_FACTOR_MAX = 0.5, 2.0
"""The multiplicative form's guard: the factor of one step is clamped to this range."""

# finest (0) to coarsest: a level may only be followed by a strictly coarser one;
# "filter" and "tensor" do not nest in each other, so they share a rank.
_RANK = {"element": 0, "filter": 1, "tensor": 1, "layer": 2, "global": 3}


def default_gammas(n_levels: int) -> tuple[float, ...]:
    """The paper's initial combination weights: (0.2, 0.8) for two levels (LeNet-5),
    (0.3, 0.3, 0.4) for three (FFNN), uniform otherwise."""
    if n_levels == 2:
        return (0.2, 0.8)
    if n_levels == 3:
        return (0.3, 0.3, 0.4)
    return tuple(1.0 / n_levels for _ in range(n_levels))


def _levels(name: str, value: Any, owner: str) -> tuple[str, ...]:
    expected = (
        "a non-empty tuple of distinct granularities from "
        f"{list(GRANULARITIES)}, finest first (e.g. ('layer', 'global'))"
    )
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")
    if not all(isinstance(v, str) and v in _RANK for v in value):
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")
    ranks = [_RANK[v] for v in value]
    if any(a >= b for a, b in pairwise(ranks)):
        raise ValueError(
            f"Invalid {name}: {tuple(value)!r} (expected levels ordered finest to coarsest, "
            "each nested in the next: element < filter|tensor < layer < global) "
            f"[{owner}]"
        )
    return tuple(value)


def _gammas(name: str, value: Any, owner: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    expected = "None or a tuple of reals >= 0 that sum to 1"
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")
        out.append(float(v))
    if abs(sum(out) - 1.0) > 1e-6:
        raise ValueError(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")
    return tuple(out)


_COMMON: dict[str, Hyper] = {
    "hypergrad_lr": Hyper(
        1e-8,
        real(0.0),
        "beta: additive form in the paper's absolute units (converted: beta / lr^2); "
        "multiplicative form unit-free (largest relative rate change per step)",
    ),
    "form": Hyper(
        "additive", choice(FORMS), "hypergradient step: additive (paper) or multiplicative"
    ),
    "decay_rate": Hyper(0.0, real(0.0), "r of tau(t) = exp(-r t); 0: no decay"),
    "alpha_inf": Hyper(1.0, real(0.0), "multiplier the applied rate decays to (decay_rate > 0)"),
}


class _HDBase(Rule):
    """What HD and CAM-HD share: the objective gradient, the displacement buffer, the clock."""

    default_lr = None
    clock = True
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        "hypergrad_lr": (0.0, 1e-8, 1e-3, 1.0),
        "decay_rate": (0.0, 0.1),
        "alpha_inf": (0.0, 0.5, 1.0, 2.0),
    }
    # the rate moves by beta / lr^2 <g, s>, unbounded as in the paper: with beta / lr^2 up to
    # 1e6, gradients of 1e10 overflow float32 parameters within three steps, and on an
    # objective with no optimum the iterates reach +-inf in float range (docs/guarantees.md)
    fuzz_grad_exponent = 6
    unbounded_rate = True

    packed_reductions = True  # FSDP2: one packed all-reduce per step (rules.base.Rule.collectives)

    def _tick(self, ctx: StepContext) -> tuple[int, float]:
        """The group clock ``t`` (kept by the optimizer) and ``tau(t)``."""
        t = ctx.step
        r = ctx.group["decay_rate"]
        return t, (math.exp(-r * t) if r > 0 else 1.0)

    def _prevs(self, ctx: StepContext) -> list[Tensor | None]:
        return [
            None if g is None else ctx.state(i).get(self.key("prev"))
            for i, g in enumerate(ctx.grads)
        ]

    def _store_prevs(self, ctx: StepContext, tau: float) -> None:
        """``s_t = lr * tau * (d_t + decoupled_wd * theta_t)``: this step's displacement per
        unit multiplier (a parameter without a gradient does not move: its ``s`` is 0)."""
        scale = ctx.group["lr"] * tau
        wd = ctx.decoupled_wd
        key = self.key("prev")
        if ctx.foreach and self._store_prevs_fast(ctx, scale, wd):
            return
        for i, (p, d) in enumerate(zip(ctx.params, ctx.directions)):
            st = ctx.state(i)
            if d is None:
                if key in st:
                    st[key].zero_()
                continue
            if key not in st:
                st[key] = torch.zeros_like(p, dtype=acc_dtype(p.dtype))
            prev = st[key]
            prev.copy_(d)
            if wd != 0:
                prev.add_(p, alpha=wd)
            prev.mul_(scale)

    def _store_prevs_fast(self, ctx: StepContext, scale: float, wd: float) -> bool:
        """``_store_prevs`` with the same values in fewer passes: on the CPU one
        ``torch.mul(d, scale, out=prev)`` per tensor (one read and one write instead of a copy
        and an in-place product), elsewhere multi-tensor kernels. False: not applicable
        (mixed dtypes), nothing was written."""
        key = self.key("prev")
        idx = ctx.active
        ds = [ctx.directions[i] for i in idx]
        ps = [ctx.params[i].detach() for i in idx]
        if any(d is None or d.dtype != acc_dtype(p.dtype) for d, p in zip(ds, ps)):
            return False
        for i, p in enumerate(ctx.params):
            st = ctx.state(i)
            if ctx.grads[i] is None:
                if key in st:
                    st[key].zero_()
            elif key not in st:
                st[key] = torch.zeros_like(p, dtype=acc_dtype(p.dtype))
        prevs = [ctx.state(i)[key] for i in idx]
        if ps and ps[0].device.type == "cpu":
            for prev, d, p in zip(prevs, ds, ps):
                if wd != 0:
                    torch.add(d, p, alpha=wd, out=prev)  # type: ignore[arg-type]
                    prev.mul_(scale)
                else:
                    torch.mul(d, scale, out=prev)  # type: ignore[arg-type]
        else:
            torch._foreach_copy_(prevs, ds)  # type: ignore[arg-type]
            if wd != 0:
                torch._foreach_add_(prevs, ps, alpha=wd)
            torch._foreach_mul_(prevs, scale)
        return True

    @staticmethod
    def _multiplier_rate(group: dict[str, Any]) -> float:
        """``hypergrad_lr`` converted from the paper's absolute units to the multiplier's."""
        lr = group["lr"]
        return group["hypergrad_lr"] / lr**2 if lr > 0 else 0.0

    @staticmethod
    def _descend(rate: Tensor, step: Tensor) -> None:
        """``rate <- max(0, rate - step)`` where ``rate - step`` is finite; else unchanged
        (the check comes before the clamp, which would turn ``-inf`` into an accepted 0)."""
        rate.copy_(_descended(rate, step))

    @staticmethod
    def _multiplicative(group: dict[str, Any]) -> bool:
        return group["form"] == "multiplicative"

    @staticmethod
    def _factor_rate(group: dict[str, Any]) -> float:
        """The multiplicative form's ``hypergrad_lr`` (unit-free, no conversion); 0 for a group
        with ``lr == 0``, which does not adapt (as in the additive form)."""
        return group["hypergrad_lr"] if group["lr"] > 0 else 0.0


def _descended(rate: Tensor, step: Tensor) -> Tensor:
    """The additive step: ``max(0, rate - step)`` where ``rate - step`` is finite, else
    ``rate``."""
    new = rate - step
    return torch.where(torch.isfinite(new), new.clamp_min(0), rate)


def _cosine(gs: Tensor, gg: Tensor, ss: Tensor) -> Tensor:
    """``<g, s> / (||g|| ||s||)`` clamped to ``[-1, 1]`` (NaN, i.e. "keep", where a norm is 0
    or a value is not finite). The norms are multiplied after the square roots, so the product
    of two large squared norms cannot overflow."""
    return (gs / (gg.sqrt() * ss.sqrt())).clamp(-1.0, 1.0)


def _scaled(rate: Tensor, cos: Tensor, eta: float) -> Tensor:
    """The multiplicative step: ``rate * clamp(1 + eta * cos, MULT_FACTOR_MIN, MULT_FACTOR_MAX)``
    where that is finite, else ``rate`` (a NaN cosine keeps the rate)."""
    new = rate * (1 + eta * cos).clamp(MULT_FACTOR_MIN, MULT_FACTOR_MAX)
    return torch.where(torch.isfinite(new), new, rate)


class Hypergradient(_HDBase):
    """HD: one hypergradient-learned multiplier per block (see the module docstring)."""

    name = "hypergradient"
    hyper: ClassVar[dict[str, Hyper]] = dict(_COMMON)

    def rates(self, ctx: StepContext) -> list[Tensor]:
        group, part = ctx.group, ctx.partition
        _, tau = self._tick(ctx)
        mult = self._multiplicative(group)
        beta = self._factor_rate(group) if mult else self._multiplier_rate(group)
        if ctx.foreach:
            grads, prevs = ctx.objective, self._prevs(ctx)
            vec = part.scalar_inner(grads, prevs)
            norms = None
            if vec is not None and mult and beta != 0:
                # None where vec is not (FSDP2's first step: no s yet, so no sharded pair in
                # <g, s>, but g is sharded): the reference path, which packs all three
                gg, ss = part.scalar_inner(grads, grads), part.scalar_inner(prevs, prevs)
                vec, norms = (None, None) if gg is None or ss is None else (vec, (gg, ss))
            if vec is not None:
                return self._rates_vector(ctx, vec, tau, beta, norms)
        grads, prevs = ctx.objective, self._prevs(ctx)
        if mult and beta != 0:  # one packed all-reduce under FSDP2, as the additive form's
            inner, sq_g, sq_s = part.inner_many([(grads, prevs), (grads, grads), (prevs, prevs)])
        else:
            inner = part.inner(grads, prevs)
        out = []
        for b, (s, gs) in enumerate(zip(part.sets, inner)):
            rate = self.ensure(ctx, s, "rate", 1.0)
            hyper = self.ensure(ctx, s, "hypergrad", 0.0)
            hyper.copy_(-gs)  # dL/dalpha of the previous step's multiplier
            if beta != 0:
                if mult:
                    rate.copy_(_scaled(rate, _cosine(gs, sq_g[b], sq_s[b]), beta))
                else:
                    self._descend(rate, beta * hyper)
            applied = self.ensure(ctx, s, "alpha", 1.0)
            applied.copy_(tau * rate + (1 - tau) * group["alpha_inf"])
            out.append(applied)
        self._store_prevs(ctx, tau)
        return out

    def _rates_vector(
        self,
        ctx: StepContext,
        gs: Tensor,
        tau: float,
        beta: float,
        norms: tuple[Tensor, Tensor] | None = None,
    ) -> list[Tensor]:
        """The per-block arithmetic of ``rates`` once on stacked vectors (scalar blocks);
        ``norms``: the squared norms of ``g`` and ``s`` per block (multiplicative form)."""
        sets = ctx.partition.sets
        rate_l = [self.ensure(ctx, s, "rate", 1.0) for s in sets]
        hyper_l = [self.ensure(ctx, s, "hypergrad", 0.0) for s in sets]
        applied_l = [self.ensure(ctx, s, "alpha", 1.0) for s in sets]
        hyper = -gs
        torch._foreach_copy_(hyper_l, list(hyper.unbind()))
        rate = torch.stack(rate_l)
        if beta != 0:
            if norms is not None:
                rate = _scaled(rate, _cosine(gs, *norms), beta)
            else:
                rate = _descended(rate, beta * hyper)
            torch._foreach_copy_(rate_l, list(rate.unbind()))
        applied = tau * rate + (1 - tau) * ctx.group["alpha_inf"]
        torch._foreach_copy_(applied_l, list(applied.unbind()))
        self._store_prevs(ctx, tau)
        return applied_l


class CAMHD(_HDBase):
    """CAM-HD: rates at several levels, combined with learned weights (module docstring)."""

    name = "cam-hd"
    hyper: ClassVar[dict[str, Hyper]] = {
        **_COMMON,
        "levels": Hyper(("layer", "global"), _levels, "rate levels, finest first"),
        "gammas": Hyper(None, _gammas, "initial combination weights (None: the paper's)"),
        "delta": Hyper(0.03, real(0.0), "learning rate of the combination weights"),
    }
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        **_HDBase.fuzz_examples,
        ("levels", "blocks"): (
            (("layer", "global"), "layer"),
            (("tensor", "global"), "tensor"),
            (("element", "layer", "global"), "element"),
        ),
        "delta": (0.0, 0.5, 1.0),
    }

    def check(self, group: dict[str, Any], owner: str) -> None:
        levels = group["levels"]
        if group["blocks"] != levels[0]:
            raise ValueError(
                f"Invalid blocks: {group['blocks']!r} (expected the finest level "
                f"levels[0] = {levels[0]!r}) [{owner}]"
            )
        gammas = group["gammas"]
        if gammas is not None and len(gammas) != len(levels):
            raise ValueError(
                f"Invalid gammas: {gammas!r} (expected one weight per level, "
                f"{len(levels)} for levels {levels!r}) [{owner}]"
            )

    def _gamma(self, ctx: StepContext) -> Tensor:
        st0 = ctx.state(0)
        key = self.key("gamma")
        if key not in st0:
            levels = ctx.group["levels"]
            init = ctx.group["gammas"] or default_gammas(len(levels))
            dtype = acc_dtype(*(p.dtype for p in ctx.params))
            st0[key] = torch.tensor(init, dtype=dtype, device=ctx.params[0].device)
        return st0[key]

    def _level_partitions(self, ctx: StepContext) -> list[tuple[Partition, int]]:
        """Per level: the partition of the active parameters and ``K_j`` (all rate values)."""
        active = [g is not None for g in ctx.grads]
        out = []
        for level in ctx.group["levels"]:
            full = ctx.partition_at(level)
            count = sum(math.prod(s.shape) for s in full.sets)
            out.append((full if all(active) else full.restrict(active), count))
        return out

    def rates(self, ctx: StepContext) -> list[Tensor]:
        group = ctx.group
        levels = group["levels"]
        _, tau = self._tick(ctx)
        mult = self._multiplicative(group)
        beta = self._factor_rate(group) if mult else self._multiplier_rate(group)
        gamma = self._gamma(ctx)
        if ctx.foreach:
            fast = self._rates_foreach(ctx, tau, beta, gamma)
            if fast is not None:
                return fast
        grads, prevs = ctx.objective, self._prevs(ctx)
        gamma_grad = torch.zeros_like(gamma)
        finest: list[Tensor] = []  # the finest level's rates, one per block of ctx.partition
        per_param: list[list[Tensor | None]] = []  # per level: new rate broadcast per param
        level_parts = self._level_partitions(ctx)
        # sum_{p in b} g_p s_p = -h_{j,b} for every level (and, multiplicative, the squared
        # norms of g and s per block): one packed all-reduce under FSDP2
        pairs = [(grads, prevs)]
        if mult and beta != 0:
            pairs += [(grads, grads), (prevs, prevs)]
        flat = inner_each([(part, xs, ys) for part, _ in level_parts for xs, ys in pairs])
        n = len(pairs)
        hs = flat[::n]
        norms = list(zip(flat[1::n], flat[2::n])) if n == 3 else []
        for j, (level, (part, count), h) in enumerate(zip(levels, level_parts, hs)):
            new_rates = []
            live = gamma[j] > 0  # multiplicative: a level without weight does not move
            for k, (s, gs) in enumerate(zip(part.sets, h)):
                rate = self.ensure(ctx, s, f"alpha.{level}", 1.0)
                hyper = self.ensure(ctx, s, f"hypergrad.{level}", 0.0)
                hyper.copy_(-gamma[j].to(gs.dtype) * gs)  # dL/dalpha_{j,b}
                contrib = (rate * -gs).sum().to(gamma.dtype)  # sum_b alpha_old h  (dL/dgamma_j)
                gamma_grad[j] += torch.where(torch.isfinite(contrib), contrib, 0.0)
                if beta != 0 and mult:
                    cos = _cosine(gs, norms[j][0][k], norms[j][1][k])
                    rate.copy_(torch.where(live, _scaled(rate, cos, beta), rate))
                elif beta != 0:
                    self._descend(rate, (beta * count) * hyper)
                new_rates.append(rate)
            per_param.append(part.broadcast(new_rates))
            if j == 0:
                finest = new_rates
        self._update_gamma(ctx, gamma, gamma_grad)  # before combining: exact, no lag
        out = []
        # ctx.partition is the finest level's partition (check() enforces blocks == levels[0])
        for k, s in enumerate(ctx.partition.sets):
            i = s.members[0]  # coarser levels' values broadcast against the finest block
            combined = gamma[0].to(s.dtype) * finest[k]
            for j in range(1, len(levels)):
                combined = combined + gamma[j].to(s.dtype) * per_param[j][i]
            applied = self.ensure(ctx, s, "alpha", 1.0)
            applied.copy_(tau * combined + (1 - tau) * group["alpha_inf"])
            out.append(applied)
        self._store_prevs(ctx, tau)
        return out

    def _rates_foreach(
        self, ctx: StepContext, tau: float, beta: float, gamma: Tensor
    ) -> list[Tensor] | None:
        """``rates`` with one pass over the gradients and displacements for all levels:
        the per-tensor ``<g_p, s_p>`` once (``Partition.scalar_inner`` at tensor level),
        summed into every level's blocks (``index_add_``, the reference's order), then each
        level's arithmetic on stacked vectors. ``None``: not applicable (a level with
        vector-valued blocks: filter, element), nothing was written."""
        group = ctx.group
        levels = group["levels"]
        parts = self._level_partitions(ctx)
        if any(s.shape for part, _ in parts for s in part.sets):
            return None
        dtype = parts[0][0].sets[0].dtype
        if any(s.dtype != dtype for part, _ in parts for s in part.sets):
            return None
        grads, prevs = ctx.objective, self._prevs(ctx)
        tensors = ctx.partition_at("tensor")
        active = [g is not None for g in ctx.grads]
        if not all(active):
            tensors = tensors.restrict(active)
        per_tensor = tensors.scalar_inner(grads, prevs)  # one entry per active tensor, in order
        if per_tensor is None or per_tensor.dtype != dtype:
            return None
        mult = self._multiplicative(group) and beta != 0
        if mult:  # the squared norms of g and s per tensor (same blocks, dtype, device)
            sq_g_t, sq_s_t = tensors.scalar_inner(grads, grads), tensors.scalar_inner(prevs, prevs)
            if sq_g_t is None or sq_s_t is None:  # e.g. FSDP2's first step (see Hypergradient)
                return None
        idx = [s.members[0] for s in tensors.sets]
        device = per_tensor.device
        cache = ctx.workspace.cache.setdefault(self.key("index"), {})  # per optimizer
        gamma_grad = torch.zeros_like(gamma)
        level_rates: list[Tensor] = []
        for j, (level, (part, count)) in enumerate(zip(levels, parts)):
            seg = tuple(part.set_of[i] for i in idx)
            key = (seg, device)
            index = cache.get(key)
            if index is None:
                index = cache[key] = torch.tensor(seg, device=device)
            gs = torch.zeros(len(part.sets), dtype=dtype, device=device)
            gs.index_add_(0, index, per_tensor)  # sum_{p in b} g_p s_p  =  -h_{j,b}
            rate_l = [self.ensure(ctx, s, f"alpha.{level}", 1.0) for s in part.sets]
            hyper_l = [self.ensure(ctx, s, f"hypergrad.{level}", 0.0) for s in part.sets]
            hyper = -gamma[j].to(dtype) * gs
            torch._foreach_copy_(hyper_l, list(hyper.unbind()))
            rate = torch.stack(rate_l)
            contrib = (rate * -gs).to(gamma.dtype)
            gamma_grad[j] += torch.where(torch.isfinite(contrib), contrib, 0.0).sum()
            if mult:
                gg = torch.zeros_like(gs).index_add_(0, index, sq_g_t)
                ss = torch.zeros_like(gs).index_add_(0, index, sq_s_t)
                rate = torch.where(gamma[j] > 0, _scaled(rate, _cosine(gs, gg, ss), beta), rate)
                torch._foreach_copy_(rate_l, list(rate.unbind()))
            elif beta != 0:
                rate = _descended(rate, (beta * count) * hyper)
                torch._foreach_copy_(rate_l, list(rate.unbind()))
            if j == 0:
                level_rates.append(rate)
            else:  # broadcast to the finest blocks: the level block of each one's first member
                fine = tuple(part.set_of[s.members[0]] for s in ctx.partition.sets)
                key = (fine, device)
                gather = cache.get(key)
                if gather is None:
                    gather = cache[key] = torch.tensor(fine, device=device)
                level_rates.append(rate[gather])
        self._update_gamma(ctx, gamma, gamma_grad)  # before combining: exact, no lag
        combined = gamma[0].to(dtype) * level_rates[0]
        for j in range(1, len(levels)):
            combined = combined + gamma[j].to(dtype) * level_rates[j]
        applied_l = [self.ensure(ctx, s, "alpha", 1.0) for s in ctx.partition.sets]
        applied = tau * combined + (1 - tau) * group["alpha_inf"]
        torch._foreach_copy_(applied_l, list(applied.unbind()))
        self._store_prevs(ctx, tau)
        return applied_l

    def _update_gamma(self, ctx: StepContext, gamma: Tensor, grad: Tensor) -> None:
        ctx.state(0)[self.key("gamma_grad")] = grad
        new = (gamma - ctx.group["delta"] * grad).clamp_min(0)
        total = new.sum()
        ok = torch.isfinite(total) & (total > 0)
        gamma.copy_(torch.where(ok, new / torch.where(ok, total, 1.0), gamma))
