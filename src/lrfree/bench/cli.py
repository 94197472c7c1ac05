"""``lrfree bench``: its command-line arguments (``add_parser``) and what it does (``main``):
plan, estimate, train (``pool.run_suite``), report.

``lrfree.cli`` only dispatches to it. The benchmark's modules are imported when the command
runs, so ``lrfree --help`` needs none of the ``bench`` extra.

Example::

    >>> import argparse
    >>> sub = argparse.ArgumentParser(prog="lrfree").add_subparsers(dest="command")
    >>> args = add_parser(sub).parse_args(["--task", "mnist1d-mlp", "--estimate"])
    >>> args.task, args.suite, args.func is main
    ('mnist1d-mlp', 'quick', True)
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main"]


def _paper_suite_names() -> list[str]:
    """The ``--suite paper-*`` choices; none in the core install, where the bench's own
    dependencies (numpy, ...) are missing and ``lrfree --help`` must still work."""
    try:
        from .suites import PAPER_SUITES
    except ImportError:
        return []
    return list(PAPER_SUITES)


DESCRIPTION = """\
Benchmark lrfree's optimizers at their defaults against tuned baselines (a learning-rate grid,
whose whole cost is reported) and learning-rate-free peers, on the same tasks, seeds and data
order, in one run on this machine.

With no arguments: the quick suite on MNIST-1D (generated locally by the mnist1d package, no
download), an MLP and a CNN, one seed (--suite full: three seeds); it prints a table and
writes results.jsonl, report.md, report.json and PNG plots into --out. Runs already in
--out/results.jsonl are not redone, so a killed run restarted with the same --out finishes
only what is left (--fresh starts over).
Runs train in parallel, one per CPU with one torch thread each (--jobs, --threads). The
plan's estimated time (measured costs, lrfree.bench.cost) is printed before training;
--suite full (3 seeds by default) is estimated at 1 h 32 min with two runs at once on a
2-core CPU (the costs fitted to the stored runs of the suite; --estimate prints the plan).
"""
EPILOG = """\
examples:
  lrfree bench
  lrfree bench --list
  lrfree bench --task fmnist-mlp --optimizers adamw@grid,adamw,prodigy --seeds 3 --epochs 10
  lrfree bench --suite full --estimate
  lrfree bench --suite full --out bench-out/full --results-page docs/results.md
  lrfree bench --task mnist1d-cnn --jobs 1 --threads 2   # one run at a time, two threads
  lrfree bench --tensorboard runs/bench && tensorboard --logdir runs/bench
"""


def _list() -> None:
    """``--list``: the tasks, the suites' sizes and the optimizers."""
    from .optimizers import BENCH_OPTIMIZERS
    from .tasks import SUITES, TASKS

    print("tasks:")
    for t in TASKS.values():
        bs = "full batch" if t.batch_size == 0 else f"batch {t.batch_size}"
        print(f"  {t.name:18s} {t.description} ({t.epochs} epochs, {bs})")
    print("suites (task: epochs, training examples, test examples):")
    for name, sizes in SUITES.items():
        print(f"  {name}:")
        for task, size in sizes.items():
            t = TASKS[task]
            print(
                f"    {task:18s} {size.epochs or t.epochs} epochs, "
                f"{size.train_subset or t.train_subset or 'all'} train, "
                f"{size.test_subset or 'all'} test"
            )
    print("optimizers (name[@grid|@LR]):")
    for e in BENCH_OPTIMIZERS.values():
        mark = "" if e.available() else "  [not installed: pip install lrfree[peers]]"
        grid = f" grid={list(e.grid)}" if e.grid else ""
        print(f"  {e.name:20s} {e.family:8s} {e.note}{grid}{mark}")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _specs(args: argparse.Namespace) -> tuple[list[str], list[str]] | str:
    """The tasks and optimizer specs asked for, or what is wrong with them."""
    from . import optimizers as bopt
    from .suites import PAPER_SUITES, suite_plan
    from .tasks import SUITES, TASKS

    paper = args.suite in PAPER_SUITES
    tasks = args.task.split(",") if args.task else (
        suite_plan(args.suite).tasks if paper else list(SUITES[args.suite])
    )  # fmt: skip
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        return f"unknown task(s) {unknown}; known: {sorted(TASKS)}"
    if args.optimizers:
        optimizers = bopt.split_specs(args.optimizers)
    elif paper:
        optimizers = suite_plan(args.suite).optimizers
    else:
        optimizers = bopt.default_optimizers(args.suite)

    def available(spec: str) -> bool:
        try:
            return bopt.lookup(bopt.split_spec(spec)[0]).available()
        except ValueError:
            return False

    missing = [o for o in optimizers if not available(o)]
    if missing:
        return (
            f"optimizer(s) not available: {missing} "
            f"(known: {sorted(bopt.BENCH_OPTIMIZERS)}; peers need pip install lrfree[peers])"
        )
    return tasks, optimizers


def _report(
    args: argparse.Namespace, records: list[dict[str, Any]], meta: dict[str, Any], out: Path
) -> None:
    """Write report.md, report.json, the plots and the results page; print the table."""
    from . import pages, report

    agg = report.aggregate(records)
    md = pages.report_markdown(records, agg, meta)
    (out / "report.md").write_text(md)
    report.write_json(agg, meta, out / "report.json")
    pngs = [] if args.no_plots else pages.plots(agg, out)
    print(md)
    print(
        f"wrote {out / 'results.jsonl'}, {out / 'report.md'}, {out / 'report.json'}"
        + (f", {len(pngs)} PNG plots" if pngs else "")
        + (f"; TensorBoard logs in {args.tensorboard}" if args.tensorboard else "")
    )
    if args.results_page:
        page = pages.results_page(md, meta, pngs, Path(args.results_page))
        print(f"wrote {page} and its plots in {page.parent / page.stem}")


def main(args: argparse.Namespace) -> int:
    """Run ``lrfree bench`` with the parsed ``args``; the exit status (0, 2 on a usage or
    data error, 130 when interrupted)."""
    from . import cost
    from .data import DataMissing
    from .loop import environment
    from .plan import plan
    from .pool import default_jobs, run_suite
    from .results import load_results
    from .tasks import SUITES, BenchConfig

    if args.list:
        _list()
        return 0
    from .suites import PAPER_SUITES, plan_runs, suite_plan

    paper = args.suite in PAPER_SUITES and not (args.task or args.optimizers)
    seeds_asked = args.seeds
    if args.seeds is None:  # the full and long suites' verdicts need more than one seed
        args.seeds = 3 if args.suite in ("full", "long") else 1
        if args.suite in PAPER_SUITES:
            args.seeds = suite_plan(args.suite).seeds
    specs = _specs(args)
    if isinstance(specs, str):
        return _error(specs)
    tasks, optimizers = specs
    if (args.jobs is not None and args.jobs < 1) or (args.threads is not None and args.threads < 1):
        return _error("--jobs and --threads must be positive")
    jobs = args.jobs or default_jobs(args.threads)
    threads = args.threads or max(1, default_jobs() // jobs)
    out = Path(args.out or f"bench-out/{args.suite}")
    try:
        if paper:  # the paper's parts: each its own tasks, specs and seeds
            runs = plan_runs(
                args.suite,
                epochs=args.epochs,
                train_subset=args.train_subset,
                test_subset=args.test_subset,
                seeds=seeds_asked,
            )
        else:
            runs = plan(
                tasks,
                optimizers,
                args.seeds,
                args.epochs,
                args.train_subset,
                sizes=SUITES[args.suite] if args.suite in SUITES else suite_plan(args.suite).sizes,
                test_subset=args.test_subset,
            )
    except ValueError as exc:
        return _error(str(exc))
    done = load_results(out / "results.jsonl") if not args.fresh else {}
    todo = list({r.key: r for r in runs if r.key not in done}.values())
    estimate = cost.estimate(todo, jobs=jobs) if todo else 0.0
    parallel = f" with {jobs} parallel runs of {threads} thread(s)" if jobs > 1 else ""
    print(
        f"plan: {len({r.key for r in runs})} runs on {len(tasks)} task(s), "
        f"{len(todo)} to train; estimated {cost.format_seconds(estimate)}{parallel} "
        "(measured step and evaluation costs, lrfree.bench.cost)",
        file=sys.stderr,
        flush=True,
    )
    if args.estimate:
        return 0
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    try:
        records = run_suite(
            runs,
            out,
            BenchConfig(args.data_dir, args.download),
            progress=not args.no_progress,
            fresh=args.fresh,
            tb_dir=args.tensorboard,
            jobs=jobs,
            threads=threads,
        )
    except DataMissing as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        kept = len(load_results(out / "results.jsonl"))
        print(
            f"\ninterrupted: {kept} finished run(s) are kept in {out / 'results.jsonl'}; "
            "the same command trains only the rest",
            file=sys.stderr,
        )
        return 130
    sizes: dict[str, dict[str, Any]] = {}
    for r in runs:
        sizes.setdefault(
            r.task.name,
            {"epochs": r.epochs, "train_subset": r.train_subset, "test_subset": r.test_subset},
        )
    meta = {
        "suite": args.suite if paper else None,  # a paper suite's runs: plan_runs (redraw)
        "seeds_asked": seeds_asked,
        "tasks": tasks,
        "optimizers": optimizers,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "train_subset": args.train_subset,
        "sizes": sizes,
        "env": {**environment(), "threads": threads, "jobs": min(jobs, max(len(todo), 1))},
        "date": date,
        "wall_seconds": time.perf_counter() - t0,
        "estimate_seconds": estimate,
        "n_runs": len({r.key for r in runs}),
        "n_trained": len(todo),
        "train_seconds_total": sum(x["seconds"] for x in {x["key"]: x for x in records}.values()),
        "command": "lrfree " + " ".join(sys.argv[1:] if len(sys.argv) > 1 else ["bench"]),
    }
    _report(args, records, meta, out)
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` command to ``sub`` (``ArgumentParser.add_subparsers()``); its
    ``func`` default is ``main``."""
    b = sub.add_parser(
        "bench",
        help="run the benchmark",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--suite",
        choices=["quick", "full", "long", *_paper_suite_names()],
        default="quick",
        help="quick: MNIST-1D tasks (default, about 2 minutes); full: every task, 3 seeds "
        "(about 1 h 32 min estimated on 2 CPU cores); long: the Fashion-MNIST tasks at 10 "
        "epochs on up to 60k images (many hours: run it seed by seed); paper-*: one paper's "
        "experiment (docs/benchmark.md); see --list and --estimate",
    )
    b.add_argument("--task", help="comma-separated task names (see --list); overrides --suite")
    b.add_argument(
        "--optimizers",
        help="comma-separated: NAME, NAME@grid or NAME@LR; NAME[key=value,...] passes "
        "constructor arguments, e.g. adam-tlr[preset=paper] "
        "(default: adamw, adamw@grid, sgd-m@grid and every lrfree optimizer)",
    )
    b.add_argument(
        "--seeds", type=int, help="seeds 0..N-1 (default: 3 for --suite full, 1 otherwise)"
    )
    b.add_argument("--epochs", type=int, help="override every task's epochs")
    b.add_argument("--train-subset", type=int, help="use the first N training examples")
    b.add_argument("--test-subset", type=int, help="evaluate on the first N test examples")
    b.add_argument("--out", help="output folder (default bench-out/<suite>)")
    b.add_argument("--data-dir", help="folder with Fashion-MNIST / Planetoid raw files")
    b.add_argument("--download", action="store_true", help="download missing datasets")
    b.add_argument("--fresh", action="store_true", help="ignore results already in --out")
    b.add_argument(
        "--jobs",
        type=int,
        help="runs trained at once, each in its own process (default: the usable CPUs "
        "divided by --threads; 1 trains in this process); a run's record does not depend on "
        "which process trained it or when",
    )
    b.add_argument(
        "--threads",
        type=int,
        help="torch threads per run (default: the usable CPUs divided by --jobs)",
    )
    b.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--list", action="store_true", help="list tasks and optimizers, then exit")
    b.add_argument(
        "--estimate", action="store_true", help="print the plan's estimated time, then exit"
    )
    b.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write TensorBoard logs (optimizer read-outs, epoch metrics) into DIR",
    )
    b.add_argument(
        "--results-page",
        metavar="PATH",
        help="also write a results page (markdown + plots beside it), e.g. docs/results.md",
    )
    b.set_defaults(func=main)
    return b
