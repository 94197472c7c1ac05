"""The benchmark's progress bar: a tqdm bar over the plan's estimated seconds.

Example::

    >>> from lrfree.bench.plan import plan
    >>> runs = plan(["mnist1d-mlp"], ["adamw"], seeds=1, epochs=2, train_subset=None)
    >>> bar = Progress(runs, disable=True)
    >>> bar.start(runs[0]); bar.epoch(runs[0], 1); bar.finish(runs[0]); bar.close(True)
"""

from __future__ import annotations

from . import cost
from .plan import Run

__all__ = ["Progress"]


class Progress:
    """A tqdm bar over the plan's *estimated* seconds (``cost.epoch_seconds`` per epoch), so
    its rate calibrates the estimate to this machine and its ETA weighs a 2c2d epoch more
    than an MNIST-1D one. The description names the run last heard from
    (``[i/N] task/optimizer-lr-seed epoch e/E``, ``i`` counting runs as they start) and, with
    parallel runs, how many others are training. ``disable`` draws nothing (tqdm's)."""

    def __init__(self, todo: list[Run], disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self.n = len(todo)
        self.bar = tqdm(
            total=cost.estimate(todo) * (1 + 1e-9),  # (float sums of the updates)
            dynamic_ncols=True,
            mininterval=0.5,
            smoothing=0.05,  # the ETA follows the average rate, not the last epoch's
            bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, ETA {remaining}",
            disable=disable,
        )
        self.started = 0
        self.active: dict[str, list] = {}  # run key -> [number, estimated seconds counted]

    def loaded(self, run: Run) -> None:
        """``run``'s task's data was loaded (counted once per task)."""
        self.bar.update(cost.load_seconds(run.task))

    def start(self, run: Run) -> None:
        self.started += 1
        self.active[run.key] = [self.started, cost.SETUP_SECONDS]
        self.bar.update(cost.SETUP_SECONDS)
        self._describe(run, 0)

    def _describe(self, run: Run, epoch: int) -> None:
        others = len(self.active) - 1
        more = f" (+{others} running)" if others > 0 else ""
        number = self.active[run.key][0] if run.key in self.active else self.started
        self.bar.set_description(
            f"[{number}/{self.n}] {run.label} epoch {epoch}/{run.epochs}{more}"
        )

    def epoch(self, run: Run, e: int) -> None:
        step = cost.epoch_seconds(run)
        self.bar.update(step)
        if run.key in self.active:
            self.active[run.key][1] += step
        self._describe(run, e)

    def finish(self, run: Run) -> None:  # a diverged run stops early: count the rest
        counted = self.active.pop(run.key, [0, 0.0])[1]
        self.bar.update(max(cost.run_seconds(run) - counted, 0.0))

    def close(self, complete: bool = False) -> None:
        if complete:  # the estimate's start-up and shared loads: show the end as 100%
            self.bar.update(max(self.bar.total - self.bar.n, 0.0))
        self.bar.close()
