"""Core: validation messages, blocks and reductions, effective_lr names, the rate-apply path."""

from __future__ import annotations

import warnings

import pytest
import torch

import lrfree
from lrfree.blocks import Partition
from lrfree.rules import RULES, Rule, register_rule


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3),
        torch.nn.BatchNorm2d(3),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 4),
    )


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            {"direction": "lion"},
            ValueError,
            r"Invalid direction: 'lion' \(expected one of \['adam'",
        ),
        ({"rule": "magic"}, ValueError, r"Invalid rule: 'magic' \(expected one of \[.*'constant'"),
        ({"blocks": "row"}, ValueError, r"Invalid blocks: 'row' \(expected one of \['global'"),
        ({"blocks": 3}, TypeError, r"Invalid blocks: 3"),
        (
            {"direction": "sgd", "momentum": 0.9},
            TypeError,
            r"Unknown hyperparameter\(s\) \['momentum'\] for direction 'sgd' and rule 'constant'; "
            r"known: \['averaging', 'foreach', 'lr', 'maximize', 'nonfinite', 'sf_beta', "
            r"'weight_decay'\]",
        ),
        (
            {"betas": (0.9, 1.0)},
            ValueError,
            r"Invalid betas\[1\]: 1\.0 \(expected 0 <= betas\[1\] < 1\)",
        ),
        ({"betas": 0.9}, TypeError, r"Invalid betas: 0\.9 \(expected a pair of floats\)"),
        ({"eps": -1e-8}, ValueError, r"Invalid eps: -1e-08 \(expected 0 <= eps\)"),
        ({"lr": float("inf")}, ValueError, r"Invalid lr: inf \(expected a finite number"),
        ({"lr": True}, TypeError, r"Invalid lr: True \(expected a real number\)"),
        ({"amsgrad": 1}, TypeError, r"Invalid amsgrad: 1 \(expected True or False\)"),
        ({"weight_decay": -0.1}, ValueError, r"Invalid weight_decay: -0\.1 .*\[direction 'adamw'"),
        (
            {"direction": "momentum", "momentum": 0.0},
            ValueError,
            r"Invalid momentum: 0\.0 \(expected 0 < momentum < 1\)",
        ),
        ({"direction": "momentum", "dampening": 2.0}, ValueError, r"Invalid dampening: 2\.0"),
        ({"direction": "rmsprop", "alpha": 1.5}, ValueError, r"Invalid alpha: 1\.5"),
        ({"direction": "rmsprop", "centered": "yes"}, TypeError, r"Invalid centered: 'yes'"),
        ({"direction": "nesterov", "dampening": 0.1}, TypeError, r"Unknown hyperparameter"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lrfree.Composed(_net().named_parameters(), **kwargs)


def test_param_group_values_are_validated():
    net = _net()
    opt = lrfree.Composed(list(net[0].named_parameters(prefix="0")), direction="adam")
    with pytest.raises(ValueError, match=r"Invalid eps: -1\.0"):
        opt.add_param_group({"params": list(net[3].named_parameters(prefix="3")), "eps": -1.0})
    with pytest.raises(ValueError, match=r"Invalid rule: 'nope'"):
        opt.add_param_group({"params": list(net[3].named_parameters(prefix="3")), "rule": "nope"})


def test_step_rejects_unknown_inputs():
    net = _net()
    opt = lrfree.Composed(net.named_parameters())
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['outputs'\]"):
        opt.step(outputs=torch.zeros(1))


def test_hyperparameters_are_plain_python_values():
    opt = lrfree.Composed(_net().named_parameters(), lr=1, betas=[0.8, 0.9])
    g = opt.param_groups[0]
    assert type(g["lr"]) is float and g["betas"] == (0.8, 0.9)


# --------------------------------------------------------------------- blocks
def _named():
    net = _net()
    names, params = zip(*net.named_parameters())
    return net, list(names), list(params)


def test_layer_blocks_group_weight_and_bias_by_module():
    _, names, params = _named()
    part = Partition.build(params, names, "layer")
    assert [(s.name, s.members) for s in part.sets] == [("0", [0, 1]), ("1", [2, 3]), ("3", [4, 5])]


@pytest.mark.parametrize("kind", ["global", "layer", "tensor", "filter", "element"])
def test_reductions_match_a_manual_sum(kind):
    _, names, params = _named()
    torch.manual_seed(1)
    xs = [torch.randn_like(p) for p in params]
    ys = [torch.randn_like(p) for p in params]
    part = Partition.build(params, names, kind)
    got = part.inner(xs, ys)
    for s, v in zip(part.sets, got):
        if kind == "element":
            (i,) = s.members
            torch.testing.assert_close(v, xs[i] * ys[i])
        elif kind == "filter":
            want = sum((xs[i] * ys[i]).reshape(xs[i].shape[0], -1).sum(1) for i in s.members)
            torch.testing.assert_close(v, want)
            assert v.shape == (params[s.owner].shape[0],)
        else:
            want = sum((xs[i] * ys[i]).sum() for i in s.members)
            torch.testing.assert_close(v, want)
    sq = part.sq_norm(xs)
    for a, b in zip(sq, part.inner(xs, xs)):
        torch.testing.assert_close(a, b)
    for i, b in enumerate(part.broadcast(got)):
        assert (b * params[i]).shape == params[i].shape


def test_filter_blocks_pair_rows_with_their_bias():
    lin = torch.nn.Linear(3, 2)
    names, params = zip(*lin.named_parameters())
    part = Partition.build(list(params), list(names), "filter")
    (s,) = part.sets
    assert s.shape == (2,) and s.labels == ["(root)[0]", "(root)[1]"]
    xs = [torch.ones(2, 3), torch.tensor([10.0, 20.0])]
    torch.testing.assert_close(part.sq_norm(xs)[0], torch.tensor([103.0, 403.0]))


def test_restrict_keeps_only_active_members():
    _, names, params = _named()
    part = Partition.build(params, names, "layer").restrict([True, False, False, False, True, True])
    assert [(s.name, s.members) for s in part.sets] == [("0", [0]), ("3", [4, 5])]
    part = Partition.build(params, names, "layer").restrict([False, True, True, True, True, True])
    assert part.sets[0].members == [1] and part.sets[0].owner == 0  # state stays on the weight


def test_unnamed_parameters_fall_back_to_tensor_blocks_with_a_warning():
    net = _net()
    with pytest.warns(UserWarning, match=r"needs parameter names"):
        opt = lrfree.Composed(net.parameters(), blocks="layer")
        opt.effective_lr()
    assert list(opt.effective_lr()) == [f"param{i}" for i in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = lrfree.Composed(net.parameters(), blocks="global")
        assert list(opt.effective_lr()) == ["global"]


def test_effective_lr_names_per_granularity():
    net = _net()
    assert list(lrfree.Composed(net.named_parameters(), blocks="tensor").effective_lr()) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "3.weight",
        "3.bias",
    ]
    filt = lrfree.Composed(net.named_parameters(), blocks="filter", lr=0.5).effective_lr()
    assert list(filt)[:4] == ["0[0]", "0[1]", "0[2]", "1[0]"] and len(filt) == 3 + 3 + 4
    assert set(filt.values()) == {0.5}
    two = lrfree.Composed(
        [
            {"params": list(net[0].named_parameters(prefix="0"))},
            {"params": list(net[3].named_parameters(prefix="3")), "lr": 0.1},
        ],
        blocks="global",
        lr=0.2,
    ).effective_lr()
    assert two == {"global[0]": 0.2, "global[1]": 0.1}


# -------------------------------------------------------------- apply path
class _Half(Rule):
    """A test rule: a fixed multiplier of 0.5 per block, through the tensor-rate path."""

    name = "test-half"

    def rates(self, ctx):
        out = []
        for s in ctx.partition.sets:
            out.append(self.ensure(ctx, s, "alpha", 0.5))
        return out


if "test-half" not in RULES:
    register_rule(_Half())


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("direction", ["sgd", "adamw"])
@pytest.mark.parametrize("blocks", ["global", "layer", "filter", "element"])
def test_rate_path_matches_torch_at_half_the_lr(direction, blocks, foreach):
    torch.manual_seed(0)
    ref_net = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    ).double()
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    ).double()
    net.load_state_dict(ref_net.state_dict())
    cls = torch.optim.SGD if direction == "sgd" else torch.optim.AdamW
    ref = cls(ref_net.parameters(), lr=0.05, weight_decay=0.1, foreach=False)
    opt = lrfree.Composed(
        net.named_parameters(),
        direction=direction,
        rule="test-half",
        blocks=blocks,
        lr=0.1,
        weight_decay=0.1,
        foreach=foreach,
    )
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    for _ in range(20):
        for m, o in ((ref_net, ref), (net, opt)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for a, b in zip(ref_net.parameters(), net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    eff = opt.effective_lr()
    assert all(v == pytest.approx(0.05) for v in eff.values())
    alpha = next(v for k, v in opt.state[net[0].weight].items() if k == "test-half.alpha")
    assert alpha.dtype == torch.float64  # float64 params keep float64 rates


def test_bf16_parameters_use_float32_rates_and_arithmetic():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3).to(torch.bfloat16)
    opt = lrfree.Composed(
        net.named_parameters(), direction="adamw", rule="test-half", lr=1e-3, weight_decay=1e-2
    )
    x = torch.randn(8, 4, dtype=torch.bfloat16)
    before = net.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        net(x).float().pow(2).mean().backward()
        opt.step()
    assert opt.state[net.weight]["test-half.alpha"].dtype == torch.float32
    assert net.weight.dtype == torch.bfloat16
    assert not torch.equal(before, net.weight)


def test_a_rejected_param_group_is_not_kept():
    net = _net()
    opt = lrfree.Composed(list(net[0].named_parameters(prefix="0")))
    with pytest.raises(ValueError):
        opt.add_param_group({"params": list(net[3].named_parameters(prefix="3")), "lr": -1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": list(net[3].named_parameters(prefix="3")), "lr": 0.5})
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.5]


# ------------------------------------------- the one curvature entry: opt.backward
_F = torch.nn.functional


def _mlp64(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)
    ).double()


def _batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(8, 3, generator=g, dtype=torch.float64),
            torch.randint(0, 4, (8,), generator=g),
        )
        for _ in range(n)
    ]


def _train(make, feed):
    """Parameters after a few steps fed by ``feed(opt, model, x, y)`` (then ``step``)."""
    model = _mlp64()
    opt = make(model)
    for x, y in _batches():
        opt.zero_grad()
        feed(opt, model, x, y)
    return [p.detach().clone() for p in model.parameters()], opt


def _lw(**kw):
    return lambda m: lrfree.SGDLW(m.named_parameters(), update_every=2, **kw)


def _loss_fn(y):
    return lambda z: _F.cross_entropy(z, y)


def _new_lw(opt, model, x, y):
    opt.backward(_F.cross_entropy(model(x), y))
    opt.step()


def _old_lw(opt, model, x, y):
    _F.cross_entropy(model(x), y).backward(create_graph=opt.curvature_due())
    opt.step()


def _new_lw_ggn(opt, model, x, y):
    out = model(x)
    opt.backward(_F.cross_entropy(out, y), out, loss_fn=_loss_fn(y))
    opt.step()


def _old_lw_ggn(opt, model, x, y):
    out = model(x)
    _F.cross_entropy(out, y).backward(retain_graph=opt.curvature_due())
    opt.step(outputs=out, loss_fn=_loss_fn(y))


def _new_adler(opt, model, x, y):
    out = model(x)
    opt.backward(_F.cross_entropy(out, y), out)
    opt.step()


def _alias_adler(opt, model, x, y):
    out = model(x)
    lrfree.rules.adler.backward(opt, _F.cross_entropy(out, y), out)
    opt.step(outputs=out)


def _old_adler(opt, model, x, y):
    out = model(x)
    _F.cross_entropy(out, y).backward(retain_graph=True)
    opt.step(outputs=out)


def _new_plain(opt, model, x, y):
    out = model(x)
    opt.backward(_F.cross_entropy(out, y), out)
    opt.step()


def _old_plain(opt, model, x, y):
    _F.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize(
    "make,new,old,tol",
    [
        (_lw(), _new_lw, _old_lw, 0.0),  # graph mode: the same backward, bit for bit
        (_lw(curvature="ggn"), _new_lw_ggn, _old_lw_ggn, 0.0),
        (
            lambda m: lrfree.ADLER(m.named_parameters(), update_every=2),
            _new_adler,
            _alias_adler,
            0.0,
        ),
        # the linear-graph route against the double-VJP route: the same numbers to rounding
        (
            lambda m: lrfree.ADLER(m.named_parameters(), blocks="layer"),
            _new_adler,
            _old_adler,
            1e-12,
        ),
        (
            lambda m: lrfree.SGDTLR(m.named_parameters(), update_every=2),
            _new_plain,
            _old_plain,
            0.0,
        ),
        (lambda m: lrfree.AdamHD(m.named_parameters()), _new_plain, _old_plain, 0.0),
    ],
    ids=["lw-hessian", "lw-ggn", "adler-alias", "adler-vjp", "tlr", "first-order"],
)
def test_backward_entry_gives_the_older_forms_trajectory(make, new, old, tol):
    """``opt.backward(loss[, outputs, ...]); opt.step()`` trains as the older feeding forms
    (float64): each curvature rule's own, and a plain ``loss.backward()`` for the rest."""
    a, opt_a = _train(make, new)
    b, _ = _train(make, old)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=tol, atol=tol)
    assert not opt_a._workspace().fed  # what backward kept is released by the step
    assert any(not torch.equal(pa, p0) for pa, p0 in zip(a, _train(make, lambda *_: None)[0]))


def test_backward_entry_builds_the_graph_only_on_curvature_steps():
    model = _mlp64()
    opt = lrfree.SGDLW(model.named_parameters(), update_every=2)
    graphs = []
    for x, y in _batches(4):
        opt.zero_grad()
        opt.backward(_F.cross_entropy(model(x), y))
        graphs.append(all(p.grad.requires_grad for p in model.parameters()))
        opt.step()
    assert graphs == [True, False, True, False]


def test_backward_entry_errors_say_what_is_missing_before_differentiating():
    x, y = _batches(1)[0]
    model = _mlp64()
    ggn = lrfree.SGDLW(model.named_parameters(), curvature="ggn")
    with pytest.raises(ValueError, match=r"opt.backward\(loss, outputs, loss_fn="):
        ggn.backward(_F.cross_entropy(model(x), y))
    adler = lrfree.ADLER(model.named_parameters())
    with pytest.raises(
        ValueError, match=r"needs the network outputs: opt.backward\(loss, outputs\)"
    ):
        adler.backward(_F.cross_entropy(model(x), y))
    assert all(p.grad is None for p in model.parameters())  # nothing was differentiated
    with pytest.raises(
        TypeError, match=r"backward\(\) got unexpected keyword argument\(s\) \['loss_fn'\]"
    ):
        lrfree.AdamHD(model.parameters()).backward(_F.cross_entropy(model(x), y), loss_fn=len)
    with pytest.raises(ValueError, match="outputs must be a tensor with a graph"):
        adler.backward(_F.cross_entropy(model(x), y), model(x).detach())


# ------------------------------------------------ what a rule sees: the context
def test_rules_see_a_context_without_the_optimizer():
    seen = {}

    class _Probe(Rule):
        name = "probe-ctx"
        clock = True

        def rates(self, ctx):
            seen["has_optimizer"] = hasattr(ctx, "optimizer")
            seen["step"] = ctx.step
            seen["objective"] = [None if g is None else g.clone() for g in ctx.objective]
            seen["tensor"] = len(ctx.partition_at("tensor").sets)
            return None

    register_rule(_Probe())
    try:
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
        b = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
        opt = lrfree.Composed(
            [w, b],
            direction="sgd",
            rule="probe-ctx",
            blocks="tensor",
            maximize=True,
            weight_decay=0.5,
        )
        for k in range(2):
            w.grad, b.grad = torch.tensor([1.0, -1.0], dtype=torch.float64), None
            w0 = w.detach().clone()
            opt.step()
            assert seen["step"] == k + 1 and seen["has_optimizer"] is False
        # -grad (maximize) plus the coupled L2 term: what the direction descends
        torch.testing.assert_close(seen["objective"][0], -w.grad + 0.5 * w0, rtol=0, atol=0)
        assert seen["objective"][1] is None and seen["tensor"] == 2
        w.grad = torch.tensor([float("nan"), 0.0], dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()  # skipped for the non-finite gradient: the group clock stays
        assert opt.state[w]["probe-ctx.step"] == 2
    finally:
        del RULES["probe-ctx"]


def test_cam_hd_caches_per_optimizer_not_per_process():
    rule = RULES["cam-hd"]
    model = _mlp64()
    opt = lrfree.SGDCAMHD(model.named_parameters(), lr=0.01)
    for x, y in _batches(2):
        opt.zero_grad()
        _F.cross_entropy(model(x), y).backward()
        opt.step()
    assert "_index_cache" not in vars(rule) and not any(
        isinstance(v, dict) for v in vars(rule).values()
    )
    assert opt._workspace().cache.get("cam-hd.index")  # the optimizer's own, freed with it


def test_old_skipped_counter_key_loads_as_rejected():
    """``"<rule>.skipped"`` (LW and ADLER before the rename) loads as ``"<rule>.rejected"``."""
    model = _mlp64()
    opt = lrfree.SGDLW(model.named_parameters(), update_every=1)
    for x, y in _batches(2):
        opt.zero_grad()
        opt.backward(_F.cross_entropy(model(x), y))
        opt.step()
    sd = opt.state_dict()
    old = {
        **sd,
        "state": {
            i: {(k.replace(".rejected", ".skipped")): v for k, v in st.items()}
            for i, st in sd["state"].items()
        },
    }
    assert any("layerwise.skipped" in st for st in old["state"].values())
    fresh = lrfree.SGDLW(_mlp64().named_parameters(), update_every=1)
    fresh.load_state_dict(old)
    for i, st in sd["state"].items():
        loaded = fresh.state[fresh.param_groups[0]["params"][i]]
        assert "layerwise.skipped" not in loaded
        if "layerwise.rejected" in st:
            assert torch.equal(loaded["layerwise.rejected"], st["layerwise.rejected"])
    assert any("layerwise.skipped" in st for st in old["state"].values())  # not modified
