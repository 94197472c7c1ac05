"""The constant rule: ``alpha = 1``, so every direction is exactly its torch optimizer."""

from __future__ import annotations

from .base import Rule

__all__ = ["Constant"]


class Constant(Rule):
    """No adaptation: ``p <- p - lr * d``. Reproduces torch.optim step for step."""

    name = "constant"
