"""ADLER route 0: closed-form Q (loss='cross_entropy') vs autograd Q (loss='auto').

MLP 784-1000-500-100-10, batch 128, CPU time, one thread, interleaved rounds, median
(docs/adler.md):

    python benchmarks/adler_loss_q.py global
    python benchmarks/adler_loss_q.py layer
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F

import lrfree
import lrfree.rules.adler as A
from lrfree.bench.tasks import fmnist_mlp
from lrfree.loss_hessian import quadratic_form

torch.set_num_threads(1)
torch.manual_seed(0)


def mlp():
    torch.manual_seed(0)
    return fmnist_mlp()  # the bench's DeepOBS MLP (its Flatten is a no-op on 128 x 784)


x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
blocks = sys.argv[1] if len(sys.argv) > 1 else "global"
models = {k: mlp() for k in ("cross_entropy", "auto")}
opts = {
    k: lrfree.ADLER(m.named_parameters(), lr=1e-3, loss=k, blocks=blocks) for k, m in models.items()
}


def step(k):
    m, o = models[k], opts[k]
    o.zero_grad()
    out = m(x)
    loss = F.cross_entropy(out, y)
    o.backward(loss, out)
    o.step(outputs=out)


times = {k: [] for k in opts}
qtimes = {"closed": [], "autograd": []}
for _r in range(8):
    for k in opts:
        t = time.process_time()
        for _ in range(10):
            step(k)
        times[k].append((time.process_time() - t) / 10 * 1e3)
    # Q alone, on one v per block (L=4 for layer, 1 for global)
    m, o = models["auto"], opts["auto"]
    o.zero_grad()
    out = m(x)
    o.backward(F.cross_entropy(out, y), out)
    g = o._workspace().fed["graph"]
    vs = [torch.randn_like(out) for _ in range(4 if blocks == "layer" else 1)]
    t = time.process_time()
    for _ in range(50):
        [quadratic_form("cross_entropy", out.detach(), v) for v in vs]
    qtimes["closed"].append((time.process_time() - t) / 50 * 1e3)
    t = time.process_time()
    for _ in range(50):
        [(v * q).sum() for v, q in zip(vs, g.loss_hvp(vs))]
    qtimes["autograd"].append((time.process_time() - t) / 50 * 1e3)
    o.step(outputs=out)
for k, v in times.items():
    print(f"step {k:14s} {statistics.median(v[1:]):8.3f} ms")
for k, v in qtimes.items():
    print(f"Q only {k:9s} {statistics.median(v[1:]):8.4f} ms")

m, o = models["auto"], opts["auto"]
o.zero_grad()
out = m(x)
o.backward(F.cross_entropy(out, y), out)
ts = []
for _ in range(30):
    t = time.process_time()
    A._verify_declared_loss("cross_entropy", "mean", o._workspace().fed["graph"], None)
    ts.append((time.process_time() - t) * 1e3)
print(f"one-off check  {statistics.median(ts):8.4f} ms")
print("skipped steps:", [op.skipped_steps for op in opts.values()])
