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
from robust_recipes import EXPORTED, exported_classes

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
    state = rng_state()
    a = (torch.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
