"""The step-size rule interface.

A rule produces one multiplier ``alpha_b`` per block set ``b``; the composed optimizer applies
``p <- p - lr * alpha_b * d`` (and decoupled weight decay ``p <- p (1 - lr alpha_b wd)``).
``group["lr"]`` belongs to the user and the scheduler; a rule never writes it.

Hooks, called once per parameter group per ``step()``:

* ``begin(ctx)``  before the directions are computed (``ctx.grads`` are set);
* ``rates(ctx)``  after the directions (``ctx.directions``); returns the multipliers to apply,
  one tensor per block set of ``ctx.partition`` (``None``: apply ``lr`` unchanged);
* ``end(ctx)``    after the parameters moved.

Rule state lives in the optimizer state of the block's owner parameter under
``"<rule>.<field>"`` keys, as tensors of dtype ``promote(param dtype, float32)``; the current
multiplier is ``"<rule>.alpha"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from ..blocks import BlockSet, Partition
from ..hyper import Hyper


class Host(Protocol):
    """What a rule may use of the optimizer that runs it (``lrfree.Composed``): its state,
    its param groups and their block partitions. Rules depend on this, not on ``Composed``,
    so the rules package does not import the optimizer that imports it."""

    state: Any
    param_groups: list[dict[str, Any]]

    def partition(self, group_index: int, blocks: str | None = None) -> Partition: ...


__all__ = ["Host", "Rule", "StepContext"]


@dataclass
class StepContext:
    """What a rule sees of one parameter group during one ``step()``.

    Lists are indexed like ``group["params"]``; entries of parameters without a gradient
    this step are ``None``. ``partition`` holds only the block sets with an active member.
    """

    optimizer: Host
    group: dict[str, Any]
    group_index: int
    params: list[Tensor]
    grads: list[Tensor | None]
    partition: Partition
    inputs: dict[str, Any]
    closure: Callable[[], Any] | None
    loss: Any
    directions: list[Tensor | None] = field(default_factory=list)
    foreach: bool = False  # multi-tensor fast paths (set by Composed; same device and dtype)

    @property
    def lr(self) -> float:
        return self.group["lr"]

    @property
    def active(self) -> list[int]:
        return [i for i, g in enumerate(self.grads) if g is not None]

    def state(self, i: int) -> dict[str, Any]:
        return self.optimizer.state[self.params[i]]

    def block_state(self, s: BlockSet) -> dict[str, Any]:
        return self.optimizer.state[self.params[s.owner]]


class Rule:
    """Base class of step-size rules. Subclasses set ``name`` and ``hyper`` and override hooks.

    ``default_lr``: the ``lr`` a named optimizer uses by default for this rule (rules whose rate
    is absolute, such as LW or ADLER, use 1.0); ``None`` takes the direction's default.
    ``step_inputs``: keyword arguments ``step()`` accepts for this rule.
    """

    name: ClassVar[str]
    hyper: ClassVar[dict[str, Hyper]] = {}
    default_lr: ClassVar[float | None] = None
    step_inputs: ClassVar[tuple[str, ...]] = ()

    # ----------------------------------------------------------------- helpers
    def key(self, name: str) -> str:
        return f"{self.name}.{name}"

    def ensure(self, ctx: StepContext, s: BlockSet, name: str, fill: float) -> Tensor:
        """The block's ``"<rule>.<name>"`` state tensor, created filled with ``fill``."""
        st = ctx.block_state(s)
        k = self.key(name)
        if k not in st:
            st[k] = torch.full(s.shape, fill, dtype=s.dtype, device=ctx.params[s.owner].device)
        return st[k]

    def accept(
        self,
        ctx: StepContext,
        s: BlockSet,
        stored: Tensor,
        new: Tensor,
        ok: Tensor | None = None,
        *,
        positive: bool = True,
    ) -> Tensor:
        """Store a rate statistic only where it is usable; count the rejections.

        ``stored <- where(good, new, stored)`` with ``good = isfinite(new) & (new > 0) & ok``
        (``new >= 0`` instead when ``positive=False``): a non-finite or non-positive value is
        never stored, the previous one is kept, and each rejected entry adds 1 to the block's
        ``"<rule>.rejected"`` counter. ``torch.where``, no host sync. Returns ``good``.

        >>> import torch
        >>> from lrfree.blocks import BlockSet
        >>> from lrfree.rules.tlr import TLR
        >>> class Ctx:  # the two members ``accept`` reads
        ...     params = [torch.zeros(1)]
        ...     state = {}
        ...     def block_state(self, s): return self.state
        >>> ctx, s, old = Ctx(), BlockSet("b", [0], (3,), "filter"), torch.ones(3)
        >>> TLR().accept(ctx, s, old, torch.tensor([2.0, float("nan"), -1.0])).tolist()
        [True, False, False]
        >>> old.tolist(), ctx.state["tlr.rejected"].tolist()
        ([2.0, 1.0, 1.0], [0.0, 1.0, 1.0])
        """
        good = torch.isfinite(new) & ((new > 0) if positive else (new >= 0))
        if ok is not None:
            good = good & ok
        stored.copy_(torch.where(good, new.to(stored.dtype), stored))
        rejected = self.ensure(ctx, s, "rejected", 0.0)
        rejected.add_((~good).to(rejected.dtype))
        return good

    # ------------------------------------------------------------------- hooks
    def check(self, group: dict[str, Any], owner: str) -> None:
        """Cross-hyperparameter checks on a (validated) parameter group."""

    def begin(self, ctx: StepContext) -> None:
        """Before the directions are computed."""

    def rates(self, ctx: StepContext) -> list[Tensor] | None:
        """The multipliers to apply this step, one per block set of ``ctx.partition``."""
        return None

    def end(self, ctx: StepContext) -> None:
        """After the parameters were updated."""

    def alpha(self, block_state: dict[str, Any]) -> Tensor | None:
        """The current multiplier of a block (read by ``effective_lr``)."""
        return block_state.get(self.key("alpha"))

    def diagnostics(self, block_state: dict[str, Any]) -> dict[str, Tensor]:
        """Rule statistics of a block worth logging (raw estimates, counters)."""
        return {k: v for k, v in block_state.items() if k.startswith(self.name + ".")}

    def curvature_due(self, optimizer: Host, group_index: int) -> bool:
        """Whether the next ``step()`` of this group needs ``backward(create_graph=True)``."""
        return False

    def __repr__(self) -> str:
        return f"<rule {self.name!r}>"
