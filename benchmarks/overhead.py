"""Overhead of every lrfree optimizer against its torch base optimizer, side by side.

For each optimizer of the benchmark registry (family "lrfree"), on the Fashion-MNIST MLP
(784-1000-500-100-10) and the DeepOBS 2c2d CNN, batch 128, random inputs of the right shape
(the timing does not depend on the values), in one process, interleaved with the base:

  (a) ``optimizer.step()`` time / torch base ``step()``;
  (b) full training step (zero_grad + forward + backward + step, including the amortised
      curvature passes: the mean over ``--window`` consecutive steps) / the same for the base;
  (c) optimizer state bytes per parameter / the base's.

Each figure is the median over ``--repeats`` interleaved rounds (the order base / ours
alternates between rounds). The base of an optimizer is the torch class of its direction with
the same hyperparameters: sgd/momentum/nesterov -> SGD, adam -> Adam, adamw -> AdamW,
rmsprop -> RMSprop, with ``foreach=True`` (``--base-foreach off``: the for-loop).

Fairness: ``--ours-foreach on`` (the default) runs ours with ``foreach=True`` too, so both
sides use multi-tensor kernels; ``--ours-foreach default`` keeps our default
(``foreach=None``: multi-tensor on CPU and CUDA since 2026-11-30; before, the per-block loop on
the CPU, which docs/performance.md compares). ``--ours-foreach off --base-foreach off``
compares the two for-loop paths. The non-finite policy stays at its default (``"skip"``: one
cheap reduction and one host sync per step), which torch's optimizers do not have;
``--nonfinite off`` turns it off, the same configuration as torch's.

Clock: ``--clock wall`` (default) or ``--clock cpu`` (``time.process_time``: the CPU time of
this process, all threads; steadier on a shared machine, equal to wall time on a quiet one
with ``--threads 1``).

Denormals: the batch is fixed, so an optimizer that fits it drives the loss towards 0 and the
gradients and activations into the subnormal range, where the CPU's arithmetic is many times
slower (AdamLip's MLP training step went from 23 to 52 ms over 80 steps, at the same
optimizer cost); ``--flush-denormal`` (``torch.set_flush_denormal(True)``, both sides) keeps
the timing independent of the values, as the figures assume. Off by default, as in the
earlier tables.

Paired train steps (``--pairs N``, off by default): after the rounds, N more training steps
of each side alternate one at a time (base, ours, ours, base, ...) and the figure is the median
of the N per-pair ratios. On a shared machine the load moves on a scale of seconds, so a
pair sees nearly the same load on both sides; block rounds do not.

Amortisation: each training step is timed on its own and classified by
``curvature_due()``; a rule with curvature every ``update_every = T`` steps (LW) reports
``normal + (curvature - normal) / T`` from the medians of both kinds (its first, warm-up
step is a curvature step, so a short window still has one), others the median round mean.
The CNN's training step is ~100x the MLP's, so it runs ``--cnn-window`` steps per round.

    python benchmarks/overhead.py --models mlp,2c2d --repeats 5 --window 20 --cnn-window 3 \
        --threads 1 --out benchmarks/out/overhead.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lrfree
from lrfree.bench.optimizers import BENCH_OPTIMIZERS
from lrfree.bench.tasks import fmnist_2c2d, fmnist_mlp

_clock = time.perf_counter  # --clock cpu: time.process_time (this process's CPU time)

MODELS = {"mlp": (fmnist_mlp, (128, 784)), "2c2d": (fmnist_2c2d, (128, 1, 28, 28))}


def base_for(
    opt: lrfree.Composed, model: torch.nn.Module, foreach: bool = True
) -> torch.optim.Optimizer:
    g = opt.param_groups[0]
    d, lr = g["direction"], g["lr"]
    common = {"lr": lr, "weight_decay": g["weight_decay"], "foreach": foreach}
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


def _period(opt: torch.optim.Optimizer) -> int | None:
    """``T`` of a rule with periodic curvature passes (``curvature_due``), else None."""
    if not hasattr(opt, "curvature_due"):
        return None
    periods = [g.get("update_every") for g in opt.param_groups if g.get("rule") == "layerwise"]
    return int(periods[0]) if periods and periods[0] else None


def measure(
    name: str,
    model_name: str,
    repeats: int,
    window: int,
    ours_foreach: bool | None,
    step_window: int,
    base_foreach: bool = True,
    nonfinite: str | None = None,
    pairs: int = 0,
) -> dict:
    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    entry = BENCH_OPTIMIZERS[name]
    torch.manual_seed(0)
    m_ours = make()
    ours = entry.build(m_ours, None, steps_per_epoch=469)  # 60000 / 128
    for g in ours.param_groups:
        if ours_foreach is not None:  # None: the optimizer's default
            g["foreach"] = ours_foreach
        if nonfinite is not None:
            g["nonfinite"] = nonfinite
    torch.manual_seed(0)
    m_base = make()
    base = base_for(ours, m_base, base_foreach)
    step_ours = entry.step or default_step
    task = _Task()
    due_of = {
        "ours": getattr(ours, "curvature_due", lambda: False),
        "base": lambda: False,
    }
    steps: dict[str, dict[bool, list[float]]] = {w: {False: [], True: []} for w in due_of}

    def timed_step(who: str, m, opt, step) -> None:
        due = bool(due_of[who]())
        t0 = _clock()
        step(task, m, opt, x, y)
        steps[who][due].append(_clock() - t0)

    # warm up (state allocated; LW's first step is a curvature step)
    for _ in range(3):
        timed_step("ours", m_ours, ours, step_ours)
        timed_step("base", m_base, base, default_step)
    for w in steps:
        steps[w][False].clear()
    rounds: dict[str, list[float]] = {"ours": [], "base": []}
    only: dict[str, list[float]] = {"ours": [], "base": []}
    sides = [("base", m_base, base, default_step), ("ours", m_ours, ours, step_ours)]
    for r in range(repeats):
        for who, m, opt, step in sides if r % 2 == 0 else sides[::-1]:
            normal_before = len(steps[who][False])
            for _ in range(window):
                timed_step(who, m, opt, step)
            normal = steps[who][False][normal_before:]
            if normal:
                rounds[who].append(statistics.fmean(normal))
            # step() alone, gradients already there (non-curvature steps only; optimizers
            # that need step inputs every step, such as ADLER, report only the train step)
            if who == "ours" and entry.step is not None:
                continue
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            due = due_of[who]
            count = 0
            t0 = _clock()
            while count < step_window and not due():
                opt.step()
                count += 1
            if count:
                only[who].append((_clock() - t0) / count)
    med = {w: statistics.median(v) if v else float("nan") for w, v in rounds.items()}
    period = _period(ours)
    curv = steps["ours"][True]
    if curv and not steps["ours"][False]:  # curvature on every step (LW at T = 1)
        med["ours"] = statistics.median(curv)
    elif curv and period:  # amortise the curvature passes over the period
        med["ours"] += (statistics.median(curv) - med["ours"]) / period
    step_med = {w: statistics.median(v) if v else float("nan") for w, v in only.items()}
    paired: list[float] = []
    for k in range(pairs):  # one training step each, alternating (non-curvature steps only)
        if due_of["ours"]():
            timed_step("ours", m_ours, ours, step_ours)
            continue
        t = {}
        for who, m, opt, step in sides if k % 2 == 0 else sides[::-1]:
            t0 = _clock()
            step(task, m, opt, x, y)
            t[who] = _clock() - t0
        paired.append(t["ours"] / t["base"])
    n_params = sum(p.numel() for p in m_ours.parameters())
    return {
        "optimizer": name,
        "model": model_name,
        "step_ratio": step_med["ours"] / step_med["base"],
        "full_ratio": med["ours"] / med["base"],
        "step_ms_ours": 1e3 * step_med["ours"],
        "step_ms_base": 1e3 * step_med["base"],
        "full_ms_ours": 1e3 * med["ours"],
        "full_ms_base": 1e3 * med["base"],
        "curvature_steps_timed": len(curv),
        "period": period,
        "state_bytes_per_param_ours": state_bytes(ours) / n_params,
        "state_bytes_per_param_base": state_bytes(base) / n_params,
        "base": type(base).__name__,
        "paired_ratio": statistics.median(paired) if paired else None,
        "pairs": len(paired),
    }


def profile_step(name: str, model_name: str, steps: int = 20, rows: int = 12) -> None:
    """torch.profiler over ``steps`` calls of ``step()`` (gradients fixed, ``foreach=True``):
    where one optimizer's step spends its CPU time, by ATen op (self time)."""
    from torch.profiler import ProfilerActivity, profile

    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    model = make()
    opt = BENCH_OPTIMIZERS[name].build(model, None, steps_per_epoch=469)
    for g in opt.param_groups:
        g["foreach"] = True
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
    F.cross_entropy(model(x), y).backward()
    for _ in range(3):
        opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            opt.step()
    print(f"profile of {name}.step() on {model_name}, {steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="mlp,2c2d")
    ap.add_argument("--optimizers", help="comma-separated bench names (default: all lrfree)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=20, help="training steps per round (MLP)")
    ap.add_argument("--cnn-window", type=int, default=3, help="training steps per round (2c2d)")
    ap.add_argument("--ours-foreach", choices=("on", "off", "default"), default="on")
    ap.add_argument(
        "--base-foreach", choices=("on", "off"), default="on", help="torch's foreach flag"
    )
    ap.add_argument(
        "--nonfinite",
        choices=("default", "skip", "raise", "off"),
        default="default",
        help="ours' non-finite policy (off: no check, as torch)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, steadier than wall time on a shared machine",
    )
    ap.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="also time N alternating single training steps; report the median pair ratio",
    )
    ap.add_argument(
        "--flush-denormal",
        action="store_true",
        help="torch.set_flush_denormal(True): subnormal values do not slow the arithmetic",
    )
    ap.add_argument("--out", default="overhead.json")
    ap.add_argument(
        "--profile", help="profile this optimizer's step() instead (the first of --models)"
    )
    args = ap.parse_args()
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if args.profile:
        if args.threads:
            torch.set_num_threads(args.threads)
        profile_step(args.profile, args.models.split(",")[0])
        return
    t_start = time.perf_counter()
    global _clock
    _clock = time.process_time if args.clock == "cpu" else time.perf_counter
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
        " | state B/param (ours/base) | paired train-step ratio |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for model_name in args.models.split(","):
        for name in names:
            window = args.cnn_window if model_name == "2c2d" else args.window
            r = measure(
                name,
                model_name,
                args.repeats,
                window,
                {"on": True, "off": False, "default": None}[args.ours_foreach],
                args.window,
                base_foreach=args.base_foreach == "on",
                nonfinite=None if args.nonfinite == "default" else args.nonfinite,
                pairs=args.pairs,
            )
            rows.append(r)
            paired = "-" if r["paired_ratio"] is None else f"{r['paired_ratio']:.2f}"
            print(
                f"| {name} | {model_name} | {r['base']} | {r['step_ratio']:.2f} | "
                f"{r['full_ratio']:.2f} | {r['full_ms_ours']:.1f} / {r['full_ms_base']:.1f} | "
                f"{r['state_bytes_per_param_ours']:.1f} / {r['state_bytes_per_param_base']:.1f} "
                f"| {paired} |",
                flush=True,
            )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor()}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 1),
        **vars(args),
    }
    print(f"total {meta['seconds']} s")
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
