"""``SGDTLR`` and ``AdamTLR``: the Newton trainable learning rate (Retsinas et al.).

Every ``K`` steps the multiplier of each block (one global rate by default; ``blocks="layer"``
or ``"tensor"`` give the paper's future-work per-layer rates) takes a damped Newton step on
``L(w - alpha * u)`` (Eq. 8)::

    alpha <- alpha * clamp(1 + gamma * <g_{k-1}, g_k> / <g_{k-1}, g_{k-1} - g_k>,
                           min_factor, max_factor)      (unchanged if the denominator <= 0)

where ``g_k`` is the displacement per unit of rate over window ``k`` (weight change over the
last ``K`` steps divided by the rate used: it contains momentum, weight decay, Adam's
scaling). ``K = max(1, round(p * steps_per_epoch))`` or ``update_every``; exactly one of
``steps_per_epoch`` and ``update_every`` must be given. ``lr`` is the paper's initial rate
``alpha_0``; the effective rate is ``lr * alpha`` (``effective_lr()``).
Safeguards (ours): ``window_floor`` (windows at least ``window_floor`` times the direction's
memory), ``max_alpha`` (a cap on the multiplier) and ``newton_base="window"`` (the factor
multiplies the multiplier whose steps it measured). The classes' defaults train without a
rate search: ``window_floor=3`` and ``max_alpha=10`` are on (``newton_base`` stays the
paper's ``"current"``), and ``SGDTLR`` uses heavy-ball ``momentum=0.9``. ``preset="paper"``
gives the paper's settings (plain SGD for ``SGDTLR``, every safeguard off); docs/presets.md
lists every difference and why. ``Composed(rule="tlr")`` keeps the paper's values.
See ``lrfree.rules.tlr`` and docs/tlr.md.

Paper: G. Retsinas, G. Sfikas, P. Filntisis, P. Maragos, "Newton-based Trainable Learning
Rate" (code: georgeretsi/NTLR; its defaults gamma=0.2, p=1/3 differ; the paper's are used).

Example::

    >>> import torch, lrfree
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> opt = lrfree.SGDTLR(model.parameters(), lr=0.1, steps_per_epoch=10)  # momentum 0.9
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for _ in range(6):  # K = max(round(0.2 * 10), 3 / (1 - 0.9)) = 30 (window_floor)
    ...     opt.zero_grad()
    ...     torch.nn.functional.cross_entropy(model(x), y).backward()
    ...     _ = opt.step()
    >>> list(opt.effective_lr())
    ['global']

The paper's rule (plain SGD, safeguards off; ``K = round(0.2 * 10) = 2``: the rate moves
from step 4 on)::

    >>> opt = lrfree.SGDTLR(model.parameters(), lr=0.1, steps_per_epoch=10, preset="paper")
    >>> opt.param_groups[0]["window_floor"], opt.param_groups[0]["max_alpha"]
    (0.0, inf)

Adam with one TLR rate per layer, the window given directly in steps::

    >>> opt = lrfree.AdamTLR(model.named_parameters(), lr=1e-3, update_every=50, blocks="layer")
    >>> opt
    AdamTLR(direction='adam', rule='tlr', blocks='layer', groups=1)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from ..directions.sgd import sgd_direction
from ..presets import Named

__all__ = ["SGDTLR", "AdamTLR"]


class SGDTLR(Named):
    """Heavy-ball SGD (torch's ``momentum``, default 0.9) or plain SGD (``momentum=0``, the
    paper's) with a TLR rate.

    Defaults: ``lr=0.1``, ``momentum=0.9``, ``window_floor=3`` (``K >= 30`` at momentum 0.9),
    ``max_alpha=10``; ``preset="paper"``: ``momentum=0``, ``window_floor=0``,
    ``max_alpha=inf`` (docs/presets.md).

    Args:
        params: ``model.parameters()``, ``model.named_parameters()`` (``blocks="layer"`` needs
            names) or param groups.
        lr: the initial rate ``alpha_0`` (the paper's experiments span 1e-1 .. 1e-6).
        momentum: torch's ``0 <= momentum < 1`` (default 0.9; the paper: 0).
            weight_decay: L2 added to the gradient.
        gamma: Newton damping in ``(0, 1]``. p: window as a fraction of an epoch.
        steps_per_epoch: batches per epoch (``K = max(1, round(p * steps_per_epoch))``).
        update_every: ``K`` directly (instead of ``steps_per_epoch``). With momentum keep
            ``K`` well above ``1 / (1 - momentum)`` (see ``AdamTLR``).
        blocks: ``"global"`` (the paper), ``"layer"`` or ``"tensor"`` (a rate per block).
        max_factor, min_factor: clamp of one update's factor.
        window_floor: safeguard, ``K >= ceil(window_floor / (1 - momentum))`` (default ``3``:
            windows ~3x longer than the momentum's memory; ``0``: off, the paper).
        newton_base: ``"current"`` (the paper: the factor multiplies the current multiplier)
            or ``"window"`` (it multiplies the multiplier of the window whose steps produced
            the measured gradient change: the exact line search on a quadratic for ``K = 1``).
        max_alpha: safeguard, cap on the multiplier: ``lr * alpha <= lr * max_alpha``
            (default ``10``; ``inf``: off, the paper).
        preset: ``"default"`` (these values) or ``"paper"`` (the paper's settings; an
            argument given explicitly wins). See docs/presets.md.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Sec. 2-3 (gamma, p, the factor clamp); plain SGD; safeguards off
            "momentum": 0.0,
            "gamma": 0.33,
            "p": 0.2,
            "max_factor": 100.0,
            "window_floor": 0.0,
            "newton_base": "current",
            "max_alpha": float("inf"),
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = {
        "momentum": (
            "plain SGD-TLR collapsed on 3 of 9 development runs; heavy-ball momentum as the "
            "SGD-momentum baseline (the authors' code uses 0.8)"
        ),
        "window_floor": (
            "windows shorter than ~3 / (1 - momentum) steps correlate through the momentum "
            "and every factor exceeds 1: K >= 30 at momentum 0.9"
        ),
        "max_alpha": "a cap on the compounded rate: at most 10x the initial rate",
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        preset: str = "default",
        gamma: float = 0.33,
        p: float = 0.2,
        steps_per_epoch: int | None = None,
        update_every: int | None = None,
        blocks: str = "global",
        max_factor: float = 100.0,
        min_factor: float = 0.01,
        window_floor: float = 3.0,
        newton_base: str = "current",
        max_alpha: float = 10.0,
    ) -> None:
        direction, extra = sgd_direction(momentum, owner=type(self).__name__)
        super().__init__(
            params,
            direction=direction,
            rule="tlr",
            blocks=blocks,
            lr=lr,
            weight_decay=weight_decay,
            gamma=gamma,
            p=p,
            steps_per_epoch=steps_per_epoch,
            update_every=update_every,
            max_factor=max_factor,
            min_factor=min_factor,
            window_floor=window_floor,
            newton_base=newton_base,
            max_alpha=max_alpha,
            **extra,
        )


class AdamTLR(Named):
    """Adam (torch's, L2 ``weight_decay`` in the gradient) with a TLR rate.

    ``decoupled_weight_decay=True`` gives AdamW (the decay then enters the window vectors).
    Other arguments as ``SGDTLR``; ``betas``, ``eps``, ``amsgrad`` are torch's.

    Choose ``K`` much longer than Adam's memory ``1 / (1 - beta1)`` (e.g. ``K >= 30`` for
    ``beta1 = 0.9``): consecutive windows share that memory, which raises every factor even on
    pure noise (x1.66 per window at ``K = 6``; docs/tlr.md). On short epochs ``p = 0.2`` does
    not give such a ``K``; ``window_floor=3`` (the default) enforces
    ``K >= ceil(3 / (1 - beta1))`` (``window_floor`` uses ``beta1`` as the memory).

    Defaults: ``lr=1e-3``, ``window_floor=3``, ``max_alpha=10``; ``preset="paper"``:
    ``window_floor=0``, ``max_alpha=inf`` (the paper's rule, safeguards off;
    docs/presets.md).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {  # Sec. 2-3 (gamma, p, the factor clamp); safeguards off
            "betas": (0.9, 0.999),
            "gamma": 0.33,
            "p": 0.2,
            "max_factor": 100.0,
            "window_floor": 0.0,
            "newton_base": "current",
            "max_alpha": float("inf"),
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = {
        "window_floor": (
            "windows shorter than Adam's memory ~1 / (1 - beta1) correlate, every factor "
            "exceeds 1 and the rate compounded from 1e-3 to 8.5 (chance level on 4 of 9 "
            "development runs); K >= 3 / (1 - beta1) = 30 trained on all"
        ),
        "max_alpha": (
            "a cap on the compounded rate: at most 10x the initial rate (+1.2 points on "
            "mnist1d-mlp)"
        ),
    }

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
        gamma: float = 0.33,
        p: float = 0.2,
        steps_per_epoch: int | None = None,
        update_every: int | None = None,
        blocks: str = "global",
        max_factor: float = 100.0,
        min_factor: float = 0.01,
        window_floor: float = 3.0,
        newton_base: str = "current",
        max_alpha: float = 10.0,
    ) -> None:
        super().__init__(
            params,
            direction="adamw" if decoupled_weight_decay else "adam",
            rule="tlr",
            blocks=blocks,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            gamma=gamma,
            p=p,
            steps_per_epoch=steps_per_epoch,
            update_every=update_every,
            max_factor=max_factor,
            min_factor=min_factor,
            window_floor=window_floor,
            newton_base=newton_base,
            max_alpha=max_alpha,
        )
