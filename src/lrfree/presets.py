"""Presets: named sets of constructor arguments for the named optimizers.

Every named optimizer (``SGDLW``, ``AdamTLR``, ...) has two settings:

* ``preset="default"`` (the default): the library's defaults, the values in the class's
  signature, chosen so that the optimizer trains on every benchmark task without a
  learning-rate search (docs/presets.md: the protocol and the measurements);
* ``preset="paper"``: the paper's exact settings, safeguards off — the method as published.

An argument given explicitly always wins over the preset::

    >>> import torch, lrfree
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = lrfree.AdamTLR(model.parameters(), preset="paper", steps_per_epoch=10)
    >>> opt.preset, opt.param_groups[0]["window_floor"]
    ('paper', 0.0)
    >>> opt = lrfree.AdamTLR(model.parameters(), preset="paper", steps_per_epoch=10,
    ...                      window_floor=3.0)
    >>> opt.param_groups[0]["window_floor"]
    3.0

The values land in ``param_groups`` like any hyperparameter, so a checkpoint records them and
``load_state_dict`` restores them whatever preset the new optimizer was built with.
``preset_table()`` lists, per class, every field whose paper value differs from the default.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from .optimizer import Composed

__all__ = ["PRESET_NAMES", "Named", "preset_table", "reasons"]

PRESET_NAMES = ("default", "paper")
"""The presets every named optimizer has."""


def _with_presets(init: Callable[..., None]) -> Callable[..., None]:
    sig = inspect.signature(init)
    var_kw = next(
        (p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
    )

    @functools.wraps(init)
    def wrapper(self: Named, *args: Any, **kwargs: Any) -> None:
        if getattr(self, "_presetting", False):  # a subclass's __init__ calling super()
            init(self, *args, **kwargs)
            return
        bound = sig.bind(self, *args, **kwargs)
        preset = bound.arguments.get("preset", "default")
        cls = type(self)
        if not isinstance(preset, str) or preset not in PRESET_NAMES:
            raise ValueError(
                f"Invalid preset: {preset!r} (expected one of {list(PRESET_NAMES)}) "
                f"[{cls.__name__}]"
            )
        given = set(bound.arguments) | set(bound.arguments.get(var_kw, {}) if var_kw else ())
        values = cls.PRESETS.get(preset, {})
        kwargs.update({k: v for k, v in values.items() if k not in given})
        self._presetting = True
        try:
            init(self, *args, **kwargs)
        finally:
            del self._presetting
        self.preset = preset

    return wrapper


_LIBRARY_CLASSES: list[type[Named]] = []
"""The named classes the library defines (registered as they are created)."""


class Named(Composed):
    """Base of the named optimizers: ``Composed`` with a class-specific signature and presets.

    A subclass declares ``PRESETS = {"paper": {field: value, ...}}`` (every field the paper
    fixes, equal to the default or not, so a later change of a default leaves the paper
    setting as it was) and ``PRESET_WHY = {field: "why the default differs"}``, and takes a
    keyword ``preset: str = "default"`` in its ``__init__``.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    PRESET_WHY: ClassVar[dict[str, str]] = {}
    preset: str = "default"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("lrfree."):  # the library's own: in preset_table()
            _LIBRARY_CLASSES.append(cls)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _with_presets(init)  # type: ignore[method-assign]

    def __repr__(self) -> str:
        base = super().__repr__()
        return base if self.preset == "default" else base[:-1] + f", preset={self.preset!r})"


def reasons(table: dict[str, str], *fields: str) -> dict[str, str]:
    """A class's ``PRESET_WHY``: the entries of a module's table of reasons for ``fields``.

    >>> reasons({"lr": "why lr", "eps": "why eps"}, "lr")
    {'lr': 'why lr'}
    """
    return {f: table[f] for f in fields}


def defaults_of(cls: type[Named]) -> dict[str, Any]:
    """The signature defaults of a named class (its ``"default"`` preset)."""
    return {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def preset_table(classes: list[type[Named]] | None = None) -> str:
    """A markdown table: per class, every field whose paper value differs from the default.

    Example::

        >>> import lrfree
        >>> print(preset_table([lrfree.ADLER]).splitlines()[0])
        | optimizer | field | paper | default | why the default differs |
    """
    if classes is None:  # in the order of lrfree.__all__: upper-case names first
        classes = sorted(_LIBRARY_CLASSES, key=lambda c: (not c.__name__.isupper(), c.__name__))
    rows = [
        "| optimizer | field | paper | default | why the default differs |",
        "|---|---|---|---|---|",
    ]
    for cls in classes:
        dflt = defaults_of(cls)
        for field, paper in cls.PRESETS.get("paper", {}).items():
            ours = dflt.get(field)
            if ours == paper:
                continue
            why = cls.PRESET_WHY.get(field, "")
            rows.append(f"| `{cls.__name__}` | `{field}` | `{paper!r}` | `{ours!r}` | {why} |")
    return "\n".join(rows)
