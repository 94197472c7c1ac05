"""The optimizer registry the generic suite runs over (in the spirit of torch's OptimizerInfo).

Every optimizer the library exports registers once, in a module of ``tests/specs/`` (one per
rule, so rules land independently), with a list ``SPECS`` of ``OptimSpec``. The generic tests
(``test_generic.py``) then check, for each: loss goes down, bit-for-bit resume, weights-only
save/load, schedulers, group isolation, missing gradients, bf16 rates, deepcopy, every
error message listed in ``errors``, and the edges of the drop-in contract: older torch
state-dict formats (float ``step``, missing group keys), load pre- and post-hooks, refused
loads (another algorithm, torch's other optimizers, reordered / renamed / unnamed
parameters), unknown param-group keys, complex parameters, a sparse gradient in a later
group, and a NaN / negative / inf / tensor ``lr``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["OPTIM_DB", "ErrorCase", "OptimSpec", "default_step", "make_problem"]


@dataclass
class ErrorCase:
    kwargs: dict[str, Any]
    exc: type[Exception]
    match: str


@dataclass
class OptimSpec:
    """One registered optimizer configuration.

    ``factory(params, **kwargs)`` builds it; ``params`` is ``model.named_parameters()`` unless
    ``named=False``. ``step(model, opt, x, y)`` runs one training step and returns the loss
    (default: a standard closure). ``kwargs`` should make amortised rules update within the
    few steps the generic tests run (e.g. ``update_every=2``).
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    kwargs: dict[str, Any] = field(default_factory=dict)
    errors: list[ErrorCase] = field(default_factory=list)
    step: Callable[..., Any] | None = None
    named: bool = True
    steps: int = 40  # steps of the loss-decrease check
    loss_ratio: float = 0.7  # final loss must be below this fraction of the initial loss
    has_weight_decay: bool = True

    def build(self, model: torch.nn.Module, **overrides: Any) -> torch.optim.Optimizer:
        params = model.named_parameters() if self.named else model.parameters()
        return self.factory(params, **{**self.kwargs, **overrides})

    def wrap(self, named: list[tuple[str, torch.Tensor]]) -> list[Any]:
        """Parameters as this spec takes them: ``(name, tensor)`` pairs, or tensors."""
        return list(named) if self.named else [p for _, p in named]

    def run_step(self, model: torch.nn.Module, opt: torch.optim.Optimizer, x, y) -> Any:
        return (self.step or default_step)(model, opt, x, y)

    def __repr__(self) -> str:  # pytest ids
        return self.name


def default_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x, y) -> Any:
    """A standard closure step; graph mode when the optimizer asks for it."""
    due = getattr(opt, "curvature_due", lambda: False)()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=due)
        return loss

    return opt.step(closure)


def make_problem(seed: int = 0, dtype: torch.dtype = torch.float32, dropout: float | None = None):
    """A small classification problem: 3 well-separated classes in 6-D, a tanh MLP
    (``dropout``: a Dropout layer after the tanh, so the RNG state matters)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 6, generator=g) * 2.0
    y = torch.arange(96) % 3
    x = centers[y] + 0.5 * torch.randn(96, 6, generator=g)
    torch.manual_seed(seed)
    mid = [] if dropout is None else [torch.nn.Dropout(dropout)]
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), *mid, torch.nn.Linear(16, 3)
    )
    return model.to(dtype), x.to(dtype), y


def _load_specs() -> list[OptimSpec]:
    specs: list[OptimSpec] = []
    for path in sorted((Path(__file__).parent / "specs").glob("*.py")):
        mod_spec = importlib.util.spec_from_file_location(f"optim_specs_{path.stem}", path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        specs.extend(module.SPECS)
    names = [s.name for s in specs]
    assert len(names) == len(set(names)), f"duplicate spec names: {names}"
    return specs


OPTIM_DB: list[OptimSpec] = _load_specs()
