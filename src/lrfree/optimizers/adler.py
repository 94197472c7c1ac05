"""``ADLER``: SGD with the Gauss-Newton quadratic-model learning rate (Balboni & Bacciu).

Each step, along the mini-batch gradient ``G``::

    eta_k   = G^T G / (v^T Q v + eps),     v = J G   (outputs' Jacobian-vector product)
    s      <- beta s + log eta_k,  c <- beta c + 1,  eta_hat = exp(s / c)
    theta  <- theta - lr * eta_hat * G                 (lr = 1: the paper's step)

``Q`` is the Hessian of the loss w.r.t. the network outputs (softmax cross-entropy:
``diag(p) - p p^T`` per sample, see ``lrfree.loss_hessian``). ``variant="gn"`` is the
paper's Gauss-Newton comparator: ``Q = g g^T`` (``g``: the loss gradient w.r.t. the outputs)
and an arithmetic mean of ``eta``. ``blocks="layer"`` (one quadratic model per layer) and
``update_every > 1`` (re-estimate every k steps) are our extensions; see
``lrfree.rules.adler`` for safeguards and docs/adler.md for measurements.

Default: ``trust=2`` (ours: the applied rate at most twice this batch's own line minimiser
``eta_k``); ``preset="paper"`` gives the paper's Algorithm 1 (``trust=inf``, off).
docs/presets.md lists the difference and why; ``Composed(rule="adler")`` keeps the paper's.

Paper: D. Balboni, D. Bacciu, "Adaptive learning rate for SGD by a Gauss-Newton quadratic
model" (ADLER), Algorithm 1.

The one change to a normal loop: ``opt.backward(loss, outputs)`` in place of
``loss.backward()`` (the entry every curvature rule shares, ``lrfree.Composed.backward``: on
an estimate step it keeps a graph linear in ``dL/dF``, so the step gets ``v = J G`` from one
tangent-only pass), then ``opt.step()``::

    >>> import torch, lrfree
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> opt = lrfree.ADLER(model.parameters())  # loss="cross_entropy", reduction="mean", trust=2
    >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    >>> for _ in range(5):
    ...     opt.zero_grad()
    ...     out = model(x)
    ...     opt.backward(torch.nn.functional.cross_entropy(out, y), out)
    ...     opt.step()
    >>> rate = opt.effective_lr()["global"]
    >>> 0 < rate < 100
    True

The older forms stay as aliases: ``loss.backward(retain_graph=True)`` then
``opt.step(outputs=out)`` (a double-VJP through the user's graph), or, without the graph, an
extra forward-mode pass: ``opt.step(model=model, inputs=x)``. For a loss that is none of the
named ones, ``loss="auto"`` takes ``Q`` by autograd through the loss you computed, which only
``opt.backward(loss, out)`` sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

from ..hyper import real
from ..presets import Named

__all__ = ["ADLER"]


class ADLER(Named):
    """ADLER (``variant="ggn"``) and its GN comparator (``variant="gn"``) on plain SGD.

    Args:
        params: ``model.parameters()``, ``model.named_parameters()`` (``blocks="layer"`` needs
            the names) or param groups.
        lr: multiplies the computed rate (1: the paper's step; a scheduler may scale it).
        beta: discount of the mean of ``log eta`` (``eta`` for GN); 0.99 as the paper.
        eps: added to ``v^T Q v`` (the paper's 1e-10).
        variant: ``"ggn"`` (ADLER) or ``"gn"`` (the comparator).
        blocks: ``"global"`` (the paper), ``"layer"`` or ``"tensor"``.
        update_every: estimate every k steps (1: the paper).
        loss, reduction: the user's loss (``"cross_entropy"``, the default, ``"nll"``,
            ``"mse"``, ``"bce_with_logits"``: closed-form ``Q``) and reduction (``"mean"`` /
            ``"sum"``); ``loss="auto"``: ``Q`` by autograd through the loss you computed (the
            ``opt.backward(loss, outputs)`` route only, as it alone sees that loss); any
            other loss or route: ``step(..., loss_fn=lambda out: my_loss(out, y))``.
        trust: cap the applied rate at ``trust * eta_k`` (``eta_k``: this step's own
            estimate, the minimiser of the batch's quadratic model; ``2``, the default: never
            where that model predicts an increase). ``inf``: off, the paper
            (``preset="paper"``). Ours; see docs/adler.md ("Divergence on the MNIST-1D CNN").
        preset: ``"default"`` (``trust=2``) or ``"paper"`` (Algorithm 1, ``trust=inf``; an
            argument given explicitly wins). See docs/presets.md.
        **kwargs: further options of the ``sgd`` direction or the ``adler`` rule
            (``weight_decay``, ``foreach``).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {
            "beta": 0.99,
            "eps": 1e-10,
            "variant": "ggn",
            "update_every": 1,
            "trust": math.inf,
        }
    }
    PRESET_WHY: ClassVar[dict[str, str]] = {
        "trust": (
            "the log-mean of per-batch minimisers that spread ~60x gives large-gradient "
            "batches 8-24x their own minimiser; capping at 2x the batch's own (beyond it the "
            "batch's quadratic model predicts an increase) removed every collapse "
            "(fmnist-2c2d: 10.2 -> 61.2); the paper names a trust region as future work"
        ),
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        *,
        preset: str = "default",
        beta: float = 0.99,
        eps: float = 1e-10,
        variant: str = "ggn",
        blocks: str = "global",
        update_every: int = 1,
        loss: str = "cross_entropy",
        reduction: str = "mean",
        trust: float = 2.0,
        **kwargs: Any,
    ) -> None:
        real(0.0)("eps", eps, "direction 'sgd', rule 'adler'")  # the rule calls it denom_eps
        super().__init__(
            params,
            direction="sgd",
            rule="adler",
            blocks=blocks,
            lr=lr,
            beta=beta,
            denom_eps=eps,
            variant=variant,
            update_every=update_every,
            loss=loss,
            reduction=reduction,
            trust=trust,
            **kwargs,
        )
