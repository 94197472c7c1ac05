"""Presets: every named optimizer has the library defaults and the paper's settings."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

import lrfree
from lrfree.presets import PRESET_NAMES, Named, defaults_of, preset_table

NAMED = [
    getattr(lrfree, n)
    for n in lrfree.__all__
    if isinstance(getattr(lrfree, n), type) and issubclass(getattr(lrfree, n), Named)
]
REQUIRED = {"SGDTLR": {"steps_per_epoch": 10}, "AdamTLR": {"steps_per_epoch": 10}}


def _build(cls, **kw):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return cls(model.named_parameters(), **{**REQUIRED.get(cls.__name__, {}), **kw})


def test_every_public_optimizer_class_is_named():
    assert len(NAMED) == 17
    assert {c.__name__ for c in NAMED} >= {"SGDLW", "AdamTLR", "ADLER", "AdamCAMHD", "RMSLipU"}


@pytest.mark.parametrize("cls", NAMED, ids=lambda c: c.__name__)
def test_paper_preset_fields_are_signature_arguments(cls):
    params = inspect.signature(cls.__init__).parameters
    assert params["preset"].default == "default"
    assert params["preset"].kind is inspect.Parameter.KEYWORD_ONLY
    paper = cls.PRESETS["paper"]
    assert paper, f"{cls.__name__} has an empty paper preset"
    missing = sorted(set(paper) - set(params))
    assert not missing, f"{cls.__name__}: paper preset fields not in the signature: {missing}"


@pytest.mark.parametrize("cls", NAMED, ids=lambda c: c.__name__)
def test_paper_preset_lands_in_param_groups(cls):
    opt = _build(cls, preset="paper")
    assert opt.preset == "paper"
    group = opt.param_groups[0]
    for field, value in cls.PRESETS["paper"].items():
        if field in group:  # e.g. momentum=0 selects the "sgd" direction, no momentum key
            assert group[field] == value, (cls.__name__, field)
    dflt = _build(cls)
    assert dflt.preset == "default"
    for field, value in defaults_of(cls).items():
        if field in dflt.param_groups[0] and field not in REQUIRED.get(cls.__name__, {}):
            assert dflt.param_groups[0][field] == value, (cls.__name__, field)


def test_explicit_argument_wins_over_the_preset():
    opt = _build(lrfree.ADLER, preset="paper", trust=3.0)
    assert opt.param_groups[0]["trust"] == 3.0
    opt = _build(lrfree.SGDLW, preset="paper", update_every=1)
    assert opt.param_groups[0]["update_every"] == 1
    assert opt.param_groups[0]["beta_t"] == lrfree.SGDLW.PRESETS["paper"]["beta_t"]


def test_subclasses_take_their_own_preset():
    # SGDNHD, AdaLipU... inherit or override PRESETS; the preset of type(self) applies
    for cls in (lrfree.AdaLipU, lrfree.RMSLipU, lrfree.AdamLipU):
        opt = _build(cls, preset="paper")
        for field, value in cls.PRESETS["paper"].items():
            if field in opt.param_groups[0]:
                assert opt.param_groups[0][field] == value


@pytest.mark.parametrize("bad", ["Paper", "", 1, None])
def test_invalid_preset_raises(bad):
    with pytest.raises(ValueError, match=r"Invalid preset: .* \(expected one of \['default', "):
        _build(lrfree.ADLER, preset=bad)


def test_preset_shows_in_repr_and_survives_state_dict():
    paper = _build(lrfree.ADLER, preset="paper")
    assert "preset='paper'" in repr(paper)
    assert "preset" not in repr(_build(lrfree.ADLER))
    other = _build(lrfree.ADLER)
    other.load_state_dict(paper.state_dict())  # hyperparameters travel with the groups
    assert other.param_groups[0]["trust"] == paper.param_groups[0]["trust"]


def test_preset_names():
    assert PRESET_NAMES == ("default", "paper")


def test_docs_table_is_generated_from_the_code():
    """docs/presets.md holds preset_table() verbatim between its markers."""
    text = (Path(__file__).parent.parent / "docs" / "presets.md").read_text()
    m = re.search(r"<!-- preset-table -->\n(.*?)\n<!-- /preset-table -->", text, re.S)
    assert m, "docs/presets.md lacks the preset-table markers"
    assert m.group(1).strip() == preset_table().strip(), (
        "docs/presets.md is stale: python -c 'from lrfree.presets import preset_table; "
        "print(preset_table())'"
    )
