"""Copy the runs one benchmark folder needs from another that already holds them.

``benchmarks/out/auto-eval`` (``make results-auto``: Auto, the grids and the peers) is a part
of ``benchmarks/out/full-suite`` (``make results``: every optimizer): the same tasks, seeds
and sizes, so every run it plans has the same key in both folders, and a key names everything
a run depends on (task, optimizer, rate, seed, epochs, subsets and the fingerprint of the code
that trained it). This script appends to DST's ``results.jsonl`` each record of SRC whose key
is a run of DST's plan (read from DST's ``report.json``, as ``python -m lrfree.bench.pages``
reads it) and that DST does not hold yet, instead of training it a second time:

    python benchmarks/share_records.py benchmarks/out/full-suite benchmarks/out/auto-eval
    python -m lrfree.bench.pages benchmarks/out/auto-eval --results-page docs/results-auto.md

Each copied record gains ``"shared_from": SRC``. Nothing is overwritten; a run neither folder
holds is left for ``lrfree bench`` to train.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lrfree.bench.pages import planned_runs, stored_records
from lrfree.bench.results import append_result, load_results


def share(src: Path, dst: Path) -> int:
    """Append to ``dst/results.jsonl`` the records of ``src`` that ``dst``'s plan needs and
    lacks; return how many."""
    if not (src / "results.jsonl").is_file() or not (dst / "report.json").is_file():
        return 0  # nothing to share, or no plan to share into: lrfree bench trains it all
    _, meta = stored_records(dst)
    runs = planned_runs(meta)
    have = load_results(dst / "results.jsonl")
    theirs = load_results(src / "results.jsonl")
    n = 0
    for key in dict.fromkeys(r.key for r in runs):
        if key in have or key not in theirs:
            continue
        append_result(dst / "results.jsonl", {**theirs[key], "shared_from": str(src)})
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="the folder that holds the runs")
    ap.add_argument("dst", type=Path, help="the folder whose plan needs them")
    a = ap.parse_args()
    n = share(a.src, a.dst)
    print(f"{a.dst / 'results.jsonl'}: {n} record(s) copied from {a.src}")


if __name__ == "__main__":
    main()
