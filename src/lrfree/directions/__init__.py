"""Directions by name. A new direction: a module here and one line in ``DIRECTIONS``."""

from __future__ import annotations

from .adam import Adam, AdamW
from .base import Direction
from .rmsprop import RMSprop
from .sgd import SGD, Momentum, Nesterov

__all__ = ["DIRECTIONS", "Direction", "get_direction"]

DIRECTIONS: dict[str, Direction] = {
    d.name: d for d in (SGD(), Momentum(), Nesterov(), Adam(), AdamW(), RMSprop())
}


def get_direction(name: str) -> Direction:
    if not isinstance(name, str) or name not in DIRECTIONS:
        raise ValueError(f"Invalid direction: {name!r} (expected one of {sorted(DIRECTIONS)})")
    return DIRECTIONS[name]
