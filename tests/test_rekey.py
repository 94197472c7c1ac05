"""benchmarks/rekey.py: carrying baseline / peer records over a loop-fingerprint change."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from lrfree.bench.runner import loop_fingerprint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rekey.py"


def _module():
    spec = importlib.util.spec_from_file_location("rekey_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(family: str, name: str, code: str) -> dict:
    return {"key": f"t|{name}|lr=default|seed=0|code={code}", "family": family, "spec": name}


def test_only_baseline_and_peer_records_of_the_old_loop_are_carried(tmp_path):
    new = loop_fingerprint()
    path = tmp_path / "results.jsonl"
    records = [
        _rec("baseline", "adamw", "old1"),
        _rec("peer", "prodigy", "old1"),
        _rec("lrfree", "auto", "old1"),  # the library's own code: never carried
        _rec("baseline", "sgd-m", "other"),  # another fingerprint: left alone
        _rec("baseline", "adamw", new),  # already at the new loop: kept, the carry dropped
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    carried, kept = _module().rekey(path, "old1", "a reason")
    assert (carried, kept) == (2, 3)
    out = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [r["key"] for r in out]
    assert len(keys) == len(set(keys)) == 4
    peer = next(r for r in out if r["spec"] == "prodigy")
    assert peer["key"].endswith(f"|code={new}")
    assert peer["rekeys"] == [{"from": "old1", "reason": "a reason"}]
    auto = next(r for r in out if r["spec"] == "auto")
    assert auto["key"].endswith("|code=old1") and "rekeys" not in auto
    # a second carry appends to the history
    (tmp_path / "r2.jsonl").write_text(
        json.dumps({**peer, "key": peer["key"].replace(new, "old2")}) + "\n"
    )
    _module().rekey(tmp_path / "r2.jsonl", "old2", "second")
    again = json.loads((tmp_path / "r2.jsonl").read_text())
    assert [k["from"] for k in again["rekeys"]] == ["old1", "old2"]
