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
* *gap* is the entry's final test metric minus the tuned baseline's (in points).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = [
    "aggregate",
    "base_gaps",
    "base_lines",
    "deficits",
    "markdown",
    "plots",
    "profile",
    "profile_plot",
    "results_page",
    "summary_lines",
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
    lines += summary_lines(agg)
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


def summary_lines(agg: dict[str, Any]) -> list[str]:
    """The summary across tasks (markdown lines): per optimizer spec, on how many tasks it
    is within 1 point of accuracy (1% of loss) of the tuned baseline and of the best entry,
    and its median and worst distance to the best entry (see ``deficits``)."""
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
    lines = [
        "### Summary across tasks\n",
        "Within 1 point: within 1 accuracy point (for loss tasks: 1% of the loss) of the "
        "tuned baseline (the best learning-rate grid) or of the best entry of the task. "
        "Points below the best: accuracy points (loss tasks: percent of loss) below the "
        "task's best entry; `inf` for a diverged run.\n",
        "| optimizer | family | within 1 point of tuned baseline | within 1 point of best "
        "| median points below best | worst | tasks |",
        "|---|---|---|---|---|---|---|",
    ]

    def order(spec: str) -> tuple:
        d = sorted(defs[spec].values())
        return (-close[spec][0], -sum(x <= 1.0 for x in d), statistics.median(d), spec)

    for spec in sorted(defs, key=order):
        d = sorted(defs[spec].values())
        k, n = close.get(spec, (0, 0))
        tuned = f"{k} / {n}" if n else "-"
        lines.append(
            f"| {spec} | {family.get(spec, '')} | {tuned} | {sum(x <= 1.0 for x in d)} / "
            f"{len(d)} | {statistics.median(d):.2f} | {d[-1]:.2f} | {len(d)} |"
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


def profile_plot(agg: dict[str, Any], path: Path, tau_max: float | None = None) -> Path | None:
    """The performance profile (``profile``) as a PNG: fraction of tasks within tau of the
    best entry vs tau; one line per optimizer spec, dashed for baselines, dotted for peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defs = deficits(agg)
    if not defs:
        return None
    finite = [d for per in defs.values() for d in per.values() if math.isfinite(d)]
    top = tau_max or 1.05 * max(min(max(finite, default=1.0), 50.0), 2.0)
    taus = sorted({0.0, top, *[d for d in finite if d <= top]})
    taus = sorted(set(taus) | {top * k / 200 for k in range(201)})
    rho = profile(agg, taus)
    fam = {r["spec"]: r["family"] for t in agg.values() for r in t["rows"]}
    style = {"baseline": "--", "peer": ":"}
    fig, ax = plt.subplots(figsize=(10, 6))
    colors = plt.get_cmap("tab20").colors  # 20 colours; line styles tell families apart
    for i, spec in enumerate(sorted(rho, key=lambda s: -sum(rho[s]))):
        ls = style.get(fam.get(spec, ""), "-")
        ax.step(taus, rho[spec], where="post", label=spec, ls=ls, color=colors[i % 20])
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set(
        xlabel="tau: accuracy points (loss tasks: % of loss) below the task's best",
        ylabel="fraction of tasks within tau of the best",
        xlim=(0, top),
        ylim=(-0.02, 1.02),
        title=f"Performance profile over {len(agg)} task(s)",
    )
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plots(agg: dict[str, Any], out: Path) -> list[Path]:
    """Per task: train loss and test metric vs epoch and vs training seconds (first seed;
    ``<task>.png``); the lrfree optimizers' per-block effective rates at the end of each
    epoch (``<task>-rates.png``); the performance profile across tasks (``profile.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    style = {"baseline": "--", "peer": ":"}
    for task, t in agg.items():
        fig, axes = plt.subplots(2, 2, figsize=(15, 9))
        for r in t["rows"]:
            rec = r["curves"][0]  # first seed
            ep = [e["epoch"] for e in rec["per_epoch"]]
            tm = [e.get("cpu_time", e["time"]) for e in rec["per_epoch"]]
            loss = [e["train_loss"] for e in rec["per_epoch"]]
            metric = [e["metric"] for e in rec["per_epoch"]]
            label = r["spec"] + ("" if r["lr"] is None else f" ({r['lr']:g})")
            ls = style.get(r["family"], "-")
            for ax, x, y in zip(axes.flat, (ep, tm, ep, tm), (loss, loss, metric, metric)):
                ax.plot(x, y, label=label, ls=ls, marker="." if len(x) < 12 else None)
        ylabel = "test accuracy %" if t["higher_is_better"] else "test loss"
        for ax, xl, yl in zip(
            axes.flat,
            ("epoch", "training seconds") * 2,
            ("train loss", "train loss", ylabel, ylabel),
        ):
            ax.set(xlabel=xl, ylabel=yl)
        for ax in axes[0]:
            if all(e["train_loss"] > 0 for r in t["rows"] for e in r["curves"][0]["per_epoch"]):
                ax.set_yscale("log")
        fig.suptitle(f"{task} (first seed)")
        axes[0, 1].legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.0))
        fig.tight_layout()
        path = out / f"{task}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
        adaptive = [r for r in t["rows"] if r["family"] == "lrfree" and r["curves"][0]["rates"]]
        if adaptive:
            cols = min(4, len(adaptive))
            nrows = -(-len(adaptive) // cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
            for ax in axes.flat[len(adaptive) :]:
                ax.axis("off")
            for ax, r in zip(axes.flat, adaptive):
                rec = r["curves"][0]  # first seed
                n_blocks = len(rec["rates"][0])
                if rec.get("rate_trace"):  # read-outs during training, x in epochs
                    spe = max(rec.get("steps_per_epoch", 1), 1)
                    xs = [p["step"] / spe for p in rec["rate_trace"]]
                    ys_all = [p["rates"] for p in rec["rate_trace"]]
                else:  # older records: the end of each epoch only
                    xs = list(range(1, len(rec["rates"]) + 1))
                    ys_all = rec["rates"]
                blocks = list(ys_all[0])
                for block in blocks[:12]:
                    ys = [e.get(block, float("nan")) for e in ys_all]
                    ax.plot(xs, ys, marker="." if len(xs) < 12 else None, label=block)
                more = f" (12 of {n_blocks} blocks)" if n_blocks > 12 else ""
                ax.set(title=r["spec"] + more, xlabel="epoch", ylabel="effective lr")
                if all(v > 0 for e in ys_all for v in e.values()):
                    ax.set_yscale("log")
                ax.legend(fontsize=5)
            fig.suptitle(f"{task}: effective learning rate per block over training")
            fig.tight_layout()
            path = out / f"{task}-rates.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    prof = profile_plot(agg, out / "profile.png")
    if prof is not None:
        written.append(prof)
    return written


def results_page(markdown_text: str, meta: dict[str, Any], pngs: list[Path], page: Path) -> Path:
    """Write the results page (``docs/results.md``) of one benchmark run.

    The page holds how it was produced (command, date, machine, versions, wall time and the
    estimate made before the run), the tables of ``markdown`` and the PNG plots, which are
    copied into a folder ``<page stem>/`` beside the page (old PNGs there are removed first,
    so the page and its images always come from the same run).
    """
    page = Path(page)
    assets = page.parent / page.stem
    if assets.exists():
        for old in assets.glob("*.png"):
            old.unlink()
    assets.mkdir(parents=True, exist_ok=True)
    for png in pngs:
        shutil.copyfile(png, assets / png.name)
    env = meta["env"]
    est = meta.get("estimate_seconds")
    wall = meta.get("wall_seconds")
    lines = [
        "# Benchmark results",
        "",
        "Generated by `lrfree bench` from one run on one machine; do not edit by hand. "
        "Regenerate with `make results` (see [the benchmark](benchmark.md) for the protocol).",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{meta.get('command', '')}` |",
        f"| date (UTC) | {meta.get('date', '-')} |",
        f"| machine | {env.get('processor')} ({env.get('machine')}), {env.get('cpus')} CPUs, "
        f"{_threads_text(env)} |",
        f"| versions | lrfree {env.get('lrfree')}, torch {env.get('torch')}, "
        f"Python {env.get('python')} |",
        f"| seeds | {meta.get('seeds')} |",
        f"| runs | {meta.get('n_runs', '-')} ({meta.get('n_trained', '-')} trained by this "
        "invocation, the rest read back from `results.jsonl`) |",
        f"| wall time of this invocation | {_minutes(wall)} |",
        f"| training time of all runs (sum, evaluation excluded) | "
        f"{_minutes(meta.get('train_seconds_total'))} |",
        f"| estimated before the run | {_minutes(est)} (`lrfree.bench.cost`) |",
        "",
    ]
    if meta.get("sizes"):
        lines += [
            "Sizes (epochs, first N training examples, first N test examples; `all` = the "
            "whole split):",
            "",
            "| task | epochs | training examples | test examples |",
            "|---|---|---|---|",
        ]
        for task, size in meta["sizes"].items():
            lines.append(
                f"| {task} | {size['epochs']} | {size['train_subset'] or 'all'} | "
                f"{size['test_subset'] or 'all'} |"
            )
        lines.append("")
    names = {p.name for p in pngs}
    if "profile.png" in names:
        lines += [
            "## Performance profile",
            "",
            f"![performance profile]({assets.name}/profile.png)",
            "",
        ]
    lines += ["## Tables", "", markdown_text, ""]
    task_pngs = [p for p in pngs if p.name != "profile.png"]
    if task_pngs:
        lines += ["## Plots", ""]
        for p in task_pngs:
            lines += [f"![{p.stem}]({assets.name}/{p.name})", ""]
    page.write_text("\n".join(lines))
    return page


def _minutes(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / 60:.1f} min"
