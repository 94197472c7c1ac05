"""Cost of the per-tensor kernels the optimizers' fast paths choose between, on the Fashion-MNIST
MLP's parameter shapes (1.3M float32 entries in 8 tensors), one thread, CPU time per call
(median of 7 rounds).

It backs two choices: ``Partition.scalar_inner`` reduces with ``torch.dot`` on the CPU (not
``torch._foreach_norm``), and the non-finite screen sums each gradient instead of taking its
inf-norm. "passes" is the number of parameter-sized reads + writes of each line.

    python benchmarks/reductions.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

SHAPES = [(1000, 784), (1000,), (500, 1000), (500,), (100, 500), (100,), (10, 100), (10,)]


def cpu_ms(f: Callable[[], object], n: int = 20) -> float:
    f()
    rounds = []
    for _ in range(7):
        t0 = time.process_time()
        for _ in range(n):
            f()
        rounds.append((time.process_time() - t0) / n * 1e3)
    return statistics.median(rounds)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xs = [torch.randn(s) for s in SHAPES]
    ys = [torch.randn(s) for s in SHAPES]
    zs = [torch.randn(s) for s in SHAPES]
    pairs = list(zip(xs, ys))
    lines = [
        ("sum per tensor (non-finite screen)", 1, lambda: [x.sum() for x in xs]),
        ("dot(x, x) per tensor", 1, lambda: [torch.dot(x.view(-1), x.view(-1)) for x in xs]),
        ("dot(x, y) per tensor", 2, lambda: [torch.dot(x.view(-1), y.view(-1)) for x, y in pairs]),
        ("_foreach_norm(xs)", 1, lambda: torch._foreach_norm(xs)),
        ("_foreach_norm(xs, inf)", 1, lambda: torch._foreach_norm(xs, float("inf"))),
        ("_foreach_copy_(zs, xs)", 2, lambda: torch._foreach_copy_(zs, xs)),
        ("_foreach_sub_(zs, xs)", 3, lambda: torch._foreach_sub_(zs, xs)),
        ("_foreach_sub(zs, xs) (allocates)", 3, lambda: torch._foreach_sub(zs, xs)),
        ("_foreach_add_(zs, xs, alpha=0) (SGD)", 3, lambda: torch._foreach_add_(zs, xs, alpha=0)),
    ]
    print("| kernel | passes | CPU ms / call |\n|---|---|---|")
    for name, passes, f in lines:
        print(f"| {name} | {passes} | {cpu_ms(f):.3f} |")


if __name__ == "__main__":
    main()
