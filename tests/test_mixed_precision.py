"""Mixed precision, every exported optimizer, 50 steps each: bf16 parameters (rates and rule
statistics in float32), and fp16 autocast with ``torch.amp.GradScaler`` (float32 master
weights). Each run ends finite with its loss below the start."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robust_recipes import EXPORTED, noisy_problem

NAMES = sorted(EXPORTED)
STEPS = 50
# TLR's recipe closes a window every 2 steps (rates move within the generic suite's few
# steps); over 50 steps it overshoots in float32 too, so these runs use K = 10 windows.
OVERRIDES = {"SGDTLR": {"update_every": 10}, "AdamTLR": {"update_every": 10}}


def _rule_dtypes(opt) -> set[torch.dtype]:
    return {
        v.dtype
        for st in opt.state.values()
        for k, v in st.items()
        if "." in str(k) and isinstance(v, torch.Tensor) and v.is_floating_point()
    }


@pytest.mark.parametrize("name", NAMES)
def test_bf16_parameters(name):
    spec = EXPORTED[name]
    model, x, y = noisy_problem(dtype=torch.bfloat16)
    opt = spec.build(model, **OVERRIDES.get(name, {}))
    losses = [float(spec.run_step(model, opt, x, y)) for _ in range(STEPS)]
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())
    assert torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < losses[0], (losses[0], losses[-1])
    if opt.param_groups[0]["rule"] != "constant":
        assert _rule_dtypes(opt) == {torch.float32}  # rates and statistics: float32
    assert opt.skipped_steps == 0


def _amp_step(name, model, opt, scaler, x, y):
    """fp16 autocast + GradScaler; the curvature rules get their outputs (scale-free)."""
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(x)
        assert out.dtype == torch.float16
    loss = F.cross_entropy(out.float(), y)
    kwargs = {}
    retain = False
    if name == "ADLER":
        kwargs, retain = {"outputs": out}, True
    elif name in ("SGDLW", "AdamWLW"):  # curvature="ggn": J u from the outputs' graph
        retain = opt.curvature_due()
        kwargs = {"outputs": out, "loss_fn": lambda z: F.cross_entropy(z.float(), y)}
    scaler.scale(loss).backward(retain_graph=retain)
    scaler.step(opt, **kwargs)
    scaler.update()
    return loss


@pytest.mark.parametrize("name", NAMES)
def test_fp16_autocast_with_grad_scaler(name):
    spec = EXPORTED[name]
    model, x, y = noisy_problem()
    overrides = {"curvature": "ggn"} if name in ("SGDLW", "AdamWLW") else {}
    overrides.update(OVERRIDES.get(name, {}))
    opt = spec.build(model, **overrides)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=10)
    losses = [float(_amp_step(name, model, opt, scaler, x, y)) for _ in range(STEPS)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < losses[0], (losses[0], losses[-1])
    assert opt.skipped_steps == 0  # inf steps are the scaler's to skip
    assert scaler.get_scale() > 1.0
