"""All six AdaLip variants under both schedules, against their bases (paper Tables 2-3 setting).

SGD, RMSProp, Adam and AdaLip / RMSLip / AdamLip / AdaLipU / RMSLipU / AdamLipU, each Lip
variant with ``schedule="constant"`` and ``schedule="sqrt"``, on Fashion-MNIST with the paper's
MNIST CNN (``adalip_robustness.cnn``), batch 128, over the paper's LR lists, several seeds.
It reuses ``adalip_robustness.run`` (one training run) and ``adalip_robustness.table`` (the
paper's statistics), so a run here is the same computation as a run there.

Results go to ``<out>/results_<tag>.jsonl``, one line per run, written as each run ends; every
``results_*.jsonl`` in ``--out`` is read first and runs already there are skipped (resume, more
seeds, or several processes with disjoint ``--names`` / ``--seeds`` and their own ``--tag``).
Earlier ``adalip_robustness`` outputs of the same setting can be imported with
``--import-constant`` / ``--import-sqrt`` (their Lip rows get the schedule given).

Prints: (1) per family, base vs Lip vs Lip-U at each schedule, the paper's statistics over the
LRs (each LR: median over seeds); (2) the std-over-LRs verdict; (3) constant vs sqrt, paired
per (variant, LR, seed); (4) the per-LR medians.

All rows, three seeds (docs/adalip.md gives the subsets actually run, with ``--names``)::

    python benchmarks/adalip_variants.py --train-subset 2048 --test-subset 1000 \\
        --epochs 5 --seeds 0 1 2 \\
        --import-constant benchmarks/out/adalip_robustness/results_constant_seeds01.json \\
        --import-sqrt benchmarks/out/adalip_robustness/results_sqrt.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adalip_robustness as ar

from lrfree.bench.data import load_fashion_mnist

FAMILIES = {
    "sgd": ("SGD", "AdaLip", "AdaLipU"),
    "rmsprop": ("RMSProp", "RMSLip", "RMSLipU"),
    "adam": ("Adam", "AdamLip", "AdamLipU"),
}
SCHEDULES = ("constant", "sqrt")
SHORT = {"constant": "c", "sqrt": "s"}


def key(name: str, schedule: str | None) -> str:
    """Row label: ``AdaLip/c``, ``AdaLipU/s``; bases keep their name."""
    return name if schedule is None else f"{name}/{SHORT[schedule]}"


def jobs(
    families: list[str],
    seeds: list[int],
    names: list[str] | None = None,
    schedules: tuple[str, ...] = SCHEDULES,
) -> list[tuple[int, str, str | None, float]]:
    """(seed, optimizer, schedule, lr), seed-major so that a cut-short run leaves whole seeds;
    ``names`` keeps only those optimizers (bases included), ``schedules`` those schedules."""
    out = []
    for seed in seeds:
        for fam in families:
            base, *lips = FAMILIES[fam]
            if names is None or base in names:
                out += [(seed, base, None, lr) for lr in ar.LRS[fam]]
            for schedule in schedules:
                for name in lips:
                    if names is None or name in names:
                        out += [(seed, name, schedule, lr) for lr in ar.LRS[fam]]
    return out


def import_old(path: Path, schedule: str) -> list[dict]:
    """Rows of an ``adalip_robustness`` results file, with the schedule their Lip rows ran at."""
    rows = []
    for r in json.loads(path.read_text()):
        is_lip = r["name"] not in ("SGD", "RMSProp", "Adam")
        if not is_lip and schedule == "sqrt":
            continue  # the bases do not depend on the schedule; take them from the constant file
        rows.append(dict(r, schedule=schedule if is_lip else None, rates=[], imported=str(path)))
    return rows


def per_lr(results: list[dict], label: str, field: str = "peak") -> dict[float, float]:
    """LR -> median over seeds of ``field`` for one row label."""
    lrs = sorted({r["lr"] for r in results if r["label"] == label})
    return {
        lr: statistics.median(r[field] for r in results if r["label"] == label and r["lr"] == lr)
        for lr in lrs
    }


def std_verdict(results: list[dict], families: list[str]) -> list[str]:
    lines = []
    for fam in families:
        base, *lips = FAMILIES[fam]
        b = per_lr(results, base)
        bt = per_lr(results, base, "test_acc")
        sb, sbt = statistics.pstdev(b.values()), statistics.pstdev(bt.values())
        for name in lips:
            for schedule in SCHEDULES:
                lab = key(name, schedule)
                v = per_lr(results, lab)
                vt = per_lr(results, lab, "test_acc")
                if len(v) != len(b):
                    continue
                s, st = statistics.pstdev(v.values()), statistics.pstdev(vt.values())
                lines.append(
                    f"{lab:11s} std(peak) {s:.3f} vs {base} {sb:.3f}: "
                    f"{'LOWER' if s < sb else 'higher'}; std(test) {st:.3f} vs {sbt:.3f}: "
                    f"{'LOWER' if st < sbt else 'higher'}"
                )
    return lines


def schedule_pairs(results: list[dict], families: list[str]) -> list[str]:
    """constant vs sqrt paired on (variant, lr, seed): wins, mean difference of peaks."""
    lines = ["| variant | pairs | constant wins | sqrt wins | mean peak c - s | mean test c - s |"]
    lines.append("|---|---|---|---|---|---|")
    for fam in families:
        for name in FAMILIES[fam][1:]:
            idx = {}
            for r in results:
                if r["name"] == name and r.get("schedule") in SCHEDULES:
                    idx[(r["schedule"], r["lr"], r["seed"])] = r
            pairs = [
                (idx[("constant", lr, s)], idx[("sqrt", lr, s)])
                for (sch, lr, s) in idx
                if sch == "constant" and ("sqrt", lr, s) in idx
            ]
            if not pairs:
                continue
            cw = sum(c["peak"] > s["peak"] for c, s in pairs)
            sw = sum(s["peak"] > c["peak"] for c, s in pairs)
            dp = statistics.fmean(c["peak"] - s["peak"] for c, s in pairs)
            dt = statistics.fmean(c["test_acc"] - s["test_acc"] for c, s in pairs)
            lines.append(f"| {name} | {len(pairs)} | {cw} | {sw} | {dp:+.3f} | {dt:+.3f} |")
    return lines


def lr_table(results: list[dict], families: list[str]) -> list[str]:
    lines = []
    for fam in families:
        base, *lips = FAMILIES[fam]
        labels = [base] + [key(n, s) for s in SCHEDULES for n in lips]
        labels = [lab for lab in labels if any(r["label"] == lab for r in results)]
        cols = {lab: per_lr(results, lab) for lab in labels}
        lines.append("| lr | " + " | ".join(labels) + " |")
        lines.append("|---" * (len(labels) + 1) + "|")
        for lr in ar.LRS[fam]:
            lines.append(
                f"| {lr:g} | "
                + " | ".join(f"{cols[lab][lr]:.3f}" if lr in cols[lab] else "-" for lab in labels)
                + " |"
            )
        lines.append("")
    return lines


def report(results: list[dict], families: list[str]) -> str:
    target = 0.98 * max(r["peak"] for r in results)
    seeds = sorted({r["seed"] for r in results})
    out = [f"runs: {len(results)}; seeds: {seeds}; maximum peak {target / 0.98:.4f}"]
    for fam in families:
        base, *lips = FAMILIES[fam]
        names = [base] + [key(n, s) for s in SCHEDULES for n in lips]
        names = [n for n in names if any(r["label"] == n for r in results)]
        sub = [dict(r, name=r["label"]) for r in results if r["label"] in names]
        out += ["", f"### {fam}", "", ar.table(sub, names, target)]
    out += ["", "### std over LRs: lower than the base? (peak training / test accuracy)", ""]
    out += std_verdict(results, families)
    out += ["", "### constant vs sqrt, paired per (variant, lr, seed)", ""]
    out += schedule_pairs(results, families)
    out += ["", "### per-LR peak training accuracy (median over seeds)", ""]
    out += lr_table(results, families)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=None, help="first N training examples")
    ap.add_argument("--test-subset", type=int, default=None, help="first N test examples")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--names", nargs="+", default=None, help="only these optimizers")
    ap.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    ap.add_argument("--tag", default="main", help="this process writes results_<tag>.jsonl")
    ap.add_argument("--import-constant", type=Path, nargs="*", default=[])
    ap.add_argument("--import-sqrt", type=Path, nargs="*", default=[])
    ap.add_argument("--keep-rates", type=int, nargs="*", default=[0], help="seeds to keep rates")
    ap.add_argument("--reverse", action="store_true", help="run the job list backwards")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="print the tables, run nothing")
    ap.add_argument(
        "--report-seeds", type=int, nargs="*", default=None, help="tables over these seeds only"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/adalip_variants"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"results_{args.tag}.jsonl"
    results = [
        json.loads(line)
        for path in sorted(args.out.glob("results_*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    for path in args.import_constant:
        results += import_old(path, "constant")
    for path in args.import_sqrt:
        results += import_old(path, "sqrt")
    seen: set[tuple] = set()
    unique = []
    for r in results:
        r["label"] = key(r["name"], r.get("schedule"))
        k = (r["label"], r["lr"], r["seed"])
        if k not in seen:
            seen.add(k)
            unique.append(r)
    results = unique
    todo = [
        j
        for j in jobs(args.families, args.seeds, args.names, tuple(args.schedules))
        if (key(j[1], j[2]), j[3], j[0]) not in seen
    ]
    if args.reverse:  # a second process meeting the first one halfway
        todo.reverse()
    print(
        f"Fashion-MNIST train_subset={args.train_subset} test_subset={args.test_subset} "
        f"epochs={args.epochs} batch={args.batch_size} seeds={args.seeds} "
        f"torch={torch.__version__} threads={args.threads}; {len(results)} runs loaded, "
        f"{len(todo)} to run",
        flush=True,
    )
    if not args.report_only and todo:
        data = load_fashion_mnist(train_subset=args.train_subset)
        if args.test_subset is not None:
            data.x_test = data.x_test[: args.test_subset]
            data.y_test = data.y_test[: args.test_subset]
        t0 = time.time()
        with log.open("a") as f:
            for seed, name, schedule, lr in todo:
                cfg = SimpleNamespace(
                    epochs=args.epochs, batch_size=args.batch_size, schedule=schedule or "constant"
                )
                r = ar.run(name, lr, seed, data, cfg)
                r["schedule"] = schedule
                if seed not in args.keep_rates:
                    r["rates"] = []
                f.write(json.dumps(r) + "\n")
                f.flush()
                r["label"] = key(name, schedule)
                results.append(r)
                print(
                    f"{r['label']:10s} lr={lr:<7g} seed={seed} peak={r['peak']:.4f} "
                    f"test={r['test_acc']:.4f} [{time.time() - t0:.0f}s]",
                    flush=True,
                )
        print(f"total {time.time() - t0:.0f}s")
    if args.report_seeds is not None:
        results = [r for r in results if r["seed"] in args.report_seeds]
    text = report(results, args.families)
    print(text)
    tag = "" if args.report_seeds is None else "_seeds" + "".join(map(str, args.report_seeds))
    (args.out / f"report{tag}.md").write_text(text + "\n")
    traced = [r for r in results if r.get("rates") and r.get("schedule") == "constant"]
    if traced:  # per-tensor rates of the constant-schedule runs (paper Figs. 5-7)
        pick = {"AdaLip": 0.1, "AdaLipU": 0.1, "RMSLip": 1e-3, "RMSLipU": 1e-3}
        pick.update({"AdamLip": 1e-3, "AdamLipU": 1e-3})
        ar.plot_rates(traced, args.out / "rates_constant.png", pick)


if __name__ == "__main__":
    main()
