"""The multi-tensor fast paths of the rules (issue 11): they are taken where they apply, they
equal the readable for-loop reference in float64 (parameters and every state entry), and they
read no tensor value on the host during ``step()``.

The generic suite (test_generic.py) runs the same parity check over every registered spec at
its defaults; the cases here add the options that change the arithmetic (weight decay, both
kinds, ``maximize``, schedules, multi-member blocks, three CAM-HD levels, parameters without a
gradient) and check that the fast path actually ran, so the parity is not vacuous.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import lrfree
from lrfree.rules.hypergradient import CAMHD, Hypergradient
from lrfree.rules.lipschitz import Lipschitz


def _composed(direction: str, rule: str):
    def make(params, **kw):
        return lrfree.Composed(params, direction=direction, rule=rule, **kw)

    return make


# (id, factory, kwargs, fast-path method that must return a value, or None)
CASES: list[tuple[str, Any, dict[str, Any], tuple[type, str] | None]] = [
    ("adalip", lrfree.AdaLip, {"lr": 0.1}, (Lipschitz, "_rates_foreach")),
    (
        "adalip-layer-momentum-sqrt-theoretical-wd-max",
        _composed("momentum", "lipschitz"),
        {
            "lr": 0.1,
            "momentum": 0.9,
            "blocks": "layer",
            "schedule": "sqrt",
            "c_schedule": "theoretical",
            "weight_decay": 1e-2,
            "maximize": True,
        },
        (Lipschitz, "_rates_foreach"),
    ),
    ("rmslip-global", lrfree.RMSLip, {"blocks": "global"}, (Lipschitz, "_rates_foreach")),
    ("adalipu", lrfree.AdaLipU, {"lr": 0.1, "blocks": "layer"}, (Lipschitz, "_rates_foreach")),
    (
        "adamwlipu-wd-sqrt",
        _composed("adamw", "lipschitz-u"),
        {"lr": 1e-2, "weight_decay": 0.1, "schedule": "sqrt", "blocks": "tensor"},
        (Lipschitz, "_rates_foreach"),
    ),
    ("sgd-hd", lrfree.SGDHD, {"lr": 0.1, "hypergrad_lr": 1e-3}, (Hypergradient, "_rates_vector")),
    (
        "sgd-hd-tensor-wd-max-decay",
        _composed("sgd", "hypergradient"),
        {
            "lr": 0.1,
            "hypergrad_lr": 1e-3,
            "blocks": "tensor",
            "weight_decay": 1e-2,
            "maximize": True,
            "decay_rate": 0.1,
        },
        (Hypergradient, "_rates_vector"),
    ),
    (
        "adamw-hd-layer",
        _composed("adamw", "hypergradient"),
        {"lr": 1e-2, "hypergrad_lr": 1e-5, "blocks": "layer", "weight_decay": 0.1},
        (Hypergradient, "_rates_vector"),
    ),
    (
        "sgd-camhd",
        lrfree.SGDCAMHD,
        {"lr": 0.1, "hypergrad_lr": 1e-3},
        (CAMHD, "_rates_foreach"),
    ),
    (
        "sgdn-camhd-3-levels",
        lrfree.SGDNCAMHD,
        {"lr": 0.1, "hypergrad_lr": 1e-3, "levels": ("tensor", "layer", "global")},
        (CAMHD, "_rates_foreach"),
    ),
    (
        "adamw-camhd-wd",
        _composed("adamw", "cam-hd"),
        {"lr": 1e-2, "hypergrad_lr": 1e-5, "weight_decay": 0.1, "blocks": "layer"},
        (CAMHD, "_rates_foreach"),
    ),
    ("sgd-tlr", lrfree.SGDTLR, {"lr": 0.1, "update_every": 2, "window_floor": 0.0}, None),
    (
        "adamw-tlr-layer",
        _composed("adamw", "tlr"),
        {"lr": 1e-2, "update_every": 3, "steps_per_epoch": None, "blocks": "layer"},
        None,
    ),
]


def _problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=dtype)
    y = torch.arange(64) % 3
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh()
    )
    model.append(torch.nn.Linear(8, 3))
    return model.to(dtype), x, y


def _train(factory, kwargs, foreach: bool, steps: int = 8, frozen_until: int = 0):
    """``frozen_until``: the middle layer gets no gradient for that many steps (blocks that
    join late)."""
    model, x, y = _problem()
    opt = factory(model.named_parameters(), **kwargs)
    for g in opt.param_groups:
        g["foreach"] = foreach
    for t in range(steps):
        model[2].requires_grad_(t >= frozen_until)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def _assert_same(run_a, run_b):
    (m1, o1), (m2, o2) = run_a, run_b
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
        assert set(o1.state[a]) == set(o2.state[b])
        for k, v in o1.state[a].items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(v, o2.state[b][k], rtol=1e-10, atol=1e-15, msg=k)
            else:
                assert v == o2.state[b][k], k


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fast_path_runs_and_matches_reference(case, monkeypatch):
    _, factory, kwargs, fast = case
    calls = {"taken": 0, "declined": 0}
    if fast is not None:
        cls, name = fast
        original = getattr(cls, name)

        def spy(self, *a, **kw):
            out = original(self, *a, **kw)
            calls["taken" if out is not None else "declined"] += 1
            return out

        monkeypatch.setattr(cls, name, spy)
    ref = _train(factory, kwargs, foreach=False)
    assert calls["taken"] == calls["declined"] == 0, "the reference must not use the fast path"
    fast_run = _train(factory, kwargs, foreach=True)
    if fast is not None:
        assert calls["taken"] == 8 and calls["declined"] == 0, calls
    _assert_same(ref, fast_run)
    # the rates moved: the comparison covers adaptive arithmetic, not constants
    moved = [
        v
        for st in fast_run[1].state.values()
        for k, v in st.items()
        if k.endswith(".alpha") and isinstance(v, torch.Tensor)
    ]
    assert moved and any(not torch.all(v == 1) for v in moved)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fast_path_with_late_blocks_matches_reference(case):
    """A layer without gradients for the first 3 steps: restricted partitions, blocks whose
    own step count lags (AdaLip falls back to the reference on the steps where counts mix)."""
    _, factory, kwargs, _ = case
    ref = _train(factory, kwargs, foreach=False, frozen_until=3)
    fast_run = _train(factory, kwargs, foreach=True, frozen_until=3)
    _assert_same(ref, fast_run)


_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.parametrize(
    "case", [c for c in CASES if "adam" not in c[0] and "rms" not in c[0]], ids=lambda c: c[0]
)
def test_fast_path_reads_no_tensor_value_on_the_host(case, monkeypatch):
    """Inside ``step()`` (``nonfinite="off"``: the policy check's one sync is its own), no
    tensor value is read into Python: no ``.item()``, ``bool(t)``, ``float(t)``, ``tolist``.
    On a GPU each of these would be a device synchronisation. (Adam / RMSprop directions
    read their CPU step counter, as torch.optim does, and are left out.)"""
    _, factory, kwargs, _ = case
    model, x, y = _problem()
    opt = factory(model.named_parameters(), **kwargs)
    for g in opt.param_groups:
        g["foreach"] = True
        g["nonfinite"] = "off"
    reads: list[str] = []
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for name in _READS:
            original = getattr(torch.Tensor, name)

            def spy(self, *a, _n=name, _o=original, **kw):
                reads.append(_n)
                return _o(self, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, spy)
        try:
            opt.step()
        finally:
            monkeypatch.undo()
    assert reads == [], reads


def test_scalar_inner_matches_inner_and_declines_vector_blocks():
    model, _, _ = _problem()
    names, params = zip(*model.named_parameters())
    xs = [torch.randn_like(p) for p in params]
    ys = [torch.randn_like(p) for p in params]
    xs[1] = None  # a missing entry contributes nothing
    for kind in ("global", "layer", "tensor"):
        part = lrfree.blocks.Partition.build(list(params), list(names), kind)
        vec = part.scalar_inner(xs, ys)
        ref = torch.stack(part.inner(xs, ys))
        torch.testing.assert_close(vec, ref, rtol=1e-13, atol=0)
        sq = part.scalar_inner(ys, ys)
        torch.testing.assert_close(sq, torch.stack(part.sq_norm(ys)), rtol=1e-13, atol=0)
        assert [float(v) for v in part.inner(xs, ys, foreach=True)] == vec.tolist()
    for kind in ("filter", "element"):
        part = lrfree.blocks.Partition.build(list(params), list(names), kind)
        assert part.scalar_inner(xs, ys) is None
        # inner(foreach=True) falls back to the per-block reference
        for a, b in zip(part.inner(xs, ys, foreach=True), part.inner(xs, ys)):
            assert torch.equal(a, b)


def test_nonfinite_screen_overflow_of_finite_gradients_still_steps():
    """The policy's cheap screen (a sum per tensor on the CPU) overflows on huge finite
    gradients; the exact check behind it must then let the step proceed."""
    x = torch.nn.Parameter(torch.zeros(2))
    opt = lrfree.SGDHD([x], lr=1e-40, hypergrad_lr=0.0)
    x.grad = torch.tensor([3e38, 3e38])  # finite; the float32 sum is inf
    opt.step()
    assert opt.skipped_steps == 0
    assert torch.all(x < 0)  # moved along -g
    x.grad = torch.tensor([1.0, float("nan")])
    with pytest.warns(RuntimeWarning, match="non-finite gradient"):
        opt.step()
    assert opt.skipped_steps == 1
