"""Step-size rules by name.

A new rule: a module in this package whose ``Rule`` subclass is added to ``RULES`` below
(one line), plus its declared hyperparameters, which the test suite reads.
"""

from __future__ import annotations

from .base import Rule, StepContext, Workspace
from .constant import Constant

__all__ = ["RULES", "Rule", "StepContext", "Workspace", "get_rule", "register_rule"]

RULES: dict[str, Rule] = {}


def register_rule(rule: Rule) -> Rule:
    """Add a rule instance to the registry (its ``name`` must be new)."""
    if rule.name in RULES:
        raise ValueError(f"rule {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


def get_rule(name: str) -> Rule:
    if not isinstance(name, str) or name not in RULES:
        raise ValueError(f"Invalid rule: {name!r} (expected one of {sorted(RULES)})")
    return RULES[name]


register_rule(Constant())

from .layerwise import Layerwise  # noqa: E402

register_rule(Layerwise())

from .hypergradient import CAMHD, Hypergradient  # noqa: E402

register_rule(Hypergradient())
register_rule(CAMHD())

from .tlr import TLR, HypergradientWindow  # noqa: E402

register_rule(TLR())
register_rule(HypergradientWindow())

from .adler import Adler  # noqa: E402

register_rule(Adler())

from .lipschitz import Lipschitz, LipschitzU  # noqa: E402

register_rule(Lipschitz())
register_rule(LipschitzU())

from .distance import Distance, DistanceEstimate  # noqa: E402

register_rule(Distance())
register_rule(DistanceEstimate())
