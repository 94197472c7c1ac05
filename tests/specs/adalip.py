"""The AdaLip family (rules "lipschitz" and "lipschitz-u"): S moves from the second step."""

from __future__ import annotations

import lrfree
from optim_db import ErrorCase, OptimSpec

_ERRORS = [
    ErrorCase(
        {"gamma": 1.5},
        ValueError,
        r"Invalid gamma: 1\.5 \(expected 0 <= gamma <= 1\) \[direction '\w+', rule 'lipschitz",
    ),
    ErrorCase({"gamma": "0.8"}, TypeError, r"Invalid gamma: '0\.8' \(expected a real number\)"),
    ErrorCase({"c": -1e-8}, ValueError, r"Invalid c: -1e-08 \(expected 0 <= c\)"),
    ErrorCase({"c": float("inf")}, ValueError, r"Invalid c: inf \(expected a finite number"),
    ErrorCase(
        {"schedule": "cosine"},
        ValueError,
        r"Invalid schedule: 'cosine' \(expected one of \['constant', 'sqrt'\]\)",
    ),
    ErrorCase(
        {"c_schedule": "eq-a3"},
        ValueError,
        r"Invalid c_schedule: 'eq-a3' \(expected one of \['constant', 'theoretical'\]\)",
    ),
    ErrorCase({"c_schedule": None}, TypeError, r"Invalid c_schedule: None"),
    ErrorCase({"blocks": "row"}, ValueError, r"Invalid blocks: 'row' \(expected one of"),
    ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
    ErrorCase({"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay: nan"),
]
_NAMED = [*_ERRORS, ErrorCase({"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'")]
_COMPOSED = [*_ERRORS, ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\)")]


def _composed(direction: str, rule: str):
    return lambda params, **kw: lrfree.Composed(params, direction=direction, rule=rule, **kw)


SPECS = [
    OptimSpec(
        name="adalip",
        factory=lrfree.AdaLip,
        kwargs=dict(lr=0.05, weight_decay=1e-3),
        errors=[*_NAMED, ErrorCase({"momentum": 1.0}, ValueError, r"Invalid momentum: 1\.0")],
    ),
    OptimSpec(
        name="adalip-momentum-layer-sqrt-theoretical",
        factory=lrfree.AdaLip,
        kwargs=dict(
            lr=0.1, momentum=0.9, blocks="layer", schedule="sqrt", c_schedule="theoretical"
        ),
        errors=_NAMED,
    ),
    OptimSpec(
        name="rmslip",
        factory=lrfree.RMSLip,
        kwargs=dict(lr=0.005, weight_decay=1e-3),
        errors=[*_NAMED, ErrorCase({"alpha": 1.5}, ValueError, r"Invalid alpha: 1\.5")],
    ),
    OptimSpec(
        name="adamlip",
        factory=lrfree.AdamLip,
        kwargs=dict(lr=0.01, weight_decay=1e-3),
        errors=[*_NAMED, ErrorCase({"betas": (0.9, 1.0)}, ValueError, r"Invalid betas\[1\]: 1\.0")],
    ),
    OptimSpec(
        name="adalipu",
        factory=lrfree.AdaLipU,
        kwargs=dict(lr=0.05, weight_decay=1e-3),
        errors=_NAMED,
    ),
    OptimSpec(
        name="rmslipu-centered",
        factory=lrfree.RMSLipU,
        kwargs=dict(lr=0.005, centered=True, momentum=0.5),
        errors=_NAMED,
    ),
    OptimSpec(
        name="adamlipu-decoupled-theoretical",
        factory=lrfree.AdamLipU,
        kwargs=dict(
            lr=0.01, decoupled_weight_decay=True, weight_decay=1e-2, c_schedule="theoretical"
        ),
        errors=_NAMED,
    ),
    OptimSpec(
        name="composed-lipschitz-nesterov-filter",
        factory=_composed("nesterov", "lipschitz"),
        kwargs=dict(lr=0.05, blocks="filter"),
        errors=_COMPOSED,
    ),
    OptimSpec(
        name="composed-lipschitz-u-adamw-global-sqrt",
        factory=_composed("adamw", "lipschitz-u"),
        kwargs=dict(lr=0.01, blocks="global", schedule="sqrt"),
        errors=_COMPOSED,
    ),
]
