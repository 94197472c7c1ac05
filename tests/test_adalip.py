"""The AdaLip family (rules "lipschitz" / "lipschitz-u"): Lemma 2's bounds, Lemma 5 with the
theoretical c_t, the quadratic closed form, parity with torch at gamma = 1, the -U estimate,
and the zero / NaN guards."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lrfree

D = torch.float64


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def _state(opt, p, field, rule="lipschitz"):
    return opt.state[p][f"{rule}.{field}"]


def _vector(draw_dir, norm):
    v = torch.tensor(draw_dir, dtype=D)
    return v / v.norm() * norm


_DIRS = st.lists(st.floats(-1, 1).filter(lambda v: abs(v) > 1e-3), min_size=4, max_size=4)


# --------------------------------------------------------------------- Lemma 2
@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(_DIRS, st.floats(0.0, 1.0)), min_size=2, max_size=15),
    st.floats(0.0, 0.99),
    st.sampled_from([1e-8, 1e-3, 0.5]),
    st.sampled_from(["constant", "theoretical"]),
)
def test_lemma2_bounds_on_S(seq, gamma, c, c_schedule):
    m_min, g_max = 0.1, 10.0
    grads = [_vector(d, m_min + s * (g_max - m_min)) for d, s in seq]
    x = torch.nn.Parameter(torch.zeros(4, dtype=D))
    opt = lrfree.AdaLip([x], lr=0.1, gamma=gamma, c=c, c_schedule=c_schedule, schedule="sqrt")
    for g in grads:
        _step(opt, [x], [g])
        S = float(_state(opt, x, "S"))
        c_max = float(_state(opt, x, "c"))  # c_t is non-decreasing: its current value is the max
        lower = m_min * (1 - gamma) / (2 * g_max + c_max)
        upper = 1 + g_max / c  # min_t c_t = c
        assert lower * (1 - 1e-12) <= S <= upper * (1 + 1e-12)


# --------------------------------------------------------------------- Lemma 5
@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(_DIRS, st.floats(0.0, 1.0)), min_size=2, max_size=15),
    st.floats(0.0, 0.99),
    st.sampled_from(["sqrt", "constant"]),
    st.sampled_from(["lipschitz", "lipschitz-u"]),
)
def test_lemma5_theoretical_c_makes_the_rate_non_increasing(seq, gamma, schedule, rule):
    grads = [_vector(d, 0.1 + 5 * s) for d, s in seq]
    x = torch.nn.Parameter(torch.zeros(4, dtype=D))
    opt = lrfree.Composed(
        [x], direction="sgd", rule=rule, blocks="tensor", lr=0.1, gamma=gamma,
        schedule=schedule, c_schedule="theoretical",
    )  # fmt: skip
    rates, cs = [], []
    for g in grads:
        _step(opt, [x], [g])
        rates.append(opt.effective_lr()["param0"])
        cs.append(float(_state(opt, x, "c", rule)))
    for a, b in itertools.pairwise(rates):
        assert b <= a * (1 + 1e-9)
    assert all(b >= a for a, b in itertools.pairwise(cs))  # non-decreasing c_t
    assert cs[0] == 1e-8


def test_constant_c_can_increase_the_rate():
    """The contrast to Lemma 5: with constant c, a flat stretch raises the rate."""
    x = torch.nn.Parameter(torch.zeros(2, dtype=D))
    opt = lrfree.AdaLip([x], lr=0.1, schedule="sqrt")
    _step(opt, [x], [torch.tensor([1.0, 0.0], dtype=D)])
    _step(opt, [x], [torch.tensor([1.001, 0.0], dtype=D)])
    assert opt.effective_lr()["param0"] > 0.1


# ------------------------------------------------------------------ closed form
@pytest.mark.parametrize("lr", [1e-3, 0.05, 0.3])
def test_quadratic_eigenvector_estimate_is_one_over_lambda(lr):
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=D))
    lambdas = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0], dtype=D)
    a = q @ torch.diag(lambdas) @ q.T
    x = torch.nn.Parameter(3.0 * q[:, 2].clone())  # an eigenvector, lambda = 2
    opt = lrfree.AdaLip([x], lr=lr, gamma=0.0, c=0.0)
    for _ in range(2):
        _step(opt, [x], [a @ x.detach()])
    ratio = float(_state(opt, x, "ratio"))
    assert lr * ratio == pytest.approx(1 / 2.0, rel=1e-10)
    assert opt.effective_lr()["param0"] == pytest.approx(0.5, rel=1e-10)  # gamma=0: A = 1/lambda


def test_ema_and_sqrt_schedule_by_hand():
    x = torch.nn.Parameter(torch.zeros(2, dtype=D))
    opt = lrfree.AdaLip([x], lr=0.2, gamma=0.8, c=1e-8, schedule="sqrt")
    g1, g2, g3 = (torch.tensor(v, dtype=D) for v in ([3.0, 4.0], [0.0, 4.0], [0.0, 1.0]))
    _step(opt, [x], [g1])
    assert opt.effective_lr()["param0"] == pytest.approx(0.2)  # first step: the plain rate
    _step(opt, [x], [g2])
    s2 = 0.8 + 0.2 * 5.0 / (3.0 + 1e-8)
    assert float(_state(opt, x, "S")) == pytest.approx(s2, rel=1e-12)
    assert opt.effective_lr()["param0"] == pytest.approx(0.2 * s2 / math.sqrt(2), rel=1e-12)
    _step(opt, [x], [g3])
    s3 = 0.8 * s2 + 0.2 * 4.0 / (3.0 + 1e-8)
    assert opt.effective_lr()["param0"] == pytest.approx(0.2 * s3 / math.sqrt(3), rel=1e-12)


def test_u_variant_compares_applied_and_tentative_steps():
    x = torch.nn.Parameter(torch.zeros(2, dtype=D))
    lr, gamma = 0.1, 0.5
    opt = lrfree.AdaLipU([x], lr=lr, gamma=gamma, c=0.0, preset="paper")  # plain SGD
    g1, g2, g3 = (torch.tensor(v, dtype=D) for v in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]))
    _step(opt, [x], [g1])
    u1 = lr * g1  # applied at the plain rate
    _step(opt, [x], [g2])
    s2 = gamma + (1 - gamma) * float(u1.norm() / (lr * g2 - u1).norm())
    assert float(_state(opt, x, "S", "lipschitz-u")) == pytest.approx(s2, rel=1e-12)
    u2 = lr * s2 * g2  # applied at A_2
    torch.testing.assert_close(_state(opt, x, "prev", "lipschitz-u"), u2)
    _step(opt, [x], [g3])
    s3 = gamma * s2 + (1 - gamma) * float(u2.norm() / (lr * g3 - u2).norm())
    assert float(_state(opt, x, "S", "lipschitz-u")) == pytest.approx(s3, rel=1e-12)


def test_layer_blocks_pool_weight_and_bias():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = lrfree.AdaLip(model.named_parameters(), lr=0.1, blocks="layer")
    x = torch.randn(16, 3)
    grads = []
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model[0].parameters()])
        opt.step()
    prev = math.sqrt(sum(float(g.pow(2).sum()) for g in grads[0]))
    diff = math.sqrt(sum(float((b - a).pow(2).sum()) for a, b in zip(*grads)))
    expected = 0.8 + 0.2 * prev / (diff + 1e-8)
    assert float(_state(opt, model[0].weight, "S")) == pytest.approx(expected, rel=1e-5)
    assert set(opt.effective_lr()) == {"0", "2"}


# ---------------------------------------------------------------------- parity
_PARITY = [
    (lrfree.AdaLip, torch.optim.SGD, dict(lr=0.1, momentum=0.0)),
    (lrfree.AdaLip, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    (lrfree.RMSLip, torch.optim.RMSprop, dict(lr=0.01, weight_decay=1e-3)),
    (lrfree.AdamLip, torch.optim.Adam, dict(lr=0.01, weight_decay=1e-3)),
    (lrfree.AdaLipU, torch.optim.SGD, dict(lr=0.1, momentum=0.5)),
    (lrfree.RMSLipU, torch.optim.RMSprop, dict(lr=0.01, centered=True)),
    (lrfree.AdamLipU, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
]


@pytest.mark.parametrize(("ours", "ref", "kw"), _PARITY)
def test_gamma_one_is_exactly_the_torch_optimizer(ours, ref, kw):
    torch.manual_seed(0)
    m1 = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    m2 = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    m2.load_state_dict(m1.state_dict())
    o1 = ours(m1.named_parameters(), gamma=1.0, **kw)
    o2 = ref(m2.parameters(), foreach=False, **kw)
    x, y = torch.randn(32, 5), torch.randint(0, 2, (32,))
    for _ in range(8):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        if ref is torch.optim.SGD:
            assert torch.equal(a, b)
        else:  # the core's rate path rounds ``lr * alpha * d`` once more than torch's fused op
            torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-7)


# ---------------------------------------------------------------------- guards
def test_identical_gradients_keep_S():
    x = torch.nn.Parameter(torch.zeros(3))
    opt = lrfree.AdaLip([x], lr=0.1)
    g = torch.tensor([1.0, -2.0, 0.5])
    _step(opt, [x], [g])
    _step(opt, [x], [g * 2])
    s = float(_state(opt, x, "S"))
    _step(opt, [x], [g * 2])  # ||g_t - g_{t-1}|| = 0: no curvature information
    assert float(_state(opt, x, "S")) == s
    assert math.isfinite(opt.effective_lr()["param0"])


def test_zero_gradients():
    x = torch.nn.Parameter(torch.zeros(3))
    opt = lrfree.AdaLip([x], lr=0.1, gamma=0.5)
    for _ in range(3):  # all zero: no information, S stays S_0
        _step(opt, [x], [torch.zeros(3)])
    assert float(_state(opt, x, "S")) == 1.0
    _step(opt, [x], [torch.ones(3)])  # ||g_{t-1}|| = 0: r_t = 0, S <- gamma S
    assert float(_state(opt, x, "S")) == 0.5
    assert float(_state(opt, x, "ratio")) == 0.0


def test_c_zero_and_nan_gradients_keep_S_finite():
    x = torch.nn.Parameter(torch.zeros(2))
    # nonfinite="off": the rule's own guard (the default policy would skip the NaN step)
    opt = lrfree.AdaLip([{"params": [x], "nonfinite": "off"}], lr=0.1, c=0.0)
    _step(opt, [x], [torch.tensor([1.0, 1.0])])
    _step(opt, [x], [torch.tensor([1.0, 1.0])])  # 0 / 0 with c = 0
    assert float(_state(opt, x, "S")) == 1.0
    _step(opt, [x], [torch.tensor([float("nan"), 1.0])])
    assert float(_state(opt, x, "S")) == 1.0
    _step(opt, [x], [torch.tensor([2.0, 1.0])])  # prev is NaN: kept again
    assert float(_state(opt, x, "S")) == 1.0
    _step(opt, [x], [torch.tensor([2.0, 2.0])])  # recovered: S = 0.8 + 0.2 * sqrt(5) / 1
    assert float(_state(opt, x, "S")) == pytest.approx(0.8 + 0.2 * math.sqrt(5), rel=1e-6)


def test_zero_lr_from_a_scheduler_does_not_inflate_S():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = lrfree.AdaLip(model.named_parameters(), lr=0.1)
    x = torch.randn(8, 3)
    for lr in (0.1, 0.1, 0.0, 0.0, 0.0):
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    s = {k: float(v) for k, v in opt.effective_lr().items()}
    assert s == {"weight": 0.0, "bias": 0.0}
    assert float(_state(opt, model.weight, "S")) < 10


# ------------------------------------------------------- the mini-batch noise regime
def test_pure_noise_gradients_drive_S_to_one_over_sqrt2():
    """With independent gradients (all noise, no curvature signal) ``||g_t - g_{t-1}|| ~
    sqrt(2) ||g_{t-1}||`` in high dimension, so ``S -> 1/sqrt(2)``: the rule damps the base
    rate by ~0.71 whatever ``lr`` is (why ``AdaLip(lr=1e-3)`` runs at ~7e-4 per tensor)."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.Parameter(torch.zeros(20_000, dtype=D))
    opt = lrfree.AdaLip([x], lr=1e-3)
    for _ in range(60):  # 0.8**60 ~ 2e-6: S_0 is forgotten
        _step(opt, [x], [torch.randn(20_000, generator=g, dtype=D)])
    assert float(_state(opt, x, "S")) == pytest.approx(1 / math.sqrt(2), abs=0.01)
    assert opt.effective_lr()["param0"] == pytest.approx(1e-3 / math.sqrt(2), rel=0.015)


@pytest.mark.parametrize("snr", [0.5, 3.0])
def test_signal_plus_noise_S_measures_the_signal_to_noise_ratio(snr):
    """``g_t = mu + sigma xi_t`` (weights fixed): ``S -> sqrt(1 + snr^2) / sqrt(2)`` with
    ``snr = ||mu|| / (sigma sqrt(d))``. The estimate reflects the gradient noise, not 1/L."""
    d = 20_000
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(d, generator=g, dtype=D)
    mu *= snr * math.sqrt(d) / mu.norm()
    x = torch.nn.Parameter(torch.zeros(d, dtype=D))
    opt = lrfree.AdaLip([x], lr=0.0)  # lr = 0: x never moves, only the gradients vary
    for _ in range(60):
        _step(opt, [x], [mu + torch.randn(d, generator=g, dtype=D)])
    expected = math.sqrt(1 + snr**2) / math.sqrt(2)
    assert float(_state(opt, x, "S")) == pytest.approx(expected, rel=0.02)


def test_u_variant_on_pure_noise_decays_like_its_recursion():
    """AdaLip-U with SGD on independent gradients: ``u_{t-1} = lr S g_{t-1}``,
    ``u_hat_t = lr g_t``, so ``r_t ~ S / sqrt(1 + S^2) < S`` and ``S`` falls every step,
    following ``S <- gamma S + (1 - gamma) S / sqrt(1 + S^2)`` (no fixed point above 0)."""
    d = 20_000
    g = torch.Generator().manual_seed(2)
    x = torch.nn.Parameter(torch.zeros(d, dtype=D))
    opt = lrfree.AdaLipU([x], lr=0.1, preset="paper")  # plain SGD
    s_model, s_seen = 1.0, []
    for t in range(1, 41):
        _step(opt, [x], [torch.randn(d, generator=g, dtype=D)])
        if t >= 2:
            s_model = 0.8 * s_model + 0.2 * s_model / math.sqrt(1 + s_model**2)
        s_seen.append(float(_state(opt, x, "S", "lipschitz-u")))
    assert all(b < a for a, b in itertools.pairwise(s_seen[1:]))
    assert s_seen[-1] == pytest.approx(s_model, rel=0.03)
    assert s_seen[-1] < 0.5


def test_sgd_variants_default_to_a_working_sgd_rate():
    """``S`` only rescales ``lr`` by ~0.5-1 under mini-batch noise (tests above), so the
    default must be a usable SGD rate: 0.1 (docs/adalip.md), not torch SGD's 1e-3."""
    x = torch.nn.Parameter(torch.zeros(2))
    for cls in (lrfree.AdaLip, lrfree.AdaLipU):
        assert cls([x]).param_groups[0]["lr"] == 0.1
    for cls in (lrfree.RMSLip, lrfree.RMSLipU):  # issue 17: 3e-3 (docs/presets.md)
        assert cls([x]).param_groups[0]["lr"] == 3e-3
        assert cls([x], preset="paper").param_groups[0]["lr"] == 1e-2  # torch's, the paper's
    assert lrfree.AdamLip([x]).param_groups[0]["lr"] == 1e-3  # torch's, in the paper's list
