"""Run benchmark trainings and append their results to a JSONL file (resumable).

A run is identified by its key (task, optimizer, lr, seed, epochs, batch size, training
subset, lrfree version and a hash of its source code); runs whose key is already in
``results.jsonl`` are not run again, so a killed suite restarted with the same ``--out``
finishes only the remaining runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import lrfree

from .data import Split
from .optimizers import BenchOptimizer, resolve
from .tasks import BenchConfig, Task, get_task

__all__ = ["Run", "environment", "plan", "run_one", "run_suite"]


@dataclass
class Run:
    task: Task
    spec: str  # as asked, e.g. "adamw@grid"
    entry: BenchOptimizer
    lr: float | None
    grid: bool
    seed: int
    epochs: int
    train_subset: int | None

    @property
    def key(self) -> str:
        lr = "default" if self.lr is None else f"{self.lr:g}"
        return (
            f"{self.task.name}|{self.entry.name}|lr={lr}|seed={self.seed}|epochs={self.epochs}"
            f"|bs={self.task.batch_size}|subset={self.train_subset}|v={lrfree.__version__}"
            f"|code={code_fingerprint()}"
        )


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the library's source, so results of changed code are never reused."""
    root = Path(lrfree.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


_WORST = {"accuracy": 0.0, "test_loss": float("inf")}


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "lrfree": lrfree.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def plan(
    tasks: list[str],
    optimizers: list[str],
    seeds: int,
    epochs: int | None,
    train_subset: int | None,
) -> list[Run]:
    runs = []
    for t in tasks:
        task = get_task(t)
        for seed in range(seeds):
            for spec in optimizers:
                for entry, lr, is_grid in resolve(spec):
                    subset = train_subset if train_subset is not None else task.train_subset
                    runs.append(
                        Run(task, spec, entry, lr, is_grid, seed, epochs or task.epochs, subset)
                    )
    return runs


def task_loss(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task.loss == "nll":
        return F.nll_loss(out, y, ignore_index=-100)
    if task.loss == "bce_logits":  # reconstruction: y is the target image in [0, 1]
        return F.binary_cross_entropy_with_logits(out, y)
    return F.cross_entropy(out, y, ignore_index=-100)


def _batches(split: Split, batch_size: int, gen: torch.Generator) -> Iterator[tuple]:
    n = len(split.x_train)
    if batch_size <= 0 or batch_size >= n:
        yield split.x_train, split.y_train
        return
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        yield split.x_train[idx], split.y_train[idx]


def _mode(opt: torch.optim.Optimizer, mode: str) -> None:
    """Schedule-free optimizers keep two iterates and need opt.train() / opt.eval()."""
    fn = getattr(opt, mode, None)
    if callable(fn) and not isinstance(opt, lrfree.Composed):
        fn()


@torch.no_grad()
def _evaluate(task: Task, model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """Test loss and test accuracy (accuracy is NaN for reconstruction tasks)."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for i in range(0, len(split.x_test), 1000):
        x, y = split.x_test[i : i + 1000], split.y_test[i : i + 1000]
        out = model(x)
        if task.loss == "bce_logits":
            n = len(x)
        else:
            mask = y != -100
            n = int(mask.sum())
            correct += int((out.argmax(1) == y)[mask].sum())
        loss_sum += float(task_loss(task, out, y)) * n
        total += n
    model.train()
    acc = float("nan") if task.loss == "bce_logits" else correct / max(total, 1)
    return loss_sum / max(total, 1), acc


def _default_step(task: Task, model, opt, x, y) -> torch.Tensor:
    due = getattr(opt, "curvature_due", lambda: False)()

    def closure():
        opt.zero_grad()
        loss = task_loss(task, model(x), y)
        loss.backward(create_graph=due)
        return loss

    return opt.step(closure)


def run_one(run: Run, split: Split, on_epoch=None) -> dict[str, Any]:
    """Train one (task, optimizer, lr, seed) and return its result record."""
    task = run.task
    torch.manual_seed(run.seed)
    model = task.model()
    n, bs = len(split.x_train), task.batch_size
    steps_per_epoch = 1 if bs <= 0 or bs >= n else -(-n // bs)
    opt = run.entry.build(model, run.lr, steps_per_epoch=steps_per_epoch, loss=task.loss)
    step = run.entry.step or _default_step
    gen = torch.Generator().manual_seed(run.seed)  # same data order for every optimizer
    _mode(opt, "train")
    per_epoch, rates = [], []
    elapsed, diverged = 0.0, False
    for epoch in range(run.epochs):
        t0 = time.perf_counter()
        loss_sum, count = torch.zeros(()), 0
        for x, y in _batches(split, task.batch_size, gen):
            loss = step(task, model, opt, x, y)
            loss_sum += loss.detach()
            count += 1
        elapsed += time.perf_counter() - t0
        train_loss = float(loss_sum) / max(count, 1)
        _mode(opt, "eval")
        test_loss, test_acc = _evaluate(task, model, split)
        _mode(opt, "train")
        metric = 100 * test_acc if task.metric == "accuracy" else test_loss
        per_epoch.append(
            {
                "metric": metric,
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "time": elapsed,
            }
        )
        if hasattr(opt, "effective_lr"):
            rates.append(opt.effective_lr())
        if on_epoch is not None:
            on_epoch(epoch + 1)
        if not math.isfinite(train_loss):
            diverged = True
            break
    last = per_epoch[-1]
    return {
        "key": run.key,
        "task": task.name,
        "optimizer": run.entry.name,
        "spec": run.spec,
        "family": run.entry.family,
        "lr": run.lr,
        "grid": run.grid,
        "seed": run.seed,
        "epochs": run.epochs,
        "batch_size": task.batch_size,
        "train_subset": run.train_subset,
        "per_epoch": per_epoch,
        "rates": rates,
        "diverged": diverged,
        "metric_name": task.metric,
        "higher_is_better": task.metric == "accuracy",
        "final_metric": last["metric"] if not diverged else _WORST[task.metric],
        "final_test_acc": last["test_acc"] if not diverged else 0.0,
        "final_train_loss": last["train_loss"],
        "seconds": elapsed,
        "env": environment(),
    }


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that run is redone
                continue
            done[rec["key"]] = rec
    return done


def _append(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_suite(
    runs: list[Run],
    out: Path,
    cfg: BenchConfig,
    *,
    progress: bool = True,
    fresh: bool = False,
) -> list[dict[str, Any]]:
    """Run what is not in ``out/results.jsonl`` yet; return the records of all ``runs``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    if fresh and path.exists():
        path.unlink()
    done = load_results(path)
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with open(path, "a") as fh:  # a line cut by a crash: start the next one cleanly
            fh.write("\n")
    todo = list({r.key: r for r in runs if r.key not in done}.values())  # a run asked twice
    # (adamw at its default 1e-3 and inside adamw@grid) is trained once
    splits: dict[str, Split] = {}
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(r.epochs for r in todo), unit="epoch", dynamic_ncols=True, mininterval=0.5
        )
    for r in todo:
        if r.task.name not in splits:
            splits[r.task.name] = r.task.load(cfg)
        split = splits[r.task.name]
        if r.train_subset is not None:  # the first N training examples
            split = Split(split.x_train[: r.train_subset], split.y_train[: r.train_subset],
                          split.x_test, split.y_test)  # fmt: skip
        if bar is not None:
            lr = "default" if r.lr is None else f"{r.lr:g}"
            bar.set_description(f"{r.task.name} {r.entry.name} lr={lr} seed={r.seed}")
        rec = run_one(r, split, on_epoch=(lambda e: bar.update(1)) if bar else None)
        if bar is not None and rec["diverged"]:
            bar.update(r.epochs - len(rec["per_epoch"]))
        _append(path, rec)
        done[r.key] = rec
    if bar is not None:
        bar.close()
    return [{**done[r.key], "spec": r.spec, "grid": r.grid} for r in runs]
