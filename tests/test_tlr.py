"""TLR (rule "tlr") and its windowed first-order comparators (rule "hypergradient-window"):
closed forms on quadratics, the guards, window bookkeeping, a fuzz of the positivity, and the
safeguards (``window_floor``, ``newton_base``, ``max_alpha``; off = the paper's trajectory)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lrfree
from lrfree.rules.tlr import window_length

D = torch.float64


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    return q @ torch.diag(torch.linspace(0.5, 5.0, n, dtype=D)) @ q.T


def _quadratic_steps(opt, params, mats, n):
    """Full-batch steps on sum_i 0.5 x_i^T A_i x_i (a block-diagonal quadratic)."""
    for _ in range(n):
        for x, a in zip(params, mats):
            x.grad = a @ x.detach()
        opt.step()


def _set_grads_and_step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def _alpha(opt, p, rule="tlr"):
    return opt.state[p][f"{rule}.alpha"]


# ----------------------------------------------------------------- closed forms
@pytest.mark.parametrize("lr", [1e-3, 0.05, 0.3])
def test_one_newton_update_is_the_exact_line_search_rate(lr):
    a = _spd(6, 0)
    x = torch.nn.Parameter(torch.randn(6, dtype=D))
    u = a @ x.detach()  # the first window's direction (K = 1, full batch)
    opt = lrfree.SGDTLR(
        [x], lr=lr, update_every=1, gamma=1.0, max_factor=1e9, min_factor=1e-9, preset="paper"
    )
    _quadratic_steps(opt, [x], [a], 2)
    line_search = float(u @ u / (u @ a @ u))
    assert opt.effective_lr()["global"] == pytest.approx(line_search, rel=1e-10)


def test_damped_update_is_gamma_of_the_newton_step():
    a = _spd(5, 1)
    x = torch.nn.Parameter(torch.randn(5, dtype=D))
    u = a @ x.detach()
    lr, gamma = 0.01, 0.33
    opt = lrfree.SGDTLR([x], lr=lr, update_every=1, gamma=gamma, preset="paper")
    _quadratic_steps(opt, [x], [a], 2)
    exact = float(u @ u / (u @ a @ u))
    assert opt.effective_lr()["global"] == pytest.approx(lr + gamma * (exact - lr), rel=1e-10)


def test_per_tensor_rates_do_the_line_search_of_each_block():
    mats = [_spd(4, 2), 10.0 * _spd(3, 3)]
    xs = [torch.nn.Parameter(torch.randn(4, dtype=D)), torch.nn.Parameter(torch.randn(3, dtype=D))]
    us = [a @ x.detach() for a, x in zip(mats, xs)]
    opt = lrfree.SGDTLR(xs, lr=0.02, update_every=1, gamma=1.0, blocks="tensor", preset="paper")
    _quadratic_steps(opt, xs, mats, 2)
    eff = opt.effective_lr()
    for name, u, a in zip(["param0", "param1"], us, mats):
        assert eff[name] == pytest.approx(float(u @ u / (u @ a @ u)), rel=1e-10)
    assert eff["param0"] != pytest.approx(eff["param1"], rel=0.1)


def test_window_vector_is_weight_change_over_the_rate_adamw_momentum():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(D)
    opt = lrfree.AdamTLR(
        model.parameters(),
        lr=0.01,
        weight_decay=0.1,
        decoupled_weight_decay=True,
        update_every=3,
        max_factor=1.0,
        min_factor=1.0,  # frozen rate: the window is exactly (w_start - w_end) / lr
        preset="paper",  # K = 3: no window floor
    )
    start = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(8, 3, dtype=D)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    for p, p0 in zip(model.parameters(), start):
        torch.testing.assert_close(opt.state[p]["tlr.prev"], (p0 - p.detach()) / 0.01)
        assert torch.count_nonzero(opt.state[p]["tlr.acc"]) == 0


def test_frozen_factor_reproduces_torch_sgd_momentum():
    torch.manual_seed(0)
    m1 = torch.nn.Linear(4, 3)
    m2 = torch.nn.Linear(4, 3)
    m2.load_state_dict(m1.state_dict())
    ours = lrfree.SGDTLR(
        m1.parameters(), lr=0.1, momentum=0.9, update_every=1, max_factor=1.0, min_factor=1.0
    )
    ref = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(16, 4)
    for _ in range(6):
        for m, o in ((m1, ours), (m2, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _noise_window_correlation(beta: float, k: int) -> float:
    """corr(S_k, S_{k+1}) of consecutive K-step sums of a stationary EMA / heavy-ball buffer
    ``m_t = beta m_{t-1} + c g_t`` of white noise ``g_t`` (autocovariance ``beta^|j|``)."""
    if beta == 0.0:
        return 0.0
    s = (1 - beta**k) / (1 - beta)
    cov = beta * s * s
    var = k * (1 + beta) / (1 - beta) - 2 * beta * s / (1 - beta)
    return cov / var


@pytest.mark.parametrize(
    ("direction", "beta", "k"),
    [("sgd", 0.0, 6), ("momentum", 0.9, 6), ("momentum", 0.9, 32), ("adam", 0.9, 6)],
)
def test_pure_noise_factor_is_the_directions_window_correlation(direction, beta, k):
    """No signal, no curvature: i.i.d. N(0, 1) gradients. The window vectors contain the
    direction's own memory (momentum / Adam's first moment), so consecutive windows correlate
    by ``c(beta, K)`` and Eq. 8 gives ``1 + gamma c / (1 - c)`` although there is nothing to
    learn: 1 for plain SGD, 1.66 for beta = 0.9 and K = 6, 1.08 for K = 32 (docs/tlr.md).
    A window that summed raw gradients, or that leaked across windows, would miss this."""
    n = 20_000
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.Parameter(torch.zeros(n, dtype=D))
    if direction == "adam":
        opt = lrfree.AdamTLR([x], lr=1e-12, update_every=k, preset="paper")
    else:
        opt = lrfree.SGDTLR([x], lr=1e-12, momentum=beta, update_every=k, preset="paper")
    factors = []
    for t in range(12 * k):  # >= 72 steps: the start-up of the momentum buffer has died out
        x.grad = torch.randn(n, generator=gen, dtype=D)
        opt.step()
        if (t + 1) % k == 0:
            factors.append(float(opt.state[x]["tlr.factor"]))
    c = _noise_window_correlation(beta, k)
    expected = 1 + 0.33 * c / (1 - c)
    assert sum(factors[-4:]) / 4 == pytest.approx(expected, abs=0.03)  # seeds 0-2: <= 0.015


# ------------------------------------------------------------------------ guards
def test_negative_denominator_keeps_the_rate():
    x = torch.nn.Parameter(torch.randn(5, dtype=D))
    opt = lrfree.SGDTLR([x], lr=0.1, update_every=1, gamma=1.0, preset="paper")
    minus_identity = -torch.eye(5, dtype=D)  # concave: <u, g_prev - g_hat> = -lr |u|^2 < 0
    _quadratic_steps(opt, [x], [minus_identity], 4)
    assert float(_alpha(opt, x)) == 1.0
    assert float(opt.state[x]["tlr.factor"]) == 1.0
    assert opt.state[x]["tlr.windows"] == 4


def test_factor_is_clamped_to_max_factor():
    x = torch.nn.Parameter(torch.randn(4, dtype=D))
    opt = lrfree.SGDTLR([x], lr=1e-6, update_every=1, gamma=1.0, preset="paper")  # factor ~1e6
    _quadratic_steps(opt, [x], [torch.eye(4, dtype=D)], 2)
    assert float(_alpha(opt, x)) == 100.0
    opt2 = lrfree.SGDTLR([x], lr=1e-6, update_every=1, gamma=1.0, max_factor=7.0, preset="paper")
    _quadratic_steps(opt2, [x], [torch.eye(4, dtype=D)], 2)
    assert float(_alpha(opt2, x)) == 7.0


def test_factor_is_floored_at_min_factor():
    x = torch.nn.Parameter(torch.randn(4, dtype=D))
    opt = lrfree.SGDTLR([x], lr=1000.0, update_every=1, gamma=1.0, preset="paper")  # factor 1e-3
    _quadratic_steps(opt, [x], [torch.eye(4, dtype=D)], 2)
    assert float(_alpha(opt, x)) == pytest.approx(0.01, rel=1e-12)


def test_nan_window_keeps_the_rate_and_recovers():
    x = torch.nn.Parameter(torch.zeros(3, dtype=D))
    opt = lrfree.SGDTLR([x], lr=0.1, update_every=1, preset="paper")
    opt.param_groups[0]["nonfinite"] = "off"  # the NaN reaches the rule (default: step skipped)
    _set_grads_and_step(opt, [x], [torch.ones(3, dtype=D)])
    _set_grads_and_step(opt, [x], [torch.full((3,), float("nan"), dtype=D)])
    assert float(_alpha(opt, x)) == 1.0
    _set_grads_and_step(opt, [x], [torch.ones(3, dtype=D)])  # prev is NaN: still kept
    assert float(_alpha(opt, x)) == 1.0
    _set_grads_and_step(opt, [x], [0.5 * torch.ones(3, dtype=D)])  # finite windows again
    # num = 0.5 * 3, den = 3 - 1.5: factor 1 + 0.33
    assert float(_alpha(opt, x)) == pytest.approx(1.33, rel=1e-12)


def test_zero_windows_keep_the_rate():
    x = torch.nn.Parameter(torch.zeros(3))
    opt = lrfree.SGDTLR([x], lr=0.1, update_every=2)
    for _ in range(6):
        _set_grads_and_step(opt, [x], [torch.zeros(3)])
    assert float(_alpha(opt, x)) == 1.0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False) | st.just(0.0),
            min_size=3,
            max_size=3,
        ),
        min_size=2,
        max_size=12,
    ),
    st.floats(0.01, 1.0),
    st.integers(1, 3),
    st.sampled_from(["tlr", "tlr-window", "additive", "multiplicative"]),
)
def test_rate_stays_positive_and_finite_under_any_gradients(grads, gamma, k, rule):
    x = torch.nn.Parameter(torch.zeros(3))
    if rule.startswith("tlr"):
        base = "window" if rule == "tlr-window" else "current"
        opt = lrfree.SGDTLR([x], lr=0.1, update_every=k, gamma=gamma, newton_base=base)
        name = "tlr"
    else:
        opt = lrfree.Composed(
            [x],
            direction="sgd",
            rule="hypergradient-window",
            blocks="global",
            lr=0.1,
            update_every=k,
            eta=gamma * 10,
            form=rule,
        )
        name = "hypergradient-window"
    for g in grads:
        _set_grads_and_step(opt, [x], [torch.tensor(g)])
        a = float(_alpha(opt, x, name))
        assert math.isfinite(a) and a > 0


# ---------------------------------------------------------- windows, comparators
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (dict(steps_per_epoch=10), 2),
        (dict(steps_per_epoch=469), 94),
        (dict(steps_per_epoch=2), 1),  # round(0.4) = 0 -> at least 1
        (dict(steps_per_epoch=100, p=0.5), 50),
        (dict(update_every=7), 7),
    ],
)
def test_window_length(kw, expected):
    x = torch.nn.Parameter(torch.zeros(2))
    opt = lrfree.SGDTLR([x], preset="paper", **kw)  # the paper's K = p * steps_per_epoch
    assert window_length(opt.param_groups[0]) == expected


def test_rate_first_moves_after_two_windows():
    x = torch.nn.Parameter(torch.randn(4, dtype=D))
    opt = lrfree.SGDTLR([x], lr=0.01, steps_per_epoch=15, p=0.2, preset="paper")  # K = 3
    a = torch.eye(4, dtype=D)
    for step in range(1, 7):
        _quadratic_steps(opt, [x], [a], 1)
        moved = float(_alpha(opt, x)) != 1.0
        assert moved == (step == 6), step


def test_additive_and_multiplicative_forms():
    g0, g1 = torch.tensor([1.0, 2.0, 0.0], dtype=D), torch.tensor([0.5, 1.0, 3.0], dtype=D)
    for form in ("additive", "multiplicative"):
        x = torch.nn.Parameter(torch.zeros(3, dtype=D))
        opt = lrfree.Composed(
            [x],
            direction="sgd",
            rule="hypergradient-window",
            blocks="global",
            lr=0.1,
            update_every=1,
            eta=0.01,
            form=form,
        )
        _set_grads_and_step(opt, [x], [g0])
        _set_grads_and_step(opt, [x], [g1])
        eff = opt.effective_lr()["global"]
        dot = float(g0 @ g1)
        if form == "additive":
            assert eff == pytest.approx(0.1 + 0.01 * dot, rel=1e-12)
        else:
            cos = dot / float(g0.norm() * g1.norm())
            assert eff == pytest.approx(0.1 * (1 + 0.01 * cos), rel=1e-12)


def test_additive_form_cannot_go_negative():
    x = torch.nn.Parameter(torch.zeros(2))
    opt = lrfree.Composed(
        [x],
        direction="sgd",
        rule="hypergradient-window",
        blocks="global",
        lr=0.1,
        update_every=1,
        eta=10.0,
    )
    _set_grads_and_step(opt, [x], [torch.tensor([1.0, 0.0])])
    _set_grads_and_step(opt, [x], [torch.tensor([-5.0, 0.0])])  # additive: 0.1 - 50 < 0
    assert float(_alpha(opt, x, "hypergradient-window")) == pytest.approx(0.01)


def test_state_is_public_and_lr_is_never_written():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = lrfree.SGDTLR(
        model.named_parameters(), lr=0.05, update_every=2, blocks="layer", window_floor=0.0
    )  # K = 2
    x = torch.randn(10, 3)
    for _ in range(5):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    assert opt.param_groups[0]["lr"] == 0.05
    owner = opt.state[model[0].weight]
    assert {"tlr.alpha", "tlr.factor", "tlr.count", "tlr.windows", "tlr.acc", "tlr.prev"} <= set(
        owner
    )
    assert owner["tlr.count"] == 1 and owner["tlr.windows"] == 2
    assert "tlr.alpha" not in opt.state[model[0].bias]  # the layer's state sits in its owner
    assert set(opt.effective_lr()) == {"0", "2"}


# -------------------------------------------------------------------- safeguards
def _quadratic_rates(newton_base: str, n: int = 10):
    """Full-batch SGD on 0.5 x^T A x (eigenvalues 0.5 .. 5, stability limit 2 / 5 = 0.4),
    K = 1, gamma = 1, lr = 0.05: the rate after each step and the line-search rate
    u^T u / u^T A u of each step's direction u = A x."""
    a = _spd(6, 0)
    x = torch.nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=D))
    opt = lrfree.SGDTLR(
        [x],
        lr=0.05,
        update_every=1,
        gamma=1.0,
        max_factor=1e9,
        min_factor=1e-9,
        newton_base=newton_base,
        preset="paper",
    )
    rates, line_search = [], []
    for _ in range(n):
        u = a @ x.detach()
        line_search.append(float(u @ u / (u @ a @ u)))
        x.grad = u
        opt.step()
        rates.append(opt.effective_lr()["global"])
    return rates, line_search, opt, x


def test_window_base_gives_the_exact_line_search_rate_at_every_update():
    """The update at the close of window k measures the gradient change produced by the step
    of window k-1, taken at alpha_{k-1}: multiplying that alpha gives the exact line-search
    rate along g_{k-1}, every time (here the rate even exceeds the stability limit 0.4 at
    times, as an exact line search with a one-window lag may)."""
    rates, line_search, opt, x = _quadratic_rates("window")
    assert rates[0] == 0.05  # the first window only opens
    for k in range(1, len(rates)):
        assert rates[k] == pytest.approx(line_search[k - 1], rel=1e-10), k
    assert rates[2] == pytest.approx(0.283, abs=5e-4)
    st = opt.state[x]
    assert st["tlr.alpha_prev"].dtype == torch.float64 and st["tlr.alpha_prev"].shape == ()
    assert float(st["tlr.alpha_prev"]) == pytest.approx(rates[-2] / 0.05, rel=1e-12)


def test_current_base_is_off_by_the_previous_factor():
    """The paper's literal rule multiplies the current alpha: exact at the first update only
    (there the two alphas are equal); the second lands at 1.523 where the exact line-search
    rate is 0.283 and the stability limit 0.4, off by the first factor 0.2693 / 0.05."""
    rates, line_search, _, _ = _quadratic_rates("current")
    assert rates[1] == pytest.approx(line_search[0], rel=1e-10)
    assert line_search[1] == pytest.approx(0.283, abs=5e-4)
    assert rates[2] == pytest.approx(1.523, abs=5e-4)
    assert rates[2] == pytest.approx(line_search[1] * rates[1] / rates[0], rel=1e-10)


@pytest.mark.parametrize(
    ("make", "floor", "expected"),
    [
        (lambda x: lrfree.SGDTLR([x], momentum=0.0, update_every=2), 3.0, 3),  # mu = 0: K >= 3
        (lambda x: lrfree.SGDTLR([x], momentum=0.0, update_every=2), 0.0, 2),  # off
        (lambda x: lrfree.SGDTLR([x], momentum=0.9, update_every=2), 3.0, 30),
        (lambda x: lrfree.SGDTLR([x], momentum=0.9, update_every=50), 3.0, 50),  # base wins
        (lambda x: lrfree.SGDTLR([x], momentum=0.8, steps_per_epoch=10), 1.0, 5),
        (lambda x: lrfree.AdamTLR([x], update_every=6), 3.0, 30),  # 3 / 0.1 in floats: 30.0..04
        (lambda x: lrfree.AdamTLR([x], betas=(0.95, 0.999), update_every=6), 3.0, 60),
        (lambda x: lrfree.AdamTLR([x], update_every=6, decoupled_weight_decay=True), 2.5, 25),
        (lambda x: _composed_window("rmsprop", x, momentum=0.5), 3.0, 6),
        (lambda x: _composed_window("rmsprop", x), 3.0, 3),  # RMSprop without momentum: mu = 0
        (lambda x: _composed_window("nesterov", x, momentum=0.8), 3.0, 15),
        (lambda x: _composed_window("adam", x, rule="hypergradient-window"), 3.0, 30),
    ],
)
def test_window_floor_sets_k_from_the_directions_memory(make, floor, expected):
    x = torch.nn.Parameter(torch.zeros(2))
    opt = make(x)
    opt.param_groups[0]["window_floor"] = floor
    assert window_length(opt.param_groups[0]) == expected
    rule = opt.param_groups[0]["rule"]
    for step in range(1, 2 * expected + 1):
        _set_grads_and_step(opt, [x], [torch.ones(2)])
        assert opt.state[x][f"{rule}.windows"] == step // expected, step


def _composed_window(direction, x, rule="tlr", **kw):
    return lrfree.Composed(
        [x], direction=direction, rule=rule, blocks="global", update_every=2, **kw
    )


def test_window_floor_is_a_constructor_argument():
    x = torch.nn.Parameter(torch.zeros(2))
    opt = lrfree.AdamTLR([x], steps_per_epoch=30, window_floor=3.0)  # K_base = 6
    assert opt.param_groups[0]["window_floor"] == 3.0
    assert window_length(opt.param_groups[0]) == 30


def test_max_alpha_caps_the_multiplier():
    x = torch.nn.Parameter(torch.randn(4, dtype=D))
    eye = torch.eye(4, dtype=D)
    opt = lrfree.SGDTLR([x], lr=1e-6, update_every=1, gamma=1.0, max_alpha=7.5, preset="paper")
    _quadratic_steps(opt, [x], [eye], 2)  # factor clamped to 100, then capped
    assert float(_alpha(opt, x)) == 7.5
    assert float(opt.state[x]["tlr.factor"]) == 100.0  # the factor is recorded uncapped
    for _ in range(4):
        _quadratic_steps(opt, [x], [eye], 1)
        assert float(_alpha(opt, x)) <= 7.5
        assert opt.effective_lr()["global"] <= 1e-6 * 7.5
    uncapped = lrfree.SGDTLR([x], lr=1e-6, update_every=1, gamma=1.0, preset="paper")
    _quadratic_steps(uncapped, [x], [eye], 2)
    assert float(_alpha(uncapped, x)) == 100.0  # the paper's inf is off


def test_max_alpha_below_one_applies_from_the_first_window_close():
    x = torch.nn.Parameter(torch.randn(3, dtype=D))
    opt = lrfree.SGDTLR([x], lr=0.1, update_every=2, max_alpha=0.5, preset="paper")
    _quadratic_steps(opt, [x], [torch.eye(3, dtype=D)], 1)
    assert float(_alpha(opt, x)) == 1.0  # lr is the rate of the first window
    _quadratic_steps(opt, [x], [torch.eye(3, dtype=D)], 1)
    assert float(_alpha(opt, x)) == 0.5


def test_max_alpha_caps_the_window_comparators_too():
    x = torch.nn.Parameter(torch.zeros(2, dtype=D))
    opt = lrfree.Composed(
        [x],
        direction="sgd",
        rule="hypergradient-window",
        blocks="global",
        lr=0.1,
        update_every=1,
        eta=0.5,
        form="multiplicative",
        max_alpha=1.2,
    )
    for _ in range(4):  # cos = 1: x1.5 per window without the cap
        _set_grads_and_step(opt, [x], [torch.ones(2, dtype=D)])
    assert float(_alpha(opt, x, "hypergradient-window")) == 1.2


@pytest.mark.parametrize("cls", [lrfree.SGDTLR, lrfree.AdamTLR])
@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        (
            {"max_alpha": 0.0},
            ValueError,
            r"^Invalid max_alpha: 0\.0 \(expected 0 < max_alpha\) \[direction '\w+', rule 'tlr'\]$",
        ),
        (
            {"max_alpha": -2.0},
            ValueError,
            r"^Invalid max_alpha: -2\.0 \(expected 0 < max_alpha\) \[",
        ),
        ({"max_alpha": None}, TypeError, r"^Invalid max_alpha: None \(expected a real number\)"),
        (
            {"window_floor": -0.5},
            ValueError,
            r"^Invalid window_floor: -0\.5 \(expected 0 <= window_floor\) "
            r"\[direction '\w+', rule 'tlr'\]$",
        ),
        (
            {"window_floor": float("nan")},
            ValueError,
            r"^Invalid window_floor: nan \(expected a finite number, 0 <= window_floor\)",
        ),
        (
            {"window_floor": "3"},
            TypeError,
            r"^Invalid window_floor: '3' \(expected a real number\)",
        ),
        (
            {"newton_base": "previous"},
            ValueError,
            r"^Invalid newton_base: 'previous' \(expected one of \['current', 'window'\]\) "
            r"\[direction '\w+', rule 'tlr'\]$",
        ),
        (
            {"newton_base": 1},
            TypeError,
            r"^Invalid newton_base: 1 \(expected one of \['current', 'window'\]\)",
        ),
    ],
)
def test_safeguard_errors(cls, kw, exc, match):
    x = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(exc, match=match):
        cls([x], update_every=2, **kw)


def test_max_alpha_accepts_inf_and_the_paper_preset_turns_the_safeguards_off():
    x = torch.nn.Parameter(torch.zeros(2))
    for cls in (lrfree.SGDTLR, lrfree.AdamTLR):
        group = cls([x], update_every=2, max_alpha=math.inf).param_groups[0]
        assert group["max_alpha"] == math.inf
        group = cls([x], update_every=2, preset="paper").param_groups[0]
        assert (group["window_floor"], group["newton_base"], group["max_alpha"]) == (
            0.0,
            "current",
            math.inf,
        )
        group = cls([x], update_every=2).param_groups[0]  # the library defaults (issue 17)
        assert (group["window_floor"], group["newton_base"], group["max_alpha"]) == (
            3.0,
            "current",
            10.0,
        )
    # the rule's own defaults (Composed) stay the paper's
    group = lrfree.Composed([x], direction="adam", rule="tlr", update_every=2).param_groups[0]
    assert (group["window_floor"], group["max_alpha"]) == (0.0, math.inf)


def _golden_run(kind: str, **kw):
    kw.setdefault("preset", "paper")  # the goldens are the paper's rule
    g = torch.Generator().manual_seed(3)
    a = torch.randn(8, 8, generator=g, dtype=D)
    a = a @ a.T / 8 + 0.1 * torch.eye(8, dtype=D)
    x = torch.nn.Parameter(torch.randn(8, generator=g, dtype=D))
    if kind == "sgd":
        opt = lrfree.SGDTLR([x], lr=0.05, momentum=0.9, update_every=3, **kw)
    else:
        opt = lrfree.AdamTLR([x], lr=0.01, steps_per_epoch=10, p=0.2, **kw)
    rates = []
    for _ in range(30):
        x.grad = a @ x.detach() + 0.3 * torch.randn(8, generator=g, dtype=D)
        opt.step()
        rates.append(opt.effective_lr()["global"])
    return rates, float(x.detach().sum()), opt, x


@pytest.mark.parametrize(
    ("kind", "rate", "total"),
    [  # recorded before the safeguards existed (commit a72a6d2)
        ("sgd", 0.8465147873095428, -2.328480209480958),
        ("adam", 6.520100319467622, -0.7572890244762704),
    ],
)
def test_safeguards_off_reproduce_the_paper_trajectory(kind, rate, total):
    rates, s, opt, x = _golden_run(kind)
    assert len(set(rates)) > 5  # the rate moved
    assert rates[-1] == pytest.approx(rate, rel=1e-12)
    assert s == pytest.approx(total, rel=1e-12)
    assert "tlr.alpha_prev" not in opt.state[x]
    off = _golden_run(kind, window_floor=0.0, newton_base="current", max_alpha=math.inf)
    assert off[0] == rates and off[1] == s  # bit for bit


def test_window_base_state_round_trips():
    _, _, opt, x = _golden_run("sgd", newton_base="window", window_floor=0.2, max_alpha=20.0)
    x2 = torch.nn.Parameter(x.detach().clone())
    opt2 = lrfree.SGDTLR([x2], lr=0.05, momentum=0.9, update_every=3, newton_base="window")
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch shares same-dtype buffers
    assert opt2.param_groups[0]["window_floor"] == 0.2 and opt2.param_groups[0]["max_alpha"] == 20
    assert opt2.state[x2]["tlr.alpha_prev"].dtype == torch.float64
    torch.testing.assert_close(opt2.state[x2]["tlr.alpha_prev"], opt.state[x]["tlr.alpha_prev"])
    g = torch.Generator().manual_seed(5)
    for _ in range(7):
        grad = torch.randn(8, generator=g, dtype=D)
        for p, o in ((x, opt), (x2, opt2)):
            p.grad = grad.clone()
            o.step()
    assert torch.equal(x.detach(), x2.detach())
    assert torch.equal(opt.state[x]["tlr.alpha_prev"], opt2.state[x2]["tlr.alpha_prev"])


def test_adam_safeguards_train_where_the_paper_settings_blow_up():
    """Mini-batch AdamTLR at lr 1e-3 with p = 0.2 of a 30-step epoch (K = 6, five times
    shorter than Adam's memory of 10 steps): the paper's settings compound the rate to ~3000
    and the loss to ~1e9; window_floor = 3 (K = 30) with newton_base = "window" trains
    (full-batch loss ~0.02, 99.8%; seeds 0-2)."""

    def run(**kw):
        g = torch.Generator().manual_seed(0)
        n, d, c, bs = 960, 20, 10, 32
        centers = torch.randn(c, d, generator=g)
        y = torch.randint(0, c, (n,), generator=g)
        x = centers[y] + torch.randn(n, d, generator=g)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, c))
        opt = lrfree.AdamTLR(model.parameters(), lr=1e-3, steps_per_epoch=n // bs, **kw)
        for _ in range(10):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        with torch.no_grad():
            loss = float(torch.nn.functional.cross_entropy(model(x), y))
        return loss, opt.effective_lr()["global"]

    loss, rate = run(preset="paper")
    assert loss > 100 and rate > 10  # measured: 5e8 and 3009
    loss, rate = run(preset="paper", window_floor=3.0, newton_base="window")
    assert loss < 0.1 and rate < 0.1  # measured: 0.023 and 0.0145
    loss, rate = run()  # the defaults (window_floor 3, max_alpha 10): the cap binds
    assert loss < 0.1 and rate == pytest.approx(1e-2, rel=1e-9)  # measured: 0.0125
