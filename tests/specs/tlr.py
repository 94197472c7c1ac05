"""TLR (Newton trainable learning rate) and the windowed hypergradient comparators.
``update_every=2`` closes a window every two steps, so the rates move within the few steps
the generic tests run (``window_floor=0``: the default floor would lengthen K to 30)."""

from __future__ import annotations

import lrfree
from optim_db import ErrorCase, OptimSpec

_WINDOW_ERRORS = [
    ErrorCase(
        {"update_every": None},
        ValueError,
        r"Invalid steps_per_epoch / update_every: None / None \(expected exactly one of them",
    ),
    ErrorCase(
        {"steps_per_epoch": 10},
        ValueError,
        r"Invalid steps_per_epoch / update_every: 10 / \d \(expected exactly one of them",
    ),
    ErrorCase(
        {"update_every": 0}, ValueError, r"Invalid update_every: 0 \(expected update_every >= 1\)"
    ),
    ErrorCase(
        {"update_every": 2.0}, TypeError, r"Invalid update_every: 2\.0 \(expected an int or None\)"
    ),
    ErrorCase({"p": 0.0}, ValueError, r"Invalid p: 0\.0 \(expected 0 < p\)"),
    ErrorCase(
        {"max_factor": 0.5}, ValueError, r"Invalid max_factor: 0\.5 \(expected 1 <= max_factor\)"
    ),
    ErrorCase(
        {"min_factor": 0.0},
        ValueError,
        r"Invalid min_factor: 0\.0 \(expected 0 < min_factor <= 1\)",
    ),
    ErrorCase(
        {"min_factor": 1.0, "max_factor": 1.0 - 1e-9},
        ValueError,
        r"Invalid max_factor: 0\.999",
    ),
    ErrorCase(
        {"window_floor": -1.0},
        ValueError,
        r"Invalid window_floor: -1\.0 \(expected 0 <= window_floor\) \[direction '\w+', rule",
    ),
    ErrorCase(
        {"window_floor": float("inf")},
        ValueError,
        r"Invalid window_floor: inf \(expected a finite number, 0 <= window_floor\)",
    ),
    ErrorCase(
        {"max_alpha": 0.0},
        ValueError,
        r"Invalid max_alpha: 0\.0 \(expected 0 < max_alpha\) \[direction '\w+', rule",
    ),
    ErrorCase(
        {"max_alpha": "10"}, TypeError, r"Invalid max_alpha: '10' \(expected a real number\)"
    ),
]
_TLR_ERRORS = [
    *_WINDOW_ERRORS,
    ErrorCase(
        {"gamma": 1.5},
        ValueError,
        r"Invalid gamma: 1\.5 \(expected 0 < gamma <= 1\) \[direction '\w+', rule 'tlr'\]",
    ),
    ErrorCase({"gamma": "0.3"}, TypeError, r"Invalid gamma: '0\.3' \(expected a real number\)"),
    ErrorCase(
        {"newton_base": "previous"},
        ValueError,
        r"Invalid newton_base: 'previous' \(expected one of \['current', 'window'\]\) "
        r"\[direction '\w+', rule 'tlr'\]",
    ),
    ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
    ErrorCase({"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay: nan"),
]
_HW_ERRORS = [
    *_WINDOW_ERRORS,
    ErrorCase({"eta": -1.0}, ValueError, r"Invalid eta: -1\.0 \(expected 0 <= eta\)"),
    ErrorCase(
        {"form": "newton"},
        ValueError,
        r"Invalid form: 'newton' \(expected one of \['additive', 'multiplicative'\]\) "
        r"\[direction '\w+', rule 'hypergradient-window'\]",
    ),
    ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
    ErrorCase(  # the Newton base is TLR's only
        {"newton_base": "window"}, TypeError, r"Unknown hyperparameter\(s\) \['newton_base'\]"
    ),
]


def _composed(direction: str, rule: str):
    return lambda params, **kw: lrfree.Composed(params, direction=direction, rule=rule, **kw)


SPECS = [
    OptimSpec(
        name="sgdtlr",
        steps=20,  # full-batch separable data: the rate grows until it overshoots (docs)
        factory=lrfree.SGDTLR,
        kwargs=dict(lr=0.1, update_every=2, weight_decay=1e-3, window_floor=0.0),
        errors=[
            *_TLR_ERRORS,
            ErrorCase({"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'"),
        ],
    ),
    OptimSpec(
        name="sgdtlr-momentum-layer",
        factory=lrfree.SGDTLR,
        kwargs=dict(
            lr=0.05, momentum=0.9, update_every=3, blocks="layer", gamma=0.5, window_floor=0.0
        ),
        errors=[
            *_TLR_ERRORS,
            ErrorCase({"momentum": 1.0}, ValueError, r"Invalid momentum: 1\.0"),
        ],
    ),
    OptimSpec(
        name="adamtlr",
        steps=20,  # full-batch separable data: the rate grows until it overshoots (docs)
        factory=lrfree.AdamTLR,
        kwargs=dict(lr=0.01, update_every=2, weight_decay=1e-3, window_floor=0.0),
        errors=[
            *_TLR_ERRORS,
            ErrorCase({"betas": (0.9, 1.0)}, ValueError, r"Invalid betas\[1\]: 1\.0"),
        ],
    ),
    OptimSpec(
        name="adamtlr-decoupled-tensor",
        steps=20,  # full-batch separable data: the rate grows until it overshoots (docs)
        factory=lrfree.AdamTLR,
        kwargs=dict(
            lr=0.01,
            steps_per_epoch=10,
            p=0.2,
            decoupled_weight_decay=True,
            weight_decay=1e-2,
            blocks="tensor",
            window_floor=0.0,
        ),
        errors=[
            ErrorCase(
                {"update_every": 3},
                ValueError,
                r"Invalid steps_per_epoch / update_every: 10 / 3",
            ),
            ErrorCase({"steps_per_epoch": 0}, ValueError, r"Invalid steps_per_epoch: 0"),
        ],
    ),
    OptimSpec(  # the safeguards on: K = max(2, ceil(1.5 / (1 - 0.5))) = 3, the cap binds
        name="sgdtlr-safeguards",
        factory=lrfree.SGDTLR,
        kwargs=dict(
            lr=0.1,
            momentum=0.5,
            update_every=2,
            window_floor=1.5,
            newton_base="window",
            max_alpha=3.0,
        ),
        errors=_TLR_ERRORS,
    ),
    OptimSpec(  # K = max(round(0.2 * 5), ceil(1 / (1 - 0.5))) = 2, per-tensor alpha_prev
        name="adamtlr-safeguards-tensor",
        steps=20,
        factory=lrfree.AdamTLR,
        kwargs=dict(
            lr=0.01,
            betas=(0.5, 0.999),
            steps_per_epoch=5,
            window_floor=1.0,
            newton_base="window",
            max_alpha=50.0,
            blocks="tensor",
        ),
        errors=[
            ErrorCase(
                {"newton_base": None},
                TypeError,
                r"Invalid newton_base: None \(expected one of \['current', 'window'\]\)",
            ),
        ],
    ),
    OptimSpec(
        name="composed-tlr-rmsprop",
        steps=20,  # full-batch separable data: the rate grows until it overshoots (docs)
        factory=_composed("rmsprop", "tlr"),
        kwargs=dict(lr=0.005, update_every=2, weight_decay=1e-3),
        errors=[*_TLR_ERRORS, ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter")],
    ),
    OptimSpec(
        name="composed-hypergradient-window-additive-nesterov",
        factory=_composed("nesterov", "hypergradient-window"),
        kwargs=dict(lr=0.05, update_every=2, eta=1e-3, blocks="global"),
        errors=_HW_ERRORS,
    ),
    OptimSpec(
        name="composed-hypergradient-window-multiplicative-adamw",
        factory=_composed("adamw", "hypergradient-window"),
        kwargs=dict(lr=0.01, update_every=2, eta=0.5, form="multiplicative", max_alpha=1.5),
        errors=_HW_ERRORS,
    ),
]
