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
def lightning_module() -> ModuleType:
    """The Lightning example's module (its ``--tiny`` runs need no data)."""
    pytest.importorskip("lightning")
    return load_example("lightning_fmnist")


@pytest.fixture(scope="module")
def lightning_example(lightning_module) -> ModuleType:
    if lightning_module.find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not on this machine (tests/test_examples.py runs --tiny)")
    return lightning_module


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
            + metrics[f"lrfree/layerwise/rejected/{layer}"]
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
    # record of Lightning's step s is read right after optimizer step s, before the
    # scheduler's step: the rate step s used, lr(s) = lr0 (1 + cos(pi s / 6)) / 2
    checked = 0
    for step, a in alpha.items():
        if a > 0:
            cosine = (1 + math.cos(math.pi * step / 6)) / 2
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
    assert metrics["lrfree/adler/rejected/global"] == 0


def test_lightning_rejects_unknown_optimizer(lightning_example):
    with pytest.raises(ValueError, match="Invalid optimizer: 'Adam'"):
        lightning_example.make_optimizer("Adam", [torch.nn.Parameter(torch.ones(1))])


def _sf_points(opt: torch.optim.Optimizer) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(y, x) of a schedule-free optimizer in train mode: x = (y - (1 - beta) z) / beta."""
    group = opt.param_groups[0]
    assert group.get("train_mode", True) is True
    beta = group["sf_beta"]
    ys = [p.detach().clone() for p in group["params"]]
    xs = [(y - (1 - beta) * opt.state[p]["z"]) / beta for y, p in zip(ys, group["params"])]
    return ys, xs


def test_lightning_auto_validates_at_the_average(lightning_module, tmp_path, monkeypatch):
    """--optimizer Auto: the example's LightningAveraging puts the average x into the
    parameters for every validation (the sanity check, the one after epoch 1, the final
    trainer.validate) and y back for training (step() raises in eval mode); after the final
    validation the model holds y again, and what validation saw was x."""
    from lrfree.integrations import unwrap

    modes: dict[str, list[bool]] = {"train": [], "val": []}
    snapshots: list[list[torch.Tensor]] = []
    built: list[object] = []

    class Recording(lightning_module.FMNISTClassifier):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

        def training_step(self, batch, batch_idx):
            modes["train"].append(unwrap(self.optimizers()).param_groups[0].get("train_mode", True))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            opt = unwrap(self.trainer.optimizers[0])
            modes["val"].append(opt.param_groups[0].get("train_mode", True))
            snapshots.append([p.detach().clone() for p in opt.param_groups[0]["params"]])
            return super().validation_step(batch, batch_idx)

    monkeypatch.setattr(lightning_module, "FMNISTClassifier", Recording)
    # --tiny: 8 batches an epoch; 10 steps: a validation after step 8, training goes on.
    # d0: a larger first rate than Auto's 1e-3, so that in 10 steps x and y differ by
    # far more than rounding
    metrics = lightning_module.main(
        ["--tiny", "--optimizer", "Auto", "--opt-kwargs", '{"d0": 1e-2}',
         "--epochs", "2", "--max-steps", "10", "--logger", "csv", "--out", str(tmp_path)]
    )  # fmt: skip
    assert metrics["global_step"] == 10
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    assert modes["train"] == [True] * 10
    assert len(modes["val"]) >= 3 and not any(modes["val"])  # sanity, epoch 1, final
    (module,) = built
    opt = unwrap(module.trainer.optimizers[0])
    assert isinstance(opt, lightning_module.lrfree.Auto)
    ys, xs = _sf_points(opt)  # train mode again after the final validation
    for x, seen in zip(xs, snapshots[-1]):
        torch.testing.assert_close(seen, x, rtol=1e-6, atol=1e-7)
    assert max(float((y - x).abs().max()) for y, x in zip(ys, xs)) > 1e-5  # x is not y


def test_lightning_averaging_hooks():
    """LightningAveraging on a stand-in Trainer: a torch optimizer is left alone, Lightning's
    wrapper is seen through, a loop's end restores the mode from before it (eval stays eval),
    a training epoch's start and an exception in a loop go back to train mode."""
    pytest.importorskip("lightning")
    from types import SimpleNamespace

    import lrfree
    from lrfree.integrations import LightningAveraging

    model = torch.nn.Linear(3, 2)
    auto = lrfree.Auto(model.parameters())
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    wrapped = SimpleNamespace(_optimizer=auto)  # as Lightning's LightningOptimizer
    trainer = SimpleNamespace(optimizers=[sgd, wrapped])
    for _ in range(3):
        model(torch.randn(8, 3)).square().mean().backward()
        auto.step()
        auto.zero_grad()
    y = [p.detach().clone() for p in model.parameters()]
    cb = LightningAveraging()

    def mode() -> bool:
        return auto.param_groups[0].get("train_mode", True)

    cb.on_validation_start(trainer, None)
    assert mode() is False and not torch.equal(model.weight, y[0])
    cb.on_validation_end(trainer, None)
    assert mode() is True
    torch.testing.assert_close(list(model.parameters()), y)
    auto.eval()  # the user's choice before trainer.test: kept after it
    cb.on_test_start(trainer, None)
    cb.on_test_end(trainer, None)
    assert mode() is False
    cb.on_train_epoch_start(trainer, None)
    assert mode() is True
    cb.on_predict_start(trainer, None)
    assert mode() is False
    cb.on_exception(trainer, None, RuntimeError("interrupted"))
    assert mode() is True
    torch.testing.assert_close(list(model.parameters()), y)


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
        + float(opt.state[opt.param_groups[0]["params"][s.owner]]["layerwise.rejected"])
        for s in part.sets
    ]
    assert done == [2.0] * len(part.sets)  # steps 0 and 2, every block
    records = [r for r in res["log_history"] if "loss" in r]
    assert records and "lrfree/effective_lr/classifier" in records[-1]
    assert "lrfree/layerwise/rejected/classifier" in records[-1]


def test_hf_trainer_auto_evaluates_at_the_average(hf_example, tmp_path):
    """--optimizer Auto with transformers.Trainer itself: the Trainer calls opt.eval() before
    each evaluation (here after steps 2 and 4, and the example's final one) and opt.train() in
    each training step, so every step runs in train mode, the evaluation loss is the loss at
    x, and opt.train() afterwards brings y back. d0: as in the Lightning test above."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    modes: list[bool] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: modes.append(opt.param_groups[0].get("train_mode", True))
    )
    try:
        res = hf_example.main(
            ["--optimizer", "Auto", "--opt-kwargs", '{"d0": 1e-2}', "--max-steps", "6",
             "--eval-steps", "2", "--eval-examples", "32", "--plain-trainer",
             "--out", str(tmp_path)]
        )  # fmt: skip
    finally:
        handle.remove()
    opt, trainer = res["optimizer"], res["trainer"]
    assert type(trainer).__name__ == "Trainer"
    assert res["global_step"] == 6 and math.isfinite(res["train_loss"])
    assert modes == [True] * 6  # opt.train() before every step, after each evaluation
    evals = [r for r in res["log_history"] if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 6]  # every 2 steps, then the final one
    assert all(math.isfinite(r["eval_loss"]) for r in evals)
    assert opt.param_groups[0].get("train_mode", True) is False  # the final evaluation: x

    data = trainer.eval_dataset
    batch = {k: torch.stack([data[i][k] for i in range(len(data))]) for k in data[0]}

    def loss_now() -> float:
        with torch.no_grad():
            return float(trainer.model(**batch).loss)

    xs = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    assert res["eval_loss"] == pytest.approx(loss_now(), rel=1e-5)  # evaluated at x
    opt.train()
    ys, _ = _sf_points(opt)
    beta = opt.param_groups[0]["sf_beta"]
    for x, y, p in zip(xs, ys, opt.param_groups[0]["params"]):
        torch.testing.assert_close(y, beta * x + (1 - beta) * opt.state[p]["z"])
    assert max(float((y - x).abs().max()) for y, x in zip(ys, xs)) > 1e-4  # y is back
    assert loss_now() != pytest.approx(res["eval_loss"], rel=1e-4)  # not what was evaluated


def test_hf_unwrap_finds_the_lrfree_optimizer(hf_example):
    import lrfree

    opt = lrfree.AdamHD([torch.nn.Parameter(torch.ones(2))])

    class Wrapper:  # accelerate's AcceleratedOptimizer keeps the user's in .optimizer
        optimizer = opt

    assert hf_example.unwrap(Wrapper()) is opt
    assert hf_example.unwrap(opt) is opt


# ------------------------------------------------- lrfree.integrations callbacks
def _record_steps(opt: torch.optim.Optimizer) -> list[tuple[dict[str, float], float]]:
    """After every step of ``opt`` (before any scheduler step): its ``effective_lr()`` and
    its ``group["lr"]``, the pair a framework's monitor and lrfree's logger read."""
    seen: list[tuple[dict[str, float], float]] = []
    opt.register_step_post_hook(
        lambda o, *_: seen.append((dict(o.effective_lr()), float(o.param_groups[0]["lr"])))
    )
    return seen


def test_integrations_import_needs_no_framework():
    """``import lrfree.integrations`` imports neither Lightning nor transformers."""
    import subprocess

    code = (
        "import sys, lrfree, lrfree.integrations as i; "
        "assert callable(i.rates) and 'HFRateLogger' in dir(i); "
        "assert 'LightningAveraging' in dir(i); "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'transformers') "
        "if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_integrations_missing_framework_names_the_extra(monkeypatch):
    from lrfree import integrations

    for mod in ("lightning", "lightning.pytorch", "pytorch_lightning", "transformers"):
        monkeypatch.setitem(sys.modules, mod, None)  # `import mod` raises ImportError
    with pytest.raises(ImportError, match=r"LightningRateLogger.*pip install lrfree\[ecosystem\]"):
        integrations._make_lightning_logger()
    with pytest.raises(ImportError, match=r"LightningAveraging.*pip install lrfree\[ecosystem\]"):
        integrations._make_lightning_averaging()
    with pytest.raises(ImportError, match=r"HFRateLogger.*pip install lrfree\[ecosystem\]"):
        integrations._make_hf_logger()
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        integrations.Nope  # noqa: B018


def test_integrations_rates_and_unwrap():
    import lrfree
    from lrfree.integrations import rates, unwrap

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = lrfree.SGDHD(model.named_parameters(), lr=0.1, blocks="layer")
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    full = rates(opt)
    assert full["lrfree/effective_lr/0"] == pytest.approx(opt.effective_lr()["0"], rel=0)
    assert any(k.startswith("lrfree/hypergradient/") for k in full)
    assert set(rates(opt, diagnostics=False, prefix="")) == {"effective_lr/0", "effective_lr/2"}
    base = torch.optim.SGD(model.parameters(), lr=0.5)
    assert rates(base) == {"lrfree/lr/group0": 0.5}

    class Wrapped:
        def __init__(self, inner):
            self._optimizer = inner

    assert unwrap(Wrapped(Wrapped(opt))) is opt
    with pytest.raises(ValueError, match="every_n_steps"):
        pytest.importorskip("lightning")
        from lrfree.integrations import LightningRateLogger

        LightningRateLogger(every_n_steps=0)


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_lightning_rate_logger_logs_the_rate_used(manual, tmp_path):
    """LightningRateLogger sends, at Lightning's step s, effective_lr() right after optimizer
    step s (before the scheduler's step), to the Trainer's loggers; LearningRateMonitor sends
    group["lr"], which for AdamHD is a different number."""
    L = pytest.importorskip("lightning")
    import lrfree
    from lrfree.integrations import LightningRateLogger

    class Memory(L.pytorch.loggers.Logger):
        def __init__(self):
            super().__init__()
            self.records: list[tuple[int, dict[str, float]]] = []

        name = "memory"
        version = 0

        def log_metrics(self, metrics, step=None):
            self.records.append((step, dict(metrics)))

        def log_hyperparams(self, *args, **kwargs):
            pass

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
            )
            self.automatic_optimization = not manual
            self.seen: list[tuple[dict[str, float], float]] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            if self.automatic_optimization:
                return torch.nn.functional.cross_entropy(self.net(x), y)
            opt, sched = self.optimizers(), self.lr_schedulers()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.manual_backward(loss)
            opt.step()
            sched.step()
            return loss

        def configure_optimizers(self):
            # the additive form (as in the HF test below): with the multiplicative default the
            # rate moved by less than the 0.1% the checks need for some initial weights
            opt = lrfree.AdamHD(
                self.net.named_parameters(),
                lr=0.01,
                blocks="layer",
                hypergrad_lr=0.01,
                form="additive",
            )
            self.seen = _record_steps(opt)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=gen)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    memory, callback = Memory(), LightningRateLogger()
    module = Tiny()
    trainer = L.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=memory,
        callbacks=[callback, L.pytorch.callbacks.LearningRateMonitor("step")],
        log_every_n_steps=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    assert len(module.seen) == 6
    ours = {s: m for s, m in memory.records if "lrfree/effective_lr/0" in m}
    monitor = {s: m for s, m in memory.records if any(k.startswith("lr-") for k in m)}
    assert sorted(ours) == [1, 3, 5]  # log_every_n_steps=2: Lightning's cadence
    for step, values in ours.items():
        effective, lr = module.seen[step]
        for block in ("0", "2"):
            assert values[f"lrfree/effective_lr/{block}"] == effective[block]
        assert values["lrfree/effective_lr/2"] != pytest.approx(lr, rel=1e-3)
        assert "lrfree/hypergradient/alpha/2" in values
        if step in monitor:  # LearningRateMonitor shows group["lr"], not the rate used
            (shown,) = [v for k, v in monitor[step].items() if k.startswith("lr-")]
            assert shown != pytest.approx(values["lrfree/effective_lr/2"], rel=1e-3)
    assert callback.last == ours[5]
    assert trainer.callback_metrics["lrfree/effective_lr/2"] == pytest.approx(
        module.seen[5][0]["2"]
    )
    assert not callback._handles  # hooks removed at the end of training


def test_hf_rate_logger_reaches_the_reporters(tmp_path):
    """HFRateLogger puts effective_lr() of the logged step into the Trainer's log records:
    log_history, the console printer and TensorBoard (a reporter registered before it)
    all get it, and it differs from the record's learning_rate (group["lr"])."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import Trainer, TrainingArguments

    import lrfree
    from lrfree.integrations import HFRateLogger

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
            )

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    class Rows(torch.utils.data.Dataset):
        def __init__(self):
            self.x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": (self.x[i, 0] > 0).long()}

    torch.manual_seed(0)
    model = Tiny()
    # the additive form (the paper's): by step 2 the multiplicative default moved the rate by
    # 0.017% only, under the 0.1% the "differs from group['lr']" check below needs
    opt = lrfree.AdamHD(model.named_parameters(), lr=0.01, hypergrad_lr=0.01, form="additive")
    seen = _record_steps(opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=8,
        logging_steps=2,
        save_strategy="no",
        report_to=["tensorboard"],
        use_cpu=True,
        disable_tqdm=True,  # PrinterCallback: the console
        dataloader_num_workers=0,
    )
    callback = HFRateLogger()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Rows(),
        optimizers=(opt, sched),
        callbacks=[callback],
    )
    assert trainer.callback_handler.callbacks[0] is callback  # ahead of the reporters
    trainer.train()
    records = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        effective, lr = seen[r["step"] - 1]
        assert r["lrfree/effective_lr/global"] == effective["global"]
        assert r["learning_rate"] == pytest.approx(lr)  # the Trainer shows group["lr"] ...
        assert r["lrfree/effective_lr/global"] != pytest.approx(lr, rel=1e-3)  # ... not this
        assert "lrfree/hypergradient/alpha/global" in r
    assert callback.last["lrfree/effective_lr/global"] == seen[5][0]["global"]
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "the TensorBoard reporter wrote no event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tb = {e.step: e.value for e in acc.Scalars("train/lrfree/effective_lr/global")}
    assert sorted(tb) == [2, 4, 6]
    for step, value in tb.items():
        assert value == pytest.approx(seen[step - 1][0]["global"], rel=1e-6)  # float32


def test_integrations_docstring_examples_run():
    import doctest

    from lrfree import integrations

    result = doctest.testmod(integrations, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
