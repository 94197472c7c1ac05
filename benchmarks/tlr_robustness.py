"""TLR robustness to the initial rate (paper Fig. 2, at CPU scale).

The paper's MNIST MLP (784-1000-10, ReLU) trained on Fashion-MNIST with SGD and with
``SGDTLR`` (paper defaults gamma=0.33, p=0.2) from each initial rate in ``--lrs``; prints the
final test accuracy / loss per rate and the spread over rates, the test accuracy after each
epoch, and writes a plot of the training loss and the effective rate (log scale).

Default (fits in 15 minutes on a 2-core CPU): the issue's setting (all 60 000 training images,
batch 128, so 469 steps per epoch and the same window K = round(0.2 * 469) = 94) cut to the
first 3 of its 10 epochs (same seed and data order as the first 3 epochs of the full run;
not bit-identical to an earlier full run, see docs/tlr.md)::

    python benchmarks/tlr_robustness.py

The issue's full size (10 epochs; about 10 minutes of CPU time at 1 thread, more on a busy
machine)::

    python benchmarks/tlr_robustness.py --epochs 10

The authors' training setup (their code: SGD momentum 0.8, weight decay 5e-4; the SGD
baseline gets the same)::

    python benchmarks/tlr_robustness.py --momentum 0.8 --weight-decay 5e-4
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lrfree
from lrfree.bench.data import load_fashion_mnist
from lrfree.directions.sgd import sgd_direction


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 10)
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    loss, correct = 0.0, 0
    for i in range(0, len(x), 2000):
        out = model(x[i : i + 2000])
        loss += float(F.cross_entropy(out, y[i : i + 2000], reduction="sum"))
        correct += int((out.argmax(1) == y[i : i + 2000]).sum())
    return loss / len(x), correct / len(x)


def run(method: str, lr: float, seed: int, data, args) -> dict:
    torch.manual_seed(seed)
    model = mlp()
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / args.batch_size)
    mom, wd = args.momentum, args.weight_decay
    if method == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=mom, weight_decay=wd
        )
    elif method == "sgdtlr":
        opt = lrfree.SGDTLR(
            model.parameters(),
            lr=lr,
            momentum=mom,
            weight_decay=wd,
            gamma=args.gamma,
            p=args.p,
            steps_per_epoch=steps_per_epoch,
            max_factor=args.max_factor,
            preset="paper",  # window_floor 0, max_alpha inf: the paper's rule
        )
    else:  # the paper's Table 1 first-order comparators on the same windows
        form, eta = {
            "hg-add": ("additive", args.eta_add),
            "hg-mult": ("multiplicative", args.eta_mult),
        }[method]
        direction, extra = sgd_direction(mom, owner="benchmark")
        opt = lrfree.Composed(
            model.parameters(),
            direction=direction,
            weight_decay=wd,
            **extra,
            rule="hypergradient-window",
            blocks="global",
            lr=lr,
            form=form,
            eta=eta,
            p=args.p,
            steps_per_epoch=steps_per_epoch,
        )
    gen = torch.Generator().manual_seed(seed)
    losses, rates, epoch_acc = [], [], []
    for _ in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, args.batch_size):
            idx = perm[i : i + args.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            rate = lr if method == "sgd" else opt.effective_lr()["global"]
            rates.append(rate)
        epoch_acc.append(evaluate(model, data.x_test, data.y_test)[1])
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    return dict(
        method=method,
        lr=lr,
        seed=seed,
        test_loss=test_loss,
        test_acc=test_acc,
        train_loss=train_loss,
        train_acc=train_acc,
        final_rate=rates[-1],
        max_rate=max(rates),
        epoch_test_acc=epoch_acc,
        losses=losses,
        rates=rates,
    )


def plot(results: list[dict], path: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    cmap = plt.get_cmap("viridis")
    lrs = sorted({r["lr"] for r in results}, reverse=True)
    for r in results:
        if r["seed"] != results[0]["seed"]:
            continue
        c = cmap(lrs.index(r["lr"]) / max(1, len(lrs) - 1))
        loss = torch.tensor(r["losses"])
        k = min(window, len(loss))
        smooth = loss.unfold(0, k, k).mean(1) if len(loss) >= k else loss
        x = torch.arange(len(smooth)) * k
        if r["method"] not in ("sgdtlr", "sgd"):
            continue
        ax = axes[0] if r["method"] == "sgdtlr" else axes[1]
        ax.plot(x, smooth, color=c, label=f"lr0={r['lr']:g}")
        if r["method"] == "sgdtlr":
            axes[2].plot(r["rates"], color=c, label=f"lr0={r['lr']:g}")
    axes[0].set_title("SGDTLR: training loss")
    axes[1].set_title("SGD: training loss")
    axes[2].set_title("SGDTLR: effective rate lr * alpha")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("step")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="the issue's full size: 10")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training examples")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=["sgdtlr", "sgd"], help="also: hg-add, hg-mult")
    ap.add_argument("--eta-add", type=float, default=1e-2, help="additive comparator's eta")
    ap.add_argument("--eta-mult", type=float, default=0.1, help="multiplicative comparator's eta")
    ap.add_argument("--gamma", type=float, default=0.33)
    ap.add_argument("--p", type=float, default=0.2)
    ap.add_argument("--max-factor", type=float, default=100.0, help="TLR's clamp (paper: 100)")
    ap.add_argument("--momentum", type=float, default=0.0, help="all methods (authors' code: 0.8)")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="all methods (authors': 5e-4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/tlr_robustness"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_fashion_mnist(flatten=True, train_subset=args.train_subset)
    print(
        f"Fashion-MNIST train={len(data.x_train)} test={len(data.x_test)} epochs={args.epochs} "
        f"batch={args.batch_size} seeds={args.seeds} torch={torch.__version__} "
        f"threads={args.threads} momentum={args.momentum} weight_decay={args.weight_decay} "
        f"gamma={args.gamma} p={args.p} max_factor={args.max_factor}",
        flush=True,
    )
    results = []
    t0 = time.time()
    for method in args.methods:
        for lr in args.lrs:
            for seed in args.seeds:
                r = run(method, lr, seed, data, args)
                results.append(r)
                print(
                    f"{method:7s} lr0={lr:8.0e} seed={seed} test_acc={r['test_acc']:.4f} "
                    f"test_loss={r['test_loss']:.4f} train_loss={r['train_loss']:.4f} "
                    f"final_rate={r['final_rate']:.3g} max_rate={r['max_rate']:.3g} epoch_acc="
                    + ",".join(f"{100 * a:.1f}" for a in r["epoch_test_acc"])
                    + f"  [{time.time() - t0:.0f}s]",
                    flush=True,
                )
    print("\n| method | " + " | ".join(f"lr0={lr:g}" for lr in args.lrs) + " | worst-best |")
    print("|---" * (len(args.lrs) + 2) + "|")
    for method in args.methods:
        accs = []
        cells = []
        for lr in args.lrs:
            rs = [r for r in results if r["method"] == method and r["lr"] == lr]
            acc = sum(r["test_acc"] for r in rs) / len(rs)
            loss = sum(r["test_loss"] for r in rs) / len(rs)
            accs.append(acc)
            cells.append(f"{100 * acc:.2f}% / {loss:.3f}")
        spread = 100 * (max(accs) - min(accs))
        print(f"| {method} | " + " | ".join(cells) + f" | {spread:.2f} pts |")
    print("(cells: final test accuracy / test loss, mean over seeds)")
    (args.out / "results.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k not in ("losses",)} for r in results])
    )
    plot(results, args.out / "tlr_robustness.png", window=max(1, len(results[0]["losses"]) // 100))
    print(f"plot: {args.out / 'tlr_robustness.png'}  total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
