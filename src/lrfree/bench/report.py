"""Turn run records into tables (markdown), a summary, JSON and PNG plots.

Protocol (AlgoPerf-like, at small scale):

* a ``@grid`` entry is reported at the learning rate with the best mean final test metric;
  its *compute* is the sum of the training seconds of every rate of the grid;
* the *tuned baseline* of a task is the best grid entry; the *target* is 99% of its final
  metric; *time to target* is the training time (seconds, mean over seeds) until the test
  metric first reaches the target ("-" if never);
* *gap* is the entry's final test metric minus the tuned baseline's (in points).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["aggregate", "markdown", "plots", "write_json"]


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
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
            secs_m, _ = _mean_std([x["seconds"] for x in chosen])
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
                    "compute": sum(x["seconds"] for x in recs) / max(len(chosen), 1),
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
                        e["time"]
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
    # summary: within 1 point (accuracy) or 1% (loss) of the tuned baseline
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in agg.values():
        for r in t["rows"]:
            if r["close"] is not None:
                counts[r["spec"]][1] += 1
                counts[r["spec"]][0] += r["close"]
    if counts:
        lines.append(
            "### Summary: tasks within 1 point of accuracy (1% of loss) of the tuned baseline\n"
        )
        lines.append("| optimizer | within 1 point | tasks |")
        lines.append("|---|---|---|")
        for spec, (k, n) in sorted(counts.items(), key=lambda kv: -kv[1][0]):
            lines.append(f"| {spec} | {k} | {n} |")
        lines.append("")
    lines.append(
        f"Seeds: {meta.get('seeds')}; epochs: {meta.get('epochs') or 'task default'}; "
        f"training subset: {meta.get('train_subset') or 'full'}; "
        f"machine: {meta['env']['processor']}, {meta['env']['cpus']} CPUs, "
        f"{meta['env']['threads']} torch threads; torch {meta['env']['torch']}, "
        f"lrfree {meta['env']['lrfree']}."
    )
    return "\n".join(lines) + "\n"


def write_json(agg: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    slim = {
        task: {**t, "rows": [{k: v for k, v in r.items() if k != "curves"} for r in t["rows"]]}
        for task, t in agg.items()
    }
    path.write_text(json.dumps({"meta": meta, "tasks": slim}, indent=2))


def plots(agg: dict[str, Any], out: Path) -> list[Path]:
    """Per task: test accuracy and train loss vs epoch and vs time; per-block rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, t in agg.items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for r in t["rows"]:
            rec = r["curves"][0]  # first seed
            ep = [e["epoch"] for e in rec["per_epoch"]]
            tm = [e["time"] for e in rec["per_epoch"]]
            label = r["spec"] + ("" if r["lr"] is None else f" ({r['lr']:g})")
            axes[0].plot(ep, [e["train_loss"] for e in rec["per_epoch"]], label=label)
            axes[1].plot(ep, [e["metric"] for e in rec["per_epoch"]], label=label)
            axes[2].plot(tm, [e["metric"] for e in rec["per_epoch"]], label=label)
        axes[0].set(xlabel="epoch", ylabel="train loss", yscale="log", title=task)
        ylabel = "test accuracy %" if t["higher_is_better"] else "test loss"
        axes[1].set(xlabel="epoch", ylabel=ylabel)
        axes[2].set(xlabel="training seconds", ylabel=ylabel)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{task}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
        adaptive = [r for r in t["rows"] if r["family"] == "lrfree" and r["curves"][0]["rates"]]
        if adaptive:
            fig, axes = plt.subplots(
                1, len(adaptive), figsize=(5 * len(adaptive), 3.6), squeeze=False
            )
            for ax, r in zip(axes[0], adaptive):
                rates = r["curves"][0]["rates"]
                for block in list(rates[0])[:12]:
                    ax.plot(range(1, len(rates) + 1), [e.get(block) for e in rates], label=block)
                ax.set(title=r["spec"], xlabel="epoch", ylabel="effective lr", yscale="log")
                ax.legend(fontsize=6)
            fig.tight_layout()
            path = out / f"{task}-rates.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written
