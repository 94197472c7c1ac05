"""A training script that checkpoints every step and can kill itself: tests/test_resume.py.

Trains every exported optimizer (tests/robust_recipes.py) in lock-step on one problem with
dropout, random mini-batches and a StepLR scheduler; after each step it writes one atomic
checkpoint (``lrfree.checkpoint.save_atomic``: models, optimizers, schedulers, RNG) for all.

    python resume_script.py --ckpt C --out O --steps N                # uninterrupted
    python resume_script.py --ckpt C --out O --steps N --kill-at K    # SIGKILL in step K+1
    python resume_script.py --ckpt C --out O --steps N --resume       # continue from C

``--kill-at K``: in step ``K + 1``, after half of the optimizers stepped, the script starts a
checkpoint write (a torn temporary file) and sends itself ``SIGKILL``: the checkpoint of step
``K`` must be what a resume finds. At the end, ``O`` holds every model's parameters and
optimizer state.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lrfree.checkpoint import rng_state, save_atomic, set_rng_state
from robust_recipes import EXPORTED, WINDOWED, dropout_problem

T = 3  # the window / interval of TLR and LW here: a kill at K % 3 != 0 is mid-window


def build(name: str):
    spec = EXPORTED[name]
    model, x, y = dropout_problem(seed=0)
    overrides = {"update_every": T} if name in WINDOWED else {}
    if name in ("SGDTLR", "AdamTLR"):  # the default window floor would lengthen K to 30
        overrides["window_floor"] = 0.0
    opt = spec.build(model, **overrides)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.8)
    return spec, model, opt, sched, x, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = sorted(EXPORTED)
    runs = {n: build(n) for n in names}
    start = 0
    torch.manual_seed(1234)
    if args.resume:
        ckpt = torch.load(args.ckpt, weights_only=False)
        start = ckpt["step"]
        for n in names:
            _, model, opt, sched, _, _ = runs[n]
            model.load_state_dict(ckpt["runs"][n]["model"])
            opt.load_state_dict(ckpt["runs"][n]["opt"])
            sched.load_state_dict(ckpt["runs"][n]["sched"])
        set_rng_state(ckpt["rng"])
    for t in range(start + 1, args.steps + 1):
        for k, n in enumerate(names):
            if args.kill_at is not None and t == args.kill_at + 1 and k == len(names) // 2:
                torn = os.path.join(os.path.dirname(args.ckpt), ".torn.tmp")
                with open(torn, "wb") as f:  # a checkpoint write in progress
                    f.write(b"PK\x03\x04 half a checkpoint")
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            spec, model, opt, sched, x, y = runs[n]
            model.train()
            idx = torch.randint(0, x.shape[0], (32,))
            spec.run_step(model, opt, x[idx], y[idx])
            sched.step()
        save_atomic(
            {
                "step": t,
                "rng": rng_state(),
                "runs": {
                    n: {
                        "model": runs[n][1].state_dict(),
                        "opt": runs[n][2].state_dict(),
                        "sched": runs[n][3].state_dict(),
                    }
                    for n in names
                },
            },
            args.ckpt,
        )
    torch.save(
        {
            n: {
                "params": [p.detach() for p in runs[n][1].parameters()],
                "opt": runs[n][2].state_dict(),
            }
            for n in names
        },
        args.out,
    )


if __name__ == "__main__":
    main()
