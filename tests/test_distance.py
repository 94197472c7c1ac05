"""The DoG rule ("dog", lrfree.rules.distance): analytic checks and the authors' package as
the oracle (``dog-optimizer``, the peers extra: ``DoG`` is one global block, ``LDoG`` one
block per tensor)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import lrfree


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (32,), generator=g)


def _step(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize(("blocks", "cls"), [("global", "DoG"), ("tensor", "LDoG")])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_the_authors_dog_and_ldog(blocks, cls, foreach):
    dog = pytest.importorskip("dog")
    x, y = _data()
    m1, m2 = _net(), _net()
    o1 = lrfree.Composed(
        m1.named_parameters(),
        direction="sgd",
        rule="dog",
        blocks=blocks,
        reps_rel=1e-4,
        foreach=foreach,
    )
    o2 = getattr(dog, cls)(m2.parameters(), reps_rel=1e-4, eps=0.0)
    for _ in range(30):
        _step(m1, o1, x, y)
        _step(m2, o2, x, y)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("blocks", ["global", "layer", "tensor", "filter"])
@pytest.mark.parametrize("direction", ["sgd", "adamw"])
def test_the_first_step_moves_each_block_by_exactly_r_eps(blocks, direction):
    x, y = _data()
    model = _net()
    x0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = lrfree.Composed(
        model.named_parameters(),
        direction=direction,
        rule="dog",
        blocks=blocks,
        reps_rel=1e-3,
        weight_decay=0.0,
    )
    _step(model, opt, x, y)
    part = opt.partition(0)
    params = dict(model.named_parameters())
    names = list(params)

    def per_block(t, s):  # the block's squared norm: per output unit for filter blocks
        return t.pow(2).reshape(t.shape[0], -1).sum(1) if s.shape else t.pow(2).sum()

    for s in part.sets:
        moved = sum(per_block(params[names[i]] - x0[names[i]], s) for i in s.members).sqrt()
        norm0 = sum(per_block(x0[names[i]], s) for i in s.members).sqrt()
        torch.testing.assert_close(moved, 1e-3 * (1 + norm0), rtol=1e-10, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    reps=st.floats(1e-6, 1e-1),
    seed=st.integers(0, 1000),
    steps=st.integers(2, 12),
    blocks=st.sampled_from(["global", "layer", "tensor"]),
)
def test_rbar_never_decreases_and_alpha_is_rbar_over_root_g(reps, seed, steps, blocks):
    x, y = _data()
    model = _net(seed)
    opt = lrfree.Composed(
        model.named_parameters(), direction="adamw", rule="dog", blocks=blocks, reps_rel=reps
    )
    prev = None
    for _ in range(steps):
        _step(model, opt, x, y)
        part = opt.partition(0)
        rbars = []
        for s in part.sets:
            bs = opt.state[model_params(model)[s.owner]]
            rbar, G, alpha = bs["dog.rbar"], bs["dog.G"], bs["dog.alpha"]
            assert G > 0 and math.isfinite(float(alpha))
            torch.testing.assert_close(alpha, rbar / G.sqrt(), rtol=1e-12, atol=0)
            rbars.append(float(rbar))
        if prev is not None:
            assert all(b >= a for a, b in zip(prev, rbars))
        prev = rbars


def model_params(model):
    return list(model.parameters())


def test_a_block_without_gradient_joins_later_with_its_own_x0():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3).double(), torch.nn.Linear(3, 1).double()
    params = [
        ("a.weight", a.weight),
        ("a.bias", a.bias),
        ("b.weight", b.weight),
        ("b.bias", b.bias),
    ]
    opt = lrfree.Composed(params, direction="sgd", rule="dog", blocks="layer", reps_rel=1e-3)
    x = torch.randn(8, 3, dtype=torch.float64)
    opt.zero_grad()
    a(x).pow(2).sum().backward()
    opt.step()  # b has no gradient: no state, untouched
    assert "dog.x0" not in opt.state[b.weight]
    w_b = b.weight.detach().clone()
    opt.zero_grad()
    b(a(x)).pow(2).sum().backward()
    opt.step()
    torch.testing.assert_close(opt.state[b.weight]["dog.x0"], w_b, rtol=0, atol=0)


def test_auto_uses_three_parameter_sized_buffers_and_needs_no_names():
    import warnings

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "blocks needs names" fallback warning
        opt = lrfree.Auto(model.parameters())
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for p in model.parameters():
        big = [k for k, v in opt.state[p].items() if torch.is_tensor(v) and v.shape == p.shape]
        assert sorted(big) == ["dadapt.x0", "exp_avg_sq", "z"], big
    assert set(opt.effective_lr()) == {"param0", "param1", "param2", "param3"}


# --- the distance estimate ("dadapt") ---------------------------------------------------


def _dadapt_oracle(model, x, y, steps, d0, lr=1.0):
    """The rule's formulas written out for one global block and plain SGD steps."""
    params = list(model.parameters())
    x0 = [p.detach().clone() for p in params]
    n = sum(p.numel() for p in params)
    num, alpha = 0.0, d0
    for _ in range(steps):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        diffs = [p.detach() - q for p, q in zip(params, x0)]
        dist = math.sqrt(sum(float(d.pow(2).sum()) for d in diffs))
        if dist > 0:
            alpha = max(alpha, num / (dist * math.sqrt(n)))
        num += lr * alpha * -sum(float((p.grad * d).sum()) for p, d in zip(params, diffs))
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr * alpha)
    return alpha


@pytest.mark.parametrize("foreach", [False, True])
def test_dadapt_matches_its_formulas_written_out(foreach):
    x, y = _data()
    m1, m2 = _net(), _net()
    opt = lrfree.Composed(
        m1.named_parameters(),
        direction="sgd",
        rule="dadapt",
        blocks="global",
        d0=1e-3,
        lr=0.5,
        foreach=foreach,
    )
    for _ in range(15):
        _step(m1, opt, x, y)
    alpha = _dadapt_oracle(m2, x, y, 15, d0=1e-3, lr=0.5)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert float(opt.state[next(m1.parameters())]["dadapt.alpha"]) == pytest.approx(alpha)


def test_dadapt_grows_from_d0_along_a_normalised_direction():
    """The warm-up: along Adam's normalised direction the estimate grows geometrically while
    the iterates move away from x_0 (with raw SGD gradients the per-entry scale is the
    gradient's RMS, and it stays near d0: the rule is meant for normalised directions)."""
    x, y = _data()
    model = _net()
    opt = lrfree.Composed(
        model.named_parameters(),
        direction="adamw",
        betas=(0.0, 0.999),
        rule="dadapt",
        blocks="global",
        d0=1e-6,
        weight_decay=0.0,
    )
    for _ in range(40):
        _step(model, opt, x, y)
    assert opt.effective_lr()["global"] > 1e-3


@settings(max_examples=20, deadline=None)
@given(
    d0=st.floats(1e-7, 1e-2),
    seed=st.integers(0, 1000),
    blocks=st.sampled_from(["global", "layer", "tensor", "filter"]),
    averaging=st.sampled_from(["none", "schedule_free"]),
)
def test_dadapt_rate_starts_at_d0_and_never_decreases(d0, seed, blocks, averaging):
    x, y = _data()
    model = _net(seed)
    opt = lrfree.Composed(
        model.named_parameters(),
        direction="adamw",
        betas=(0.0, 0.999),
        rule="dadapt",
        blocks=blocks,
        d0=d0,
        averaging=averaging,
    )
    prev = None
    for t in range(8):
        _step(model, opt, x, y)
        rates = opt.effective_lr()
        if t == 0:
            assert all(v == pytest.approx(d0) for v in rates.values())
        else:
            assert all(rates[k] >= prev[k] for k in rates)
        assert all(math.isfinite(v) and v > 0 for v in rates.values())
        prev = rates
