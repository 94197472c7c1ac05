"""Declarative hyperparameters: a default, a check, and one error message format.

Every direction and rule declares its hyperparameters as a ``dict[str, Hyper]``. The
composed optimizer validates each value once, when a parameter group is added, and raises::

    ValueError: Invalid beta_t: 1.5 (expected 0 <= beta_t < 1) [rule 'layerwise']
    TypeError: Invalid lr: '1e-3' (expected a real number) [optimizer]

Values stored in ``param_groups`` are plain Python floats, ints, bools, strings and tuples,
so ``torch.load(weights_only=True)`` accepts a saved ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Hyper",
    "boolean",
    "choice",
    "integer",
    "pair_of_unit",
    "real",
    "validate",
]

Check = Callable[[str, Any, str], Any]
"""A check takes (name, value, owner) and returns the normalised value or raises."""


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter: its default, its check, and a one-line description."""

    default: Any
    check: Check
    doc: str = ""


def _fail(exc: type[Exception], name: str, value: Any, expected: str, owner: str) -> None:
    raise exc(f"Invalid {name}: {value!r} (expected {expected}) [{owner}]")


def real(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> Check:
    """A finite real number in ``[lo, hi]`` (``lo_open`` / ``hi_open`` make it strict)."""
    parts = []
    if lo is not None:
        parts.append(f"{lo:g} {'<' if lo_open else '<='} ")
    parts.append("{name}")
    if hi is not None:
        parts.append(f" {'<' if hi_open else '<='} {hi:g}")

    def check(name: str, value: Any, owner: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(TypeError, name, value, "a real number", owner)
        v = float(value)
        expected = "".join(parts).format(name=name)
        if math.isnan(v) or (math.isinf(v) and not allow_inf):
            _fail(ValueError, name, value, f"a finite number, {expected}", owner)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            _fail(ValueError, name, value, expected, owner)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            _fail(ValueError, name, value, expected, owner)
        return v

    return check


def integer(lo: int | None = None, *, optional: bool = False) -> Check:
    """An int ``>= lo`` (or ``None`` when ``optional``)."""

    def check(name: str, value: Any, owner: str) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(TypeError, name, value, "an int" + (" or None" if optional else ""), owner)
        if lo is not None and value < lo:
            _fail(ValueError, name, value, f"{name} >= {lo}", owner)
        return int(value)

    return check


def boolean() -> Check:
    def check(name: str, value: Any, owner: str) -> bool:
        if not isinstance(value, bool):
            _fail(TypeError, name, value, "True or False", owner)
        return value

    return check


def choice(options: Sequence[str]) -> Check:
    opts = tuple(options)

    def check(name: str, value: Any, owner: str) -> str:
        if not isinstance(value, str):
            _fail(TypeError, name, value, f"one of {list(opts)}", owner)
        if value not in opts:
            _fail(ValueError, name, value, f"one of {list(opts)}", owner)
        return value

    return check


def pair_of_unit() -> Check:
    """A pair ``(b1, b2)`` with ``0 <= b < 1`` each, as torch's Adam ``betas``."""

    def check(name: str, value: Any, owner: str) -> tuple[float, float]:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            _fail(TypeError, name, value, "a pair of floats", owner)
        out = []
        for i, b in enumerate(value):
            out.append(real(0.0, 1.0, hi_open=True)(f"{name}[{i}]", b, owner))
        return (out[0], out[1])

    return check


def validate(specs: dict[str, Hyper], values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Check ``values`` against ``specs`` and return the normalised values."""
    return {k: specs[k].check(k, v, owner) for k, v in values.items() if k in specs}
