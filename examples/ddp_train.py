"""Data-parallel training (DDP) with an lrfree optimizer, on CPU with the gloo backend.

Run (2 processes on one machine)::

    torchrun --nproc-per-node 2 examples/ddp_train.py --optimizer SGDLW
    torchrun --nproc-per-node 2 examples/ddp_train.py --optimizer ADLER --check-rates
    torchrun --nproc-per-node 2 examples/ddp_train.py --optimizer AdamTLR --tiny  # smoke test

``--tiny`` (256 examples, batch 16 per rank, 2 epochs of 8 steps) is what
``tests/test_examples.py`` runs, for every optimizer below.

What changes against a single-process loop:

* gradients arrive averaged (DDP), so first-order rules (TLR, AdaLip, HD, CAM-HD) compute the
  same rates on every rank without any extra communication;
* curvature rules estimate on each rank's local batch and average the per-block numbers (one
  small all-reduce per curvature step, ``lrfree.distributed``):

  - ``SGDLW`` / ``AdamWLW``: closure mode, ``opt.step(closure, model=ddp)``; the finite
    differences run inside ``ddp.no_sync()`` (local gradients, no gradient all-reduce per
    evaluation). Graph mode (``backward(create_graph=True)``) does not work through DDP.
  - ``ADLER``: ``loss.backward(retain_graph=True); opt.step(outputs=logits)``.

* ``--check-rates`` turns on ``lrfree.distributed.configure(opt, check_rates=True)``: after
  every step all ranks compare their rates and raise if any differ (a debug option: one more
  collective per step).

The data: a synthetic 3-class problem (no download), each rank gets its own half of every
batch through ``DistributedSampler``. TLR's window is a fraction ``p`` of an epoch
(``steps_per_epoch``: the batches per epoch of each rank, ``len(loader)``).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import lrfree
from lrfree import distributed as lrdist

# name -> (named parameters, batches per epoch) -> optimizer
OPTIMIZERS: dict[str, Callable[[Any, int], torch.optim.Optimizer]] = {
    "SGDLW": lambda ps, spe: lrfree.SGDLW(ps, update_every=10),
    "AdamWLW": lambda ps, spe: lrfree.AdamWLW(ps, update_every=10),
    "ADLER": lambda ps, spe: lrfree.ADLER(ps),
    "AdamHD": lambda ps, spe: lrfree.AdamHD(ps, lr=1e-3),
    "AdamTLR": lambda ps, spe: lrfree.AdamTLR(ps, lr=1e-3, steps_per_epoch=spe),
    "AdamLip": lambda ps, spe: lrfree.AdamLip(ps, lr=1e-3),
    "AdamCAMHD": lambda ps, spe: lrfree.AdamCAMHD(ps, lr=1e-3),
}


def data(n: int = 2048) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(3, 20, generator=g)[y] + torch.randn(n, 20, generator=g)
    return TensorDataset(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="SGDLW")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64, help="per rank")
    ap.add_argument("--check-rates", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 256 examples, batch 16")
    args = ap.parse_args()
    n = 2048
    if args.tiny:
        n, args.batch_size, args.epochs = 256, 16, 2

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts them)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    ddp = nn.parallel.DistributedDataParallel(model)
    ds = data(n)
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler)
    opt = OPTIMIZERS[args.optimizer](model.named_parameters(), len(loader))
    lrdist.configure(opt, check_rates=args.check_rates)
    rule = opt.param_groups[0]["rule"]
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total, count = torch.zeros(()), 0
        for x, y in loader:
            if rule == "adler":
                opt.zero_grad()
                logits = ddp(x)
                loss = F.cross_entropy(logits, y)
                loss.backward(retain_graph=True)
                opt.step(outputs=logits)
            else:

                def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    opt.zero_grad()
                    loss = F.cross_entropy(ddp(x), y)
                    loss.backward()
                    return loss

                loss = opt.step(closure, model=ddp) if rule == "layerwise" else opt.step(closure)
            total += loss.detach()
            count += 1
        dist.all_reduce(total)  # logging only: the mean loss over ranks
        if not math.isfinite(float(total)):
            raise RuntimeError(f"epoch {epoch}: the loss is not finite")
        if rank == 0:
            rates = opt.effective_lr()
            shown = ", ".join(f"{k}={v:.3g}" for k, v in rates.items())
            print(
                f"epoch {epoch}: mean loss {float(total) / count / dist.get_world_size():.4f}; "
                f"rates {shown}",
                flush=True,
            )


if __name__ == "__main__":
    if "RANK" not in os.environ:
        raise SystemExit("launch with: torchrun --nproc-per-node 2 examples/ddp_train.py")
    main()
    # the model, optimizer and loader of main() are freed before the process group goes,
    # and every rank is past its last collective: otherwise gloo could abort a rank at exit
    # ("terminate called without an active exception")
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
