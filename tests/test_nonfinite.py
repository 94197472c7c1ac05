"""The non-finite policy (hyperparameter ``nonfinite``) and the rejection of rate statistics."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import lrfree
from lrfree.blocks import BlockSet
from lrfree.rules.tlr import TLR
from optim_db import make_problem
from robust_recipes import EXPORTED

NAMES = sorted(EXPORTED)
SKIPPED = "nonfinite.skipped"


def _without_counter(sd):
    sd = copy.deepcopy(sd)
    for st in sd["state"].values():
        st.pop(SKIPPED, None)
    return sd


def _assert_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


def _poisoned_step(spec, model, opt, x, y, bad: float):
    """One step of the optimizer's own protocol with one non-finite gradient entry."""
    handle = model[0].weight.register_hook(lambda g: g.index_put((torch.tensor([0]),), g[0] * bad))
    try:
        return spec.run_step(model, opt, x, y)
    finally:
        handle.remove()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_skip_leaves_parameters_and_all_state_unchanged(name, bad):
    spec = EXPORTED[name]
    model, x, y = make_problem()
    opt = spec.build(model)
    for _ in range(3):
        spec.run_step(model, opt, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    with pytest.warns(RuntimeWarning, match=r"non-finite gradient .* in \['0\.weight'\]"):
        _poisoned_step(spec, model, opt, x, y, bad)
    for a, b in zip(params, model.parameters()):
        assert torch.equal(a, b)
    _assert_equal(_without_counter(opt.state_dict()), _without_counter(state), name)
    assert opt.skipped_steps == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per optimizer
        _poisoned_step(spec, model, opt, x, y, bad)
    assert opt.skipped_steps == 2
    # the counter is state: it survives a save / load
    opt2 = spec.build(copy.deepcopy(model))
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.skipped_steps == 2
    # and training goes on: the next finite step moves the parameters
    spec.run_step(model, opt, x, y)
    assert any(not torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.skipped_steps == 2


@pytest.mark.parametrize("name", ["AdamWLW", "SGDTLR", "ADLER", "AdaLip"])
def test_raise_names_the_parameters_and_changes_nothing(name):
    spec = EXPORTED[name]
    model, x, y = make_problem()
    opt = spec.build(model)
    for g in opt.param_groups:
        g["nonfinite"] = "raise"
    spec.run_step(model, opt, x, y)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    with pytest.raises(FloatingPointError, match=r"\['0\.weight'\] \(nonfinite='raise'\)"):
        _poisoned_step(spec, model, opt, x, y, float("nan"))
    for a, b in zip(params, model.parameters()):
        assert torch.equal(a, b)
    _assert_equal(opt.state_dict(), state, name)
    assert opt.skipped_steps == 0


def test_off_does_not_check():
    model, x, y = make_problem()
    opt = lrfree.Composed(model.named_parameters(), direction="sgd", lr=0.1, nonfinite="off")
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    model[0].weight.grad[0, 0] = float("nan")
    opt.step()
    assert torch.isnan(model[0].weight[0, 0])  # torch's behaviour: nothing stops it
    assert opt.skipped_steps == 0


def test_groups_with_off_are_not_checked_and_skip_is_optimizer_wide():
    model, x, y = make_problem()
    groups = [
        {"params": list(model[0].named_parameters(prefix="0")), "nonfinite": "off"},
        {"params": list(model[2].named_parameters(prefix="2"))},
    ]
    opt = lrfree.Composed(groups, direction="sgd", lr=0.1)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    model[2].bias.grad[0] = float("inf")  # a checked group: the whole step is skipped
    with pytest.warns(RuntimeWarning, match=r"\['2\.bias'\]"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model[2].bias.grad[0] = 0.0
    model[0].bias.grad[0] = float("nan")  # an unchecked group: goes through
    opt.step()
    assert torch.isnan(model[0].bias[0]) and opt.skipped_steps == 1


def test_invalid_policy_is_rejected():
    model, _, _ = make_problem()
    with pytest.raises(ValueError, match=r"Invalid nonfinite: 'ignore' \(expected one of"):
        lrfree.Composed(model.named_parameters(), nonfinite="ignore")
    with pytest.raises(TypeError, match=r"Invalid nonfinite: None"):
        lrfree.Composed(model.named_parameters(), nonfinite=None)
    opt = lrfree.Composed(model.named_parameters())
    opt.param_groups[0]["nonfinite"] = "sometimes"  # assigned behind the validator's back
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.raises(ValueError, match=r"Invalid nonfinite: 'sometimes'"):
        opt.step()


@pytest.mark.parametrize("name", ["SGDHD", "AdamTLR", "RMSLip", "Composed"])
def test_grad_scaler_skips_inf_steps_once_not_twice(name):
    spec = EXPORTED[name]
    model, x, y = make_problem()
    opt = spec.build(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100, growth_interval=1000)
    before = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # lrfree would warn on a skip
        opt.zero_grad()
        scaler.scale(1e10 * F.cross_entropy(model(x), y)).backward()  # inf in float32
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0**99  # the scaler saw the inf and skipped
    assert opt.skipped_steps == 0  # lrfree never saw the step: nothing counted twice
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    _assert_equal(opt.state_dict(), state, name)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(F.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    assert opt.skipped_steps == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------- rate statistics
class _Ctx:
    params = [torch.zeros(1)]

    def __init__(self):
        self.state = {}

    def block_state(self, s):
        return self.state


@pytest.mark.parametrize("positive", [True, False])
def test_accept_rejects_non_finite_and_non_positive_statistics(positive):
    ctx, s = _Ctx(), BlockSet("b", [0], (6,), "filter")
    stored = torch.full((6,), 3.0)
    new = torch.tensor([2.0, math.nan, math.inf, -math.inf, -1.0, 0.0])
    ok = (
        TLR().accept(ctx, s, stored, new)
        if positive
        else TLR().accept(ctx, s, stored, new, positive=False)
    )
    expected_ok = [True, False, False, False, False, not positive]
    assert ok.tolist() == expected_ok
    assert stored.tolist() == [2.0, 3.0, 3.0, 3.0, 3.0, 3.0 if positive else 0.0]
    assert ctx.state["tlr.rejected"].tolist() == [float(not k) for k in expected_ok]
    mask = torch.tensor([False, True, True, True, True, True])
    TLR().accept(ctx, s, stored, torch.full((6,), 5.0), mask)  # the caller's own test
    assert stored[0] == 2.0 and ctx.state["tlr.rejected"][0] == 1.0


def test_tlr_rejects_a_nan_factor_and_an_overflowing_rate():
    x = torch.nn.Parameter(torch.ones(3))
    opt = lrfree.SGDTLR([x], lr=0.1, update_every=1, preset="paper")  # K = 1, no alpha cap
    for _ in range(3):  # zero windows: den = 0, the factor is NaN -> rejected and counted
        x.grad = torch.zeros(3)
        opt.step()
    st = opt.state[x]
    assert float(st["tlr.alpha"]) == 1.0 and float(st["tlr.rejected"]) == 2.0
    st["tlr.alpha"].fill_(3e38)  # a factor > 1 now overflows float32
    for g in (torch.ones(3), 0.9 * torch.ones(3)):  # num > 0, den > 0: factor > 1
        x.grad = g
        opt.step()
    assert float(st["tlr.factor"]) > 1.0
    assert float(st["tlr.alpha"]) == pytest.approx(3e38) and float(st["tlr.rejected"]) == 4.0
    assert all(math.isfinite(v) for v in opt.effective_lr().values())


def test_adalip_rejects_a_zero_S():
    x = torch.nn.Parameter(torch.zeros(2))
    opt = lrfree.AdaLip([x], lr=0.1, gamma=0.0)
    for g in ([0.0, 0.0], [1.0, 1.0]):  # ||g_{t-1}|| = 0: r = 0, S would become 0
        x.grad = torch.tensor(g)
        opt.step()
    st = opt.state[x]
    assert float(st["lipschitz.S"]) == 1.0 and float(st["lipschitz.rejected"]) == 1.0
    assert opt.effective_lr()["param0"] > 0
