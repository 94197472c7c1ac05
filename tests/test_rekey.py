"""benchmarks/rekey.py: carrying baseline / peer records over a loop-fingerprint change."""

from __future__ import annotations

import json

from lrfree.bench.runner import loop_fingerprint
from script_loader import load_script


def _module():
    return load_script("benchmarks/rekey.py")


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


def test_verify_carries_records_that_retrain_identically_and_only_those(tmp_path):
    """--verify: stored runs retrained for one epoch with this code; an optimizer is carried
    only if its check matched exactly. A record whose stored loss was altered (standing in
    for a code change that moved the arithmetic) stays under its old fingerprint."""
    from lrfree.bench.runner import code_fingerprint, plan, run_suite
    from lrfree.bench.tasks import BenchConfig

    runs = plan(["mnist1d-mlp"], ["adamw@0.001", "adalip", "sgd-m@0.01"], 1, 2, 256)
    recs = run_suite(runs, tmp_path / "out", BenchConfig(), progress=False, threads=1)
    module = _module()
    stale = []
    for rec in recs:
        fp = rec["key"].rsplit("|code=", 1)[1]
        rec = {
            **rec,
            "key": rec["key"][: -len(fp)] + ("oldloop" if fp == loop_fingerprint() else "oldcode"),
        }
        if rec["optimizer"] == "sgd-m":  # epoch 1 altered: must not be carried
            rec["per_epoch"] = [{**rec["per_epoch"][0], "train_loss": 1.0}, *rec["per_epoch"][1:]]
        stale.append(rec)
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in stale) + "\n")
    log: list[str] = []
    ok = module.verify(path, ["oldloop", "oldcode"], 1, 1, log=log.append)
    assert sorted(ok) == ["adalip", "adamw"]
    assert any(line.startswith("MISMATCH mnist1d-mlp/sgd-m") for line in log)
    carried, kept = module.rekey(path, ["oldloop", "oldcode"], "test", ok)
    assert (carried, kept) == (2, 1)
    out = {r["optimizer"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert out["adalip"]["key"].endswith(f"|code={code_fingerprint()}")
    assert out["adamw"]["key"].endswith(f"|code={loop_fingerprint()}")
    assert out["adalip"]["rekeys"][-1]["verified"] == ["mnist1d-mlp/adalip/lr=None/seed=0/epochs=1"]
    assert out["sgd-m"]["key"].endswith("|code=oldloop")
    # without --verify an lrfree record is never carried
    path.write_text(json.dumps(stale[1]) + "\n")
    assert module.rekey(path, ["oldcode"], "word only") == (0, 1)
