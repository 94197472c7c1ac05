"""Why ADLER fails on the MNIST-1D CNN: per-step loss, raw estimate, applied rate, dead units.

Replicates ``lrfree bench --task mnist1d-cnn --optimizers adler`` (same model init, data order,
batch 128, cross-entropy) and prints, for the first ``--steps`` steps: the batch loss, the raw
estimate ``eta_k``, the applied rate ``eta_hat``, the loss *after* the step on the same batch
(``after``: > ``loss`` means the step overshot its own batch), the exact line-search rate
along ``-G`` on the batch (``eta*``: the minimiser over a log grid of the batch loss, the
quantity ``eta_k`` models), and the fraction of ReLU units of the three convolutions that are
zero on the whole batch (``dead``). ``eta_GN = 1/|G|^2`` is what the GN comparator would
estimate on that batch (its denominator ``(g^T J G)^2 = (G^T G)^2``).

    python benchmarks/adler_mnist1d_diag.py --steps 40 --seed 0
    python benchmarks/adler_mnist1d_diag.py --steps 40 --seed 0 --trust 1
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
import torch.nn.functional as F

import lrfree
from lrfree.bench.data import load_mnist1d
from lrfree.bench.tasks import Mnist1dCNN


def dead_fraction(model: Mnist1dCNN, x: torch.Tensor) -> float:
    with torch.no_grad():
        h = x.unsqueeze(1)
        dead, total = 0, 0
        for conv in (model.conv1, model.conv2, model.conv3):
            h = torch.relu(conv(h))
            alive = (h > 0).flatten(2).any(dim=0).any(dim=-1)  # per channel, over batch & pos.
            dead += int((~alive).sum())
            total += alive.numel()
    return dead / total


def line_search(model: Mnist1dCNN, x, y, grads) -> float:
    """argmin over a log grid (1e-3 .. 1e2, 61 points) of the batch loss along -G."""
    model = copy.deepcopy(model)  # in-place edits of the live weights would break its graph
    params = list(model.parameters())
    base = [p.detach().clone() for p in params]
    best, arg = math.inf, math.nan
    with torch.no_grad():
        for t in torch.logspace(-3, 2, 61).tolist():
            for p, b, g in zip(params, base, grads):
                p.copy_(b - t * g)
            val = float(F.cross_entropy(model(x), y))
            if val < best:
                best, arg = val, t
    return arg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="print every k-th step")
    ap.add_argument("--trust", type=float, default=math.inf)
    ap.add_argument("--beta", type=float, default=0.99)
    a = ap.parse_args()
    torch.set_num_threads(1)
    split = load_mnist1d()
    torch.manual_seed(a.seed)
    model = Mnist1dCNN()
    opt = lrfree.ADLER(model.named_parameters(), beta=a.beta, trust=a.trust)
    gen = torch.Generator().manual_seed(a.seed)
    n = len(split.x_train)
    print(f"{'step':>4s} {'loss':>7s} {'after':>7s} {'eta_k':>8s} {'eta_hat':>8s} "
          f"{'eta*':>8s} {'|G|':>8s} {'eta_GN':>8s} {'dead':>5s}")  # fmt: skip
    k = 0
    while k < a.steps:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 128):
            if k >= a.steps:
                break
            idx = perm[i : i + 128]
            x, y = split.x_train[idx], split.y_train[idx]
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss_v = float(loss.detach())
            loss.backward(retain_graph=True)
            grads = [p.grad.detach().clone() for p in model.parameters()]
            gnorm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
            show = k % a.every == 0
            star = line_search(model, x, y, grads) if show else math.nan
            opt.step(outputs=out, targets=y)
            st = opt.state[next(model.parameters())]
            with torch.no_grad():
                after = float(F.cross_entropy(model(x), y))
            if show:
                print(
                    f"{k:4d} {loss_v:7.3f} {after:7.3f} {float(st['adler.eta']):8.3f} "
                    f"{float(st['adler.alpha']):8.3f} {star:8.3f} {gnorm:8.3f} {gnorm**-2:8.2f} "
                    f"{dead_fraction(model, x):5.2f}"
                )
            k += 1


if __name__ == "__main__":
    main()
