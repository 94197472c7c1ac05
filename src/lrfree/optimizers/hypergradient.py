"""Hypergradient descent (HD) and combined adaptive multi-level HD (CAM-HD).

HD (``SGDHD``, ``SGDNHD``, ``AdamHD``; rule ``"hypergradient"``): before each step, every
block's multiplier descends the exact one-step hypergradient; in the paper's additive form
(``form="additive"``, ``preset="paper"``)::

    dL/dalpha_b = -<g_t, s_{t-1}>_b,     s_{t-1} = lr * u_{t-1}
    alpha_b    <- max(0, alpha_b - hypergrad_lr / lr^2 * dL/dalpha_b)
    p          <- p - lr * alpha_b * d_t

``u`` is the previous *update direction* (the momentum buffer, the Nesterov combination, the
bias-corrected Adam direction; plus ``weight_decay * p`` for decoupled decay).
There ``hypergrad_lr`` is in the paper's absolute units (the effective rate ``lr * alpha``
moves by ``hypergrad_lr * g.u`` per step, as in Baydin's code); ``group["lr"]`` is never
written, so schedulers keep working, and the rate is kept ``>= 0`` (Baydin's code lets it go
negative).

``form="multiplicative"`` (all six classes; the classes' default, ours) replaces the additive
step, which is in absolute rate units and so not scale-free, by a normalised one::

    alpha_b <- alpha_b * clamp(1 + hypergrad_lr * cos(g_t, s_{t-1})_b, 1/2, 2)

where ``hypergrad_lr`` is unit-free (the largest relative change of the rate per step): the
trajectory of the rate does not depend on the scale of the loss, and it moves geometrically
from any ``lr``.

Defaults of the classes (they train without a rate search): ``form="multiplicative"``,
``hypergrad_lr=0.05`` (at most 5% rate change per step); the SGD classes start from
``lr=1e-2``, and ``SGDHD`` / ``SGDCAMHD`` use heavy-ball ``momentum=0.9``; the Adam classes
start from ``lr=1e-3``. ``preset="paper"`` gives the papers' settings: the additive form,
``lr=1e-3``, ``hypergrad_lr`` 1e-3 (SGD) or 1e-8 (Adam), plain SGD for ``SGDHD`` /
``SGDCAMHD``. docs/presets.md lists every difference and why; ``Composed(rule=...)`` keeps
the papers' values.

CAM-HD (``SGDCAMHD``, ``SGDNCAMHD``, ``AdamCAMHD``; rule ``"cam-hd"``): one rate per block at
each of ``levels`` (finest first), each descending its own hypergradient (the element-wise
``-g * s`` summed over its blocks, Eq. 8) at rate ``hypergrad_lr * K_j`` (``K_j``: the number
of rates at level ``j``); the applied rate is ``sum_j gamma_j alpha_j``, and the weights
``gamma`` descend ``dL/dgamma`` at rate ``delta`` and are renormalised to sum to 1 (Alg. 1).
``decay_rate = r > 0`` applies ``kappa = exp(-r t) alpha + (1 - exp(-r t)) alpha_inf``.
See ``lrfree.rules.hypergradient`` and docs/hypergradient.md.

Papers: A. G. Baydin, R. Cornish, D. Martinez Rubio, M. Schmidt, F. Wood, "Online Learning
Rate Adaptation with Hypergradient Descent", ICLR 2018; "Adaptive Hierarchical Hyper-gradient
Descent" (CAM-HD), ICLR 2021 submission.

Example::

    >>> import torch, lrfree
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> opt = lrfree.AdamCAMHD(model.named_parameters(), lr=1e-2)  # multiplicative, 0.05
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for _ in range(5):
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     opt.step()
    >>> sorted(opt.effective_lr())
    ['0', '2']
    >>> round(float(opt.gammas().sum()), 6)
    1.0

Every class is a drop-in for its torch base (the same closure / backward loop)::

    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> params = lambda: model.named_parameters()
    >>> for opt in (lrfree.SGDHD(params(), lr=1e-2), lrfree.SGDNHD(params(), lr=1e-2),
    ...             lrfree.AdamHD(params()), lrfree.SGDCAMHD(params(), lr=1e-2),
    ...             lrfree.SGDNCAMHD(params(), lr=1e-2)):
    ...     _ = opt.step(closure)
    ...     _ = opt.step(closure)
    ...     assert all(v >= 0 for v in opt.effective_lr().values())
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..blocks import GRANULARITIES
from ..directions.sgd import sgd_direction
from ..presets import Named, reasons
from ..rules.hypergradient import default_gammas

__all__ = ["SGDCAMHD", "SGDHD", "SGDNCAMHD", "SGDNHD", "AdamCAMHD", "AdamHD"]

_LEVELS = ("layer", "global")

_WHY: dict[str, str] = {
    "lr": (
        "the starting rate: the multiplicative step moves it geometrically, 1e-2 starts mid-grid"
    ),
    "momentum": (
        "heavy-ball momentum as the SGD-momentum baseline: without it SGD-HD / SGD-CAMHD "
        "stayed 12.7-13.6 points behind it on mnist1d-mlp (multiplicative form; 32.6-35.6 in "
        "the paper's additive form)"
    ),
    "hypergrad_lr": "unit-free in the multiplicative form: at most 5% rate change per step",
    "form": (
        "the additive step is in absolute rate units and not scale-free: from 1e-3 the rate "
        "moved ~5e-5 per step (Adam-HD's 1e-8: not at all); the multiplicative step moves it "
        "from any lr"
    ),
}
"""Why each default differs from the paper (shared by the classes of this module)."""


class _CAMReadout(Named):
    def gammas(self, group_index: int = 0) -> Tensor:
        """The current combination weights of a group (one per level, finest first; a copy)."""
        params = self.param_groups[group_index]["params"]
        g = self.state.get(params[0], {}).get("cam-hd.gamma") if params else None
        if g is None:  # before the first step: the initial weights
            group = self.param_groups[group_index]
            return torch.tensor(group["gammas"] or default_gammas(len(group["levels"])))
        return g.detach().clone()


class SGDHD(Named):
    """SGD (torch.optim.SGD's arguments) with a hypergradient-learned step size (SGD-HD).

    ``momentum=0``: ``d = g``; ``momentum>0``: ``d = m`` (torch's buffer, with
    ``dampening``); ``nesterov=True``: ``d = g + momentum * m`` (SGDN-HD). The hypergradient
    uses the previous update direction ``u_{t-1} = d_{t-1}`` (Baydin's code).

    Defaults: ``lr=1e-2``, ``momentum=0.9``, ``form="multiplicative"``, ``hypergrad_lr=0.05``.
    ``preset="paper"`` (Baydin et al.): ``lr=1e-3``, ``momentum=0``, ``form="additive"``,
    ``hypergrad_lr=1e-3``. See docs/presets.md.

    Args:
        params: ``model.named_parameters()`` (layer / filter blocks need names) or groups.
        lr, momentum, dampening, weight_decay, nesterov, maximize: torch.optim.SGD's (except
            the defaults ``lr=1e-2``, ``momentum=0.9``; the paper: 1e-3 and 0).
        hypergrad_lr: beta. Multiplicative form: unit-free, the largest relative change of
            the rate per step (default 0.05: up to 5% per step). Additive form: in the
            paper's absolute units (1e-3: Baydin et al.'s and the CAM-HD paper's SGD setting,
            the paper preset; Baydin's code defaults to 1e-6).
        form: ``"multiplicative"`` (the default, ours; scale-free:
            ``alpha <- alpha * clamp(1 + beta cos(g, u), 1/2, 2)`` per block, the rate moves
            geometrically from any ``lr``) or ``"additive"`` (the paper's:
            ``alpha_abs <- alpha_abs + beta g.u``, absolute units, not scale-free).
        blocks: which parameters share a rate (``"global"``, the paper's HD; or ``"layer"``,
            ``"tensor"``, ``"filter"``, ``"element"``).
        decay_rate, alpha_inf: the decay ``kappa = tau alpha + (1 - tau) alpha_inf``,
            ``tau = exp(-decay_rate * t)`` (0: off).
        preset: ``"default"`` (the values above) or ``"paper"`` (an argument given
            explicitly wins). See docs/presets.md.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Baydin et al.'s run.sh: alpha_0 1e-3, beta 1e-3; the additive form
            "lr": 1e-3,
            "momentum": 0.0,
            "hypergrad_lr": 1e-3,
            "form": "additive",
            "decay_rate": 0.0,
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "lr", "momentum", "hypergrad_lr", "form")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        preset: str = "default",
        maximize: bool = False,
        hypergrad_lr: float = 0.05,
        form: str = "multiplicative",
        blocks: str = "global",
        decay_rate: float = 0.0,
        alpha_inf: float = 1.0,
    ) -> None:
        direction, extra = sgd_direction(momentum, dampening, nesterov, type(self).__name__)
        super().__init__(
            params,
            direction=direction,
            rule="hypergradient",
            blocks=blocks,
            lr=lr,
            weight_decay=weight_decay,
            maximize=maximize,
            hypergrad_lr=hypergrad_lr,
            form=form,
            decay_rate=decay_rate,
            alpha_inf=alpha_inf,
            **extra,
        )


class SGDNHD(SGDHD):
    """SGD with Nesterov momentum and a hypergradient-learned step size (SGDN-HD).

    ``d = g + momentum * m``; otherwise as ``SGDHD`` (``0 < momentum < 1``, default 0.9 as
    the paper's). Defaults: ``lr=1e-2``, ``form="multiplicative"``, ``hypergrad_lr=0.05``;
    ``preset="paper"``: ``lr=1e-3``, ``form="additive"``, ``hypergrad_lr=1e-3``
    (docs/presets.md).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Baydin et al.'s run.sh: alpha_0 1e-3, beta 1e-3; the additive form
            "lr": 1e-3,
            "momentum": 0.9,
            "hypergrad_lr": 1e-3,
            "form": "additive",
            "decay_rate": 0.0,
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "lr", "hypergrad_lr", "form")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        preset: str = "default",
        maximize: bool = False,
        hypergrad_lr: float = 0.05,
        form: str = "multiplicative",
        blocks: str = "global",
        decay_rate: float = 0.0,
        alpha_inf: float = 1.0,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=True,
            maximize=maximize,
            hypergrad_lr=hypergrad_lr,
            form=form,
            blocks=blocks,
            decay_rate=decay_rate,
            alpha_inf=alpha_inf,
        )


class AdamHD(Named):
    """Adam (torch.optim.Adam's arguments) with a hypergradient-learned step size (Adam-HD).

    The hypergradient uses the previous bias-corrected Adam direction
    ``u_{t-1} = m_hat / (sqrt(v_hat) + eps)`` (plus ``weight_decay * p`` with
    ``decoupled_weight_decay=True``, i.e. AdamW).

    Args:
        params: ``model.named_parameters()`` (layer / filter blocks need names) or groups.
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: torch's Adam.
        hypergrad_lr: beta. Multiplicative form (the default): unit-free, as ``SGDHD``'s
            (default 0.05). Additive form: in the paper's absolute units (1e-8: Baydin's code
            default and the CAM-HD paper's LeNet / ResNet setting, the paper preset; the
            paper's FFNN setting is 1e-7).
        form, blocks, decay_rate, alpha_inf, preset: as ``SGDHD`` (default
            ``form="multiplicative"``; ``preset="paper"``: ``form="additive"``,
            ``hypergrad_lr=1e-8``; docs/presets.md).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Baydin et al.'s code: alpha_0 1e-3, beta 1e-8; the additive form
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "hypergrad_lr": 1e-8,
            "form": "additive",
            "decay_rate": 0.0,
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "hypergrad_lr", "form")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        preset: str = "default",
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        hypergrad_lr: float = 0.05,
        form: str = "multiplicative",
        blocks: str = "global",
        decay_rate: float = 0.0,
        alpha_inf: float = 1.0,
    ) -> None:
        super().__init__(
            params,
            direction="adamw" if decoupled_weight_decay else "adam",
            rule="hypergradient",
            blocks=blocks,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            hypergrad_lr=hypergrad_lr,
            form=form,
            decay_rate=decay_rate,
            alpha_inf=alpha_inf,
        )


class SGDCAMHD(_CAMReadout):
    """SGD (torch.optim.SGD's arguments) with CAM-HD step sizes (SGD-CAM-HD).

    The optimizer's blocks are the finest level, ``levels[0]``. ``gammas()`` reads the
    current combination weights.

    Args:
        params: ``model.named_parameters()`` (layer / filter levels need names) or groups.
        lr, momentum, dampening, weight_decay, nesterov, maximize: torch.optim.SGD's (except
            the defaults ``lr=1e-2``, ``momentum=0.9``; the paper: 1e-3 and 0).
        hypergrad_lr: beta. Multiplicative form: unit-free (relative change per step, as
            ``SGDHD``'s; default 0.05), the same ``beta`` at every level. Additive form: in
            the paper's absolute units (1e-3: the paper's LeNet-5 setting, the paper preset;
            1e-6 for its ResNets); level ``j`` uses ``beta * K_j``.
        form: ``"multiplicative"`` (the default, ours): every level's rate
            ``alpha_{j,b} <- alpha_{j,b} * clamp(1 + beta cos(g, u)_b, 1/2, 2)`` over its block
            while its weight ``gamma_j > 0``; or ``"additive"`` (the paper's). The gamma update
            is the same in both forms.
        levels: rate levels, finest first: ``("layer", "global")`` (default), ``("filter",
            "global")`` for CNNs, ``("element", "layer", "global")`` (three levels).
        gammas: initial combination weights, one per level, summing to 1 (None: (0.2, 0.8)
            for two levels, (0.3, 0.3, 0.4) for three, uniform otherwise).
        delta: learning rate of the weights (0.03, the paper's LeNet-5 setting).
        decay_rate, alpha_inf: as ``SGDHD`` (the paper used ``decay_rate=0.002`` for LeNet-5).
        preset: ``"default"`` (the values above) or ``"paper"`` (CAM-HD Tab. 1: ``lr=1e-3``,
            ``momentum=0``, ``form="additive"``, ``hypergrad_lr=1e-3``; an argument given
            explicitly wins). See docs/presets.md.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # CAM-HD Tab. 1 (LeNet-5): beta 1e-3, delta 0.03; the additive form
            "lr": 1e-3,
            "momentum": 0.0,
            "hypergrad_lr": 1e-3,
            "delta": 0.03,
            "form": "additive",
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "lr", "momentum", "hypergrad_lr", "form")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        preset: str = "default",
        maximize: bool = False,
        hypergrad_lr: float = 0.05,
        form: str = "multiplicative",
        levels: tuple[str, ...] = _LEVELS,
        gammas: tuple[float, ...] | None = None,
        delta: float = 0.03,
        decay_rate: float = 0.0,
        alpha_inf: float = 1.0,
    ) -> None:
        direction, extra = sgd_direction(momentum, dampening, nesterov, type(self).__name__)
        super().__init__(
            params,
            direction=direction,
            rule="cam-hd",
            blocks=_finest(levels),
            lr=lr,
            weight_decay=weight_decay,
            maximize=maximize,
            hypergrad_lr=hypergrad_lr,
            form=form,
            levels=levels,
            gammas=gammas,
            delta=delta,
            decay_rate=decay_rate,
            alpha_inf=alpha_inf,
            **extra,
        )


class SGDNCAMHD(SGDCAMHD):
    """SGD with Nesterov momentum and CAM-HD step sizes (SGDN-CAM-HD); as ``SGDCAMHD``.

    Defaults: ``lr=1e-2``, ``momentum=0.9``, ``form="multiplicative"``, ``hypergrad_lr=0.05``;
    ``preset="paper"``: ``lr=1e-3``, ``form="additive"``, ``hypergrad_lr=1e-3``
    (docs/presets.md).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # CAM-HD Tab. 1 (LeNet-5 values): beta 1e-3, delta 0.03; additive
            "lr": 1e-3,
            "momentum": 0.9,
            "hypergrad_lr": 1e-3,
            "delta": 0.03,
            "form": "additive",
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "lr", "hypergrad_lr", "form")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        preset: str = "default",
        maximize: bool = False,
        hypergrad_lr: float = 0.05,
        form: str = "multiplicative",
        levels: tuple[str, ...] = _LEVELS,
        gammas: tuple[float, ...] | None = None,
        delta: float = 0.03,
        decay_rate: float = 0.0,
        alpha_inf: float = 1.0,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=True,
            maximize=maximize,
            hypergrad_lr=hypergrad_lr,
            form=form,
            levels=levels,
            gammas=gammas,
            delta=delta,
            decay_rate=decay_rate,
            alpha_inf=alpha_inf,
        )


class AdamCAMHD(_CAMReadout):
    """Adam (torch.optim.Adam's arguments) with CAM-HD step sizes (Adam-CAM-HD).

    Args:
        params: ``model.named_parameters()`` (layer / filter levels need names) or groups.
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: torch's Adam.
        hypergrad_lr: beta. Multiplicative form (the default): unit-free, as ``SGDCAMHD``'s
            (default 0.05). Additive form: in the paper's absolute units (1e-8: the paper's
            LeNet-5 / ResNet setting, the paper preset; 1e-7 for its FFNNs); level ``j``
            uses ``beta * K_j``.
        form, levels, gammas, delta, decay_rate, alpha_inf, preset: as ``SGDCAMHD`` (default
            ``form="multiplicative"``; ``preset="paper"``: ``form="additive"``,
            ``hypergrad_lr=1e-8``; docs/presets.md).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # CAM-HD Tab. 1 (LeNet-5): Adam 1e-3, beta 1e-8, delta 0.03; additive
            "lr": 1e-3,
            "betas": (0.9, 0.999),
            "hypergrad_lr": 1e-8,
            "delta": 0.03,
            "form": "additive",
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = reasons(_WHY, "hypergrad_lr", "form")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        preset: str = "default",
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        hypergrad_lr: float = 0.05,
        form: str = "multiplicative",
        levels: tuple[str, ...] = _LEVELS,
        gammas: tuple[float, ...] | None = None,
        delta: float = 0.03,
        decay_rate: float = 0.0,
        alpha_inf: float = 1.0,
    ) -> None:
        super().__init__(
            params,
            direction="adamw" if decoupled_weight_decay else "adam",
            rule="cam-hd",
            blocks=_finest(levels),
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            hypergrad_lr=hypergrad_lr,
            form=form,
            levels=levels,
            gammas=gammas,
            delta=delta,
            decay_rate=decay_rate,
            alpha_inf=alpha_inf,
        )


def _finest(levels: Any) -> Any:
    """The finest level (the optimizer's blocks); a bad ``levels`` is reported by the rule."""
    if isinstance(levels, (tuple, list)) and levels and isinstance(levels[0], str):
        return levels[0] if levels[0] in GRANULARITIES else "layer"
    return "layer"
