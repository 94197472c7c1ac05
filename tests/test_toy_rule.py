"""The toy rule of ``docs/writing-a-rule.md`` joins every generic check through three places:
its module (``tests/toy_rule.py``), its spec (``tests/specs/toy.py``) and the registry line in
that spec. Nothing else in the code names it: the fuzz and distributed tests read the rule's
declarations (``lrfree.rules.Rule``), the generic suite reads ``tests/specs/``."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import test_distributed
import test_fuzz
import toy_rule
from lrfree.rules import RULES
from optim_db import OPTIM_DB, make_problem

ROOT = Path(__file__).resolve().parents[1]
_NAMED = re.compile(r"\btoy_rule\b|[\"']toy[\"']|\bToy\b")


def _toy_specs() -> list[str]:
    return [s.name for s in OPTIM_DB if s.build(make_problem()[0]).param_groups[0]["rule"] == "toy"]


def test_toy_rule_footprint_is_its_module_and_its_spec():
    code = [p for d in ("src", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    naming = {
        p.relative_to(ROOT).as_posix()
        for p in code
        if p.name != Path(__file__).name and _NAMED.search(p.read_text(encoding="utf-8"))
    }
    assert naming == {"tests/toy_rule.py", "tests/specs/toy.py"}, sorted(naming)


def test_toy_rule_joins_every_generic_check():
    assert type(RULES["toy"]).__module__ == "toy_rule"  # registered by its spec, not lrfree
    specs = _toy_specs()
    assert specs  # the generic suite (test_generic.py) runs over OPTIM_DB
    assert "toy" in test_fuzz.FUZZ_RULES
    assert set(specs) <= set(test_distributed.DDP_NAMES)
    assert set(specs) & set(test_distributed.FSDP_NAMES)


def test_toy_rule_doctest():  # the example of its module docstring (and of the docs page)
    assert doctest.testmod(toy_rule).failed == 0
