"""TLR per-window diagnostics: what Eq. 8 sees at each window close.

Trains one model with ``SGDTLR`` / ``AdamTLR`` and, independently of the optimizer's own
bookkeeping, recomputes the window vectors from weight snapshots,
``g_k = (w_start - w_end) / rate_k`` (exact: the rate is constant inside a window), and logs
per window: the rate used, ``num = <g_{k-1}, g_k>``, ``den = <g_{k-1}, g_{k-1} - g_k>``,
``cos(g_{k-1}, g_k)``, the factor Eq. 8 predicts and the factor the optimizer applied
(state ``tlr.factor``: the two must agree), the mean training loss of the window and the
mean cosine of consecutive *steps* inside the window (near -1: the step-to-step oscillation
of a rate above the stability limit, which the window sum averages out).

    python benchmarks/tlr_diagnose.py --task fmnist --train-subset 20000 --update-every 94
    python benchmarks/tlr_diagnose.py --task mnist1d-cnn --epochs 30
    python benchmarks/tlr_diagnose.py --task mnist1d-mlp --optimizer adamtlr --epochs 30
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
from lrfree.bench.data import load_fashion_mnist, load_mnist1d
from lrfree.bench.tasks import Mnist1dCNN, mnist1d_mlp
from lrfree.rules.tlr import window_length


def tlr_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 10)
    )


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["fmnist", "mnist1d-mlp", "mnist1d-cnn"], default="fmnist")
    ap.add_argument("--optimizer", choices=["sgdtlr", "adamtlr"], default="sgdtlr")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.1 SGD, 1e-3 Adam")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--gamma", type=float, default=0.33)
    ap.add_argument("--p", type=float, default=0.2)
    ap.add_argument("--max-factor", type=float, default=100.0)
    ap.add_argument("--update-every", type=int, default=None, help="K directly (instead of p)")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the window log here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    if args.task == "fmnist":
        data = load_fashion_mnist(flatten=True, train_subset=args.train_subset)
        model = tlr_mlp()
    else:
        data = load_mnist1d()
        model = mnist1d_mlp() if args.task == "mnist1d-mlp" else Mnist1dCNN()
    n = len(data.x_train)
    spe = math.ceil(n / args.batch_size)
    window = (
        dict(update_every=args.update_every)
        if args.update_every
        else dict(steps_per_epoch=spe, p=args.p)
    )
    if args.optimizer == "sgdtlr":
        lr = 0.1 if args.lr is None else args.lr
        opt: lrfree.Composed = lrfree.SGDTLR(
            model.parameters(), lr=lr, momentum=args.momentum,
            weight_decay=args.weight_decay, gamma=args.gamma, max_factor=args.max_factor,
            preset="paper", **window,
        )  # fmt: skip
    else:
        lr = 1e-3 if args.lr is None else args.lr
        opt = lrfree.AdamTLR(
            model.parameters(), lr=lr, weight_decay=args.weight_decay, gamma=args.gamma,
            max_factor=args.max_factor, preset="paper", **window,
        )  # fmt: skip
    k_len = window_length(opt.param_groups[0])
    first = next(iter(model.parameters()))
    print(
        f"task={args.task} opt={args.optimizer} lr0={lr:g} momentum={args.momentum} "
        f"gamma={args.gamma} max_factor={args.max_factor} K={k_len} steps/epoch={spe} "
        f"train={n} seed={args.seed}",
        flush=True,
    )
    print(
        "  win  step   rate_used        num        den    cos  f_eq8  f_opt   loss  step_cos",
        flush=True,
    )
    gen = torch.Generator().manual_seed(args.seed)
    total = int(args.epochs * spe)
    w_start, g_prev, prev_dir = flat(model), None, None
    losses, step_cos, log = [], [], []
    step, t0 = 0, time.time()
    while step < total:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, args.batch_size):
            if step >= total:
                break
            idx = perm[i : i + args.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            rate = opt.effective_lr()["global"]
            w_before = flat(model)
            opt.step()
            step += 1
            w_now = flat(model)
            d = w_before - w_now
            if prev_dir is not None:
                step_cos.append(float(d @ prev_dir / (d.norm() * prev_dir.norm() + 1e-300)))
            prev_dir = d
            losses.append(float(loss.detach()))
            if step % k_len:
                continue
            g = (w_start - w_now) / rate
            rec = dict(window=step // k_len, step=step, rate=rate, loss=sum(losses) / len(losses))
            rec["step_cos"] = sum(step_cos) / max(1, len(step_cos))
            rec["f_opt"] = float(opt.state[first]["tlr.factor"])
            if g_prev is not None:
                num = float(g_prev @ g)
                den = float(g_prev @ g_prev) - num
                rec.update(num=num, den=den, cos=num / float(g_prev.norm() * g.norm() + 1e-300))
                rec["f_eq8"] = (
                    min(max(1 + args.gamma * num / den, 0.01), args.max_factor) if den > 0 else 1.0
                )
            log.append(rec)
            print(
                f"{rec['window']:5d} {step:5d} {rate:11.4g} {rec.get('num', math.nan):10.3g} "
                f"{rec.get('den', math.nan):10.3g} {rec.get('cos', math.nan):6.3f} "
                f"{rec.get('f_eq8', math.nan):6.3f} {rec['f_opt']:6.3f} {rec['loss']:6.3f} "
                f"{rec['step_cos']:9.3f}",
                flush=True,
            )
            w_start, g_prev, losses, step_cos = w_now, g, [], []
    with torch.no_grad():
        acc = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    print(
        f"final rate {opt.effective_lr()['global']:.4g}, test acc {100 * acc:.2f}%, "
        f"{time.time() - t0:.0f}s",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()},
                                             windows=log, test_acc=acc)))  # fmt: skip


if __name__ == "__main__":
    main()
