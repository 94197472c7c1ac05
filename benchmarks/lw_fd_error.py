"""Error of the closure-mode finite differences against the exact per-layer ``d^T H_ll d``.

Fashion-MNIST MLP 784-1000-500-100-10 (ReLU, or tanh with ``--act tanh``), one batch of 128,
float32 parameters. ``d``: the AdamW direction after ``--warm`` AdamW steps at lr 1e-3 (or the
gradient with ``--direction grad``). Exact value: double backward in float64 on a float64 copy.
Prints, per layer, the exact value and the relative errors of the float32 graph-mode value and
of forward / central finite differences (the library's default steps).

    python benchmarks/lw_fd_error.py --warm 0 100
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lrfree.curvature import fd_hessian_block_forms, hessian_block_forms

sys.path.insert(0, str(Path(__file__).parent))
from lw_fmnist import load


def net(act: str) -> nn.Module:
    A = nn.ReLU if act == "relu" else nn.Tanh
    return nn.Sequential(
        nn.Linear(784, 1000), A(), nn.Linear(1000, 500), A(),
        nn.Linear(500, 100), A(), nn.Linear(100, 10),
    )  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", type=int, nargs="+", default=[0, 100])
    ap.add_argument("--act", choices=["relu", "tanh"], default="relu")
    ap.add_argument("--direction", choices=["adamw", "grad"], default="adamw")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    xt, yt, _, _ = load(10000)
    blocks = [[0, 1], [2, 3], [4, 5], [6, 7]]
    print(
        "| warm steps | layer | exact (f64) | rel.err graph f32 | rel.err FD forward | "
        "rel.err FD central |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for warm in args.warm:
        torch.manual_seed(args.seed)
        model = net(args.act)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(args.seed)
        for _ in range(warm):
            idx = torch.randint(0, len(xt), (128,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        idx = torch.randint(0, len(xt), (128,), generator=g)
        x, y = xt[idx], yt[idx]
        params = list(model.parameters())
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if args.direction == "adamw" and warm > 0:
            d = []
            for p in params:
                s = opt.state[p]
                b1, b2 = 0.9, 0.999
                k = float(s["step"]) + 1
                m = b1 * s["exp_avg"] + (1 - b1) * p.grad
                v = b2 * s["exp_avg_sq"] + (1 - b2) * p.grad**2
                d.append((m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + 1e-8))
        else:
            d = [p.grad.detach().clone() for p in params]
        m64 = copy.deepcopy(model).double()
        p64 = list(m64.parameters())
        g64 = torch.autograd.grad(F.cross_entropy(m64(x.double()), y), p64, create_graph=True)
        exact = hessian_block_forms(g64, p64, [v.double() for v in d], blocks)
        g32 = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        graph = hessian_block_forms(g32, params, d, blocks)

        def grad_fn(model=model, x=x, y=y, params=params):
            return torch.autograd.grad(F.cross_entropy(model(x), y), params)

        fwd = fd_hessian_block_forms(grad_fn, params, d, blocks)
        cen = fd_hessian_block_forms(grad_fn, params, d, blocks, central=True)
        for b in range(len(blocks)):
            e = float(exact[b])

            def rel(v, e=e):
                return abs(float(v) - e) / abs(e)

            print(
                f"| {warm} | {b} | {e:.4g} | {rel(graph[b]):.1e} | {rel(fwd[b]):.1e} | "
                f"{rel(cen[b]):.1e} |"
            )


if __name__ == "__main__":
    main()
