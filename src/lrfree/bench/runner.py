"""The benchmark's runner, by its former one-module names: re-exports only.

The runner is now in pieces whose imports go one way (``results`` <- ``plan`` <- ``loop`` <-
``pool`` <- ``cli``):

* ``lrfree.bench.results``: the code fingerprints that key results, ``results.jsonl``;
* ``lrfree.bench.plan``: ``Run`` and ``plan``;
* ``lrfree.bench.loop``: one run's training loop (``run_one``, ``train_step``);
* ``lrfree.bench.pool``: running a plan, in worker processes or not (``run_suite``);
* ``lrfree.bench.cli``: the ``lrfree bench`` command.

Nothing in ``lrfree`` imports this module; it keeps ``from lrfree.bench.runner import ...``
working for scripts and notebooks.

Example::

    >>> from lrfree.bench import runner
    >>> from lrfree.bench.pool import run_suite
    >>> runner.run_suite is run_suite
    True
"""

from __future__ import annotations

from . import loop
from .data import Split, subset_split
from .loop import (
    TRACE_BLOCKS,
    TRACE_POINTS,
    attention_backend,
    collapsed,
    environment,
    run_one,
    train_step,
)
from .optimizers import BENCH_OPTIMIZERS, BenchOptimizer, lookup, resolve
from .plan import Run, plan
from .pool import default_jobs, run_suite
from .results import (
    LOOP_FILES,
    NOT_TRAINING,
    code_fingerprint,
    load_results,
    loop_fingerprint,
    run_fingerprint,
)
from .tasks import TASKS, BenchConfig, Task, TaskSize, get_task, task_loss

# the former private names that tests and scripts reach for
_batches = loop.batches
_default_step = loop.closure_step
_evaluate = loop.evaluate
_mode = loop.set_mode

__all__ = [
    "BENCH_OPTIMIZERS",
    "LOOP_FILES",
    "NOT_TRAINING",
    "TASKS",
    "TRACE_BLOCKS",
    "TRACE_POINTS",
    "BenchConfig",
    "BenchOptimizer",
    "Run",
    "Split",
    "Task",
    "TaskSize",
    "attention_backend",
    "code_fingerprint",
    "collapsed",
    "default_jobs",
    "environment",
    "get_task",
    "load_results",
    "lookup",
    "loop_fingerprint",
    "plan",
    "resolve",
    "run_fingerprint",
    "run_one",
    "run_suite",
    "subset_split",
    "task_loss",
    "train_step",
]
