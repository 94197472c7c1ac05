"""Along the gradient at initialisation: Gauss-Newton ``G^T J^T Q J G`` vs full Hessian ``G^T H G``.

ADLER's rate is ``G^T G / G^T GGN G``; the exact line-search rate of the local quadratic model
of the loss is ``G^T G / G^T H G``. Where the GGN underestimates the curvature, ADLER's step
is too long. Residual CNN of benchmarks/adler_fmnist.py, one Fashion-MNIST batch per seed.

    python benchmarks/adler_curvature_check.py --seeds 0 1 2 --batch 128
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from adler_fmnist import ACTS, ResCNN, load

from lrfree.loss_hessian import quadratic_form
from lrfree.rules.adler import jvp_forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    xtr, ytr, _, _ = load(a.batch * 4, 10)
    print(f"{'act':8s} {'seed':>4s} {'G^T GGN G':>11s} {'G^T H G':>11s} "
          f"{'eta_GGN':>9s} {'eta_H':>9s}")  # fmt: skip
    for act in ACTS:
        for seed in a.seeds:
            torch.manual_seed(seed)
            model = ResCNN(act)
            x, y = (
                xtr[seed * a.batch : (seed + 1) * a.batch],
                ytr[seed * a.batch : (seed + 1) * a.batch],
            )
            params = list(model.parameters())
            loss = F.cross_entropy(model(x), y)
            gs = torch.autograd.grad(loss, params, create_graph=True)
            gd = [g.detach() for g in gs]
            hg = torch.autograd.grad(sum((g * d).sum() for g, d in zip(gs, gd)), params)
            ghg = sum((h * d).sum() for h, d in zip(hg, gd))
            out, (jv,) = jvp_forward(model, x, params, [list(enumerate(gd))])
            ggn = quadratic_form("cross_entropy", out.detach(), jv)
            gg = sum((d * d).sum() for d in gd)
            print(f"{act:8s} {seed:4d} {float(ggn):11.4g} {float(ghg):11.4g} "
                  f"{float(gg / ggn):9.4g} {float(gg / ghg):9.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
