"""Hypergradient descent (HD) and CAM-HD: the six named optimizers and the rules over other
directions. ``hypergrad_lr`` (paper units) is large enough that the rates move within the few
steps the generic tests run. The ``form="multiplicative"`` specs (``hypergrad_lr`` unit-free
there) include the two ``Composed`` ones, which are the first of their (class, rule) and so
the ones the FSDP2 tests run (tests/test_distributed.py ``_fsdp_names``)."""

from __future__ import annotations

import lrfree
from optim_db import ErrorCase, OptimSpec

_COMMON_ERRORS = [
    ErrorCase(
        {"hypergrad_lr": -1e-3},
        ValueError,
        r"Invalid hypergrad_lr: -0\.001 \(expected 0 <= hypergrad_lr\)",
    ),
    ErrorCase(
        {"hypergrad_lr": "1e-3"},
        TypeError,
        r"Invalid hypergrad_lr: '1e-3' \(expected a real number\)",
    ),
    ErrorCase(
        {"decay_rate": -0.1}, ValueError, r"Invalid decay_rate: -0\.1 \(expected 0 <= decay_rate\)"
    ),
    ErrorCase({"alpha_inf": float("nan")}, ValueError, r"Invalid alpha_inf: nan"),
    ErrorCase(
        {"form": "mult"},
        ValueError,
        r"Invalid form: 'mult' \(expected one of \['additive', 'multiplicative'\]\) "
        r"\[direction '\w+', rule '(hypergradient|cam-hd)'\]",
    ),
    ErrorCase(
        {"form": None},
        TypeError,
        r"Invalid form: None \(expected one of \['additive', 'multiplicative'\]\)",
    ),
    ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
    ErrorCase({"weight_decay": float("nan")}, ValueError, r"Invalid weight_decay: nan"),
]
_HD_ERRORS = [
    *_COMMON_ERRORS,
    ErrorCase({"blocks": "row"}, ValueError, r"Invalid blocks: 'row' \(expected one of"),
    ErrorCase({"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'"),
]
_CAM_ERRORS = [
    *_COMMON_ERRORS,
    ErrorCase(
        {"delta": -0.03},
        ValueError,
        r"Invalid delta: -0\.03 \(expected 0 <= delta\) \[direction '\w+', rule 'cam-hd'\]",
    ),
    ErrorCase(
        {"levels": "layer"}, TypeError, r"Invalid levels: 'layer' \(expected a non-empty tuple"
    ),
    ErrorCase(
        {"levels": ("global", "layer")},
        ValueError,
        r"Invalid levels: \('global', 'layer'\) \(expected levels ordered finest to coarsest",
    ),
    ErrorCase(
        {"levels": ("filter", "tensor")}, ValueError, r"Invalid levels: \('filter', 'tensor'\)"
    ),
    ErrorCase({"levels": ("row", "global")}, ValueError, r"Invalid levels: \('row', 'global'\)"),
    ErrorCase(
        {"gammas": (0.5, 0.6)},
        ValueError,
        r"Invalid gammas: \(0\.5, 0\.6\) \(expected None or a tuple of reals >= 0 that sum to 1\)",
    ),
    ErrorCase({"gammas": (1.2, -0.2)}, ValueError, r"Invalid gammas: \(1\.2, -0\.2\)"),
    ErrorCase({"gammas": ("a", "b")}, TypeError, r"Invalid gammas: \('a', 'b'\)"),
    ErrorCase(
        {"gammas": (0.3, 0.3, 0.4)},
        ValueError,
        r"Invalid gammas: \(0\.3, 0\.3, 0\.4\) \(expected one weight per level, "
        r"2 for levels \('layer', 'global'\)\)",
    ),
    ErrorCase({"bogus": 1}, TypeError, r"unexpected keyword argument 'bogus'"),
]
_COMPOSED_CAM_ERRORS = [
    *[e for e in _CAM_ERRORS if "bogus" not in e.kwargs],
    ErrorCase(
        {"blocks": "global"},
        ValueError,
        r"Invalid blocks: 'global' \(expected the finest level levels\[0\] = 'layer'\) "
        r"\[direction '\w+', rule 'cam-hd'\]",
    ),
    ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
]

SPECS = [
    OptimSpec(
        name="sgdhd",
        factory=lrfree.SGDHD,
        kwargs=dict(lr=0.1, hypergrad_lr=1e-2, weight_decay=1e-3),
        errors=[
            *_HD_ERRORS,
            ErrorCase(
                {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
                ValueError,
                r"Invalid dampening: 0\.1 \(expected 0 with nesterov=True\) \[SGDHD\]",
            ),
        ],
    ),
    OptimSpec(
        name="sgdhd-momentum-layer",
        factory=lrfree.SGDHD,
        kwargs=dict(lr=0.05, momentum=0.9, hypergrad_lr=1e-3, blocks="layer"),
        errors=_HD_ERRORS,
    ),
    OptimSpec(
        name="sgdhd-multiplicative",
        factory=lrfree.SGDHD,
        kwargs=dict(lr=0.05, hypergrad_lr=0.1, weight_decay=1e-3, form="multiplicative"),
        errors=_HD_ERRORS,
    ),
    OptimSpec(
        name="sgdnhd",
        factory=lrfree.SGDNHD,
        kwargs=dict(lr=0.05, hypergrad_lr=1e-3, weight_decay=1e-3),
        errors=[
            *_HD_ERRORS,
            ErrorCase(
                {"momentum": 1.0},
                ValueError,
                r"Invalid momentum: 1\.0 \(expected 0 < momentum < 1\)",
            ),
        ],
    ),
    OptimSpec(
        name="adamhd",
        factory=lrfree.AdamHD,
        kwargs=dict(lr=0.01, hypergrad_lr=1e-4, weight_decay=1e-3),
        errors=[
            *_HD_ERRORS,
            ErrorCase({"betas": (0.9, 1.0)}, ValueError, r"Invalid betas\[1\]: 1\.0"),
        ],
    ),
    OptimSpec(
        name="adamhd-decoupled-element-decay",
        factory=lrfree.AdamHD,
        kwargs=dict(
            lr=0.01,
            hypergrad_lr=1e-4,
            weight_decay=1e-2,
            decoupled_weight_decay=True,
            blocks="element",
            decay_rate=0.05,
        ),
        errors=_HD_ERRORS,
    ),
    OptimSpec(
        name="sgdcamhd",
        factory=lrfree.SGDCAMHD,
        kwargs=dict(lr=0.1, hypergrad_lr=1e-2, weight_decay=1e-3, delta=0.5),
        errors=_CAM_ERRORS,
    ),
    OptimSpec(
        name="sgdncamhd-filter",
        factory=lrfree.SGDNCAMHD,
        kwargs=dict(lr=0.05, hypergrad_lr=1e-4, levels=("filter", "global"), delta=0.5),
        errors=[
            *_CAM_ERRORS[:-2],
            ErrorCase(
                {"momentum": 0.0},
                ValueError,
                r"Invalid momentum: 0\.0 \(expected 0 < momentum < 1\)",
            ),
        ],
    ),
    OptimSpec(
        name="adamcamhd",
        factory=lrfree.AdamCAMHD,
        kwargs=dict(lr=0.01, hypergrad_lr=1e-4, weight_decay=1e-3, delta=0.5),
        errors=[*_CAM_ERRORS, ErrorCase({"eps": -1.0}, ValueError, r"Invalid eps: -1\.0")],
    ),
    OptimSpec(
        name="adamcamhd-multiplicative-3level",
        factory=lrfree.AdamCAMHD,
        kwargs=dict(
            lr=0.01,
            hypergrad_lr=0.1,
            levels=("element", "layer", "global"),
            delta=0.5,
            weight_decay=1e-3,
            form="multiplicative",
        ),
        errors=_CAM_ERRORS[:-2],
    ),
    OptimSpec(
        name="adamcamhd-3level-decay",
        factory=lrfree.AdamCAMHD,
        kwargs=dict(
            lr=0.01,
            hypergrad_lr=1e-5,
            levels=("element", "layer", "global"),
            delta=0.5,
            decay_rate=0.02,
            decoupled_weight_decay=True,
            weight_decay=1e-2,
        ),
        errors=_CAM_ERRORS[:-2],
    ),
    OptimSpec(
        name="composed-hypergradient-rmsprop-tensor",
        factory=lambda params, **kw: lrfree.Composed(
            params, direction="rmsprop", rule="hypergradient", **kw
        ),
        kwargs=dict(
            lr=0.005,
            hypergrad_lr=0.1,
            blocks="tensor",
            weight_decay=1e-3,
            form="multiplicative",
        ),
        errors=[
            *_COMMON_ERRORS,
            ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
        ],
    ),
    OptimSpec(
        name="composed-camhd-adamw",
        factory=lambda params, **kw: lrfree.Composed(
            params, direction="adamw", rule="cam-hd", **kw
        ),
        kwargs=dict(lr=0.01, hypergrad_lr=0.1, delta=0.5, form="multiplicative"),
        errors=_COMPOSED_CAM_ERRORS,
    ),
]
