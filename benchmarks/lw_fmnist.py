"""AdamWLW (the paper's settings) vs AdamW at each rate of a grid on the Fashion-MNIST MLP.

The issue's done-when run: MLP 784-1000-500-100-10 (ReLU), batch 128, 10 epochs, seed 0,
AdamW at lr in {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} (torch defaults otherwise: weight_decay 0.01)
and ``lrfree.AdamWLW`` with the paper's settings (``preset="paper"``: lr=1, T=20, beta_t=0.99,
no warm-up, weight decay 0) in graph mode; ``--variant`` specs start from them too. Prints one
line per run and a summary table.

Full size (about 6 trainings of 10 epochs of 60k examples)::

    python benchmarks/lw_fmnist.py

Reduced size (what docs/layerwise.md reports; 2-core CPU)::

    nice python benchmarks/lw_fmnist.py --train-subset 10000 --epochs 10 --seeds 0
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lrfree

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def load(train_subset: int | None):
    try:
        from lrfree.bench.data import load_fashion_mnist

        s = load_fashion_mnist(flatten=True, train_subset=train_subset)
        return s.x_train, s.y_train, s.x_test, s.y_test
    except ImportError:  # a private idx reader

        def read(name):
            with gzip.open(FMNIST / name) as f:
                data = f.read()
            if "images" in name:
                return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 784)
            return np.frombuffer(data, np.uint8, offset=8)

        xt = torch.tensor(read("train-images-idx3-ubyte.gz") / 255.0, dtype=torch.float32)
        yt = torch.tensor(read("train-labels-idx1-ubyte.gz").astype(np.int64))
        xe = torch.tensor(read("t10k-images-idx3-ubyte.gz") / 255.0, dtype=torch.float32)
        ye = torch.tensor(read("t10k-labels-idx1-ubyte.gz").astype(np.int64))
        if train_subset:
            xt, yt = xt[:train_subset], yt[:train_subset]
        return xt, yt, xe, ye


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 1000),
        nn.ReLU(),
        nn.Linear(1000, 500),
        nn.ReLU(),
        nn.Linear(500, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


@torch.no_grad()
def evaluate(model, x, y) -> tuple[float, float]:
    out = torch.cat([model(x[i : i + 2000]) for i in range(0, len(x), 2000)])
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def train(name, make_opt, data, epochs, batch, seed, log_rates=False):
    xt, yt, xe, ye = data
    torch.manual_seed(seed)
    model = mlp()
    opt = make_opt(model)
    g = torch.Generator().manual_seed(seed)
    curv = hasattr(opt, "curvature_due")
    ggn = curv and opt.param_groups[0].get("curvature") == "ggn"
    hist = []
    t0 = time.perf_counter()
    for ep in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            due = curv and opt.curvature_due()
            if ggn:  # Gauss-Newton mode: keep the outputs' graph, pass outputs and loss
                loss.backward(retain_graph=due)
                opt.step(outputs=out, loss_fn=lambda z, yb=yb: F.cross_entropy(z, yb))
            else:  # graph mode: build the double-backward graph only when due
                loss.backward(create_graph=due)
                opt.step()
        tr_loss, _ = evaluate(model, xt, yt)
        te_loss, te_acc = evaluate(model, xe, ye)
        row = dict(
            epoch=ep + 1,
            train_loss=tr_loss,
            test_acc=te_acc,
            test_loss=te_loss,
            seconds=time.perf_counter() - t0,
        )
        if log_rates and curv:
            row["rates"] = opt.effective_lr()
        hist.append(row)
        print(json.dumps({"run": name, **row}), flush=True)
    return hist


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training examples")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--grid", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument(
        "--warmup-epochs",
        type=float,
        default=0.0,
        help="AdamWLW warm-up in epochs (paper: 10), converted to steps",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only-lw", action="store_true")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='extra LW runs, e.g. \'wd={"weight_decay": 0.1}\' or \'sgd={"cls": "SGDLW"}\'',
    )
    ap.add_argument("--out", type=str, default=None, help="write all histories as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load(args.train_subset)
    steps_per_epoch = -(-len(data[0]) // args.batch)
    warm = round(args.warmup_epochs * steps_per_epoch)
    print(
        f"# train {len(data[0])}, test {len(data[2])}, {steps_per_epoch} steps/epoch, "
        f"epochs {args.epochs}, seeds {args.seeds}, torch {torch.__version__}",
        flush=True,
    )
    results = {}
    for seed in args.seeds:
        runs = [
            (
                "adamwlw",
                lambda m: lrfree.AdamWLW(m.named_parameters(), warmup_steps=warm, preset="paper"),
            )
        ]
        for spec in args.variant:
            vname, _, js = spec.partition("=")
            kw = json.loads(js)
            cls = getattr(lrfree, kw.pop("cls", "AdamWLW"))
            kw.setdefault("warmup_steps", warm)
            kw.setdefault("preset", "paper")
            runs.append((f"lw:{vname}", lambda m, cls=cls, kw=kw: cls(m.named_parameters(), **kw)))
        if not args.only_lw:
            runs += [
                (f"adamw@{lr:g}", lambda m, lr=lr: torch.optim.AdamW(m.parameters(), lr=lr))
                for lr in args.grid
            ]
        for name, make in runs:
            lw = not name.startswith("adamw@")
            hist = train(name, make, data, args.epochs, args.batch, seed, log_rates=lw)
            results[f"{name}/seed{seed}"] = hist
    print("\n| run | seed | final test acc | best test acc (epoch) | final train loss | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, hist in results.items():
        name, seed = key.split("/")
        best = max(hist, key=lambda r: r["test_acc"])
        print(
            f"| {name} | {seed[4:]} | {100 * hist[-1]['test_acc']:.2f} | "
            f"{100 * best['test_acc']:.2f} ({best['epoch']}) | {hist[-1]['train_loss']:.4f} | "
            f"{hist[-1]['seconds'] / len(hist):.1f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
