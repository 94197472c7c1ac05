"""Write what the optimizer adapted to TensorBoard, CSV or JSON Lines.

``scalars(opt)`` flattens one read-out of an optimizer into ``{tag: float}``:

* ``effective_lr/<block>``: ``opt.effective_lr()``, the rate ``lr * alpha`` each block used;
* ``<rule>/<field>/<block>``: the rule's ``diagnostics`` of each block (curvature numbers,
  gammas, skipped-step counters, ...). A one-element value is logged as is, a short vector
  (at most ``max_elements`` entries, e.g. CAM-HD's gammas) element by element as
  ``<field>[k]``, a longer one by its mean as ``<field>.mean``.

Any ``torch.optim.Optimizer`` works: one that is not an ``lrfree.Composed`` reports
``lr/group<i>`` per parameter group, so a baseline logs next to an lrfree run.

Three sinks share one method, ``write(step, values)``: ``TensorBoardWriter``
(``torch.utils.tensorboard``; needs the ``tensorboard`` package), ``CSVWriter`` (long format:
``step,tag,value``, so new blocks or fields never change the header) and ``JSONLWriter`` (one
object per step). ``OptimizerLogger`` reads an optimizer every ``every`` steps and writes to
any number of sinks.

All of this reads device values (host syncs): call it for logging, not inside ``step()``.
(This module is ``lrfree.logging``; inside it and in the rest of the package, ``import
logging`` is an absolute import and still gives Python's standard ``logging``.)

Example::

    >>> import json, os, tempfile, torch, lrfree
    >>> from lrfree.logging import JSONLWriter, OptimizerLogger, scalars
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> opt = lrfree.AdamHD(model.named_parameters(), lr=1e-2)
    >>> path = os.path.join(tempfile.mkdtemp(), "rates.jsonl")
    >>> with OptimizerLogger(opt, JSONLWriter(path)) as log:
    ...     for step in range(3):
    ...         opt.zero_grad()
    ...         model(torch.randn(8, 4)).pow(2).mean().backward()
    ...         opt.step()
    ...         _ = log.log(step)
    >>> rows = [json.loads(line) for line in open(path)]
    >>> [row["step"] for row in rows]
    [0, 1, 2]
    >>> [k for k in rows[-1] if k.startswith("effective_lr/")]  # AdamHD: one global rate
    ['effective_lr/global']
    >>> "hypergradient/rate/global" in scalars(opt)
    True
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = [
    "CSVWriter",
    "JSONLWriter",
    "OptimizerLogger",
    "TensorBoardWriter",
    "Writer",
    "rule_diagnostics",
    "scalars",
]


def _values(field: str, value: Any, max_elements: int) -> dict[str, float]:
    """One diagnostic as floats: as is, element by element, or its mean."""
    if isinstance(value, bool):
        return {field: float(value)}
    if isinstance(value, (int, float)):
        return {field: float(value)}
    if not isinstance(value, Tensor) or value.is_sparse or value.is_complex():
        return {}
    v = value.detach()
    if v.numel() == 0:
        return {}
    if v.numel() == 1:
        return {field: float(v.double().reshape(()))}
    if v.numel() <= max_elements:
        return {f"{field}[{k}]": x for k, x in enumerate(v.double().reshape(-1).tolist())}
    return {f"{field}.mean": float(v.double().mean())}


def rule_diagnostics(
    opt: torch.optim.Optimizer, *, max_elements: int = 8
) -> dict[str, dict[str, float]]:
    """Per block name, the rule's ``diagnostics`` of that block as floats.

    Field names drop the ``"<rule>."`` prefix of the state key and are prefixed with the
    rule's name instead (``"layerwise/rejected"``). Blocks are named as in
    ``opt.effective_lr()`` (one name per block set; ``"@group<i>"`` when a name repeats).
    An optimizer that is not an ``lrfree.Composed`` has no rule diagnostics: ``{}``.

    Example::

        >>> import torch, lrfree
        >>> from lrfree.logging import rule_diagnostics
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = lrfree.SGDHD(model.named_parameters(), lr=0.1)
        >>> model(torch.ones(2, 3)).sum().backward()
        >>> _ = opt.step()
        >>> sorted(rule_diagnostics(opt)["global"])[:2]
        ['hypergradient/alpha', 'hypergradient/hypergrad']
    """
    from .optimizer import Composed
    from .rules import RULES

    if not isinstance(opt, Composed):
        return {}
    out: dict[str, dict[str, float]] = {}
    for gi, group in enumerate(opt.param_groups):
        rule = RULES[group["rule"]]
        for s in opt.partition(gi).sets:
            st = opt.state.get(group["params"][s.owner], {})
            fields: dict[str, float] = {}
            for key, value in rule.diagnostics(st).items():
                name = str(key)
                if name.startswith(rule.name + "."):
                    name = name[len(rule.name) + 1 :]
                fields.update(_values(f"{rule.name}/{name}", value, max_elements))
            label = s.name if s.name not in out else f"{s.name}@group{gi}"
            out[label] = fields
    return out


def scalars(opt: torch.optim.Optimizer, *, max_elements: int = 8) -> dict[str, float]:
    """One read-out of ``opt`` as ``{tag: value}``: effective rates, then rule diagnostics.

    Tags: ``effective_lr/<block>`` and ``<rule>/<field>/<block>`` for an ``lrfree.Composed``;
    ``lr/group<i>`` for any other ``torch.optim.Optimizer``.
    """
    out: dict[str, float] = {}
    effective = getattr(opt, "effective_lr", None)
    if callable(effective):
        for block, lr in effective().items():
            out[f"effective_lr/{block}"] = float(lr)
    else:
        for gi, group in enumerate(opt.param_groups):
            lr = group.get("lr")
            if isinstance(lr, Tensor):
                lr = float(lr)
            if isinstance(lr, (int, float)):
                out[f"lr/group{gi}"] = float(lr)
    for block, fields in rule_diagnostics(opt, max_elements=max_elements).items():
        for field, value in fields.items():
            out[f"{field}/{block}"] = value
    return out


class Writer(Protocol):
    """A sink for ``{tag: value}`` read-outs."""

    def write(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


_TAG_CHARS = re.compile(r"[^A-Za-z0-9_.\-/\[\]@]")


class TensorBoardWriter:
    """Scalars to a TensorBoard event file (``torch.utils.tensorboard.SummaryWriter``).

    Args:
        log_dir: the run's folder (``None``: ``runs/<date>``, as ``SummaryWriter``); ignored
            when ``writer`` is given.
        writer: an existing ``SummaryWriter`` to add to (it is not closed by ``close()``).
        prefix: prepended to every tag (``"lrfree/effective_lr/0"``); ``""`` for none.

    Needs the ``tensorboard`` package (``pip install lrfree[ecosystem]``).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        writer: Any = None,
        prefix: str = "lrfree",
    ) -> None:
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=None if log_dir is None else str(log_dir))
            self._owned = True
        else:
            self._owned = False
        self.writer = writer
        self.prefix = prefix.rstrip("/")

    def tag(self, name: str) -> str:
        """The TensorBoard tag of a read-out name (unusual characters become ``_``)."""
        name = _TAG_CHARS.sub("_", name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def write(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(self.tag(name), value, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self._owned:
            self.writer.close()
        else:
            self.writer.flush()


class CSVWriter:
    """Rows ``step,tag,value`` (long format) appended to a CSV file.

    The header is written when the file is new or empty. Non-finite values are written as
    ``nan`` / ``inf`` / ``-inf`` (what ``float()`` reads back).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "tag", "value"])

    def write(self, step: int, values: Mapping[str, float]) -> None:
        self._csv.writerows([step, k, repr(float(v))] for k, v in values.items())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class JSONLWriter:
    """One JSON object per read-out, ``{"step": n, tag: value, ...}``, appended to a file.

    Non-finite values are written as ``null`` (JSON has no NaN).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")

    def write(self, step: int, values: Mapping[str, float]) -> None:
        row: dict[str, Any] = {"step": step}
        for k, v in values.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else None
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class OptimizerLogger:
    """Reads an optimizer every ``every`` steps and writes the read-out to each sink.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (lrfree ones add rule diagnostics).
        *writers: ``TensorBoardWriter``, ``CSVWriter``, ``JSONLWriter`` or any object with
            ``write(step, values)`` and ``close()``.
        every: log on steps ``step % every == 0``.
        max_elements: see ``scalars``.

    ``log(step)`` returns the values it wrote (``{}`` on the steps it skips). Use it as a
    context manager, or call ``close()``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *writers: Writer,
        every: int = 1,
        max_elements: int = 8,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r} (expected an integer >= 1)")
        if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
            raise ValueError(f"Invalid max_elements: {max_elements!r} (expected an integer >= 1)")
        self.optimizer = optimizer
        self.writers = list(writers)
        self.every = every
        self.max_elements = max_elements

    def log(self, step: int) -> dict[str, float]:
        if step % self.every:
            return {}
        values = scalars(self.optimizer, max_elements=self.max_elements)
        for w in self.writers:
            w.write(step, values)
        return values

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def __enter__(self) -> OptimizerLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
