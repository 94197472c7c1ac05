"""Score default candidates on the development tasks (not a training run: it reads records).

Reads one or more ``results.jsonl`` from ``lrfree bench --seeds N --optimizers ...`` runs that
include the AdamW and SGD-momentum grids, and prints, per candidate spec, the mean final
metric over seeds on each task, its gap to the tuned grid of its *base* (the SGD-momentum grid
for SGD / momentum / Nesterov-based optimizers, the AdamW grid for Adam / AdamW /
RMSprop-based ones; the grid's rate chosen by its mean over the same seeds), how many tasks are
within 3 points (loss tasks: 3% of the loss), the worst gap and the collapsed runs (chance-level
accuracy, divergence, the autoencoder's constant-predictor loss).

    python benchmarks/select_defaults.py bench-out/dev1/results.jsonl [more.jsonl ...]
        [--markdown benchmarks/out/defaults-dev/table.md]
        [--slim benchmarks/out/defaults-dev/records.jsonl]

``--slim`` writes the merged records without their rate traces and environment (what the
table needs, small enough to commit); the table can then be rebuilt from that file alone.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from lrfree.bench.optimizers import base_grid

COLLAPSE_ACC = 20.0  # % on the 10-class tasks (chance 10%)
COLLAPSE_LOSS = 0.68  # the autoencoder's constant-predictor BCE is ~0.69


def load(paths: list[str]) -> list[dict]:
    out: dict[str, dict] = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[r["key"]] = r
    return list(out.values())


def collapsed(r: dict) -> bool:
    if r["diverged"] or not math.isfinite(r["final_metric"]):
        return True
    if r["higher_is_better"]:
        return r["final_metric"] < COLLAPSE_ACC
    return r["final_metric"] > COLLAPSE_LOSS


def gap(task_hib: bool, ours: float, tuned: float) -> float:
    """Points below the tuned grid (accuracy) or % above its loss (loss tasks); > 0 = worse."""
    return tuned - ours if task_hib else 100.0 * (ours / tuned - 1.0)


def score(records: list[dict]) -> tuple[list[str], dict[str, dict]]:
    by = defaultdict(lambda: defaultdict(list))  # task -> spec -> records
    for r in records:
        by[r["task"]][r["spec"]].append(r)
    tasks = sorted(by)
    tuned: dict[tuple[str, str], float] = {}
    for t in tasks:
        for grid in ("adamw@grid", "sgd-m@grid"):
            recs = by[t].get(grid, [])
            by_lr = defaultdict(list)
            for r in recs:
                by_lr[r["lr"]].append(r["final_metric"])
            if by_lr:
                hib = recs[0]["higher_is_better"]
                means = [statistics.fmean(v) for v in by_lr.values()]
                tuned[(t, grid)] = max(means) if hib else min(means)
    rows: dict[str, dict] = {}
    specs = sorted({s for t in tasks for s in by[t]})
    for spec in specs:
        if spec.endswith("@grid"):
            continue
        row = {"tasks": {}, "within": 0, "worst": -math.inf, "collapsed": 0, "runs": 0}
        grid = base_grid(spec)
        for t in tasks:
            recs = by[t].get(spec)
            if not recs:
                continue
            vals = [r["final_metric"] for r in recs]
            m = statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            hib = recs[0]["higher_is_better"]
            g = gap(hib, m, tuned[(t, grid)]) if (t, grid) in tuned else float("nan")
            row["tasks"][t] = (m, sd, g, len(vals))
            row["within"] += g <= 3.0
            row["worst"] = max(row["worst"], g)
            row["collapsed"] += sum(collapsed(r) for r in recs)
            row["runs"] += len(recs)
        rows[spec] = row
    return tasks, {"rows": rows, "tuned": tuned}


def markdown(tasks: list[str], res: dict) -> str:
    cols = ["candidate", "base grid", *tasks, "within 3", "worst gap", "collapsed"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    tuned = res["tuned"]
    for grid in ("adamw@grid", "sgd-m@grid"):
        cells = [f"{tuned[(t, grid)]:.4g}" if (t, grid) in tuned else "-" for t in tasks]
        lines.append(f"| *tuned {grid}* | | " + " | ".join(cells) + " | | | |")
    for spec, row in res["rows"].items():
        cells = []
        for t in tasks:
            if t not in row["tasks"]:
                cells.append("-")
                continue
            m, sd, g, n = row["tasks"][t]
            seeds = "" if n >= 3 else f" [{n} seed{'s' * (n > 1)}]"
            cells.append(f"{m:.4g} ± {sd:.2g} ({g:+.1f}){seeds}")
        lines.append(
            f"| `{spec}` | {base_grid(spec)} | "
            + " | ".join(cells)
            + f" | {row['within']}/{len(row['tasks'])} | {row['worst']:.1f} | "
            f"{row['collapsed']}/{row['runs']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--slim", help="also write the merged records, without traces, here")
    args = ap.parse_args()
    records = load(args.results)
    if args.slim:
        drop = {"rate_trace", "rates", "env"}
        with open(args.slim, "w") as fh:
            for r in sorted(records, key=lambda r: r["key"]):
                fh.write(json.dumps({k: v for k, v in r.items() if k not in drop}) + "\n")
    tasks, res = score(records)
    md = markdown(tasks, res)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")


if __name__ == "__main__":
    main()
