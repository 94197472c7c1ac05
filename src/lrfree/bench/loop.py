"""One run's training loop: the seeded batches, the training step an entry declares, the
evaluation after each epoch, the rate traces and the run's record.

The loop names no optimizer: it reads what the optimizer offers (``needs_outputs()``,
``curvature_due()``, ``second_order_due()``, ``effective_lr()``, ``train()`` / ``eval()``: an
lrfree optimizer answers from its rules' declarations, ``Rule.feed`` and
``Rule.curvature_due``) and what an entry may declare besides (``BenchOptimizer``'s
``needs_outputs``, ``second_order`` and ``step``, for optimizers that offer nothing).

Example::

    >>> from lrfree.bench.data import load_mnist1d, subset_split
    >>> from lrfree.bench.plan import plan
    >>> (run,) = plan(["mnist1d-mlp"], ["adamw"], seeds=1, epochs=1, train_subset=256)
    >>> rec = run_one(run, subset_split(load_mnist1d(), 256, 100))
    >>> rec["steps_per_epoch"], len(rec["per_epoch"]), rec["diverged"]
    (2, 1, False)
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import lrfree

from .data import Split
from .optimizers import BenchOptimizer
from .plan import Run
from .tasks import Task, task_loss

__all__ = [
    "TRACE_BLOCKS",
    "TRACE_POINTS",
    "attention_backend",
    "batches",
    "closure_step",
    "collapsed",
    "curvature_due",
    "entry_step",
    "environment",
    "evaluate",
    "outputs_step",
    "run_one",
    "set_mode",
    "train_step",
]

Step = Callable[..., torch.Tensor]
"""A training step ``step(task, model, opt, x, y) -> loss``."""

_WORST = {"accuracy": 0.0, "test_loss": float("inf")}


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions and machine of this process (a record's ``env``)."""
    return {
        "torch": torch.__version__,
        "lrfree": lrfree.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def batches(split: Split, batch_size: int, gen: torch.Generator) -> Iterator[tuple]:
    """One epoch of training batches in the order ``gen`` draws (one ``randperm`` per epoch;
    the whole training set as one batch when ``batch_size`` is 0 or covers it)."""
    n = len(split.x_train)
    if batch_size <= 0 or batch_size >= n:
        yield split.x_train, split.y_train
        return
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        yield split.x_train[idx], split.y_train[idx]


def set_mode(opt: torch.optim.Optimizer, mode: str) -> None:
    """``opt.train()`` / ``opt.eval()`` (``mode``): schedule-free optimizers (the peers, and
    lrfree's with ``averaging``) keep two iterates and need them; for the others, no-ops."""
    fn = getattr(opt, mode, None)
    if callable(fn):
        fn()


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module, split: Split) -> tuple[float, float]:
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


def _offers(opt: torch.optim.Optimizer, name: str) -> bool:
    """``opt.<name>()``, False for an optimizer without the method."""
    method = getattr(opt, name, None)
    return bool(method()) if callable(method) else False


def curvature_due(opt: torch.optim.Optimizer) -> bool:
    """``opt.curvature_due()``: whether its next step needs ``backward(create_graph=True)``
    (graph-mode curvature); False for an optimizer without the method."""
    return _offers(opt, "curvature_due")


def second_order_due(opt: torch.optim.Optimizer) -> bool:
    """``opt.second_order_due()``: whether its next step differentiates twice by any route
    (``lrfree.Composed.second_order_due``); False for an optimizer without the method."""
    return _offers(opt, "second_order_due")


def closure_step(task: Task, model, opt, x, y) -> torch.Tensor:
    """The default step: ``opt.step(closure)``, the closure's backward in graph mode when
    ``curvature_due(opt)``."""
    due = curvature_due(opt)

    def closure():
        opt.zero_grad()
        loss = task_loss(task, model(x), y)
        loss.backward(create_graph=due)
        return loss

    return opt.step(closure)


def outputs_step(task: Task, model, opt, x, y) -> torch.Tensor:
    """The step of an entry that ``needs_outputs``: ``opt.backward(loss, out)`` (it keeps
    what the step needs of the outputs), then ``opt.step(outputs=out, targets=y)``."""
    opt.zero_grad()
    out = model(x)
    loss = task_loss(task, out, y)
    opt.backward(loss, out)  # type: ignore[attr-defined]
    opt.step(outputs=out, targets=y)
    return loss.detach()


def entry_step(entry: BenchOptimizer, opt: torch.optim.Optimizer | None = None) -> Step:
    """The training step of ``entry``'s optimizer ``opt``: the entry's own ``step``, else
    ``outputs_step`` when the optimizer asks for its outputs (``opt.needs_outputs()``: an
    lrfree rule's declaration) or the entry declares ``needs_outputs``, else
    ``closure_step``.

    Example::

        >>> import lrfree
        >>> from lrfree.bench.optimizers import BenchOptimizer
        >>> build = lambda model, lr, **kw: None
        >>> entry_step(BenchOptimizer("x", build, "lrfree", needs_outputs=True)).__name__
        'outputs_step'
        >>> params = torch.nn.Linear(2, 2).parameters()
        >>> entry_step(BenchOptimizer("y", build, "lrfree"), lrfree.ADLER(params)).__name__
        'outputs_step'
    """
    if entry.step is not None:
        return entry.step
    needs = entry.needs_outputs or (opt is not None and _offers(opt, "needs_outputs"))
    return outputs_step if needs else closure_step


def attention_backend(
    task: Task,
    opt: torch.optim.Optimizer,
    second_order: Callable[[torch.optim.Optimizer], bool] | None = None,
) -> contextlib.AbstractContextManager:
    """The attention backend of the next training step: ``sdpa_kernel(SDPBackend.MATH)`` when
    the task's model needs it (``Task.needs_math_attention``: the fused CPU kernel of
    ``F.scaled_dot_product_attention`` has no double backward) and the step differentiates
    twice (``curvature_due(opt)``, ``second_order_due(opt)`` or the entry's declared
    ``second_order(opt)``); else no change (first-order steps keep the fused kernel, as a
    user's loop would).

    Example::

        >>> from lrfree.bench.tasks import get_task
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters())
        >>> type(attention_backend(get_task("stdlib-charlm"), opt)).__name__
        'nullcontext'
        >>> type(attention_backend(get_task("stdlib-charlm"), opt, lambda o: True)).__name__
        '_GeneratorContextManager'
    """
    if task.needs_math_attention and (
        curvature_due(opt)
        or second_order_due(opt)
        or (second_order is not None and second_order(opt))
    ):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def train_step(
    task: Task,
    step: Step,
    model,
    opt,
    x,
    y,
    second_order: Callable[[torch.optim.Optimizer], bool] | None = None,
) -> torch.Tensor:
    """One training step ``step(task, model, opt, x, y)`` under ``attention_backend``
    (``second_order``: the entry's declaration)."""
    with attention_backend(task, opt, second_order):
        return step(task, model, opt, x, y)


def _tb_logger(tb_dir: str | os.PathLike[str], run: Run, opt, steps_per_epoch: int):
    """A TensorBoard logger for one run in ``tb_dir/<task>/<optimizer>-lr<lr>-seed<s>`` (the
    folder is emptied first, so a run redone after a crash is not logged twice)."""
    from lrfree.logging import OptimizerLogger, TensorBoardWriter

    folder = Path(tb_dir) / run.label
    if folder.exists():
        shutil.rmtree(folder)
    every = max(1, steps_per_epoch // 20)  # about 20 read-outs of the optimizer per epoch
    sink = TensorBoardWriter(folder, prefix="optimizer")
    epochs = TensorBoardWriter(writer=sink.writer, prefix="epoch")  # same event file
    return OptimizerLogger(opt, sink, every=every), epochs


TRACE_POINTS = 40
TRACE_BLOCKS = 32


def _first(rates: dict[str, float], n: int = TRACE_BLOCKS) -> dict[str, float]:
    """The first ``n`` blocks of a read-out (per-filter blocks can number thousands)."""
    return dict(itertools.islice(rates.items(), n))


def collapsed(task: Task, final_metric: float, diverged: bool) -> bool:
    """A diverged run, or a final metric at the task's ``collapse`` level (chance accuracy,
    the majority class, the autoencoder's constant predictor).

    Example::

        >>> from lrfree.bench.tasks import get_task
        >>> t = get_task("mnist1d-mlp")
        >>> collapsed(t, 10.2, False), collapsed(t, 60.0, False), collapsed(t, 60.0, True)
        (True, False, True)
    """
    if diverged or not math.isfinite(final_metric):
        return True
    if task.collapse is None:
        return False
    if task.metric == "accuracy":
        return final_metric <= task.collapse
    return final_metric >= task.collapse


def run_one(
    run: Run,
    split: Split,
    on_epoch: Callable[[int], None] | None = None,
    tb_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train one (task, optimizer, lr, seed) and return its result record.

    The record holds ``rates`` (``effective_lr()`` at the end of each epoch, every block)
    and ``rate_trace`` (about ``TRACE_POINTS`` read-outs over the run, ``{"step", "rates"}``,
    the first ``TRACE_BLOCKS`` blocks), for lrfree optimizers; ``[]`` for the others.

    ``on_epoch(epoch)`` is called after each epoch (progress bars). With ``tb_dir``, the
    optimizer's read-out (``lrfree.logging.scalars``: effective rates, rule diagnostics, or
    a torch optimizer's ``lr``) is written to TensorBoard about 20 times per epoch, and the
    epoch's train loss, test loss, test metric and training seconds once per epoch, all
    against the training step.
    """
    # LW's curvature steps call backward(create_graph=True), which makes torch warn about a
    # parameter <-> gradient reference cycle; the loop sets gradients to None every step
    # (zero_grad), which breaks it, so the warning is noise here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
        return _train(run, split, on_epoch, tb_dir)


def _train(
    run: Run,
    split: Split,
    on_epoch: Callable[[int], None] | None,
    tb_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    task = run.task
    torch.manual_seed(run.seed)
    model = task.model()
    steps_per_epoch = task.steps_per_epoch(len(split.x_train))
    opt = run.entry.build(model, run.lr, steps_per_epoch=steps_per_epoch, loss=task.loss)
    step, second_order = entry_step(run.entry, opt), run.entry.second_order
    gen = torch.Generator().manual_seed(run.seed)  # same data order for every optimizer
    set_mode(opt, "train")
    tb, tb_epoch = _tb_logger(tb_dir, run, opt, steps_per_epoch) if tb_dir else (None, None)
    per_epoch, rates, trace = [], [], []
    # the rate trace: about TRACE_POINTS read-outs of effective_lr() over the whole run
    trace_every = max(1, run.epochs * steps_per_epoch // TRACE_POINTS)
    traced = callable(getattr(opt, "effective_lr", None))
    elapsed, cpu, diverged, n_steps = 0.0, 0.0, False, 0
    for epoch in range(run.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum, count = torch.zeros(()), 0
        for x, y in batches(split, task.batch_size, gen):
            loss = train_step(task, step, model, opt, x, y, second_order)
            loss_sum += loss.detach()
            count += 1
            n_steps += 1
            if traced and n_steps % trace_every == 0:
                t_log, c_log = time.perf_counter(), time.process_time()
                trace.append({"step": n_steps, "rates": _first(opt.effective_lr())})
                t0 += time.perf_counter() - t_log  # read-outs are not training time
                c0 += time.process_time() - c_log
            if tb is not None and n_steps % tb.every == 0:
                t_log, c_log = time.perf_counter(), time.process_time()
                tb.log(n_steps)
                t0 += time.perf_counter() - t_log  # logging is not training time
                c0 += time.process_time() - c_log
        elapsed += time.perf_counter() - t0
        cpu += time.process_time() - c0  # CPU seconds: what a loaded machine does not inflate
        train_loss = float(loss_sum) / max(count, 1)
        set_mode(opt, "eval")
        test_loss, test_acc = evaluate(task, model, split)
        set_mode(opt, "train")
        metric = 100 * test_acc if task.metric == "accuracy" else test_loss
        per_epoch.append(
            {
                "metric": metric,
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "time": elapsed,
                "cpu_time": cpu,
            }
        )
        if hasattr(opt, "effective_lr"):
            rates.append(opt.effective_lr())
        if tb_epoch is not None:
            metrics = {"train_loss": train_loss, "test_loss": test_loss, "seconds": elapsed}
            if task.metric == "accuracy":
                metrics["test_accuracy"] = metric
            tb_epoch.write(n_steps, {k: v for k, v in metrics.items() if math.isfinite(v)})
        if on_epoch is not None:
            on_epoch(epoch + 1)
        if not math.isfinite(train_loss):
            diverged = True
            break
    if tb is not None:
        tb.close()  # closes the event file tb_epoch shares
    last = per_epoch[-1]
    final = last["metric"] if not diverged else _WORST[task.metric]
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
        "test_subset": run.test_subset,
        "per_epoch": per_epoch,
        "rates": rates,
        "rate_trace": trace,
        "steps_per_epoch": steps_per_epoch,
        "diverged": diverged,
        "metric_name": task.metric,
        "higher_is_better": task.metric == "accuracy",
        "final_metric": final,
        "collapsed": collapsed(task, final, diverged),
        "final_test_acc": last["test_acc"] if not diverged else 0.0,
        "final_train_loss": last["train_loss"],
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "env": environment(),
    }
