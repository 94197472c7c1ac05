"""Overhead of every lrfree optimizer against its torch base optimizer, side by side.

For each optimizer of the benchmark registry (family "lrfree"), on the Fashion-MNIST MLP
(784-1000-500-100-10) and the DeepOBS 2c2d CNN, batch 128, random inputs of the right shape
(the timing does not depend on the values), in one process, interleaved with the base:

  (a) ``optimizer.step()`` time / torch base ``step()`` (``foreach=True``);
  (b) full training step (zero_grad + forward + backward + step, including the amortised
      curvature passes: the mean over ``--window`` consecutive steps) / the same for the base;
  (c) optimizer state bytes per parameter / the base's.

Each figure is the median over ``--repeats`` interleaved rounds. The base of an optimizer is
the torch class of its direction with the same hyperparameters: sgd/momentum/nesterov ->
SGD, adam -> Adam, adamw -> AdamW, rmsprop -> RMSprop.

    python benchmarks/overhead.py --models mlp,2c2d --repeats 5 --window 20 --out overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lrfree
from lrfree.bench.optimizers import BENCH_OPTIMIZERS
from lrfree.bench.tasks import fmnist_2c2d, fmnist_mlp

MODELS = {"mlp": (fmnist_mlp, (128, 784)), "2c2d": (fmnist_2c2d, (128, 1, 28, 28))}


def base_for(opt: lrfree.Composed, model: torch.nn.Module) -> torch.optim.Optimizer:
    g = opt.param_groups[0]
    d, lr = g["direction"], g["lr"]
    common = {"lr": lr, "weight_decay": g["weight_decay"], "foreach": True}
    if d == "sgd":
        return torch.optim.SGD(model.parameters(), **common)
    if d in ("momentum", "nesterov"):
        return torch.optim.SGD(
            model.parameters(), momentum=g["momentum"], nesterov=d == "nesterov", **common
        )
    if d in ("adam", "adamw"):
        cls = torch.optim.Adam if d == "adam" else torch.optim.AdamW
        return cls(model.parameters(), betas=g["betas"], eps=g["eps"], **common)
    return torch.optim.RMSprop(model.parameters(), alpha=g["alpha"], eps=g["eps"], **common)


class _Task:
    """What the bench step functions need of a task: its loss."""

    loss = "cross_entropy"


def default_step(task, model, opt, x, y):
    due = getattr(opt, "curvature_due", lambda: False)()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=due)
        return loss

    return opt.step(closure)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor)
    )


def measure(name: str, model_name: str, repeats: int, window: int) -> dict:
    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    entry = BENCH_OPTIMIZERS[name]
    torch.manual_seed(0)
    m_ours = make()
    ours = entry.build(m_ours, None, steps_per_epoch=469)  # 60000 / 128
    torch.manual_seed(0)
    m_base = make()
    base = base_for(ours, m_base)
    step_ours = entry.step or default_step
    task = _Task()
    # warm up (state allocated, first curvature pass done)
    for _ in range(3):
        step_ours(task, m_ours, ours, x, y)
        default_step(task, m_base, base, x, y)
    full = {"ours": [], "base": []}
    only = {"ours": [], "base": []}
    for _ in range(repeats):
        for who, m, opt, step in (
            ("base", m_base, base, default_step),
            ("ours", m_ours, ours, step_ours),
        ):
            t0 = time.perf_counter()
            for _ in range(window):
                step(task, m, opt, x, y)
            full[who].append((time.perf_counter() - t0) / window)
            # step() alone, gradients already there (non-curvature steps only; optimizers
            # that need step inputs every step, such as ADLER, report only the train step)
            if who == "ours" and entry.step is not None:
                continue
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            due = getattr(opt, "curvature_due", lambda: False)
            count = 0
            t0 = time.perf_counter()
            while count < window and not due():
                opt.step()
                count += 1
            if count:
                only[who].append((time.perf_counter() - t0) / count)
    n_params = sum(p.numel() for p in m_ours.parameters())
    med = {
        k: {w: statistics.median(v) if v else float("nan") for w, v in d.items()}
        for k, d in (("full", full), ("step", only))
    }
    return {
        "optimizer": name,
        "model": model_name,
        "step_ratio": med["step"]["ours"] / med["step"]["base"],
        "full_ratio": med["full"]["ours"] / med["full"]["base"],
        "full_ms_ours": 1e3 * med["full"]["ours"],
        "full_ms_base": 1e3 * med["full"]["base"],
        "state_bytes_per_param_ours": state_bytes(ours) / n_params,
        "state_bytes_per_param_base": state_bytes(base) / n_params,
        "base": type(base).__name__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="mlp,2c2d")
    ap.add_argument("--optimizers", help="comma-separated bench names (default: all lrfree)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="overhead.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = (
        args.optimizers.split(",")
        if args.optimizers
        else [n for n, e in BENCH_OPTIMIZERS.items() if e.family == "lrfree"]
    )
    rows = []
    print(
        "| optimizer | model | base | step() ratio | train-step ratio | train step ms (ours/base)"
        " | state B/param (ours/base) |\n|---|---|---|---|---|---|---|"
    )
    for model_name in args.models.split(","):
        for name in names:
            r = measure(name, model_name, args.repeats, args.window)
            rows.append(r)
            print(
                f"| {name} | {model_name} | {r['base']} | {r['step_ratio']:.2f} | "
                f"{r['full_ratio']:.2f} | {r['full_ms_ours']:.1f} / {r['full_ms_base']:.1f} | "
                f"{r['state_bytes_per_param_ours']:.1f} / {r['state_bytes_per_param_base']:.1f} |",
                flush=True,
            )
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), **vars(args)}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
