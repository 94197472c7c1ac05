"""ADLER with and without the opt-in ``trust`` cap, through the benchmark runner.

Runs ``lrfree.bench``'s ``run_one`` (the same model init, data order, epochs and evaluation as
``lrfree bench``) for ADLER at ``trust`` in ``--trusts`` (``inf``: the paper) on the tasks
given, and prints final test accuracy, final train loss and the rate after each of the
first / last epochs.

    python benchmarks/adler_trust.py --tasks mnist1d-cnn mnist1d-mlp --seeds 0 1 2 \
        --trusts inf 1 2
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from lrfree.bench.optimizers import BenchOptimizer, _named
from lrfree.bench.runner import Run
from lrfree.bench.runner import run_one as _run_one
from lrfree.bench.tasks import TASKS, BenchConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["mnist1d-cnn", "mnist1d-mlp"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--trusts", nargs="+", type=float, default=[math.inf, 1.0])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--beta", type=float, default=0.99, help="the average's discount")
    ap.add_argument("--out", default=None, help="append one JSON line per run")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import lrfree

    print(f"# beta={a.beta}")
    print(f"{'task':12s} {'trust':>5s} {'seed':>4s} {'test acc':>8s} {'train loss':>10s} "
          f"{'rate ep1':>8s} {'rate last':>9s}")  # fmt: skip
    for tname in a.tasks:
        task = TASKS[tname]
        split = task.load(BenchConfig())
        for trust in a.trusts:
            entry = BenchOptimizer(
                f"adler-trust{trust:g}", _named(lrfree.ADLER, trust=trust, beta=a.beta), "lrfree"
            )  # fmt: skip (the loop asks ADLER itself what its step needs)
            for seed in a.seeds:
                run = Run(task, entry.name, entry, None, False, seed, a.epochs or task.epochs, None)
                r = _run_one(run, split)
                rates = [e["global"] for e in r["rates"]]
                print(
                    f"{tname:12s} {trust:5g} {seed:4d} {100 * r['final_test_acc']:8.1f} "
                    f"{r['final_train_loss']:10.4f} {rates[0]:8.3f} {rates[-1]:9.3f}",
                    flush=True,
                )
                if a.out:
                    with open(a.out, "a") as f:
                        row = {"task": tname, "trust": trust, "beta": a.beta, **r}
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
