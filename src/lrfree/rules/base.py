"""The step-size rule interface.

A rule produces one multiplier ``alpha_b`` per block set ``b``; the composed optimizer applies
``p <- p - lr * alpha_b * d`` (and decoupled weight decay ``p <- p (1 - lr alpha_b wd)``).
``group["lr"]`` belongs to the user and the scheduler; a rule never writes it.

Hooks, called once per parameter group per ``step()``:

* ``begin(ctx)``  before anything of the step changes: every group's ``begin`` runs before
  any group's directions are computed, so a ``begin`` that raises leaves the optimizer as it
  was (``ctx.grads`` are set);
* ``rates(ctx)``  after the directions (``ctx.directions``); returns the multipliers to apply,
  one tensor per block set of ``ctx.partition`` (``None``: apply ``lr`` unchanged);
* ``end(ctx)``    after the parameters moved.

A rule sees the step through its ``StepContext`` only (never the optimizer): the gradients,
the objective gradient ``ctx.objective`` (``maximize`` and coupled L2 applied), the
directions, the partitions (``ctx.partition``, others by ``ctx.partition_at``), the group
clock ``ctx.step``, whether this is a curvature step (``ctx.curvature``), the per-block state,
the closure / loss / step inputs, and ``ctx.workspace``: what the rules of one optimizer share
across groups and steps (what ``opt.backward`` kept, per-optimizer caches), freed with it.

Rule state lives in the optimizer state of the block's owner parameter under
``"<rule>.<field>"`` keys, as tensors of dtype ``promote(param dtype, float32)``; the current
multiplier is ``"<rule>.alpha"``; rejected estimates are counted in ``"<rule>.rejected"``
(``Rule.reject``). A rule with ``clock = True`` has its group clock kept by the optimizer in
the group's first parameter as ``"<rule>.step"`` (an int: steps taken, a step skipped for a
non-finite gradient not counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from ..blocks import GRANULARITIES, BlockSet, Partition
from ..hyper import Hyper

__all__ = ["Rule", "StepContext", "Workspace"]


class _Objective(Protocol):
    """What the context needs of a direction: its objective gradient (``lrfree.directions``
    implements it; the rules never import the directions)."""

    decoupled_decay: bool

    def objective_grads(
        self, params: list[Tensor], grads: list[Tensor], group: dict[str, Any], foreach: bool
    ) -> list[Tensor]: ...


@dataclass(eq=False)
class Workspace:
    """What the rules of one optimizer share across its param groups and steps; built once
    per optimizer (``Composed``) and freed with it.

    * ``state``: the optimizer's per-parameter state (read through ``StepContext.state``);
    * ``groups``: the param groups (read only: a rule whose numbers span groups, such as LW's
      block count ``L``, reads the others here);
    * ``partition(group_index, blocks)``: the cached block partition of a group at a
      granularity (``None``: the group's own);
    * ``replica_mean(values)``: ``values`` averaged over the data-parallel replicas (one
      all-reduce; the values themselves without a process group) and ``replica_group()``;
    * ``fed``: what ``opt.backward(loss, outputs, ...)`` kept for the next ``step()`` (the
      outputs, a rule's graph under ``"graph"``, step inputs); cleared when the step ends;
    * ``cache``: per-optimizer caches (index tensors, one-off checks), never per process.
    """

    state: Any
    groups: list[dict[str, Any]]
    partition: Callable[[int, str | None], Partition]
    replica_mean: Callable[[Sequence[Tensor]], list[Tensor]]
    replica_group: Callable[[], Any]
    fed: dict[str, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)


@dataclass(eq=False)
class StepContext:
    """What a rule sees of one parameter group during one ``step()``.

    Lists are indexed like ``group["params"]``; entries of parameters without a gradient
    this step are ``None``; ``active`` lists the indices with one. ``partition`` holds only
    the block sets with an active member. ``step``: the group clock, this step's number from 1
    (rules with ``clock = True``; 0 otherwise). ``curvature``: whether this step estimates
    curvature (``Rule.curvature_due``). ``decoupled_wd``: the weight decay applied to the
    parameters themselves (AdamW), so the step moves along ``d + decoupled_wd * p``; ``l2``:
    the coupled weight decay, an L2 term of the objective (already in ``objective``).
    ``scratch``: this group's per-step scratch (between ``begin``, ``rates`` and ``end``).
    """

    group: dict[str, Any]
    group_index: int
    params: list[Tensor]
    grads: list[Tensor | None]
    active: list[int]
    partition: Partition
    inputs: dict[str, Any]
    closure: Callable[[], Any] | None
    loss: Any
    workspace: Workspace
    direction: _Objective
    step: int = 0
    curvature: bool = False
    directions: list[Tensor | None] = field(default_factory=list)
    foreach: bool = False  # multi-tensor fast paths (set by Composed; same device and dtype)
    scratch: dict[str, Any] = field(default_factory=dict)
    _objective: list[Tensor | None] | None = None

    @property
    def lr(self) -> float:
        return self.group["lr"]

    @property
    def decoupled_wd(self) -> float:
        return self.group.get("weight_decay", 0.0) if self.direction.decoupled_decay else 0.0

    @property
    def l2(self) -> float:
        return 0.0 if self.direction.decoupled_decay else self.group.get("weight_decay", 0.0)

    @property
    def objective(self) -> list[Tensor | None]:
        """``g``: the gradient of what the direction minimises, ``-grad`` under ``maximize``
        plus ``l2 * p`` (coupled weight decay), as the direction itself applies them.
        Computed once per step, on first use (multi-tensor kernels when ``foreach``)."""
        if self._objective is None:
            idx = self.active
            gs = self.direction.objective_grads(
                [self.params[i] for i in idx],
                [self.grads[i] for i in idx],  # type: ignore[misc]
                self.group,
                self.foreach,
            )
            out: list[Tensor | None] = [None] * len(self.params)
            for i, g in zip(idx, gs):
                out[i] = g
            self._objective = out
        return self._objective

    @property
    def fed(self) -> dict[str, Any]:
        """What ``opt.backward`` kept for this step (``Workspace.fed``)."""
        return self.workspace.fed

    def partition_at(self, blocks: str) -> Partition:
        """This group's partition at another granularity (all its parameters, cached by the
        optimizer; ``restrict`` it to the active ones where needed)."""
        return self.workspace.partition(self.group_index, blocks)

    def state(self, i: int) -> dict[str, Any]:
        return self.workspace.state[self.params[i]]

    def block_state(self, s: BlockSet) -> dict[str, Any]:
        return self.workspace.state[self.params[s.owner]]


class Rule:
    """Base class of step-size rules. Subclasses set ``name`` and ``hyper`` and override hooks.

    ``default_lr``: the ``lr`` a named optimizer uses by default for this rule (rules whose rate
    is absolute, such as LW or ADLER, use 1.0); ``None`` takes the direction's default.
    ``step_inputs``: keyword arguments ``step()`` (and ``opt.backward``) accept for this rule.
    ``clock``: the optimizer keeps this rule's group clock (``ctx.step``, ``"<rule>.step"``).
    ``feed``: what ``opt.backward(loss, outputs)`` does on a curvature step (``curvature_due``):
    ``"graph"``, ``loss.backward(create_graph=True)``; ``"outputs"``, ``retain_graph=True``
    and the outputs kept for ``step``; ``"linear"``, the rule's own ``linear_backward``;
    ``None``: the rule needs no curvature (``opt.backward`` is ``loss.backward()``).

    Capabilities, declared as data (the test suite reads them instead of naming rules; a
    rule that declares nothing gets the defaults below):

    * ``supported_blocks``: the granularities ``check`` accepts (default: all of them);
    * ``supports_maximize``: whether ``maximize=True`` is accepted (default True);
    * ``fuzz_examples``: the values ``tests/test_fuzz.py`` draws each hyperparameter from, one
      entry per example; a tuple key draws several hyperparameters jointly (e.g. CAM-HD's
      ``("levels", "blocks")``, where ``blocks`` must be ``levels[0]``). Rule hyperparameters
      not listed keep their defaults; a listed direction hyperparameter (``weight_decay``)
      replaces the test's own draw; ``blocks`` not listed is drawn from ``supported_blocks``;
    * ``fuzz_grad_exponent``: the largest ``e`` of the gradient scales ``10^e`` the fuzz test
      feeds below float64 (default 30: any scale a float32 gradient holds);
    * ``unbounded_rate``: the rate may grow without bound on an objective with no optimum, so
      the iterates may reach +-inf in float range (never NaN); default False (they stay
      finite);
    * ``collectives(group, step, sharded=...)``: the ``all_reduce`` calls a step makes under
      data parallelism (``tests/test_distributed.py`` counts them);
    * ``sharded_error(group)``: the message a configuration raises with sharded (FSDP2)
      parameters, or ``None`` when it runs there.
    """

    name: ClassVar[str]
    hyper: ClassVar[dict[str, Hyper]] = {}
    default_lr: ClassVar[float | None] = None
    step_inputs: ClassVar[tuple[str, ...]] = ()
    clock: ClassVar[bool] = False
    supported_blocks: ClassVar[tuple[str, ...]] = GRANULARITIES
    supports_maximize: ClassVar[bool] = True
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {}
    fuzz_grad_exponent: ClassVar[int] = 30
    unbounded_rate: ClassVar[bool] = False

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
        self.reject(ctx, s, good)
        return good

    def reject(self, ctx: StepContext, s: BlockSet, good: Tensor) -> None:
        """Count the entries of ``good`` that are False in the block's ``"<rule>.rejected"``
        (the one counter of rejected estimates of every rule; no host sync)."""
        rejected = self.ensure(ctx, s, "rejected", 0.0)
        rejected.add_((~good).to(rejected.dtype))

    # ------------------------------------------------------------------- hooks
    def check(self, group: dict[str, Any], owner: str) -> None:
        """Cross-hyperparameter checks on a (validated) parameter group."""

    def begin(self, ctx: StepContext) -> None:
        """Before anything of the step changes (every group's ``begin`` runs before any
        group's directions): checks that must leave the optimizer untouched raise here."""

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

    def feed(self, group: dict[str, Any]) -> str | None:
        """What ``opt.backward`` must keep on this group's curvature steps (class docstring)."""
        return None

    def curvature_due(self, group: dict[str, Any], step: int) -> bool:
        """Whether the step after ``step`` steps of the group clock estimates curvature (read
        for rules with ``clock = True``, whose clock the optimizer keeps)."""
        return False

    packed_reductions: ClassVar[bool] = False
    """Under FSDP2, every block reduction of a step goes in one packed all-reduce
    (``collectives``)."""

    def collectives(
        self, group: dict[str, Any], step: int, *, sharded: bool
    ) -> frozenset[int] | None:
        """The allowed numbers of ``torch.distributed.all_reduce`` calls the rule makes in
        the step after ``step`` steps of the group (from 0), under DDP (``sharded=False``: the
        gradients arrive averaged) or FSDP2 (``sharded=True``: block reductions of sharded
        tensors complete across ranks); ``None``: not fixed. Default: none under DDP (a rule
        that never calls ``Workspace.replica_mean``), not fixed under FSDP2; a rule with
        ``packed_reductions`` makes one packed call per step under FSDP2 (none on the first
        step, which has nothing to reduce yet, where it may make one)."""
        if not sharded:
            return frozenset({0})
        if self.packed_reductions:
            return frozenset({0, 1}) if step == 0 else frozenset({1})
        return None

    def sharded_error(self, group: dict[str, Any]) -> str | None:
        """The start of the ``NotImplementedError`` this group's configuration raises with
        sharded (FSDP2 / DTensor) parameters; ``None``: supported (the default)."""
        return None

    def linear_backward(self, loss: Tensor, outputs: Tensor, params: list[Tensor]) -> Any:
        """``feed() == "linear"``: accumulate ``d loss / d p`` into ``p.grad`` and return what
        the step needs (kept in ``Workspace.fed["graph"]``)."""
        raise NotImplementedError(f"{self!r} has no linear_backward")

    def __repr__(self) -> str:
        return f"<rule {self.name!r}>"
