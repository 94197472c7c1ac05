"""The release artefacts: ``python -m build`` makes an sdist and a wheel, and the wheel installs
into a fresh virtual environment and trains.

The fresh venv holds only the wheel and torch's installed distribution (with its runtime
requirements), linked in from this environment the way ``--system-site-packages`` would
expose them, so nothing else lrfree's own environment has (numpy, the test tools, the source
tree) is importable, no download is needed and no other torch build can be pulled. The build
itself runs ``python -m build`` (isolated: pip fetches ``setuptools>=77`` from its configured
index) on a copy of the project, so the working tree gets no ``build/`` or ``*.egg-info``.
Marked ``package`` (about a minute on 2 cores); ``-m "not package"`` leaves it out.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import lrfree

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]

pytestmark = pytest.mark.package

SMOKE = r"""
import sys
import importlib.metadata as md
import torch
import lrfree
from lrfree.logging import scalars

assert lrfree.__file__.startswith(sys.prefix), lrfree.__file__
assert lrfree.__version__ == md.version("lrfree") == sys.argv[1], lrfree.__version__
for name in ("numpy", "pytest", "mnist1d"):  # the venv holds torch and lrfree only
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{name} is importable in the fresh venv")
torch.manual_seed(0)
x = torch.randn(256, 10)
y = (x[:, :3].sum(1) > 0).long()
# the plain composed optimizer, a rule without curvature, a curvature rule in graph mode
for name in ("Composed", "AdamHD", "SGDLW"):
    cls = getattr(lrfree, name, None)
    if cls is None:
        continue
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = cls(model.named_parameters())
    first = None
    for step in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward(create_graph=opt.curvature_due())
        opt.step()
        first = float(loss) if first is None else first
    final = float(torch.nn.functional.cross_entropy(model(x), y))
    assert final == final and final < 1e3, (name, final)
    assert scalars(opt), name
    print(f"{name}: loss {first:.4f} -> {final:.4f}")
print("smoke ok")
"""


def _torch_closure() -> list[md.Distribution]:
    """torch's distribution and those of its (non-extra) requirements, recursively."""
    seen: dict[str, md.Distribution] = {}
    todo = ["torch"]
    while todo:
        name = re.split(r"[\s<>=!~;\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return list(seen.values())


def _link_distributions(dists: list[md.Distribution], site: Path) -> None:
    """Symlink each distribution's top-level files and its metadata into ``site``."""
    for dist in dists:
        root = Path(dist.locate_file(""))
        tops = {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}
        for top in tops:
            src, dst = root / top, site / top
            if src.exists() and not dst.exists() and not top.endswith(".pth"):
                dst.symlink_to(src, target_is_directory=src.is_dir())


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_version_licence_changelog_agree():
    assert lrfree.__version__ == VERSION
    assert PYPROJECT["project"]["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    heading = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert heading and heading.group(1) == VERSION


def test_extras_declared():
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {k: {re.split(r"[<>=\[]", r)[0] for r in v} for k, v in extras.items()}
    assert {"lightning", "transformers", "accelerate", "tensorboard"} <= names["ecosystem"]
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names["docs"]
    assert "build" in names["test"]
    assert PYPROJECT["project"]["dependencies"] == ["torch>=2.6"]


def test_build_install_train(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], tmp_path, env=env)
    sdists = list(dist.glob("lrfree-*.tar.gz"))
    wheels = list(dist.glob("lrfree-*-py3-none-any.whl"))
    assert len(sdists) == 1 and len(wheels) == 1
    assert wheels[0].name == f"lrfree-{VERSION}-py3-none-any.whl"

    with tarfile.open(sdists[0]) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"} <= members
    assert "src/lrfree/__init__.py" in members
    with zipfile.ZipFile(wheels[0]) as whl:
        files = set(whl.namelist())
        meta = whl.read(f"lrfree-{VERSION}.dist-info/METADATA").decode()
    assert "lrfree/py.typed" in files and "lrfree/logging.py" in files
    assert f"lrfree-{VERSION}.dist-info/licenses/LICENSE" in files
    assert not any(f.startswith(("tests/", "examples/", "benchmarks/")) for f in files)
    assert "License-Expression: MIT" in meta
    assert "Requires-Dist: torch>=2.6" in meta
    assert "Provides-Extra: ecosystem" in meta

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).stdout.strip()
    )
    _link_distributions(_torch_closure(), site)
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    _run([*pip, "install", "--no-deps", "--no-index", str(wheels[0])], tmp_path, env=env)
    _run([*pip, "check"], tmp_path, env=env)  # lrfree's requirements are met: torch>=2.6

    out = _run([str(py), "-I", "-c", SMOKE, VERSION], tmp_path, env=env).stdout
    assert "smoke ok" in out
    assert "Composed: loss" in out
    cli = _run([str(venv / "bin" / "lrfree"), "--help"], tmp_path, env=env)
    assert "bench" in cli.stdout
