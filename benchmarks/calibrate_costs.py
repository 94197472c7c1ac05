"""Re-fit the bench's cost tables (``lrfree.bench.cost``) to the training times of stored runs.

``lrfree bench --estimate`` prices a run as
``epochs * (steps * t_step(task) * f(optimizer) + t_eval(task)) + t_setup``, with ``t_step`` and
``f`` measured by ``python -m lrfree.bench.measure`` on a few steps. Stored records hold what
the training part of each run really took (``seconds``: wall time of the training steps,
evaluation excluded). This script fits the multiplicative model

.. math::

    \\text{seconds}_{r} \\approx s_{\\text{task}(r)} \\cdot g_{\\text{opt}(r)} \\cdot
        \\widehat{T}^{\\text{train}}_r

(``\\widehat T^{train}`` the current tables' training part) by alternating least squares on the
totals (iterative proportional fitting: every task's and every optimizer's fitted total equals
its recorded total), over the records trained with the given ``--jobs`` / ``--threads``, then
prints the re-scaled tables (``t_step`` times ``s``, ``f`` times ``g``, normalised so AdamW's
factor is 1) and the plan's estimate before and after. The evaluation and loading costs are
left as measured (the records do not time them).

    python benchmarks/calibrate_costs.py benchmarks/out/full-suite/results.jsonl \
        benchmarks/out/auto-eval/results.jsonl --jobs 2 --threads 1

A record is matched to the planned run with the same key up to the code fingerprint, so
records of older code still count (their optimizer's step cost may have changed since: the
fit says what they cost then). Each key counts once.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

from lrfree.bench import cost
from lrfree.bench.optimizers import default_optimizers
from lrfree.bench.plan import plan
from lrfree.bench.tasks import SUITES, get_task


def _stem(key: str) -> str:
    return key.rsplit("|code=", 1)[0]


train_part = cost.train_seconds  # the training part of cost.run_seconds(run)


def fit(
    data: list[tuple[str, str, float, float]], iters: int = 50
) -> tuple[dict[str, float], dict[str, float]]:
    """Task scales ``s`` and optimizer scales ``g`` with ``sum actual = sum s g estimate`` over
    every task and every optimizer (``data``: (task, optimizer, actual, estimate) rows).

    Example::

        >>> rows = [("a", "x", 2.0, 1.0), ("a", "y", 4.0, 1.0), ("b", "x", 1.0, 1.0)]
        >>> s, g = fit(rows)
        >>> round(s["a"] * g["y"], 6), round(s["b"] * g["x"], 6)
        (4.0, 1.0)
    """
    s: dict[str, float] = collections.defaultdict(lambda: 1.0)
    g: dict[str, float] = collections.defaultdict(lambda: 1.0)
    for _ in range(iters):
        for scales, other, pos in ((s, g, 0), (g, s, 1)):
            num: collections.Counter = collections.Counter()
            den: collections.Counter = collections.Counter()
            for row in data:
                key, partner = row[pos], row[1 - pos]
                num[key] += row[2]
                den[key] += row[3] * other[partner]
            for key in num:
                scales[key] = num[key] / den[key]
    return dict(s), dict(g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", help="results.jsonl files")
    ap.add_argument("--suite", default="full")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    sizes = SUITES[args.suite]
    runs = plan(list(sizes), default_optimizers(args.suite), args.seeds, None, None, sizes)
    planned = {_stem(r.key): r for r in runs}
    data: dict[str, tuple[str, str, float, float]] = {}
    for path in args.records:
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            env = rec.get("env", {})
            run = planned.get(_stem(rec["key"]))
            if run is None or (env.get("jobs"), env.get("threads")) != (args.jobs, args.threads):
                continue
            data[_stem(rec["key"])] = (rec["task"], run.entry.name, rec["seconds"], train_part(run))
    if not data:
        raise SystemExit("no record matches the plan at these --jobs / --threads")
    rows = list(data.values())
    s, g = fit(rows)
    resid = [math.log(a / (e * s[t] * g[o])) for t, o, a, e in rows]
    spread = math.sqrt(sum(x * x for x in resid) / len(resid))
    print(f"{len(rows)} records fitted; residual spread {spread:.2f} (log scale, per run)")

    norm = cost.FACTORS["adamw"] * g.get("adamw", 1.0)  # AdamW's factor becomes 1
    print("\nTask.step_seconds (task: old -> new; lrfree.bench.tasks)")
    for task in sizes:
        old = cost.step_seconds(get_task(task))
        print(f"    {task!r}: {old:.5g} -> {old * s.get(task, 1.0) * norm:.5g},")
    print("\nFACTORS (optimizer: old -> new; unmatched optimizers keep their ratio to AdamW)")
    for name, old in cost.FACTORS.items():
        new = old * g[name] / norm if name in g else old / cost.FACTORS["adamw"]
        print(f"    {name!r}: {old:.3g} -> {new:.3g},")

    def calibrated(run) -> float:
        scale = s.get(run.task.name, 1.0) * g.get(run.entry.name, 1.0)
        return cost.run_seconds(run) + train_part(run) * (scale - 1.0)

    unique = list({r.key: r for r in runs}.values())
    for label, price in (("before", cost.run_seconds), ("after", calibrated)):
        busy = [0.0] * args.jobs
        for sec in sorted((price(r) for r in unique), reverse=True):
            busy[busy.index(min(busy))] += sec
        print(
            f"plan estimate {label}: {cost.format_seconds(sum(map(price, unique)))} one run at "
            f"a time, {cost.format_seconds(max(busy))} with {args.jobs} at once (training and "
            "evaluation; loading and start-up not included)"
        )


if __name__ == "__main__":
    main()
