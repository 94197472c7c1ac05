"""Fashion-MNIST with PyTorch Lightning and an lrfree optimizer.

``configure_optimizers`` returns an lrfree optimizer and a per-step scheduler; the scheduler
scales ``lr`` and the optimizer's adapted multiplier ``alpha`` sits on top of it, so the rate
each layer uses is ``lr * alpha`` (``opt.effective_lr()``). A callback logs those rates and
the rule's diagnostics through the Trainer's loggers: ``lrfree.integrations.LightningRateLogger``
(Lightning's own ``LearningRateMonitor`` shows ``group["lr"]`` only, not the rate used).

``--optimizer Auto`` (schedule-free averaging) trains the parameters at ``y`` and should be
evaluated at the average ``x``: ``lrfree.integrations.LightningAveraging`` calls
``opt.eval()`` before every validation (and test, predict) loop and ``opt.train()`` after it
and at each training epoch's start. It is always in the callbacks here: for an optimizer
without averaging both calls are no-ops.

Curvature rules (``SGDLW``, ``AdamWLW``, ``ADLER``) need the gradient pass to keep what
their curvature steps read. Lightning's automatic optimization calls ``backward`` itself, so
this example uses **manual optimization** by default, through lrfree's one curvature entry
(``opt.backward``) with Lightning's own backward::

    opt.zero_grad()
    lrfree.integrations.backward(opt, loss, logits, backward_fn=self.manual_backward)
    opt.step()
    sched.step()

It is ``manual_backward(loss)`` for every rule without curvature and on the steps in between,
so the same ``training_step`` serves every lrfree optimizer and pays for the graph only when
it is used (``create_graph=True`` for LW's Hessian steps, ``retain_graph=True`` with the
outputs kept for the rules that read them: ``ADLER``, ``SGDLW(curvature="ggn")``, whose
extra inputs come from ``output_inputs`` below).

``--automatic`` uses Lightning's automatic optimization instead: Lightning then passes its
closure to ``step()``, which curvature rules use for finite-difference estimates (see
``lrfree.rules.layerwise``).

Run::

    python examples/lightning_fmnist.py --optimizer SGDLW --opt-kwargs '{"update_every": 10}' \
        --train-subset 10000 --epochs 1 --out lightning-out

Fashion-MNIST: the four idx files (``*-ubyte.gz``) are read from ``--data-dir``,
``$LRFREE_DATA`` (or its ``fashion-mnist/``), ``/usr/share/datasets/fashion-mnist`` (Debian's
``dataset-fashion-mnist``) or ``~/.cache/lrfree/fashion-mnist``. ``--download`` fetches them
with checksums through the benchmark's loader, ``lrfree.bench.data`` (the optional ``bench``
extra: ``pip install lrfree[bench]``); nothing else here needs it. ``--tiny`` needs no files:
a few steps on random images (a smoke test: ``tests/test_examples.py`` runs it)::

    python examples/lightning_fmnist.py --tiny --optimizer AdamTLR \
        --opt-kwargs '{"update_every": 2}'
    python examples/lightning_fmnist.py --tiny --optimizer Auto
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrfree
from lrfree.integrations import LightningAveraging, LightningRateLogger

FMNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def make_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """An lrfree optimizer by class name (``"SGDLW"``, ``"AdamHD"``, ``"Composed"``, ...)."""
    cls = getattr(lrfree, name, None)
    if name not in lrfree.__all__ or not (
        isinstance(cls, type) and issubclass(cls, lrfree.Composed)
    ):
        known = sorted(
            n
            for n in lrfree.__all__
            if isinstance(getattr(lrfree, n), type)
            and issubclass(getattr(lrfree, n), lrfree.Composed)
        )
        raise ValueError(f"Invalid optimizer: {name!r} (expected one of {known})")
    return cls(params, **kwargs)


def output_inputs(
    opt: torch.optim.Optimizer, logits: torch.Tensor, y: torch.Tensor
) -> dict[str, Any]:
    """Keyword inputs for ``step()`` of rules that read the network outputs: ADLER
    (``outputs``, ``targets``: its Gauss-Newton model of the loss) and the layer-wise rule
    with ``curvature="ggn"`` (``outputs``, ``loss_fn``). Empty for every other rule; when not
    empty, ``lrfree.integrations.backward`` keeps the graph on curvature steps."""
    groups = opt.param_groups
    if any(g["rule"] == "adler" for g in groups):
        return {"outputs": logits, "targets": y}
    if any(g["rule"] == "layerwise" and g.get("curvature") == "ggn" for g in groups):
        return {"outputs": logits, "loss_fn": lambda z: F.cross_entropy(z, y)}
    return {}


class FMNISTClassifier(L.LightningModule):
    """An MLP 784-hidden-10 (ReLU) trained with an lrfree optimizer.

    Args:
        optimizer: an lrfree optimizer class name.
        opt_kwargs: its keyword arguments (``lr``, ``update_every``, ...).
        hidden: the hidden width.
        total_steps: the cosine schedule's length (``T_max``).
        manual: manual optimization with graph mode (default) or Lightning's automatic one.
    """

    def __init__(
        self,
        optimizer: str = "SGDLW",
        opt_kwargs: dict[str, Any] | None = None,
        hidden: int = 128,
        total_steps: int = 1000,
        manual: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )
        self.automatic_optimization = not manual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> dict[str, Any]:
        # named_parameters(): layer-wise rules need module names ("1", "3" here)
        opt = make_optimizer(
            self.hparams.optimizer, self.model.named_parameters(), **(self.hparams.opt_kwargs or {})
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, self.hparams.total_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.automatic_optimization:
            loss = F.cross_entropy(self(x), y)
        else:  # graph mode: build the double-backward graph only when a curvature step is due
            opt = self.optimizers()
            sched = self.lr_schedulers()
            opt.zero_grad()  # set_to_none: also frees a graph kept in .grad
            logits = self(x)
            loss = F.cross_entropy(logits, y)
            extra = output_inputs(opt.optimizer, logits, y)
            outputs = extra.pop("outputs", None)  # the graph is kept only on curvature steps
            lrfree.integrations.backward(
                opt, loss, outputs, backward_fn=self.manual_backward, **extra
            )
            opt.step()
            sched.step()
        self.log("train_loss", loss.detach(), prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())


def find_fashion_mnist(data_dir: str | None = None) -> Path | None:
    """The first folder holding the four Fashion-MNIST idx files, or None."""
    bases = [b for b in (data_dir, os.environ.get("LRFREE_DATA")) if b]
    candidates = [p for b in bases for p in (Path(b), Path(b) / "fashion-mnist")]
    candidates += [
        Path("/usr/share/datasets/fashion-mnist"),
        Path.home() / ".cache" / "lrfree" / "fashion-mnist",
    ]
    return next((c for c in candidates if all((c / f).is_file() for f in FMNIST_FILES)), None)


def read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte idx file (gzip) as a uint8 tensor."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def fashion_mnist(
    data_dir: str | None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images (N, 1, 28, 28) in [0, 1], labels int64."""
    root = find_fashion_mnist(data_dir)
    if root is None and download:
        try:
            from lrfree.bench.data import load_fashion_mnist
        except ImportError as e:  # numpy & co. are the bench extra's
            raise SystemExit(
                f"--download uses lrfree.bench.data: pip install lrfree[bench] ({e})"
            ) from e
        load_fashion_mnist(download=True)  # into ~/.cache/lrfree, checksums verified
        root = find_fashion_mnist(data_dir)
    if root is None:
        raise SystemExit(
            "Fashion-MNIST not found: pass --data-dir DIR (the four *-ubyte.gz files), "
            "`apt-get install dataset-fashion-mnist`, --download, or --tiny (random images)"
        )
    x_train, y_train, x_test, y_test = (read_idx(root / f) for f in FMNIST_FILES)
    return (
        x_train.unsqueeze(1).float() / 255,
        y_train.long(),
        x_test.unsqueeze(1).float() / 255,
        y_test.long(),
    )


def random_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 28x28 images whose label (10 classes) is the brightest of 10 stripes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=gen)
    y = x[:, 0, :20].reshape(n, 10, -1).mean(2).argmax(1)
    return x, y


def loaders(
    train_subset: int | None,
    test_subset: int | None,
    batch_size: int,
    download: bool = False,
    data_dir: str | None = None,
    tiny: bool = False,
) -> tuple[DataLoader, DataLoader]:
    if tiny:
        (x_train, y_train), (x_test, y_test) = random_images(256, 0), random_images(128, 1)
    else:
        x_train, y_train, x_test, y_test = fashion_mnist(data_dir, download)
    if train_subset is not None:
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    if test_subset is not None:
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]
    gen = torch.Generator().manual_seed(0)
    train = DataLoader(
        TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, generator=gen
    )
    test = DataLoader(TensorDataset(x_test, y_test), batch_size=1000)
    return train, test


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizer", default="SGDLW", help="an lrfree optimizer class name")
    ap.add_argument("--opt-kwargs", default="{}", help="its keyword arguments, as JSON")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    ap.add_argument("--train-subset", type=int, default=10000, help="first N training images")
    ap.add_argument("--test-subset", type=int, default=None, help="first N test images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--automatic", action="store_true", help="Lightning's automatic optimization")
    ap.add_argument("--logger", choices=["tensorboard", "csv"], default="tensorboard")
    ap.add_argument(
        "--log-every", type=int, default=10, help="steps between log records (rates included)"
    )
    ap.add_argument("--out", default="lightning-out", help="folder for the logger's files")
    ap.add_argument("--data-dir", default=None, help="a folder with the four *-ubyte.gz files")
    ap.add_argument(
        "--download", action="store_true", help="fetch Fashion-MNIST if missing (bench extra)"
    )
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="smoke test: 256 random images, batch 32, 5 steps (unless --max-steps)",
    )
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch_size = 32
        args.max_steps = 5 if args.max_steps < 0 else args.max_steps
        args.log_every = 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train, validate the final model, and return the metrics (``train_loss``, ``val_acc``,
    the last ``lrfree/...`` read-out)."""
    args = parse_args(argv)
    L.seed_everything(args.seed, verbose=False)
    train, test = loaders(
        args.train_subset,
        args.test_subset,
        args.batch_size,
        args.download,
        args.data_dir,
        args.tiny,
    )
    steps = len(train) * args.epochs if args.max_steps < 0 else args.max_steps
    module = FMNISTClassifier(
        args.optimizer, json.loads(args.opt_kwargs), args.hidden, steps, not args.automatic
    )
    if args.logger == "tensorboard":
        logger: Any = L.pytorch.loggers.TensorBoardLogger(args.out, name="lightning_fmnist")
    else:
        logger = L.pytorch.loggers.CSVLogger(args.out, name="lightning_fmnist")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        accelerator="cpu",
        devices=1,
        logger=logger,
        # the rate each layer used (lr * alpha), at Lightning's logging cadence; validation at
        # the averaged iterate x for optimizers with averaging (Auto), a no-op for the others
        callbacks=[LightningRateLogger(), LightningAveraging()],
        log_every_n_steps=args.log_every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train, test)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for k, v in trainer.validate(module, test, verbose=False)[0].items():  # the final model
        metrics[k] = float(v)
    metrics["global_step"] = float(trainer.global_step)
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, sort_keys=True))
