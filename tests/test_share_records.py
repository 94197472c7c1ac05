"""benchmarks/share_records.py: a folder takes the runs of its plan that another one holds."""

from __future__ import annotations

import json
from pathlib import Path

from lrfree.bench.plan import plan
from lrfree.bench.results import load_results
from script_loader import load_script


def _module():
    return load_script("benchmarks/share_records.py")


def _folder(path: Path, optimizers: list[str], records: list[dict]) -> Path:
    path.mkdir()
    meta = {"tasks": ["mnist1d-mlp"], "optimizers": optimizers, "seeds": 2, "epochs": 1}
    (path / "report.json").write_text(json.dumps({"meta": meta}))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_only_missing_runs_of_the_plan_are_copied(tmp_path):
    runs = plan(["mnist1d-mlp"], ["adamw", "auto", "prodigy"], seeds=2, epochs=1, train_subset=None)
    keys = {(r.spec, r.seed): r.key for r in runs}
    full = [{"key": k, "final_metric": float(i)} for i, k in enumerate(keys.values())]
    src = _folder(tmp_path / "full", ["adamw", "auto", "prodigy"], full)
    held = {"key": keys[("auto", 0)], "final_metric": -1.0}  # dst's own record is kept
    dst = _folder(tmp_path / "part", ["adamw", "auto"], [held])
    assert _module().share(src, dst) == 3  # adamw x 2 seeds, auto seed 1; not prodigy
    got = load_results(dst / "results.jsonl")
    assert set(got) == {keys[(s, n)] for s in ("adamw", "auto") for n in (0, 1)}
    assert got[keys[("auto", 0)]]["final_metric"] == -1.0
    assert got[keys[("adamw", 1)]]["shared_from"] == str(src)
    assert _module().share(src, dst) == 0  # nothing left to copy


def test_nothing_to_share_without_a_source_or_a_plan(tmp_path):
    dst = _folder(tmp_path / "part", ["adamw"], [])
    assert _module().share(tmp_path / "absent", dst) == 0
    assert _module().share(dst, tmp_path / "absent") == 0
