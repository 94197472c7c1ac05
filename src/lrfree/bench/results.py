"""What keys and stores a benchmark's results: the code fingerprints and ``results.jsonl``.

A run's key (``plan.Run.key``) names the code that produced it: the whole package
(``code_fingerprint``, but the modules in ``NOT_TRAINING``) for lrfree optimizers, the
benchmark's loop (``loop_fingerprint``: the ``LOOP_FILES``) for torch baselines and peers, so
a change to a rule does not discard the grids and peers already trained. Records are appended
to ``results.jsonl`` one JSON line each, fsync'ed; a line cut by a crash is skipped when read
back (that run is redone).

Example::

    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "results.jsonl"
    >>> append_result(path, {"key": "a", "final_metric": 1.0})
    >>> _ = path.open("a").write('{"key": "cut by a cr')
    >>> list(load_results(path))
    ['a']
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lrfree

if TYPE_CHECKING:
    from .optimizers import BenchOptimizer

__all__ = [
    "LOOP_FILES",
    "NOT_TRAINING",
    "append_result",
    "code_fingerprint",
    "load_results",
    "loop_fingerprint",
    "resume_results",
    "run_fingerprint",
]

NOT_TRAINING = (
    "bench/report.py",
    "bench/plots.py",
    "bench/pages.py",
    "bench/suites.py",
    "bench/grids.py",
    "bench/cost.py",
    "bench/measure.py",
    "bench/progress.py",
    "bench/results.py",
    "bench/cli.py",
    "bench/runner.py",
    "cli.py",
    "integrations.py",
)
"""Modules that cannot change a run's record (tables, plots, results pages, the paper suites'
plans, cost estimates, cost measurement, the progress bar, the results file and these
fingerprints, the command line, the re-exports of ``bench.runner``, framework callbacks): left
out of ``code_fingerprint``, so editing them keeps results."""


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the library's source (but ``NOT_TRAINING``), so results of changed code are
    never reused."""
    root = Path(lrfree.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in NOT_TRAINING:
            continue
        h.update(rel.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


LOOP_FILES = (
    "bench/plan.py",
    "bench/loop.py",
    "bench/pool.py",
    "bench/data.py",
    "bench/tasks.py",
    "bench/optimizers.py",
)
"""The code a torch baseline or a peer runs: the plan (epochs, subsets, seeds, rates), the
training loop, the worker pool (data loading, threads), the data, the tasks, the registry."""


@functools.lru_cache(maxsize=1)
def loop_fingerprint() -> str:
    """A hash of ``LOOP_FILES``: the keys of baseline and peer runs, which run no other lrfree
    code, so a change to a rule does not discard the grids and peers already trained."""
    root = Path(lrfree.__file__).parent
    h = hashlib.sha256()
    for rel in LOOP_FILES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:10]


def run_fingerprint(entry: BenchOptimizer) -> str:
    """The code a run's key names: the whole package for lrfree optimizers, the benchmark's
    loop (``loop_fingerprint``) for torch baselines and peers."""
    return code_fingerprint() if entry.family == "lrfree" else loop_fingerprint()


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """The records of ``path`` by key (a later line of the same key wins); ``{}`` when the
    file does not exist. A line that is not JSON (cut by a crash) is skipped."""
    done: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that run is redone
                continue
            done[rec["key"]] = rec
    return done


def append_result(path: Path, rec: dict[str, Any]) -> None:
    """Append ``rec`` to ``path`` as one JSON line, flushed and fsync'ed (a kill loses at
    most the line being written)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def resume_results(path: Path, fresh: bool = False) -> dict[str, dict[str, Any]]:
    """The records already in ``path`` (``load_results``), with the file made ready for
    ``append_result``: a last line cut by a crash is ended, so the next record starts a line
    of its own. ``fresh`` deletes the file first (no records)."""
    if fresh and path.exists():
        path.unlink()
    done = load_results(path)
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with open(path, "a") as fh:  # a line cut by a crash: start the next one cleanly
            fh.write("\n")
    return done
