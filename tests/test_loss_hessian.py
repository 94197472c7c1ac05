"""Oracle tests of lrfree.curvature.loss (the loss Hessians; also importable as
lrfree.loss_hessian) against torch.autograd.functional.hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lrfree.curvature.loss import (
    hessian_vector_product,
    loss_value,
    outer_gradient_form,
    quadratic_form,
)

D = torch.float64


def _case(loss: str, shape: tuple[int, ...], seed: int, ignore: bool = False):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(shape, generator=g, dtype=D) * 2
    v = torch.randn(shape, generator=g, dtype=D)
    if loss in ("cross_entropy", "nll"):
        pos = shape[:1] + shape[2:]
        t = torch.randint(0, shape[1], pos, generator=g)
        if ignore and t.numel() > 1:  # all-ignored: torch's mean is 0/0
            t.view(-1)[0] = -100
        if loss == "nll":
            o = torch.log_softmax(o, dim=1)
    elif loss == "mse":
        t = torch.randn(shape, generator=g, dtype=D)
    else:
        t = torch.rand(shape, generator=g, dtype=D)
    return o, v, t


def _dense(loss, o, t, reduction):
    """The dense Hessian of the literal torch loss (nll: folded log-softmax, see module doc)."""

    def f(x):
        if loss == "nll":
            return F.nll_loss(torch.log_softmax(x, dim=1), t, reduction=reduction)
        return loss_value(loss, x, t, reduction)

    n = o.numel()
    return torch.autograd.functional.hessian(f, o).reshape(n, n)


@settings(max_examples=40, deadline=None)
@given(
    loss=st.sampled_from(["cross_entropy", "nll", "mse", "bce_with_logits"]),
    reduction=st.sampled_from(["mean", "sum"]),
    shape=st.sampled_from([(3, 4), (1, 2), (2, 3, 2), (5, 1)]),
    seed=st.integers(0, 10_000),
    ignore=st.booleans(),
)
def test_closed_forms_match_the_dense_hessian(loss, reduction, shape, seed, ignore):
    if loss in ("cross_entropy", "nll") and shape[1] == 1:
        shape = (shape[0], 2)
    o, v, t = _case(loss, shape, seed, ignore)
    h = _dense(loss, o, t, reduction)
    expect = v.reshape(-1) @ h @ v.reshape(-1)
    torch.testing.assert_close(quadratic_form(loss, o, v, t, reduction), expect)
    torch.testing.assert_close(
        hessian_vector_product(loss, o, v, t, reduction).reshape(-1), h @ v.reshape(-1)
    )


def test_cross_entropy_q_is_diag_p_minus_ppt():
    o, _, t = _case("cross_entropy", (1, 5), 3)
    p = torch.softmax(o[0], 0)
    h = _dense("cross_entropy", o, t, "sum")
    torch.testing.assert_close(h, torch.diag(p) - torch.outer(p, p))
    # PSD: v^T Q v >= 0 for random v, and 0 along the constant vector
    for seed in range(5):
        v = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed), dtype=D)
        assert quadratic_form("cross_entropy", torch.randn(4, 5, dtype=D), v) >= 0
    assert abs(quadratic_form("cross_entropy", o, torch.ones(1, 5, dtype=D))) < 1e-12


def test_callable_fallback_matches_the_dense_hessian():
    o, v, t = _case("mse", (3, 2), 1)

    def huber(x):
        return F.smooth_l1_loss(torch.tanh(x), t, beta=2.0)

    h = torch.autograd.functional.hessian(huber, o).reshape(6, 6)
    expect = v.reshape(-1) @ h @ v.reshape(-1)
    torch.testing.assert_close(quadratic_form(huber, o, v), expect)
    # and a named loss as a callable gives the closed form
    o, v, t = _case("cross_entropy", (3, 4), 2)
    torch.testing.assert_close(
        quadratic_form(lambda x: F.cross_entropy(x, t), o, v),
        quadratic_form("cross_entropy", o, v, t),
    )


def test_outer_gradient_form_is_g_dot_v_squared():
    o, v, t = _case("cross_entropy", (4, 3), 5)
    g = (torch.softmax(o, 1) - F.one_hot(t, 3)) / 4
    torch.testing.assert_close(outer_gradient_form("cross_entropy", o, v, t), (g * v).sum() ** 2)


def test_quadratic_form_works_under_vmap():
    o, _, t = _case("cross_entropy", (3, 4), 7)
    vs = torch.randn(5, 3, 4, dtype=D)
    batched = torch.func.vmap(lambda v: quadratic_form("cross_entropy", o, v, t))(vs)
    for k in range(5):
        torch.testing.assert_close(batched[k], quadratic_form("cross_entropy", o, vs[k], t))


def test_bad_names_raise():
    o = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"Invalid loss: 'hinge'"):
        quadratic_form("hinge", o, o)
    with pytest.raises(ValueError, match=r"Invalid reduction: 'none'"):
        quadratic_form("mse", o, o, reduction="none")
    with pytest.raises(ValueError, match=r"class dimension 1"):
        quadratic_form("cross_entropy", torch.zeros(3), torch.zeros(3))
