"""ADLER: the learning rate that minimises a Gauss-Newton quadratic model (Balboni & Bacciu).

Every ``update_every`` steps, per block ``b`` (``global``: the paper's single rate)::

    eta_b = G_b . u_b / (v_b^T Q v_b + denom_eps),   v_b = J u_b  (outputs' JVP along u_b)
    s_b  <- beta s_b + log eta_b,   c_b <- beta c_b + 1,   alpha_b = exp(s_b / c_b)

and the block steps ``p <- p - lr * alpha_b * d``. ``G`` is the loss gradient, ``u`` the step
vector (the direction ``d``; with AdamW's decoupled decay ``d + weight_decay * p``), ``Q`` the
Hessian of the loss w.r.t. the network outputs (``lrfree.curvature.loss``, PSD for convex losses)
and ``J`` the Jacobian of the outputs w.r.t. the block's parameters. With ``d = G`` (plain SGD,
the paper's only setting) ``eta`` is the exact minimiser of the quadratic model along ``-G``;
over momentum / Adam directions it is the minimiser along ``-u`` (our extension).
Coupled weight decay (an L2 term of the objective) adds ``wd * p`` to ``G`` and ``wd |u|^2``
to the denominator.

``variant="gn"`` (the paper's comparator, footnotes 8 and 10): ``Q`` is replaced by ``g g^T``
with ``g = dL/d outputs``, and ``eta`` is averaged arithmetically
(``s <- beta s + eta``, ``alpha = s / c``). Since ``g^T J u = G^T u``, its denominator is
``(G . u)^2``: no Jacobian-vector product is needed (tested against the explicit form).

``trust`` (ours, opt-in; ``inf``: off, the paper): the applied rate is
``min(alpha, trust * eta_k)`` on steps with an accepted estimate; ``s`` and ``c`` are not
changed by it. ``trust = 2``: never a rate that this batch's own quadratic model predicts to
increase the batch loss.

Safeguards (no host sync): an estimate that is non-finite or ``<= 0`` (``G . u <= 0``, or a
negative ``v^T Q v`` from a non-convex custom loss) is rejected: ``s``, ``c`` and the rate
keep their values and ``"adler.rejected"`` counts it (``Rule.reject``; ``"adler.skipped"``
formerly, still loaded). Before the first accepted estimate the rate is 0 (the parameters
do not move). A near-zero denominator gives ``eta = G.u / denom_eps``, finite,
and enters the average as in the paper (footnote 10 is why the average is taken in log space).

What ``step`` needs for ``variant="ggn"`` (one of):

* ``opt.backward(loss, outputs)`` in place of ``loss.backward()``, then ``opt.step()`` (the
  one entry of every curvature rule, ``lrfree.Composed.backward``; ``backward(opt, loss,
  outputs)`` below and ``step(outputs=outputs)`` after it are aliases): on an estimate step
  the gradient pass keeps a graph linear in ``dL/dF`` and the step gets ``v`` from one
  tangent-only backward through it (the fastest route: no forward recomputed, no second plain
  backward);
* ``opt.step(outputs=logits)`` after ``loss.backward(retain_graph=True)``: ``v`` by the
  double-VJP trick through the graph of the user's own forward (same batch, same dropout mask,
  same BatchNorm batch statistics, no extra forward, any ``nn.Module`` with double backward);
* ``opt.step(model=model, inputs=x)``: ``v`` by forward-mode AD (``torch.func.jvp`` over
  ``torch.func.functional_call``) in an extra forward pass: BatchNorm uses the batch statistics
  as in training, on *copies* of the buffers (running statistics untouched); dropout draws a
  fresh mask; attention runs with the MATH SDPA backend (it has forward-mode AD on CPU).

The loss ``Q`` comes from, in this order:

* ``loss_fn=`` in ``step`` (a callable ``outputs -> scalar loss`` with the targets bound):
  autograd double backward on it, exact for any loss;
* ``loss="auto"``: autograd through the loss tensor the user computed, which only the
  ``backward(opt, loss, outputs)`` route sees (``d <dL/dF, v> / dF``, the loss head's own
  graph); the other routes then need ``loss_fn=`` (a ``ValueError`` says so);
* a named loss (``cross_entropy``, the default, ``nll``, ``mse``, ``bce_with_logits``) with
  ``reduction`` (``mean`` / ``sum``): closed forms (``lrfree.curvature.loss``). In the
  ``backward(opt, loss, outputs)`` route the declaration is *verified* on the group's first
  estimate step of this optimizer object (the closed-form ``Q p`` against autograd's on a
  fixed probe vector ``p``; one host sync, once) and a mismatch is a ``ValueError`` naming
  the named losses that do match, before any state changes; then the closed form is used.
  In the ``step(outputs=...)`` and ``step(model=, inputs=)`` routes no loss tensor exists and
  nothing can be verified: the declaration is trusted (a wrong one gives a wrong rate).
  ``targets=`` (optional) lets the closed forms honour cross-entropy's ``ignore_index=-100``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..curvature import LinearGraph as _LinearGraph  # what backward() keeps
from ..curvature import jvp_double_vjp, jvp_forward, second_order_errors
from ..curvature.loss import (
    IGNORE_INDEX,
    LOSSES,
    REDUCTIONS,
    _weights,
    hessian_vector_product,
    quadratic_form,
)
from ..distributed import is_sharded
from ..hyper import Hyper, choice, integer, real
from .base import Rule, StepContext

__all__ = ["Adler", "backward", "jvp_double_vjp", "jvp_forward"]

_BLOCKS = ("global", "layer", "tensor")
_LOSS_CHOICES = (*LOSSES, "auto")
_ALT = (
    "use opt.step(model=model, inputs=x) with a plain loss.backward() (forward-mode JVPs; "
    "it selects the MATH backend itself)"
)
_NO_GRAPH = (
    "ADLER step(outputs=...) needs the outputs' graph: call "
    "loss.backward(retain_graph=True) before opt.step(outputs=...), or "
    "opt.backward(loss, outputs) instead of loss.backward()"
)


def _estimate_due(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the next ``step`` estimates ``v^T Q v`` by a JVP in some param group."""
    for group in optimizer.param_groups:
        if group.get("rule") != "adler" or group.get("variant") != "ggn" or not group["params"]:
            continue
        n = int(optimizer.state.get(group["params"][0], {}).get("adler.step", 0))
        if n % group["update_every"] == 0:
            return True
    return False


def backward(optimizer: Any, loss: Tensor, outputs: Tensor) -> None:
    """An alias of ``optimizer.backward(loss, outputs)`` (``lrfree.Composed.backward``, the one
    entry for every curvature rule); then call ``optimizer.step()``.

    What it does for ADLER (``Adler.linear_backward``): it accumulates ``d loss / d p`` into
    ``p.grad`` like ``loss.backward()``. When the next step estimates the rate
    (``variant="ggn"``, an ``update_every`` step), the backward runs with
    ``create_graph=True`` from a leaf ``z`` that a hook on ``outputs`` substitutes for
    ``dL/dF``: the gradients are then ``G = J^T z`` *and* a graph linear in ``z``, and the
    step gets ``v = J G = d <J^T z, G> / dz`` from one more backward through that graph (a
    tangent-only pass: no forward is recomputed and no second plain backward is run, unlike
    ``loss.backward(retain_graph=True); step(outputs=...)``, which pays both). Otherwise a
    plain ``loss.backward()``. Loss terms that do not pass through ``outputs`` (a penalty on
    the weights) enter ``G`` but not ``v``. The estimate steps use ``torch.autograd.grad``,
    which bypasses ``DistributedDataParallel``'s gradient all-reduce hooks: under DDP use
    ``step(model=..., inputs=...)`` or ``step(outputs=...)`` after ``loss.backward()``.

    >>> import torch, lrfree
    >>> from lrfree.rules.adler import backward
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = lrfree.Composed(model.named_parameters(), direction="momentum", rule="adler")
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> out = model(x)
    >>> backward(opt, torch.nn.functional.cross_entropy(out, y), out)
    >>> opt.step(outputs=out)
    """
    if not isinstance(outputs, Tensor) or not outputs.requires_grad:
        raise ValueError("ADLER backward(loss, outputs): outputs must be a tensor with a graph")
    optimizer.backward(loss, outputs)


def _linear_backward(loss: Tensor, outputs: Tensor, params: list[Tensor]) -> _LinearGraph:
    """The estimate step's backward of ``backward``: ``G`` into ``p.grad`` and the graph."""
    if not isinstance(outputs, Tensor) or not outputs.requires_grad:
        raise ValueError("ADLER backward(loss, outputs): outputs must be a tensor with a graph")
    holder: dict[str, Tensor] = {}

    def swap(g: Tensor) -> Tensor:
        holder["dloss"] = g  # dL/dF with the loss head's graph (create_graph): Q by autograd
        holder["z"] = g.detach().requires_grad_(True)
        return holder["z"]

    handle = outputs.register_hook(swap)
    try:
        with torch.enable_grad(), second_order_errors("ADLER backward(loss, outputs)", _ALT):
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    finally:
        handle.remove()
    if "z" not in holder:
        raise ValueError("ADLER backward(loss, outputs): the loss does not depend on outputs")
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach()  # a fresh tensor; the graph does not save it (no copy)
            else:
                p.grad.add_(g.detach())
    return _LinearGraph(
        outputs, holder["z"], {id(p): g for p, g in zip(params, grads)}, holder["dloss"]
    )


# ------------------------------------------------------------------- the rule
class Adler(Rule):
    """The ADLER rule (and its GN comparator) over any direction; see the module docstring."""

    name = "adler"
    default_lr = 1.0
    step_inputs = ("outputs", "model", "inputs", "loss_fn", "targets")
    clock = True
    hyper: ClassVar[dict[str, Hyper]] = {
        "beta": Hyper(0.99, real(0.0, 1.0), "discount of the (log-space) mean of the rates"),
        "denom_eps": Hyper(1e-10, real(0.0), "eps added to v^T Q v (the paper's eps)"),
        "variant": Hyper("ggn", choice(("ggn", "gn")), "Q: loss Hessian, or g g^T (GN)"),
        "update_every": Hyper(1, integer(1), "estimate every k steps (1: the paper)"),
        "loss": Hyper(
            "cross_entropy",
            choice(_LOSS_CHOICES),
            "the user's loss (closed-form Q; 'auto': autograd through the computed loss)",
        ),
        "reduction": Hyper("mean", choice(REDUCTIONS), "the user's loss reduction"),
        "trust": Hyper(
            math.inf,
            real(0.0, lo_open=True, allow_inf=True),
            "cap the applied rate at trust * eta_k (inf: off, the paper)",
        ),
    }
    supported_blocks = _BLOCKS
    supports_maximize = False  # a convex loss of the outputs (check)
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        "variant": ("gn",),  # the GGN variant needs the outputs, which the fuzz loop has not
        "beta": (0.0, 0.5, 1.0),
        "update_every": (1, 2, 3),
    }

    def collectives(
        self, group: dict[str, Any], step: int, *, sharded: bool
    ) -> frozenset[int] | None:
        """On estimate steps one packed all-reduce: the GGN forms' replica mean under DDP,
        the GN sums under FSDP2 (GGN does not run there); none otherwise."""
        due = self.curvature_due(group, step)
        return frozenset({int(due and (sharded or group["variant"] == "ggn"))})

    def sharded_error(self, group: dict[str, Any]) -> str | None:
        return "ADLER variant='ggn' with sharded" if group["variant"] == "ggn" else None

    def check(self, group: dict[str, Any], owner: str) -> None:
        if group["blocks"] not in _BLOCKS:
            raise ValueError(
                f"Invalid blocks: {group['blocks']!r} (expected one of {list(_BLOCKS)}) [{owner}]"
            )
        if group.get("maximize", False):
            raise ValueError(
                f"Invalid maximize: True (expected False: ADLER minimises a convex loss of "
                f"the outputs) [{owner}]"
            )

    # ------------------------------------------------------------------ steps
    def feed(self, group: dict[str, Any]) -> str | None:
        return "linear" if group["variant"] == "ggn" else None

    def curvature_due(self, group: dict[str, Any], step: int) -> bool:
        """Whether the step after ``step`` estimates the rate (every ``update_every``)."""
        return step % group["update_every"] == 0

    def linear_backward(self, loss: Tensor, outputs: Tensor, params: list[Tensor]) -> Any:
        """The backward of ``opt.backward(loss, outputs)`` on an estimate step (``backward``
        above): ``G`` into ``p.grad``, and the graph linear in ``dL/dF`` for the step."""
        return _linear_backward(loss, outputs, params)

    def begin(self, ctx: StepContext) -> None:
        if ctx.curvature and ctx.group["variant"] == "ggn":  # before anything changes
            self._check_inputs(ctx)

    def _check_inputs(self, ctx: StepContext) -> None:
        """What an estimate step needs: the outputs (or model and inputs), and a ``Q`` that is
        the loss's: ``loss="auto"`` needs the loss (``backward``) or ``loss_fn``; a named loss
        is verified once against the computed loss where ``backward`` kept it."""
        group, inputs = ctx.group, ctx.inputs
        outputs = inputs.get("outputs")
        if outputs is None and (inputs.get("model") is None or inputs.get("inputs") is None):
            raise ValueError(_NO_OUTPUTS)
        if inputs.get("loss_fn") is not None:
            return
        graph = ctx.fed.get("graph")
        graph = (
            graph
            if isinstance(graph, _LinearGraph) and outputs is not None and graph.outputs is outputs
            else None
        )
        checked = ctx.workspace.cache.setdefault("adler.loss_checked", set())
        if group["loss"] == "auto":
            if graph is None:
                raise ValueError(
                    "ADLER loss='auto' takes Q from the loss you computed, which only the "
                    "opt.backward(loss, outputs); opt.step(outputs=outputs) route sees: use "
                    "that route, or pass step(..., loss_fn=lambda out: my_loss(out, y)), or "
                    "name the loss (loss='cross_entropy' / 'nll' / 'mse' / 'bce_with_logits')"
                )
            key = (ctx.group_index, "auto")
            if key not in checked:  # once: Q = 0 would make every estimate G.u / eps
                if _zero_hessian(graph):
                    raise ValueError(
                        "ADLER loss='auto': the loss you computed is linear in the outputs, so "
                        "its Hessian Q is 0 and the quadratic model has no minimiser (the NLL "
                        "of log-probabilities is linear in them): pass loss='nll', which "
                        "folds the final log-softmax into Q, or pass the logits as outputs"
                    )
                checked.add(key)
            return
        if graph is None:
            return  # no loss tensor: the declared loss is trusted (module docstring)
        key = (ctx.group_index, group["loss"], group["reduction"])
        if key not in checked:  # once per group and declaration (one host sync)
            _verify_declared_loss(group["loss"], group["reduction"], graph, inputs.get("targets"))
            checked.add(key)
        groups = [(gi, g) for gi, g in enumerate(ctx.workspace.groups) if g["rule"] == self.name]
        if all((gi, g["loss"], g["reduction"]) in checked for gi, g in groups):
            graph.dloss = graph.dloss.detach()  # closed forms from here on: free the loss head

    def rates(self, ctx: StepContext) -> list[Tensor]:
        if ctx.curvature:  # backward()'s graph is released by the optimizer after the step
            self._estimate(ctx)
        return [self.ensure(ctx, s, "alpha", 0.0) for s in ctx.partition.sets]

    def _estimate(self, ctx: StepContext) -> None:
        group, part = ctx.group, ctx.partition
        wd, l2 = ctx.decoupled_wd, ctx.l2  # l2: coupled decay, a term of the objective
        coupled = l2 != 0
        us: list[Tensor | None] = [
            None if d is None else (d.add(p.detach(), alpha=wd) if wd != 0 else d)
            for p, d in zip(ctx.params, ctx.directions)
        ]
        gs = ctx.objective  # check() refuses maximize: the loss gradient plus l2 * p
        gn = group["variant"] == "gn"
        pairs = [(gs, us)]  # one packed reduction for all of them (FSDP2)
        if coupled:
            pairs.append((us, us))
            if gn:
                pairs.append((list(ctx.grads), us))
        sums = part.inner_many(pairs)
        num = sums[0]
        if gn:
            g_loss = sums[2] if coupled else num
            den = [gu * gu for gu in g_loss]  # g^T J u = G^T u (loss part only)
        else:  # per rank on the local batch; DDP replicas average them (one all-reduce)
            den = ctx.workspace.replica_mean(self._ggn_forms(ctx, us))
        if coupled:
            den = [q + l2 * n2 for q, n2 in zip(den, sums[1])]
        beta, eps = group["beta"], group["denom_eps"]
        for k, s in enumerate(part.sets):
            eta = num[k] / (den[k].to(s.dtype) + eps)
            ok = torch.isfinite(eta) & (eta > 0)
            val = torch.log(eta) if group["variant"] == "ggn" else eta
            val = torch.where(ok, val, torch.zeros_like(val))
            s_ = self.ensure(ctx, s, "s", 0.0)
            c_ = self.ensure(ctx, s, "c", 0.0)
            s_.copy_(torch.where(ok, beta * s_ + val, s_))
            c_.copy_(torch.where(ok, beta * c_ + 1.0, c_))
            mean = s_ / c_.clamp_min(torch.finfo(c_.dtype).tiny)
            est = torch.exp(mean) if group["variant"] == "ggn" else mean
            alpha = self.ensure(ctx, s, "alpha", 0.0)
            if group["trust"] != math.inf:  # ours: never beyond trust x this batch's minimiser
                est = torch.where(ok, torch.minimum(est, group["trust"] * eta), alpha)
            alpha.copy_(torch.where((c_ > 0) & torch.isfinite(est), est, alpha))
            self.ensure(ctx, s, "eta", math.nan).copy_(eta)
            self.reject(ctx, s, ok)

    def _ggn_forms(self, ctx: StepContext, us: list[Tensor | None]) -> list[Tensor]:
        """``(J u_b)^T Q (J u_b)`` per block set of ``ctx.partition``."""
        group, inputs = ctx.group, ctx.inputs
        if any(is_sharded(p) for p in ctx.params):
            raise NotImplementedError(
                "ADLER variant='ggn' with sharded (FSDP2 / DTensor) parameters: the "
                "Jacobian-vector products need autograd with respect to sharded parameters, "
                "which fails; use variant='gn' (no JVP, supported) or DDP"
            )
        blocks = [
            [(i, us[i].detach()) for i in s.members if us[i] is not None]
            for s in ctx.partition.sets
        ]  # type: ignore[union-attr]
        loss_fn = inputs.get("loss_fn")
        loss = loss_fn if loss_fn is not None else group["loss"]
        graph = None
        if inputs.get("outputs") is not None:
            outputs = inputs["outputs"]
            graph = ctx.fed.get("graph")
            if isinstance(graph, _LinearGraph) and graph.outputs is outputs:  # opt.backward
                with second_order_errors("ADLER backward(loss, outputs); step(outputs=)", _ALT):
                    jvps = graph.tangents(ctx.params, blocks)
            else:
                graph = None
                with second_order_errors("ADLER step(outputs=)", _ALT):
                    jvps = jvp_double_vjp(outputs, ctx.params, blocks, no_graph=_NO_GRAPH)
        elif inputs.get("model") is not None and inputs.get("inputs") is not None:
            model = inputs["model"]
            if isinstance(model, nn.parallel.DistributedDataParallel):
                model = model.module  # the forward-mode pass runs on the unwrapped module
            outputs, jvps = jvp_forward(
                model, inputs["inputs"], ctx.params, blocks, who="ADLER step(model=...)"
            )
        else:
            raise ValueError(_NO_OUTPUTS)
        out = []
        if loss == "auto":  # begin checked: backward's graph of the computed loss is here
            assert graph is not None and graph.outputs is outputs
            with second_order_errors("ADLER (loss='auto')", _ALT):
                qvs = graph.loss_hvp(jvps)
            for s, jv, qv in zip(ctx.partition.sets, jvps, qvs):
                out.append((jv.to(s.dtype) * qv.to(s.dtype)).sum())
            return out
        for s, jv in zip(ctx.partition.sets, jvps):
            o = outputs.detach().to(s.dtype)
            tg = inputs.get("targets")
            out.append(quadratic_form(loss, o, jv.to(s.dtype), tg, group["reduction"]))
        return out


_NO_OUTPUTS = (
    "ADLER (variant='ggn') needs the network outputs: call "
    "opt.step(outputs=outputs) after loss.backward(retain_graph=True), or "
    "opt.step(model=model, inputs=x)"
)


def _probe(outputs: Tensor) -> Tensor:
    """A fixed, generic vector shaped like ``outputs`` (no RNG: the training stream is left
    alone): entries spread over ``[-0.5, 0.5)`` by a multiplicative hash of the index."""
    k = torch.arange(outputs.numel(), device=outputs.device)
    v = ((k * 40503 + 12345) % 65536).to(torch.float32) / 65536 - 0.5
    return v.reshape(outputs.shape)


def _zero_hessian(graph: _LinearGraph) -> bool:
    """Whether the computed loss has ``Q = 0`` (checked on the probe vector; a host sync)."""
    if graph.linear:
        return True
    with second_order_errors("ADLER backward(loss, outputs)", _ALT):
        (qp,) = graph.loss_hvp([_probe(graph.outputs).to(graph.outputs.dtype)])
    return not bool(qp.abs().max() > 0)


def _verify_declared_loss(
    loss: str, reduction: str, graph: _LinearGraph, targets: Tensor | None
) -> None:
    """Raise a ``ValueError`` if the closed form of ``(loss, reduction)`` is not the output
    Hessian of the loss that ``backward`` saw (``Q p`` on a probe ``p``, relative 1e-3; 3e-2
    for half-precision outputs), naming the ``(loss, reduction)`` pairs that do match."""
    o = graph.outputs.detach()
    wide = torch.promote_types(o.dtype, torch.float32)
    half = o.dtype in (torch.float16, torch.bfloat16)
    rtol = 3e-2 if half else 1e-3
    v = _probe(o).to(o.dtype)
    with second_order_errors("ADLER backward(loss, outputs)", _ALT):
        (ad,) = graph.loss_hvp([v])
    ad, ow, vw = ad.to(wide), o.to(wide), v.to(wide)
    dloss = graph.dloss.detach().to(wide)

    def matches(name: str, red: str) -> bool:
        if name == "nll":  # linear in log-probabilities: Q = 0 and dL/dF = -w * onehot
            if bool(ad.abs().max() > 0):
                return False
            if ow.dim() < 2:
                return False
            w = _weights("nll", ow, targets, red)
            got = -dloss.sum(dim=1)
            return bool((got - w).abs().max() <= rtol * w.abs().max().clamp_min(1e-30))
        if name in ("cross_entropy",) and ow.dim() < 2:
            return False
        cf = hessian_vector_product(name, ow, vw, targets, red)
        scale = torch.maximum(cf.norm(), ad.norm())
        return bool((cf - ad).norm() <= rtol * scale + 1e-30)

    if matches(loss, reduction):
        return
    fits = [(n, r) for n in LOSSES for r in REDUCTIONS if matches(n, r)]
    auto = "" if _zero_hessian(graph) else " (or loss='auto')"  # auto refuses Q = 0
    if fits:
        fix = " or ".join(f"loss={n!r}, reduction={r!r}" for n, r in fits) + auto
    else:
        fix = "loss='auto' (autograd through the loss you computed), or step(loss_fn=...)"
    hint = ""
    if not fits and loss in ("cross_entropy", "nll") and targets is None:
        hint = (
            f"; with ignore_index={IGNORE_INDEX} positions in the batch, also pass "
            "step(..., targets=y)"
        )
    raise ValueError(
        f"ADLER: loss={loss!r}, reduction={reduction!r} but the loss you computed has a "
        f"different output Hessian (checked on the first estimate step of "
        f"opt.backward(loss, outputs)); pass {fix}{hint}"
    )
