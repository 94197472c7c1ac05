"""``Auto`` and its parts: the distance rules ("dadapt", "dog") and schedule-free averaging,
alone and composed. ``d0=1e-3`` / ``reps_rel=1e-3`` shorten the warm-up to the few steps the
generic tests run."""

from __future__ import annotations

import lrfree
from optim_db import ErrorCase, OptimSpec

_ERRORS = [
    ErrorCase({"reps_rel": 0.0}, ValueError, r"Invalid reps_rel: 0\.0 \(expected 0 < reps_rel\)"),
    ErrorCase({"reps_rel": "1e-6"}, TypeError, r"Invalid reps_rel: '1e-6' \(expected a real"),
    ErrorCase(
        {"averaging": "polyak"},
        ValueError,
        r"Invalid averaging: 'polyak' \(expected one of \['none', 'schedule_free'\]\)",
    ),
    ErrorCase({"sf_beta": 0.0}, ValueError, r"Invalid sf_beta: 0\.0 \(expected 0 < sf_beta <= 1\)"),
    ErrorCase({"sf_beta": 1.5}, ValueError, r"Invalid sf_beta: 1\.5"),
    ErrorCase({"blocks": "row"}, ValueError, r"Invalid blocks: 'row' \(expected one of"),
    ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
    ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
]


_AUTO_ERRORS = [
    ErrorCase({"d0": 0.0}, ValueError, r"Invalid d0: 0\.0 \(expected 0 < d0\)"),
    ErrorCase({"d0": "1e-4"}, TypeError, r"Invalid d0: '1e-4' \(expected a real"),
    ErrorCase({"d_coef": -1.0}, ValueError, r"Invalid d_coef: -1\.0"),
    ErrorCase({"reps_rel": 1e-3}, TypeError, r"Unknown hyperparameter\(s\) \['reps_rel'\]"),
    *_ERRORS[2:],
]


def _composed(**fixed):
    return lambda params, **kw: lrfree.Composed(params, **{**fixed, **kw})


SPECS = [
    OptimSpec(
        name="auto",
        factory=lrfree.Auto,
        kwargs=dict(d0=1e-3, weight_decay=1e-3),
        errors=_AUTO_ERRORS,
    ),
    OptimSpec(
        name="auto-layer-named",
        factory=lrfree.Auto,
        kwargs=dict(d0=1e-3, blocks="layer"),
        errors=_AUTO_ERRORS,
    ),
    OptimSpec(
        name="sgd-dog-global",
        factory=_composed(direction="sgd", rule="dog", blocks="global"),
        kwargs=dict(reps_rel=1e-3, weight_decay=1e-3),
        errors=_ERRORS,
    ),
    OptimSpec(
        name="adamw-dog-filter",
        factory=_composed(direction="adamw", rule="dog", blocks="filter"),
        kwargs=dict(reps_rel=1e-3),
        errors=_ERRORS,
    ),
    OptimSpec(
        name="schedulefree-adamw",
        factory=_composed(direction="adamw", betas=(0.0, 0.999), averaging="schedule_free"),
        kwargs=dict(lr=0.01, weight_decay=1e-3),
        errors=_ERRORS[2:],
    ),
    OptimSpec(
        name="adamlip-schedulefree",
        factory=_composed(
            direction="adam", rule="lipschitz", averaging="schedule_free", betas=(0.0, 0.999)
        ),
        kwargs=dict(lr=0.01),
        errors=_ERRORS[2:],
    ),
]

SPECS += [
    OptimSpec(
        name="auto-dog",
        factory=lrfree.Auto,
        kwargs=dict(rule="dog", reps_rel=1e-3, weight_decay=1e-3),
        errors=[*_ERRORS[:2], ErrorCase({"d0": 1e-3}, TypeError, r"Unknown hyperparameter")],
    ),
    OptimSpec(
        name="adam0-dadapt-layer",
        factory=_composed(direction="adam", betas=(0.0, 0.999), rule="dadapt", blocks="layer"),
        kwargs=dict(d0=1e-3),
        errors=_ERRORS[2:],
    ),
]
