"""Carry stored benchmark records over a fingerprint change, after checking they still hold.

A run's key names the code that produced it (``lrfree.bench.runner.run_fingerprint``): for
torch baselines and peers, the hash of the loop files (runner, data, tasks, registry); for
lrfree optimizers, the hash of the whole package. Any edit to those files, even one that cannot
change a run (a new registry entry, a refactor that keeps every operation), makes the records
stale, and the suite costs hours to retrain. This script rewrites the keys of the records made
under ``--from`` to the current fingerprints; each carried record appends
``{"from": "<old fingerprint>", "reason": ..., "verified": [...]}`` to its ``"rekeys"`` list,
so every carry-over stays visible.

With ``--verify`` (the way to use it), nothing is carried on a person's word: for every
optimizer with records under ``--from``, one stored run per task (the lowest seed and, in a
grid, the lowest rate that did not diverge) is retrained with the current code for its first
``--verify-epochs`` epochs (at least ``--verify-steps`` optimizer steps, so a full-batch graph
task trains 20 steps, not 1), with the torch thread count the record was trained with, and its
per-epoch train loss, test loss and test metric must equal the stored ones exactly (a run's
first epochs do not depend on how many follow: the data order and every update are seeded per
run). An optimizer is carried only if every one of its checks matched; lrfree records are
carried only this way. Without ``--verify``, baseline and peer records are carried on the
``--reason`` alone (the older use; its history says so).

    python benchmarks/rekey.py benchmarks/out/full-suite/results.jsonl \\
        --from 6dcc5526f2,69858bbd7f --verify --reason "bench split into plan / loop / pool"
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from lrfree.bench.runner import code_fingerprint, loop_fingerprint, plan, run_one, subset_split
from lrfree.bench.tasks import BenchConfig, get_task

FIELDS = ("train_loss", "test_loss", "metric")


def _stem(key: str) -> str:
    return key.rsplit("|code=", 1)[0]


def _new_fingerprint(rec: dict[str, Any]) -> str:
    return code_fingerprint() if rec.get("family") == "lrfree" else loop_fingerprint()


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _spec(rec: dict[str, Any]) -> str:
    name = rec["optimizer"]
    return name if rec.get("lr") is None else f"{name}@{rec['lr']!r}"


def samples(records: Iterable[dict[str, Any]], tasks: set[str] | None = None) -> list[dict]:
    """One record per (optimizer, task): the lowest seed, then the lowest rate, preferring
    runs that did not diverge."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        if tasks is not None and rec["task"] not in tasks:
            continue
        k = (rec["optimizer"], rec["task"])
        rank = (rec.get("diverged", False), rec["seed"], rec.get("lr") or 0.0)
        if k not in best or rank < best[k]["_rank"]:
            best[k] = {**rec, "_rank": rank}
    return [{k: v for k, v in r.items() if k != "_rank"} for r in best.values()]


def check(
    rec: dict[str, Any],
    epochs: int = 1,
    steps: int = 20,
    cfg: BenchConfig | None = None,
    splits: dict | None = None,
) -> tuple[bool, str]:
    """Retrain the first epochs of ``rec`` with the current code; (identical?, description)."""
    task = get_task(rec["task"])
    spe = max(1, int(rec.get("steps_per_epoch") or 1))
    n = min(rec["epochs"], max(epochs, -(-steps // spe)))
    kwargs = dict(train_subset=rec["train_subset"], test_subset=rec.get("test_subset"))
    full = plan([task.name], [_spec(rec)], rec["seed"] + 1, rec["epochs"], **kwargs)
    short = plan([task.name], [_spec(rec)], rec["seed"] + 1, n, **kwargs)
    full, short = full[rec["seed"]], short[rec["seed"]]
    label = f"{rec['task']}/{rec['optimizer']}/lr={rec.get('lr')}/seed={rec['seed']}/epochs={n}"
    if _stem(full.key) != _stem(rec["key"]):
        return False, f"{label}: the plan's key {full.key!r} is not the record's {rec['key']!r}"
    splits = {} if splits is None else splits
    if task.name not in splits:
        splits[task.name] = task.load(cfg or BenchConfig())
    split = subset_split(splits[task.name], short.train_subset, short.test_subset)
    torch.set_num_threads(int(rec.get("env", {}).get("threads") or 1))
    new = run_one(short, split)
    old = rec["per_epoch"][:n]
    if len(new["per_epoch"]) != len(old):
        return False, f"{label}: {len(new['per_epoch'])} epochs now, {len(old)} stored"
    for i, (a, b) in enumerate(zip(new["per_epoch"], old)):
        bad = [f for f in FIELDS if not _same(a[f], b[f])]
        if bad:
            f = bad[0]
            return False, f"{label}: epoch {i + 1} differs in {bad} ({a[f]!r} vs {b[f]!r})"
    return True, label


def verify(
    path: Path, olds: list[str], epochs: int, steps: int, tasks: set[str] | None = None, log=print
) -> dict[str, list[str]]:
    """For each optimizer with records under ``olds``: its checks, if all matched (else
    it is left out of the result and the mismatch is logged)."""
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    stale = [r for r in recs if r["key"].rsplit("|code=", 1)[-1] in olds]
    by_opt: dict[str, list[dict]] = {}
    for rec in samples(stale, tasks):
        by_opt.setdefault(rec["optimizer"], []).append(rec)
    ok: dict[str, list[str]] = {}
    splits: dict = {}
    for name, recs_ in sorted(by_opt.items()):
        labels = []
        for rec in sorted(recs_, key=lambda r: r["task"]):
            same, label = check(rec, epochs, steps, splits=splits)
            if not same:
                log(f"MISMATCH {label}")
                break
            labels.append(label)
        else:
            ok[name] = labels
            log(f"identical: {name} ({len(labels)} checks)")
    return ok


def rekey(
    path: Path, old: str | list[str], reason: str, verified: dict[str, list[str]] | None = None
) -> tuple[int, int]:
    """Rewrite ``path`` in place; returns (records carried, records left as they were).

    ``verified`` is None: baseline and peer records under ``old`` are carried (the person's
    word). Otherwise exactly the records of the optimizers it names are carried, lrfree ones
    included, each with the checks that cleared it."""
    olds = [old] if isinstance(old, str) else list(old)
    lines = path.read_text().splitlines()
    out, carried, kept = [], 0, 0
    seen = set()
    for line in lines:
        rec = json.loads(line)
        fp = rec["key"].rsplit("|code=", 1)[-1]
        if verified is None:
            eligible = rec.get("family") in ("baseline", "peer")
        else:
            eligible = rec.get("optimizer") in verified
        if fp in olds and eligible and fp != _new_fingerprint(rec):
            rec["key"] = rec["key"][: -len(fp)] + _new_fingerprint(rec)
            entry: dict[str, Any] = {"from": fp, "reason": reason}
            if verified is not None:
                entry["verified"] = verified[rec["optimizer"]]
            rec["rekeys"] = [*rec.get("rekeys", []), entry]
            carried += 1
        else:
            kept += 1
        if rec["key"] in seen:  # a record of the new code already there: keep the first
            continue
        seen.add(rec["key"])
        out.append(json.dumps(rec))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n")
    tmp.replace(path)
    return carried, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--from", dest="old", required=True, help="old fingerprint(s), comma-separated")
    ap.add_argument("--reason", required=True, help="what changed")
    ap.add_argument("--verify", action="store_true", help="retrain samples; carry what matches")
    ap.add_argument("--verify-epochs", type=int, default=1)
    ap.add_argument("--verify-steps", type=int, default=20)
    ap.add_argument("--tasks", help="comma-separated: check only these tasks (default: all)")
    args = ap.parse_args()
    olds = [s.strip() for s in args.old.split(",") if s.strip()]
    current = {loop_fingerprint(), code_fingerprint()}
    if set(olds) <= current:
        raise SystemExit(f"{olds} are the current fingerprints: nothing to carry")
    verified = None
    if args.verify:
        tasks = set(args.tasks.split(",")) if args.tasks else None
        verified = verify(args.results, olds, args.verify_epochs, args.verify_steps, tasks)
    carried, kept = rekey(args.results, olds, args.reason, verified)
    print(
        f"carried {carried} records to loop {loop_fingerprint()} / code {code_fingerprint()}; "
        f"{kept} unchanged"
    )


if __name__ == "__main__":
    main()
