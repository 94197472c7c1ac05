"""Crash and resume: a training subprocess really killed (SIGKILL) at a random step, resumed
from its last atomic checkpoint, ends bit-identical to an uninterrupted run, for every
exported optimizer (mid-window for TLR, mid-interval for LW with T = 3)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lrfree
from lrfree.checkpoint import rng_state, save_atomic, set_rng_state
from robust_recipes import EXPORTED, dropout_problem, exported_classes

SCRIPT = Path(__file__).with_name("resume_script.py")
STEPS = 11


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(Path(lrfree.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True
    )


def _assert_same_state(a, b, where: str) -> None:
    assert a.keys() == b.keys(), where
    for k, v in a.items():
        w = b[k]
        if isinstance(v, torch.Tensor):
            assert v.dtype == w.dtype and torch.equal(v, w), f"{where}: {k}"
        elif isinstance(v, dict):
            _assert_same_state(v, w, f"{where}.{k}")
        elif isinstance(v, list):
            assert len(v) == len(w), where
            for i, (x, y) in enumerate(zip(v, w)):
                if isinstance(x, dict):
                    _assert_same_state(x, y, f"{where}.{k}[{i}]")
                else:
                    assert x == y, f"{where}.{k}[{i}]"
        else:
            assert v == w, f"{where}: {k}"


def test_every_exported_optimizer_has_a_recipe():
    assert set(EXPORTED) == {c.__name__ for c in exported_classes()}
    assert len(EXPORTED) >= 18


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path: Path):
    # a random kill step, mid-window for TLR and mid-interval for LW (T = 3)
    kill_at = int(
        os.environ.get("LRFREE_KILL_AT", 0)
        or random.choice([k for k in range(4, STEPS - 1) if k % 3])
    )
    ref = _run("--ckpt", str(tmp_path / "a.pt"), "--out", str(tmp_path / "ref.pt"),
               "--steps", str(STEPS))  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]

    ckpt = tmp_path / "b.pt"
    killed = _run("--ckpt", str(ckpt), "--out", str(tmp_path / "never.pt"),
                  "--steps", str(STEPS), "--kill-at", str(kill_at))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr[-3000:])
    assert not (tmp_path / "never.pt").exists()
    assert (tmp_path / ".torn.tmp").exists()  # it died inside a checkpoint write
    saved = torch.load(ckpt, weights_only=False)
    assert saved["step"] == kill_at  # the last complete checkpoint, not torn
    for name in ("SGDTLR", "AdamTLR"):  # mid-window
        st = saved["runs"][name]["opt"]["state"][0]
        assert st["tlr.count"] == kill_at % 3 != 0, name
        assert st["tlr.windows"] == kill_at // 3 >= 1, name
    for name in ("SGDLW", "AdamWLW"):  # mid-interval, after at least one estimate
        st = saved["runs"][name]["opt"]["state"][0]
        assert st["layerwise.step"] == kill_at and kill_at % 3 != 0, name

    resumed = _run("--ckpt", str(ckpt), "--out", str(tmp_path / "res.pt"),
                   "--steps", str(STEPS), "--resume")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a = torch.load(tmp_path / "ref.pt", weights_only=False)
    b = torch.load(tmp_path / "res.pt", weights_only=False)
    assert a.keys() == b.keys() == EXPORTED.keys()
    for name in a:
        for p, q in zip(a[name]["params"], b[name]["params"]):
            assert torch.equal(p, q), f"{name}: parameters differ after a kill at {kill_at}"
        _assert_same_state(a[name]["opt"], b[name]["opt"], f"{name} (kill at {kill_at})")
    moved = torch.load(tmp_path / "a.pt", weights_only=False)["runs"]["SGDTLR"]["opt"]
    assert float(moved["state"][0]["tlr.alpha"]) != 1.0  # the rates did adapt


def test_save_atomic_keeps_the_previous_checkpoint_on_a_failed_write(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomic({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no temporary file left behind


def test_rng_state_round_trip():
    np = pytest.importorskip("numpy")
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    state = rng_state()
    a = (torch.rand(3), random.random(), np.random.rand(3), np.random.normal())
    set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand(3), np.random.normal())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert (a[2] == b[2]).all() and a[3] == b[3]


def test_rng_state_loads_with_weights_only(tmp_path: Path):
    """Plain types and tensors only (NumPy's state too): torch's safe loader reads it; the
    tuple format of earlier checkpoints is still accepted by ``set_rng_state``."""
    np = pytest.importorskip("numpy")
    save_atomic({"rng": rng_state()}, tmp_path / "rng.pt")
    a = (torch.rand(2), random.random(), np.random.rand(2))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    b = (torch.rand(2), random.random(), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and (a[2] == b[2]).all()
    old = rng_state()
    old["numpy"] = np.random.get_state()
    c = np.random.rand(2)
    set_rng_state(old)
    assert (np.random.rand(2) == c).all()


def _recipe_steps(spec, model, opt, sched, x, y, n: int) -> None:
    import numpy as np

    for _ in range(n):
        model.train()
        idx = torch.from_numpy(np.random.permutation(x.shape[0])[:16]).long()
        idx = idx[torch.randperm(16)]  # draws from NumPy and torch; dropout from torch
        spec.run_step(model, opt, x[idx], y[idx])
        sched.step()


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_documented_recipe_resumes_with_weights_only(tmp_path: Path, name: str):
    """The crash-safe recipe of docs/guarantees.md, loaded with ``weights_only=True``:
    model, optimizer, scheduler and ``rng_state()`` in one ``save_atomic`` checkpoint; the
    resumed run equals the uninterrupted one bit for bit."""
    pytest.importorskip("numpy")
    spec = EXPORTED[name]

    def build():
        model, x, y = dropout_problem(seed=0)
        opt = spec.build(model)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5), x, y

    model, opt, sched, x, y = build()
    _recipe_steps(spec, model, opt, sched, x, y, 3)
    path = tmp_path / "ckpt.pt"
    save_atomic(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "rng": rng_state(),
        },
        path,
    )
    _recipe_steps(spec, model, opt, sched, x, y, 3)

    model2, opt2, sched2, _, _ = build()
    ckpt = torch.load(path, weights_only=True)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    set_rng_state(ckpt["rng"])
    _recipe_steps(spec, model2, opt2, sched2, x, y, 3)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q), name
    _assert_same_state(opt.state_dict(), opt2.state_dict(), name)
