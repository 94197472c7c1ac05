"""The benchmark: smoke runs of every task and optimizer, resume, the report's protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_available import fmnist_available
from lrfree.bench import optimizers as bopt
from lrfree.bench import report, runner
from lrfree.bench.data import CorpusMismatch, DataMissing
from lrfree.bench.tasks import TASKS, BenchConfig
from lrfree.cli import main


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains_a_few_batches(task, tmp_path):
    if task.startswith("fmnist") and not fmnist_available():
        pytest.skip("Fashion-MNIST not installed (make test installs dataset-fashion-mnist)")
    runs = runner.plan([task], ["adamw"], seeds=1, epochs=1, train_subset=256)
    try:
        (rec,) = runner.run_suite(runs, tmp_path, BenchConfig(), progress=False)
    except CorpusMismatch as exc:  # stdlib-charlm on another Python's sources
        pytest.skip(str(exc))
    assert rec["per_epoch"][0]["train_loss"] > 0
    if rec["metric_name"] == "accuracy":
        assert 0.0 <= rec["final_test_acc"] <= 1.0
    elif task == "stdlib-charlm":
        assert 0.0 < rec["final_metric"] < 6.0  # nats per byte; uniform: log(256) = 5.55
    else:
        assert 0.0 < rec["final_metric"] < 1.0  # mean binary cross-entropy per pixel


@pytest.mark.parametrize("name", bopt.available())
def test_every_optimizer_runs_on_the_quick_task(name, tmp_path):
    runs = runner.plan(["mnist1d-mlp"], [name], seeds=1, epochs=1, train_subset=512)
    (rec,) = runner.run_suite(runs, tmp_path, BenchConfig(), progress=False)
    assert torch.isfinite(torch.tensor(rec["final_train_loss"]))
    if rec["family"] == "lrfree":
        assert rec["rates"] and all(v > 0 for v in rec["rates"][-1].values())
        # 512 examples / 128 = 4 steps, traced at every step (fewer than TRACE_POINTS)
        assert [p["step"] for p in rec["rate_trace"]] == [1, 2, 3, 4]
    else:
        assert rec["rate_trace"] == []


HALF = '{"key": "half a line'


def test_resume_skips_finished_runs_and_reports_identically(tmp_path):
    cfg = BenchConfig()
    runs = runner.plan(
        ["mnist1d-mlp"], ["adamw", "sgd-m@0.05"], seeds=2, epochs=2, train_subset=256
    )
    part = runner.run_suite(runs[:2], tmp_path, cfg, progress=False)  # "killed" after two
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write(HALF)  # a crash mid-write
    full = runner.run_suite(runs, tmp_path, cfg, progress=False)
    lines = []
    for x in (tmp_path / "results.jsonl").read_text().splitlines():
        try:
            lines.append(json.loads(x))
        except json.JSONDecodeError:
            assert x == HALF
    assert len(lines) == 4  # the two done runs were not trained again
    assert full[:2] == part
    meta = {"seeds": 2, "epochs": 2, "train_subset": 256, "env": runner.environment()}
    again = runner.run_suite(runs, tmp_path, cfg, progress=False)
    assert report.markdown(report.aggregate(full), meta) == report.markdown(
        report.aggregate(again), meta
    )


def _rec(spec, lr, acc, seconds=1.0, grid=True, seed=0):
    return {
        "final_metric": 100 * acc,
        "higher_is_better": True,
        "metric_name": "accuracy",
        "task": "t",
        "spec": spec,
        "optimizer": spec.split("@")[0],
        "family": "baseline",
        "lr": lr,
        "grid": grid,
        "seed": seed,
        "final_test_acc": acc,
        "final_train_loss": 0.1,
        "seconds": seconds,
        "diverged": False,
        "rates": [],
        "per_epoch": [
            {
                "epoch": 1,
                "time": seconds / 2,
                "test_acc": acc - 0.1,
                "metric": 100 * acc - 10,
                "train_loss": 1.0,
            },
            {"epoch": 2, "time": seconds, "test_acc": acc, "metric": 100 * acc, "train_loss": 0.1},
        ],
    }


def test_report_picks_the_best_grid_rate_and_counts_the_whole_grid():
    recs = [
        _rec("adamw@grid", 1e-3, 0.80),
        _rec("adamw@grid", 1e-2, 0.90, seconds=2.0),
        _rec("adamw@grid", 1e-1, 0.10),
        _rec("x", None, 0.895, grid=False),
    ]
    agg = report.aggregate(recs)["t"]
    best = next(r for r in agg["rows"] if r["spec"] == "adamw@grid")
    assert best["lr"] == 1e-2 and best["acc_mean"] == pytest.approx(90.0)
    assert best["compute"] == pytest.approx(4.0) and best["seconds"] == pytest.approx(2.0)
    x = next(r for r in agg["rows"] if r["spec"] == "x")
    assert x["gap"] == pytest.approx(-0.5)
    assert agg["target"] == pytest.approx(89.1)
    assert x["time_to_target"] == pytest.approx(1.0)  # reached at epoch 2 only


def test_cli_help_and_list(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "--suite" in capsys.readouterr().out
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "mnist1d-mlp" in out and "adamw" in out


def test_cli_quick_run_writes_table_json_and_plots(tmp_path, capsys):
    code = main(
        [
            "bench",
            "--task",
            "mnist1d-mlp",
            "--optimizers",
            "adamw,sgd-m@grid",
            "--epochs",
            "1",
            "--train-subset",
            "256",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| adamw |" in out and "sgd-m@grid" in out
    assert (tmp_path / "report.json").is_file() and (tmp_path / "mnist1d-mlp.png").is_file()


def test_missing_dataset_message_names_both_ways(tmp_path, monkeypatch):
    from lrfree.bench import data

    monkeypatch.setattr(data, "DEBIAN_FMNIST", tmp_path / "none")
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("LRFREE_DATA", raising=False)
    with pytest.raises(DataMissing, match=r"apt-get install dataset-fashion-mnist.*download"):
        data.load_fashion_mnist(tmp_path / "empty")


def _cli(out, *extra):
    return [
        "bench",
        "--task",
        "mnist1d-cnn",
        "--optimizers",
        "adamw@grid",
        "--epochs",
        "2",
        "--train-subset",
        "2000",
        "--threads",
        "1",
        "--no-plots",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _lines(path):
    out = []
    for x in path.read_text().splitlines():
        try:
            out.append(json.loads(x))
        except json.JSONDecodeError:
            pass  # the line the kill cut
    return out


_TIMING = {"seconds", "cpu_seconds", "time", "cpu_time", "env"}


def _untimed(rec):
    """A record without its wall-clock fields (they differ between any two runs)."""
    out = {k: v for k, v in rec.items() if k not in _TIMING}
    out["per_epoch"] = [{k: v for k, v in e.items() if k not in _TIMING} for e in rec["per_epoch"]]
    return out


def test_killed_process_restarts_only_unfinished_runs_and_reports_identically(tmp_path, capsys):
    """A real SIGKILL of `lrfree bench` mid-suite, then the same command again."""
    import subprocess
    import sys
    import time

    runner.code_fingerprint.cache_clear()  # hash the source now, as the subprocess will
    runner.loop_fingerprint.cache_clear()
    threads = torch.get_num_threads()
    try:
        assert main(_cli(tmp_path / "whole")) == 0  # the uninterrupted run, for reference
    finally:
        torch.set_num_threads(threads)
    whole_md = capsys.readouterr().out
    whole = _lines(tmp_path / "whole" / "results.jsonl")
    assert len(whole) == 5

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrfree.cli", *_cli(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path, deadline = killed / "results.jsonl", time.monotonic() + 300
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers: set[int] = set()
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if children.is_file():  # the two worker processes (and multiprocessing's helper)
                workers |= {int(p) for p in children.read_text().split()}
            if path.is_file() and path.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    # the workers notice their parent is gone and stop (they would train on otherwise)
    alive = lambda: {p for p in workers if Path(f"/proc/{p}").exists() and not _zombie(p)}  # noqa: E731
    end = time.monotonic() + 20
    while alive() and time.monotonic() < end:
        time.sleep(0.05)
    assert not alive(), f"worker processes {alive()} outlived the killed benchmark"
    before = _lines(path)
    if proc.returncode == 0 or len(before) == 5:
        pytest.skip("the suite finished before it could be killed (a very fast machine)")
    assert 2 <= len(before) < 5
    if not before[0]["key"].endswith(f"|code={runner.loop_fingerprint()}"):
        pytest.skip("lrfree's source changed while the test ran (keys hash the source)")

    try:
        assert main(_cli(killed)) == 0
    finally:
        torch.set_num_threads(threads)
    restarted_md = capsys.readouterr().out
    after = _lines(path)
    assert after[: len(before)] == before  # the finished runs are read back, not redone
    assert len(after) == 5 and len({r["key"] for r in after}) == 5  # only the rest ran
    # identical results to the uninterrupted run, run by run (timings aside; two runs
    # train at once, so the lines are in the order runs finished) ...
    by_key = lambda recs: sorted((_untimed(r) for r in recs), key=lambda r: r["key"])  # noqa: E731
    assert by_key(after) == by_key(whole)

    # ... and an identical report but for the wall-clock columns
    def untimed_md(md):
        rows = []
        for line in md.splitlines():
            cells = line.split(" | ")
            rows.append(" | ".join(cells[:5]) if line.startswith("| adamw") else line)
        return [r for r in rows if "torch threads" not in r and not r.startswith("wrote")]

    assert untimed_md(restarted_md) == untimed_md(whole_md)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def test_parallel_runs_give_the_records_of_sequential_runs(tmp_path):
    """jobs=2 (two spawned workers) and jobs=1 give the same record for every run, returned
    in the plan's order; the runs are the ones with the most state (LW's curvature steps,
    TLR's windows) and a baseline."""
    cfg = BenchConfig()
    runs = runner.plan(
        ["mnist1d-mlp"], ["adamw", "sgd-lw", "sgd-tlr"], seeds=1, epochs=2, train_subset=512
    )
    threads = torch.get_num_threads()
    try:
        seq = runner.run_suite(runs, tmp_path / "seq", cfg, progress=False, threads=1)
    finally:
        torch.set_num_threads(threads)
    par = runner.run_suite(runs, tmp_path / "par", cfg, progress=False, jobs=2, threads=1)
    assert [r["key"] for r in par] == [r.key for r in runs]
    assert [_untimed(r) for r in par] == [_untimed(r) for r in seq]
    assert {r["env"]["jobs"] for r in par} == {2} and {r["env"]["threads"] for r in par} == {1}
    assert {r["env"]["jobs"] for r in seq} == {1}
    lines = _lines(tmp_path / "par" / "results.jsonl")
    assert sorted(x["key"] for x in lines) == sorted(r.key for r in runs)


def test_parallel_runs_stop_on_a_worker_error(tmp_path, monkeypatch):
    """An optimizer registered only in this process cannot be rebuilt in a worker: the
    worker's error reaches the caller, nothing is written for it, and jobs is checked."""
    entry = bopt.BenchOptimizer(
        "only-here", bopt._torch(torch.optim.SGD), "baseline", 0.1, note="test entry"
    )
    monkeypatch.setitem(bopt.BENCH_OPTIMIZERS, "only-here", entry)
    runs = runner.plan(["mnist1d-mlp"], ["only-here", "sgd-m"], 1, epochs=1, train_subset=256)
    with pytest.raises(ValueError, match="not registered in a fresh interpreter"):
        runner.run_suite(runs, tmp_path, BenchConfig(), progress=False, jobs=2, threads=1)
    written = tmp_path / "results.jsonl"
    keys = [x["key"] for x in _lines(written)] if written.is_file() else []
    assert all("only-here" not in k for k in keys)
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        runner.run_suite(runs, tmp_path, BenchConfig(), progress=False, jobs=0)
    assert main(["bench", "--jobs", "0", "--out", str(tmp_path)]) == 2


def test_suite_sizes_override_task_defaults_and_arguments_override_both():
    from lrfree.bench.tasks import TaskSize

    sizes = {"mnist1d-mlp": TaskSize(epochs=4, train_subset=300, test_subset=200)}
    (r,) = runner.plan(["mnist1d-mlp"], ["adamw"], 1, None, None, sizes=sizes)
    assert (r.epochs, r.train_subset, r.test_subset) == (4, 300, 200)
    (r,) = runner.plan(["mnist1d-mlp"], ["adamw"], 1, 2, 100, sizes=sizes, test_subset=50)
    assert (r.epochs, r.train_subset, r.test_subset) == (2, 100, 50)
    (r,) = runner.plan(["fmnist-2c2d"], ["adamw"], 1, None, None)
    assert (r.epochs, r.train_subset, r.test_subset) == (5, 10000, None)  # task defaults
    (r,) = runner.plan(["cora-gcn"], ["adamw"], 1, None, 100, test_subset=50)
    assert (r.train_subset, r.test_subset) == (None, None)  # a full graph is never cut
    with pytest.raises(ValueError, match="seeds"):
        runner.plan(["mnist1d-mlp"], ["adamw"], 0, None, None)


def test_subset_split_takes_the_first_examples():
    from lrfree.bench.data import Split

    s = Split(torch.arange(10.0), torch.arange(10), torch.arange(6.0), torch.arange(6))
    sub = runner.subset_split(s, 4, 3)
    assert sub.y_train.tolist() == [0, 1, 2, 3] and sub.y_test.tolist() == [0, 1, 2]
    assert runner.subset_split(s, None, None) is s
    with pytest.raises(ValueError, match="positive"):
        runner.subset_split(s, 0, None)


def _full_suite_runs(seeds: int = 1):
    from lrfree.bench.tasks import SUITES

    opts = bopt.default_optimizers("full")
    return opts, runner.plan(list(SUITES["full"]), opts, seeds, None, None, sizes=SUITES["full"])


def test_full_suite_covers_every_task_with_measured_costs():
    from lrfree.bench import cost
    from lrfree.bench.tasks import SUITES

    # every task but the development-only ones (tag "dev": in no suite) and the papers' own
    # models (tag "paper": in the paper suites only)
    other = {n for n, t in TASKS.items() if {"dev", "paper"} & set(t.tags)}
    assert set(SUITES["full"]) == set(TASKS) - other
    assert all(n not in s for s in SUITES.values() for n in other)
    opts, runs = _full_suite_runs()
    assert {n for n, e in bopt.BENCH_OPTIMIZERS.items() if e.family == "lrfree"} - {
        o.split("@")[0] for o in opts
    } == {"composed-adamw"}  # every named lrfree optimizer is in the suite
    # every task and optimizer of the suite has a measured cost (no fallback guesses)
    for task in {r.task.name: r.task for r in runs}.values():
        costs = (task.step_seconds, task.eval_seconds, task.load_seconds)
        assert all(c is not None and c > 0 for c in costs), task.name
        assert task.examples is not None, task.name
    assert {r.entry.name for r in runs} <= set(cost.FACTORS)


@pytest.mark.xfail(
    strict=True,
    reason="issue 19's budget, missed narrowly: with the cost tables fitted to the stored runs "
    "(benchmarks/calibrate_costs.py, 2026-12-05) and the CSR graph features, `make results` "
    "(3 seeds, 2 runs at once) is estimated at 1 h 32 min; the transformer task (28 min of "
    "runs, LW 13-14x an AdamW step there) and the GCNs' dropout masks are most of the excess",
)
def test_full_suite_fits_its_estimated_budget():
    from lrfree.bench import cost

    _, runs = _full_suite_runs(seeds=3)
    assert cost.estimate(runs, jobs=2) <= 90 * 60  # make results: 90 minutes on 2 cores


def test_cost_estimate_follows_its_formula():
    from lrfree.bench import cost

    (r,) = runner.plan(["fmnist-mlp"], ["sgd-lw"], 1, 3, 1000, test_subset=500)
    task = TASKS["fmnist-mlp"]
    assert task.step_seconds == 0.02544 and task.examples == (60000, 10000)
    steps = 8  # ceil(1000 / 128)
    expected = (
        3 * (steps * task.step_seconds * cost.FACTORS["sgd-lw"] + task.eval_seconds * 500 / 10000)
        + cost.SETUP_SECONDS
    )
    assert cost.run_seconds(r) == pytest.approx(expected)
    train = 3 * steps * task.step_seconds * cost.FACTORS["sgd-lw"]  # what "seconds" times
    assert cost.train_seconds(r) == pytest.approx(train)
    once = task.load_seconds + cost.STARTUP_SECONDS
    assert cost.estimate([r, r]) == pytest.approx(expected + once)  # a run asked twice: once
    assert cost.format_seconds(4321) == "1 h 12 min" and cost.format_seconds(95) == "1 min 35 s"
    # a task's own factor for an optimizer overrides FACTORS (LW on the transformer task)
    (lm,) = runner.plan(["stdlib-charlm"], ["sgd-lw"], 1, 1, None)
    lm_task = TASKS["stdlib-charlm"]
    assert lm_task.step_factors["sgd-lw"] != cost.FACTORS["sgd-lw"]
    per_step = lm_task.step_seconds * lm_task.step_factors["sgd-lw"]
    assert cost.train_seconds(lm) == pytest.approx(lm_task.steps_per_epoch(7050) * per_step)


def test_profile_counts_tasks_within_tau_of_the_best():
    agg = {
        "acc": {
            "higher_is_better": True,
            "rows": [
                {"spec": "a", "acc_mean": 90.0},
                {"spec": "b", "acc_mean": 88.5},
                {"spec": "c", "acc_mean": 0.0},
            ],
        },
        "loss": {  # lower is better: deficit in percent of the best loss
            "higher_is_better": False,
            "rows": [
                {"spec": "a", "acc_mean": 0.30},
                {"spec": "b", "acc_mean": 0.25},
                {"spec": "c", "acc_mean": float("inf")},  # diverged
            ],
        },
    }
    d = report.deficits(agg)
    assert d["a"]["acc"] == 0.0 and d["b"]["acc"] == pytest.approx(1.5)
    assert d["a"]["loss"] == pytest.approx(20.0) and d["b"]["loss"] == 0.0
    assert d["c"]["loss"] == float("inf")
    rho = report.profile(agg, [0.0, 1.5, 20.0, 1e9])
    assert rho["a"] == [0.5, 0.5, 1.0, 1.0]
    assert rho["b"] == [0.5, 1.0, 1.0, 1.0]
    assert rho["c"] == [0.0, 0.0, 0.0, 0.5]  # 90 points below on "acc"; inf on "loss"


def test_tensorboard_log_progress_bar_and_results_page(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    page = tmp_path / "docs" / "results.md"
    code = main(
        [
            "bench",
            "--task",
            "mnist1d-mlp",
            "--optimizers",
            "adamw,sgd-lw",
            "--epochs",
            "2",
            "--train-subset",
            "512",
            "--out",
            str(tmp_path / "out"),
            "--tensorboard",
            str(tmp_path / "tb"),
            "--results-page",
            str(page),
            "--jobs",
            "1",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "estimated" in err and "[2/2] mnist1d-mlp/sgd-lw-lrdefault-seed0 epoch 2/2" in err
    assert "ETA" in err

    def tags(folder):
        acc = EventAccumulator(str(folder))
        acc.Reload()
        return acc, set(acc.Tags()["scalars"])

    acc, lw = tags(tmp_path / "tb" / "mnist1d-mlp" / "sgd-lw-lrdefault-seed0")
    assert {"epoch/train_loss", "epoch/test_loss", "epoch/test_accuracy"} <= lw
    assert any(t.startswith("optimizer/effective_lr/") for t in lw)
    assert [e.step for e in acc.Scalars("epoch/test_loss")] == [4, 8]  # 512 / 128 steps
    _, base = tags(tmp_path / "tb" / "mnist1d-mlp" / "adamw-lr0.001-seed0")
    assert "optimizer/lr/group0" in base

    text = page.read_text()
    assert "lrfree bench" in text and "| machine |" in text and "mnist1d-mlp" in text
    images = [line[line.index("(") + 1 : -1] for line in text.splitlines() if line.startswith("![")]
    assert "results/profile.png" in images
    assert all((page.parent / im).is_file() for im in images)
    assert (tmp_path / "out" / "profile.png").is_file()


BENCH_MODULES = [
    "cli", "cost", "data", "loop", "optimizers", "plan", "pool", "progress", "report",
    "results", "runner", "tasks",
]  # fmt: skip


@pytest.mark.parametrize("module", BENCH_MODULES)
def test_bench_module_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"lrfree.bench.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_planetoid_reader_refuses_anything_but_its_arrays(tmp_path):
    """The raw files are pickles: the reader resolves only the classes they hold."""
    import io
    import os
    import pickle

    from lrfree.bench.data import _PlanetoidUnpickler

    evil = pickle.dumps(os.getcwd)
    with pytest.raises(pickle.UnpicklingError, match="unexpected"):
        _PlanetoidUnpickler(io.BytesIO(evil), encoding="latin1").load()
    import scipy.sparse as sp

    m = sp.random(4, 3, density=0.5, format="csr", random_state=0)
    back = _PlanetoidUnpickler(io.BytesIO(pickle.dumps(m)), encoding="latin1").load()
    assert (back != m).nnz == 0


def test_parallel_workers_refuse_code_other_than_the_keys_name(tmp_path, monkeypatch):
    """A worker imports lrfree after the parent hashed its source: if the source changed in
    between, the worker's records would carry keys of code it did not run. It refuses."""
    from lrfree.bench import pool

    runner.code_fingerprint.cache_clear()
    monkeypatch.setattr(pool, "code_fingerprint", lambda: "not-this-code")
    runs = runner.plan(["mnist1d-mlp"], ["adamw", "sgd-m"], 1, epochs=1, train_subset=256)
    with pytest.raises(RuntimeError, match="source changed after the benchmark started"):
        runner.run_suite(runs, tmp_path, BenchConfig(), progress=False, jobs=2, threads=1)


# ------------------------------------------------------- what an entry declares to the loop
class _Recorder(torch.optim.SGD):
    """SGD that records how the loop drives it: ``backward(loss, outputs)`` and
    ``step(outputs=, targets=)`` (the ``needs_outputs`` route) or ``step(closure)``."""

    def __init__(self, params, **kw):
        super().__init__(params, lr=0.01)
        self.calls: list[str] = []
        self.outputs: list[torch.Tensor] = []

    def backward(self, loss, outputs):
        self.calls.append("backward")
        self.outputs.append(outputs)
        loss.backward()

    def step(self, closure=None, outputs=None, targets=None):
        self.calls.append("closure" if closure is not None else "outputs")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            super().step()
            return loss
        assert outputs is self.outputs[-1] and targets is not None
        return super().step()


def _recording_entry(**needs):
    made: list[_Recorder] = []

    def build(model, lr, **_):
        made.append(_Recorder(model.parameters()))
        return made[-1]

    return bopt.BenchOptimizer("recorder", build, "baseline", note="test", **needs), made


def _one_run(entry, task=None):
    """One epoch of ``entry`` on mnist1d-mlp's model (or ``task``), random data of 256
    examples: two steps."""
    from lrfree.bench import loop
    from lrfree.bench.data import Split
    from lrfree.bench.plan import Run

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 40, generator=g)
    split = Split(x, torch.randint(0, 10, (256,), generator=g), x[:64], torch.zeros(64).long())
    run = Run(task or TASKS["mnist1d-mlp"], entry.name, entry, None, False, 0, 1, None)
    return loop.run_one(run, split)


def test_an_entry_that_declares_needs_outputs_gets_them():
    entry, made = _recording_entry(needs_outputs=True)
    rec = _one_run(entry)
    (opt,) = made
    assert opt.calls == ["backward", "outputs"] * 2  # 256 examples, batches of 128
    assert all(o.shape == (128, 10) for o in opt.outputs)  # the model's outputs
    assert rec["per_epoch"][0]["train_loss"] > 0
    plain, made = _recording_entry()
    _one_run(plain)
    assert made[0].calls == ["closure", "closure"]  # no declaration: the closure step


def test_declared_second_order_steps_run_under_the_math_attention_backend():
    """On a task that needs it, the loop runs the steps an entry declares second order
    under the MATH backend (the fused kernels off) and the others under the default one; on
    a task that does not, it never switches."""
    import dataclasses

    from lrfree.bench import loop

    fused: list[bool] = []

    def step(task, model, opt, x, y):
        fused.append(torch.backends.cuda.flash_sdp_enabled())  # False under MATH
        return loop.closure_step(task, model, opt, x, y)

    entry, _ = _recording_entry(second_order=lambda opt: len(fused) % 2 == 1)  # every 2nd
    entry.step = step
    needs_math = dataclasses.replace(TASKS["mnist1d-mlp"], needs_math_attention=True)
    _one_run(entry, needs_math)
    assert fused == [True, False]
    fused.clear()
    _one_run(entry)  # mnist1d-mlp: no attention, never switched
    assert fused == [True, True]


def test_the_optimizer_tells_the_loop_what_it_needs_and_the_loop_names_no_optimizer():
    """No lrfree entry declares a loop of its own: ADLER's optimizer (and one built from an
    entry derived from it) asks for its outputs and says which steps differentiate twice,
    from its rule's declarations (``Rule.feed``); the modules that train name no
    registered optimizer in a comparison, and none imports a rule or an optimizer class."""
    import ast
    from pathlib import Path

    import lrfree.bench
    from lrfree.bench import loop

    model = torch.nn.Linear(4, 3)
    for entry in bopt.BENCH_OPTIMIZERS.values():
        assert not entry.needs_outputs and entry.second_order is None and entry.step is None
    for name in ("adler", "adler[beta=0.9]", "sgd-lw[curvature=ggn]"):
        entry = bopt.lookup(name)
        opt = entry.build(model, None)
        assert loop.entry_step(entry) is loop.closure_step  # the entry alone declares nothing
        assert loop.entry_step(entry, opt) is loop.outputs_step
        assert loop.second_order_due(opt)  # the first step estimates
    for name in ("sgd-lw", "auto", "adamw", "prodigy"):
        entry = bopt.lookup(name)
        opt = entry.build(model, None)
        assert loop.entry_step(entry, opt) is loop.closure_step
        assert loop.second_order_due(opt) == (name == "sgd-lw")  # LW: a curvature step
    names = {n.lower() for n in bopt.BENCH_OPTIMIZERS} | {
        c.lower() for c in bopt.LRFREE_NAMES.values()
    }
    root = Path(lrfree.bench.__file__).parent
    for module in ("plan", "loop", "pool", "results", "progress", "cost", "cli"):
        tree = ast.parse((root / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and isinstance(side.value, str):
                        assert side.value.lower() not in names, (module, side.value)
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                assert not mod.startswith(("lrfree.rules", "lrfree.optimizers")), module
