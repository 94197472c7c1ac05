"""Run a plan: one run at a time in this process, or several at once in worker processes,
appending each record to ``results.jsonl`` as it finishes (resumable).

Runs whose key is already in ``results.jsonl`` are not run again, so a killed suite restarted
with the same ``out`` finishes only the remaining runs. A worker is a fresh interpreter (the
"spawn" start method: forking a process whose OpenMP pool is running is unsafe), so a run
travels as names and is rebuilt there from the task and optimizer registries; each worker
loads a task's data once.

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> from lrfree.bench.plan import plan
    >>> from lrfree.bench.tasks import BenchConfig
    >>> runs = plan(["mnist1d-mlp"], ["sgd-m"], seeds=1, epochs=1, train_subset=256)
    >>> (rec,) = run_suite(runs, Path(tempfile.mkdtemp()), BenchConfig(), progress=False)
    >>> rec["optimizer"], rec["env"]["jobs"]
    ('sgd-m', 1)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import cost
from .data import Split, subset_split
from .loop import run_one
from .optimizers import BENCH_OPTIMIZERS, lookup
from .plan import Run
from .progress import Progress
from .results import append_result, code_fingerprint, resume_results
from .tasks import TASKS, BenchConfig

__all__ = ["default_jobs", "run_suite"]

_WORKER: dict[str, Any] = {}


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
    bar: Progress | None,
    tb_dir: str | os.PathLike[str] | None,
) -> None:
    """Train ``todo`` in ``jobs`` worker processes of ``threads`` torch threads each, the
    longest (estimated) runs first; ``on_done(run, record)`` in the order runs finish.

    A worker's exception (a missing dataset, say) or Ctrl-C stops the suite at once: the
    workers are terminated, the runs they were training are lost and redone next time.
    """
    import multiprocessing
    import queue

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


def _run_here(
    todo: list[Run],
    cfg: BenchConfig,
    on_done: Callable[[Run, dict[str, Any]], None],
    bar: Progress | None,
    tb_dir: str | os.PathLike[str] | None,
) -> None:
    """Train ``todo`` one run at a time in this process, loading each task's data once."""
    splits: dict[str, Split] = {}
    for r in todo:
        if r.task.name not in splits:
            splits[r.task.name] = r.task.load(cfg)
            if bar is not None:
                bar.loaded(r)
        split = subset_split(splits[r.task.name], r.train_subset, r.test_subset)
        if bar is not None:
            bar.start(r)
        on_epoch = functools.partial(bar.epoch, r) if bar is not None else None
        rec = run_one(r, split, on_epoch=on_epoch, tb_dir=tb_dir)
        rec["env"]["jobs"] = 1
        if bar is not None:
            bar.finish(r)
        on_done(r, rec)


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
    With ``tb_dir``, the runs trained now also write TensorBoard logs (see ``loop.run_one``).

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
    done = resume_results(path, fresh)
    todo = list({r.key: r for r in runs if r.key not in done}.values())  # a run asked twice
    # (adamw at its default 1e-3 and inside adamw@grid) is trained once
    bar = Progress(todo) if progress and todo else None
    complete = False

    def on_done(run: Run, rec: dict[str, Any]) -> None:
        append_result(path, rec)
        done[run.key] = rec

    try:
        if jobs > 1 and len(todo) > 1:
            workers = min(jobs, len(todo))
            per_run = threads or max(1, default_jobs() // workers)
            _run_parallel(todo, workers, per_run, cfg, on_done, bar, tb_dir)
        else:
            if threads:
                torch.set_num_threads(threads)
            _run_here(todo, cfg, on_done, bar, tb_dir)
        complete = True
    finally:
        if bar is not None:
            bar.close(complete)
    return [{**done[r.key], "spec": r.spec, "grid": r.grid} for r in runs]
