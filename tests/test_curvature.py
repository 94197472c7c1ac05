"""Oracle tests of lrfree.curvature against dense Hessians / Jacobians on tiny networks, and
the package's shape: one implementation per route, its public names, its doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import lrfree.curvature
from lrfree.curvature import (
    LinearGraph,
    fd_hessian_block_forms,
    full_hessian_dense,
    ggn_block_forms,
    hessian_block_forms,
    jvp_double_vjp,
    jvp_forward,
    loss_output_hvp,
    preserve_buffers,
    preserve_forward_buffers,
    second_order_errors,
)
from lrfree.curvature.loss import hessian_vector_product, quadratic_form

D = torch.float64


class Residual(nn.Module):
    def __init__(self, width: int, act: nn.Module):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = act

    def forward(self, x):
        return x + self.act(self.fc(x))


class ConvNet(nn.Module):
    def __init__(self, bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2) if bn else nn.Identity()
        self.fc = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))


def _net(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "relu":
        net, x = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)), torch.randn(7, 4)
    elif kind == "tanh":
        net, x = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), torch.randn(7, 4)
    elif kind == "conv":
        net, x = ConvNet(bn=False), torch.randn(6, 1, 5, 5)
    elif kind == "batchnorm":
        net, x = ConvNet(bn=True), torch.randn(6, 1, 5, 5)
    elif kind == "residual":
        net = nn.Sequential(nn.Linear(4, 5), Residual(5, nn.Tanh()), nn.Linear(5, 3))
        x = torch.randn(7, 4)
    else:
        raise ValueError(kind)
    return net.to(D).train(), x.to(D)


LOSSES = {
    "ce": lambda z, y: F.cross_entropy(z, y),
    "ce-sum": lambda z, y: F.cross_entropy(z, y, reduction="sum"),
    "nll": lambda z, y: F.nll_loss(F.log_softmax(z, -1), y),
    "mse": lambda z, y: F.mse_loss(z, F.one_hot(y, 3).to(z.dtype)),
    "bce": lambda z, y: F.binary_cross_entropy_with_logits(z, F.one_hot(y, 3).to(z.dtype)),
}
NETS = ["relu", "tanh", "conv", "batchnorm", "residual"]


def _setup(kind: str, loss: str):
    net, x = _net(kind)
    y = torch.arange(len(x)) % 3
    names, params = zip(*net.named_parameters())
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    lf = LOSSES[loss]

    def loss_of(*ps):
        out = functional_call(net, ({**dict(zip(names, ps)), **buffers}), (x,))
        return lf(out, y)

    mods: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        mods.setdefault(n.rsplit(".", 1)[0], []).append(i)
    blocks = list(mods.values())
    g = torch.Generator().manual_seed(1)
    vecs = [torch.randn(p.shape, generator=g, dtype=D) for p in params]
    return net, x, y, list(params), blocks, vecs, loss_of, lf


def _slices(params):
    out, o = [], 0
    for p in params:
        out.append(slice(o, o + p.numel()))
        o += p.numel()
    return out


def _dense_block_forms(H, params, blocks, vecs):
    sl = _slices(params)
    res = []
    for idx in blocks:
        ii = torch.cat([torch.arange(sl[i].start, sl[i].stop) for i in idx])
        v = torch.cat([vecs[i].reshape(-1) for i in idx])
        res.append(v @ H[ii][:, ii] @ v)
    return torch.stack(res)


@pytest.mark.parametrize("kind", NETS)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_hessian_blocks_match_dense_hessian(kind, loss):
    net, x, y, params, blocks, vecs, loss_of, lf = _setup(kind, loss)
    H = full_hessian_dense(loss_of, params)
    expected = _dense_block_forms(H, params, blocks, vecs)
    grads = torch.autograd.grad(lf(net(x), y), params, create_graph=True)
    got = torch.stack(hessian_block_forms(grads, params, vecs, blocks))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-10)
    # the full Hessian-vector product dotted per block is a different quantity
    hv_full = H @ torch.cat([v.reshape(-1) for v in vecs])
    sl = _slices(params)
    wrong = torch.stack([sum(hv_full[sl[i]] @ vecs[i].reshape(-1) for i in idx) for idx in blocks])
    assert not torch.allclose(wrong, expected, rtol=1e-3)


def _dense_ggn(net, x, params, names_params, lf, y):
    names = [n for n, _ in names_params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    sizes = [p.numel() for p in params]
    buffers = {k: v.clone() for k, v in net.named_buffers()}

    def out_of(v):
        ps = [t.reshape(p.shape) for t, p in zip(torch.split(v, sizes), params)]
        return functional_call(net, {**dict(zip(names, ps)), **buffers}, (x,)).reshape(-1)

    J = torch.autograd.functional.jacobian(out_of, flat)
    z = out_of(flat).detach()
    shape = net(x).shape
    Q = torch.autograd.functional.hessian(lambda v: lf(v.reshape(shape), y), z)
    return J.T @ Q @ J


@pytest.mark.parametrize("kind", NETS)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_ggn_blocks_match_dense_gauss_newton(kind, loss):
    net, x, y, params, blocks, vecs, _, lf = _setup(kind, loss)
    G = _dense_ggn(net, x, params, list(net.named_parameters()), lf, y)
    expected = _dense_block_forms(G, params, blocks, vecs)
    out = net(x)
    got = torch.stack(ggn_block_forms(out, params, vecs, blocks, lambda z: lf(z, y)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-10)
    assert (got >= -1e-12).all()  # PSD for convex losses


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_ggn_equals_hessian_block_for_relu(loss):
    net, x, y, params, blocks, vecs, _, lf = _setup("relu", loss)
    out = net(x)
    grads = torch.autograd.grad(lf(out, y), params, create_graph=True)
    h = torch.stack(hessian_block_forms(grads, params, vecs, blocks))
    g = torch.stack(ggn_block_forms(out, params, vecs, blocks, lambda z: lf(z, y)))
    torch.testing.assert_close(h, g, rtol=1e-6, atol=1e-12)


def test_tanh_hessian_and_ggn_differ():
    net, x, y, params, blocks, vecs, _, lf = _setup("tanh", "ce")
    out = net(x)
    grads = torch.autograd.grad(lf(out, y), params, create_graph=True)
    h = torch.stack(hessian_block_forms(grads, params, vecs, blocks))
    g = torch.stack(ggn_block_forms(out, params, vecs, blocks, lambda z: lf(z, y)))
    assert not torch.allclose(h[0], g[0], rtol=1e-3)  # first layer: tanh'' terms
    torch.testing.assert_close(h[1], g[1], rtol=1e-6, atol=1e-12)  # last layer is linear


def test_loss_output_hvp_cross_entropy_closed_form():
    torch.manual_seed(0)
    z, y = torch.randn(5, 4, dtype=D), torch.tensor([0, 1, 2, 3, 0])
    v = torch.randn(5, 4, dtype=D)
    (qv,) = loss_output_hvp(z, lambda t: F.cross_entropy(t, y), [v])
    p = z.softmax(-1)
    expected = (p * v - p * (p * v).sum(-1, keepdim=True)) / 5  # (diag(p) - p p^T) v / N
    torch.testing.assert_close(qv, expected)


@pytest.mark.parametrize("kind", ["tanh", "batchnorm"])
@pytest.mark.parametrize("central", [False, True])
def test_finite_differences_approximate_the_block(kind, central):
    net, x, y, params, blocks, vecs, _, lf = _setup(kind, "ce")
    grads = torch.autograd.grad(lf(net(x), y), params, create_graph=True)
    exact = torch.stack(hessian_block_forms(grads, params, vecs, blocks))

    def grad_fn():
        return torch.autograd.grad(lf(net(x), y), params)

    before = [p.detach().clone() for p in params]
    with preserve_buffers([net]):
        got = torch.stack(fd_hessian_block_forms(grad_fn, params, vecs, blocks, central=central))
    for a, b in zip(before, params):
        assert torch.equal(a, b)  # restored bit for bit
    torch.testing.assert_close(got, exact, rtol=1e-5 if central else 1e-6, atol=1e-9)


def test_finite_differences_float32_error_is_small():
    net, x, y, params, blocks, vecs, _, lf = _setup("tanh", "ce")
    grads = torch.autograd.grad(lf(net(x), y), params, create_graph=True)
    exact = torch.stack(hessian_block_forms(grads, params, vecs, blocks))
    net32 = net.float()
    p32 = list(net32.parameters())
    v32 = [v.float() for v in vecs]

    def grad_fn():
        return torch.autograd.grad(lf(net32(x.float()), y), p32)

    fwd = torch.stack(fd_hessian_block_forms(grad_fn, p32, v32, blocks)).double()
    cen = torch.stack(fd_hessian_block_forms(grad_fn, p32, v32, blocks, central=True)).double()
    assert ((fwd - exact).abs() / exact.abs()).max() < 2e-2
    assert ((cen - exact).abs() / exact.abs()).max() < 2e-3


def test_preserve_buffers_restores_batchnorm_running_stats_on_error():
    net, x, *_ = _setup("batchnorm", "ce")
    before = {k: v.clone() for k, v in net.named_buffers()}
    with pytest.raises(RuntimeError), preserve_buffers([net]):
        net(x)
        raise RuntimeError("boom")
    for k, v in net.named_buffers():
        assert torch.equal(v, before[k]), k


class _Counter(nn.Module):
    """Replaces its buffer by a new tensor in forward (not in place), and updates a child's
    buffer in place from the parent's forward."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))
        self.child = nn.BatchNorm1d(3)

    def forward(self, x):
        self.calls = self.calls + 1
        self.child.running_mean.add_(1.0)
        return self.child(x)


def test_preserve_forward_buffers_finds_the_modules_that_run():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), _Counter(), nn.BatchNorm1d(3, momentum=None))
    idle = nn.BatchNorm1d(3)  # never runs inside the block: not touched, not recorded
    x = torch.randn(8, 3)
    net(x)
    before = {k: v.clone() for k, v in net.named_buffers()}
    objects = {k: v for k, v in net.named_buffers()}
    with pytest.raises(RuntimeError, match="boom"), preserve_forward_buffers():
        for _ in range(3):
            net(x)
        assert int(net[2].num_batches_tracked) == 4 and float(net[1].calls) == 4
        raise RuntimeError("boom")
    for k, v in net.named_buffers():
        assert torch.equal(v, before[k]), k
        assert v is objects[k], k  # the original tensor objects, also for the replaced one
    idle(x)  # the hook is gone: outside the block buffers update as usual
    assert int(idle.num_batches_tracked) == 1
    # modules named explicitly are restored even when their forward is not seen
    with preserve_forward_buffers([idle]), torch.no_grad():
        idle.running_mean.add_(5.0)
    assert int(idle.num_batches_tracked) == 1 and bool((idle.running_mean.abs() < 5).all())


def test_second_order_errors_rewrites_only_the_attention_error():
    torch_msg = (
        "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not "
        "implemented"
    )
    with pytest.raises(RuntimeError, match=r"^who: the model's scaled_dot_product_attention") as e:
        with second_order_errors("who", "use route X"):
            raise RuntimeError(torch_msg)
    assert str(e.value).endswith("or use route X")
    assert "sdpa_kernel(torch.nn.attention.SDPBackend.MATH)" in str(e.value)
    assert str(e.value.__cause__) == torch_msg
    with pytest.raises(RuntimeError, match=r"^other$"), second_order_errors("who", "x"):
        raise RuntimeError("other")
    with pytest.raises(ValueError, match=r"^derivative"), second_order_errors("who", "x"):
        raise ValueError(torch_msg)


def test_parameters_restored_when_grad_fn_fails():
    _, _, _, params, blocks, vecs, *_ = _setup("tanh", "ce")
    before = [p.detach().clone() for p in params]
    calls = []

    def grad_fn():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return [torch.zeros_like(p) for p in params]

    with pytest.raises(RuntimeError):
        fd_hessian_block_forms(grad_fn, params, vecs, blocks)
    for a, b in zip(before, params):
        assert torch.equal(a, b)


# ------------------------------------------------------------- one implementation
def test_ggn_blocks_are_the_shared_jvps_times_the_autograd_q():
    """LW's ``ggn_block_forms`` is ``jvp_double_vjp`` (ADLER's route) + ``loss_output_hvp``,
    bit for bit; ``LinearGraph.tangents`` (ADLER's backward route) and forward-mode
    ``jvp_forward`` give the same ``J u`` up to rounding."""
    net, x, y, params, blocks, vecs, _, lf = _setup("tanh", "ce")
    out = net(x)
    got = ggn_block_forms(out, params, vecs, blocks, lambda z: lf(z, y))
    pairs = [[(i, vecs[i]) for i in idx] for idx in blocks]
    jvps = jvp_double_vjp(out, params, pairs)
    qvs = loss_output_hvp(out, lambda z: lf(z, y), jvps)
    for g, jv, qv in zip(got, jvps, qvs):
        assert torch.equal(g, (jv * qv).sum())
    # the loss's Q through the closed form (ADLER's named losses) agrees to rounding
    closed = [quadratic_form("cross_entropy", out, jv, y) for jv in jvps]
    torch.testing.assert_close(torch.stack(got), torch.stack(closed), rtol=1e-12, atol=0)
    _, fwd = jvp_forward(net, x, params, pairs)
    for a, b in zip(jvps, fwd):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # a gradient graph linear in z = dL/dF, as ADLER's backward keeps it
    z = torch.zeros_like(out, requires_grad=True)
    ws = torch.autograd.grad(out, params, z, create_graph=True)
    graph = LinearGraph(out, z, {id(p): w for p, w in zip(params, ws)}, torch.zeros(()))
    for a, b in zip(jvps, graph.tangents(params, pairs)):
        assert torch.equal(a, b)


def test_jvps_of_a_block_the_outputs_do_not_depend_on_are_zero():
    net, x, y, params, blocks, vecs, _, lf = _setup("tanh", "ce")
    unused = nn.Linear(2, 2).to(D)
    ps = [*params, unused.weight]
    vs = [*vecs, torch.ones(2, 2, dtype=D)]
    out = net(x)
    (jv,) = jvp_double_vjp(out, ps, [[(len(params), vs[-1])]])
    assert torch.equal(jv, torch.zeros_like(out))
    q = ggn_block_forms(out, ps, vs, [[len(params)], blocks[0]], lambda z: lf(z, y))
    assert float(q[0]) == 0.0 and float(q[1]) > 0


def test_jvp_double_vjp_names_the_missing_graph_when_asked():
    net, x, y, params, blocks, vecs, _, lf = _setup("tanh", "ce")
    out = net(x)
    lf(out, y).backward()  # frees the graph
    pairs = [[(i, vecs[i]) for i in blocks[0]]]
    with pytest.raises(RuntimeError, match=r"^route X needs the graph$") as e:
        jvp_double_vjp(out, params, pairs, no_graph="route X needs the graph")
    assert e.value.__cause__ is not None  # torch's error, chained
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time"):
        jvp_double_vjp(out, params, pairs)  # no message given: torch's own


def test_jvp_forward_names_who_for_a_foreign_parameter():
    net, x, *_ = _setup("tanh", "ce")
    other = nn.Linear(2, 2).to(D)
    with pytest.raises(ValueError, match=r"^my rule: the model does not hold some parameters"):
        jvp_forward(net, x, [other.weight], [[(0, torch.ones(2, 2, dtype=D))]], who="my rule")


def test_loss_hessian_vector_products_are_one_implementation():
    """``hessian_vector_product`` on a callable is ``loss_output_hvp`` (bit for bit), and a
    loss linear in the outputs has ``Q = 0`` in both."""
    torch.manual_seed(0)
    z, y = torch.randn(5, 4, dtype=D), torch.tensor([0, 1, 2, 3, 0])
    v = torch.randn(5, 4, dtype=D)

    def ce(t):
        return F.cross_entropy(t, y)

    assert torch.equal(hessian_vector_product(ce, z, v), loss_output_hvp(z, ce, [v])[0])

    def linear(t):
        return t.sum()

    (qv,) = loss_output_hvp(z, linear, [v])
    assert torch.equal(qv, torch.zeros_like(v))
    assert torch.equal(hessian_vector_product(linear, z, v), torch.zeros_like(v))


def test_finite_differences_take_complete_norms_from_the_caller():
    """``sq_norms`` (the block norms packed into the caller's own reduction, as LW does under
    FSDP2) gives the value computed without them, bit for bit, when they are the same sums."""
    from lrfree.curvature._common import dot

    net, x, y, params, blocks, vecs, _, lf = _setup("tanh", "ce")

    def grad_fn():
        return torch.autograd.grad(lf(net(x), y), params)

    ref = fd_hessian_block_forms(grad_fn, params, vecs, blocks, central=True)
    dsq = [dot([vecs[i] for i in idx], [vecs[i] for i in idx], D) for idx in blocks]
    wsq = [dot([params[i] for i in idx], [params[i] for i in idx], D) for idx in blocks]
    got = fd_hessian_block_forms(grad_fn, params, vecs, blocks, central=True, sq_norms=(dsq, wsq))
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    # forward differences reuse base_grads when given: one evaluation fewer
    calls = []

    def counting():
        calls.append(1)
        return grad_fn()

    fd_hessian_block_forms(counting, params, vecs, blocks, base_grads=grad_fn())
    assert len(calls) == len(blocks)


# ------------------------------------------------------------------ the package
OLD_NAMES = {  # lrfree.curvature's public names before it became a package: they stay
    "fd_hessian_block_forms",
    "full_hessian_dense",
    "ggn_block_forms",
    "hessian_block_forms",
    "loss_output_hvp",
    "preserve_buffers",
    "preserve_forward_buffers",
    "preserve_rng",
    "second_order_errors",
}
MODULES = [
    "lrfree.curvature",
    "lrfree.curvature._common",
    "lrfree.curvature.fd",
    "lrfree.curvature.ggn",
    "lrfree.curvature.hessian",
    "lrfree.curvature.loss",
    "lrfree.loss_hessian",
]


def test_public_names_stay_importable():
    assert set(lrfree.curvature.__all__) >= OLD_NAMES
    for name in lrfree.curvature.__all__:
        assert hasattr(lrfree.curvature, name), name
    import lrfree.curvature.loss as loss
    import lrfree.loss_hessian as old

    for name in old.__all__:  # the older module name re-exports the same objects
        assert getattr(old, name) is getattr(loss, name), name
    assert set(old.__all__) == set(loss.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests_pass(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
