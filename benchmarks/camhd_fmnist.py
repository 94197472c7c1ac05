"""CAM-HD paper, Fig. 2 / Table 2 at CPU scale: Adam vs Adam-HD vs Adam-CAM-HD on Fashion-MNIST.

Models (the paper's): FFNNs with hidden layers [100, 100], [1000, 100], [1000, 1000] (ReLU)
and LeNet-5. Optimizers (paper Table 1 settings; MLP 1/2/3 of Table 1 are taken to be the
three FFNNs in that order):

* ``adam``            torch.optim.Adam
* ``adam-hd-1e-7``    lrfree.AdamHD, global rate, hypergrad_lr 1e-7 (Baydin's Adam default
                      in the paper's text)
* ``adam-hd-1e-9``    lrfree.AdamHD, hypergrad_lr 1e-9 (the paper's tuned FFNN value)
* ``adam-camhd-2``    lrfree.AdamCAMHD, two levels: FFNN (layer, global), gammas (0.5, 0.5);
                      LeNet-5 (filter, global), gammas (0.2, 0.8), decay r = 0.002
* ``adam-camhd-3``    lrfree.AdamCAMHD, three levels: FFNN (element, layer, global), gammas
                      (0.3, 0.3, 0.4); LeNet-5 (element, filter, global), same gammas, r = 0.002

CAM-HD uses hypergrad_lr 1e-7 and delta 0.01 for the FFNNs, 1e-8 and 0.03 for LeNet-5
(Table 1). Batch / lr: FFNN [100,100] 32 / 3e-4, [1000,100] 64 / 1e-3, [1000,1000] 128 / 1e-3,
LeNet-5 256 / 1e-3. Prints test accuracy (mean +- standard error over seeds) after the last
epoch in the paper's Table 2 layout, and writes the per-epoch curves, the learned gammas over
training (the paper's Fig. 5-7) and plots to ``--out``.

Full size (4 models x 5 optimizers x 3 seeds x 10 epochs of 60k examples)::

    python benchmarks/camhd_fmnist.py

Reduced size (what docs/hypergradient.md reports; shared 2-core CPU)::

    nice python benchmarks/camhd_fmnist.py --train-subset 6000 --epochs 5 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lrfree
from lrfree.bench.data import load_fashion_mnist
from lrfree.bench.tasks import ffnn, lenet5

MODELS = ("ffnn-100-100", "ffnn-1000-100", "ffnn-1000-1000", "lenet5")
OPTIMIZERS = ("adam", "adam-hd-1e-7", "adam-hd-1e-9", "adam-camhd-2", "adam-camhd-3")
# not in the default set: SGD with Nesterov momentum (0.9, lr 0.01) and its HD / CAM-HD
# versions (hypergrad_lr 1e-3 and delta 0.03, Table 1's LeNet-5 SGD/SGDN setting), for the
# paper's observation (Fig. 6) that the gammas move much more with SGDN than with Adam
EXTRA = ("sgdn", "sgdn-hd", "sgdn-camhd-2")
SGDN_LR = 0.01
# model -> (batch size, lr, CAM-HD hypergrad_lr, delta), the paper's Table 1
SETTINGS = {
    "ffnn-100-100": (32, 3e-4, 1e-7, 0.01),
    "ffnn-1000-100": (64, 1e-3, 1e-7, 0.01),
    "ffnn-1000-1000": (128, 1e-3, 1e-7, 0.01),
    "lenet5": (256, 1e-3, 1e-8, 0.03),
}
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def make_model(name: str) -> nn.Module:
    """``lenet5`` or ``ffnn-H1-H2``: the bench's tasks' models (``lrfree.bench.tasks``)."""
    if name == "lenet5":
        return lenet5()
    return ffnn(*(int(h) for h in name.split("-")[1:]))


def make_optimizer(opt: str, model_name: str, model: nn.Module) -> torch.optim.Optimizer:
    _, lr, cam_beta, delta = SETTINGS[model_name]
    conv = model_name == "lenet5"
    params = model.named_parameters()
    if opt == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if opt == "sgdn":
        return torch.optim.SGD(model.parameters(), lr=SGDN_LR, momentum=0.9, nesterov=True)
    if opt == "sgdn-hd":
        return lrfree.SGDNHD(params, lr=SGDN_LR, hypergrad_lr=1e-3, preset="paper")
    if opt.startswith("adam-hd-"):
        beta = float(opt.removeprefix("adam-hd-"))
        return lrfree.AdamHD(params, lr=lr, hypergrad_lr=beta, preset="paper")
    decay = 0.002 if conv else 0.0  # the paper's LeNet-5 setting (Section 3.4)
    mid = "filter" if conv else "layer"
    if opt == "sgdn-camhd-2":
        return lrfree.SGDNCAMHD(
            params, lr=SGDN_LR, hypergrad_lr=1e-3, levels=(mid, "global"), gammas=(0.2, 0.8),
            delta=0.03, decay_rate=decay, preset="paper",
        )  # fmt: skip
    if opt == "adam-camhd-2":
        levels, gammas = (mid, "global"), ((0.2, 0.8) if conv else (0.5, 0.5))
    elif opt == "adam-camhd-3":
        levels, gammas = ("element", mid, "global"), (0.3, 0.3, 0.4)
    else:
        raise ValueError(f"unknown optimizer {opt!r}")
    return lrfree.AdamCAMHD(
        params, lr=lr, hypergrad_lr=cam_beta, levels=levels, gammas=gammas, delta=delta,
        decay_rate=decay, preset="paper",
    )  # fmt: skip


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(2000), y.split(2000))
    )
    model.train()
    return correct / len(y)


def run(opt_name: str, model_name: str, seed: int, data, epochs: int, gamma_every: int) -> dict:
    x_train, y_train, x_test, y_test = data
    batch = SETTINGS[model_name][0]
    torch.manual_seed(seed)
    model = make_model(model_name)
    opt = make_optimizer(opt_name, model_name, model)
    gen = torch.Generator().manual_seed(seed)
    curve, losses, gammas, rates = [], [], [], []
    it = 0
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(y_train), generator=gen)
        total, n = 0.0, 0
        for idx in perm.split(batch):
            opt.zero_grad()
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
            if isinstance(opt, (lrfree.AdamCAMHD, lrfree.SGDCAMHD)) and it % gamma_every == 0:
                gammas.append([it, *opt.gammas().tolist()])
            it += 1
        losses.append(total / n)
        curve.append(accuracy(model, x_test, y_test))
        if isinstance(opt, lrfree.Composed):
            eff = list(opt.effective_lr().values())
            rates.append([min(eff), sum(eff) / len(eff), max(eff)])
    return {
        "optimizer": opt_name, "model": model_name, "seed": seed, "test_acc": curve,
        "train_loss": losses, "gammas": gammas, "rates": rates, "iterations": it,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def table(results: list[dict], models: list[str], optimizers: list[str]) -> str:
    head = "| optimizer | " + " | ".join(models) + " |"
    lines = [head, "|" + " --- |" * (len(models) + 1)]
    for o in optimizers:
        cells = []
        for m in models:
            accs = [
                100 * r["test_acc"][-1] for r in results if r["optimizer"] == o and r["model"] == m
            ]
            if not accs:
                cells.append("-")
                continue
            mu, se = mean_se(accs)
            cells.append(f"{mu:.2f} +- {se:.2f}" if se == se else f"{mu:.2f}")
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(results: list[dict], out: Path, models: list[str], optimizers: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.2), squeeze=False)
    for ax, m in zip(axes[0], models):
        for o in optimizers:
            runs = [r for r in results if r["model"] == m and r["optimizer"] == o]
            if not runs:
                continue
            curves = torch.tensor([r["test_acc"] for r in runs]) * 100
            mu = curves.mean(0)
            se = curves.std(0) / math.sqrt(len(runs)) if len(runs) > 1 else torch.zeros_like(mu)
            ep = torch.arange(1, len(mu) + 1)
            ax.plot(ep, mu, label=o)
            ax.fill_between(ep, mu - se, mu + se, alpha=0.2)
        ax.set_title(m)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "camhd_test_accuracy.png", dpi=110)
    plt.close(fig)

    cams = [o for o in optimizers if "camhd" in o]
    if not cams:
        return
    fig, axes = plt.subplots(
        len(cams), len(models), figsize=(4 * len(models), 3 * len(cams)), squeeze=False
    )
    for row, o in zip(axes, cams):
        for ax, m in zip(row, models):
            runs = [r for r in results if r["model"] == m and r["optimizer"] == o and r["gammas"]]
            if not runs:
                continue
            g = torch.tensor([r["gammas"] for r in runs])  # seeds x points x (1 + levels)
            its = g[0, :, 0]
            labels = _level_names(o, m)
            for j in range(1, g.shape[2]):
                mu = g[:, :, j].mean(0)
                se = g[:, :, j].std(0) / math.sqrt(len(runs)) if len(runs) > 1 else 0 * mu
                ax.plot(its, mu, label=f"gamma {labels[j - 1]}")
                ax.fill_between(its, mu - se, mu + se, alpha=0.2)
            ax.set_title(f"{o}, {m}", fontsize=9)
            ax.set_xlabel("iteration")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "camhd_gammas.png", dpi=110)
    plt.close(fig)


def _level_names(opt: str, model: str) -> list[str]:
    mid = "filter" if model == "lenet5" else "layer"
    return [mid, "global"] if opt.endswith("-2") else ["element", mid, "global"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS + EXTRA)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-subset", type=int, default=None, help="first N training examples")
    ap.add_argument("--gamma-every", type=int, default=10, help="record gammas every N steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/camhd"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    split = load_fashion_mnist(train_subset=args.train_subset)
    data = tuple(
        t if t.dtype == torch.int64 else (t - MEAN) / STD
        for t in (split.x_train, split.y_train, split.x_test, split.y_test)
    )
    print(
        f"Fashion-MNIST: {len(data[1])} train / {len(data[3])} test examples, "
        f"{args.epochs} epochs, seeds {args.seeds}, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    results = []
    log = args.out / "camhd_results.json"
    for m in args.models:
        for seed in args.seeds:
            for o in args.optimizers:
                r = run(o, m, seed, data, args.epochs, args.gamma_every)
                results.append(r)
                extra = (
                    f" gammas {[round(v, 4) for v in r['gammas'][-1][1:]]}" if r["gammas"] else ""
                )
                print(
                    f"{m:15s} {o:13s} seed {seed}: test acc {100 * r['test_acc'][-1]:.2f}% "
                    f"train loss {r['train_loss'][-1]:.4f} ({r['seconds']:.0f}s){extra}",
                    flush=True,
                )
                log.write_text(
                    json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": results})
                )
    print("\nTest accuracy (%) after the last epoch, mean +- standard error over seeds:\n")
    print(table(results, args.models, args.optimizers))
    plots(results, args.out, args.models, args.optimizers)
    print(f"\nwrote {log}, {args.out / 'camhd_test_accuracy.png'}, {args.out / 'camhd_gammas.png'}")


if __name__ == "__main__":
    main()
