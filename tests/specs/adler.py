"""ADLER (and its GN comparator, and the rule over other directions) in the generic suite.

ADLER needs the outputs of the same forward: ``adler_step`` keeps the graph
(``retain_graph``) and passes ``outputs=`` to ``step``; ``adler_backward_step`` uses
``opt.backward(loss, out)`` (the one curvature entry) instead of ``loss.backward``; the GN
comparator needs nothing.
"""

from __future__ import annotations

import torch.nn.functional as F

import lrfree
from optim_db import ErrorCase, OptimSpec


def adler_step(model, opt, x, y):
    """The documented loop change: keep the graph, hand the outputs to ``step``."""
    opt.zero_grad()
    out = model(x)
    loss = F.cross_entropy(out, y)
    loss.backward(retain_graph=True)
    opt.step(outputs=out)
    return loss


def adler_backward_step(model, opt, x, y):
    """The fastest route: ``opt.backward(loss, out)`` in place of ``loss.backward()``."""
    opt.zero_grad()
    out = model(x)
    loss = F.cross_entropy(out, y)
    opt.backward(loss, out)
    opt.step()
    return loss


def _errors(owner_eps: str) -> list[ErrorCase]:
    return [
        ErrorCase({"beta": 1.5}, ValueError, r"Invalid beta: 1\.5 \(expected 0 <= beta <= 1\)"),
        ErrorCase({"beta": "0.9"}, TypeError, r"Invalid beta: '0\.9' \(expected a real number\)"),
        ErrorCase({owner_eps: -1.0}, ValueError, rf"Invalid {owner_eps}: -1\.0 \(expected 0 <= "),
        ErrorCase(
            {"variant": "fisher"},
            ValueError,
            r"Invalid variant: 'fisher' \(expected one of \['ggn', 'gn'\]\)",
        ),
        ErrorCase(
            {"update_every": 0},
            ValueError,
            r"Invalid update_every: 0 \(expected update_every >= 1\)",
        ),
        ErrorCase(
            {"update_every": 1.5}, TypeError, r"Invalid update_every: 1\.5 \(expected an int"
        ),
        ErrorCase({"loss": "hinge"}, ValueError, r"Invalid loss: 'hinge' \(expected one of \["),
        ErrorCase({"reduction": "none"}, ValueError, r"Invalid reduction: 'none'"),
        ErrorCase(
            {"blocks": "filter"},
            ValueError,
            r"Invalid blocks: 'filter' \(expected one of \['global', 'layer', 'tensor'\]\) "
            r"\[direction '\w+', rule 'adler'\]",
        ),
        ErrorCase({"maximize": True}, ValueError, r"Invalid maximize: True"),
        ErrorCase({"trust": 0.0}, ValueError, r"Invalid trust: 0\.0 \(expected 0 < trust\)"),
        ErrorCase({"lr": -1.0}, ValueError, r"Invalid lr: -1\.0 \(expected 0 <= lr\)"),
        ErrorCase({"bogus": 1}, TypeError, r"Unknown hyperparameter\(s\) \['bogus'\]"),
    ]


SPECS = [
    OptimSpec(
        name="ADLER",
        factory=lrfree.ADLER,
        kwargs=dict(weight_decay=1e-3),  # paper's beta; 0.9 diverges here (docs/adler.md)
        errors=_errors("eps"),
        step=adler_step,
    ),
    OptimSpec(
        name="ADLER-layer-every2",
        factory=lrfree.ADLER,
        kwargs=dict(beta=0.9, blocks="layer", update_every=2),
        errors=_errors("eps"),
        step=adler_backward_step,
    ),
    OptimSpec(
        name="ADLER-gn",
        factory=lrfree.ADLER,
        kwargs=dict(beta=0.9, variant="gn", lr=0.03),  # eta ~ 1/|G|^2 blows up at lr=1
        errors=_errors("eps"),
    ),
    OptimSpec(
        name="composed-adamw-adler",
        factory=lambda params, **kw: lrfree.Composed(params, direction="adamw", rule="adler", **kw),
        kwargs=dict(beta=0.9, blocks="layer", weight_decay=1e-2, lr=0.5),
        errors=_errors("denom_eps"),
        step=adler_step,
    ),
    OptimSpec(
        name="composed-momentum-adler",
        factory=lambda params, **kw: lrfree.Composed(
            params, direction="momentum", rule="adler", **kw
        ),
        kwargs=dict(beta=0.9, blocks="tensor", momentum=0.9, weight_decay=1e-3, trust=2.0),
        errors=_errors("denom_eps"),
        step=adler_backward_step,
    ),
]
