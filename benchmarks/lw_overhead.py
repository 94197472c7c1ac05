"""Per-epoch wall-time ratio of SGDLW / AdamWLW (T=20) to torch SGD / AdamW, in one run.

Fashion-MNIST MLP 784-1000-500-100-10, batch 128. The four optimizers train in interleaved
rounds (one epoch each per round, so machine-load drift hits all of them alike); the ratio is
of the median epoch times. The LW optimizers use graph mode
(``loss.backward(create_graph=opt.curvature_due())``), or closure mode with ``--closure``
(finite differences: ``L + 1`` extra closure calls per curvature step). The paper reports 1.8x;
the target here is <= 1.2x.

    python benchmarks/lw_overhead.py                          # full epochs
    nice python benchmarks/lw_overhead.py --train-subset 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import lrfree

try:
    from lw_fmnist import load, mlp
except ImportError:  # run from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from lw_fmnist import load, mlp


def epoch(model, opt, xt, yt, batch, g, closure_mode: bool) -> float:
    perm = torch.randperm(len(xt), generator=g)
    lw = hasattr(opt, "curvature_due")
    t0 = time.perf_counter()
    for i in range(0, len(xt), batch):
        idx = perm[i : i + batch]
        xb, yb = xt[idx], yt[idx]
        if closure_mode and lw:

            def closure(xb=xb, yb=yb):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward(create_graph=lw and opt.curvature_due())
            opt.step()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="epochs per optimizer")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--update-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--closure", action="store_true", help="LW in closure mode (FD)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    xt, yt, _, _ = load(args.train_subset)
    T = args.update_every
    makers = {
        "sgd-m": lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
        "sgdlw": lambda m: lrfree.SGDLW(m.named_parameters(), update_every=T, preset="paper"),
        "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
        "adamwlw": lambda m: lrfree.AdamWLW(m.named_parameters(), update_every=T, preset="paper"),
    }
    state = {}
    for name, make in makers.items():
        torch.manual_seed(args.seed)
        model = mlp()
        state[name] = (model, make(model), torch.Generator().manual_seed(args.seed))
    times: dict[str, list[float]] = {n: [] for n in makers}
    for r in range(args.rounds):
        for name, (model, opt, g) in state.items():
            times[name].append(epoch(model, opt, xt, yt, args.batch, g, args.closure))
        print(
            f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in makers), flush=True
        )
    med = {n: statistics.median(v) for n, v in times.items()}
    mode = "closure (finite differences)" if args.closure else "graph"
    print(
        f"\n# {len(xt)} examples/epoch, batch {args.batch}, T={T}, {args.rounds} rounds, "
        f"LW mode: {mode}, threads {args.threads}, torch {torch.__version__}"
    )
    print("| optimizer | median s/epoch | ratio |")
    print("| --- | --- | --- |")
    for base, lw in (("sgd-m", "sgdlw"), ("adamw", "adamwlw")):
        print(f"| {base} | {med[base]:.2f} | 1.00 |")
        print(f"| {lw} | {med[lw]:.2f} | {med[lw] / med[base]:.2f} |")


if __name__ == "__main__":
    main()
