"""The benchmark: smoke runs of every task and optimizer, resume, the report's protocol."""

from __future__ import annotations

import json

import pytest
import torch

from lrfree.bench import optimizers as bopt
from lrfree.bench import report, runner
from lrfree.bench.data import DataMissing, load_fashion_mnist
from lrfree.bench.tasks import TASKS, BenchConfig
from lrfree.cli import main


def _fmnist_available() -> bool:
    try:
        load_fashion_mnist(train_subset=1)
        return True
    except DataMissing:
        return False


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains_a_few_batches(task, tmp_path):
    if task.startswith("fmnist") and not _fmnist_available():
        pytest.skip("Fashion-MNIST not installed (make test installs dataset-fashion-mnist)")
    runs = runner.plan([task], ["adamw"], seeds=1, epochs=1, train_subset=256)
    (rec,) = runner.run_suite(runs, tmp_path, BenchConfig(), progress=False)
    assert rec["per_epoch"][0]["train_loss"] > 0
    if rec["metric_name"] == "accuracy":
        assert 0.0 <= rec["final_test_acc"] <= 1.0
    else:
        assert 0.0 < rec["final_metric"] < 1.0  # mean binary cross-entropy per pixel


@pytest.mark.parametrize("name", bopt.available())
def test_every_optimizer_runs_on_the_quick_task(name, tmp_path):
    runs = runner.plan(["mnist1d-mlp"], [name], seeds=1, epochs=1, train_subset=512)
    (rec,) = runner.run_suite(runs, tmp_path, BenchConfig(), progress=False)
    assert torch.isfinite(torch.tensor(rec["final_train_loss"]))
    if rec["family"] == "lrfree":
        assert rec["rates"] and all(v > 0 for v in rec["rates"][-1].values())


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
