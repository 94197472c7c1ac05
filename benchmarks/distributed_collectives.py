"""Count the collectives lrfree issues per step under DDP and FSDP2 (2 gloo ranks, CPU).

Counts ``torch.distributed.all_reduce`` calls made inside ``optimizer.step()`` outside the
closure (DDP's gradient all-reduce and FSDP2's all-gathers / reduce-scatters are the
framework's, not counted), for every exported optimizer, 5 steps on a 6-16-3 tanh MLP, 96
samples split over 2 ranks. Writes ``benchmarks/out/distributed_collectives.md``.

    python benchmarks/distributed_collectives.py
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import lrfree

STEPS = 5
OUT = Path(__file__).parent / "out" / "distributed_collectives.md"

# every exported optimizer; amortised rules estimate every 2nd step so 5 steps show both kinds
CASES: dict[str, Any] = {
    "Composed (constant)": lambda ps: lrfree.Composed(ps, direction="adamw", lr=1e-2),
    "SGDLW": lambda ps: lrfree.SGDLW(ps, update_every=2),
    "AdamWLW": lambda ps: lrfree.AdamWLW(ps, update_every=2),
    "ADLER (ggn)": lambda ps: lrfree.ADLER(ps),
    "ADLER (gn)": lambda ps: lrfree.ADLER(ps, variant="gn", lr=0.03),
    "SGDTLR": lambda ps: lrfree.SGDTLR(ps, lr=0.1, update_every=2),
    "AdamTLR": lambda ps: lrfree.AdamTLR(ps, lr=1e-2, update_every=2),
    "AdaLip": lambda ps: lrfree.AdaLip(ps, lr=0.05),
    "AdaLipU": lambda ps: lrfree.AdaLipU(ps, lr=0.05),
    "RMSLip": lambda ps: lrfree.RMSLip(ps, lr=5e-3),
    "RMSLipU": lambda ps: lrfree.RMSLipU(ps, lr=5e-3),
    "AdamLip": lambda ps: lrfree.AdamLip(ps, lr=1e-2),
    "AdamLipU": lambda ps: lrfree.AdamLipU(ps, lr=1e-2),
    "SGDHD": lambda ps: lrfree.SGDHD(ps, lr=0.1),
    "SGDNHD": lambda ps: lrfree.SGDNHD(ps, lr=0.05),
    "AdamHD": lambda ps: lrfree.AdamHD(ps, lr=1e-2),
    "SGDCAMHD": lambda ps: lrfree.SGDCAMHD(ps, lr=0.1),
    "SGDNCAMHD": lambda ps: lrfree.SGDNCAMHD(ps, lr=0.05),
    "AdamCAMHD": lambda ps: lrfree.AdamCAMHD(ps, lr=1e-2),
    "Composed (hypergradient-window)": lambda ps: lrfree.Composed(
        ps, direction="nesterov", rule="hypergradient-window", lr=0.05, update_every=2
    ),
}


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    x = torch.randn(3, 6, generator=g)[y] * 2 + 0.5 * torch.randn(96, 6, generator=g)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)), x, y


def _run_case(factory: Any, mode: str, rank: int, counter: dict[str, Any]) -> str:
    model, x, y = _problem()
    if mode == "ddp":
        fwd: nn.Module = nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for m in model:
            if isinstance(m, nn.Linear):
                fully_shard(m)
        fwd = fully_shard(model)
    opt = factory(model.named_parameters())
    g = opt.param_groups[0]
    xs, ys = x.chunk(2)[rank], y.chunk(2)[rank]
    counts = []
    for _ in range(STEPS):

        def closure() -> torch.Tensor:
            counter["on"] = False
            opt.zero_grad()
            loss = F.cross_entropy(fwd(xs), ys)
            loss.backward()
            counter["on"] = True
            return loss

        before = counter["n"]
        try:
            if g["rule"] == "adler" and g["variant"] == "ggn":
                opt.zero_grad()
                out = fwd(xs)
                F.cross_entropy(out, ys).backward(retain_graph=True)
                counter["on"] = True
                opt.step(outputs=out)
            elif g["rule"] == "layerwise":
                counter["on"] = True
                opt.step(closure, model=fwd)
            else:
                counter["on"] = True
                opt.step(closure)
        except NotImplementedError:
            return "NotImplementedError"
        finally:
            counter["on"] = False
        counts.append(counter["n"] - before)
    return " ".join(map(str, counts))


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    counter = {"n": 0, "on": False}
    orig = dist.all_reduce

    def counting(*a: Any, **k: Any) -> Any:
        counter["n"] += counter["on"]
        return orig(*a, **k)

    dist.all_reduce = counting  # type: ignore[assignment]
    rows = []
    for name, factory in CASES.items():
        rows.append(
            (
                name,
                _run_case(factory, "ddp", rank, counter),
                _run_case(factory, "fsdp2", rank, counter),
            )
        )
    dist.all_reduce = orig  # type: ignore[assignment]
    if rank == 0:
        torch.save(rows, out)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.pt")
        mp.spawn(_worker, args=(os.path.join(d, "init"), out), nprocs=2, join=True)
        rows = torch.load(out)
    lines = [
        f"torch {torch.__version__}, 2 gloo ranks on CPU, {STEPS} steps; all_reduce calls "
        "issued by lrfree per step (steps 1..5)",
        "",
        "| optimizer | DDP | FSDP2 |",
        "| --- | --- | --- |",
    ] + [f"| {n} | {a} | {b} |" for n, a, b in rows]
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
