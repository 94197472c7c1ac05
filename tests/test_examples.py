"""Every script in examples/ runs, in a subprocess, with its tiny settings (``--tiny``; DDP and
FSDP2 with ``AdamTLR``: a few more steps, as its default windows are at least 30 steps long).

DDP and FSDP2 run as their docstrings say, ``torchrun --nproc-per-node 2`` (here
``python -m torch.distributed.run --standalone``: a free port), gloo on CPU, one thread per
rank. Each example runs for ``AdamTLR`` (which needs its window: ``steps_per_epoch``) and a
curvature optimizer (``SGDLW``, ``AdamWLW``). The Lightning and HF examples need the
``ecosystem`` extra and are skipped, with the reason, without it. These are smoke tests: the
examples exit 0, losses and rates are finite, ranks agree (``--check-rates``), an FSDP2
checkpoint reloads with the same rates; what the optimizers achieve is measured elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(args: list[str], cwd: Path, timeout: float = 120) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited with {proc.returncode}\n"
        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


def torchrun(script: str, *args: str, cwd: Path) -> str:
    return run(
        [
            "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            str(EXAMPLES / script), *args,
        ],
        cwd,
    )  # fmt: skip


def printed_rates(out: str) -> list[dict[str, float]]:
    """The ``rates name=value, ...`` of every line rank 0 printed."""
    found = []
    for line in out.splitlines():
        m = re.search(r"; rates (.*)$", line)
        if m:
            found.append({k: float(v) for k, v in (kv.split("=") for kv in m[1].split(", "))})
    return found


def printed_json(out: str) -> dict:
    """The JSON document the example printed last (it starts with a line "{")."""
    return json.loads(out[re.search(r"^\{$", out, re.M).start() :])


@pytest.mark.parametrize("optimizer", ["AdamTLR", "SGDLW"])
def test_ddp_example(optimizer, tmp_path):
    # AdamTLR: the default window floor makes K = 30 steps and the rate first moves at the
    # close of the second window: --tiny runs 16 steps, 2 epochs of 32 (2048 examples) 64
    size = ["--epochs", "2", "--batch-size", "32"] if optimizer == "AdamTLR" else ["--tiny"]
    args = ["--optimizer", optimizer, *size, "--check-rates"]
    out = torchrun("ddp_train.py", *args, cwd=tmp_path)
    assert re.search(r"^epoch 1: mean loss \d", out, re.M), out
    losses = [float(x) for x in re.findall(r"mean loss (\S+);", out)]
    rates = printed_rates(out)
    assert len(losses) == len(rates) == 2
    assert all(math.isfinite(x) for x in losses)
    assert all(math.isfinite(v) and v > 0 for r in rates for v in r.values())
    if optimizer == "AdamTLR":  # its windows (K = max(round(0.2 * 32), 30) = 30) moved the rate
        assert rates[-1]["global"] != pytest.approx(1e-3)
    else:
        assert set(rates[-1]) == {"0", "2"}  # one rate per layer


@pytest.mark.parametrize("optimizer", ["AdamTLR", "SGDLW"])
def test_fsdp2_example(optimizer, tmp_path):
    if optimizer == "AdamTLR":  # K = 30 (the default window floor): the rate moves at step 60
        args, last = (
            ["--steps", "60", "--batch-size", "16", "--checkpoint", str(tmp_path / "ckpt")],
            59,
        )
    else:
        args, last = ["--tiny"], 11  # 12 steps
    out = torchrun("fsdp2_train.py", "--optimizer", optimizer, *args, cwd=tmp_path)
    assert re.search(rf"^step {last}: loss \d", out, re.M), out
    rates = printed_rates(out)
    assert rates and all(math.isfinite(v) for r in rates for v in r.values())
    if optimizer == "AdamTLR":
        assert rates[-1]["global"] != pytest.approx(1e-3)  # 2 windows of 30 steps: 1 update
        assert "rates identical: True" in out
    else:
        assert set(rates[-1]) == {"0", "2", "4"}


def needs(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install lrfree[ecosystem])")


@pytest.mark.parametrize(
    ("optimizer", "kwargs"), [("AdamTLR", {"update_every": 2}), ("SGDLW", {"update_every": 2})]
)
def test_lightning_example(optimizer, kwargs, tmp_path):
    needs("lightning")
    out = run(
        [
            str(EXAMPLES / "lightning_fmnist.py"), "--tiny", "--optimizer", optimizer,
            "--opt-kwargs", json.dumps(kwargs), "--logger", "csv", "--out", str(tmp_path),
        ],
        tmp_path,
    )  # fmt: skip
    metrics = printed_json(out)
    assert metrics["global_step"] == 5
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    eff = {k: v for k, v in metrics.items() if k.startswith("lrfree/effective_lr/")}
    assert eff and all(math.isfinite(v) and v >= 0 for v in eff.values())
    assert (tmp_path / "lightning_fmnist" / "version_0" / "metrics.csv").is_file()


@pytest.mark.parametrize(
    ("optimizer", "kwargs"), [("AdamTLR", {"update_every": 2}), ("AdamWLW", {"update_every": 2})]
)
def test_hf_trainer_example(optimizer, kwargs, tmp_path):
    needs("transformers", "accelerate")
    out = run(
        [
            str(EXAMPLES / "hf_trainer.py"), "--tiny", "--optimizer", optimizer,
            "--opt-kwargs", json.dumps(kwargs), "--out", str(tmp_path),
        ],
        tmp_path,
    )  # fmt: skip
    res = printed_json(out)
    assert res["global_step"] == 3 and math.isfinite(res["train_loss"])
    assert res["effective_lr"] and all(math.isfinite(v) for v in res["effective_lr"].values())


def test_every_example_is_tested():
    """A new script in examples/ needs a test here."""
    tested = {"ddp_train.py", "fsdp2_train.py", "lightning_fmnist.py", "hf_trainer.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
