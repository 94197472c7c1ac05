"""ADLER and its GN comparator: closed forms and dense oracles (float64, tiny models)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrfree
from lrfree.loss_hessian import hessian_vector_product, outer_gradient_form, quadratic_form

D = torch.float64


def _data(n=12, d=3, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=D), torch.randint(0, k, (n,), generator=g)


def _tanh_net(seed=0, d=3, h=5, k=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, k)).to(D)


def _step(opt, model, x, loss_of_out, route="outputs", **extra):
    opt.zero_grad()
    out = model(x)
    loss = loss_of_out(out)
    if route == "backward":  # the graph route: opt.backward(loss, out); opt.step(outputs=out)
        lrfree.rules.adler.backward(opt, loss, out)
        opt.step(outputs=out, **extra)
        return loss
    loss.backward(retain_graph=True)
    if route == "outputs":
        opt.step(outputs=out, **extra)
    else:
        opt.step(model=model, inputs=x, **extra)
    return loss


def _kept_graph(opt):
    """What ``opt.backward(loss, out)`` kept for the next step (ADLER's linear graph)."""
    return opt._workspace().fed.get("graph")


def _alpha(opt):
    return torch.stack(
        [
            opt.state[g["params"][s.owner]]["adler.alpha"]
            for gi, g in enumerate(opt.param_groups)
            for s in opt.partition(gi).sets
        ]
    )


def _flat_grad(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


# ------------------------------------------------------------- closed forms
@pytest.mark.parametrize("route", ["outputs", "forward", "backward"])
def test_linear_mse_first_rate_is_the_exact_line_search(route):
    """Linear model + MSE: v^T Q v = G^T H G, so eta_0 minimises the loss along -G exactly."""
    torch.manual_seed(0)
    x, y = torch.randn(20, 3, dtype=D), torch.randn(20, 2, dtype=D)
    model = nn.Linear(3, 2).to(D)
    opt = lrfree.ADLER(model.parameters(), loss="mse", eps=0.0)
    theta0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()

    def h(theta):
        w, b = theta[:6].reshape(2, 3), theta[6:]
        return F.mse_loss(x @ w.T + b, y)

    _step(opt, model, x, lambda o: F.mse_loss(o, y), route)
    g = torch.autograd.functional.jacobian(h, theta0)
    hess = torch.autograd.functional.hessian(h, theta0)
    eta = (g @ g) / (g @ hess @ g)
    torch.testing.assert_close(_alpha(opt)[0], eta)
    theta1 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    torch.testing.assert_close(theta1, theta0 - eta * g)
    for t in (0.9, 1.1):  # the quadratic is exact: the step is the minimiser along the line
        assert h(theta1) < h(theta0 - t * eta * g)


@pytest.mark.parametrize("blocks", ["global", "layer"])
@pytest.mark.parametrize("route", ["outputs", "forward", "backward"])
def test_rate_matches_a_dense_ggn_from_the_full_jacobian(blocks, route):
    x, y = _data()
    model = _tanh_net()
    opt = lrfree.ADLER(model.named_parameters(), blocks=blocks, eps=0.0)
    params = [p.detach().clone() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in params]
    theta0 = torch.cat([p.reshape(-1) for p in params])

    def unflat(theta):
        out, k = {}, 0
        for n, p in zip(names, params):
            out[n] = theta[k : k + p.numel()].reshape(p.shape)
            k += p.numel()
        return out

    def outputs(theta):
        return torch.func.functional_call(model, unflat(theta), (x,))

    o0 = outputs(theta0).detach()
    jac = torch.autograd.functional.jacobian(outputs, theta0).reshape(o0.numel(), -1)
    q = torch.autograd.functional.hessian(
        lambda o: F.cross_entropy(o.reshape(o0.shape), y), o0.reshape(-1)
    )
    ggn = jac.T @ q @ jac
    g = torch.autograd.functional.jacobian(lambda t: F.cross_entropy(outputs(t), y), theta0)
    _step(opt, model, x, lambda o: F.cross_entropy(o, y), route)
    if blocks == "global":
        expect = [(g @ g) / (g @ ggn @ g)]
    else:  # layer 0: weight+bias of module 0 (first 20 entries), layer 2 the rest
        cut = sizes[0] + sizes[1]
        expect = []
        for sl in (slice(0, cut), slice(cut, None)):
            gb = torch.zeros_like(g)
            gb[sl] = g[sl]
            expect.append((gb @ gb) / (gb @ ggn @ gb))
    torch.testing.assert_close(_alpha(opt), torch.stack(expect))


def test_both_jvp_routes_agree_on_a_cnn_and_with_momentum():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).to(
        D
    )
    x, y = torch.randn(6, 1, 6, 6, dtype=D), torch.randint(0, 5, (6,))
    rates = []
    for route in ("outputs", "forward"):
        m = __import__("copy").deepcopy(model)
        opt = lrfree.Composed(
            m.named_parameters(), direction="momentum", rule="adler", momentum=0.9, lr=1.0
        )
        for _ in range(3):
            _step(opt, m, x, lambda o: F.cross_entropy(o, y), route)
        rates.append(_alpha(opt))
    torch.testing.assert_close(rates[0], rates[1])


def _scalar_problem():
    """f(x) = w x with x = 1: G = a (w - y), v = G, Q = a for L = a/2 (o - y)^2."""
    w = nn.Parameter(torch.tensor([0.0], dtype=D))
    return w


def test_log_space_average_matches_its_closed_form():
    w = _scalar_problem()
    beta = 0.9
    kw = dict(direction="sgd", rule="adler", blocks="global", beta=beta, denom_eps=0.0, lr=0.3)
    opt = lrfree.Composed([w], **kw)  # lr < 1: w never lands on the target (G = 0)
    curv = [1.0, 4.0, 0.5, 2.0, 8.0]
    gn = lrfree.Composed([nn.Parameter(w.detach().clone())], variant="gn", **kw)
    gw = gn.param_groups[0]["params"][0]
    gn_etas = []
    for k, a in enumerate(curv):
        for o, p in ((opt, w), (gn, gw)):
            o.zero_grad()
            out = p * 1.0
            loss = 0.5 * a * ((out - 3.0) ** 2).sum()
            loss.backward(retain_graph=True)
            if o is gn:
                gn_etas.append(1.0 / float(p.grad) ** 2)  # eta = G^2 / (G^2)^2
            o.step(outputs=out, loss_fn=lambda z, a=a: 0.5 * a * ((z - 3.0) ** 2).sum())
        logs = [math.log(1.0 / c) for c in curv[: k + 1]]
        wts = [beta ** (k - i) for i in range(k + 1)]
        expect = math.exp(sum(wi * li for wi, li in zip(wts, logs)) / sum(wts))
        assert float(_alpha(opt)[0]) == pytest.approx(expect, rel=1e-12)
        expect_gn = sum(wi * e for wi, e in zip(wts, gn_etas)) / sum(wts)
        assert float(_alpha(gn)[0]) == pytest.approx(expect_gn, rel=1e-12)


def test_gn_identity_matches_the_explicit_outer_gradient_form():
    x, y = _data(seed=3)
    model = _tanh_net(seed=3)
    opt = lrfree.ADLER(model.parameters(), variant="gn", eps=0.0)
    opt.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward(retain_graph=True)
    g = [p.grad.detach().clone() for p in model.parameters()]
    # explicit: v = J G by double vjp, then (dL/do . v)^2
    from lrfree.rules.adler import jvp_double_vjp

    (v,) = jvp_double_vjp(out, list(model.parameters()), [list(enumerate(g))])
    den = outer_gradient_form("cross_entropy", out.detach(), v, y)
    gg = sum((t * t).sum() for t in g)
    opt.step()  # GN needs no outputs
    torch.testing.assert_close(_alpha(opt)[0], gg / den)


def test_reduction_must_agree_with_the_loss():
    """Sum reduction: G and Q scale by N, so eta scales by 1/N; declared correctly, both agree."""
    x, y = _data(n=8)
    rates = {}
    for red in ("mean", "sum"):
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters(), reduction=red, eps=0.0)
        _step(opt, model, x, lambda o, r=red: F.cross_entropy(o, y, reduction=r))
        rates[red] = _alpha(opt)[0]
    torch.testing.assert_close(rates["sum"] * 8, rates["mean"])
    model = _tanh_net()
    wrong = lrfree.ADLER(model.parameters(), reduction="mean", eps=0.0)
    _step(wrong, model, x, lambda o: F.cross_entropy(o, y, reduction="sum"))
    # declared "mean" for a sum loss: the rate is N times the right one (too large)
    torch.testing.assert_close(_alpha(wrong)[0], rates["sum"] * 8)


# ------------------------------------------------------ the backward= route
def test_backward_route_gradients_penalty_accumulation_and_graph_lifetime():
    """opt.backward(loss, out): p.grad as loss.backward() (accumulated), v = J G without the
    terms of the loss that bypass the outputs, and the kept graph is freed by the step."""
    x, y = _data(seed=5)
    model = _tanh_net(seed=5)
    params = list(model.parameters())
    opt = lrfree.ADLER(model.named_parameters(), eps=0.0)
    pre = [torch.full_like(p, 0.25) for p in params]
    for p, g0 in zip(params, pre):
        p.grad = g0.clone()  # backward() accumulates like loss.backward()

    def loss_of(out):
        return F.cross_entropy(out, y) + 0.05 * sum((p**2).sum() for p in model.parameters())

    out = model(x)
    ref = torch.autograd.grad(loss_of(model(x)), params)
    opt.backward(loss_of(out), out)
    for p, r, g0 in zip(params, ref, pre):
        torch.testing.assert_close(p.grad, r + g0)
    assert _kept_graph(opt) is not None
    G = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    prim = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, v = torch.func.jvp(lambda ps: torch.func.functional_call(model, ps, (x,)), (prim,), (G,))
    gg = sum((g * g).sum() for g in G.values())
    expect = gg / quadratic_form("cross_entropy", out.detach(), v, y)
    opt.step(outputs=out)
    assert _kept_graph(opt) is None  # the step released the graph
    torch.testing.assert_close(_alpha(opt)[0], expect)


def test_backward_route_is_a_plain_backward_when_no_estimate_is_due():
    x, y = _data()
    for kw in ({"update_every": 2}, {"variant": "gn"}):
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters(), **kw)
        kept = []
        for _ in range(3):
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            ref = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
            opt.backward(loss, out)
            kept.append(_kept_graph(opt) is not None)
            for p, r in zip(model.parameters(), ref):
                torch.testing.assert_close(p.grad, r)
            opt.step(outputs=out)
        assert kept == ([True, False, True] if "update_every" in kw else [False] * 3)
    model = _tanh_net()
    opt = lrfree.ADLER(model.parameters())
    with pytest.raises(ValueError, match=r"outputs must be a tensor with a graph"):
        opt.backward(F.cross_entropy(model(x), y), model(x).detach())
    out = model(x)
    with pytest.raises(ValueError, match=r"does not depend on outputs"):
        opt.backward(F.cross_entropy(model(x), y), out)


# ----------------------------------------------------------------- trust
def test_trust_caps_the_applied_rate_and_leaves_the_average_alone():
    """trust=t: alpha_k = min(exp(s_k/c_k), t * eta_k); s and c are the paper's."""
    beta, curv = 0.9, [0.25, 4.0, 0.5, 8.0, 1.0]  # eta_k = 1 / curv_k
    w = _scalar_problem()
    opt = lrfree.Composed(
        [w], direction="sgd", rule="adler", blocks="global", beta=beta, denom_eps=0.0, lr=0.3,
        trust=2.0,
    )  # fmt: skip
    capped = []
    for k, a in enumerate(curv):
        opt.zero_grad()
        out = w * 1.0
        (0.5 * a * ((out - 3.0) ** 2).sum()).backward(retain_graph=True)
        opt.step(outputs=out, loss_fn=lambda z, a=a: 0.5 * a * ((z - 3.0) ** 2).sum())
        wts = [beta ** (k - i) for i in range(k + 1)]
        mean = sum(wi * math.log(1.0 / c) for wi, c in zip(wts, curv)) / sum(wts)
        st = opt.state[w]
        assert float(st["adler.s"] / st["adler.c"]) == pytest.approx(mean, rel=1e-12)
        expect = min(math.exp(mean), 2.0 / a)
        capped.append(2.0 / a < math.exp(mean))
        assert float(_alpha(opt)[0]) == pytest.approx(expect, rel=1e-12)
    assert any(capped) and not all(capped)  # the sequence exercises both branches
    model = _tanh_net()
    with pytest.raises(ValueError, match=r"Invalid trust: 0"):
        lrfree.ADLER(model.parameters(), trust=0)
    assert lrfree.ADLER(model.parameters()).param_groups[0]["trust"] == 2.0  # issue 17
    assert lrfree.ADLER(model.parameters(), preset="paper").param_groups[0]["trust"] == math.inf
    assert lrfree.Composed(model.parameters(), rule="adler").param_groups[0]["trust"] == math.inf


# ----------------------------------------------------------- safeguards
def test_zero_and_near_zero_denominators():
    w = _scalar_problem()
    # a loss linear in the outputs: Q = 0. eps = 0 -> eta = inf: skipped, nothing moves
    opt = lrfree.Composed([w], direction="sgd", rule="adler", blocks="global", denom_eps=0.0)
    opt.zero_grad()
    out = w * 1.0
    out.sum().backward(retain_graph=True)
    opt.step(outputs=out, loss_fn=lambda z: z.sum())
    st = opt.state[w]
    assert float(w) == 0.0 and float(st["adler.alpha"]) == 0.0
    assert float(st["adler.rejected"]) == 1.0 and float(st["adler.c"]) == 0.0
    # eps > 0: eta = G^T G / eps, finite, taken as the paper does
    opt2 = lrfree.Composed([w], direction="sgd", rule="adler", blocks="global", denom_eps=1e-3)
    opt2.zero_grad()
    out = w * 1.0
    out.sum().backward(retain_graph=True)
    opt2.step(outputs=out, loss_fn=lambda z: z.sum())
    assert float(opt2.state[w]["adler.alpha"]) == pytest.approx(1e3)


def test_non_finite_and_non_descent_estimates_are_skipped():
    x, y = _data()
    model = _tanh_net()
    opt = lrfree.ADLER(model.parameters())
    for _ in range(2):
        _step(opt, model, x, lambda o: F.cross_entropy(o, y))
    before = [p.detach().clone() for p in model.parameters()]
    alpha = _alpha(opt).clone()
    st = opt.state[next(model.parameters())]
    s, c = st["adler.s"].clone(), st["adler.c"].clone()
    opt.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward(retain_graph=True)
    opt.step(outputs=out, loss_fn=lambda z: float("nan") * z.sum() ** 2)  # NaN curvature
    assert torch.equal(_alpha(opt), alpha)
    assert torch.equal(st["adler.s"], s) and torch.equal(st["adler.c"], c)
    assert float(st["adler.rejected"]) == 1.0
    for a, b in zip(before, model.parameters()):  # stepped with the kept (finite) rate
        assert torch.isfinite(b).all() and not torch.equal(a, b)
    # a non-convex loss with negative curvature along v: eta < 0, skipped
    opt.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward(retain_graph=True)
    opt.step(outputs=out, loss_fn=lambda z: -(z**2).sum())
    assert float(st["adler.rejected"]) == 2.0 and torch.equal(_alpha(opt), alpha)


def test_update_every_amortises_the_estimate():
    x, y = _data()
    model = _tanh_net()
    opt = lrfree.ADLER(model.parameters(), update_every=3)
    p0 = next(model.parameters())
    etas = []
    for k in range(7):
        opt.zero_grad()
        out = model(x)
        F.cross_entropy(out, y).backward(retain_graph=True)
        opt.step(outputs=out if k % 3 == 0 else None)  # off-steps need nothing
        etas.append(float(opt.state[p0]["adler.eta"]))
    assert etas[0] == etas[1] == etas[2] != etas[3] == etas[4] == etas[5] != etas[6]
    assert float(opt.state[p0]["adler.c"]) == pytest.approx(1 + 0.99 + 0.99**2)


def test_missing_inputs_and_bad_options_raise():
    x, y = _data()
    model = _tanh_net()
    opt = lrfree.ADLER(model.parameters())
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match=r"needs the network outputs"):
        opt.step()
    with pytest.raises(ValueError, match=r"does not hold some parameters"):
        opt.step(model=nn.Linear(3, 4).to(D), inputs=x)
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        opt.zero_grad()
        out = model(x)
        F.cross_entropy(out, y).backward()
        opt.step(outputs=out)
    with pytest.raises(ValueError, match=r"Invalid maximize: True"):
        lrfree.ADLER(model.parameters(), maximize=True)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['batch'\]"):
        opt.step(batch=x)


# --------------------------------------------------- BatchNorm, dropout, attention
def test_forward_route_leaves_batchnorm_running_stats_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4)).to(D)
    x, y = _data()
    ref = __import__("copy").deepcopy(model)
    opt = lrfree.ADLER(model.named_parameters())
    opt_ref = lrfree.ADLER(ref.named_parameters())
    _step(opt, model, x, lambda o: F.cross_entropy(o, y), "forward")
    _step(opt_ref, ref, x, lambda o: F.cross_entropy(o, y), "outputs")
    bn, bn_ref = model[1], ref[1]
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)
    # same batch statistics in both routes -> same rate
    torch.testing.assert_close(_alpha(opt), _alpha(opt_ref))


def test_dropout_and_attention_models_train():
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(2, 8)
            self.att = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.att(self.emb(x)).mean(1))

    x, y = torch.randn(6, 4, 2), torch.randint(0, 3, (6,))
    for route in ("outputs", "forward"):
        model = Tiny()
        opt = lrfree.ADLER(model.named_parameters(), blocks="layer")
        for _ in range(3):
            _step(opt, model, x, lambda o: F.cross_entropy(o, y), route)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert (_alpha(opt) > 0).all()


def test_closed_form_equals_autograd_fallback_in_the_rule():
    x, y = _data()
    rates = []
    for use_fn in (False, True):
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters())
        extra = {"loss_fn": lambda o: F.cross_entropy(o, y)} if use_fn else {}
        _step(opt, model, x, lambda o: F.cross_entropy(o, y), **extra)
        rates.append(_alpha(opt))
    torch.testing.assert_close(rates[0], rates[1])
    # and Q itself: the quadratic form against the fallback (sanity of the import)
    o = torch.randn(4, 3, dtype=D)
    v = torch.randn(4, 3, dtype=D)
    t = torch.randint(0, 3, (4,))
    torch.testing.assert_close(
        quadratic_form("cross_entropy", o, v, t),
        quadratic_form(lambda z: F.cross_entropy(z, t), o, v),
    )


# ------------------------------------------------- the loss Hessian is the loss's
def _linear_mse(seed=0):
    torch.manual_seed(seed)
    x, y = torch.randn(20, 3, dtype=D), torch.randn(20, 2, dtype=D)
    return nn.Linear(3, 2).to(D), x, y


def _exact_line_minimiser(model, x, y):
    theta0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()

    def h(theta):
        w, b = theta[:6].reshape(2, 3), theta[6:]
        return F.mse_loss(x @ w.T + b, y)

    g = torch.autograd.functional.jacobian(h, theta0)
    return (g @ g) / (g @ torch.autograd.functional.hessian(h, theta0) @ g)


def test_default_loss_on_an_mse_model_is_a_clear_error_not_a_wrong_rate():
    """ADLER() declares cross-entropy; on an MSE model the closed form gave ~5x the exact line
    minimiser, silently. In the backward route the declaration is checked against the loss
    actually computed: a ValueError naming the fix, before anything changes; loss='auto' (and
    loss='mse') give the exact minimiser."""
    model, x, y = _linear_mse()
    eta = _exact_line_minimiser(model, x, y)
    opt = lrfree.ADLER(model.parameters(), eps=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        ValueError,
        match=r"^ADLER: loss='cross_entropy', reduction='mean' but the loss you computed has a "
        r"different output Hessian \(checked on the first estimate step of "
        r"opt.backward\(loss, outputs\)\); pass loss='mse', reduction='mean' "
        r"\(or loss='auto'\)$",
    ):
        _step(opt, model, x, lambda o: F.mse_loss(o, y), "backward")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(opt.state) == 0
    # what the unchecked closed form would have applied (the step(outputs=) route, which has
    # no loss tensor, still trusts the declaration: documented)
    m2 = _linear_mse()[0]
    wrong = lrfree.ADLER(m2.parameters(), eps=0.0)
    _step(wrong, m2, x, lambda o: F.mse_loss(o, y), "outputs")
    assert float(_alpha(wrong)[0]) > 3 * float(eta)
    for loss in ("auto", "mse"):
        m = _linear_mse()[0]
        opt = lrfree.ADLER(m.parameters(), eps=0.0, loss=loss)
        _step(opt, m, x, lambda o: F.mse_loss(o, y), "backward")
        torch.testing.assert_close(_alpha(opt)[0], eta, rtol=1e-10, atol=0)


def _qv_cases():
    g = torch.Generator().manual_seed(7)
    yc = torch.randint(0, 4, (12,), generator=g)
    yc_ignored = yc.clone()
    yc_ignored[[1, 5]] = -100
    yb = torch.rand(12, 4, generator=g, dtype=D)
    yr = torch.randn(12, 4, generator=g, dtype=D)
    for red in ("mean", "sum"):
        yield "cross_entropy", red, lambda o, r=red: F.cross_entropy(o, yc, reduction=r), None
        yield (
            "cross_entropy",
            red,
            lambda o, r=red: F.cross_entropy(o, yc_ignored, reduction=r),
            yc_ignored,
        )
        yield (
            "bce_with_logits",
            red,
            lambda o, r=red: F.binary_cross_entropy_with_logits(o, yb, reduction=r),
            None,
        )
        yield "mse", red, lambda o, r=red: F.mse_loss(o, yr, reduction=r), None


@pytest.mark.parametrize(("name", "red", "loss_of", "targets"), list(_qv_cases()))
def test_autograd_q_through_the_computed_loss_equals_the_closed_form(name, red, loss_of, targets):
    """Q v by autograd through the loss tensor (the backward route's dL/dF with its graph)
    against lrfree.loss_hessian's closed form, float64, to 1e-10; and the rates of
    loss='auto' and the named loss agree to 1e-10."""
    x, _ = _data()
    rates = []
    for loss in ("auto", name):
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters(), eps=0.0, loss=loss, reduction=red)
        out = model(x)
        opt.backward(loss_of(out), out)
        if loss == "auto":
            v = torch.randn(out.shape, dtype=D, generator=torch.Generator().manual_seed(1))
            (qv,) = _kept_graph(opt).loss_hvp([v])
            closed = hessian_vector_product(name, out.detach(), v, targets, red)
            torch.testing.assert_close(qv, closed, rtol=1e-10, atol=1e-14)
        opt.step(outputs=out, **({} if targets is None else {"targets": targets}))
        rates.append(_alpha(opt))
    torch.testing.assert_close(rates[0], rates[1], rtol=1e-10, atol=0)


@pytest.mark.parametrize("red", ["mean", "sum"])
def test_nll_closed_form_equals_autograd_through_the_folded_log_softmax(red):
    """loss='nll' on log-probability outputs folds the final log-softmax into Q; autograd
    through the same loss computed from the logits (loss='auto', outputs=logits) is that Q
    exactly, so the rates agree to 1e-10. Autograd on the log-probabilities themselves sees
    a linear loss (Q = 0): loss='auto' refuses it and names loss='nll'."""
    x, y = _data()
    rates = []
    for logits_out in (False, True):
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters(), eps=0.0, loss="auto" if logits_out else "nll",
                           reduction=red)  # fmt: skip
        z = model(x)
        out = z if logits_out else F.log_softmax(z, dim=1)
        loss = F.nll_loss(F.log_softmax(out, dim=1) if logits_out else out, y, reduction=red)
        opt.backward(loss, out)
        opt.step(outputs=out)
        rates.append(_alpha(opt))
    torch.testing.assert_close(rates[0], rates[1], rtol=1e-10, atol=0)
    model = _tanh_net()
    opt = lrfree.ADLER(model.parameters(), loss="auto", reduction=red)
    out = F.log_softmax(model(x), dim=1)
    opt.backward(F.nll_loss(out, y, reduction=red), out)
    with pytest.raises(ValueError, match=r"loss='auto': the loss you computed is linear in the "
                       r"outputs.*pass loss='nll'"):  # fmt: skip
        opt.step(outputs=out)
    assert len(opt.state) == 0


def test_declared_loss_is_checked_once_and_mismatches_name_the_fix(monkeypatch):
    import lrfree.rules.adler as adler_mod

    x, y = _data(n=8)
    weights = torch.arange(1.0, 5.0, dtype=D)
    auto = r"pass loss='auto' \(autograd through the loss you computed\), or step\(loss_fn=\.\.\.\)"
    cases = [  # (declared, reduction, computed loss, expected suggestion)
        (
            "cross_entropy",
            "mean",
            lambda o: F.cross_entropy(o, y, reduction="sum"),
            r"pass loss='cross_entropy', reduction='sum' \(or loss='auto'\)$",
        ),
        (
            "cross_entropy",
            "mean",
            lambda o: F.nll_loss(o, y),
            r"pass loss='nll', reduction='mean'$",
        ),
        ("mse", "mean", lambda o: F.cross_entropy(o, y, weight=weights), auto + "$"),
        (
            "cross_entropy",
            "mean",
            lambda o: F.cross_entropy(o, y, weight=weights),
            auto + r"; with ignore_index=-100 positions in the batch, also pass "
            r"step\(\.\.\., targets=y\)$",
        ),
    ]
    for declared, red, loss_of, fix in cases:
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters(), loss=declared, reduction=red)
        with pytest.raises(
            ValueError, match=rf"^ADLER: loss='{declared}', reduction='{red}' .*{fix}"
        ):
            _step(opt, model, x, loss_of, "backward")
    calls = []
    real = adler_mod._verify_declared_loss
    monkeypatch.setattr(adler_mod, "_verify_declared_loss", lambda *a: calls.append(1) or real(*a))
    model = _tanh_net()
    opt = lrfree.ADLER(model.parameters())
    for _ in range(3):  # checked on the first estimate step only (one host sync, once)
        _step(opt, model, x, lambda o: F.cross_entropy(o, y), "backward")
    assert len(calls) == 1
    for route in ("outputs", "forward"):  # no loss tensor: nothing to check (documented)
        _step(opt, model, x, lambda o: F.cross_entropy(o, y), route)
    assert len(calls) == 1
    # two groups share the loss: each declaration is checked once, neither disturbs the other
    model = _tanh_net()
    opt = lrfree.Composed(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "loss": "auto"}],
        direction="sgd",
        rule="adler",
    )
    for _ in range(2):
        _step(opt, model, x, lambda o: F.cross_entropy(o, y), "backward")
    assert len(calls) == 2 and bool((_alpha(opt) > 0).all())


def test_auto_needs_the_loss_tensor_or_a_loss_fn():
    x, y = _data()
    for route in ("outputs", "forward"):
        model = _tanh_net()
        opt = lrfree.ADLER(model.parameters(), loss="auto")
        with pytest.raises(ValueError, match=r"^ADLER loss='auto' takes Q from the loss you "
                           r"computed, which only the opt.backward\(loss, outputs\)"):  # fmt: skip
            _step(opt, model, x, lambda o: F.cross_entropy(o, y), route)
        assert len(opt.state) == 0
        ref_model = _tanh_net()
        ref = lrfree.ADLER(ref_model.parameters())
        _step(ref, ref_model, x, lambda o: F.cross_entropy(o, y), route)
        _step(opt, model, x, lambda o: F.cross_entropy(o, y), route,
              loss_fn=lambda o: F.cross_entropy(o, y))  # fmt: skip
        torch.testing.assert_close(_alpha(opt), _alpha(ref))


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
        return self.head(F.scaled_dot_product_attention(q, k, v).squeeze(1).mean(1))


@pytest.mark.parametrize("route", ["backward", "outputs"])
def test_attention_without_double_backward_names_the_fix(route):
    """CPU's default SDPA kernel (flash) has no double backward: the graph routes raise an
    error naming the MATH backend and the forward-mode route, chained to torch's."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 6, 4, generator=g), torch.randint(0, 3, (5,), generator=g)
    torch.manual_seed(0)
    model = _Attn()
    opt = lrfree.ADLER(model.parameters())
    with pytest.raises(
        RuntimeError,
        match=r"^ADLER .*: the model's scaled_dot_product_attention ran a fused attention "
        r"kernel that has no double backward \(aten::_scaled_dot_product_flash_attention_for_"
        r"cpu_backward\). Wrap the forward in `with torch.nn.attention.sdpa_kernel\("
        r"torch.nn.attention.SDPBackend.MATH\):` \(the MATH backend is differentiable twice\), "
        r"or use opt.step\(model=model, inputs=x\)",
    ) as info:
        _step(opt, model, x, lambda o: F.cross_entropy(o, y), route)
    assert "is not implemented" in str(info.value.__cause__)
    rates = []
    for fixed in ("math", "forward"):
        torch.manual_seed(0)
        model = _Attn()
        opt = lrfree.ADLER(model.parameters())
        if fixed == "math":
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                _step(opt, model, x, lambda o: F.cross_entropy(o, y), route)
        else:
            _step(opt, model, x, lambda o: F.cross_entropy(o, y), "forward")
        rates.append(_alpha(opt))
    torch.testing.assert_close(rates[0], rates[1], rtol=1e-4, atol=0)
