"""``Auto``: one optimizer, no learning rate, in the training loop you already have.

``Auto`` is a ``Composed`` optimizer, so every piece of it is a named part of the library
that any other composition can use:

* direction ``"adamw"`` with ``betas=(0.0, 0.999)``: the gradient over the root of its
  bias-corrected second moment (no first-moment buffer: the averaging below plays that part);
* rule ``"dadapt"`` (``lrfree.rules.distance``): per tensor, an estimate of the distance to
  the solution from the displacement, ``alpha_t = max(alpha_{t-1}, num_t / (||x_t - x_0||
  sqrt(n)))`` with ``num_t = sum_i s_i <d_i, x_0 - x_i>``, starting from ``d0 = 1e-3``;
* ``averaging="schedule_free"`` (``lrfree.averaging``): the rule's steps move ``z``; the
  model is evaluated at the average ``x`` and the gradient taken at ``y = 0.1 z + 0.9 x``;
* ``blocks="tensor"``: one rate per parameter tensor (no module names needed).

The design was chosen on the development tasks only (docs/auto.md: the candidates, their
scores and why this one won). State: ``exp_avg_sq``, ``z`` and ``dadapt.x0``, three
parameter-sized buffers.

Use it like any optimizer; call ``opt.eval()`` before evaluating or saving the model and
``opt.train()`` before training again (the parameters hold ``y`` while training, ``x`` in
eval mode)::

    >>> import torch, lrfree
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    >>> opt = lrfree.Auto(model.parameters())
    >>> x = torch.randn(64, 4); y = x.sum(1, keepdim=True)
    >>> for _ in range(200):
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     opt.step()
    >>> opt.eval()
    >>> bool(torch.nn.functional.mse_loss(model(x), y) < 0.05)
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .optimizer import Composed

__all__ = ["Auto"]

AUTO_DEFAULTS: dict[str, Any] = {
    "direction": "adamw",
    "rule": "dadapt",
    "blocks": "tensor",
    "lr": 1.0,
    "betas": (0.0, 0.999),
    "averaging": "schedule_free",
    "sf_beta": 0.9,
}
"""The composition ``Auto`` builds; ``Composed(params, **AUTO_DEFAULTS)`` is the same
optimizer."""


class Auto(Composed):
    """A learning-rate-free optimizer for any model (see the module docstring).

    Args:
        params: ``model.parameters()``, ``model.named_parameters()`` or param-group dicts.
        weight_decay: decoupled weight decay, applied at the gradient point as schedule-free
            AdamW does (the effective decay per step is ``rate * weight_decay``).
        **overrides: any hyperparameter of the composition (``lr`` is a multiplier of the
            rule's rate, 1 by default, and what a scheduler scales; ``blocks``,
            ``averaging``, ``sf_beta``, ``betas``, ``eps``, ``d0``, ``d_coef``, ``rule``, ...).
    """

    def __init__(self, params: Iterable[Any], weight_decay: float = 0.0, **overrides: Any) -> None:
        kw = {**AUTO_DEFAULTS, "weight_decay": weight_decay, **overrides}
        super().__init__(params, **kw)
