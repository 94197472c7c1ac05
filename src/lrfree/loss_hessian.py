"""The loss Hessians ``Q``, under their older module name: ``lrfree.curvature.loss``
re-exported (the same functions and constants), so existing imports keep working.

>>> import torch
>>> from lrfree.loss_hessian import quadratic_form
>>> float(quadratic_form("mse", torch.zeros(2), torch.ones(2), reduction="sum"))  # 2 |v|^2
4.0
"""

from __future__ import annotations

from .curvature.loss import (
    IGNORE_INDEX,
    LOSSES,
    REDUCTIONS,
    hessian_vector_product,
    loss_output_hvp,
    loss_value,
    outer_gradient_form,
    quadratic_form,
)

__all__ = [
    "IGNORE_INDEX",
    "LOSSES",
    "REDUCTIONS",
    "hessian_vector_product",
    "loss_output_hvp",
    "loss_value",
    "outer_gradient_form",
    "quadratic_form",
]
