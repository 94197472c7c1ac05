"""The composed optimizer with the constant rule, over every direction."""

from __future__ import annotations

import lrfree
from optim_db import ErrorCase, OptimSpec

_DIRECTIONS = {
    "sgd": dict(lr=0.1),
    "momentum": dict(lr=0.05),
    "nesterov": dict(lr=0.05),
    "adam": dict(lr=0.01),
    "adamw": dict(lr=0.01),
    "rmsprop": dict(lr=0.005),
}

SPECS = [
    OptimSpec(
        name=f"composed-{d}",
        factory=lambda params, _d=d, **kw: lrfree.Composed(params, direction=_d, **kw),
        kwargs={**kw, "weight_decay": 1e-3},
        errors=[
            ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
            ErrorCase({"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay: nan"),
            ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
            ErrorCase({"lr": "0.1"}, TypeError, r"Invalid lr: '0.1' \(expected a real number\)"),
        ],
    )
    for d, kw in _DIRECTIONS.items()
]
