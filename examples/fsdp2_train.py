"""Sharded training (FSDP2, ``torch.distributed.fsdp.fully_shard``) with an lrfree optimizer,
on CPU with the gloo backend, and a sharded checkpoint (``torch.distributed.checkpoint``).

Run (2 processes on one machine)::

    torchrun --nproc-per-node 2 examples/fsdp2_train.py --optimizer AdamHD
    torchrun --nproc-per-node 2 examples/fsdp2_train.py --optimizer SGDLW --checkpoint ckpt
    torchrun --nproc-per-node 2 examples/fsdp2_train.py --optimizer AdamTLR --tiny  # smoke test

``--tiny`` (12 steps of batch 16 per rank) is what ``tests/test_examples.py`` runs. The data
is a stream with no epochs; TLR's window, a fraction ``p`` of an epoch, is taken from
``--steps-per-epoch`` (default 20: a window of ``K = round(0.2 * 20) = 4`` steps).

Under FSDP2 parameters, gradients and the direction's state (momentum, Adam moments) are
DTensors sharded over the ranks. lrfree computes every norm and inner product on the local
shards and completes it across the shard group (``lrfree.distributed``: one packed all-reduce
per reduction call; see docs/distributed.md for the count per optimizer); the rates are plain
(replicated) tensors, equal on every rank.

Not supported under FSDP2 (each raises ``NotImplementedError``): ``blocks="filter"`` and
``"element"`` (their rates would be sharded), ADLER's default ``variant="ggn"`` and LW's graph
mode / ``curvature="ggn"`` (they need autograd with respect to sharded parameters). LW runs in
closure mode (finite differences through the normal backward); ADLER runs as
``variant="gn"``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard

import lrfree
from lrfree import distributed as lrdist

# name -> (named parameters, steps per "epoch") -> optimizer
OPTIMIZERS: dict[str, Callable[[Any, int], torch.optim.Optimizer]] = {
    "SGDLW": lambda ps, spe: lrfree.SGDLW(ps, update_every=10),
    "AdamWLW": lambda ps, spe: lrfree.AdamWLW(ps, update_every=10),
    "ADLER-gn": lambda ps, spe: lrfree.ADLER(ps, variant="gn", lr=0.03),
    "AdamHD": lambda ps, spe: lrfree.AdamHD(ps, lr=1e-3),
    "AdamTLR": lambda ps, spe: lrfree.AdamTLR(ps, lr=1e-3, steps_per_epoch=spe),
    "AdamLip": lambda ps, spe: lrfree.AdamLip(ps, lr=1e-3),
    "AdamCAMHD": lambda ps, spe: lrfree.AdamCAMHD(ps, lr=1e-3),
}


def build(name: str, steps_per_epoch: int = 20) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)
    )
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m)
    fully_shard(model)
    return model, OPTIMIZERS[name](model.named_parameters(), steps_per_epoch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="AdamHD")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64, help="per rank")
    ap.add_argument("--steps-per-epoch", type=int, default=20, help="TLR's epoch (window)")
    ap.add_argument("--checkpoint", default=None, help="save and reload a DCP checkpoint here")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 12 steps of batch 16")
    args = ap.parse_args()
    if args.tiny:
        args.steps, args.batch_size = 12, 16

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, opt = build(args.optimizer, args.steps_per_epoch)
    lrdist.configure(opt, check_rates=True)  # debug: every rank must hold the same rates
    rule = opt.param_groups[0]["rule"]

    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own data stream
    centers = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 3, (args.batch_size,), generator=g)
        return centers[y] + torch.randn(args.batch_size, 20, generator=g), y

    def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
        for step in range(steps):
            x, y = batch()

            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            loss = opt.step(closure, model=model) if rule == "layerwise" else opt.step(closure)
            if step % 20 == 0 or step == steps - 1:
                total = loss.detach().clone()
                dist.all_reduce(total)
                if not math.isfinite(float(total)):
                    raise RuntimeError(f"step {step}: the loss is not finite")
                if rank == 0:
                    shown = ", ".join(f"{k}={v:.3g}" for k, v in opt.effective_lr().items())
                    print(
                        f"step {step}: loss {float(total) / world:.4f}; rates {shown}", flush=True
                    )

    train(model, opt, args.steps)
    if args.checkpoint:
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=args.checkpoint)
        model2, opt2 = build(args.optimizer, args.steps_per_epoch)
        with warnings.catch_warnings():  # DCP initialises a fresh optimizer's state by a
            warnings.simplefilter("ignore", RuntimeWarning)  # step without closure (LW warns)
            msd2, osd2 = get_state_dict(model2, opt2)
        state = {"model": msd2, "optim": osd2}
        dcp.load(state, checkpoint_id=args.checkpoint)
        set_state_dict(
            model2, opt2, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
        same = opt2.effective_lr() == opt.effective_lr()
        if rank == 0:
            print(f"reloaded from {args.checkpoint}: rates identical: {same}", flush=True)


if __name__ == "__main__":
    if "RANK" not in os.environ:
        raise SystemExit("launch with: torchrun --nproc-per-node 2 examples/fsdp2_train.py")
    main()
    # the model, optimizer and loader of main() are freed before the process group goes,
    # and every rank is past its last collective: otherwise gloo could abort a rank at exit
    # ("terminate called without an active exception")
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
