"""A toy step-size rule: the worked example of ``docs/writing-a-rule.md``.

Per block ``b``, with ``d_b`` the direction's entries in the block::

    alpha_b = 1 / (1 + c ||d_b||)

so the step ``lr alpha_b d_b`` has norm ``lr ||d_b|| / (1 + c ||d_b||) < lr / c``: a long
direction is damped, a short one passes almost unchanged. Where ``alpha_b`` is not finite
and positive (a NaN direction, as Adam's in float16 with ``eps`` below its resolution, or
``||d_b||^2`` overflowing) the previous rate is kept (``Rule.accept``). A test fixture, not a
library rule: ``tests/specs/toy.py`` registers it.

>>> import torch, lrfree
>>> from lrfree.rules import RULES, register_rule
>>> if "toy" not in RULES:  # what tests/specs/toy.py does
...     _ = register_rule(Toy())
>>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
>>> opt = lrfree.Composed([("m.w", w)], direction="sgd", rule="toy", lr=0.1, blocks="global")
>>> w.grad = torch.tensor([3.0, 4.0])  # d = g, ||d|| = 5: alpha = 1 / 6
>>> opt.step()
>>> round(opt.state[w]["toy.alpha"].item(), 6), round(opt.effective_lr()["global"], 6)
(0.166667, 0.016667)
>>> w.tolist()  # w - lr alpha d
[0.949999988079071, 0.9333333373069763]
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lrfree.hyper import Hyper, real
from lrfree.rules import Rule, StepContext


class Toy(Rule):
    """``alpha_b = 1 / (1 + c ||d_b||)`` per block (the module docstring)."""

    name = "toy"
    hyper: ClassVar[dict[str, Hyper]] = {
        "c": Hyper(1.0, real(0.0, lo_open=True), "damping of long directions"),
    }
    fuzz_examples: ClassVar[dict[str | tuple[str, ...], tuple[Any, ...]]] = {
        "c": (1e-3, 1.0, 1e3),
    }

    def collectives(
        self, group: dict[str, Any], step: int, *, sharded: bool
    ) -> frozenset[int] | None:
        """FSDP2: the block norms of the sharded directions complete in one all-reduce."""
        return frozenset({1 if sharded else 0})

    def rates(self, ctx: StepContext) -> list[Tensor]:
        sq = ctx.partition.sq_norm(ctx.directions, foreach=ctx.foreach)  # ||d_b||^2 per block
        out = []
        for s, sq_b in zip(ctx.partition.sets, sq):
            alpha = self.ensure(ctx, s, "alpha", 1.0)  # state key "toy.alpha"
            # stored where finite and > 0, else the previous rate kept and "toy.rejected" += 1
            self.accept(ctx, s, alpha, 1.0 / (1.0 + ctx.group["c"] * sq_b.sqrt()))
            out.append(alpha)
        return out
