"""Every public symbol has a runnable example, and every example runs (doctest).

* The modules that define ``lrfree.__all__``'s classes and functions, plus ``lrfree.logging``,
  run under ``doctest`` (all their docstrings: module, classes, methods, functions).
* Each public class / function must show an example: ``>>>`` in its own docstring, or a
  ``>>>`` example in its module's docstring that calls it (``Name(``). Data exports
  (``DIRECTIONS``, ``RULES``, ``GRANULARITIES``, ``__version__``) are exempt.
* The Python blocks of the documentation's quick start (docs/index.md) run as written.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

import lrfree

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

PUBLIC = {
    name: getattr(lrfree, name)
    for name in lrfree.__all__
    if inspect.isclass(getattr(lrfree, name)) or inspect.isfunction(getattr(lrfree, name))
}
MODULES = sorted({obj.__module__ for obj in PUBLIC.values()} | {"lrfree.logging"})


@pytest.mark.parametrize("module_name", MODULES)
def test_module_doctests_pass(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module_name}"


def _has_example(name: str, obj: object) -> bool:
    own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if own and ">>>" in own:
        return True
    module_doc = sys.modules[obj.__module__].__doc__ or ""
    examples = doctest.DocTestParser().get_examples(module_doc)
    return any(re.search(rf"\b{re.escape(name)}\(", ex.source) for ex in examples)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_symbol_has_example(name):
    obj = PUBLIC[name]
    assert _has_example(name, obj), (
        f"lrfree.{name} has no runnable example: add a '>>>' example to its docstring "
        f"(or one calling {name}(...) to the docstring of {obj.__module__})"
    )


def test_exports_resolve():
    for name in lrfree.__all__:
        assert hasattr(lrfree, name), name


def test_docs_quick_start_runs(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")  # the logging block writes a TensorBoard file
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "index.md").read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict[str, object] = {}
    for code in blocks:  # one namespace: later blocks use the model of the first
        exec(compile(code, "docs/index.md", "exec"), namespace)
    assert list((tmp_path / "runs" / "lrfree").glob("events.out.tfevents.*"))
    assert (tmp_path / "runs" / "lrfree" / "rates.csv").read_text().startswith("step,tag,value")
