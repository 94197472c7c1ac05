"""Fuzzing (hypothesis): shapes, dtypes, hyperparameters in their valid ranges, gradient
scales from 1e-30 to 1e30 and exact zeros, over every direction and step-size rule.

Invariants: no exception (the loop backpropagates with ``create_graph=opt.curvature_due()``,
so LW gets its graph on every curvature step: without one it raises, tests/test_layerwise.py;
the only warning, ignored here, is the skip of a non-finite step); finite inputs give finite
parameters; a step with a gradient the dtype cannot hold (inf) is skipped and changes
nothing; every rate is finite and >= 0; ``effective_lr()`` is defined (finite, >= 0) for
every block at any time. Edge values of the hyperparameters (0, negative, NaN, inf, wrong
types) raise the documented ``ValueError`` / ``TypeError`` naming the hyperparameter.

No rule is named in the fuzz loop: each rule's draw space and bounds are what it declares
(``fuzz_examples``, ``supported_blocks``, ``supports_maximize``, ``fuzz_grad_exponent``,
``unbounded_rate``; ``lrfree.rules.Rule``), so a new rule joins with the defaults.
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lrfree
from lrfree.directions import DIRECTIONS
from lrfree.rules import RULES
from optim_db import OPTIM_DB, make_problem

# the library's rules and those the generic suite registers (tests/specs/, e.g. the toy rule
# of docs/writing-a-rule.md); other test files' probe rules in the same registry are left out
FUZZ_RULES = sorted(
    {name for name, r in RULES.items() if type(r).__module__.startswith("lrfree.")}
    | {g["rule"] for spec in OPTIM_DB for g in spec.build(make_problem()[0]).param_groups}
)
SHAPES = [(), (0,), (1,), (5,), (3, 4), (4, 2, 3, 3), (0, 3)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
UNIT = st.floats(0.0, 0.99)


def _direction_hypers(draw, direction: str) -> dict:
    kw: dict = {"weight_decay": draw(st.sampled_from([0.0, 1e-4, 0.1]))}
    if direction in ("momentum", "nesterov"):
        kw["momentum"] = draw(st.floats(0.01, 0.99))
    if direction in ("adam", "adamw"):
        kw["betas"] = (draw(UNIT), draw(st.floats(0.0, 0.999)))
        kw["amsgrad"] = draw(st.booleans())
        # eps = 0 is valid but, as in torch, an exactly zero gradient then gives 0 / 0 = NaN
        kw["eps"] = draw(st.sampled_from([1e-8, 1e-3]))
    if direction == "rmsprop":
        # alpha = 0 with centered=True: v - m^2 is 0 exactly, rounding makes it negative and
        # its sqrt NaN, as in torch's RMSprop (docs/guarantees.md)
        kw["alpha"] = draw(st.floats(0.5, 0.99))
        kw["centered"] = draw(st.booleans())
        kw["momentum"] = draw(UNIT)
    if direction != "adamw":
        kw["maximize"] = draw(st.booleans())
    return kw


def _rule_hypers(draw, rule: str) -> dict:
    """One draw from the rule's declared ``fuzz_examples`` (``Rule``: a tuple key draws several
    hyperparameters jointly); ``blocks``, where not declared, from ``supported_blocks``."""
    r = RULES[rule]
    kw: dict = {}
    for key, values in r.fuzz_examples.items():
        value = draw(st.sampled_from(values))
        kw.update(zip(key, value) if isinstance(key, tuple) else [(key, value)])
    if "blocks" not in kw:
        kw["blocks"] = draw(st.sampled_from(r.supported_blocks))
    return kw


def _same_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN == NaN (an fp16 parameter may already be NaN, see below)."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def _check_rates(opt) -> None:
    eff = opt.effective_lr()  # (a filter block of an empty tensor has no label)
    for name, v in eff.items():
        assert isinstance(v, float) and math.isfinite(v) and v >= 0, (name, v)
    for group in opt.param_groups:
        rule = RULES[group["rule"]]
        for p in group["params"]:
            a = rule.alpha(opt.state.get(p, {}))
            if a is not None:
                assert torch.isfinite(a).all() and (a >= 0).all(), a


# LRFREE_FUZZ_EXAMPLES=1000 for a longer hunt (60: about 15 s here)
@settings(
    max_examples=int(os.environ.get("LRFREE_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_steps_keep_everything_finite(data):
    direction = data.draw(st.sampled_from(sorted(DIRECTIONS)), label="direction")
    rule = data.draw(st.sampled_from(FUZZ_RULES), label="rule")
    r = RULES[rule]
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    shapes = data.draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=4), label="shapes")
    kw = {**_direction_hypers(data.draw, direction), **_rule_hypers(data.draw, rule)}
    if not r.supports_maximize:
        kw["maximize"] = False  # refused (ADLER: tested below)
    lr = data.draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0]), label="lr")
    # gradient scale: exact zero, or 10^e for e in [-30, 30]; fp16 holds only |g| < 65504
    exps = data.draw(
        st.lists(st.one_of(st.none(), st.integers(-30, 30)), min_size=3, max_size=3),
        label="scales",
    )
    if direction in ("adam", "adamw", "rmsprop") and dtype != torch.float64:
        # g^2 overflows float32 / bf16 for |g| > sqrt(max) ~ 1.8e19: the second moment turns
        # inf (as in torch) and later NaN (0 * inf with beta2 = 0); docs/guarantees.md
        exps = [None if e is None else min(e, 18) for e in exps]
    if dtype != torch.float64:
        # a rule's declared bound (HD's rate moves by beta / lr^2 * <g, s>, unbounded as in the
        # paper, so one step scales like |g|^2 * beta / lr^2: with the drawn beta / lr^2 up to
        # 1e6, gradients of 1e10 and more overflow float32 parameters within three steps)
        exps = [None if e is None else min(e, r.fuzz_grad_exponent) for e in exps]
    torch.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    params = [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in shapes]
    named = [(f"m{i // 2}.w{i % 2}", p) for i, p in enumerate(params)]
    opt = lrfree.Composed(named, direction=direction, rule=rule, lr=lr, **kw)
    _check_rates(opt)  # before any step
    curv = data.draw(st.sampled_from([0.0, 1.0, -1.0]), label="curvature")
    bounded = curv * (-1.0 if kw.get("maximize") else 1.0) > 0  # the objective has an optimum
    for e in exps:
        scale = 0.0 if e is None else 10.0**e
        gs = [(scale * torch.randn(p.shape, dtype=torch.float64)).to(dtype) for p in params]
        before = [p.detach().clone() for p in params]
        finite_in = all(torch.isfinite(g).all() for g in gs)
        skipped = opt.skipped_steps
        opt.zero_grad()
        due = opt.curvature_due()
        with torch.enable_grad():  # loss = <G, p> + curv / 2 |p|^2: gradient G + curv p
            loss = sum(
                ((g.detach() * p).sum() + 0.5 * curv * (p * p).sum()) for g, p in zip(gs, params)
            )
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward(create_graph=due)
        for p, g in zip(params, gs):
            if p.grad is None:
                p.grad = g.clone()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="lrfree: non-finite gradient")
            opt.step()
        grads_finite = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        if not grads_finite:  # the policy: nothing moved, counted
            assert opt.skipped_steps == skipped + 1
            assert all(torch.equal(a, b) or _same_nan(a, b) for a, b in zip(before, params))
        elif finite_in and dtype != torch.float16:  # fp16 *parameters* overflow / underflow
            # as torch's own optimizers do (Adam's eps = 1e-8 is 0 in fp16): train fp16 with
            # float32 master weights, autocast and GradScaler (tests/test_mixed_precision.py)
            if r.unbounded_rate and not bounded:
                # an objective with no optimum (linear, or the wrong curvature for the sense):
                # the iterates head to infinity and a growing rate (HD's) gets there in float
                # range: +-inf is the faithful outcome, NaN never is (docs/guarantees.md)
                assert not any(p.isnan().any() for p in params), (scale, dtype)
            else:
                assert all(torch.isfinite(p).all() for p in params), (scale, dtype)
        _check_rates(opt)


# ------------------------------------------------------- invalid hyperparameters
EDGE_VALUES = [0, -1.0, -1, float("nan"), float("inf"), -float("inf"), "0.1", None, [0.1]]

_REAL_HYPERS = [  # (rule, direction, name, lowest valid value, strict lower bound)
    (None, "sgd", "lr", 0.0, False),
    (None, "sgd", "weight_decay", 0.0, False),
    (None, "momentum", "momentum", 0.0, True),
    (None, "adam", "eps", 0.0, False),
    ("hypergradient", "sgd", "hypergrad_lr", 0.0, False),
    ("lipschitz", "sgd", "gamma", 0.0, False),
    ("lipschitz", "sgd", "c", 0.0, False),
    ("tlr", "sgd", "gamma", 0.0, True),
    ("tlr", "sgd", "max_factor", 1.0, False),
    ("layerwise", "sgd", "beta_t", 0.0, False),
    ("layerwise", "sgd", "warmup_lr", 0.0, False),
    ("adler", "sgd", "beta", 0.0, False),
    ("adler", "sgd", "denom_eps", 0.0, False),
]


def _build(rule, direction, **kw):
    extra = {"update_every": 2} if rule in ("tlr", "hypergradient-window") else {}
    p = torch.nn.Parameter(torch.zeros(2))
    return lrfree.Composed(
        [("m.w", p)], direction=direction, rule=rule or "constant", **{**extra, **kw}
    )


@pytest.mark.parametrize("rule, direction, name, lo, strict", _REAL_HYPERS)
@pytest.mark.parametrize("value", EDGE_VALUES, ids=repr)
def test_invalid_real_hyperparameters_raise_the_documented_error(
    rule, direction, name, lo, strict, value
):
    if name == "lr" and value is None:  # documented: the rule's (or direction's) default
        assert _build(rule, direction, lr=None).param_groups[0]["lr"] > 0
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = TypeError  # "expected a real number"
    elif math.isnan(value) or math.isinf(value) or value < lo or (strict and value == lo):
        expected = ValueError
    else:
        _build(rule, direction, **{name: value})  # a valid edge value builds
        return
    with pytest.raises(expected, match=rf"^Invalid {name}: "):
        _build(rule, direction, **{name: value})


@pytest.mark.parametrize(
    "rule, name, value, exc",
    [
        ("tlr", "update_every", 0, ValueError),
        ("tlr", "update_every", -3, ValueError),
        ("tlr", "update_every", 2.0, TypeError),
        ("tlr", "update_every", True, TypeError),
        ("layerwise", "update_every", 0, ValueError),
        ("layerwise", "warmup_steps", -1, ValueError),
        ("layerwise", "bias_correction", 1, TypeError),
        ("layerwise", "curvature", "fisher", ValueError),
        ("adler", "variant", None, TypeError),
        ("cam-hd", "levels", "layer", TypeError),
        ("cam-hd", "gammas", (float("nan"), 1.0), ValueError),
        ("constant", "nonfinite", "ignore", ValueError),
        ("constant", "foreach", "yes", TypeError),
        ("constant", "blocks", "row", ValueError),
    ],
)
def test_invalid_other_hyperparameters_raise_the_documented_error(rule, name, value, exc):
    with pytest.raises(exc, match=rf"^Invalid {name}: "):
        _build(rule, "sgd", **{name: value})


def test_adler_rejects_maximize():
    with pytest.raises(ValueError, match=r"^Invalid maximize: True"):
        _build("adler", "sgd", maximize=True)
