"""``SGDLW`` and ``AdamWLW``: layer-wise Hessian step sizes (Bahamou & Goldfarb, Alg. 2 and 3).

Per layer ``l`` (weight and bias of one module), every ``update_every`` steps::

    rho_l   = d_l . g_l,        delta_l = sqrt(d_l^T H_ll d_l)
    t_l    <- beta_t t_l + (1 - beta_t) rho_l / (L (rho_l + delta_l) delta_l)
    p_l    <- p_l - lr * t_l * d_l                 (lr = 1: the paper's step)

``H_ll`` is the diagonal block of the mini-batch Hessian (``curvature="hessian"``) or of the
Gauss-Newton matrix (``curvature="ggn"``). See ``lrfree.rules.layerwise`` for warm-up, bias
correction, safeguards and how the curvature reaches the optimizer, and docs/layerwise.md.

Defaults: ``update_every=1``, ``beta_t=0`` -- a fresh estimate every step, no EMA (one
curvature pass per step). ``preset="paper"`` gives the paper's ``update_every=20``,
``beta_t=0.99`` (an estimate every 20 steps, smoothed); docs/presets.md lists the
differences and why. ``Composed(rule="layerwise")`` keeps the paper's values.

Paper: A. Bahamou, D. Goldfarb, "Layer-wise Adaptive Step-Sizes for Stochastic First-Order
Methods for Deep Learning".

Example (graph mode through the one curvature entry, ``opt.backward(loss)`` in place of
``loss.backward()``: the graph is built only on the steps that need it; with
``update_every=5`` one step in five, with the default ``1`` every step; the older
``loss.backward(create_graph=opt.curvature_due())`` is the same)::

    >>> import torch, lrfree
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> opt = lrfree.AdamWLW(model.named_parameters(), update_every=5)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for _ in range(10):
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     opt.backward(loss)
    ...     opt.step()
    >>> sorted(opt.effective_lr())
    ['0', '2']

Closure mode (no graph: finite differences of gradients on curvature steps)::

    >>> opt = lrfree.SGDLW(model.named_parameters(), update_every=5)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)  # BatchNorm stats are restored; model= only for DDP no_sync
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from ..directions.sgd import sgd_direction
from ..presets import Named, reasons

__all__ = ["SGDLW", "AdamWLW"]

_WHY: dict[str, str] = {
    "update_every": (
        "estimates from the initial point are 30-400x the later ones and an EMA carries them "
        "(SGD-LW autoencoder diverged 3/3); a fresh estimate every step never collapsed on "
        "the development tasks (docs/presets.md)"
    ),
    "beta_t": (
        "with a fresh estimate every step, no EMA (Alg. 1 as written): the EMA at 0.99 holds "
        "only 1 - 0.99^n of the rate after n estimates"
    ),
}
"""Why each default differs from the paper (shared by the classes of this module)."""


class SGDLW(Named):
    """SGD with heavy-ball momentum (``m = momentum * m + g``) and layer-wise step sizes.

    ``momentum=0`` gives plain SGD-LW (the setting of the paper's Theorem 1). Weight decay is
    torch's (``g + weight_decay * p`` enters the momentum buffer), so ``d`` already contains it.

    Defaults: ``lr=1``, ``momentum=0.9``, ``update_every=1``, ``beta_t=0`` (a fresh estimate
    every step, no EMA: one curvature pass per step). ``preset="paper"``: ``update_every=20``,
    ``beta_t=0.99`` (Alg. 2; pass the paper's warm-up, 10 epochs of steps, as
    ``warmup_steps``). See docs/presets.md.

    Args:
        params: ``model.named_parameters()`` (layer blocks need the names) or param groups.
        lr: multiplies the computed rate (1: the paper's step; a scheduler may scale it).
        momentum: heavy-ball factor ``0 <= momentum < 1``.
        weight_decay: L2 penalty added to the gradient.
        beta_t: EMA factor of the rates (default 0: no EMA; the paper: 0.99).
            update_every: ``T``, steps between estimates (default 1; the paper: 20).
            warmup_steps / warmup_lr: steps taken at a fixed rate while the estimates warm
            up. curvature: ``"hessian"`` or ``"ggn"``. blocks: ``"layer"``, ``"tensor"`` or
            ``"global"``.
        bias_correction: divide the EMA by ``1 - beta_t^n``. raw_cap: applied rate at most the
            latest estimate (docs/layerwise.md, "Safeguards").
        preset: ``"default"`` (these values) or ``"paper"`` (``update_every=20``,
            ``beta_t=0.99``; an argument given explicitly wins). See docs/presets.md.
        **kwargs: further ``layerwise`` rule options (``fd_scheme``).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Alg. 2 and Sec. 5 (warm-up: pass warmup_steps = 10 epochs of steps)
            "momentum": 0.9,
            "beta_t": 0.99,
            "update_every": 20,
            "bias_correction": False,
            "raw_cap": False,
            "curvature": "hessian",
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "update_every", "beta_t")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        preset: str = "default",
        beta_t: float = 0.0,
        update_every: int = 1,
        warmup_steps: int = 0,
        warmup_lr: float = 1e-3,
        curvature: str = "hessian",
        blocks: str = "layer",
        bias_correction: bool = False,
        raw_cap: bool = False,
        **kwargs: Any,
    ) -> None:
        direction, extra = sgd_direction(momentum, owner=type(self).__name__)
        super().__init__(
            params,
            direction=direction,
            rule="layerwise",
            blocks=blocks,
            lr=lr,
            weight_decay=weight_decay,
            beta_t=beta_t,
            update_every=update_every,
            warmup_steps=warmup_steps,
            warmup_lr=warmup_lr,
            curvature=curvature,
            bias_correction=bias_correction,
            raw_cap=raw_cap,
            **extra,
            **kwargs,
        )


class AdamWLW(Named):
    """AdamW with layer-wise step sizes (Algorithm 3).

    ``d = m_hat / (sqrt(v_hat) + eps)``; the decoupled decay is part of the step, so ``rho``
    and ``delta`` use ``d + weight_decay * p`` as the paper does.

    Defaults: ``lr=1``, ``update_every=1``, ``beta_t=0`` (a fresh estimate every step, no
    EMA); ``preset="paper"``: ``update_every=20``, ``beta_t=0.99`` (Alg. 3). See
    docs/presets.md.

    Args:
        params: ``model.named_parameters()`` (layer blocks need the names) or param groups.
        lr: multiplies the computed rate (1: the paper's step).
        betas, eps: Adam's. weight_decay: decoupled decay ``gamma``.
        beta_t, update_every, warmup_steps, warmup_lr: as ``SGDLW``.
        curvature, blocks, bias_correction, raw_cap, preset: as ``SGDLW``.
        **kwargs: further ``layerwise`` rule options (``fd_scheme``).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Alg. 3 and Sec. 5 (warm-up: pass warmup_steps = 10 epochs of steps)
            "betas": (0.9, 0.999),
            "beta_t": 0.99,
            "update_every": 20,
            "bias_correction": False,
            "raw_cap": False,
            "curvature": "hessian",
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "update_every", "beta_t")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        preset: str = "default",
        beta_t: float = 0.0,
        update_every: int = 1,
        warmup_steps: int = 0,
        warmup_lr: float = 1e-3,
        curvature: str = "hessian",
        blocks: str = "layer",
        bias_correction: bool = False,
        raw_cap: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            direction="adamw",
            rule="layerwise",
            blocks=blocks,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            beta_t=beta_t,
            update_every=update_every,
            warmup_steps=warmup_steps,
            warmup_lr=warmup_lr,
            curvature=curvature,
            bias_correction=bias_correction,
            raw_cap=raw_cap,
            **kwargs,
        )
