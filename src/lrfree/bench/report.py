"""Turn run records into tables (markdown), a summary, JSON and PNG plots.

Protocol (AlgoPerf-like, at small scale):

* a ``@grid`` entry is reported at the learning rate with the best mean final test metric;
  its *compute* is the sum of the training seconds of every rate of the grid; training
  seconds are CPU seconds of the run's process where the record has them (a machine loaded by
  other work does not inflate them; with one torch thread per run they equal the wall time of
  a quiet machine), else wall seconds;
* the *tuned baseline* of a task is the best grid entry; the *target* is 99% of its final
  metric; *time to target* is the training time (seconds, mean over seeds) until the test
  metric first reaches the target ("-" if never);
* *gap* is the entry's final test metric minus the tuned baseline's (in points);
* the *paired* comparison (``paired``) sets each entry against the tuned baseline seed by
  seed (runs of one seed share initial weights and data order) and calls it a win, a tie or
  a loss from a bootstrap interval of the mean per-seed difference (``verdict``).

The PNG plots are drawn by ``lrfree.bench.plots``; the results page and the redraw without
training (``python -m lrfree.bench.pages OUT [--results-page PAGE]``) are in
``lrfree.bench.pages``, above both.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "aggregate",
    "auto_lines",
    "base_gaps",
    "base_lines",
    "baseline_spread",
    "bootstrap_interval",
    "budget_changes",
    "budget_lines",
    "compare",
    "deficits",
    "markdown",
    "paired",
    "paired_differences",
    "paired_lines",
    "profile",
    "summary_lines",
    "verdict",
    "write_json",
]


def _seconds(rec: dict[str, Any]) -> float:
    """A run's training seconds: CPU seconds where recorded, else wall seconds."""
    return rec.get("cpu_seconds", rec["seconds"])


def _mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample std; a non-finite value (a diverged run's loss) makes the mean
    non-finite and the std NaN instead of raising (``statistics.stdev`` fails on inf).

    Example::

        >>> _mean_std([1.0, 3.0]), _mean_std([1.0, float("inf")])
        ((2.0, 1.4142135623730951), (inf, nan))
    """
    if not xs:
        return float("nan"), float("nan")
    if not all(math.isfinite(x) for x in xs):
        return sum(xs) / len(xs), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def aggregate(records: list[dict[str, Any]], target_frac: float = 0.99) -> dict[str, Any]:
    """Per task, one row per asked optimizer spec (grids collapsed to their best rate)."""
    by_task: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_task[r["task"]][r["spec"]].append(r)
    tasks: dict[str, Any] = {}
    for task, specs in by_task.items():
        rows = []
        for spec, recs in specs.items():
            by_lr: dict[Any, list[dict]] = defaultdict(list)
            for r in recs:
                by_lr[r["lr"]].append(r)
            sign = 1.0 if recs[0].get("higher_is_better", True) else -1.0
            best_lr = max(
                by_lr, key=lambda lr: sign * statistics.fmean(x["final_metric"] for x in by_lr[lr])
            )
            chosen = by_lr[best_lr]
            per_lr = []  # every rate's mean and std over seeds: the LR-sensitivity curve
            for lr in sorted(by_lr, key=lambda v: (v is None, v or 0.0)):
                m, s = _mean_std([x["final_metric"] for x in by_lr[lr]])
                n_div = sum(bool(x["diverged"]) for x in by_lr[lr])
                per_lr.append(
                    {"lr": lr, "mean": m, "std": s, "seeds": len(by_lr[lr]), "diverged": n_div}
                )
            acc_m, acc_s = _mean_std([x["final_metric"] for x in chosen])
            loss_m, _ = _mean_std([x["final_train_loss"] for x in chosen])
            secs_m, _ = _mean_std([_seconds(x) for x in chosen])
            rows.append(
                {
                    "spec": spec,
                    "optimizer": chosen[0]["optimizer"],
                    "family": chosen[0]["family"],
                    "lr": best_lr,
                    "grid": chosen[0]["grid"],
                    "n_lrs": len(by_lr),
                    "seeds": len(chosen),
                    "acc_mean": acc_m,
                    "acc_std": acc_s,
                    "train_loss": loss_m,
                    "seconds": secs_m,
                    "compute": sum(_seconds(x) for x in recs) / max(len(chosen), 1),
                    "diverged": sum(x["diverged"] for x in recs),
                    "by_lr": per_lr,
                    "curves": chosen,
                }
            )
        higher = next(iter(specs.values()))[0].get("higher_is_better", True)
        sign = 1.0 if higher else -1.0
        grid_rows = [r for r in rows if r["grid"]]
        tuned = max(grid_rows, key=lambda r: sign * r["acc_mean"]) if grid_rows else None
        target = None
        if tuned:
            target = target_frac * tuned["acc_mean"] if higher else tuned["acc_mean"] / target_frac
        for row in rows:
            row["gap"] = row["acc_mean"] - tuned["acc_mean"] if tuned else None
            row["close"] = None
            if tuned:  # within 1 point of accuracy, or within 1% of a loss
                close = (
                    row["gap"] >= -1.0 if higher else row["acc_mean"] <= 1.01 * tuned["acc_mean"]
                )
                row["close"] = bool(close)
            times = []
            for rec in row["curves"]:
                hit = next(
                    (
                        e.get("cpu_time", e["time"])
                        for e in rec["per_epoch"]
                        if target is not None and sign * e["metric"] >= sign * target
                    ),
                    None,
                )
                times.append(hit)
            row["time_to_target"] = (
                statistics.fmean(times) if times and all(t is not None for t in times) else None
            )
        rows.sort(key=lambda r: -sign * r["acc_mean"])
        metric = next(iter(specs.values()))[0].get("metric_name", "accuracy")
        tasks[task] = {
            "rows": rows,
            "tuned": tuned["spec"] if tuned else None,
            "target": target,
            "metric": metric,
            "higher_is_better": higher,
        }
    return tasks


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(agg: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = []
    for task, t in agg.items():
        lines.append(f"### {task}\n")
        acc = t["higher_is_better"]
        label = "test acc %" if acc else "test loss"
        if t["target"] is not None:
            rule = "99% of its final test accuracy" if acc else "its final test loss / 0.99"
            lines.append(
                f"Tuned baseline: `{t['tuned']}`; target {label} {t['target']:.4g} ({rule}).\n"
            )
        lines.append(
            f"| optimizer | lr | {label} | gap | final train loss | time to target (s) "
            "| train s (one run) | compute s (incl. grid) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in t["rows"]:
            lr = "default" if r["lr"] is None else f"{r['lr']:g}"
            if r["grid"]:
                lr += f" (best of {r['n_lrs']})"
            fmt = ".2f" if acc else ".4f"
            value = f"{r['acc_mean']:{fmt}} ± {r['acc_std']:{fmt}}"
            if r["diverged"]:
                value += f" ({r['diverged']} diverged)"
            lines.append(
                f"| {r['spec']} | {lr} | {value} | {_fmt(r['gap'], '+' + fmt)} | "
                f"{r['train_loss']:.4f} | {_fmt(r['time_to_target'], '.1f')} | "
                f"{r['seconds']:.1f} | {r['compute']:.1f} |"
            )
        lines.append("")
    carried: dict[tuple[str, str], int] = defaultdict(int)
    for t in agg.values():
        for r in t["rows"]:
            for c in r["curves"]:
                for k in c.get("rekeys", []):
                    carried[(k["from"], k["reason"], "verified" in k)] += 1
    for (old, why, verified), n in carried.items():
        how = (
            "after its optimizer's first epoch on every task was retrained with the new code "
            "and matched exactly (`--verify`)"
            if verified
            else "on the recorded reason"
        )
        lines.append(
            f"Carried over: {n} of the runs above were made under the fingerprint `{old}` (the "
            "benchmark loop's for baselines and peers, the library's for lrfree optimizers) and "
            f"carried to the current one by `benchmarks/rekey.py` {how} (reason recorded: "
            f"{why}).\n"
        )
    verdicts = paired(agg)
    lines += auto_lines(agg, verdicts)
    lines += summary_lines(agg, verdicts)
    lines += paired_lines(agg, verdicts)
    lines += base_lines(agg)
    lines.append(
        f"Seeds: {meta.get('seeds')}; {_sizes_text(meta)}; "
        f"machine: {meta['env']['processor']}, {meta['env']['cpus']} CPUs, "
        f"{_threads_text(meta['env'])}; torch {meta['env']['torch']}, "
        f"lrfree {meta['env']['lrfree']}."
    )
    return "\n".join(lines) + "\n"


def _threads_text(env: dict[str, Any]) -> str:
    """``"2 torch threads"`` or ``"2 runs at once, 1 torch thread each"``."""
    threads, jobs = env.get("threads"), env.get("jobs", 1) or 1
    if jobs > 1:
        return f"{jobs} runs at once, {threads} torch thread{'s' * (threads != 1)} each"
    return f"{threads} torch threads"


def _sizes_text(meta: dict[str, Any]) -> str:
    """Epochs and subsets: one phrase when every task shares them, else per task."""
    sizes = meta.get("sizes")
    if not sizes:  # records from an older caller: the global overrides only
        return (
            f"epochs: {meta.get('epochs') or 'task default'}; "
            f"training subset: {meta.get('train_subset') or 'full'}"
        )

    def one(z: dict[str, Any]) -> str:
        return (
            f"{z['epochs']} epochs, training examples: {z['train_subset'] or 'all'}, "
            f"test examples: {z['test_subset'] or 'all'}"
        )

    phrases = {task: one(z) for task, z in sizes.items()}
    if len(set(phrases.values())) == 1:
        return next(iter(phrases.values()))
    return "sizes: " + "; ".join(f"{t}: {p}" for t, p in phrases.items())


def write_json(agg: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    slim = {
        task: {**t, "rows": [{k: v for k, v in r.items() if k != "curves"} for r in t["rows"]]}
        for task, t in agg.items()
    }
    path.write_text(json.dumps({"meta": meta, "tasks": slim}, indent=2))


def deficits(agg: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per optimizer spec, per task: how far it is from the task's best entry.

    Accuracy tasks: ``best - acc`` in accuracy points; loss tasks: ``100 (loss / best - 1)``,
    percent above the best loss. 0 for the best entry; ``inf`` for a diverged or non-finite
    result.

    Example::

        >>> agg = {"t": {"higher_is_better": True, "rows": [
        ...     {"spec": "a", "acc_mean": 90.0}, {"spec": "b", "acc_mean": 87.5}]}}
        >>> deficits(agg)
        {'a': {'t': 0.0}, 'b': {'t': 2.5}}
    """
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for task, t in agg.items():
        values = [r["acc_mean"] for r in t["rows"] if math.isfinite(r["acc_mean"])]
        if not values:
            continue
        best = max(values) if t["higher_is_better"] else min(values)
        for r in t["rows"]:
            v = r["acc_mean"]
            if not math.isfinite(v):
                d = math.inf
            elif t["higher_is_better"]:
                d = best - v
            else:
                d = 100.0 * (v / best - 1.0) if best > 0 else math.inf
            out[r["spec"]][task] = max(d, 0.0)
    return dict(out)


def profile(agg: dict[str, Any], taus: list[float]) -> dict[str, list[float]]:
    """Performance profile: per spec, the fraction of its tasks with deficit <= tau, per tau.

    ``rho_s(tau) = |{task: deficit(s, task) <= tau}| / |tasks of s|``, with ``deficit`` as in
    ``deficits`` (points of accuracy, or percent of loss, below the task's best entry).
    ``rho_s(0)`` is the fraction of tasks ``s`` wins; a curve that rises early and reaches 1
    is an optimizer that is never far from the best.

    Example::

        >>> agg = {"t1": {"higher_is_better": True, "rows": [
        ...     {"spec": "a", "acc_mean": 90.0}, {"spec": "b", "acc_mean": 87.5}]},
        ...        "t2": {"higher_is_better": True, "rows": [
        ...     {"spec": "a", "acc_mean": 70.0}, {"spec": "b", "acc_mean": 71.0}]}}
        >>> profile(agg, [0.0, 1.0, 3.0])
        {'a': [0.5, 1.0, 1.0], 'b': [0.5, 0.5, 1.0]}
    """
    return {
        spec: [sum(d <= tau for d in per_task.values()) / len(per_task) for tau in taus]
        for spec, per_task in deficits(agg).items()
    }


# --- the paired comparison over seeds -----------------------------------------------------

PAIRED_LEVEL = 0.95  # the bootstrap interval's coverage
PAIRED_RESAMPLES = 10_000
PAIRED_SEED = 0  # numpy Generator seed: the same records always give the same report
ONE_POINT = 1.0  # the fixed line of a single seed: accuracy points, or percent of the loss


def paired_differences(
    values: Mapping[Any, float], base: Mapping[Any, float], higher_is_better: bool = True
) -> dict[Any, float]:
    """Per seed run by both sides, how much better ``values`` is than ``base`` (seed ->
    difference, in seed order; positive = better than the baseline).

    Accuracy (``higher_is_better``): ``values[s] - base[s]``, in points. Loss (lower is
    better): ``100 (base[s] - values[s]) / ref``, in percent of ``ref``, the mean of the
    baseline's finite values over *all* its seeds (its mean in the report's tables, the
    denominator ``deficits`` and the 1%-of-loss line use). Seeds present on one side only are
    left out: a seed pairs two runs with the same initial weights and data order, a run
    without its partner has nothing to be compared with. A non-finite value is a failed run
    (diverged): against a finite partner it gives ``-inf`` (the entry failed) or ``+inf``
    (the baseline failed), and ``0.0`` when both failed.

    Example::

        >>> paired_differences({0: 81.0, 1: 82.5, 2: 70.0}, {0: 80.0, 1: 80.0, 3: 90.0})
        {0: 1.0, 1: 2.5}
        >>> paired_differences({0: 0.75, 1: 1.25}, {0: 1.0, 1: 1.0}, higher_is_better=False)
        {0: 25.0, 1: -25.0}
    """
    finite = [b for b in base.values() if math.isfinite(b)]
    ref = sum(finite) / len(finite) if finite else math.nan
    out: dict[Any, float] = {}
    for seed in sorted(set(values) & set(base)):
        x, b = values[seed], base[seed]
        if not math.isfinite(x) and not math.isfinite(b):  # both failed: even
            out[seed] = 0.0
        elif not math.isfinite(x):  # the entry failed, the baseline did not
            out[seed] = -math.inf
        elif not math.isfinite(b):
            out[seed] = math.inf
        elif higher_is_better:
            out[seed] = x - b
        else:
            out[seed] = 100.0 * (b - x) / ref if ref > 0 else math.nan
    return out


def baseline_spread(base: Mapping[Any, float], higher_is_better: bool = True) -> float:
    """The baseline's own seed-to-seed spread, in the units of ``paired_differences``: the
    sample standard deviation of its finite values over all its seeds (accuracy points; loss
    tasks: percent of its mean loss). NaN with fewer than two finite values.

    Example::

        >>> baseline_spread({0: 80.0, 1: 81.0, 2: 82.0})
        1.0
        >>> round(baseline_spread({0: 0.4, 1: 0.6}, higher_is_better=False), 2)  # 0.1414 / 0.5
        28.28
    """
    finite = [b for b in base.values() if math.isfinite(b)]
    if len(finite) < 2:
        return math.nan
    sd = statistics.stdev(finite)
    if higher_is_better:
        return sd
    ref = statistics.fmean(finite)
    return 100.0 * sd / ref if ref > 0 else math.nan


def bootstrap_interval(
    diffs: Sequence[float],
    level: float = PAIRED_LEVEL,
    resamples: int = PAIRED_RESAMPLES,
    seed: int = PAIRED_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``diffs`` at coverage ``level``.

    Draws ``resamples`` samples of ``len(diffs)`` values with replacement from
    ``numpy.random.default_rng(seed)`` (fixed: the same input always gives the same interval),
    takes each sample's mean and returns the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of those means (numpy's ``inverted_cdf`` quantile, an order statistic without
    interpolation, so an infinite difference stays infinite instead of becoming NaN).
    ``(nan, nan)`` for no values; ``(d, d)`` for one value ``d``.

    Coarse for few values: ``n`` values have only ``C(2n - 1, n)`` distinct samples (10 for
    3 seeds), and the sample of ``n`` copies of the smallest difference has probability
    ``n**-n`` (1/27 for 3, 1/4 for 2), more than 2.5%: for 2 or 3 seeds the 95% interval is
    the range ``[min(diffs), max(diffs)]`` of the per-seed differences.

    Example::

        >>> bootstrap_interval([2.0, 2.0, 2.0])
        (2.0, 2.0)
        >>> bootstrap_interval([-1.0, 0.5, 3.0])
        (-1.0, 3.0)
    """
    import numpy as np

    d = np.asarray(list(diffs), dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    with np.errstate(invalid="ignore"):  # +inf and -inf in one sample: a NaN mean
        means = d[idx].mean(axis=1)
    q = [100.0 * (1.0 - level) / 2.0, 100.0 * (1.0 + level) / 2.0]
    lo, hi = np.percentile(means, q, method="inverted_cdf")
    return float(lo), float(hi)


def verdict(
    diffs: Sequence[float],
    interval: tuple[float, float],
    spread: float,
    one_point: float = ONE_POINT,
) -> str | None:
    """``"win"``, ``"tie"`` or ``"loss"`` of an entry against the baseline from its per-seed
    differences (``paired_differences``: positive = better), their ``bootstrap_interval`` and
    the baseline's ``baseline_spread``; ``None`` with no paired seed.

    * Two or more paired seeds: **tie** if ``|mean difference| <= spread`` (the entry is not
      further from the baseline than the baseline's own seeds are from each other); else
      **win** if the interval lies entirely above 0 (``lo > 0``), **loss** if entirely below
      (``hi < 0``), **tie** otherwise (including an undefined, NaN, mean or interval).
    * A run that diverged (``-inf``: the entry failed where the baseline did not) on any
      paired seed is a **loss**, whatever the other seeds say: a user meets that seed too.
    * One paired seed (no interval, no spread to speak of): the report's fixed 1-point line,
      **win** if ``d > one_point``, **loss** if ``d < -one_point``, else **tie** (1 accuracy
      point; loss tasks: 1% of the baseline's loss).

    Example::

        >>> verdict([2.0, 2.0, 2.0], (2.0, 2.0), spread=0.5)
        'win'
        >>> verdict([2.0, 2.0, 2.0], (2.0, 2.0), spread=3.0), verdict([1.5], (1.5, 1.5), 0.0)
        ('tie', 'win')
        >>> verdict([-3.0, 1.0, -4.0], (-4.0, 1.0), spread=0.5)
        'tie'
        >>> verdict([float("-inf"), 0.0, 0.0], (float("-inf"), 0.0), spread=0.5)
        'loss'
    """
    diffs = list(diffs)
    if not diffs:
        return None
    if any(d == -math.inf for d in diffs):
        return "loss"
    if len(diffs) == 1:
        d = diffs[0]
        return "win" if d > one_point else "loss" if d < -one_point else "tie"
    mean = sum(diffs) / len(diffs)  # not fmean: +inf and -inf give NaN, not an error
    lo, hi = interval
    if abs(mean) <= spread:
        return "tie"
    if lo > 0:
        return "win"
    if hi < 0:
        return "loss"
    return "tie"


def compare(
    values: Mapping[Any, float],
    base: Mapping[Any, float],
    higher_is_better: bool = True,
    *,
    level: float = PAIRED_LEVEL,
    resamples: int = PAIRED_RESAMPLES,
    seed: int = PAIRED_SEED,
) -> dict[str, Any]:
    """The paired comparison of one entry's per-seed final metrics (seed -> value) with the
    baseline's: ``seeds`` and ``diffs`` (``paired_differences``), ``n`` paired seeds, their
    ``mean``, the ``interval`` (``bootstrap_interval``), the baseline's ``spread``
    (``baseline_spread``), the ``verdict`` and the ``rule`` that gave it (``"bootstrap"``
    with two or more paired seeds, ``"1-point"`` with one, ``None`` with none).

    Example::

        >>> c = compare({0: 82.0, 1: 83.0, 2: 84.0}, {0: 80.0, 1: 81.0, 2: 82.0})
        >>> c["diffs"], c["interval"], c["spread"], c["verdict"], c["rule"]
        ([2.0, 2.0, 2.0], (2.0, 2.0), 1.0, 'win', 'bootstrap')
    """
    per_seed = paired_differences(values, base, higher_is_better)
    diffs = list(per_seed.values())
    interval = bootstrap_interval(diffs, level, resamples, seed)
    spread = baseline_spread(base, higher_is_better)
    n = len(diffs)
    return {
        "seeds": list(per_seed),
        "diffs": diffs,
        "n": n,
        "mean": sum(diffs) / n if n else math.nan,
        "interval": interval,
        "spread": spread,
        "verdict": verdict(diffs, interval, spread),
        "rule": None if n == 0 else "1-point" if n == 1 else "bootstrap",
    }


def _per_seed(row: dict[str, Any]) -> dict[Any, float]:
    """A row's final metric per seed (its chosen rate's runs, for a grid)."""
    return {c.get("seed", 0): c["final_metric"] for c in row["curves"]}


def paired(agg: dict[str, Any], **kw: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Per entry spec, per task: ``compare`` of its runs with the task's tuned baseline's
    (the best grid entry at its best rate, as ``aggregate`` picks it), seed by seed, plus the
    ``baseline`` spec. The tuned baseline itself is not compared with itself; tasks without a
    grid have no baseline and no comparison. Keyword arguments go to ``compare``.

    Example::

        >>> recs = [{"task": "t", "spec": s, "optimizer": s, "family": "baseline", "lr": lr,
        ...          "grid": g, "seed": k, "final_metric": v, "final_train_loss": 0.1,
        ...          "seconds": 1.0, "diverged": False, "per_epoch": []}
        ...         for k in range(3)
        ...         for s, lr, g, v in [("a@grid", 0.1, True, 80.0 + k),
        ...                             ("a@grid", 1.0, True, 50.0),
        ...                             ("b", None, False, 83.0 + k)]]
        >>> p = paired(aggregate(recs))
        >>> sorted(p), p["b"]["t"]["baseline"], p["b"]["t"]["verdict"], p["b"]["t"]["interval"]
        (['b'], 'a@grid', 'win', (3.0, 3.0))
    """
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for task, t in agg.items():
        base = next((r for r in t["rows"] if r["spec"] == t.get("tuned")), None)
        if base is None:
            continue
        base_values = _per_seed(base)
        for r in t["rows"]:
            if r is base:
                continue
            c = compare(_per_seed(r), base_values, t["higher_is_better"], **kw)
            out[r["spec"]][task] = {**c, "baseline": base["spec"]}
    return dict(out)


def _counts(per_task: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Wins, ties and losses of one entry across its tasks (unpaired tasks left out)."""
    out = {"win": 0, "tie": 0, "loss": 0}
    for c in per_task.values():
        if c["verdict"] is not None:
            out[c["verdict"]] += 1
    return out


def _seeds_text(verdicts: dict[str, dict[str, dict[str, Any]]]) -> str:
    """How many seeds the comparisons paired, and where the 1-point line stood in."""
    ns = [c["n"] for per in verdicts.values() for c in per.values() if c["n"]]
    one = sum(n == 1 for n in ns)
    if not ns:
        return "No comparison had a seed run by both sides."
    if max(ns) == 1:
        return (
            "One seed per comparison: no interval can be drawn from one run, so every verdict "
            "here is the fixed 1-point line (win: better by more than 1 point, loss: worse by "
            "more than 1 point, tie: within 1 point; loss tasks: 1% of the baseline's loss)."
        )
    if min(ns) == max(ns):
        text = f"Seeds paired in every comparison: {ns[0]}."
    else:
        text = f"Seeds paired per comparison: {min(ns)} to {max(ns)}."
    if one:
        text += (
            f" {one} comparison{'s' * (one != 1)} with a single paired seed use"
            f"{'s' * (one == 1)} the fixed 1-point line (win / loss: better / worse by more "
            "than 1 point or 1% of the loss, tie otherwise)."
        )
    if max(ns) <= 3:
        text += (
            f" With {max(ns)} seeds a bootstrap is coarse: the samples of all-equal seeds "
            "are likely enough that the 95% interval is the range of the per-seed "
            "differences, so a win means better on every seed (and by more than the "
            "baseline's spread)."
        )
    return text


def paired_lines(
    agg: dict[str, Any], verdicts: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[str]:
    """Markdown lines: the rule of ``paired`` / ``verdict``, the number of seeds, and per
    entry its wins, ties and losses against the tuned baseline across tasks (and which
    tasks it won and lost)."""
    verdicts = paired(agg) if verdicts is None else verdicts
    if not verdicts:
        return []
    family = {r["spec"]: r["family"] for t in agg.values() for r in t["rows"]}
    pct = round(100 * PAIRED_LEVEL)
    lines = [
        "### Paired over seeds against the tuned baseline\n",
        "Each entry against its task's tuned baseline (the best rate of the best grid, "
        "named above each task's table), seed by seed: the runs of one seed share initial "
        "weights and data order. Per seed, the difference is the entry's final test metric "
        "minus the baseline's, in accuracy points (loss tasks: the baseline's loss minus the "
        "entry's, in percent of the baseline's mean loss); positive = better. Seeds run by "
        "one side only are left out; a diverged run counts as infinitely worse on its seed. "
        f"Interval: {pct}% percentile bootstrap of the mean difference ({PAIRED_RESAMPLES} "
        f"resamples of the seeds, numpy generator seed {PAIRED_SEED}). Spread: the standard "
        "deviation of the baseline's own seeds, same units. Rule: a run that diverged where "
        "the baseline did not is a **loss**; else, with two or more paired "
        "seeds: **tie** if |mean difference| <= spread; else **win** if the interval lies "
        "entirely above 0, **loss** if entirely below, **tie** otherwise. With one paired "
        "seed: the fixed 1-point line (win / loss: better / worse by more than 1 point, or "
        "1% of the loss; tie otherwise).\n",
        _seeds_text(verdicts) + "\n",
        "| optimizer | family | win | tie | loss | tasks | won on | lost on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    counts = {spec: _counts(per) for spec, per in verdicts.items()}

    def order(spec: str) -> tuple:
        c = counts[spec]
        return (-c["win"], c["loss"], -c["tie"], spec)

    for spec in sorted(verdicts, key=order):
        c, per = counts[spec], verdicts[spec]
        won = ", ".join(t for t, v in per.items() if v["verdict"] == "win") or "-"
        lost = ", ".join(t for t, v in per.items() if v["verdict"] == "loss") or "-"
        lines.append(
            f"| {spec} | {family.get(spec, '')} | {c['win']} | {c['tie']} | {c['loss']} | "
            f"{sum(c.values())} | {won} | {lost} |"
        )
    unpaired = [(s, t) for s, per in verdicts.items() for t, v in per.items() if v["n"] == 0]
    if unpaired:
        lines.append(
            "\nNot compared (no seed run by both sides): "
            + ", ".join(f"{s} on {t}" for s, t in unpaired)
            + "."
        )
    lines.append("")
    return lines


AUTO = "auto"
"""The bench name of ``lrfree.Auto``: ``auto_lines`` reports it against every peer."""


def auto_lines(
    agg: dict[str, Any], verdicts: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[str]:
    """``lrfree.Auto`` against the tuned baseline and every peer at its defaults (markdown
    lines between ``<!-- auto-table -->`` markers, which the README copies; empty when no
    task ran ``auto``). Per task: the tuned baseline, Auto, its gap and paired verdict, and
    the best peer; then, per entry (Auto, each peer, AdamW at its default), on how many tasks
    it is within 1 point of the tuned baseline (1% of the loss) and its worst gap.

    Example::

        >>> recs = [{"task": "t", "spec": s, "optimizer": s, "family": f, "lr": lr,
        ...          "grid": g, "seed": k, "final_metric": v, "final_train_loss": 0.1,
        ...          "seconds": 1.0, "diverged": False, "per_epoch": []}
        ...         for k in range(3)
        ...         for s, f, lr, g, v in [("adamw@grid", "baseline", 0.1, True, 80.0),
        ...                                ("auto", "lrfree", None, False, 79.5),
        ...                                ("prodigy", "peer", None, False, 75.0)]]
        >>> print(auto_lines(aggregate(recs))[4])
        | t | `adamw@grid` 80.00 | 79.50 ± 0.00 | -0.50 | loss | `prodigy` 75.00 |
    """
    if not any(r["spec"] == AUTO for t in agg.values() for r in t["rows"]):
        return []
    verdicts = paired(agg) if verdicts is None else verdicts
    lines = [
        "### Auto against the tuned baseline and every peer\n",
        "<!-- auto-table -->",
        "| task | tuned baseline | `Auto` (mean ± std) | gap | paired | best peer at its "
        "defaults |",
        "|---|---|---|---|---|---|",
    ]
    entries = [AUTO]
    for t in agg.values():
        for r in t["rows"]:
            if (r["family"] == "peer" or r["spec"] == "adamw") and r["spec"] not in entries:
                entries.append(r["spec"])
    within: dict[str, list[int]] = {e: [0, 0] for e in entries}
    worst: dict[str, float] = {e: -math.inf for e in entries}
    for task, t in agg.items():
        rows = {r["spec"]: r for r in t["rows"]}
        auto, tuned = rows.get(AUTO), rows.get(t.get("tuned") or "")
        if auto is None or tuned is None:
            continue
        higher = t["higher_is_better"]
        fmt = ".2f" if higher else ".4f"

        def gap(r: dict[str, Any], ref: float = tuned["acc_mean"], hi: bool = higher) -> float:
            """Points below the tuned baseline (loss tasks: percent of its loss)."""
            return ref - r["acc_mean"] if hi else 100 * (r["acc_mean"] - ref) / ref

        for e in entries:
            if e in rows:
                g = gap(rows[e])
                within[e][1] += 1
                within[e][0] += g <= 1.0
                worst[e] = max(worst[e], g)
        peers = [r for r in t["rows"] if r["family"] == "peer"]
        best = max(peers, key=lambda r: (1 if higher else -1) * r["acc_mean"], default=None)
        peer = f"`{best['spec']}` {best['acc_mean']:{fmt}}" if best else "-"
        v = verdicts.get(AUTO, {}).get(task, {}).get("verdict") or "-"
        g = f"{-gap(auto):+.2f}" + ("" if higher else "%")
        lines.append(
            f"| {task} | `{tuned['spec']}` {tuned['acc_mean']:{fmt}} | "
            f"{auto['acc_mean']:{fmt}} ± {auto['acc_std']:{fmt}} | {g} | {v} | {peer} |"
        )
    lines += [
        "",
        "| entry (at its defaults) | within 1 point of the tuned baseline | worst gap |",
        "|---|---|---|",
    ]
    for e in sorted(entries, key=lambda e: (-within[e][0], worst[e])):
        k, n = within[e]
        lines.append(f"| `{e}` | {k} / {n} | {worst[e]:.1f} |")
    lines += [
        "<!-- /auto-table -->",
        "",
        "Gap: accuracy points (loss tasks: percent of the loss; negative: worse) against "
        "the tuned baseline, the better of the AdamW and SGD-momentum grids "
        "at its best rate; paired: the seed-by-seed verdict of the section below.\n",
    ]
    return lines


def summary_lines(
    agg: dict[str, Any], verdicts: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[str]:
    """The summary across tasks (markdown lines): per optimizer spec, on how many tasks it
    is within 1 point of accuracy (1% of loss) of the tuned baseline and of the best entry,
    its paired wins / ties / losses against the tuned baseline (``paired``; computed here
    unless ``verdicts`` is given), and its median and worst distance to the best entry (see
    ``deficits``)."""
    close: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in agg.values():
        for r in t["rows"]:
            if r["close"] is not None:
                close[r["spec"]][1] += 1
                close[r["spec"]][0] += r["close"]
    defs = deficits(agg)
    if not defs:
        return []
    family = {r["spec"]: r["family"] for t in agg.values() for r in t["rows"]}
    verdicts = paired(agg) if verdicts is None else verdicts
    lines = [
        "### Summary across tasks\n",
        "Within 1 point: within 1 accuracy point (for loss tasks: 1% of the loss) of the "
        "tuned baseline (the best learning-rate grid) or of the best entry of the task, "
        "on the means over seeds. Paired: wins / ties / losses against the tuned baseline "
        "seed by seed (rule in the next section; the tuned baseline is not compared with "
        "itself). Points below the best: accuracy points (loss tasks: percent of loss) below "
        "the task's best entry; `inf` for a diverged run.\n",
        "| optimizer | family | within 1 point of tuned baseline | paired vs tuned baseline "
        "(win / tie / loss) | within 1 point of best | median points below best | worst "
        "| tasks |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def order(spec: str) -> tuple:
        d = sorted(defs[spec].values())
        return (-close[spec][0], -sum(x <= 1.0 for x in d), statistics.median(d), spec)

    for spec in sorted(defs, key=order):
        d = sorted(defs[spec].values())
        k, n = close.get(spec, (0, 0))
        tuned = f"{k} / {n}" if n else "-"
        c = _counts(verdicts.get(spec, {}))
        pv = f"{c['win']} / {c['tie']} / {c['loss']}" if sum(c.values()) else "-"
        lines.append(
            f"| {spec} | {family.get(spec, '')} | {tuned} | {pv} | "
            f"{sum(x <= 1.0 for x in d)} / {len(d)} | {statistics.median(d):.2f} | "
            f"{d[-1]:.2f} | {len(d)} |"
        )
    lines.append("")
    return lines


def base_gaps(agg: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per lrfree spec, per task: how far its mean is below the tuned grid of its *base*
    (``lrfree.bench.optimizers.base_grid``: SGD-momentum for SGD-based rules, AdamW for
    Adam / RMSprop-based ones): accuracy points, or percent of the loss; negative = better.

    Example::

        >>> agg = {"t": {"higher_is_better": True, "rows": [
        ...     {"spec": "sgd-m@grid", "family": "baseline", "acc_mean": 90.0},
        ...     {"spec": "adalip", "family": "lrfree", "acc_mean": 88.5}]}}
        >>> base_gaps(agg)
        {'adalip': {'t': 1.5}}
    """
    from .optimizers import base_grid

    out: dict[str, dict[str, float]] = defaultdict(dict)
    for task, t in agg.items():
        grids = {r["spec"]: r["acc_mean"] for r in t["rows"] if r["spec"].endswith("@grid")}
        for r in t["rows"]:
            if r.get("family") != "lrfree" or base_grid(r["spec"]) not in grids:
                continue
            tuned, v = grids[base_grid(r["spec"])], r["acc_mean"]
            if not math.isfinite(v):
                out[r["spec"]][task] = math.inf
            elif t["higher_is_better"]:
                out[r["spec"]][task] = tuned - v
            else:
                out[r["spec"]][task] = 100.0 * (v / tuned - 1.0) if tuned > 0 else math.inf
    return dict(out)


def base_lines(agg: dict[str, Any], within: float = 3.0) -> list[str]:
    """Markdown lines: per lrfree spec, on how many tasks its mean is within ``within``
    points (loss tasks: percent) of its base's tuned grid, its worst gap, and its collapsed
    runs (records' ``collapsed``: chance level, divergence, constant predictor)."""
    from .optimizers import base_grid

    gaps = base_gaps(agg)
    if not gaps:
        return []
    runs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pairs: dict[str, int] = defaultdict(int)
    for t in agg.values():
        for r in t["rows"]:
            if r["spec"] in gaps:
                bad = [bool(c.get("collapsed", c.get("diverged"))) for c in r["curves"]]
                runs[r["spec"]][0] += sum(bad)
                runs[r["spec"]][1] += len(bad)
                pairs[r["spec"]] += any(bad)
    lines = [
        "### Against the tuned grid of each optimizer's base\n",
        f"Within {within:g}: the mean over seeds within {within:g} accuracy points (loss "
        f"tasks: {within:g}% of the loss) of the best rate of its base's grid (SGD-momentum "
        "for the SGD / momentum / Nesterov-based rules, AdamW for the Adam / RMSprop-based "
        "ones). Collapsed: runs at chance level (or the majority class, or the autoencoder's "
        "constant predictor) or diverged.\n",
        f"| optimizer | base grid | within {within:g} | worst gap | collapsed runs | "
        "tasks with a collapsed run |",
        "|---|---|---|---|---|---|",
    ]
    order = sorted(gaps, key=lambda s: (-sum(g <= within for g in gaps[s].values()), s))
    for spec in order:
        g = gaps[spec]
        k = sum(x <= within for x in g.values())
        bad, n = runs[spec]
        lines.append(
            f"| {spec} | {base_grid(spec)} | {k} / {len(g)} | {max(g.values()):.2f} | "
            f"{bad} / {n} | {pairs[spec]} |"
        )
    n_pairs = sum(len(g) for g in gaps.values())
    lines.append(f"\nCollapsed (optimizer, task) pairs: {sum(pairs.values())} of {n_pairs}.\n")
    return lines


def _gap_to_tuned(t: dict[str, Any], row: dict[str, Any]) -> float | None:
    """An entry's mean minus its task's tuned baseline: accuracy points, or (loss tasks)
    percent of the baseline's loss, positive = better; None without a tuned baseline."""
    base = next((r for r in t["rows"] if r["spec"] == t.get("tuned")), None)
    if base is None or row is base:
        return None
    ref, v = base["acc_mean"], row["acc_mean"]
    if not math.isfinite(v):
        return -math.inf
    return v - ref if t["higher_is_better"] else 100.0 * (ref - v) / ref


def budget_changes(short: dict[str, Any], long: dict[str, Any]) -> list[dict[str, Any]]:
    """The same entries on the same tasks at two budgets (two ``aggregate`` results, e.g.
    the full suite and the long suite): per task both ran and entry both ran, the gap to
    each budget's tuned baseline (``_gap_to_tuned``: points, or percent of the loss;
    positive = better) and the paired verdict against it (``paired``), and ``changed``:
    whether the verdict differs. The tuned baselines themselves are left out.

    Example::

        >>> def recs(v_auto):
        ...     return [{"task": "t", "spec": s, "optimizer": s, "family": f, "lr": lr,
        ...              "grid": g, "seed": k, "final_metric": v + k, "final_train_loss": 0.1,
        ...              "seconds": 1.0, "diverged": False, "per_epoch": []}
        ...             for k in range(3)
        ...             for s, f, lr, g, v in [("adamw@grid", "baseline", 0.1, True, 80.0),
        ...                                    ("auto", "lrfree", None, False, v_auto)]]
        >>> (row,) = budget_changes(aggregate(recs(75.0)), aggregate(recs(84.0)))
        >>> row["short"]["verdict"], row["long"]["verdict"], row["changed"], row["long"]["gap"]
        ('loss', 'win', True, 4.0)
    """
    v_short, v_long = paired(short), paired(long)
    out = []
    for task in [t for t in short if t in long]:
        rows_l = {r["spec"]: r for r in long[task]["rows"]}
        for r in short[task]["rows"]:
            spec = r["spec"]
            if spec not in rows_l:
                continue
            g_s, g_l = _gap_to_tuned(short[task], r), _gap_to_tuned(long[task], rows_l[spec])
            if g_s is None or g_l is None:
                continue
            vs = v_short.get(spec, {}).get(task, {}).get("verdict") or "-"
            vl = v_long.get(spec, {}).get(task, {}).get("verdict") or "-"
            out.append(
                {
                    "task": task,
                    "spec": spec,
                    "short": {"gap": g_s, "verdict": vs, "tuned": short[task].get("tuned")},
                    "long": {"gap": g_l, "verdict": vl, "tuned": long[task].get("tuned")},
                    "changed": vs != vl,
                }
            )
    return out


def budget_lines(
    short: dict[str, Any], long: dict[str, Any], short_name: str, long_name: str
) -> list[str]:
    """``budget_changes`` as a markdown section: the verdicts that changed between the two
    budgets, then a count of those that held. Empty when the two share no task."""
    rows = budget_changes(short, long)
    if not rows:
        return []

    def cell(side: dict[str, Any], higher: bool) -> str:
        gap = side["gap"]
        g = "diverged" if gap == -math.inf else f"{gap:+.2f}" + ("" if higher else "%")
        return f"{g} ({side['verdict']})"

    changed = [r for r in rows if r["changed"]]
    lines = [
        f"## {long_name} against {short_name}\n",
        f"The entries and tasks both budgets ran: the gap to each budget's tuned baseline "
        f"(accuracy points, loss tasks percent of the loss; positive = better) and the paired "
        f"verdict against it. {len(changed)} of {len(rows)} verdicts changed between the "
        f"{short_name} and the {long_name}:\n",
    ]
    if changed:
        lines += [
            f"| task | entry | {short_name}: gap (verdict) | {long_name}: gap (verdict) |",
            "|---|---|---|---|",
        ]
        for r in changed:
            hi = short[r["task"]]["higher_is_better"]
            lines.append(
                f"| {r['task']} | `{r['spec']}` | {cell(r['short'], hi)} | {cell(r['long'], hi)} |"
            )
        lines.append("")
    tuned = sorted(
        {(r["task"], r["short"]["tuned"], r["long"]["tuned"]) for r in rows},
    )
    moved = [f"{t}: `{a}` -> `{b}`" for t, a, b in tuned if a != b]
    lines.append(
        "Tuned baselines that changed with the budget: " + ("; ".join(moved) or "none") + ".\n"
    )
    return lines
