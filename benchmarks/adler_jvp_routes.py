"""Where ADLER's time goes: the cost of each way to get ``v = J G``, against one SGD step.

For one batch (Fashion-MNIST MLP 784-1000-500-100-10 or the MNIST-1D CNN, batch 128,
cross-entropy), times each piece separately (median over ``--reps`` interleaved repetitions):

* ``forward``, ``backward``: the training forward and the plain backward;
* ``sgd step``: zero_grad + forward + backward + ``torch.optim.SGD.step``;
* ``func.jvp``: ``torch.func.jvp`` over ``functional_call`` (primal recomputed + tangents);
* ``forward_ad``: the same with ``torch.autograd.forward_ad`` dual tensors;
* ``bwd create_graph``: the backward with ``create_graph=True`` at ``z = dL/dF`` (gives
  ``G = J^T z`` *and* a graph linear in ``z``);
* ``double bwd``: ``d <J^T z, G> / dz = J G`` through that graph (the tangent-only pass);
* ``bwd(zeros) cg``: the old ``outputs=`` route's extra backward at a dummy ``z = 0``.

The forward-mode routes recompute the primal forward (``F``) before the tangents; the
double-VJP through the training graph does not, which is why the ``backward=`` route of
``lrfree.ADLER`` (``opt.backward(loss, outputs)``) costs one graph-recording backward plus
one tangent pass on top of the forward.

    OMP_NUM_THREADS=1 python benchmarks/adler_jvp_routes.py --model mlp --reps 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad as fwAD

clock = time.perf_counter  # --clock cpu: time.process_time


def models(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "mlp":
        m = nn.Sequential(
            nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 500), nn.ReLU(),
            nn.Linear(500, 100), nn.ReLU(), nn.Linear(100, 10),
        )  # fmt: skip
        x = torch.rand(128, 784, generator=g)
    else:
        from lrfree.bench.tasks import Mnist1dCNN

        m = Mnist1dCNN()
        x = torch.randn(128, 40, generator=g)
    return m, x, torch.randint(0, 10, (128,), generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flops", action="store_true", help="also count matmul/conv FLOPs")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this process's CPU time (time.process_time), less sensitive to other "
        "jobs on a shared machine than wall time (with --threads 1)",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    global clock
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    model, x, y = models(a.model)
    params = dict(model.named_parameters())
    names = list(params)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay put
    out = model(x)
    F.cross_entropy(out, y).backward()
    G = {n: p.grad.detach().clone() for n, p in params.items()}

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        F.cross_entropy(model(x), y).backward()

    def sgd() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def func_jvp() -> None:
        prim = {n: p.detach() for n, p in params.items()}
        torch.func.jvp(lambda ps: torch.func.functional_call(model, ps, (x,)), (prim,), (G,))

    def fwd_ad() -> None:
        with fwAD.dual_level():
            duals = {n: fwAD.make_dual(p.detach(), G[n]) for n, p in params.items()}
            o = torch.func.functional_call(model, duals, (x,))
            fwAD.unpack_dual(o).tangent.sum()

    def cg_and_double() -> tuple[float, float]:
        o = model(x)
        loss = F.cross_entropy(o, y)
        (gz,) = torch.autograd.grad(loss, o, retain_graph=True)
        z = gz.detach().requires_grad_(True)
        t0 = clock()
        ws = torch.autograd.grad(o, [params[n] for n in names], z, create_graph=True)
        t1 = clock()
        torch.autograd.grad(ws, z, [G[n] for n in names])
        t2 = clock()
        return t1 - t0, t2 - t1

    def zeros_cg() -> None:
        o = model(x)
        z = torch.zeros_like(o, requires_grad=True)
        ws = torch.autograd.grad(o, [params[n] for n in names], z, create_graph=True)
        total = sum((w * G[n]).sum() for w, n in zip(ws, names))
        torch.autograd.grad(total, z)

    acts: list[torch.Tensor] = []  # the inputs of every Linear of the MLP's training forward
    if a.model == "mlp":
        h = x
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    acts.append(h)
                h = m(h)

    def manual_tangent() -> None:  # MLP only: tangents from the stored activations (lower bound)
        dh = None
        lin = [(i, m) for i, m in enumerate(model) if isinstance(m, nn.Linear)]
        for k, (i, m) in enumerate(lin):
            dz = torch.addmm(G[f"{i}.bias"], acts[k], G[f"{i}.weight"].T)
            if dh is not None:
                dz.addmm_(dh, m.weight.T)
            if k + 1 < len(lin):
                dh = dz * (acts[k + 1] > 0)

    timed: dict[str, Callable[[], None]] = {
        "forward": fwd,
        "forward+backward": fwd_bwd,
        "sgd step": sgd,
        "func.jvp": func_jvp,
        "forward_ad": fwd_ad,
        "fwd+cg bwd(zeros)+double": zeros_cg,
    }
    if a.model == "mlp":
        timed["tangent only (by hand)"] = manual_tangent
    t: dict[str, list[float]] = {k: [] for k in [*timed, "bwd create_graph", "double bwd"]}
    for r in range(a.reps + 3):
        for k, f in timed.items():
            t0 = clock()
            f()
            if r >= 3:
                t[k].append(clock() - t0)
        cg, db = cg_and_double()
        if r >= 3:
            t["bwd create_graph"].append(cg)
            t["double bwd"].append(db)
    flops: dict[str, float] = {}
    if a.flops:  # matmul / conv FLOPs of each piece (torch.utils.flop_counter): load-independent
        from torch.utils.flop_counter import FlopCounterMode

        for k, f in {**timed, "bwd create_graph + double bwd": cg_and_double}.items():
            with FlopCounterMode(display=False) as fc:
                f()
            flops[k] = fc.get_total_flops()
    med = {k: statistics.median(v) for k, v in t.items()}
    base = med["sgd step"]
    print(
        f"# {a.model}, batch 128, threads={a.threads}, clock={a.clock}, {a.reps} reps, "
        f"torch {torch.__version__}"
    )
    print(f"{'piece':28s} {'ms (median)':>12s} {'x SGD step':>11s}")
    for k, m in med.items():
        print(f"{k:28s} {1e3 * m:12.2f} {m / base:11.2f}")
    bwd = med["forward+backward"] - med["forward"]
    print(f"{'(backward alone)':28s} {1e3 * bwd:12.2f} {bwd / base:11.2f}")
    if flops:
        print(f"\n{'piece':32s} {'MFLOP (mm/conv)':>15s} {'x SGD step':>11s}")
        for k, fl in flops.items():
            print(f"{k:32s} {fl / 1e6:15.1f} {fl / flops['sgd step']:11.2f}")


if __name__ == "__main__":
    main()
