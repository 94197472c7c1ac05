"""Carry torch-baseline and peer records over a change of the benchmark loop's fingerprint.

A run's key names the code that produced it (``lrfree.bench.runner.run_fingerprint``): for
torch baselines and peers, the hash of the loop files (runner, data, tasks, registry). Any edit
to those files, even one that cannot change a baseline's run (a new registry entry, a branch
taken only by lrfree optimizers), makes every baseline and peer record stale, and the grids are
most of the suite's cost. This script rewrites the keys of the baseline and peer records made
under ``--from`` to the current loop fingerprint, after a person has checked that the change
does not touch what those runs execute; each carried record appends
``{"from": "<old fingerprint>", "reason": ...}`` to its ``"rekeys"`` list, so every carry-over
stays visible.
lrfree records are never carried (their code is the library itself).

    python benchmarks/rekey.py benchmarks/out/full-suite/results.jsonl --from 6dcc5526f2 \\
        --reason "registry: adds auto and prodigy-sf; runner: train()/eval() also for lrfree"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lrfree.bench.runner import loop_fingerprint


def rekey(path: Path, old: str, reason: str) -> tuple[int, int]:
    """Rewrite ``path`` in place; returns (records carried, records left as they were)."""
    new = loop_fingerprint()
    lines = path.read_text().splitlines()
    out, carried, kept = [], 0, 0
    seen = set()
    for line in lines:
        rec = json.loads(line)
        if rec.get("family") in ("baseline", "peer") and rec["key"].endswith(f"|code={old}"):
            rec["key"] = rec["key"][: -len(old)] + new
            rec["rekeys"] = [*rec.get("rekeys", []), {"from": old, "reason": reason}]
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
    ap.add_argument("--from", dest="old", required=True, help="the old loop fingerprint")
    ap.add_argument("--reason", required=True, help="why the change cannot affect these runs")
    args = ap.parse_args()
    if args.old == loop_fingerprint():
        raise SystemExit(f"{args.old} is the current loop fingerprint: nothing to carry")
    carried, kept = rekey(args.results, args.old, args.reason)
    print(f"carried {carried} baseline/peer records to {loop_fingerprint()}; {kept} unchanged")


if __name__ == "__main__":
    main()
