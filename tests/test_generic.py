"""The generic suite: every registered optimizer (tests/optim_db.py) gets all of these."""

from __future__ import annotations

import copy
import io
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from lrfree import Composed
from lrfree.directions import DIRECTIONS
from lrfree.rules import RULES
from optim_db import OPTIM_DB, OptimSpec, default_step, make_problem

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


# ------------------------------------------------- drop-in at the edges: no silent wrong result
def _same_state(a, b, where: str = "") -> None:
    """Equal nested state (tensors: dtype and values, NaN-aware)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


def _hyper_defaults(group: dict) -> dict:
    specs = Composed._specs(DIRECTIONS[group["direction"]], RULES[group["rule"]])
    return {k: spec.default for k, spec in specs.items()}


@SPECS
def test_older_torch_state_dict_format_loads_and_continues(spec: OptimSpec):
    """``step`` as a Python number and group keys missing (older torch checkpoints): the load
    converts and fills them as torch's Adam / RMSprop do, and the run continues exactly as
    from the current format."""
    model, x, y = make_problem()
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 4)
    saved_model = copy.deepcopy(model.state_dict())
    current = copy.deepcopy(opt.state_dict())
    old = copy.deepcopy(current)
    n_float = 0
    for st in old["state"].values():
        if isinstance(st.get("step"), torch.Tensor):
            st["step"] = float(st["step"])
            n_float += 1
    for g in old["param_groups"]:
        defaults = _hyper_defaults(g)
        for k in [k for k, v in g.items() if k in defaults and v == defaults[k]]:
            del g[k]
        assert "foreach" not in g and "nonfinite" not in g
    if opt.param_groups[0]["direction"] in ("adam", "adamw", "rmsprop"):
        assert n_float > 0
    runs = []
    for sd in (current, old):
        model2, _, _ = make_problem(seed=1)
        model2.load_state_dict(saved_model)
        opt2 = spec.build(model2)
        opt2.load_state_dict(sd)
        for st in opt2.state.values():
            if "step" in st:
                assert isinstance(st["step"], torch.Tensor) and st["step"].dtype == torch.float32
        _run(spec, model2, opt2, x, y, 3)
        runs.append((model2, opt2))
    (m1, o1), (m2, o2) = runs
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    _same_state(o1.state_dict(), o2.state_dict())


@SPECS
def test_load_hooks_run_around_the_whole_load(spec: OptimSpec):
    """What the pre-hooks return or modify is what is loaded (rule state included); the
    post-hooks run last and their changes stay."""
    model, x, y = make_problem()
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 4)
    sd = copy.deepcopy(opt.state_dict())
    opt2 = spec.build(copy.deepcopy(model))
    calls = []

    def rule_floats(state):
        return [
            (st, k)
            for st in state.values()
            for k, v in st.items()
            if "." in str(k) and isinstance(v, torch.Tensor) and v.is_floating_point()
        ]

    def pre_in_place(o, d):
        calls.append("pre")
        for st, k in rule_floats(d["state"]):
            st[k] = torch.full_like(st[k], 0.5)

    def pre_returning(o, d):
        calls.append("pre2")
        d = {**d, "param_groups": [{**g, "lr": 0.125} for g in d["param_groups"]]}
        return d

    def post(o):
        calls.append("post")
        assert all(g["lr"] == 0.125 for g in o.param_groups)
        for st, k in rule_floats(o.state):
            assert torch.all(st[k] == 0.5), k  # the pre-hook's value, loaded
            st[k].fill_(0.25)

    opt2.register_load_state_dict_pre_hook(pre_in_place)
    opt2.register_load_state_dict_pre_hook(pre_returning)
    opt2.register_load_state_dict_post_hook(post)
    opt2.load_state_dict(sd)
    assert calls == ["pre", "pre2", "post"]
    assert all(g["lr"] == 0.125 for g in opt2.param_groups)
    marked = rule_floats(opt2.state)
    if opt2.param_groups[0]["rule"] != "constant":
        assert marked
    for st, k in marked:
        assert torch.all(st[k] == 0.25), k  # not overwritten after the post-hook


def _structure(spec: OptimSpec) -> tuple:
    model, _, _ = make_problem()
    g = spec.build(model).param_groups[0]
    return g["direction"], g["rule"], g["blocks"]


@SPECS
def test_another_algorithms_state_dict_is_refused(spec: OptimSpec):
    model, x, y = make_problem()
    mine = _structure(spec)
    other = next(s for s in OPTIM_DB if _structure(s)[:2] != mine[:2])
    src = other.build(model)
    _run(other, model, src, x, y, 2)
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 2)
    before = copy.deepcopy(opt.state_dict())
    sd = src.state_dict()
    with pytest.raises(
        ValueError,
        match=rf"state_dict is from direction '{_structure(other)[0]}', rule "
        rf"'{_structure(other)[1]}'(, blocks '\w+')?; this optimizer is direction "
        rf"'{mine[0]}', rule '{mine[1]}'(, blocks '\w+')?: loading it would switch the "
        "algorithm",
    ):
        opt.load_state_dict(sd)
    mine_sd = copy.deepcopy(opt.state_dict())
    mine_sd["param_groups"][0]["blocks"] = "global" if mine[2] != "global" else "tensor"
    with pytest.raises(ValueError, match=r"state_dict is from .*blocks '\w+'; this optimizer"):
        opt.load_state_dict(mine_sd)
    _same_state(opt.state_dict(), before)  # a refused load changes nothing

    # torch's own RMSprop: refused unless this is the rmsprop direction, which loads it
    ref = torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    for _ in range(2):
        default_step(model, ref, x, y)
    if mine[0] == "rmsprop":
        opt.load_state_dict(ref.state_dict())
        _run(spec, model, opt, x, y, 2)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    else:
        with pytest.raises(ValueError, match=r"state_dict's param group 0 holds \['alpha'"):
            opt.load_state_dict(ref.state_dict())


@SPECS
def test_reordered_renamed_or_unnamed_state_is_refused(spec: OptimSpec):
    if not spec.named:
        pytest.skip("parameter names: named specs only")
    model, x, y = make_problem()
    opt = spec.build(model)
    _run(spec, model, opt, x, y, 2)
    sd = opt.state_dict()
    named = list(model.named_parameters())
    reordered = spec.factory(named[::-1], **spec.kwargs)
    with pytest.raises(
        ValueError,
        match=r"parameters are in another order than this optimizer's: position 0 is "
        r"'0\.weight' in the state_dict, '2\.bias' here",
    ):
        reordered.load_state_dict(sd)
    renamed = spec.factory([("enc." + n, p) for n, p in named], **spec.kwargs)
    with pytest.raises(ValueError, match=r"parameter names differ .* rename 'param_names'"):
        renamed.load_state_dict(sd)
    # a DDP / torch.compile prefix is the same parameter: loads, keeps this run's names
    wrapped = spec.factory([("module._orig_mod." + n, p) for n, p in named], **spec.kwargs)
    wrapped.load_state_dict(sd)
    assert wrapped.param_groups[0]["param_names"][0] == "module._orig_mod.0.weight"

    # unnamed state into a named optimizer: refused where the blocks depend on the names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layer / filter blocks without names fall back
        unnamed = spec.factory(model.parameters(), **spec.kwargs)
        _run(spec, model, unnamed, x, y, 2)
    fresh = spec.build(model)
    per_block = any(
        "." in k and not k.startswith("nonfinite.")
        for st in unnamed.state_dict()["state"].values()
        for k in st
    )
    if _name_kinds(opt) and per_block:
        with pytest.raises(ValueError, match=r"state_dict holds no parameter names"):
            fresh.load_state_dict(unnamed.state_dict())
    else:
        fresh.load_state_dict(unnamed.state_dict())


def _name_kinds(opt) -> set:
    g = opt.param_groups[0]
    return {g["blocks"], *g.get("levels", ())} & {"layer", "filter"}


@SPECS
def test_unknown_param_group_keys_are_refused(spec: OptimSpec):
    model, _, _ = make_problem()
    opt = spec.build(model)
    known = set(opt.param_groups[0])
    every = {k for o in (*DIRECTIONS.values(), *RULES.values()) for k in o.hyper}
    foreign = sorted(every - known)[0]  # another direction's or rule's hyperparameter
    extra = torch.nn.Parameter(torch.randn(2))
    for key in ("hypergrad_Lr", foreign):
        msg = (
            rf"Unknown hyperparameter\(s\) \['{key}'\] in a param group for direction "
            r"'[\w-]+' and rule '[\w-]+'; known: \[.*'lr'"
        )
        with pytest.raises(TypeError, match=msg):
            opt.add_param_group({"params": spec.wrap([("extra", extra)]), key: 0.5})
        assert len(opt.param_groups) == 1
        with pytest.raises(TypeError, match=msg):
            spec.factory(
                [{"params": spec.wrap(list(model.named_parameters())), key: 0.5}], **spec.kwargs
            )
    opt.add_param_group({"params": spec.wrap([("extra", extra)]), "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5


@SPECS
def test_complex_parameters_are_refused(spec: OptimSpec):
    model, _, _ = make_problem()
    z = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    named = "'z'" if spec.named else "'2 of param group 0'"
    msg = rf"Complex parameter {named} \(torch\.complex64\) is not supported.*view_as_real"
    with pytest.raises(ValueError, match=msg):
        spec.factory(spec.wrap([*list(model.named_parameters())[:2], ("z", z)]), **spec.kwargs)
    opt = spec.build(model)
    with pytest.raises(ValueError, match=r"Complex parameter '(z|0 of param group 1)'"):
        opt.add_param_group({"params": spec.wrap([("z", z)])})
    assert len(opt.param_groups) == 1


@SPECS
def test_sparse_gradient_in_a_later_group_changes_nothing(spec: OptimSpec):
    """All groups' gradients are checked before anything moves: the step is atomic."""
    model, x, y = make_problem()
    extra = torch.nn.Parameter(torch.randn(5, 2))
    groups = [
        {"params": spec.wrap(list(model.named_parameters()))},
        {"params": spec.wrap([("extra", extra)])},
    ]
    opt = spec.factory(groups, **spec.kwargs)
    _run(spec, model, opt, x, y, 3)
    params = _params(model)
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    extra.grad = torch.sparse_coo_tensor([[0], [1]], [1.0], (5, 2), check_invariants=True)
    name = "'extra'" if spec.named else "'param4'"
    with pytest.raises(
        RuntimeError, match=rf"do not support sparse gradients \({name}, param group 1\)"
    ):
        opt.step()
    for a, b in zip(params, model.parameters()):
        assert torch.equal(a, b)
    _same_state(opt.state_dict(), state)


@SPECS
def test_invalid_or_tensor_lr_is_refused_before_anything_moves(spec: OptimSpec):
    model, x, y = make_problem()
    opt = spec.build(model)
    spec.run_step(model, opt, x, y)
    params = _params(model)
    lr = opt.param_groups[0]["lr"]
    cases = [
        (math.nan, r"Invalid lr: nan \(expected a finite number, 0 <= lr\) \[param group 0, "),
        (-1.0, r"Invalid lr: -1\.0 \(expected 0 <= lr\) \[param group 0, direction"),
        (math.inf, r"Invalid lr: inf \(expected a finite number"),
        (torch.tensor(0.01), r"Invalid lr: a Tensor \(tensor\(0\.0100\)\) is not supported"),
    ]
    for bad, match in cases:
        opt.param_groups[0]["lr"] = bad
        with pytest.raises(ValueError, match=match):
            spec.run_step(model, opt, x, y)
    for a, b in zip(params, model.parameters()):
        assert torch.equal(a, b)
    opt.param_groups[0]["lr"] = lr
    spec.run_step(model, opt, x, y)
    with pytest.raises(ValueError, match=r"Invalid lr: a Tensor .* pass a Python float"):
        spec.build(model, lr=torch.tensor(0.01))
    with pytest.raises(ValueError, match=r"Invalid lr: a Tensor"):
        opt.add_param_group({"params": spec.wrap([("e", torch.nn.Parameter(torch.ones(1)))]),
                             "lr": torch.tensor(0.1)})  # fmt: skip
