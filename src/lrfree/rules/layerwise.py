"""Layer-wise Hessian step sizes (LW; Bahamou & Goldfarb, Alg. 1-3).

For each block ``l`` (by default the weight and bias of one module), every ``update_every``
(``T``) steps::

    rho_l    = d_l . g_l                    (g: the loss gradient, d: the direction + decay)
    delta_l  = sqrt(d_l^T H_ll d_l)         (H_ll: the diagonal block of the batch Hessian,
                                             or of the Gauss-Newton matrix)
    t_raw_l  = rho_l / (L (rho_l + delta_l) delta_l)
    t_l     <- beta_t t_l + (1 - beta_t) t_raw_l

and the block steps ``p <- p - lr * t_l * d_l`` (the paper's EMA: it starts at 0, so the rate
ramps up over the first ~1 / (1 - beta_t) estimates). ``bias_correction=True`` uses
``t_l / (1 - beta_t^n_l)`` instead (``n_l`` accepted estimates; before the first one the rate is
``warmup_lr``): full strength at once, measured to be less stable (docs/layerwise.md). During
the first ``warmup_steps`` steps the rate is ``warmup_lr`` while the estimates already run.
``L`` is the number of blocks of all layer-wise groups of the optimizer.

Decoupled weight decay (AdamW) is part of the step, so ``rho`` and ``delta`` use
``d + weight_decay * p`` with the loss's ``g`` and ``H`` (Alg. 3). Coupled decay (SGD, Adam,
RMSprop: ``g + weight_decay * p`` enters ``d``) is an L2 term of the objective, so ``rho``
uses ``g + weight_decay * p`` and ``delta^2`` adds ``weight_decay * ||d||^2``.

Safeguards (no host sync; each rejected estimate increments ``"layerwise.rejected"``): an
estimate with ``rho <= 0`` (not a descent direction), ``delta^2 <= 0`` (negative curvature
along ``d_l``, Hessian mode), any non-finite quantity, or a step ``t_raw d_l`` whose squared
norm overflows (a curvature at the rounding level) is discarded: the EMA and the rate keep
their previous values. The applied rate is always finite and ``>= 0``.

``raw_cap=True`` (a safeguard, off in the paper): on every accepted estimate the applied rate
is ``min(EMA rate, t_raw_l)``, the latest estimate at the current point. Lemma 1's model
decrease needs ``t < 1 / delta`` at the current point; the EMA may still carry the estimates
from the initial point, where a layer's curvature along ``d`` is near zero and ``t_raw`` is
30-400x the later values (docs/layerwise.md, "Safeguards").

How the curvature arrives (decided per curvature step). The one entry is
``opt.backward(loss)`` (``curvature="ggn"``: ``opt.backward(loss, logits, loss_fn=...)``) in
place of ``loss.backward()``, then ``opt.step()``: it keeps what the step needs, only on
curvature steps. It is one of these routes, whose older forms stay as aliases:

* graph mode: the gradients carry a graph (``loss.backward(create_graph=opt.curvature_due())``)
  -> exact ``d^T H_ll d`` by one double backward per block (``lrfree.curvature.hessian``);
* ``curvature="ggn"``: ``opt.step(outputs=logits, loss_fn=lambda z: F.cross_entropy(z, y))``
  with the outputs' graph alive (``retain_graph``) -> exact Gauss-Newton blocks;
* closure mode: ``opt.step(closure)`` without a graph -> finite differences of gradients
  along each block (``fd_scheme="central"``: ``2 L`` extra closure calls per curvature step,
  ``"forward"``: ``L + 1``; biased on ReLU hidden layers, see docs/layerwise.md; RNG state is
  replayed so every call sees the same dropout mask, and restored afterwards; the buffers of
  every module the extra calls run (BatchNorm running statistics) are restored afterwards,
  found by a forward pre-hook, so they end as one forward pass leaves them, with or without
  ``model=``; first-order backward only, so fused attention kernels work as they are);
* none of these -> a ``RuntimeError`` naming the three ways, raised by ``begin`` before any
  parameter or state changes (a curvature rule that never gets curvature never trains: the
  EMA starts at 0). Exception: when every gradient of the group is exactly zero (e.g. the
  state initialisation of ``torch.distributed.checkpoint``) nothing could be estimated
  anyway; the estimate is skipped silently and counted in ``"layerwise.rejected"``.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..curvature import (
    fd_hessian_block_forms,
    ggn_block_forms,
    hessian_block_forms,
    preserve_forward_buffers,
    second_order_errors,
)
from ..distributed import is_sharded, local
from ..hyper import Hyper, boolean, choice, integer, real
from .base import Rule, StepContext

__all__ = ["Layerwise"]

_BLOCKS = ("global", "layer", "tensor")
_FIELDS = ("rho", "delta2", "raw", "dsq")


class Layerwise(Rule):
    """The LW rule over any direction (Algorithm 1); see the module docstring."""

    name = "layerwise"
    default_lr = 1.0
    step_inputs = ("outputs", "loss_fn", "model")
    clock = True
    hyper: ClassVar[dict[str, Hyper]] = {
        "beta_t": Hyper(0.99, real(0.0, 1.0, hi_open=True), "EMA factor of the rates"),
        "update_every": Hyper(20, integer(1), "T: estimate the rates every T steps"),
        "warmup_steps": Hyper(0, integer(0), "steps at warmup_lr (estimates already run)"),
        "warmup_lr": Hyper(1e-3, real(0.0), "rate during warm-up and before any estimate"),
        "curvature": Hyper("hessian", choice(("hessian", "ggn")), "Hessian or Gauss-Newton"),
        "bias_correction": Hyper(False, boolean(), "divide the EMA by 1 - beta_t^n"),
        "fd_scheme": Hyper("central", choice(("central", "forward")), "closure-mode differences"),
        "raw_cap": Hyper(False, boolean(), "applied rate <= the latest accepted raw estimate"),
    }
    supported_blocks = _BLOCKS
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        "beta_t": (0.0, 0.5, 0.99),
        "update_every": (1, 2, 3),
        "warmup_steps": (0, 1, 2),
        "bias_correction": (False, True),
        "curvature": ("hessian",),  # graph mode: the fuzz loop backpropagates create_graph
    }

    def collectives(
        self, group: dict[str, Any], step: int, *, sharded: bool
    ) -> frozenset[int] | None:
        """On estimate steps: the curvature numbers' replica mean (one packed all-reduce);
        FSDP2 adds one for the finite differences' sums. None otherwise."""
        return frozenset({(2 if sharded else 1) * int(self.curvature_due(group, step))})

    def sharded_error(self, group: dict[str, Any]) -> str | None:
        return "layerwise with sharded" if group["curvature"] == "ggn" else None

    # ----------------------------------------------------------------- checks
    def check(self, group: dict[str, Any], owner: str) -> None:
        if group["blocks"] not in _BLOCKS:
            raise ValueError(
                f"Invalid blocks: {group['blocks']!r} (expected one of {list(_BLOCKS)}) [{owner}]"
            )

    # ------------------------------------------------------------------ steps
    def feed(self, group: dict[str, Any]) -> str | None:
        return "outputs" if group["curvature"] == "ggn" else "graph"

    def curvature_due(self, group: dict[str, Any], step: int) -> bool:
        return step % group["update_every"] == 0

    def begin(self, ctx: StepContext) -> None:
        if ctx.curvature:  # before anything of this step changes (every group's begin first)
            self._check_fed(ctx)

    def _check_fed(self, ctx: StepContext) -> None:
        """Raise if this group estimates this step but gets no curvature.

        Every group's ``begin`` runs before any group moves, so the error comes before
        anything of the step changes. Not fed: ``curvature="ggn"`` without ``outputs=`` and
        ``loss_fn=``; ``"hessian"`` with gradients without a graph and no closure. Not raised
        when all the group's gradients are exactly zero (one host sync, only on this path):
        nothing could be estimated (``rho = 0``), and torch's distributed checkpoint
        initialises optimizer state by such a step."""
        grads = [p.grad for p in ctx.params if p.grad is not None]  # with their graph
        if ctx.group["curvature"] == "ggn":
            fed = ctx.inputs.get("outputs") is not None and ctx.inputs.get("loss_fn") is not None
        else:
            fed = ctx.closure is not None or any(g.requires_grad for g in grads)
        if fed or not any(bool(local(g).detach().any()) for g in grads):
            return
        raise RuntimeError(_not_fed_message(ctx.group["curvature"], ctx.group_index))

    def _num_blocks(self, ctx: StepContext) -> int:
        ws = ctx.workspace
        return sum(
            len(ws.partition(gi, None).sets)
            for gi, g in enumerate(ws.groups)
            if g["rule"] == self.name
        )

    def rates(self, ctx: StepContext) -> list[Tensor]:
        group, part = ctx.group, ctx.partition
        beta = group["beta_t"]
        if ctx.curvature:
            self._estimate(ctx)
        out = []
        warm = ctx.step <= group["warmup_steps"]
        for s in part.sets:
            alpha = self._alpha(ctx, s, beta)  # finite and >= 0 by construction (_estimate)
            st = ctx.block_state(s)
            if warm:  # what effective_lr() reports: the rate applied, not the EMA
                applied = st.get(self.key("applied"))
                if applied is None:
                    applied = st[self.key("applied")] = torch.empty_like(alpha)
                out.append(applied.fill_(group["warmup_lr"]))
            else:
                st.pop(self.key("applied"), None)
                out.append(alpha)
        return out

    def alpha(self, block_state: dict[str, Any]) -> Tensor | None:
        """The multiplier applied at the last step: ``warmup_lr`` during warm-up, else the
        (EMA) rate."""
        applied = block_state.get(self.key("applied"))
        return applied if applied is not None else block_state.get(self.key("alpha"))

    def _alpha(self, ctx: StepContext, s: Any, beta: float) -> Tensor:
        st = ctx.block_state(s)
        if self.key("alpha") not in st:
            fill = ctx.group["warmup_lr"] if ctx.group["bias_correction"] else 0.0
            st[self.key("alpha")] = torch.full(
                s.shape, fill, dtype=s.dtype, device=ctx.params[s.owner].device
            )
        return st[self.key("alpha")]

    # -------------------------------------------------------------- estimate
    def _estimate(self, ctx: StepContext) -> None:
        group, part = ctx.group, ctx.partition
        beta = group["beta_t"]
        sign = -1.0 if group.get("maximize", False) else 1.0
        wd, l2 = ctx.decoupled_wd, ctx.l2  # l2: the coupled decay, a term of the objective
        d_eff: list[Tensor | None] = []
        for p, d in zip(ctx.params, ctx.directions):
            if d is None:
                d_eff.append(None)
            else:
                d_eff.append(d.add(p.detach(), alpha=wd) if wd != 0 else d)
        pairs = [(d_eff, ctx.objective), (d_eff, d_eff)]
        sharded = any(is_sharded(p) for p in ctx.params)
        if sharded:  # FSDP2: the finite differences' ||W_b||^2 travel in the same all-reduce
            ws = [None if d is None else p.detach() for p, d in zip(ctx.params, d_eff)]
            pairs.append((ws, ws))
        sums = part.inner_many(pairs)
        rho, dsq = sums[0], sums[1]
        if sharded:
            ctx.scratch["sq_norms"] = (dsq, sums[2])
        q = self._curvature(ctx, d_eff)
        big_l = float(self._num_blocks(ctx))
        for k, s in enumerate(part.sets):
            st = ctx.block_state(s)
            if q is None:
                delta2 = torch.full_like(rho[k], float("nan"))
            else:
                delta2 = (sign * q[k]).to(s.dtype)
                if l2 != 0:
                    delta2 = delta2 + l2 * dsq[k]
            r = rho[k]
            delta = delta2.clamp_min(0).sqrt()
            raw = r / (big_l * (r + delta) * delta)
            ok = (
                torch.isfinite(r)
                & torch.isfinite(delta2)
                & torch.isfinite(raw)
                & (r > 0)
                & (delta2 > 0)
                & (raw > 0)
                # the step the estimate would take along d must be representable: a positive
                # curvature at the rounding level (a subnormal d^T H d) gives a finite raw
                # rate ~ 1 / delta whose step ||raw d|| overflows
                & torch.isfinite(raw * raw * dsq[k])
            )
            ema = self.ensure(ctx, s, "ema", 0.0)
            count = self.ensure(ctx, s, "count", 0.0)
            safe_raw = torch.where(ok, raw, torch.zeros_like(raw))
            ema.copy_(torch.where(ok, beta * ema + (1 - beta) * safe_raw, ema))
            count.add_(ok.to(count.dtype))
            self.reject(ctx, s, ok)
            for name, v in zip(_FIELDS, (r, delta2, raw, dsq[k])):
                st[self.key(name)] = v.detach().to(s.dtype).clone()
            alpha = self._alpha(ctx, s, beta)
            if group["bias_correction"]:
                corr = 1 - torch.pow(torch.full_like(count, beta), count)
                est = torch.where(
                    count > 0, ema / corr.clamp_min(torch.finfo(corr.dtype).tiny), alpha
                )
            else:
                est = ema
            if group["raw_cap"]:  # Lemma 1's domain t < 1 / delta at the current point
                est = torch.where(ok, torch.minimum(est, raw), est)
            # the applied rate is never non-finite or negative (e.g. an EMA overflow)
            alpha.copy_(torch.where(torch.isfinite(est) & (est >= 0), est, alpha))

    def _curvature(self, ctx: StepContext, d_eff: list[Tensor | None]) -> list[Tensor] | None:
        """Per block set of ``ctx.partition``, ``d_b^T H_bb d_b`` (or the GGN value), or None.

        Data-parallel replicas (DDP): each rank's value on its local batch, averaged over the
        replicas (``lrfree.distributed.replica_mean``, one packed all-reduce). Sharded
        parameters (FSDP2): closure mode only, completed across the shards."""
        if any(is_sharded(p) for p in ctx.params):
            return self._sharded_curvature(ctx, d_eff)
        q = self._local_curvature(ctx, d_eff)
        return None if q is None else ctx.workspace.replica_mean(q)

    def _sharded_curvature(
        self, ctx: StepContext, d_eff: list[Tensor | None]
    ) -> list[Tensor] | None:
        graph = any(p.grad is not None and p.grad.requires_grad for p in ctx.params)
        if ctx.closure is None and not graph and ctx.group["curvature"] != "ggn":
            return None  # not fed: all gradients are zero (begin checked), skipped
        if ctx.group["curvature"] == "ggn" or graph or ctx.closure is None:
            raise NotImplementedError(
                "layerwise with sharded (FSDP2 / DTensor) parameters: only closure mode "
                "(opt.step(closure), finite differences through the normal backward) is "
                "supported; curvature='ggn' and graph mode (backward(create_graph=True)) need "
                "torch.autograd.grad with respect to sharded parameters, which fails"
            )
        return self._closure_curvature(ctx, d_eff, [s.members for s in ctx.partition.sets])

    def _local_curvature(self, ctx: StepContext, d_eff: list[Tensor | None]) -> list[Tensor] | None:
        blocks = [s.members for s in ctx.partition.sets]
        params = ctx.params
        if ctx.group["curvature"] == "ggn":
            outputs, loss_fn = ctx.inputs.get("outputs"), ctx.inputs.get("loss_fn")
            if outputs is None or loss_fn is None:
                return None  # not fed: all gradients are zero (begin checked), skipped
            with second_order_errors(
                "layerwise (curvature='ggn', step(outputs=, loss_fn=))",
                "use the closure route: opt.step(closure) with curvature='hessian' "
                "(finite differences, first-order backward only)",
            ):
                return ggn_block_forms(outputs, params, d_eff, blocks, loss_fn)
        graph = [p.grad if p.grad is not None and p.grad.requires_grad else None for p in params]
        if any(graph[i] is not None for i in ctx.active):  # graph mode: exact
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(graph, params)]
            with second_order_errors(
                "layerwise (graph mode, loss.backward(create_graph=True))",
                "use the closure route: opt.step(closure) (finite differences, first-order "
                "backward only)",
            ):
                return hessian_block_forms(grads, params, d_eff, blocks)
        if ctx.closure is not None:
            return self._closure_curvature(ctx, d_eff, blocks)
        return None  # not fed: all gradients are zero (begin checked), skipped

    def _closure_curvature(
        self, ctx: StepContext, d_eff: list[Tensor | None], blocks: list[list[int]]
    ) -> list[Tensor]:
        params, closure = ctx.params, ctx.closure
        assert closure is not None
        every = [p for g in ctx.workspace.groups for p in g["params"]]
        saved_grad_objs = [p.grad for p in every]
        saved_grads = [None if g is None else g.detach().clone() for g in saved_grad_objs]
        dev = params[0].device
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
        model = ctx.inputs.get("model")
        modules = [model] if model is not None else []
        sharded = any(is_sharded(p) for p in params)
        # DDP: differences of *local* gradients (no gradient all-reduce per evaluation); the
        # per-block numbers are averaged afterwards (one small all-reduce, _curvature)
        replicated = ctx.workspace.replica_group() is not None
        no_sync = getattr(model, "no_sync", None) if replicated else None

        def grad_fn() -> list[Tensor | None]:
            torch.set_rng_state(cpu_rng)  # the same dropout mask in every evaluation
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, dev)
            with torch.enable_grad():
                closure()
            return [p.grad for p in params]

        central = ctx.group["fd_scheme"] == "central"
        try:
            # the buffers of every module the extra calls run end as the gradient's own call left
            # them (BatchNorm running statistics: one update per step), model= or not
            with preserve_forward_buffers(modules), contextlib.ExitStack() as stack:
                if sharded:
                    return fd_hessian_block_forms(
                        grad_fn,
                        params,
                        d_eff,
                        blocks,
                        central=central,
                        sq_norms=ctx.scratch.get("sq_norms"),
                    )
                if no_sync is not None and not sharded:
                    stack.enter_context(no_sync())
                return fd_hessian_block_forms(grad_fn, params, d_eff, blocks, central=central)
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, dev)
            for p, obj, val in zip(every, saved_grad_objs, saved_grads):
                if obj is not None and val is not None:
                    obj.copy_(val)
                p.grad = obj


def _not_fed_message(curvature: str, group_index: int) -> str:
    graph = "loss.backward(create_graph=opt.curvature_due()); opt.step() (graph mode)"
    closure = (
        "opt.step(closure), the closure running zero_grad, forward, loss.backward() and "
        "returning the loss (finite differences)"
    )
    ggn = (
        "opt.step(outputs=out, loss_fn=lambda z: loss(z, y)) after "
        "loss.backward(retain_graph=opt.curvature_due())"
    )
    if curvature == "ggn":
        what = "curvature='ggn' got no outputs= and loss_fn= in step()"
        ways = f"{ggn}; or, with curvature='hessian', {graph} or {closure}"
    else:
        what = "the gradients carry no graph and step() got no closure"
        ways = f"{graph}; {closure}; or, with curvature='ggn', {ggn}"
    return (
        f"layerwise (param group {group_index}): this is a curvature step "
        f"(opt.curvature_due() is True) but {what}: no curvature reached the optimizer, and "
        "without it the rate stays 0 and nothing trains. Feed it one of three ways: "
        f"{ways}. This step changed nothing."
    )
