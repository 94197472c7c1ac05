"""The evidence table of docs/choosing.md, from the bench's report.json (not a training run).

Per task: the tuned baseline (the better grid at its best rate), the best and second-best
lrfree optimizer at its defaults (chosen after the fact, so it flatters lrfree), the best peer,
and optionally `Auto` from a second report (its own run of the same suite and seeds).

    python benchmarks/evidence_table.py benchmarks/out/full-suite/report.json \\
        --auto benchmarks/out/auto-eval/report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAMES = {
    "sgd-lw": "SGDLW", "adamw-lw": "AdamWLW", "sgd-tlr": "SGDTLR", "adam-tlr": "AdamTLR",
    "adalip": "AdaLip", "rmslip": "RMSLip", "adamlip": "AdamLip", "adalip-u": "AdaLipU",
    "rmslip-u": "RMSLipU", "adamlip-u": "AdamLipU", "adler": "ADLER", "sgd-hd": "SGDHD",
    "sgdn-hd": "SGDNHD", "adam-hd": "AdamHD", "sgd-camhd": "SGDCAMHD",
    "sgdn-camhd": "SGDNCAMHD", "adam-camhd": "AdamCAMHD", "auto": "Auto",
    "prodigy": "Prodigy", "dadapt-adam": "D-Adapt Adam", "schedulefree-adamw":
    "schedule-free AdamW", "prodigy-sf": "Prodigy + schedule-free", "dog": "DoG", "ldog": "LDoG",
}  # fmt: skip


def _value(r: dict[str, Any], higher: bool) -> str:
    return f"{r['acc_mean']:.2f}" if higher else f"{r['acc_mean']:.4f}"


def _gap(r: dict[str, Any], tuned: dict[str, Any], higher: bool) -> str:
    d = r["acc_mean"] - tuned["acc_mean"]
    return f"{d:+.2f}" if higher else f"{d:+.4f}"


def table(report: dict[str, Any], auto: dict[str, Any] | None = None) -> str:
    head = "| task | tuned baseline | best lrfree at defaults (gap) | second | best peer |"
    rule = "|---|---|---|---|---|"
    if auto is not None:
        head += " `Auto` (gap) |"
        rule += "---|"
    lines = [head, rule]
    for task, t in report["tasks"].items():
        higher = t["higher_is_better"]
        rows = t["rows"]  # sorted best first
        tuned = next(r for r in rows if r["spec"] == t["tuned"])
        lrfree = [r for r in rows if r["family"] == "lrfree" and r["spec"] != "auto"]
        peers = [r for r in rows if r["family"] == "peer"]
        grid = "AdamW" if tuned["spec"].startswith("adamw") else "SGD-m"
        name = task if higher else f"{task} (test loss)"
        cells = [
            name,
            f"{grid} {tuned['lr']:g}: {_value(tuned, higher)}",
            f"{NAMES.get(lrfree[0]['spec'], lrfree[0]['spec'])} {_value(lrfree[0], higher)} "
            f"({_gap(lrfree[0], tuned, higher)})",
            f"{NAMES.get(lrfree[1]['spec'], lrfree[1]['spec'])} {_value(lrfree[1], higher)}",
            f"{NAMES.get(peers[0]['spec'], peers[0]['spec'])} {_value(peers[0], higher)}"
            if peers
            else "-",
        ]
        if auto is not None:
            a = next(
                (r for r in auto["tasks"].get(task, {}).get("rows", []) if r["spec"] == "auto"),
                None,
            )
            cells.append(f"{_value(a, higher)} ({_gap(a, tuned, higher)})" if a else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--auto", type=Path, help="a report.json with an `auto` row per task")
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    auto = json.loads(args.auto.read_text()) if args.auto else None
    print(table(report, auto))


if __name__ == "__main__":
    main()
