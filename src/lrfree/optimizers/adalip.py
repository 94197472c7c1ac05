"""The AdaLip family: ``AdaLip``, ``RMSLip``, ``AdamLip`` and the -U variants.

Per block (each parameter tensor by default, as the authors' code; ``blocks="layer"`` gives
the paper's per-layer rates) the rate is ``A_t = lr * sigma_t * S_t`` with::

    S_t = gamma S_{t-1} + (1 - gamma) ||g_{t-1}|| / (||g_t - g_{t-1}|| + c_t),   S_0 = 1

``sigma_t = 1`` (``schedule="constant"``, the default: the authors' code and the paper's
Fig. 8) or ``1 / sqrt(t)`` (``schedule="sqrt"``, the paper's Algorithms 2-4 and Theorem 1).
The first step uses the plain rate. The -U variants (Appendix C) replace ``g`` by the
applied step ``u_{t-1}`` and the tentative step ``u_hat_t`` at the base rate.
``c_schedule="theoretical"`` uses ``c_t`` of Eq. A.3, which makes ``A_t`` non-increasing.
The rule is not learning-rate-free: under mini-batch noise ``S`` stays near
``1/sqrt(2)``, so ``lr`` sets the scale; ``AdaLip`` / ``AdaLipU`` therefore default to
``lr=0.1`` (the paper sweeps 0.005-1.3), not torch SGD's 1e-3, and to heavy-ball
``momentum=0.9`` (the paper's experiments: ``momentum=0``, ``preset="paper"``).
``RMSLip`` / ``AdamLip`` and their -U variants keep the paper's settings by default.
docs/presets.md lists every difference and why.
See ``lrfree.rules.lipschitz`` and docs/adalip.md.

Paper: K. Ioannou, T. Tagaris, A. Stafylopatis, "AdaLip: An Adaptive Learning Rate Method per
Layer for Stochastic Optimization" (Neural Processing Letters, 2023).

Example::

    >>> import torch, lrfree
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> opt = lrfree.AdamLip(model.named_parameters(), lr=1e-2)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for _ in range(5):
    ...     opt.zero_grad()
    ...     torch.nn.functional.cross_entropy(model(x), y).backward()
    ...     _ = opt.step()
    >>> sorted(opt.effective_lr())  # one rate per tensor
    ['0.bias', '0.weight', '2.bias', '2.weight']

The other directions and the -U variants (Appendix C) take the same keywords::

    >>> ps = list(model.named_parameters())
    >>> family = [
    ...     lrfree.AdaLip(ps, lr=0.1, momentum=0.9, blocks="layer"),
    ...     lrfree.RMSLip(ps, lr=1e-3, schedule="sqrt", c_schedule="theoretical"),
    ...     lrfree.AdaLipU(ps, lr=0.1),
    ...     lrfree.RMSLipU(ps, lr=1e-3),
    ...     lrfree.AdamLipU(ps, lr=1e-3),
    ... ]
    >>> [g["rule"] for o in family for g in o.param_groups]
    ['lipschitz', 'lipschitz', 'lipschitz-u', 'lipschitz-u', 'lipschitz-u']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from ..directions.sgd import sgd_direction
from ..presets import Named

__all__ = ["AdaLip", "AdaLipU", "AdamLip", "AdamLipU", "RMSLip", "RMSLipU"]


class AdaLip(Named):
    """SGD (torch.optim.SGD; ``momentum > 0``: heavy ball) with AdaLip rates (Algorithm 2).

    Defaults: ``lr=0.1``, ``momentum=0.9`` (heavy ball; the authors' documented knob);
    ``preset="paper"``: ``momentum=0``, plain SGD as in the paper's experiments
    (docs/presets.md).

    Args:
        params: ``model.named_parameters()`` (readable names; ``blocks="layer"`` needs them),
            ``model.parameters()`` or param groups.
        lr: ``alpha_0``, default 0.1 (not torch SGD's 1e-3): the rule only multiplies ``lr``
            by ``S``, which mini-batch noise keeps near ``1/sqrt(2)``, so ``lr`` must be a
            working SGD rate; 0.1 is mid-grid in the paper's SGD list (0.005 ... 1.3) and
            diverged in none of the measured runs (docs/adalip.md). momentum: torch's
            (default 0.9; the paper: 0). weight_decay: torch's.
        gamma: EMA factor of S, ``0 <= gamma <= 1`` (1: plain SGD). c: ``c`` (or ``c_1``).
        schedule: ``"constant"`` or ``"sqrt"``. c_schedule: ``"constant"`` or
            ``"theoretical"``. blocks: ``"tensor"``, ``"layer"``, ``"global"``, ...
        preset: ``"default"`` or ``"paper"`` (``momentum=0``; an argument given explicitly
            wins). See docs/presets.md.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"momentum": 0.0, "gamma": 0.8, "c": 1e-8, "schedule": "constant"}
    }
    PRESET_WHY: ClassVar[dict[str, str]] = {
        "momentum": (
            "mini-batch noise pins S near 1/sqrt(2), so without momentum AdaLip is plain SGD "
            "at ~0.07 (fmnist-2c2d 54.2 -> 71.3 with heavy-ball 0.9, the authors' documented "
            "knob)"
        ),
    }

    _rule = "lipschitz"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        preset: str = "default",
        gamma: float = 0.8,
        c: float = 1e-8,
        schedule: str = "constant",
        c_schedule: str = "constant",
        blocks: str = "tensor",
    ) -> None:
        direction, extra = sgd_direction(momentum, owner=type(self).__name__)
        super().__init__(
            params,
            direction=direction,
            rule=self._rule,
            blocks=blocks,
            lr=lr,
            weight_decay=weight_decay,
            gamma=gamma,
            c=c,
            schedule=schedule,
            c_schedule=c_schedule,
            **extra,
        )


class RMSLip(Named):
    """RMSprop (torch.optim.RMSprop) with AdaLip rates (Algorithm 3).

    ``alpha`` is torch's smoothing constant; ``eps``, ``weight_decay``, ``momentum``,
    ``centered`` are torch's. AdaLip's arguments as ``AdaLip``.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # the authors' code: RMSprop at 0.01 (the paper's grid: 3e-4 .. 1e-2)
            "lr": 1e-2,
            "momentum": 0.0,
            "gamma": 0.8,
            "c": 1e-8,
            "schedule": "constant",
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = {
        "lr": (
            "at 0.01 RMSLip fell 25.2 points below the AdamW grid on fmnist-2c2d; of 1e-3 / "
            "3e-3 / 1e-2, 3e-3 had the smallest worst gap over RMSLip and RMSLip-U (1e-3: "
            "RMSLip-U 15.3 below on mnist1d-mlp); no value brought either within 3 points"
        ),
    }

    _rule = "lipschitz"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        preset: str = "default",
        gamma: float = 0.8,
        c: float = 1e-8,
        schedule: str = "constant",
        c_schedule: str = "constant",
        blocks: str = "tensor",
    ) -> None:
        super().__init__(
            params,
            direction="rmsprop",
            rule=self._rule,
            blocks=blocks,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            gamma=gamma,
            c=c,
            schedule=schedule,
            c_schedule=c_schedule,
        )


class AdamLip(Named):
    """Adam (torch.optim.Adam; ``decoupled_weight_decay=True``: AdamW) with AdaLip rates
    (Algorithm 4). ``betas``, ``eps``, ``weight_decay``, ``amsgrad`` are torch's."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"betas": (0.9, 0.999), "gamma": 0.8, "c": 1e-8, "schedule": "constant"}
    }

    _rule = "lipschitz"

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
        decoupled_weight_decay: bool = False,
        gamma: float = 0.8,
        c: float = 1e-8,
        schedule: str = "constant",
        c_schedule: str = "constant",
        blocks: str = "tensor",
    ) -> None:
        super().__init__(
            params,
            direction="adamw" if decoupled_weight_decay else "adam",
            rule=self._rule,
            blocks=blocks,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            gamma=gamma,
            c=c,
            schedule=schedule,
            c_schedule=c_schedule,
        )


class AdaLipU(AdaLip):
    """AdaLip-U (Appendix C, Algorithm 5): the estimate uses the last applied step and the
    current step at the base rate instead of gradients. Arguments and defaults as ``AdaLip``
    (``momentum=0.9``; ``preset="paper"``: 0)."""

    _rule = "lipschitz-u"


class RMSLipU(RMSLip):
    """RMSLip-U (Appendix C). Arguments as ``RMSLip``."""

    _rule = "lipschitz-u"


class AdamLipU(AdamLip):
    """AdamLip-U (Appendix C). Arguments as ``AdamLip``."""

    _rule = "lipschitz-u"
