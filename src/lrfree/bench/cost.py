"""What a benchmark plan will cost, before it runs: measured step and evaluation times.

The estimate of one run is

.. math::

    T = E \\cdot (S \\cdot t_{\\text{step}}(\\text{task}) \\cdot f(\\text{optimizer})
        + t_{\\text{eval}}(\\text{task})) + t_{\\text{setup}}

with ``E`` epochs, ``S = ceil(n_train / batch)`` steps per epoch (1 for full batch),
``t_step`` the measured seconds of one torch-AdamW training step on the task's batch,
``t_eval`` the measured seconds of one evaluation on the task's test set (scaled by the
fraction of it a ``test_subset`` keeps), and ``f`` the
measured cost of the optimizer's step relative to AdamW's (the largest ratio over the tasks
it was measured on, so conservative). A plan adds the data loading of each task once and
the start-up (imports) once.

Checked against real runs (``lrfree bench --task T --optimizers adamw,sgd-lw,adler,prodigy
--epochs 2 --train-subset 1500 --test-subset 1000 --threads 1``, 2026-11-30, shared machine):
fmnist-2c2d estimated 48 s, the process used 52 s of CPU; fmnist-mlp 5 s vs 11 s and
cora-gcn 1 s vs 6 s, where start-up (about 5 s, now added) was most of it.

The task's costs are ``Task.step_seconds``, ``Task.eval_seconds`` and ``Task.load_seconds``
(``lrfree.bench.tasks``, each with where it was measured), the optimizers' ``FACTORS`` are
below; both were measured with ``python -m lrfree.bench.measure`` (one torch thread) on this
project's 2-core x86_64 CPU while other jobs ran. They are CPU seconds of the process
(``time.process_time``), which a shared machine disturbs much less than wall-clock time; with
one thread, a step's CPU time is about the wall time it takes on a quiet machine, and two
threads only make it shorter, so the estimate is on the slow side.
``python -m lrfree.bench.measure`` re-measures them on any machine.

Example::

    >>> from lrfree.bench import cost
    >>> from lrfree.bench.plan import plan
    >>> runs = plan(["mnist1d-mlp"], ["adamw"], seeds=1, epochs=2, train_subset=None)
    >>> cost.estimate(runs) > 0
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .tasks import Task

if TYPE_CHECKING:
    from .plan import Run

__all__ = [
    "FACTORS",
    "epoch_seconds",
    "estimate",
    "eval_seconds",
    "format_seconds",
    "load_seconds",
    "run_seconds",
    "step_seconds",
    "train_seconds",
]

# optimizer step cost relative to torch AdamW's (a grid's factor is over its rates: high rates
# that diverge end early). Fitted on 2026-12-05 to the training seconds of 872 stored runs of
# the full suite (2 runs at once, 1 thread each, on this project's shared 2-core CPU):
# ``python benchmarks/calibrate_costs.py benchmarks/out/full-suite/results.jsonl
# benchmarks/out/auto-eval/results.jsonl`` (task and optimizer scales whose products
# reproduce every task's and every optimizer's total; a single run is within about 1.35x,
# the residual spread). The earlier values, from ``python -m lrfree.bench.measure`` on a few
# steps, made the 3-seed suite 2 h 17 min; the runs took about 0.7 of that.
FACTORS: dict[str, float] = {
    "adamw": 1,
    "sgd-m": 0.679,
    # the paper suites' torch Adam / RMSprop (not in the fitted records): measured with
    # python -m lrfree.bench.measure on 2026-12-05, 1.22 / 1.27 where AdamW measured 1.17
    "adam": 1.04,
    "rmsprop": 1.09,
    "composed-adamw": 1.22,  # not in the records: its measured ratio to AdamW, kept
    # LW at update_every=1 (a curvature pass every step): over the suite's tasks its runs cost
    # about 1.2 AdamW runs (on the small MNIST-1D MLP about 5, on the transformer task 13-14:
    # Task.step_factors there)
    "sgd-lw": 1.19,
    "adamw-lw": 1.22,
    "sgd-tlr": 0.767,
    "adam-tlr": 0.92,
    "adalip": 0.809,
    "rmslip": 0.858,
    "adamlip": 1.09,
    "adalip-u": 0.779,
    "rmslip-u": 0.92,
    "adamlip-u": 1.06,
    "adler": 1.28,
    "sgd-hd": 0.909,
    "sgdn-hd": 0.943,
    "adam-hd": 0.919,
    "sgd-camhd": 0.942,
    "sgdn-camhd": 1.03,
    "adam-camhd": 1.02,
    "prodigy": 0.759,
    "dadapt-adam": 0.858,
    "schedulefree-adamw": 0.741,
    "dog": 0.695,
    "ldog": 0.655,
    "auto": 0.684,
    "prodigy-sf": 0.671,
}
DEFAULT_FACTOR = 3.0  # an optimizer not measured yet
DEFAULT_STEP = 0.05  # a task not measured yet: seconds per step
DEFAULT_EVAL = 2.0
DEFAULT_LOAD = 5.0
DEFAULT_EXAMPLES = (60000, 10000)  # a task that does not give its (training, test) examples
SETUP_SECONDS = 0.05  # model and optimizer construction, bookkeeping per run
STARTUP_SECONDS = 5.0  # importing torch and the benchmark, once per plan


def step_seconds(task: Task) -> float:
    """Measured CPU seconds of one torch-AdamW step on the task (``DEFAULT_STEP`` if none)."""
    return DEFAULT_STEP if task.step_seconds is None else task.step_seconds


def eval_seconds(task: Task) -> float:
    """Measured CPU seconds of one evaluation on the whole test set (``DEFAULT_EVAL``)."""
    return DEFAULT_EVAL if task.eval_seconds is None else task.eval_seconds


def load_seconds(task: Task) -> float:
    """Measured CPU seconds of loading the task's data (``DEFAULT_LOAD`` if none)."""
    return DEFAULT_LOAD if task.load_seconds is None else task.load_seconds


def _n(task: Task, subset: int | None, which: int) -> int:
    full = (task.examples or DEFAULT_EXAMPLES)[which]
    return full if subset is None else min(subset, full)


def _step_cost(run: Run) -> tuple[int, float]:
    """Steps per epoch of ``run`` and the estimated seconds of one."""
    task = run.task
    base = run.entry.name.partition("[")[0]  # a NAME[k=v] entry costs as its base
    steps = task.steps_per_epoch(_n(task, run.train_subset, 0))
    factor = task.step_factors.get(base, FACTORS.get(base, DEFAULT_FACTOR))
    return steps, step_seconds(task) * factor


def train_seconds(run: Run) -> float:
    """Estimated seconds of the training steps of one planned run (no evaluation, no
    setup): what a record's ``seconds`` measures."""
    steps, step = _step_cost(run)
    return run.epochs * steps * step


def run_seconds(run: Run) -> float:
    """Estimated seconds of one planned run, evaluation included; the evaluation cost scales
    with the test examples used (``test_subset``)."""
    task = run.task
    steps, step = _step_cost(run)
    test = _n(task, run.test_subset, 1) / _n(task, None, 1)
    return run.epochs * (steps * step + eval_seconds(task) * test) + SETUP_SECONDS


def epoch_seconds(run: Run) -> float:
    """Estimated seconds of one epoch of ``run`` (for the progress bar)."""
    return (run_seconds(run) - SETUP_SECONDS) / max(run.epochs, 1)


def estimate(runs: list[Run], jobs: int = 1) -> float:
    """Estimated seconds of a plan: every run, deduplicated by key, plus data loading.

    With ``jobs`` parallel runs (``pool.run_suite(jobs=...)``), the runs are dealt out
    longest first to whichever worker is free, as the pool does, and the estimate is the
    busiest worker's total (each worker loads a task's data once, all at about the same
    time, so the loads count once).

    Example::

        >>> from lrfree.bench.plan import plan
        >>> runs = plan(["mnist1d-cnn"], ["sgd-m@grid"], 1, epochs=2, train_subset=None)
        >>> estimate(runs, jobs=2) < estimate(runs)
        True
    """
    unique = list({r.key: r for r in runs}.values())
    loads = sum(load_seconds(t) for t in {r.task.name: r.task for r in unique}.values())
    if jobs <= 1:
        return sum(run_seconds(r) for r in unique) + loads + STARTUP_SECONDS
    busy = [0.0] * jobs
    for seconds in sorted((run_seconds(r) for r in unique), reverse=True):
        busy[busy.index(min(busy))] += seconds
    return max(busy) + loads + STARTUP_SECONDS


def format_seconds(s: float) -> str:
    """``4321.0`` -> ``"1 h 12 min"``; ``95`` -> ``"1 min 35 s"``."""
    s = round(s)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"
