"""Run benchmark trainings and append their results to a JSONL file (resumable).

A run is identified by its key (task, optimizer, lr, seed, epochs, batch size, training
subset, lrfree version and a hash of its source code); runs whose key is already in
``results.jsonl`` are not run again, so a killed suite restarted with the same ``--out``
finishes only the remaining runs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import lrfree

from .data import Split
from .optimizers import BENCH_OPTIMIZERS, BenchOptimizer, lookup, resolve
from .tasks import TASKS, BenchConfig, Task, TaskSize, get_task, task_loss

__all__ = [
    "Run",
    "attention_backend",
    "default_jobs",
    "environment",
    "plan",
    "run_one",
    "run_suite",
    "subset_split",
    "train_step",
]


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
    test_subset: int | None = None

    @property
    def key(self) -> str:
        lr = "default" if self.lr is None else f"{self.lr:g}"
        test = "" if self.test_subset is None else f"|test={self.test_subset}"
        return (
            f"{self.task.name}|{self.entry.name}|lr={lr}|seed={self.seed}|epochs={self.epochs}"
            f"|bs={self.task.batch_size}|subset={self.train_subset}{test}"
            f"|v={lrfree.__version__}|code={run_fingerprint(self.entry)}"
        )

    @property
    def label(self) -> str:
        """A short name for progress bars and log folders: ``task/optimizer-lr-seed``."""
        lr = "default" if self.lr is None else f"{self.lr:g}"
        return f"{self.task.name}/{self.entry.name}-lr{lr}-seed{self.seed}"


NOT_TRAINING = (
    "bench/report.py",
    "bench/cost.py",
    "bench/measure.py",
    "cli.py",
    "integrations.py",
)
"""Modules that cannot change a run's record (tables, cost estimates, the command line,
framework callbacks): left out of ``code_fingerprint``, so editing them keeps results."""


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the library's source (but ``NOT_TRAINING``), so results of changed code are
    never reused."""
    root = Path(lrfree.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in NOT_TRAINING:
            continue
        h.update(rel.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


LOOP_FILES = ("bench/runner.py", "bench/data.py", "bench/tasks.py", "bench/optimizers.py")
"""The code a torch baseline or a peer runs: the loop, the data, the tasks, the registry."""


@functools.lru_cache(maxsize=1)
def loop_fingerprint() -> str:
    """A hash of ``LOOP_FILES``: the keys of baseline and peer runs, which run no other lrfree
    code, so a change to a rule does not discard the grids and peers already trained."""
    root = Path(lrfree.__file__).parent
    h = hashlib.sha256()
    for rel in LOOP_FILES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:10]


def run_fingerprint(entry: BenchOptimizer) -> str:
    """The code a run's key names: the whole package for lrfree optimizers, the benchmark's
    loop (``loop_fingerprint``) for torch baselines and peers."""
    return code_fingerprint() if entry.family == "lrfree" else loop_fingerprint()


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
    return {
        "torch": torch.__version__,
        "lrfree": lrfree.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def plan(
    tasks: list[str],
    optimizers: list[str],
    seeds: int,
    epochs: int | None,
    train_subset: int | None,
    sizes: dict[str, TaskSize] | None = None,
    test_subset: int | None = None,
) -> list[Run]:
    """The runs of a benchmark: every task x seed x optimizer spec (a grid gives one run per
    rate). Sizes, most specific first: the arguments ``epochs`` / ``train_subset`` /
    ``test_subset`` (``None``: not given), a suite's ``sizes[task]``, the task's defaults.

    Example::

        >>> runs = plan(["mnist1d-mlp"], ["adamw@grid"], seeds=2, epochs=3, train_subset=None)
        >>> len(runs), runs[0].epochs, runs[0].lr
        (10, 3, 0.0001)
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    runs = []
    for t in tasks:
        task = get_task(t)
        size = (sizes or {}).get(t, TaskSize())
        n_epochs = epochs or size.epochs or task.epochs
        subset = next(
            (v for v in (train_subset, size.train_subset, task.train_subset) if v is not None),
            None,
        )
        test = test_subset if test_subset is not None else size.test_subset
        if task.batch_size <= 0:  # a full-graph task: one "example", split by node masks
            subset = test = None
        for seed in range(seeds):
            for spec in optimizers:
                for entry, lr, is_grid in resolve(spec):
                    runs.append(Run(task, spec, entry, lr, is_grid, seed, n_epochs, subset, test))
    return runs


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
    """Schedule-free optimizers (the peers, and lrfree's with ``averaging``) keep two
    iterates and need opt.train() / opt.eval(); for the others these are no-ops."""
    fn = getattr(opt, mode, None)
    if callable(fn):
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


def _second_order_due(opt: torch.optim.Optimizer) -> bool:
    """Whether the next step differentiates twice: graph-mode curvature (``curvature_due()``,
    LW) or an ADLER estimate in the ``backward(loss, outputs)`` route (a backward through the
    gradient graph)."""
    if getattr(opt, "curvature_due", lambda: False)():
        return True
    from lrfree.rules.adler import _estimate_due

    return _estimate_due(opt)  # (False for optimizers without an ADLER group)


def attention_backend(task: Task, opt: torch.optim.Optimizer) -> contextlib.AbstractContextManager:
    """The attention backend of the next training step: ``sdpa_kernel(SDPBackend.MATH)`` when
    the task's model needs it (``Task.needs_math_attention``: the fused CPU kernel of
    ``F.scaled_dot_product_attention`` has no double backward) and the step differentiates
    twice; else no change (first-order steps keep the fused kernel, as a user's loop would).

    Example::

        >>> from lrfree.bench.tasks import get_task
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters())
        >>> type(attention_backend(get_task("stdlib-charlm"), opt)).__name__
        'nullcontext'
    """
    if task.needs_math_attention and _second_order_due(opt):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def train_step(task: Task, step: Callable[..., Any], model, opt, x, y) -> torch.Tensor:
    """One training step ``step(task, model, opt, x, y)`` under ``attention_backend``."""
    with attention_backend(task, opt):
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
    n, bs = len(split.x_train), task.batch_size
    steps_per_epoch = 1 if bs <= 0 or bs >= n else -(-n // bs)
    opt = run.entry.build(model, run.lr, steps_per_epoch=steps_per_epoch, loss=task.loss)
    step = run.entry.step or _default_step
    gen = torch.Generator().manual_seed(run.seed)  # same data order for every optimizer
    _mode(opt, "train")
    tb, tb_epoch = _tb_logger(tb_dir, run, opt, steps_per_epoch) if tb_dir else (None, None)
    per_epoch, rates, trace = [], [], []
    # the rate trace: about TRACE_POINTS read-outs of effective_lr() over the whole run
    trace_every = max(1, run.epochs * steps_per_epoch // TRACE_POINTS)
    traced = callable(getattr(opt, "effective_lr", None))
    elapsed, cpu, diverged, n_steps = 0.0, 0.0, False, 0
    for epoch in range(run.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum, count = torch.zeros(()), 0
        for x, y in _batches(split, task.batch_size, gen):
            loss = train_step(task, step, model, opt, x, y)
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


def subset_split(split: Split, train_subset: int | None, test_subset: int | None) -> Split:
    """The first ``train_subset`` training and ``test_subset`` test examples (``None``: all).

    The graph tasks hold one full-graph "batch" (their split is by node masks), which any
    subset keeps whole.
    """
    if train_subset is None and test_subset is None:
        return split
    for v in (train_subset, test_subset):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"a subset must be a positive number of examples, got {v!r}")
    tr = slice(None) if train_subset is None else slice(0, train_subset)
    te = slice(None) if test_subset is None else slice(0, test_subset)
    return Split(split.x_train[tr], split.y_train[tr], split.x_test[te], split.y_test[te])


class _Progress:
    """A tqdm bar over the plan's *estimated* seconds (``cost.epoch_seconds`` per epoch), so
    its rate calibrates the estimate to this machine and its ETA weighs a 2c2d epoch more
    than an MNIST-1D one. The description names the run last heard from
    (``[i/N] task/optimizer-lr-seed epoch e/E``, ``i`` counting runs as they start) and, with
    parallel runs, how many others are training."""

    def __init__(self, todo: list[Run]) -> None:
        from tqdm.auto import tqdm

        from . import cost

        self.cost = cost
        self.n = len(todo)
        self.bar = tqdm(
            total=cost.estimate(todo) * (1 + 1e-9),  # (float sums of the updates)
            dynamic_ncols=True,
            mininterval=0.5,
            smoothing=0.05,  # the ETA follows the average rate, not the last epoch's
            bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, ETA {remaining}",
        )
        self.started = 0
        self.active: dict[str, list] = {}  # run key -> [number, estimated seconds counted]

    def loaded(self, task: str) -> None:
        self.bar.update(self.cost.LOAD_SECONDS.get(task, self.cost.DEFAULT_LOAD))

    def start(self, run: Run) -> None:
        self.started += 1
        self.active[run.key] = [self.started, self.cost.SETUP_SECONDS]
        self.bar.update(self.cost.SETUP_SECONDS)
        self._describe(run, 0)

    def _describe(self, run: Run, epoch: int) -> None:
        others = len(self.active) - 1
        more = f" (+{others} running)" if others > 0 else ""
        number = self.active[run.key][0] if run.key in self.active else self.started
        self.bar.set_description(
            f"[{number}/{self.n}] {run.label} epoch {epoch}/{run.epochs}{more}"
        )

    def epoch(self, run: Run, e: int) -> None:
        step = self.cost.epoch_seconds(run)
        self.bar.update(step)
        if run.key in self.active:
            self.active[run.key][1] += step
        self._describe(run, e)

    def finish(self, run: Run) -> None:  # a diverged run stops early: count the rest
        counted = self.active.pop(run.key, [0, 0.0])[1]
        self.bar.update(max(self.cost.run_seconds(run) - counted, 0.0))

    def close(self, complete: bool = False) -> None:
        if complete:  # the estimate's start-up and shared loads: show the end as 100%
            self.bar.update(max(self.bar.total - self.bar.n, 0.0))
        self.bar.close()


# ----------------------------------------------------------- parallel runs
# A worker is a fresh interpreter (the "spawn" start method: forking a process whose
# OpenMP pool is running is unsafe), so a run travels as names and is rebuilt there from
# the task and optimizer registries; each worker loads a task's data once.
_WORKER: dict[str, Any] = {}


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


def _ref(run: Run) -> tuple:
    return (
        run.task.name, run.spec, run.entry.name, run.lr, run.grid, run.seed, run.epochs,
        run.train_subset, run.test_subset,
    )  # fmt: skip


def _unref(ref: tuple) -> Run:
    task, spec, entry, *rest = ref
    if task not in TASKS or (entry not in BENCH_OPTIMIZERS and "[" not in entry):
        raise ValueError(
            f"task {task!r} / optimizer {entry!r} is not registered in a fresh interpreter; "
            "parallel runs (jobs > 1) rebuild runs from lrfree.bench's registries: register "
            "it at import time of lrfree.bench or run with jobs=1"
        )
    return Run(TASKS[task], spec, lookup(entry), *rest)


def _exit_with_parent() -> None:
    """Stop this worker as soon as the process that started it is gone (killed, say): a
    worker of a dead pool would otherwise train on, or wait, forever."""
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="lrfree-bench-parent-watch").start()


def _worker_init(threads: int, cfg: BenchConfig, events: Any, jobs: int, fingerprint: str) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent()
    torch.set_num_threads(threads)
    _WORKER.update(cfg=cfg, events=events, jobs=jobs, splits={}, fingerprint=fingerprint)


def _worker_run(ref: tuple, tb_dir: str | None) -> dict[str, Any]:
    if code_fingerprint() != _WORKER["fingerprint"]:  # the runs' keys name the parent's code
        raise RuntimeError(
            "lrfree's source changed after the benchmark started (its results are keyed by "
            "a hash of the source): run the same command again to train with the new code"
        )
    run = _unref(ref)
    splits, events = _WORKER["splits"], _WORKER["events"]
    if run.task.name not in splits:
        splits[run.task.name] = run.task.load(_WORKER["cfg"])
    split = subset_split(splits[run.task.name], run.train_subset, run.test_subset)
    events.put((run.key, 0))
    rec = run_one(run, split, on_epoch=lambda e: events.put((run.key, e)), tb_dir=tb_dir)
    rec["env"]["jobs"] = _WORKER["jobs"]
    return rec


def _run_parallel(
    todo: list[Run],
    jobs: int,
    threads: int,
    cfg: BenchConfig,
    on_done: Callable[[Run, dict[str, Any]], None],
    bar: _Progress | None,
    tb_dir: str | os.PathLike[str] | None,
) -> None:
    """Train ``todo`` in ``jobs`` worker processes of ``threads`` torch threads each, the
    longest (estimated) runs first; ``on_done(run, record)`` in the order runs finish.

    A worker's exception (a missing dataset, say) or Ctrl-C stops the suite at once: the
    workers are terminated, the runs they were training are lost and redone next time.
    """
    import multiprocessing
    import queue

    from . import cost

    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    by_key = {r.key: r for r in todo}
    finished_keys: set[str] = set()  # a worker's last events may arrive after its result
    order = sorted(todo, key=cost.run_seconds, reverse=True)
    tb = None if tb_dir is None else str(tb_dir)

    def show(key: str, epoch: int) -> None:
        if bar is None or key not in by_key or key in finished_keys:
            return
        if epoch == 0:
            bar.start(by_key[key])
        else:
            bar.epoch(by_key[key], epoch)

    fingerprint = code_fingerprint()  # the code the runs' keys name
    pool = ctx.Pool(
        jobs, initializer=_worker_init, initargs=(threads, cfg, events, jobs, fingerprint)
    )
    try:
        pending = [(r, pool.apply_async(_worker_run, (_ref(r), tb))) for r in order]
        while pending:
            news: list[tuple[str, int]] = []
            try:  # wait for news, then take everything that has arrived
                news.append(events.get(timeout=0.25))
                while True:
                    news.append(events.get_nowait())
            except queue.Empty:
                pass
            for key, epoch in news:
                show(key, epoch)
            still = []
            for run, res in pending:
                if not res.ready():
                    still.append((run, res))
                    continue
                rec = res.get()  # re-raises the worker's exception here
                finished_keys.add(run.key)
                if bar is not None:
                    if run.key not in bar.active:
                        bar.start(run)
                    bar.finish(run)
                on_done(run, rec)
            pending = still
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
        events.close()


def default_jobs(threads: int | None = None) -> int:
    """Parallel runs for this machine: the usable CPUs divided by the threads per run."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(threads or 1, 1))


def run_suite(
    runs: list[Run],
    out: Path,
    cfg: BenchConfig,
    *,
    progress: bool = True,
    fresh: bool = False,
    tb_dir: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run what is not in ``out/results.jsonl`` yet; return the records of all ``runs``.

    Each finished run is appended (and fsync'ed) as one JSON line, so a run killed at any
    point loses at most the runs in progress; a line cut by the kill is ignored and redone.
    With ``tb_dir``, the runs trained now also write TensorBoard logs (see ``run_one``).

    ``jobs > 1`` trains that many runs at once in worker processes with ``threads`` torch
    threads each (default: the usable CPUs divided by ``jobs``), longest runs first; only
    this process writes ``results.jsonl`` (lines in the order runs finish) and the records
    returned are in the order of ``runs`` either way. Every run is seeded on its own, so a
    run's record does not depend on which worker trained it or when (only its timings do).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
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
    bar = _Progress(todo) if progress and todo else None
    complete = False

    def on_done(run: Run, rec: dict[str, Any]) -> None:
        _append(path, rec)
        done[run.key] = rec

    try:
        if jobs > 1 and len(todo) > 1:
            workers = min(jobs, len(todo))
            per_run = threads or max(1, default_jobs() // workers)
            _run_parallel(todo, workers, per_run, cfg, on_done, bar, tb_dir)
        else:
            if threads:
                torch.set_num_threads(threads)
            splits: dict[str, Split] = {}
            for r in todo:
                if r.task.name not in splits:
                    splits[r.task.name] = r.task.load(cfg)
                    if bar is not None:
                        bar.loaded(r.task.name)
                split = subset_split(splits[r.task.name], r.train_subset, r.test_subset)
                if bar is not None:
                    bar.start(r)
                on_epoch = functools.partial(bar.epoch, r) if bar is not None else None
                rec = run_one(r, split, on_epoch=on_epoch, tb_dir=tb_dir)
                rec["env"]["jobs"] = 1
                if bar is not None:
                    bar.finish(r)
                on_done(r, rec)
        complete = True
    finally:
        if bar is not None:
            bar.close(complete)
    return [{**done[r.key], "spec": r.spec, "grid": r.grid} for r in runs]
