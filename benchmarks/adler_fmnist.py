"""ADLER reproduction at CPU scale (paper Table 1 and Fig. 1-2): residual CNN on Fashion-MNIST.

A small residual CNN without BatchNorm (the paper's setting: no BatchNorm, no weight decay,
no augmentation) with ``relu`` / ``sigmoid`` / ``tanh`` activations, trained with

* ADLER (``lrfree.ADLER()``: lr=1, beta=0.99, eps=1e-10, the paper's values),
* its GN comparator (``variant="gn"``, beta=0.99),
* (``--methods adler-trust2``, not in the default set) ADLER with the opt-in ``trust=2`` cap,
* plain SGD over ten rates log-spaced from 1e-5 to 3e-1 (the paper's grid), best rate chosen
  by mean final test accuracy over the seeds (as a grid search would report it),

all for the same number of epochs and seeds. Prints final test accuracy mean +- std per
activation (the paper's Table 1 layout), the total compute of the SGD grid vs one ADLER run,
and writes plots of the training loss and of the rate over steps. Results go to a JSONL file
(one line per run, resumable: finished runs are skipped).

    python benchmarks/adler_fmnist.py                      # full: 60k train, 10 epochs
    nice python benchmarks/adler_fmnist.py --train-subset 4000 --test-subset 2000 --epochs 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import lrfree
from lrfree.bench.tasks import ResidualCNN

ACTS = ResidualCNN.ACTS
GRID = [float(v) for v in np.logspace(np.log10(1e-5), np.log10(3e-1), 10)]


ResCNN = ResidualCNN
"""conv(1->c) - act - res(c) - pool - res(c) - pool - linear(c*7*7 -> 10); no BatchNorm: the
bench's task model (``lrfree.bench.tasks.ResidualCNN``, the ``paper-adler`` suite's)."""


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(train_subset: int | None, test_subset: int | None):
    try:
        from lrfree.bench.data import load_fashion_mnist

        s = load_fashion_mnist()
        xtr, ytr, xte, yte = s.x_train, s.y_train, s.x_test, s.y_test
    except Exception:
        root = Path("/usr/share/datasets/fashion-mnist")
        arr = {n: _idx(root / f"{n}.gz") for n in (
            "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
        xtr = torch.from_numpy(arr["train-images-idx3-ubyte"].astype(np.float32) / 255).unsqueeze(1)
        ytr = torch.from_numpy(arr["train-labels-idx1-ubyte"].astype(np.int64))
        xte = torch.from_numpy(arr["t10k-images-idx3-ubyte"].astype(np.float32) / 255).unsqueeze(1)
        yte = torch.from_numpy(arr["t10k-labels-idx1-ubyte"].astype(np.int64))
    return xtr[:train_subset], ytr[:train_subset], xte[:test_subset], yte[:test_subset]


def run(method: str, lr: float, act: str, seed: int, data, epochs: int, batch: int) -> dict:
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = ResCNN(act)
    if method == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        opt = lrfree.ADLER(
            model.parameters(),
            variant="gn" if method == "gn" else "ggn",
            trust=2.0 if method == "adler-trust2" else math.inf,  # ours, opt-in
            preset="paper",
        )
    g = torch.Generator().manual_seed(seed)
    losses, rates = [], []
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = perm[i : i + batch]
            x, y = xtr[idx], ytr[idx]
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            if method == "sgd":
                loss.backward()
                opt.step()
                rates.append(lr)
            elif method.startswith("adler"):  # forward-mode JVP: faster here than outputs=
                loss.backward()
                opt.step(model=model, inputs=x)
            else:
                loss.backward()
                opt.step()
            if method != "sgd":
                rates.append(opt.effective_lr()["global"])
            losses.append(float(loss.detach()))
    wall = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(xte[i : i + 1000]).argmax(1) == yte[i : i + 1000]).sum())
            for i in range(0, len(xte), 1000)
        )
    acc = correct / len(xte)
    if not np.isfinite(acc) or not all(np.isfinite(losses)):
        acc = acc if np.isfinite(acc) else 0.0
    return dict(method=method, lr=lr, act=act, seed=seed, acc=acc, wall=wall,
                losses=losses, rates=rates)  # fmt: skip


def ms(v: list[float]) -> str:
    return f"{statistics.mean(v):.3f} +- {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"


def report(rows: list[dict], acts: list[str], out: Path) -> None:
    print(f"{'activation':10s} {'ADLER':>16s} {'GN':>16s} {'SGD (best of grid)':>28s}")
    grid_wall, adler_wall = 0.0, []
    for act in acts:
        r = [x for x in rows if x["act"] == act]
        ad = [x["acc"] for x in r if x["method"] == "adler"]
        gn = [x["acc"] for x in r if x["method"] == "gn"]
        by_lr: dict[float, list[float]] = {}
        for x in r:
            if x["method"] == "sgd":
                by_lr.setdefault(x["lr"], []).append(x["acc"])
        best = max(by_lr, key=lambda k: statistics.mean(by_lr[k])) if by_lr else None
        sgd = f"{ms(by_lr[best])} (lr={best:.1e})" if best is not None else "-"
        print(f"{act:10s} {ms(ad) if ad else '-':>16s} {ms(gn) if gn else '-':>16s} {sgd:>28s}")
        grid_wall += sum(x["wall"] for x in r if x["method"] == "sgd")
        adler_wall += [x["wall"] for x in r if x["method"] == "adler"]
    for act in acts:  # the opt-in trust cap (method adler-trust2), when run
        t2 = [x["acc"] for x in rows if x["act"] == act and x["method"] == "adler-trust2"]
        if t2:
            print(f"{act:10s} ADLER trust=2: {ms(t2)} (per seed {[round(v, 4) for v in t2]})")
    n_adler = len(adler_wall)
    n_cfg = len({(x["act"], x["seed"]) for x in rows if x["method"] == "sgd" and x["act"] in acts})
    if n_adler and n_cfg:
        one, per_cfg = statistics.mean(adler_wall), grid_wall / n_cfg
        print(
            f"compute: SGD grid total {grid_wall:.0f} s over {n_cfg} (activation, seed) "
            f"configurations = {per_cfg:.1f} s per configuration (10 runs); one ADLER run "
            f"{one:.1f} s (mean of {n_adler}); grid / ADLER run = {per_cfg / one:.1f}x"
        )
    print("SGD grid (mean test acc over seeds):")
    for act in acts:
        cells = []
        for lr in GRID:
            v = [
                x["acc"]
                for x in rows
                if x["act"] == act and x["method"] == "sgd" and math.isclose(x["lr"], lr)
            ]
            cells.append(f"{lr:.0e}:{statistics.mean(v):.3f}" if v else f"{lr:.0e}:-")
        print(f"  {act:8s} " + " ".join(cells))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(2, len(acts), figsize=(5 * len(acts), 7), squeeze=False)
    for j, act in enumerate(acts):
        r = [x for x in rows if x["act"] == act]
        by_lr = {}
        for x in r:
            if x["method"] == "sgd":
                by_lr.setdefault(x["lr"], []).append(x["acc"])
        best = max(by_lr, key=lambda k: statistics.mean(by_lr[k])) if by_lr else None
        for name, pick, color in (
            ("ADLER", lambda x: x["method"] == "adler", "C0"),
            ("GN", lambda x: x["method"] == "gn", "C1"),
            (
                f"SGD lr={best:.0e}" if best else "SGD",
                lambda x, best=best: x["method"] == "sgd" and x["lr"] == best,
                "C2",
            ),
        ):
            sel = [x for x in r if pick(x)]
            for k, x in enumerate(sel):
                lab = name if k == 0 else None
                axes[0][j].plot(x["losses"], color=color, alpha=0.6, lw=0.8, label=lab)
                axes[1][j].plot(x["rates"], color=color, alpha=0.6, lw=0.8, label=lab)
        axes[0][j].set(title=f"{act}: training loss (mini-batch)", yscale="log", xlabel="step")
        axes[1][j].set(title=f"{act}: learning rate", yscale="log", xlabel="step")
        axes[0][j].legend()
        axes[1][j].legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=90)
    print(f"plot: {out.with_suffix('.png')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training images")
    ap.add_argument("--test-subset", type=int, default=None, help="first N test images")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--acts", nargs="*", default=list(ACTS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="*", default=["adler", "gn", "sgd"])
    ap.add_argument("--out", default="benchmarks/out/adler_fmnist.jsonl")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {(x["method"], x["lr"], x["act"], x["seed"]) for x in rows}
    print(f"# {vars(a)}  torch {torch.__version__}")
    if not a.report_only:
        data = load(a.train_subset, a.test_subset)
        jobs = [(m, lr, act, s) for act in a.acts for s in a.seeds for m in a.methods
                for lr in (GRID if m == "sgd" else [1.0])]  # fmt: skip
        for job in jobs:
            if job in done:
                continue
            row = run(*job, data, a.epochs, a.batch)
            rows.append(row)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{job}: acc {row['acc']:.4f} wall {row['wall']:.1f}s", flush=True)
    report(rows, a.acts, out)


if __name__ == "__main__":
    main()
