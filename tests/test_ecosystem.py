"""The Lightning and Hugging Face Trainer examples run for a few CPU steps.

They need the ``ecosystem`` extra (lightning, transformers, accelerate, tensorboard); each
test is skipped, with the reason, where a package is missing.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ Lightning
@pytest.fixture(scope="module")
def lightning_example() -> ModuleType:
    pytest.importorskip("lightning")
    from lrfree.bench.data import DataMissing, load_fashion_mnist

    try:
        load_fashion_mnist(train_subset=1)
    except DataMissing as e:
        pytest.skip(f"Fashion-MNIST not on this machine: {e}")
    return load_example("lightning_fmnist")


def test_lightning_graph_mode_curvature(lightning_example, tmp_path):
    """Manual optimization: SGDLW's curvature steps get a graph (estimates accepted or
    rejected by its safeguards, never skipped for lack of a graph), the scheduler runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="layerwise: .*without a graph")
        metrics = lightning_example.main(
            [
                "--optimizer", "SGDLW",
                "--opt-kwargs", '{"update_every": 2}',
                "--train-subset", "256", "--test-subset", "200", "--batch-size", "32",
                "--max-steps", "6", "--log-every", "1", "--logger", "tensorboard",
                "--out", str(tmp_path),
            ]
        )  # fmt: skip
    assert metrics["global_step"] == 6
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    # steps 0, 2, 4 estimate curvature in each of the two layers ("1", "3")
    for layer in ("1", "3"):
        done = (
            metrics[f"lrfree/layerwise/count/{layer}"]
            + metrics[f"lrfree/layerwise/skipped/{layer}"]
        )
        assert done == 3
    assert metrics["lrfree/layerwise/count/3"] >= 1
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "the TensorBoard logger wrote no event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    eff = {e.step: e.value for e in acc.Scalars("lrfree/effective_lr/3")}
    alpha = {e.step: e.value for e in acc.Scalars("lrfree/layerwise/alpha/3")}
    # the per-step cosine schedule scales the adapted rate: effective = lr * alpha, where the
    # record of Lightning's step s is read after s + 1 optimizer and scheduler steps
    checked = 0
    for step, a in alpha.items():
        if a > 0:
            cosine = (1 + math.cos(math.pi * (step + 1) / 6)) / 2
            assert eff[step] == pytest.approx(a * cosine, rel=1e-5, abs=1e-9)
            checked += 1
    assert checked >= 2


def test_lightning_automatic_optimization(lightning_example, tmp_path):
    """Automatic optimization: Lightning's closure drives an lrfree optimizer's step()."""
    metrics = lightning_example.main(
        [
            "--optimizer", "AdamHD", "--opt-kwargs", '{"lr": 0.01, "blocks": "layer"}',
            "--automatic", "--train-subset", "128", "--test-subset", "100",
            "--batch-size", "32", "--max-steps", "4", "--logger", "csv", "--log-every", "1",
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert metrics["global_step"] == 4
    assert metrics["lrfree/hypergradient/step/1"] == 4
    assert (tmp_path / "lightning_fmnist" / "version_0" / "metrics.csv").exists()


def test_lightning_output_rules_get_their_outputs(lightning_example, tmp_path):
    """ADLER reads the network outputs: manual mode passes step(outputs=, targets=)."""
    pytest.importorskip("lrfree").__dict__.get("ADLER") or pytest.skip("no ADLER yet")
    metrics = lightning_example.main(
        [
            "--optimizer", "ADLER", "--train-subset", "96", "--test-subset", "100",
            "--batch-size", "32", "--max-steps", "3", "--logger", "csv", "--log-every", "1",
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    assert metrics["global_step"] == 3
    assert metrics["lrfree/adler/step/global"] == 3
    assert metrics["lrfree/adler/skipped/global"] == 0


def test_lightning_rejects_unknown_optimizer(lightning_example):
    with pytest.raises(ValueError, match="Invalid optimizer: 'Adam'"):
        lightning_example.make_optimizer("Adam", [torch.nn.Parameter(torch.ones(1))])


# ------------------------------------------------------------- HF Trainer
@pytest.fixture(scope="module")
def hf_example() -> ModuleType:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    return load_example("hf_trainer")


def test_hf_trainer_plain(hf_example, tmp_path):
    """transformers.Trainer itself with optimizers=(AdamHD, LambdaLR): the Trainer steps both,
    the rate the block used is the scheduler's lr times the adapted alpha."""
    res = hf_example.main(
        ["--optimizer", "AdamHD", "--opt-kwargs", '{"lr": 0.001}', "--max-steps", "3",
         "--plain-trainer", "--out", str(tmp_path)]
    )  # fmt: skip
    opt = res["optimizer"]
    assert res["global_step"] == 3 and math.isfinite(res["train_loss"])
    st = opt.state[opt.param_groups[0]["params"][0]]
    assert int(st["hypergradient.step"]) == 3
    lr_now = opt.param_groups[0]["lr"]
    assert lr_now == pytest.approx(1e-3 * (1 - 3 / 4))  # the LambdaLR, stepped by the Trainer
    alpha = float(st["hypergradient.alpha"])
    assert res["effective_lr"]["global"] == pytest.approx(lr_now * alpha)


def test_hf_trainer_graph_mode_and_logs(hf_example, tmp_path):
    """LrfreeTrainer: AdamWLW's curvature steps get create_graph=True (no 'without a graph'
    warning) and the training log records carry the effective rates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="layerwise: .*without a graph")
        res = hf_example.main(
            ["--optimizer", "AdamWLW", "--opt-kwargs", '{"update_every": 2}',
             "--max-steps", "4", "--out", str(tmp_path)]
        )  # fmt: skip
    opt = res["optimizer"]
    part = opt.partition(0)
    done = [
        float(opt.state[opt.param_groups[0]["params"][s.owner]]["layerwise.count"])
        + float(opt.state[opt.param_groups[0]["params"][s.owner]]["layerwise.skipped"])
        for s in part.sets
    ]
    assert done == [2.0] * len(part.sets)  # steps 0 and 2, every block
    records = [r for r in res["log_history"] if "loss" in r]
    assert records and "lrfree/effective_lr/classifier" in records[-1]
    assert "lrfree/layerwise/skipped/classifier" in records[-1]


def test_hf_unwrap_finds_the_lrfree_optimizer(hf_example):
    import lrfree

    opt = lrfree.AdamHD([torch.nn.Parameter(torch.ones(2))])

    class Wrapper:  # accelerate's AcceleratedOptimizer keeps the user's in .optimizer
        optimizer = opt

    assert hf_example.unwrap(Wrapper()) is opt
    assert hf_example.unwrap(opt) is opt
