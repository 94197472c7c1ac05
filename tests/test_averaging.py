"""Schedule-free averaging (``averaging="schedule_free"``, lrfree.averaging): oracles and modes.

The oracle is ``schedulefree.AdamWScheduleFree`` itself (the peers extra): with the AdamW
direction at ``betas=(0, beta2)``, the constant rule and ``sf_beta = beta1`` the composed
optimizer must follow it step for step, in training and in eval mode.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lrfree


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (32,), generator=g
    )


def _step(model, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_matches_schedulefree_adamw_step_for_step(foreach, wd):
    schedulefree = pytest.importorskip("schedulefree")
    x, y = _data()
    m1, m2 = _net().double(), _net().double()
    o1 = lrfree.Composed(
        m1.named_parameters(),
        direction="adamw",
        betas=(0.0, 0.999),
        lr=2.5e-3,
        weight_decay=wd,
        averaging="schedule_free",
        sf_beta=0.9,
        foreach=foreach,
    )
    o2 = schedulefree.AdamWScheduleFree(m2.parameters(), lr=2.5e-3, weight_decay=wd)
    o2.train()
    for _ in range(25):
        _step(m1, o1, x, y)
        _step(m2, o2, x, y)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(o1.state[p1]["z"], o2.state[p2]["z"], rtol=0, atol=1e-13)
    o1.eval()
    o2.eval()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_eval_then_train_restores_the_gradient_point_and_step_in_eval_mode_raises():
    x, y = _data()
    model = _net().double()
    opt = lrfree.Auto(model.named_parameters(), d0=1e-3)
    for _ in range(10):
        _step(model, opt, x, y)
    ys = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    xs = [p.detach().clone() for p in model.parameters()]
    for p, y_, x_ in zip(model.parameters(), ys, xs):  # x = (y - (1 - b) z) / b
        z = opt.state[p]["z"]
        torch.testing.assert_close(x_, (y_ - 0.1 * z) / 0.9, rtol=0, atol=1e-14)
    opt.eval()  # idempotent
    assert all(torch.equal(p, x_) for p, x_ in zip(model.parameters(), xs))
    with pytest.raises(RuntimeError, match=r"step\(\) after opt\.eval\(\).*call opt\.train\(\)"):
        _step(model, opt, x, y)
    opt.train()
    for p, y_ in zip(model.parameters(), ys):
        torch.testing.assert_close(p.detach(), y_, rtol=0, atol=1e-14)
    _step(model, opt, x, y)  # trains again


def test_train_and_eval_are_no_ops_without_averaging():
    x, y = _data()
    model = _net().double()
    opt = lrfree.Composed(model.named_parameters(), direction="adamw", lr=1e-2)
    _step(model, opt, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    opt.train()
    opt.eval()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    _step(model, opt, x, y)  # no mode to leave


def test_checkpoint_in_eval_mode_resumes_in_eval_mode():
    x, y = _data()
    model = _net().double()
    opt = lrfree.Auto(model.named_parameters(), d0=1e-3)
    for _ in range(5):
        _step(model, opt, x, y)
    opt.eval()
    sd = copy.deepcopy(opt.state_dict())
    model2 = copy.deepcopy(model)
    opt2 = lrfree.Auto(model2.named_parameters(), d0=1e-3)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["train_mode"] is False
    opt.train()
    opt2.train()
    for _ in range(3):
        _step(model, opt, x, y)
        _step(model2, opt2, x, y)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_per_filter_rates_average_per_filter():
    """With per-filter rates every filter keeps its own weight sum (shaped like its rate)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2).double()
    opt = lrfree.Composed(
        lin.named_parameters(),
        direction="sgd",
        rule="dog",
        blocks="filter",
        averaging="schedule_free",
    )
    x = torch.randn(16, 3, dtype=torch.float64)
    for _ in range(4):
        opt.zero_grad()
        lin(x).pow(2).sum().backward()
        opt.step()
    st = opt.state[lin.weight]
    assert st["sf.weight_sum"].shape == (2, 1) and st["z"].shape == lin.weight.shape
    assert (st["sf.weight_sum"] > 0).all()


def test_zero_learning_rate_moves_nothing_even_while_averaging():
    x, y = _data()
    model = _net().double()
    opt = lrfree.Composed(
        model.named_parameters(),
        direction="adamw",
        betas=(0.0, 0.999),
        lr=1e-2,
        averaging="schedule_free",
    )
    for _ in range(3):
        _step(model, opt, x, y)
    opt.param_groups[0]["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    zs = [opt.state[p]["z"].clone() for p in model.parameters()]
    _step(model, opt, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(opt.state[p]["z"], z) for p, z in zip(model.parameters(), zs))


def test_bf16_parameters_average_in_float32_and_round_once():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).to(torch.bfloat16)
    opt = lrfree.Auto(model.named_parameters(), d0=1e-3)
    x = torch.randn(8, 4, dtype=torch.bfloat16)
    for _ in range(5):
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()
    st = opt.state[model.weight]
    assert st["z"].dtype == torch.bfloat16 and st["sf.weight_sum"].dtype == torch.float32
    assert st["dadapt.x0"].dtype == torch.float32
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())
