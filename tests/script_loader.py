"""Load a file of ``benchmarks/`` or ``examples/`` as a module, for the tests of scripts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """``load_script("benchmarks/rekey.py")``: the script as a fresh module (its ``__main__``
    block does not run)."""
    path = ROOT / relpath
    name = "script_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
