"""The generic suite: every registered optimizer (tests/optim_db.py) gets all of these."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch

from optim_db import OPTIM_DB, OptimSpec, make_problem

SPECS = pytest.mark.parametrize("spec", OPTIM_DB, ids=[s.name for s in OPTIM_DB])


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _run(spec: OptimSpec, model, opt, x, y, n: int) -> list[float]:
    return [float(spec.run_step(model, opt, x, y).detach()) for _ in range(n)]


@SPECS
def test_loss_goes_down(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    losses = _run(spec, model, opt, x, y, spec.steps)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < spec.loss_ratio * losses[0], losses
    for p in model.parameters():
        assert torch.isfinite(p).all()


@SPECS
def test_resume_is_bit_identical(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 7)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    _run(spec, model, opt, x, y, 8)

    model2, _, _ = make_problem(seed=1)  # different initial weights: all comes from the load
    model2.load_state_dict(saved_model)
    opt2 = spec.build(model2)
    opt2.load_state_dict(saved_opt)
    _run(spec, model2, opt2, x, y, 8)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert opt.state_dict()["state"].keys() == opt2.state_dict()["state"].keys()
    for k, st in opt.state_dict()["state"].items():
        st2 = opt2.state_dict()["state"][k]
        assert st.keys() == st2.keys()
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                assert v.dtype == st2[name].dtype, name
                assert torch.equal(v, st2[name]), name
            else:
                assert v == st2[name], name


@SPECS
def test_weights_only_round_trip(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 5)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    opt2 = spec.build(copy.deepcopy(model))
    opt2.load_state_dict(loaded)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for k, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, opt2.state_dict()["state"][k][name])


@SPECS
def test_step_never_writes_lr_and_lr_scales_the_rate(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    for _ in range(4):
        before = [g["lr"] for g in opt.param_groups]
        spec.run_step(model, opt, x, y)
        assert [g["lr"] for g in opt.param_groups] == before
    eff = opt.effective_lr()
    assert eff and all(v == v and v >= 0 for v in eff.values())
    for g in opt.param_groups:
        g["lr"] *= 0.25
    eff2 = opt.effective_lr()
    assert eff.keys() == eff2.keys()
    for k in eff:
        assert eff2[k] == pytest.approx(0.25 * eff[k], rel=1e-6)


@SPECS
def test_zero_lr_from_lambda_scheduler_freezes_parameters(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 3 else 0.0)
    for _ in range(3):
        spec.run_step(model, opt, x, y)
        sched.step()
    assert all(g["lr"] == 0.0 for g in opt.param_groups)
    before = _params(model)
    for _ in range(3):
        spec.run_step(model, opt, x, y)
        sched.step()
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)


@SPECS
@pytest.mark.parametrize("kind", ["step", "onecycle", "plateau"])
def test_schedulers_are_not_overwritten(spec: OptimSpec, kind: str):
    model, x, y = make_problem()
    opt = spec.build(model)
    base = opt.param_groups[0]["lr"]
    if kind == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    elif kind == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=base, total_steps=12, cycle_momentum=False
        )
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    for _ in range(6):
        loss = spec.run_step(model, opt, x, y)
        sched.step(1.0) if kind == "plateau" else sched.step()
        expected = sched.get_last_lr() if kind != "plateau" else sched._last_lr
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected)
        assert torch.isfinite(torch.as_tensor(float(loss)))
    if kind in ("step", "plateau"):
        assert opt.param_groups[0]["lr"] < base
    for p in model.parameters():
        assert torch.isfinite(p).all()


@SPECS
def test_param_group_isolation(spec: OptimSpec):
    model, x, y = make_problem()
    first = dict(model[0].named_parameters(prefix="0"))
    second = dict(model[2].named_parameters(prefix="2"))
    wrap = (lambda d: list(d.items())) if spec.named else (lambda d: list(d.values()))
    groups = [{"params": wrap(first)}, {"params": wrap(second), "lr": 0.0}]
    opt = spec.factory(groups, **spec.kwargs)
    frozen = _params(model[2])
    moving = _params(model[0])
    for _ in range(4):
        spec.run_step(model, opt, x, y)
    for a, b in zip(frozen, model[2].parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(moving, model[0].parameters()))
    assert opt.param_groups[1]["lr"] == 0.0
    eff = opt.effective_lr()
    assert any(v > 0 for v in eff.values()) and any(v == 0 for v in eff.values())


@SPECS
def test_parameters_without_grad_are_left_alone(spec: OptimSpec):
    model, x, y = make_problem()
    extra = torch.nn.Linear(6, 3)  # a head used only from step 3 on
    model.add_module("extra", extra)
    model[0].bias.requires_grad_(False)  # frozen
    opt = spec.build(model)
    frozen = model[0].bias.detach().clone()
    extra_before = _params(extra)

    def fwd(step):
        out = model[2](model[1](model[0](x)))
        return out + extra(x) if step >= 3 else out

    for step in range(6):

        def closure(step=step):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(fwd(step), y)
            loss.backward(create_graph=getattr(opt, "curvature_due", lambda: False)())
            return loss

        if spec.step is None:
            opt.step(closure)
        else:  # custom-step optimizers: drive them through their own step with this model
            spec.step(_Wrapped(fwd, step), opt, x, y)
        if step < 3:
            for a, b in zip(extra_before, extra.parameters()):
                assert torch.equal(a, b)
            assert all("." in k for k in opt.state.get(extra.weight, {}))
    assert torch.equal(frozen, model[0].bias)
    assert model[0].bias not in opt.state or all(
        "." in k for k in opt.state[model[0].bias]
    )  # at most rule state held for its block
    assert any(not torch.equal(a, b) for a, b in zip(extra_before, extra.parameters()))
    for p in model.parameters():
        assert torch.isfinite(p).all()


class _Wrapped(torch.nn.Module):
    def __init__(self, fwd, step):
        super().__init__()
        self._fwd, self._step = fwd, step

    def forward(self, x):
        return self._fwd(self._step)


@SPECS
def test_bf16_parameters_keep_float32_rates(spec: OptimSpec):
    model, x, y = make_problem(dtype=torch.bfloat16)
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 5)
    sd = copy.deepcopy(opt.state_dict())
    opt2 = spec.build(model)
    opt2.load_state_dict(sd)
    n_rule = 0
    for p in model.parameters():
        for k, v in opt2.state.get(p, {}).items():
            if "." in k and isinstance(v, torch.Tensor) and v.is_floating_point():
                n_rule += 1
                assert v.dtype == torch.float32, k
    for st in sd["state"].values():
        for name, v in st.items():
            if "." in name and isinstance(v, torch.Tensor):
                assert v.dtype == torch.float32
    for p in model.parameters():
        assert torch.isfinite(p.float()).all()
    if opt.param_groups[0].get("rule", "constant") != "constant":
        assert n_rule > 0


@SPECS
def test_deepcopy_continues_identically(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 3)
    model2, opt2 = copy.deepcopy((model, opt))
    _run(spec, model, opt, x, y, 4)
    _run(spec, model2, opt2, x, y, 4)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@SPECS
def test_error_messages(spec: OptimSpec):
    model, _, _ = make_problem()
    assert spec.errors, "every optimizer lists its error cases"
    for case in spec.errors:
        with pytest.raises(case.exc, match=case.match):
            spec.build(model, **case.kwargs)


@SPECS
def test_effective_lr_names_are_module_paths(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    spec.run_step(model, opt, x, y)
    names = set(opt.effective_lr())
    allowed = re.compile(r"^(global(\[\d+\])?|[0-9]+(\.(weight|bias))?(\[\d+\])?)$")
    assert names and all(allowed.match(n) for n in names), names


@SPECS
def test_foreach_matches_the_for_loop_reference(spec: OptimSpec):
    """The multi-tensor path equals the readable for-loop, float64, parameters and state."""
    runs = []
    for foreach in (False, True):
        model, x, y = make_problem(dtype=torch.float64)
        opt = spec.build(model)
        for g in opt.param_groups:
            g["foreach"] = foreach
        _run(spec, model, opt, x, y, 9)
        runs.append((model, opt))
    (m1, o1), (m2, o2) = runs
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
        for k, v in o1.state[a].items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(v, o2.state[b][k], rtol=1e-10, atol=1e-15, msg=k)
            else:
                assert v == o2.state[b][k], k
