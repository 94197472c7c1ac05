"""Benchmark tasks: data + model + loss + epochs + batch size + metric, by name.

Every task has the same interface: ``load(cfg) -> Split`` and ``model() -> nn.Module`` whose
output is compared to integer labels by ``loss`` (``"cross_entropy"`` on logits, ``"nll"`` on
log-probabilities); label ``-100`` is ignored (the graph tasks mask nodes that way). The
language model's logits are ``(batch, vocabulary, sequence)`` against ``(batch, sequence)``
labels, the layout ``F.cross_entropy`` takes for per-position classes.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import (
    Split,
    csbm_graph,
    load_fashion_mnist,
    load_mnist1d,
    load_planetoid,
    load_stdlib_charlm,
)

__all__ = [
    "PAPER_TASKS",
    "SUITES",
    "TASKS",
    "BenchConfig",
    "ResidualCNN",
    "Task",
    "TaskSize",
    "ffnn",
    "get_task",
    "task_loss",
]


@dataclass
class BenchConfig:
    data_dir: str | None = None
    download: bool = False


@dataclass
class Task:
    name: str
    description: str
    load: Callable[[BenchConfig], Split]
    model: Callable[[], nn.Module]
    epochs: int
    batch_size: int  # 0: full batch
    loss: str = "cross_entropy"
    metric: str = "accuracy"  # or "test_loss" (lower is better)
    tags: tuple[str, ...] = field(default_factory=tuple)
    train_subset: int | None = None  # default subset, so the full suite fits 90 min on 2 cores
    # a run whose final metric is at or below this accuracy (above this loss) has collapsed:
    # chance level, the majority class, or the autoencoder's constant predictor
    collapse: float | None = None
    # the model calls F.scaled_dot_product_attention, whose fused CPU kernel has no double
    # backward: the loop runs the steps that differentiate twice (graph-mode curvature, an
    # entry's declared second-order steps) under the MATH backend (loop.attention_backend)
    needs_math_attention: bool = False
    # measured costs, read by lrfree.bench.cost's estimate (``python -m lrfree.bench.measure``
    # re-measures them): CPU seconds of one torch-AdamW training step on the task's batch, of
    # one evaluation on the whole test set, and of loading the task's data; None: not
    # measured (cost's defaults). Provenance: the comment above ``TASKS``
    step_seconds: float | None = None
    eval_seconds: float | None = None
    load_seconds: float | None = None
    # (training, test) examples of the whole dataset, for the estimate's steps per epoch
    # before any data is loaded (a full-graph task is one example); None: 60000 and 10000
    examples: tuple[int, int] | None = None
    # an optimizer's step cost on this task relative to AdamW's where it is far from its
    # ``cost.FACTORS`` value (measured; e.g. LW's curvature pass under the MATH attention
    # backend): bench name -> factor
    step_factors: dict[str, float] = field(default_factory=dict)

    def steps_per_epoch(self, n_train: int) -> int:
        """Training steps in one epoch over ``n_train`` examples: one for a full batch
        (``batch_size`` 0, or at least ``n_train``), else ``ceil(n_train / batch_size)``.

        Example::

            >>> get_task("mnist1d-mlp").steps_per_epoch(4000)  # batches of 128
            32
            >>> get_task("cora-gcn").steps_per_epoch(1)  # the whole graph at once
            1
        """
        bs = self.batch_size
        return 1 if bs <= 0 or bs >= n_train else -(-n_train // bs)


@dataclass(frozen=True)
class TaskSize:
    """A suite's size for one task; ``None`` keeps the task's default.

    ``train_subset`` / ``test_subset``: the first N training / test examples (a fixed,
    documented subset; the graph tasks always use their whole graph).
    """

    epochs: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None


# --------------------------------------------------------------------- models
def mnist1d_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )


class Mnist1dCNN(nn.Module):
    """The MNIST-1D reference CNN (three strided 1-D convolutions, 25 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.linear = nn.Linear(125, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        h = torch.relu(self.conv1(h))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.linear(h.flatten(1))


def fmnist_mlp() -> nn.Module:
    """DeepOBS fmnist_mlp: 784-1000-500-100-10, ReLU."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 1000),
        nn.ReLU(),
        nn.Linear(1000, 500),
        nn.ReLU(),
        nn.Linear(500, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def fmnist_2c2d() -> nn.Module:
    """DeepOBS fmnist_2c2d: conv32(5x5)-pool-conv64(5x5)-pool-fc1024-fc10, ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 2, padding=1),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 2, padding=1),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    )


def fmnist_autoencoder() -> nn.Module:
    """The LW paper's MNIST autoencoder 784-1000-500-250-30-250-500-1000-784: ReLU hidden
    layers, no activation at the 30-unit code, logits out (sigmoid + binary cross-entropy)."""
    widths = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i not in (3, len(widths) - 2):  # no activation at the code and the output
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def tlr_mlp() -> nn.Module:
    """The TLR paper's MNIST MLP: one hidden layer of 1000 ReLU units."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 10))


def adalip_cnn() -> nn.Module:
    """The AdaLip paper's MNIST CNN (Table 6): conv32-conv64-maxpool-dense128-dense10, ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )  # fmt: skip


def lenet5() -> nn.Module:
    """LeNet-5 for 28x28 inputs (ReLU, max-pooling), as in the CAM-HD experiments."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )  # fmt: skip


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def residual_cnn() -> nn.Module:
    """A small residual CNN without BatchNorm (as in the ADLER experiments), ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        _Residual(16), nn.MaxPool2d(2),
        _Residual(16), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )  # fmt: skip


class GCN(nn.Module):
    """The LW paper's 3-layer GCN [I, 128, 64, O] with ReLU and dropout 0.5, log-softmax out.

    A sparse-matmul GCN (``A_hat X W``) written here rather than torch_geometric, to keep the
    benchmark's dependencies small; ``A_hat = D^-1/2 (A + I) D^-1/2``.

    The bag-of-words features are about 1% non-zero, so the first layer multiplies them as a
    sparse matrix and applies the input dropout to their non-zero values only. That is the
    same model (dropout maps a zero to zero) at a fraction of the dense cost: the dense
    first layer and its dropout mask over all N x F entries were most of a step's time. The
    features are kept in CSR form: the same products bit for bit as the COO form (checked on
    every optimizer's 20-epoch Cora run), about 3x faster for the first layer on this CPU
    (its backward and the evaluation were a third of a CiteSeer step).
    """

    def __init__(self, adj: torch.Tensor, n_in: int, n_out: int) -> None:
        super().__init__()
        self.register_buffer("adj", adj, persistent=False)
        self.lin1 = nn.Linear(n_in, 128)
        self.lin2 = nn.Linear(128, 64)
        self.lin3 = nn.Linear(64, n_out)
        self.dropout = nn.Dropout(0.5)
        # the input last made sparse, kept alive so that its memory cannot be another
        # tensor's while ``_features`` compares addresses
        self._dense: torch.Tensor | None = None
        self._sparse: torch.Tensor | None = None

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_sparse:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
                return x.coalesce().to_sparse_csr()
        if x.layout == torch.sparse_csr:
            return x
        last = self._dense
        if last is None or (x.data_ptr(), x.shape, x.stride()) != (
            last.data_ptr(),
            last.shape,
            last.stride(),
        ):  # (the runner passes a new view x[0] of the same features at every step)
            with warnings.catch_warnings():  # torch: "Sparse CSR tensor support is in beta"
                warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
                self._dense, self._sparse = x, x.to_sparse_csr()
        assert self._sparse is not None
        return self._sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self._features(x)
        values = self.dropout(xs.values())
        h = torch.sparse_csr_tensor(
            xs.crow_indices(), xs.col_indices(), values, xs.shape, check_invariants=False
        )
        h = torch.sparse.mm(h, self.lin1.weight.t()) + self.lin1.bias
        h = torch.relu(torch.sparse.mm(self.adj, h))
        h = self.dropout(h)
        h = torch.relu(torch.sparse.mm(self.adj, self.lin2(h)))
        h = self.dropout(h)
        return torch.log_softmax(torch.sparse.mm(self.adj, self.lin3(h)), dim=1)


class _DecoderBlock(nn.Module):
    """A pre-LayerNorm decoder block: causal multi-head self-attention, then a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        qkv = self.qkv(self.ln1(h)).view(b, n, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, sequence, head dim)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class CharTransformer(nn.Module):
    """A small decoder-only transformer over bytes: token and learned positional embeddings,
    ``n_layers`` pre-LayerNorm blocks (causal ``F.scaled_dot_product_attention``), a final
    LayerNorm and a linear head. Input ``(batch, sequence)`` byte ids, output logits
    ``(batch, vocabulary, sequence)`` (class dimension 1, as ``F.cross_entropy`` takes it)."""

    def __init__(
        self,
        vocab: int = 256,
        seq_len: int = 64,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 128,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(_DecoderBlock(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos.weight[: x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h)).transpose(1, 2)


# ----------------------------------------------------------------------- data
def _fmnist(flatten: bool) -> Callable[[BenchConfig], Split]:
    def load(cfg: BenchConfig) -> Split:
        return load_fashion_mnist(cfg.data_dir, download=cfg.download, flatten=flatten)

    return load


_GRAPHS: dict[str, Any] = {}


def _graph_task(name: str) -> tuple[Callable[[BenchConfig], Split], Callable[[], nn.Module]]:
    def load(cfg: BenchConfig) -> Split:
        if name == "csbm":  # generated: no files
            g = csbm_graph()
        else:
            g = load_planetoid(name, cfg.data_dir, download=cfg.download)
        _GRAPHS[name] = g
        y_train = torch.where(g.train_mask, g.y, torch.full_like(g.y, -100))
        y_test = torch.where(g.test_mask, g.y, torch.full_like(g.y, -100))
        x = g.x.unsqueeze(0)  # one "batch" holding the whole graph
        return Split(x, y_train.unsqueeze(0), x, y_test.unsqueeze(0))

    def model() -> nn.Module:
        g = _GRAPHS[name]
        return _Squeeze(GCN(g.adj, g.x.shape[1], g.num_classes))

    return load, model


class _Squeeze(nn.Module):
    """Adapts the full-graph batch of one: (1, N, F) -> (N, C) -> (1, C, N) for nll_loss."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x[0]).t().unsqueeze(0)


def _mnist1d(cfg: BenchConfig) -> Split:
    return load_mnist1d()


def _fmnist_reconstruction(cfg: BenchConfig) -> Split:
    d = load_fashion_mnist(cfg.data_dir, download=cfg.download, flatten=True)
    return Split(d.x_train, d.x_train, d.x_test, d.x_test)


def _stdlib_charlm(cfg: BenchConfig) -> Split:
    return load_stdlib_charlm(seq_len=64)


_cora_load, _cora_model = _graph_task("cora")
_citeseer_load, _citeseer_model = _graph_task("citeseer")
_csbm_load, _csbm_model = _graph_task("csbm")


# --- the papers' own models (the paper suites, lrfree.bench.suites) ---------------------
class _ActResidual(nn.Module):
    def __init__(self, channels: int, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class ResidualCNN(nn.Module):
    """ADLER's residual CNN without BatchNorm with a chosen activation: conv 1->16, two
    residual blocks ``act(x + conv(act(conv(x))))`` each followed by a 2x2 max-pool, linear
    784->10 (``benchmarks/adler_fmnist.py``'s ``ResCNN``). With ``act="relu"`` it is
    ``tasks.residual_cnn``: the same parameters, created in the same order, so the same
    initialisation under one seed."""

    ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }

    def __init__(self, act: str = "relu", channels: int = 16) -> None:
        super().__init__()
        self.act = self.ACTS[act]
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.res1 = _ActResidual(channels, self.act)
        self.res2 = _ActResidual(channels, self.act)
        self.head = nn.Linear(channels * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.stem(x))
        h = torch.max_pool2d(self.res1(h), 2)
        h = torch.max_pool2d(self.res2(h), 2)
        return self.head(h.flatten(1))


def ffnn(*hidden: int) -> nn.Module:
    """The CAM-HD paper's feed-forward nets: 784 -> hidden... -> 10, ReLU."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
"""Fashion-MNIST's pixel mean and standard deviation (``benchmarks/camhd_fmnist.py``)."""


def _fmnist_standardised(cfg: BenchConfig) -> Split:
    """Fashion-MNIST images ``(N, 1, 28, 28)``, standardised as the CAM-HD experiments do."""
    d = load_fashion_mnist(cfg.data_dir, download=cfg.download)
    return Split(
        (d.x_train - FMNIST_MEAN) / FMNIST_STD,
        d.y_train,
        (d.x_test - FMNIST_MEAN) / FMNIST_STD,
        d.y_test,
    )


def _fmnist_images(cfg: BenchConfig) -> Split:
    return load_fashion_mnist(cfg.data_dir, download=cfg.download)


def _resnet(act: str) -> Callable[[], nn.Module]:
    def model() -> nn.Module:
        return ResidualCNN(act)

    return model


def _ffnn(*hidden: int) -> Callable[[], nn.Module]:
    def model() -> nn.Module:
        return ffnn(*hidden)

    return model


# (training, test) examples of the datasets (``Task.examples``)
_MNIST1D = (4000, 1000)
_FMNIST = (60000, 10000)
_GRAPH = (1, 1)  # one full-graph batch

# The measured costs: ``eval_seconds`` and ``load_seconds`` are CPU seconds of the process
# (``time.process_time``) from ``python -m lrfree.bench.measure`` (one torch thread) on this
# project's 2-core x86_64 CPU while other jobs ran, 2026-11-30 (stdlib-charlm: 2026-12-05, its
# comment). ``step_seconds`` (an AdamW step) was measured the same way, then fitted on
# 2026-12-05, with ``cost.FACTORS``, to the training seconds of the 872 stored full-suite runs
# (``python benchmarks/calibrate_costs.py``; ``lrfree.bench.cost`` says how). ``csbm-gcn``
# (development only) is not measured: cost's defaults. The two Planetoid GCNs' step and
# evaluation were then scaled by the ratios measured when their features moved to CSR form
# (2026-12-05, one thread, AdamW steps and no-grad forwards, old and new code back to back
# on the loaded machine: Cora 0.80 / 0.41, CiteSeer 0.79 / 0.27).

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "mnist1d-mlp",
            "MNIST-1D, MLP 40-100-100-10",
            _mnist1d,
            mnist1d_mlp,
            30,
            128,
            collapse=15.0,
            tags=("quick",),
            step_seconds=0.003238,
            eval_seconds=0.002,
            load_seconds=5.0,
            examples=_MNIST1D,
        ),
        Task(
            "mnist1d-cnn",
            "MNIST-1D, 3-conv 1-D CNN",
            _mnist1d,
            Mnist1dCNN,
            30,
            128,
            collapse=15.0,
            tags=("quick",),
            step_seconds=0.004611,
            eval_seconds=0.01,
            load_seconds=5.0,  # (generated once per process, shared with mnist1d-mlp)
            examples=_MNIST1D,
        ),
        Task(
            "fmnist-mlp",
            "Fashion-MNIST, DeepOBS MLP 784-1000-500-100-10",
            _fmnist(True),
            fmnist_mlp,
            10,
            128,
            collapse=15.0,
            tags=("full",),
            step_seconds=0.02544,
            eval_seconds=0.43,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "fmnist-2c2d",
            "Fashion-MNIST, DeepOBS 2c2d CNN",
            _fmnist(False),
            fmnist_2c2d,
            5,
            128,
            collapse=15.0,
            tags=("full",),
            train_subset=10000,
            step_seconds=0.3419,
            eval_seconds=10.33,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "fmnist-autoencoder",
            "Fashion-MNIST, LW paper autoencoder 784-...-30-...-784, "
            "sigmoid + BCE (metric: test loss)",
            _fmnist_reconstruction,
            fmnist_autoencoder,
            5,
            128,
            loss="bce_logits",
            metric="test_loss",
            collapse=0.68,
            tags=("full",),
            train_subset=20000,
            step_seconds=0.04451,
            eval_seconds=0.88,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "fmnist-tlr-mlp",
            "Fashion-MNIST, TLR paper MLP 784-1000-10",
            _fmnist(True),
            tlr_mlp,
            5,
            128,
            collapse=15.0,
            tags=("full",),
            step_seconds=0.009484,
            eval_seconds=0.22,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "fmnist-adalip-cnn",
            "Fashion-MNIST, AdaLip paper CNN conv32-conv64-pool-128-10",
            _fmnist(False),
            adalip_cnn,
            3,
            128,
            collapse=15.0,
            tags=("full",),
            train_subset=10000,
            step_seconds=0.3257,
            eval_seconds=13.30,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "fmnist-lenet5",
            "Fashion-MNIST, LeNet-5",
            _fmnist(False),
            lenet5,
            5,
            128,
            collapse=15.0,
            tags=("full",),
            train_subset=20000,
            step_seconds=0.01737,
            eval_seconds=0.70,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "fmnist-resnet",
            "Fashion-MNIST, small residual CNN without BatchNorm (ADLER)",
            _fmnist(False),
            residual_cnn,
            3,
            128,
            collapse=15.0,
            tags=("full",),
            train_subset=10000,
            step_seconds=0.09573,
            eval_seconds=7.29,
            load_seconds=1.6,
            examples=_FMNIST,
        ),
        Task(
            "cora-gcn",
            "Cora, 3-layer GCN (sparse matmul), full batch",
            _cora_load,
            _cora_model,
            200,
            0,
            loss="nll",
            collapse=35.0,
            tags=("full",),
            step_seconds=0.0392,  # fitted 0.049 and 0.015 times the measured ratios of the
            eval_seconds=0.0062,  # CSR features (0.80, 0.41; the comment above TASKS)
            load_seconds=0.3,
            examples=_GRAPH,
        ),
        Task(
            "citeseer-gcn",
            "CiteSeer, 3-layer GCN (sparse matmul), full batch",
            _citeseer_load,
            _citeseer_model,
            200,
            0,
            loss="nll",
            collapse=26.0,
            tags=("full",),
            step_seconds=0.0808,  # the fitted 0.102 and 0.030 times the CSR change's measured
            eval_seconds=0.0081,  # ratios (0.79, 0.27)
            load_seconds=0.7,
            examples=_GRAPH,
        ),
        Task(
            "csbm-gcn",
            "generated contextual SBM graph (lrfree.bench.data.csbm_graph), the 3-layer GCN "
            "of cora-gcn, full batch; development only (tag 'dev'), in no suite",
            _csbm_load,
            _csbm_model,
            200,
            0,
            loss="nll",
            collapse=25.0,  # the largest class is 22% of the nodes
            tags=("dev",),
            examples=_GRAPH,
        ),
        Task(
            "stdlib-charlm",
            "Python stdlib sources (20 modules), byte-level 2-layer transformer "
            "(metric: validation loss)",
            _stdlib_charlm,
            CharTransformer,
            1,
            16,
            metric="test_loss",
            # predicting the training bytes' unigram frequencies (add-one smoothed) costs
            # 3.05 nats per byte on the validation split (uniform over 256 bytes: 5.55): a
            # model at or above 3.0 has learned no more than which bytes are common
            collapse=3.0,
            tags=("full",),
            needs_math_attention=True,
            # measured 2026-12-05 with `python -m lrfree.bench.measure --tasks stdlib-charlm
            # --factor-tasks stdlib-charlm --steps 40` (one thread, loaded machine); on this
            # task an LW step (graph mode under the MATH attention backend) costs 13.9x
            # (SGD-LW) and 12.7x (AdamW-LW) an AdamW step, above cost.FACTORS' 7.84 / 5.50
            # from the MLPs: LW's runs here are estimated low (measured: 128 and 168 CPU
            # seconds for one epoch): step_factors below
            step_seconds=0.02165,
            eval_seconds=1.04,  # 783 validation windows of 64 bytes (same measurement)
            load_seconds=0.1,  # reading and hashing 0.5 MB of sources: 0.01 s measured
            examples=(7050, 783),  # windows of 64 bytes
            step_factors={"sgd-lw": 13.9, "adamw-lw": 12.7},
        ),
    ]
}


# measured 2026-12-05 09:12 UTC (CPU seconds, one thread, the 2-core machine under load) with
# ``python -m lrfree.bench.measure`` on these tasks: (step, evaluation, loading) seconds
_PAPER_COSTS: dict[str, tuple[float, float, float]] = {
    "fmnist-resnet-tanh": (0.08862, 3.584, 1.763),
    "fmnist-resnet-sigmoid": (0.09238, 4.123, 1.545),
    "fmnist-ffnn-100-100": (0.001491, 0.02993, 1.389),
    "fmnist-ffnn-1000-100": (0.00927, 0.1772, 0.8535),
    "fmnist-ffnn-1000-1000": (0.02305, 0.3578, 0.8338),
    "fmnist-lenet5-b256": (0.03229, 0.9158, 0.7842),
}


def _paper_task(name: str, description: str, load, model, batch_size: int) -> Task:
    step, ev, ld = (float(v) for v in _PAPER_COSTS[name])
    return Task(
        name,
        description,
        load,
        model,
        5,
        batch_size,
        collapse=15.0,
        tags=("paper",),
        step_seconds=step,
        eval_seconds=ev,
        load_seconds=ld,
        examples=_FMNIST,
    )


PAPER_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _paper_task(
            "fmnist-resnet-tanh",
            "Fashion-MNIST, ADLER's residual CNN without BatchNorm, tanh",
            _fmnist_images,
            _resnet("tanh"),
            128,
        ),
        _paper_task(
            "fmnist-resnet-sigmoid",
            "Fashion-MNIST, ADLER's residual CNN without BatchNorm, sigmoid",
            _fmnist_images,
            _resnet("sigmoid"),
            128,
        ),
        _paper_task(
            "fmnist-ffnn-100-100",
            "Fashion-MNIST (standardised), CAM-HD FFNN 784-100-100-10, batch 32",
            _fmnist_standardised,
            _ffnn(100, 100),
            32,
        ),
        _paper_task(
            "fmnist-ffnn-1000-100",
            "Fashion-MNIST (standardised), CAM-HD FFNN 784-1000-100-10, batch 64",
            _fmnist_standardised,
            _ffnn(1000, 100),
            64,
        ),
        _paper_task(
            "fmnist-ffnn-1000-1000",
            "Fashion-MNIST (standardised), CAM-HD FFNN 784-1000-1000-10, batch 128",
            _fmnist_standardised,
            _ffnn(1000, 1000),
            128,
        ),
        _paper_task(
            "fmnist-lenet5-b256",
            "Fashion-MNIST (standardised), LeNet-5, batch 256 (CAM-HD)",
            _fmnist_standardised,
            lenet5,
            256,
        ),
    ]
}
"""The papers' models that the bench's own tasks lack (tag ``paper``, in the paper suites of
``lrfree.bench.suites`` only; default sizes: 5 epochs, all data)."""
TASKS.update(PAPER_TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


QUICK = {"mnist1d-mlp": TaskSize(), "mnist1d-cnn": TaskSize()}
"""The quick suite (``lrfree bench``, ``make bench``): MNIST-1D, the task defaults."""

FULL = {
    "mnist1d-mlp": TaskSize(),
    "mnist1d-cnn": TaskSize(),
    "fmnist-mlp": TaskSize(5, 10000, 5000),
    "fmnist-2c2d": TaskSize(2, 3000, 1000),
    "fmnist-autoencoder": TaskSize(3, 5000, 2000),
    "fmnist-tlr-mlp": TaskSize(5, 10000, 5000),
    "fmnist-adalip-cnn": TaskSize(2, 2500, 1000),
    "fmnist-lenet5": TaskSize(3, 10000, 5000),
    "fmnist-resnet": TaskSize(2, 3000, 1000),
    "cora-gcn": TaskSize(),
    "citeseer-gcn": TaskSize(),
    "stdlib-charlm": TaskSize(),
}
"""The full suite (``lrfree bench --suite full``): every task, sized so that every lrfree
optimizer at its defaults, the AdamW and SGD-momentum grids, AdamW at 1e-3 and the five peers
(33 runs per task and seed) fit in 70 estimated minutes on a 2-core CPU (``lrfree bench
--suite full --estimate``; ``lrfree.bench.cost`` holds the measured costs)."""

LONG = {
    "fmnist-mlp": TaskSize(10, 60000, None),
    "fmnist-tlr-mlp": TaskSize(10, 60000, None),
    "fmnist-autoencoder": TaskSize(10, 60000, None),
    "fmnist-lenet5": TaskSize(10, 60000, None),
    "fmnist-2c2d": TaskSize(10, 10000, 2000),
    "fmnist-adalip-cnn": TaskSize(10, 10000, 2000),
    "fmnist-resnet": TaskSize(10, 10000, 2000),
}
"""The long suite (``lrfree bench --suite long``, ``make results-long``): the Fashion-MNIST
tasks at a budget closer to the papers' than the full suite's 2-5 epochs on 2.5k-10k images:
10 epochs on all 60,000 training images for the MLPs, LeNet-5 and the autoencoder (4,690
steps; the LW paper's runs had about 1000 curvature estimates, LW's rate EMA and the
hypergradient rates need that many steps to move), 10 epochs on 10,000 images for the three
CNNs (the 2c2d and AdaLip CNNs cost 0.3 s a step on this CPU: their full 60k would take about
a day per seed). Every optimizer of the full suite, 3 seeds, many hours on 2 cores: run it
seed by seed (``--seeds 1``, then 2, then 3), resumably, committing the records as it goes
(``benchmarks/commit_partial.sh``)."""

SUITES: dict[str, dict[str, TaskSize]] = {"quick": QUICK, "full": FULL, "long": LONG}


def task_loss(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task's training loss: NLL on log-probabilities, BCE with logits for
    reconstruction, else cross entropy (label ``-100`` ignored)."""
    if task.loss == "nll":
        return F.nll_loss(out, y, ignore_index=-100)
    if task.loss == "bce_logits":  # reconstruction: y is the target image in [0, 1]
        return F.binary_cross_entropy_with_logits(out, y)
    return F.cross_entropy(out, y, ignore_index=-100)
