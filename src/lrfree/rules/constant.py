"""The constant rule: ``alpha = 1``, so every direction is exactly its torch optimizer."""

from __future__ import annotations

from typing import Any

from .base import Rule

__all__ = ["Constant"]


class Constant(Rule):
    """No adaptation: ``p <- p - lr * d``. Reproduces torch.optim step for step."""

    name = "constant"

    def collectives(
        self, group: dict[str, Any], step: int, *, sharded: bool
    ) -> frozenset[int] | None:
        """No collective: ``alpha = 1`` has nothing to reduce, sharded or not."""
        return frozenset({0})
