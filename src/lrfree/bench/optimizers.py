"""Optimizers the benchmark knows, by name.

* baselines: torch's ``adamw`` (default lr 1e-3) and ``sgd-m`` (momentum 0.9); with ``@grid``
  (``adamw@grid``) a run per learning rate of the grid, reported as the best of the grid, whose
  whole cost counts;
* ``lrfree`` entries: each library optimizer at its defaults;
* peers (``prodigy``, ``dadapt-adam``, ``schedulefree-adamw``, ``prodigy-sf``, ``dog``,
  ``ldog``) when their
  PyPI packages are installed (``pip install lrfree[peers]``).

An entry builds the optimizer from ``model.named_parameters()``. What its training loop needs
beyond the default step (a closure, with graph mode when the optimizer's ``curvature_due()``
asks for it) the optimizer itself tells: an lrfree optimizer answers ``needs_outputs()`` (the
step is given the model's outputs: ``opt.backward(loss, out)``, then
``opt.step(outputs=out, targets=y)``) and ``second_order_due()`` (whether its next step
differentiates twice, so that the loop runs it under an attention backend that has a double
backward) from its rules' declarations (``Rule.feed``, ``Rule.curvature_due``). An entry for
an optimizer that offers neither may declare the same (``needs_outputs``, ``second_order``,
or a ``step`` of its own). ``lrfree.bench.loop`` reads both; no entry is special-cased by
name.

Any entry takes constructor arguments in brackets: ``adam-tlr[preset=paper]``,
``sgd-lw[update_every=1,beta_t=0.0]@grid``; values are Python literals (``ast.literal_eval``;
a bare word is a string). Such a spec is an entry of its own (its name is the canonical
spelling, arguments sorted), so its runs and records never mix with the plain entry's.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import lrfree

from .grids import GRID_ADAM_PAPERS, GRID_ADAMW, GRID_RMSPROP, GRID_SGD

__all__ = [
    "BENCH_OPTIMIZERS",
    "BenchOptimizer",
    "available",
    "base_grid",
    "default_optimizers",
    "lookup",
    "resolve",
    "split_specs",
]

Builder = Callable[..., torch.optim.Optimizer]
"""``build(model, lr, steps_per_epoch=N, loss=..., options={...})``: ``lr=None`` takes the
optimizer's default; ``options`` are extra constructor arguments (``NAME[k=v]`` specs)."""


@dataclass
class BenchOptimizer:
    """A benchmark entry: how to build the optimizer and what its training loop needs.

    ``needs_outputs``: the loop's step is ``opt.backward(loss, out)`` then
    ``opt.step(outputs=out, targets=y)`` instead of ``opt.step(closure)``.
    ``second_order(opt)``: whether ``opt``'s next step differentiates twice in a way its
    ``curvature_due()`` does not tell (the loop asks both, and runs such a step under the
    MATH attention backend on a task that needs it). ``step``: a training step of its own,
    ``step(task, model, opt, x, y) -> loss``, instead of the one ``needs_outputs`` selects.

    Example::

        >>> e = BenchOptimizer("sgd", lambda model, lr, **kw: None, "baseline", needs_outputs=True)
        >>> e.needs_outputs, e.second_order is None
        (True, True)
    """

    name: str
    build: Builder
    family: str  # "baseline", "lrfree", "peer"
    default_lr: float | None = None
    grid: tuple[float, ...] = ()
    requires: str | None = None  # a module that must be importable
    step: Callable[..., Any] | None = None
    note: str = ""
    needs_outputs: bool = False
    second_order: Callable[[torch.optim.Optimizer], bool] | None = None

    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


def _named(cls: type, **fixed: Any) -> Builder:
    sig = inspect.signature(cls).parameters

    def build(
        model: nn.Module,
        lr: float | None,
        steps_per_epoch: int = 1,
        loss: str = "cross_entropy",
        options: dict[str, Any] | None = None,
    ) -> torch.optim.Optimizer:
        kw = {**fixed, **(options or {})}
        if lr is not None:
            kw["lr"] = lr
        if "steps_per_epoch" in sig:  # TLR sets its window from the epoch length
            kw.setdefault("steps_per_epoch", steps_per_epoch)
        if "loss" in sig:  # ADLER's output-space Hessian must be the task's loss
            kw.setdefault("loss", _LOSS_NAMES[loss])
        return cls(model.named_parameters(), **kw)

    return build


_LOSS_NAMES = {"cross_entropy": "cross_entropy", "nll": "nll", "bce_logits": "bce_with_logits"}


def _torch(cls: type, **fixed: Any) -> Builder:
    def build(
        model: nn.Module, lr: float | None, options: dict[str, Any] | None = None, **_: Any
    ) -> torch.optim.Optimizer:
        kw = {**fixed, **(options or {})}
        if lr is not None:
            kw["lr"] = lr
        return cls(model.parameters(), **kw)

    return build


def _peer(module: str, cls: str, **fixed: Any) -> Builder:
    def build(
        model: nn.Module, lr: float | None, options: dict[str, Any] | None = None, **_: Any
    ) -> torch.optim.Optimizer:
        mod = importlib.import_module(module)
        kw = {**fixed, **(options or {})}
        if lr is not None:
            kw["lr"] = lr
        return getattr(mod, cls)(model.parameters(), **kw)

    return build


# the grids live in .grids (not part of any record's fingerprint: a grid decides which runs
# a plan holds, not what a run does)

BENCH_OPTIMIZERS: dict[str, BenchOptimizer] = {}


def register(entry: BenchOptimizer) -> None:
    BENCH_OPTIMIZERS[entry.name] = entry


register(
    BenchOptimizer(
        "adamw",
        _torch(torch.optim.AdamW),
        "baseline",
        1e-3,
        GRID_ADAMW,
        note="torch AdamW, weight_decay 0.01",
    )
)
register(
    BenchOptimizer(
        "sgd-m",
        _torch(torch.optim.SGD, momentum=0.9),
        "baseline",
        1e-2,
        GRID_SGD,
        note="torch SGD, momentum 0.9",
    )
)
# the papers' own baselines (AdaLip, CAM-HD: torch Adam and RMSprop; the paper suites)
register(
    BenchOptimizer(
        "adam",
        _torch(torch.optim.Adam),
        "baseline",
        1e-3,
        GRID_ADAM_PAPERS,
        note="torch Adam (no weight decay), the AdaLip and CAM-HD papers' baseline",
    )
)
register(
    BenchOptimizer(
        "rmsprop",
        _torch(torch.optim.RMSprop),
        "baseline",
        1e-3,
        GRID_RMSPROP,
        note="torch RMSprop (alpha 0.99), the AdaLip paper's baseline",
    )
)
register(
    BenchOptimizer(
        "composed-adamw",
        _named(lrfree.Composed, direction="adamw"),
        "lrfree",
        note="lrfree.Composed(direction='adamw', rule='constant'): AdamW parity",
    )
)
# every named lrfree optimizer at its defaults (a class not exported yet is skipped)
LRFREE_NAMES = {
    "sgd-lw": "SGDLW",
    "adamw-lw": "AdamWLW",
    "sgd-tlr": "SGDTLR",
    "adam-tlr": "AdamTLR",
    "adalip": "AdaLip",
    "rmslip": "RMSLip",
    "adamlip": "AdamLip",
    "adalip-u": "AdaLipU",
    "rmslip-u": "RMSLipU",
    "adamlip-u": "AdamLipU",
    "adler": "ADLER",
    "sgd-hd": "SGDHD",
    "sgdn-hd": "SGDNHD",
    "adam-hd": "AdamHD",
    "sgd-camhd": "SGDCAMHD",
    "sgdn-camhd": "SGDNCAMHD",
    "adam-camhd": "AdamCAMHD",
    "auto": "Auto",
}


for _name, _cls in LRFREE_NAMES.items():
    if hasattr(lrfree, _cls):
        register(
            BenchOptimizer(
                _name,
                _named(getattr(lrfree, _cls)),
                "lrfree",
                note=f"lrfree.{_cls}()",
            )
        )

# learning-rate-free peers (optional extra)
register(
    BenchOptimizer(
        "prodigy",
        _peer("prodigyopt", "Prodigy", lr=1.0),
        "peer",
        requires="prodigyopt",
        note="prodigyopt.Prodigy(lr=1)",
    )
)
register(
    BenchOptimizer(
        "dadapt-adam",
        _peer("dadaptation", "DAdaptAdam", lr=1.0),
        "peer",
        requires="dadaptation",
        note="dadaptation.DAdaptAdam(lr=1)",
    )
)
register(
    BenchOptimizer(
        "schedulefree-adamw",
        _peer("schedulefree", "AdamWScheduleFree", lr=2.5e-3),
        "peer",
        requires="schedulefree",
        note="schedulefree.AdamWScheduleFree, lr 2.5e-3",
    )
)
register(
    BenchOptimizer(
        "prodigy-sf",
        _peer("prodigyplus", "ProdigyPlusScheduleFree", lr=1.0),
        "peer",
        requires="prodigyplus",
        note="prodigy-plus-schedule-free ProdigyPlusScheduleFree(lr=1)",
    )
)
register(
    BenchOptimizer(
        "dog", _peer("dog", "DoG", lr=1.0), "peer", requires="dog", note="dog-optimizer DoG(lr=1)"
    )
)
register(
    BenchOptimizer(
        "ldog",
        _peer("dog", "LDoG", lr=1.0),
        "peer",
        requires="dog",
        note="dog-optimizer LDoG(lr=1)",
    )
)


# the tuned grid each named optimizer is held to: the grid of its base optimizer
_SGD_BASED = {"sgd-lw", "sgd-tlr", "adalip", "adalip-u", "adler", "sgd-hd", "sgdn-hd"}
_SGD_BASED |= {"sgd-camhd", "sgdn-camhd", "sgd-m"}


def base_grid(spec: str) -> str:
    """The grid a spec is compared with: ``"sgd-m@grid"`` for the SGD / momentum / Nesterov
    based optimizers, ``"adamw@grid"`` for the Adam / AdamW / RMSprop based ones and peers.

    Example::

        >>> base_grid("adalip[momentum=0.9]"), base_grid("adamw-lw")
        ('sgd-m@grid', 'adamw@grid')
    """
    name = split_spec(spec)[0].partition("[")[0]
    return "sgd-m@grid" if name in _SGD_BASED else "adamw@grid"


def default_optimizers(suite: str) -> list[str]:
    """The optimizer specs a suite runs when ``--optimizers`` is not given: AdamW at 1e-3,
    the AdamW and SGD-momentum grids, every named lrfree optimizer at its defaults, and
    (``full`` suite) every installed peer.

    Example::

        >>> specs = default_optimizers("full")
        >>> specs[:3], "adamw-lw" in specs
        (['adamw', 'adamw@grid', 'sgd-m@grid'], True)
    """
    if suite not in ("quick", "full", "long"):
        raise ValueError(f"unknown suite {suite!r} (quick, full or long)")
    lrfree_named = [
        n for n, e in BENCH_OPTIMIZERS.items() if e.family == "lrfree" and n != "composed-adamw"
    ]
    specs = ["adamw", "adamw@grid", "sgd-m@grid"] + (lrfree_named or ["composed-adamw"])
    if suite in ("full", "long"):
        specs += [n for n, e in BENCH_OPTIMIZERS.items() if e.family == "peer" and e.available()]
    return specs


_OPTIONS = re.compile(r"^([A-Za-z0-9_.-]+)\[(.*)\]$")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text):
            return text  # a bare word: a string (preset=paper)
        raise ValueError(f"cannot read the option value {text!r} (a Python literal)") from None


def parse_options(text: str) -> dict[str, Any]:
    """``"update_every=32,betas=(0.9,0.99)"`` -> ``{"update_every": 32, "betas": (0.9, 0.99)}``.

    Commas inside brackets belong to the value::

        >>> parse_options("update_every=32,betas=(0.9, 0.99),preset=paper")
        {'update_every': 32, 'betas': (0.9, 0.99), 'preset': 'paper'}
    """
    out: dict[str, Any] = {}
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    for part in (x.strip() for x in parts):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"expected key=value in the options, got {part!r}")
        out[key.strip()] = _literal(value.strip())
    return out


def lookup(name: str) -> BenchOptimizer:
    """The entry named ``name``: a registered one, or ``base[k=v,...]`` derived from one.

    Example::

        >>> e = lookup("adam-tlr[update_every=32, preset=paper]")
        >>> e.name, e.family
        ("adam-tlr[preset='paper',update_every=32]", 'lrfree')
    """
    if name in BENCH_OPTIMIZERS:
        return BENCH_OPTIMIZERS[name]
    m = _OPTIONS.match(name)
    if m is None or m.group(1) not in BENCH_OPTIMIZERS:
        base = m.group(1) if m else name
        raise ValueError(f"Unknown optimizer {base!r}; known: {sorted(BENCH_OPTIMIZERS)}")
    base = BENCH_OPTIMIZERS[m.group(1)]
    options = parse_options(m.group(2))
    canon = f"{base.name}[" + ",".join(f"{k}={v!r}" for k, v in sorted(options.items())) + "]"
    build = base.build

    def derived(model: nn.Module, lr: float | None, **kw: Any) -> torch.optim.Optimizer:
        return build(model, lr, **kw, options=options)

    return dataclasses.replace(base, name=canon, build=derived, note=f"{base.note} with {options}")


def available() -> list[str]:
    return [n for n, e in BENCH_OPTIMIZERS.items() if e.available()]


def split_spec(spec: str) -> tuple[str, str]:
    """``"sgd-lw[beta_t=0.0]@grid"`` -> ``("sgd-lw[beta_t=0.0]", "grid")``."""
    if spec.endswith("]"):
        return spec, ""
    head, at, suffix = spec.rpartition("@")
    return (head, suffix) if at else (spec, "")


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs; commas inside brackets belong to a spec.

    Example::

        >>> split_specs("adamw@grid, sgd-lw[update_every=1,beta_t=0.0]")
        ['adamw@grid', 'sgd-lw[update_every=1,beta_t=0.0]']
    """
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [x for x in out if x]


def resolve(spec: str) -> list[tuple[BenchOptimizer, float | None, bool]]:
    """``"adamw@grid"`` -> one (entry, lr, is_grid) per grid rate; ``"adamw"`` -> default."""
    name, suffix = split_spec(spec)
    entry = lookup(name)
    if suffix == "grid":
        if not entry.grid:
            raise ValueError(f"{name!r} has no learning-rate grid")
        return [(entry, lr, True) for lr in entry.grid]
    if suffix:
        return [(entry, float(suffix), False)]
    return [(entry, entry.default_lr, False)]
