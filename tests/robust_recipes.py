"""One recipe per exported optimizer (``lrfree.__all__``), for the robustness tests.

Each exported optimizer class is driven by its first spec in ``tests/specs/`` (the generic
suite's registry: hyperparameters that make the rates move within a few steps, and the
documented training-loop protocol: graph mode for LW, ``step(outputs=...)`` for ADLER);
``Composed`` by the first ``composed-*`` spec. ``windowed``: the optimizers whose rates are
estimated every ``T`` steps (TLR windows, LW intervals), overridden to ``T = 3`` where a test
needs a mid-window state.
"""

from __future__ import annotations

import inspect

import torch

import lrfree
from optim_db import OPTIM_DB, OptimSpec, make_problem

__all__ = ["EXPORTED", "WINDOWED", "dropout_problem", "exported_classes", "noisy_problem"]


def exported_classes() -> list[type]:
    return [
        obj
        for name in lrfree.__all__
        if inspect.isclass(obj := getattr(lrfree, name)) and issubclass(obj, torch.optim.Optimizer)
    ]


def _recipes() -> dict[str, OptimSpec]:
    out: dict[str, OptimSpec] = {}
    for cls in exported_classes():
        if cls is lrfree.Composed:
            spec = next(s for s in OPTIM_DB if s.name.startswith("composed-"))
        else:
            spec = next((s for s in OPTIM_DB if s.factory is cls), None)
            assert spec is not None, f"{cls.__name__} has no spec in tests/specs/"
        out[cls.__name__] = spec
    return out


EXPORTED: dict[str, OptimSpec] = _recipes()
WINDOWED = {"SGDTLR", "AdamTLR", "SGDLW", "AdamWLW"}


def dropout_problem(seed: int = 0, dtype: torch.dtype = torch.float32):
    """``optim_db.make_problem`` with a dropout layer (the RNG matters for a resume)."""
    return make_problem(seed, dtype, dropout=0.1)


def noisy_problem(seed: int = 0, dtype: torch.dtype = torch.float32):
    """Overlapping classes with 10 % flipped labels: the loss has a positive minimum, so
    50 full-batch steps do not drive it to 0 (on ``make_problem``'s separable data the
    curvature rates of TLR and ADLER keep growing as the gradients vanish, and in float32
    their loss is back above its start by step 50)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 6, generator=g)
    y = torch.arange(96) % 3
    x = centers[y] + torch.randn(96, 6, generator=g)
    flip = torch.rand(96, generator=g) < 0.1
    y = torch.where(flip, (y + 1) % 3, y)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return model.to(dtype), x.to(dtype), y
