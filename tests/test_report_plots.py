"""The benchmark's plots from synthetic records (no training): the LR-sensitivity picture,
the highlighted curve plots and their place on the results page."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from lrfree.bench import report

PNG = b"\x89PNG\r\n\x1a\n"
GRIDS = {
    "adamw@grid": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    "sgd-m@grid": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
}


def record(task, spec, family, lr, seed, final, *, grid=False, loss_task=False, epochs=3):
    """One run record as ``runner`` writes it (the fields the report reads)."""
    diverged = not math.isfinite(final)
    per_epoch = []
    for e in range(1, epochs + 1):
        frac = e / epochs
        metric = final if diverged and e == epochs else final * (0.5 + 0.5 * frac)
        per_epoch.append(
            {
                "epoch": e,
                "time": 0.5 * e,
                "cpu_time": 0.4 * e,
                "train_loss": float("nan") if diverged else 2.0 / (1 + e),
                "metric": metric,
            }
        )
    return {
        "task": task,
        "spec": spec,
        "optimizer": spec.partition("@")[0],
        "family": family,
        "lr": lr,
        "grid": grid,
        "seed": seed,
        "epochs": epochs,
        "per_epoch": per_epoch,
        "steps_per_epoch": 4,
        "diverged": diverged,
        "metric_name": "test_loss" if loss_task else "accuracy",
        "higher_is_better": not loss_task,
        "final_metric": final,
        "final_train_loss": per_epoch[-1]["train_loss"],
        "seconds": 0.5 * epochs,
        "cpu_seconds": 0.4 * epochs,
        "rates": [],
    }


LRFREE = [  # (spec, accuracy at seed 0): several entries per family, as in a defaults sweep
    ("sgd-lw", 61.0),
    ("sgd-lw[update_every=1,beta_t=0.0]", 63.5),
    ("adamw-lw", 60.0),
    ("sgd-tlr", 55.0),
    ("adam-tlr[window_floor=3.0]", 64.0),
    ("adalip", 40.0),
    ("rmslip-u", 62.0),
    ("adamlip-u[lr=0.001]", 58.0),
    ("adler", 65.0),
    ("adler[trust=2.0]", 50.0),
    ("adam-hd", 57.0),
    ("sgdn-camhd[form='multiplicative',hypergrad_lr=0.05,lr=0.01]", 54.0),
]
PEERS = [("prodigy", 64.5), ("dog", 52.0), ("schedulefree-adamw", 59.0)]


def accuracy_records(task="acc-task", seeds=3, with_grid=True):
    recs = []
    for seed in range(seeds):
        jitter = (seed - 1) * 0.8
        if with_grid:
            for spec, lrs in GRIDS.items():
                for i, lr in enumerate(lrs):
                    peak = 2 if spec == "adamw@grid" else 4
                    acc = 64.0 - 9.0 * abs(i - peak) + jitter
                    recs.append(record(task, spec, "baseline", lr, seed, acc, grid=True))
        recs.append(record(task, "adamw", "baseline", 1e-3, seed, 60.5 + jitter))
        for spec, acc in LRFREE:
            recs.append(record(task, spec, "lrfree", None, seed, acc + jitter))
        for spec, acc in PEERS:
            recs.append(record(task, spec, "peer", None, seed, acc + jitter))
    return recs


def loss_records(task="loss-task", seeds=2):
    """A test-loss task (lower is better) with a diverged grid rate and a diverged entry."""
    recs = []
    for seed in range(seeds):
        for i, lr in enumerate(GRIDS["adamw@grid"]):
            loss = math.inf if lr == 1e-2 else 0.30 + 0.02 * abs(i - 2) + 0.001 * seed
            kw = {"grid": True, "loss_task": True}
            recs.append(record(task, "adamw@grid", "baseline", lr, seed, loss, **kw))
        recs.append(record(task, "adamw", "baseline", 1e-3, seed, 0.305, loss_task=True))
        recs.append(record(task, "adamw-lw", "lrfree", None, seed, 0.31, loss_task=True))
        recs.append(record(task, "sgd-tlr", "lrfree", None, seed, math.inf, loss_task=True))
        recs.append(record(task, "adler", "lrfree", None, seed, 0.29, loss_task=True))
        recs.append(record(task, "prodigy", "peer", None, seed, 0.33, loss_task=True))
    return recs


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_aggregate_keeps_every_rate_of_a_grid_with_mean_std_and_seeds():
    agg = report.aggregate(accuracy_records(seeds=3))
    row = next(r for r in agg["acc-task"]["rows"] if r["spec"] == "adamw@grid")
    assert [p["lr"] for p in row["by_lr"]] == list(GRIDS["adamw@grid"])
    best = row["by_lr"][2]
    assert best["seeds"] == 3 and best["diverged"] == 0
    assert best["mean"] == pytest.approx(64.0) and best["std"] == pytest.approx(0.8)
    assert row["lr"] == 1e-3 and row["acc_mean"] == pytest.approx(best["mean"])
    default = next(r for r in agg["acc-task"]["rows"] if r["spec"] == "sgd-lw")
    assert [p["lr"] for p in default["by_lr"]] == [None]


def test_lr_sensitivity_plot_multiple_seeds_from_agg_and_from_records(tmp_path):
    recs = accuracy_records(seeds=3)
    path = report.lr_sensitivity_plot(report.aggregate(recs), "acc-task", tmp_path / "a.png")
    assert path == tmp_path / "a.png" and is_png(path)
    again = report.lr_sensitivity_plot(recs, "acc-task", tmp_path / "b.png")
    assert again is not None and is_png(again)


def test_lr_sensitivity_plot_loss_task_with_diverged_runs(tmp_path):
    recs = loss_records()
    agg = report.aggregate(recs)
    row = next(r for r in agg["loss-task"]["rows"] if r["spec"] == "adamw@grid")
    assert row["by_lr"][-1]["diverged"] == 2 and math.isinf(row["by_lr"][-1]["mean"])
    assert row["lr"] == 1e-3  # the best *lowest* loss
    path = report.lr_sensitivity_plot(agg, "loss-task", tmp_path / "loss.png")
    assert path is not None and is_png(path)


def test_lr_sensitivity_plot_skips_a_task_without_grid_or_unknown(tmp_path):
    recs = accuracy_records(task="nogrid", seeds=1, with_grid=False)
    assert report.lr_sensitivity_plot(recs, "nogrid", tmp_path / "n.png") is None
    assert report.lr_sensitivity_plot(recs, "no-such-task", tmp_path / "m.png") is None
    assert not list(tmp_path.iterdir())


def test_lr_sensitivity_plot_a_diverged_accuracy_entry_and_a_single_seed(tmp_path):
    recs = accuracy_records(seeds=1)
    recs.append(record("acc-task", "adam-camhd", "lrfree", None, 0, math.inf))
    recs.append(record("acc-task", "ldog", "peer", None, 0, float("nan")))
    path = report.lr_sensitivity_plot(recs, "acc-task", tmp_path / "d.png")
    assert path is not None and is_png(path)


def test_method_family_follows_the_base_name():
    fam = report.method_family
    assert fam("sgd-lw[update_every=1,beta_t=0.0]") == "LW" == fam("adamw-lw@grid")
    assert fam("adam-tlr[window_floor=3.0]") == "TLR"
    assert {fam(s) for s in ("adalip", "rmslip", "adamlip", "adalip-u", "adamlip-u[lr=0.001]")} == {
        "AdaLip"
    }
    assert fam("adler[trust=2.0]") == "ADLER"
    assert fam("sgdn-camhd[form='multiplicative']") == "HD/CAM-HD" == fam("adam-hd")
    assert fam("composed-adamw") == "lrfree"
    assert fam("prodigy", "peer") == "peer" and fam("adamw@grid", "baseline") == "baseline"


def test_highlights_tuned_baseline_peers_and_each_familys_best_with_distinct_colours():
    agg = report.aggregate(accuracy_records(seeds=2))
    hl = report._highlights(agg["acc-task"])
    assert hl[agg["acc-task"]["tuned"]]["tag"] == "tuned baseline"
    assert {s for s, st in hl.items() if st["tag"] == "peer"} == {p for p, _ in PEERS}
    bests = {st["tag"]: s for s, st in hl.items() if st["tag"].startswith("best ")}
    assert bests == {
        "best LW": "sgd-lw[update_every=1,beta_t=0.0]",
        "best TLR": "adam-tlr[window_floor=3.0]",
        "best AdaLip": "rmslip-u",
        "best ADLER": "adler",
        "best HD/CAM-HD": "adam-hd",
    }
    colors = [st["color"] for st in hl.values()]
    assert len(colors) == len(set(colors))  # no colour twice among the highlighted curves


def test_plots_write_lr_picture_first_and_results_page_shows_it_first(tmp_path):
    recs = accuracy_records(seeds=2) + loss_records() + accuracy_records("nogrid", 1, False)
    agg = report.aggregate(recs)
    out = tmp_path / "out"
    out.mkdir()
    written = report.plots(agg, out)
    names = [p.name for p in written]
    assert names.index("acc-task-lr.png") < names.index("acc-task.png")
    assert "loss-task-lr.png" in names and "nogrid-lr.png" not in names
    assert "nogrid.png" in names and "profile.png" in names
    assert all(is_png(p) for p in written)

    meta = {"env": {"processor": "cpu", "cpus": 2, "threads": 1, "jobs": 1}, "seeds": 2}
    page = report.results_page("tables", meta, written, tmp_path / "docs" / "results.md")
    text = page.read_text()
    images = [ln[ln.index("(") + 1 : -1] for ln in text.splitlines() if ln.startswith("![")]
    assert all((page.parent / im).is_file() for im in images)
    for task in ("acc-task", "loss-task"):
        at = text.index(f"### {task}")
        assert text.index(f"results/{task}-lr.png", at) < text.index(f"results/{task}.png", at)
    assert "results/nogrid.png" in images


def test_many_entries_stay_readable_enough_to_render(tmp_path):
    """~30 default-run lines and the grids: one PNG, labels for the few in full only."""
    recs = accuracy_records(seeds=1)
    for k in range(20):
        recs.append(record("acc-task", f"sgd-lw[beta_t={k / 10}]", "lrfree", None, 0, 30 + k))
    agg = report.aggregate(recs)
    hl = report._highlights(agg["acc-task"])
    assert len(hl) == 1 + len(PEERS) + 5  # the 20 LW variants add no highlighted entry
    path = report.lr_sensitivity_plot(agg, "acc-task", tmp_path / "many.png")
    assert path is not None and is_png(path)
