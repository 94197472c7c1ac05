"""With rule="constant", every direction reproduces its torch.optim optimizer step for step.

float64, 25 steps, weight decay, maximize, two param groups with different lr, with and
without an LR scheduler: parameters and direction state agree to 1e-12 relative.
"""

from __future__ import annotations

import pytest
import torch

import lrfree

# (direction, torch class, torch kwargs, lrfree direction kwargs)
CASES = [
    ("sgd", torch.optim.SGD, {}, {}),
    ("momentum", torch.optim.SGD, {"momentum": 0.9}, {"momentum": 0.9}),
    (
        "momentum",
        torch.optim.SGD,
        {"momentum": 0.8, "dampening": 0.3},
        {"momentum": 0.8, "dampening": 0.3},
    ),
    ("nesterov", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.9}),
    (
        "adam",
        torch.optim.Adam,
        {"betas": (0.8, 0.99), "eps": 1e-7},
        {"betas": (0.8, 0.99), "eps": 1e-7},
    ),
    ("adam", torch.optim.Adam, {"amsgrad": True}, {"amsgrad": True}),
    ("adamw", torch.optim.AdamW, {}, {}),
    ("adamw", torch.optim.AdamW, {"amsgrad": True}, {"amsgrad": True}),
    ("rmsprop", torch.optim.RMSprop, {}, {}),
    (
        "rmsprop",
        torch.optim.RMSprop,
        {"momentum": 0.5, "centered": True, "alpha": 0.9},
        {"momentum": 0.5, "centered": True, "alpha": 0.9},
    ),
]
LR = {
    "sgd": 0.05,
    "momentum": 0.02,
    "nesterov": 0.02,
    "adam": 0.01,
    "adamw": 0.01,
    "rmsprop": 0.003,
}


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 2),
    ).double()


def _groups(model, lr, named):
    first = list(model[0].named_parameters(prefix="0")) + list(
        model[2].named_parameters(prefix="2")
    )
    second = list(model[4].named_parameters(prefix="4"))
    if not named:
        first, second = [p for _, p in first], [p for _, p in second]
    return [{"params": first}, {"params": second, "lr": lr * 0.3}]


def _scheduler(opt, kind):
    if kind == "none":
        return None
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=30, cycle_momentum=False
    )


@pytest.mark.parametrize("sched", ["none", "step", "onecycle"])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize(
    "direction,cls,tkw,lkw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_constant_rule_matches_torch(direction, cls, tkw, lkw, maximize, sched):
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(25, 16, 5, generator=gen, dtype=torch.float64)
    ys = torch.randn(25, 16, 2, generator=gen, dtype=torch.float64)
    lr = LR[direction]
    wd = 0.05
    m_ref, m_ours = _model(), _model()
    ref = cls(
        _groups(m_ref, lr, False), lr=lr, weight_decay=wd, maximize=maximize, foreach=False, **tkw
    )
    ours = lrfree.Composed(
        _groups(m_ours, lr, True),
        direction=direction,
        lr=lr,
        weight_decay=wd,
        maximize=maximize,
        **lkw,
    )
    sch_ref, sch_ours = _scheduler(ref, sched), _scheduler(ours, sched)
    sign = -1.0 if maximize else 1.0
    for t in range(25):
        for m, opt, sch in ((m_ref, ref, sch_ref), (m_ours, ours, sch_ours)):
            opt.zero_grad()
            loss = sign * torch.nn.functional.mse_loss(m(xs[t]), ys[t])
            loss.backward()
            opt.step()
            if sch is not None:
                sch.step()
    for (n, a), b in zip(m_ref.named_parameters(), m_ours.parameters()):
        rel = ((a - b).abs().max() / a.abs().max()).item()
        assert rel <= 1e-12, (n, rel)
    for a, b in zip(m_ref.parameters(), m_ours.parameters()):
        s_ref, s_ours = ref.state[a], ours.state[b]
        assert set(s_ref) == set(s_ours)
        for k, v in s_ref.items():
            w = s_ours[k]
            assert v.dtype == w.dtype, k
            denom = max(v.abs().max().item(), 1e-300)
            assert (v - w).abs().max().item() / denom <= 1e-12, k
    assert [g["lr"] for g in ref.param_groups] == [g["lr"] for g in ours.param_groups]


@pytest.mark.parametrize(
    "direction,cls,tkw,lkw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_foreach_path_matches_torch_foreach(direction, cls, tkw, lkw):
    gen = torch.Generator().manual_seed(2)
    xs = torch.randn(20, 16, 5, generator=gen, dtype=torch.float64)
    ys = torch.randn(20, 16, 2, generator=gen, dtype=torch.float64)
    lr = LR[direction]
    m_ref, m_ours = _model(), _model()
    ref = cls(_groups(m_ref, lr, False), lr=lr, weight_decay=0.05, foreach=True, **tkw)
    ours = lrfree.Composed(_groups(m_ours, lr, True), direction=direction, lr=lr,
                           weight_decay=0.05, foreach=True, **lkw)  # fmt: skip
    for t in range(20):
        for m, opt in ((m_ref, ref), (m_ours, ours)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(xs[t]), ys[t]).backward()
            opt.step()
    for a, b in zip(m_ref.parameters(), m_ours.parameters()):
        assert ((a - b).abs().max() / a.abs().max()).item() <= 1e-12
        for k, v in ref.state[a].items():
            w = ours.state[b][k]
            assert (v - w).abs().max().item() <= 1e-12 * max(v.abs().max().item(), 1e-300), k
