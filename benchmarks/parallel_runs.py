"""Why `lrfree bench` trains small models as parallel one-thread runs.

Times a plain torch SGD-momentum training step (forward, backward, step; batch 128) of the
quick suite's two models (MNIST-1D MLP and CNN) in three settings, each in fresh processes:

* one process, one torch thread;
* one process, two torch threads (what one run at a time used before ``--jobs``);
* two processes at once, one torch thread each (``lrfree bench``'s default on 2 CPUs).

It prints ms per step for each, and the throughput of two one-thread runs relative to one
two-thread run (steps per second of the machine).

    python benchmarks/parallel_runs.py [--steps 300] [--repeats 3]

Run it on a quiet machine: it measures wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _child(model: str, threads: int, steps: int) -> None:
    import torch

    from lrfree.bench.data import load_mnist1d
    from lrfree.bench.tasks import Mnist1dCNN, mnist1d_mlp

    torch.set_num_threads(threads)
    d = load_mnist1d()
    torch.manual_seed(0)
    m = mnist1d_mlp() if model == "mlp" else Mnist1dCNN()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, len(d.x_train), (128,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(d.x_train[idx]), d.y_train[idx]).backward()
        opt.step()

    for _ in range(20):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"ms": 1000 * (time.perf_counter() - t) / steps}))


def _spawn(model: str, threads: int, steps: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", model, str(threads), str(steps)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _ms(procs: list[subprocess.Popen]) -> list[float]:
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"child failed ({p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1])["ms"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{'model':5s} {'1 thread':>9s} {'2 threads':>10s} {'2 runs x 1 thread':>18s} "
          f"{'throughput 2x1 / 1x2':>21s}")  # fmt: skip
    for model in ("mlp", "cnn"):
        one, two, pair = [], [], []
        for _ in range(args.repeats):  # medians over repeats, settings interleaved
            one += _ms([_spawn(model, 1, args.steps)])
            two += _ms([_spawn(model, 2, args.steps)])
            pair.append(sum(_ms([_spawn(model, 1, args.steps) for _ in range(2)])) / 2)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        a, b, c = med(one), med(two), med(pair)
        print(f"{model:5s} {a:8.2f}  {b:9.2f}  {c:17.2f}  {2 * b / c:20.2f}x  (ms per step)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
