"""Cost of the non-finite check: ``optimizer.step()`` with ``nonfinite="skip"`` vs ``"off"``.

The check is one cheap reduction per gradient (a sum on the CPU, a fused 2-norm elsewhere)
and one host sync per step (``Composed._grads_finite``). On the Fashion-MNIST MLP
(784-1000-500-100-10, 1.3M parameters), batch 128, Composed(adamw) with the constant rule
(the cheapest step, so the check's share is the largest), median over ``--repeats``
interleaved rounds of ``--steps`` steps each.

    OMP_NUM_THREADS=1 python benchmarks/nonfinite_overhead.py --repeats 7 --steps 20

Writes benchmarks/out/nonfinite_overhead.json. Wall clock on a shared machine is noisy: the
script reports CPU time (``time.process_time``) of this single-threaded process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lrfree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rule", default="constant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 500), torch.nn.ReLU(),
        torch.nn.Linear(500, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10),
    )  # fmt: skip
    x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
    opts = {
        mode: lrfree.Composed(
            model.named_parameters(), direction="adamw", rule=args.rule, lr=1e-4, nonfinite=mode
        )
        for mode in ("skip", "off")
    }
    F.cross_entropy(model(x), y).backward()  # the gradients stay fixed: time step() only
    times: dict[str, list[float]] = {m: [] for m in opts}
    for r in range(args.repeats):
        for mode in ("skip", "off") if r % 2 == 0 else ("off", "skip"):
            opt = opts[mode]
            opt.step()  # warm
            t0 = time.process_time()
            for _ in range(args.steps):
                opt.step()
            times[mode].append((time.process_time() - t0) / args.steps * 1e3)
    check = []  # the check alone (what "skip" adds to a step), same rounds
    for _ in range(args.repeats):
        t0 = time.process_time()
        for _ in range(args.steps):
            opts["skip"]._grads_finite()
        check.append((time.process_time() - t0) / args.steps * 1e3)
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {
        "params": sum(p.numel() for p in model.parameters()),
        "rule": args.rule,
        "step_ms_median": med,
        "step_difference_ms": med["skip"] - med["off"],
        "check_alone_ms_median": statistics.median(check),
        "check_alone_share_of_off_step": statistics.median(check) / med["off"],
        "repeats": args.repeats,
        "steps": args.steps,
    }
    print(json.dumps(out, indent=2))
    path = Path(__file__).parent / "out" / "nonfinite_overhead.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
