"""Measure the costs ``lrfree.bench.cost`` estimates with on this machine: each task's
``step_seconds`` / ``eval_seconds`` / ``load_seconds`` and the optimizers' ``cost.FACTORS``
(a training run of each task's model for a few steps, not a benchmark run):

    OMP_NUM_THREADS=1 python -m lrfree.bench.measure --tasks stdlib-charlm \\
        --factor-tasks fmnist-mlp,fmnist-lenet5

It sits above the training loop (it times the loop's own training step), so ``cost`` itself,
which the pool reads for its plan, imports neither.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from .data import Split
from .loop import batches, entry_step, evaluate, set_mode, train_step
from .optimizers import lookup
from .tasks import BenchConfig, Task, get_task

__all__ = ["measure"]


def _clock() -> float:
    """CPU seconds of this process: with one torch thread, the work of a step regardless of
    what else the machine runs (wall-clock time would count the waits for a shared CPU)."""
    return time.process_time()


def _time_steps(task: Task, split: Split, name: str, n: int, warmup: int = 2) -> float:
    """Mean CPU seconds of one training step of optimizer ``name`` on ``task``'s batches
    (the mean, not the median: it must count the periodic curvature steps of LW and TLR)."""
    entry = lookup(name)
    torch.manual_seed(0)
    model = task.model()
    steps = task.steps_per_epoch(len(split.x_train))
    opt = entry.build(model, entry.default_lr, steps_per_epoch=steps, loss=task.loss)
    step = entry_step(entry, opt)
    set_mode(opt, "train")
    gen = torch.Generator().manual_seed(0)
    todo = []
    while len(todo) < n + warmup:
        todo += list(batches(split, task.batch_size, gen))
    times = []
    for i, (x, y) in enumerate(todo[: n + warmup]):
        t0 = _clock()
        train_step(task, step, model, opt, x, y, entry.second_order)
        if i >= warmup:
            times.append(_clock() - t0)
    return sum(times) / len(times)


def measure(
    tasks: list[str],
    optimizers: list[str],
    factor_tasks: list[str],
    steps: int = 40,
    cfg: BenchConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Measure ``Task.step_seconds`` (AdamW), ``eval_seconds`` and ``load_seconds`` for
    ``tasks`` and ``cost.FACTORS`` for ``optimizers`` (largest step-time ratio to AdamW over
    ``factor_tasks``)."""
    cfg = cfg or BenchConfig()
    step_s, eval_s, load_s, factors = {}, {}, {}, {}
    splits = {}
    for name in dict.fromkeys(tasks + factor_tasks):
        task = get_task(name)
        t0 = _clock()
        splits[name] = task.load(cfg)
        load_s[name] = _clock() - t0
        step_s[name] = _time_steps(task, splits[name], "adamw", steps)
        torch.manual_seed(0)
        model = task.model()
        t0 = _clock()
        evaluate(task, model, splits[name])
        eval_s[name] = _clock() - t0
        print(
            f"{name:20s} step {1e3 * step_s[name]:8.2f} ms  eval {eval_s[name]:6.2f} s  "
            f"load {load_s[name]:5.2f} s",
            flush=True,
        )
    for opt in optimizers:
        ratios = []
        for name in factor_tasks:
            task = get_task(name)
            ratios.append(_time_steps(task, splits[name], opt, steps) / step_s[name])
        factors[opt] = max(ratios)
        print(f"{opt:20s} x{factors[opt]:5.2f}  ({', '.join(f'{r:.2f}' for r in ratios)})")
    return {"step": step_s, "eval": eval_s, "load": load_s, "factors": factors}


def _main() -> None:
    from .optimizers import available

    p = argparse.ArgumentParser(description="Measure the costs lrfree.bench.cost estimates with.")
    p.add_argument("--tasks", default=None, help="comma-separated (default: all)")
    p.add_argument("--factor-tasks", default="fmnist-mlp,fmnist-lenet5")
    p.add_argument("--optimizers", default=None, help="comma-separated (default: all available)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    from .tasks import TASKS

    torch.set_num_threads(a.threads)
    tasks = a.tasks.split(",") if a.tasks else list(TASKS)
    opts = a.optimizers.split(",") if a.optimizers else available()
    m = measure(tasks, opts, a.factor_tasks.split(","), a.steps)
    for name in m["step"]:  # the fields of each Task in lrfree.bench.tasks
        print(f"{name}:")
        for field, key in (
            ("step_seconds", "step"),
            ("eval_seconds", "eval"),
            ("load_seconds", "load"),
        ):
            print(f"    {field}={m[key][name]:.4g},")
    print("FACTORS = {  # lrfree.bench.cost")
    for k, v in m["factors"].items():
        print(f'    "{k}": {math.ceil(v * 100) / 100:.2f},')
    print("}")


if __name__ == "__main__":
    _main()
