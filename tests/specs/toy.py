"""The toy rule of ``tests/toy_rule.py`` (docs/writing-a-rule.md): its registry line and
its specs, over a plain and a normalised direction."""

from __future__ import annotations

import lrfree
from lrfree.rules import RULES, register_rule
from optim_db import ErrorCase, OptimSpec
from toy_rule import Toy

if Toy.name not in RULES:  # the registry line (a test-only rule: registered by its spec)
    register_rule(Toy())


def _composed(direction: str):
    return lambda params, **kw: lrfree.Composed(params, direction=direction, rule="toy", **kw)


_ERRORS = [
    ErrorCase({"c": 0.0}, ValueError, r"Invalid c: 0\.0 \(expected 0 < c\)"),
    ErrorCase({"c": "1"}, TypeError, r"Invalid c: '1' \(expected a real number\)"),
    ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
]

SPECS = [
    OptimSpec(
        name="composed-toy-sgd",
        factory=_composed("sgd"),
        kwargs=dict(lr=0.5, weight_decay=1e-3),
        errors=_ERRORS,
    ),
    OptimSpec(
        name="composed-toy-adam-tensor",
        factory=_composed("adam"),
        kwargs=dict(lr=0.05, blocks="tensor", c=0.1),
        errors=_ERRORS,
    ),
]
