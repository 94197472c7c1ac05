"""A benchmark's plan: the runs (task x seed x optimizer spec, a grid giving one run per
rate) and their sizes, each identified by its key.

A run's key holds the task, optimizer, lr, seed, epochs, batch size, training and test
subsets, the lrfree version and the fingerprint of the code it runs
(``results.run_fingerprint``); a run whose key is already in ``results.jsonl`` is not run
again.

Example::

    >>> (run,) = plan(["mnist1d-mlp"], ["sgd-m@0.05"], seeds=1, epochs=2, train_subset=256)
    >>> run.label, run.key.split("|")[:4]
    ('mnist1d-mlp/sgd-m-lr0.05-seed0', ['mnist1d-mlp', 'sgd-m', 'lr=0.05', 'seed=0'])
"""

from __future__ import annotations

from dataclasses import dataclass

import lrfree

from .optimizers import BenchOptimizer, resolve
from .results import run_fingerprint
from .tasks import Task, TaskSize, get_task

__all__ = ["Run", "plan"]


@dataclass
class Run:
    """One training of the plan: ``entry`` at ``lr`` (``None``: its default) on ``task`` with
    ``seed``, for ``epochs``, on the first ``train_subset`` / ``test_subset`` examples
    (``None``: all); ``spec`` as asked (``"adamw@grid"``), ``grid`` whether a grid gave it."""

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
        (10, 3, 0.0003)
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
