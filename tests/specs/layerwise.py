"""The layer-wise Hessian rule (LW): SGDLW, AdamWLW and the rule over other directions.

``update_every=2`` and ``beta_t=0.5`` make the rates move within the few steps the generic
tests run. Graph mode through ``default_step``; closure mode (finite differences) and the
Gauss-Newton mode through their own step functions.
"""

from __future__ import annotations

import torch.nn.functional as F

import lrfree
from optim_db import ErrorCase, OptimSpec

_FAST = dict(update_every=2, beta_t=0.5, weight_decay=1e-3)

_ERRORS = [
    ErrorCase({"beta_t": 1.0}, ValueError, r"Invalid beta_t: 1\.0 \(expected 0 <= beta_t < 1\)"),
    ErrorCase({"beta_t": -0.1}, ValueError, r"Invalid beta_t: -0\.1"),
    ErrorCase(
        {"update_every": 0}, ValueError, r"Invalid update_every: 0 \(expected update_every >= 1\)"
    ),
    ErrorCase({"update_every": 2.5}, TypeError, r"Invalid update_every: 2\.5 \(expected an int\)"),
    ErrorCase({"warmup_steps": -1}, ValueError, r"Invalid warmup_steps: -1"),
    ErrorCase(
        {"warmup_lr": -1e-3}, ValueError, r"Invalid warmup_lr: -0\.001 \(expected 0 <= warmup_lr\)"
    ),
    ErrorCase(
        {"curvature": "fisher"},
        ValueError,
        r"Invalid curvature: 'fisher' \(expected one of \['hessian', 'ggn'\]\)",
    ),
    ErrorCase(
        {"blocks": "filter"},
        ValueError,
        r"Invalid blocks: 'filter' \(expected one of \['global', 'layer', 'tensor'\]\) "
        r"\[direction '\w+', rule 'layerwise'\]",
    ),
    ErrorCase(
        {"bias_correction": 1}, TypeError, r"Invalid bias_correction: 1 \(expected True or False\)"
    ),
    ErrorCase({"fd_scheme": "backward"}, ValueError, r"Invalid fd_scheme: 'backward'"),
    ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
    ErrorCase({"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay: nan"),
    ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
]


def closure_step(model, opt, x, y):
    """Closure mode: no graph ever, so curvature steps use finite differences."""

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return opt.step(closure, model=model)


def ggn_step(model, opt, x, y):
    """Gauss-Newton mode: the outputs' graph is kept alive on curvature steps."""
    opt.zero_grad()
    out = model(x)
    loss = F.cross_entropy(out, y)
    due = opt.curvature_due()
    loss.backward(retain_graph=due)
    opt.step(outputs=out, loss_fn=lambda z: F.cross_entropy(z, y))
    return loss


def backward_step(model, opt, x, y):
    """The one curvature entry: ``opt.backward(loss)`` (a graph on curvature steps only)."""
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    opt.backward(loss)
    opt.step()
    return loss


SPECS = [
    OptimSpec(
        name="sgdlw",
        factory=lrfree.SGDLW,
        kwargs=dict(_FAST),
        errors=[
            *_ERRORS,
            ErrorCase(
                {"momentum": 1.0},
                ValueError,
                r"Invalid momentum: 1\.0 \(expected 0 < momentum < 1\)",
            ),
        ],
    ),
    OptimSpec(
        name="sgdlw-plain",
        factory=lrfree.SGDLW,
        kwargs=dict(_FAST, momentum=0.0),
        errors=_ERRORS,
    ),
    OptimSpec(
        name="adamwlw",
        factory=lrfree.AdamWLW,
        kwargs=dict(_FAST),
        errors=[
            *_ERRORS,
            ErrorCase({"betas": (0.9, 1.0)}, ValueError, r"Invalid betas\[1\]: 1\.0"),
        ],
    ),
    OptimSpec(
        name="sgdlw-closure",
        factory=lrfree.SGDLW,
        kwargs=dict(_FAST),
        errors=_ERRORS,
        step=closure_step,
    ),
    OptimSpec(
        name="adamwlw-ggn",
        factory=lrfree.AdamWLW,
        kwargs=dict(_FAST, curvature="ggn"),
        errors=_ERRORS,
        step=ggn_step,
    ),
    OptimSpec(
        name="composed-layerwise-nesterov",
        factory=lambda params, **kw: lrfree.Composed(
            params, direction="nesterov", rule="layerwise", **kw
        ),
        kwargs=dict(_FAST),
        errors=_ERRORS,
        step=backward_step,
    ),
    OptimSpec(
        name="composed-layerwise-rmsprop-tensor",
        factory=lambda params, **kw: lrfree.Composed(
            params, direction="rmsprop", rule="layerwise", **kw
        ),
        kwargs=dict(_FAST, blocks="tensor"),
        errors=_ERRORS,
    ),
]
