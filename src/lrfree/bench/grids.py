"""The learning-rate grids the tuned baselines are searched over (``NAME@grid``).

A grid only decides which runs a plan holds: a run's record is keyed by its own rate, so this
module is not part of any record's fingerprint (``results.NOT_TRAINING``) and a grid can grow
or shrink without discarding the runs already trained.

The suite grids were widened on 2026-12-05 after the 3-seed full suite put the tuned rate on
the grid's edge: AdamW's best rate was its largest, 1e-2, on 5 of 12 tasks (LeNet-5, the
ResNet, both MNIST-1D tasks, the language model) and SGD-momentum's largest, 0.3, on 3 (the
autoencoder, CiteSeer, the language model); their smallest rates (AdamW 1e-4, SGD 1e-3 and
3e-3) were never within 3 points of the best on any task. Each grid moved up one step and
keeps five rates. The paper suites keep the grids the papers' baselines were compared with.

Example::

    >>> GRID_ADAMW[-1], GRID_SGD[-1]
    (0.03, 1.0)
"""

from __future__ import annotations

__all__ = ["GRID_ADAMW", "GRID_ADAM_PAPERS", "GRID_RMSPROP", "GRID_SGD"]

GRID_ADAMW: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
"""torch AdamW (weight decay 0.01): the suites' tuned baseline for Adam-type optimizers."""

GRID_SGD: tuple[float, ...] = (1e-2, 3e-2, 1e-1, 3e-1, 1.0)
"""torch SGD with momentum 0.9: the tuned baseline for the SGD-based optimizers."""

GRID_ADAM_PAPERS: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
"""torch Adam (no weight decay), the AdaLip and CAM-HD papers' baseline (paper suites)."""

GRID_RMSPROP: tuple[float, ...] = (3e-4, 5e-4, 7e-4, 1e-3, 5e-3, 1e-2)
"""torch RMSprop (alpha 0.99), the AdaLip paper's baseline (paper suites)."""
