"""The benchmark's plots from synthetic records (no training): the LR-sensitivity picture,
the highlighted curve plots, their place on the results page, and the report redrawn from
stored records. Figures are checked through their artists (``gid``, colour, width, labels),
never their pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from lrfree.bench import pages, plots, report, runner

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
    path = plots.lr_sensitivity_plot(report.aggregate(recs), "acc-task", tmp_path / "a.png")
    assert path == tmp_path / "a.png" and is_png(path)
    again = plots.lr_sensitivity_plot(recs, "acc-task", tmp_path / "b.png")
    assert again is not None and is_png(again)


def test_lr_sensitivity_plot_loss_task_with_diverged_runs(tmp_path):
    recs = loss_records()
    agg = report.aggregate(recs)
    row = next(r for r in agg["loss-task"]["rows"] if r["spec"] == "adamw@grid")
    assert row["by_lr"][-1]["diverged"] == 2 and math.isinf(row["by_lr"][-1]["mean"])
    assert row["lr"] == 1e-3  # the best *lowest* loss
    path = plots.lr_sensitivity_plot(agg, "loss-task", tmp_path / "loss.png")
    assert path is not None and is_png(path)


def test_lr_sensitivity_plot_skips_a_task_without_grid_or_unknown(tmp_path):
    recs = accuracy_records(task="nogrid", seeds=1, with_grid=False)
    assert plots.lr_sensitivity_plot(recs, "nogrid", tmp_path / "n.png") is None
    assert plots.lr_sensitivity_plot(recs, "no-such-task", tmp_path / "m.png") is None
    assert not list(tmp_path.iterdir())


def test_lr_sensitivity_plot_a_diverged_accuracy_entry_and_a_single_seed(tmp_path):
    recs = accuracy_records(seeds=1)
    recs.append(record("acc-task", "adam-camhd", "lrfree", None, 0, math.inf))
    recs.append(record("acc-task", "ldog", "peer", None, 0, float("nan")))
    path = plots.lr_sensitivity_plot(recs, "acc-task", tmp_path / "d.png")
    assert path is not None and is_png(path)


def test_method_family_follows_the_base_name():
    fam = plots.method_family
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
    hl = plots.highlights(agg["acc-task"])
    assert hl[agg["acc-task"]["tuned"]]["tag"] == "tuned baseline"
    tuned = agg["acc-task"]["tuned"]
    assert {s for s, st in hl.items() if st["tag"] == "grid"} == set(GRIDS) - {tuned}
    assert hl["adamw"]["tag"] == "fixed rate"  # AdamW at its default 1e-3
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
    written = pages.plots(agg, out)
    names = [p.name for p in written]
    assert names.index("acc-task-lr.png") < names.index("acc-task.png")
    assert "loss-task-lr.png" in names and "nogrid-lr.png" not in names
    assert "nogrid.png" in names and "profile.png" in names
    assert all(is_png(p) for p in written)

    meta = {"env": {"processor": "cpu", "cpus": 2, "threads": 1, "jobs": 1}, "seeds": 2}
    page = pages.results_page("tables", meta, written, tmp_path / "docs" / "results.md")
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
    hl = plots.highlights(agg["acc-task"])
    assert len(hl) == len(GRIDS) + 1 + len(PEERS) + 5  # the 20 LW variants add none
    path = plots.lr_sensitivity_plot(agg, "acc-task", tmp_path / "many.png")
    assert path is not None and is_png(path)


# --- the figures' artists: what is highlighted, what is faded, what the axes say -----------


def gids(ax, prefix):
    """The specs of an axes' lines whose gid starts with ``prefix:``, with the lines."""
    return {
        a.get_gid().partition(":")[2]: a
        for a in ax.lines
        if a.get_gid() and a.get_gid().startswith(prefix + ":")
    }


def test_lr_figure_draws_each_grid_and_every_default_as_a_line_highlighted_or_faded():
    recs = accuracy_records(seeds=3) + [
        record("acc-task", "auto", "lrfree", None, s, 63.0 + s) for s in range(3)
    ]
    agg = report.aggregate(recs)
    t = agg["acc-task"]
    fig = plots.lr_figure(agg, "acc-task")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "learning rate (log scale)"
    assert ax.get_ylabel() == "final test accuracy % (higher is better)"
    # one curve per grid: its rates on x, the mean over seeds on y
    grid_lines = gids(ax, "grid")
    assert set(grid_lines) == set(GRIDS)
    adamw = grid_lines["adamw@grid"]
    assert list(adamw.get_xdata()) == list(GRIDS["adamw@grid"])
    row = next(r for r in t["rows"] if r["spec"] == "adamw@grid")
    assert list(adamw.get_ydata()) == pytest.approx([p["mean"] for p in row["by_lr"]])
    # every entry without a grid is a horizontal line at its mean: highlighted or faded
    hl = plots.highlights(t)
    defaults = gids(ax, "default")
    faded = gids(ax, "faded")
    non_grid = {r["spec"]: r["acc_mean"] for r in t["rows"] if not r["grid"]}
    assert set(defaults) | set(faded) == set(non_grid) and not set(defaults) & set(faded)
    assert set(defaults) == set(non_grid) & set(hl)
    for spec, line in {**defaults, **faded}.items():
        assert list(line.get_ydata()) == pytest.approx([non_grid[spec]] * 2)
    # highlighted: the peers, Auto, AdamW at 1e-3 and each family's best, distinct colours
    assert {p for p, _ in PEERS} | {"auto", "adamw", "adler"} <= set(defaults)
    assert hl["auto"]["tag"] == "Auto"
    colours = [line.get_color() for line in [*defaults.values(), *grid_lines.values()]]
    assert len(colours) == len(set(colours))
    # faded: the rest of the lrfree entries, thin and light grey, below the others
    assert set(faded) == {s for s, _ in LRFREE} - set(hl) and len(faded) == 7
    for line in faded.values():
        assert line.get_color() == plots.FADED["color"]
        assert line.get_linewidth() < min(d.get_linewidth() for d in defaults.values())
        assert line.get_zorder() < min(d.get_zorder() for d in defaults.values())
    # the highlighted entries are labelled at the right with their mean; the faded are not
    texts = [a.get_text() for a in ax.texts]
    assert any(x.startswith("auto  ") and x.endswith("64.0") for x in texts)
    assert not any(x.startswith("sgd-lw  ") for x in texts)
    legend = [x.get_text() for x in ax.get_legend().get_texts()]
    assert "7 other lrfree entries at their defaults (grey, unlabelled)" in legend


def test_lr_figure_of_a_loss_task_says_lower_is_better():
    agg = report.aggregate(loss_records())
    ax = plots.lr_figure(agg, "loss-task").axes[0]
    assert ax.get_ylabel() == "final test loss (lower is better)"
    star = [a for a in ax.lines if a.get_marker() == "*"]
    assert [list(s.get_xdata()) for s in star] == [[1e-3]]  # the lowest loss is the best
    defaults = gids(ax, "default")
    assert "sgd-tlr" not in defaults and "sgd-tlr" not in gids(ax, "faded")  # diverged
    assert set(defaults) == {"adamw", "adamw-lw", "adler", "prodigy"}
    lo, hi = ax.get_ylim()
    assert lo < 0.29 < 0.34 < hi  # the axis spans the finite values only
    assert any("not drawn: sgd-tlr" in x.get_text() for x in ax.figure.texts)


def test_curves_figure_highlights_in_distinct_colours_and_fades_the_rest():
    recs = accuracy_records(seeds=2) + [
        record("acc-task", "auto", "lrfree", None, s, 62.0) for s in range(2)
    ]
    agg = report.aggregate(recs)
    t = agg["acc-task"]
    hl = plots.highlights(t)
    fig = plots.curves_figure(t, "acc-task")
    assert len(fig.axes) == 4
    for ax in fig.axes:
        curves, faded = gids(ax, "curve"), gids(ax, "faded")
        assert set(curves) == set(hl)  # each highlighted entry, once per panel
        assert set(faded) == {r["spec"] for r in t["rows"]} - set(hl) and faded
        colours = [c.get_color() for c in curves.values()]
        assert len(colours) == len(set(colours))  # no colour twice among them
        assert {c.get_color() for c in faded.values()} == {plots.FADED["color"]}
    assert fig.axes[2].get_ylabel() == "test accuracy % (higher is better)"
    legend = [x.get_text() for x in fig.axes[1].get_legend().get_texts()]
    assert "Auto: auto" in legend and f"{len(t['rows']) - len(hl)} other entries (grey)" in legend
    loss = report.aggregate(loss_records())["loss-task"]
    ax = plots.curves_figure(loss, "loss-task").axes[2]
    assert ax.get_ylabel() == "test loss (lower is better)"


def test_highlight_colours_stay_distinct_with_many_peers_and_fixed_rates():
    rows = [{"spec": "adamw@grid", "family": "baseline", "grid": True, "acc_mean": 70.0}]
    rows += [
        {"spec": f"adamw@{lr}", "family": "baseline", "grid": False, "acc_mean": 60.0}
        for lr in (0.01, 0.03, 0.1, 0.3)
    ]
    rows += [
        {"spec": f"prodigy[d_coef={k}]", "family": "peer", "grid": False, "acc_mean": 50.0 + k}
        for k in range(12)
    ]
    rows += [
        {"spec": s, "family": "lrfree", "grid": False, "acc_mean": 55.0}
        for s in ("auto", "sgd-lw", "adam-tlr", "adalip", "adler", "sgd-hd", "composed")
    ]
    hl = plots.highlights({"higher_is_better": True, "tuned": "adamw@grid", "rows": rows})
    assert len(hl) == len(rows)
    colours = [st["color"] for st in hl.values()]
    assert len(colours) == len(set(colours))


def test_plots_module_examples_run():
    import doctest

    result = doctest.testmod(plots, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_tables_and_statistics_need_no_plotting():
    """report (tables, statistics) is below plots and pages: it imports neither."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(report))
    imported = {
        a.name if isinstance(n, ast.Import) else (n.module or "")
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert not {m for m in imported if "plots" in m or "pages" in m or "matplotlib" in m}


# --- the report redrawn from the stored records, without training ---------------------------


def stored_folder(tmp_path, codes=None):
    """An ``--out`` folder as ``lrfree bench`` leaves it: ``results.jsonl`` with a record
    per run of a small plan (keyed as the runner keys them) and ``report.json``'s meta."""
    tasks, specs, seeds = ["mnist1d-mlp"], ["adamw", "adamw@grid", "sgd-lw", "prodigy"], 2
    runs = runner.plan(tasks, specs, seeds, epochs=2, train_subset=None)
    out = tmp_path / "out"
    out.mkdir()
    lines = []
    for r in {r.key: r for r in runs}.values():
        acc = {"adamw@grid": 60.0 + 100 * (r.lr or 0.0), "sgd-lw": 58.0, "prodigy": 57.0}
        rec = record(r.task.name, r.spec, r.entry.family, r.lr, r.seed, acc.get(r.spec, 61.0))
        lines.append({**rec, "key": r.key, "grid": r.grid})
    meta = {
        "tasks": tasks,
        "optimizers": specs,
        "seeds": seeds,
        "epochs": 2,
        "train_subset": None,
        "sizes": {"mnist1d-mlp": {"epochs": 2, "train_subset": None, "test_subset": None}},
        "env": {**runner.environment(), "threads": 1, "jobs": 1},
        "date": "2026-01-01 00:00",
        "n_runs": len(lines),
        "n_trained": len(lines),
        "command": "lrfree bench --task mnist1d-mlp --out OUT",
    }
    return out, runs, lines, meta


def write_folder(out, lines, meta):
    (out / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "report.json").write_text(json.dumps({"meta": meta, "tasks": {}}))


def test_stored_records_are_the_plans_runs_current_code_first_else_newest(tmp_path):
    out, runs, lines, meta = stored_folder(tmp_path)
    sgd_lw = [x for x in lines if x["spec"] == "sgd-lw"]
    stale = []
    for x in sgd_lw:  # seed 0: a newer record under another code; seed 1: only old codes
        stem = x["key"].rpartition("|code=")[0]
        newer = {**x, "key": stem + "|code=newer", "final_metric": 11.0}
        if x["seed"] == 0:
            stale.append(newer)
        else:
            old = {**x, "key": stem + "|code=old", "final_metric": 22.0}
            lines.remove(x)
            stale += [old, newer]
    other_task = {**lines[0], "key": "fmnist-mlp|adamw|lr=0.001|code=x", "task": "fmnist-mlp"}
    write_folder(out, [*lines, *stale, other_task], meta)
    records, got = pages.stored_records(out)
    assert len(records) == len(runs)  # adamw at 1e-3: once as `adamw`, once in the grid
    assert {r["task"] for r in records} == {"mnist1d-mlp"}
    shared = [r for r in records if r["lr"] == 1e-3 and r["seed"] == 0]
    assert sorted((r["spec"], r["grid"]) for r in shared) == [
        ("adamw", False),
        ("adamw@grid", True),
    ]
    lw = {r["seed"]: r["final_metric"] for r in records if r["spec"] == "sgd-lw"}
    assert lw == {0: 58.0, 1: 11.0}  # the current code's record; else the newest
    current = runner.code_fingerprint()
    assert got["redrawn"]["missing"] == 0
    assert got["redrawn"]["codes"]["newer"] == 1
    assert sum(got["redrawn"]["codes"].values()) == len({r.key for r in runs})
    assert current in got["redrawn"]["codes"] and got["command"] == meta["command"]


def test_redraw_writes_report_plots_and_a_page_with_the_lr_pictures_first(tmp_path, capsys):
    out, _, lines, meta = stored_folder(tmp_path)
    write_folder(out, lines[:-1], meta)  # one run without a record
    page = tmp_path / "docs" / "results.md"
    assert pages.main([str(out), "--results-page", str(page)]) == 0
    assert "warning: left out 1 run(s) without a record" in capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "### mnist1d-mlp" in md and "adamw@grid" in md
    saved = json.loads((out / "report.json").read_text())
    assert saved["meta"]["redrawn"]["missing"] == 1
    assert saved["meta"]["redrawn"]["command"].startswith("python -m lrfree.bench.pages ")
    assert is_png(out / "mnist1d-mlp-lr.png") and is_png(out / "mnist1d-mlp.png")
    text = page.read_text()
    assert (
        "| redrawn (no training) |" in text
        and "left out: 1 run(s) of the command without a record" in text
    )
    assert "`lrfree bench --task mnist1d-mlp --out OUT`" in text  # the training command
    # the learning-rate picture is the first picture of the page, before the tables
    first_image = next(ln for ln in text.splitlines() if ln.startswith("!["))
    assert first_image == "![mnist1d-mlp-lr](results/mnist1d-mlp-lr.png)"
    assert (
        text.index("mnist1d-mlp-lr.png")
        < text.index("## Tables")
        < text.index("results/mnist1d-mlp.png")
    )
    images = [ln[ln.index("(") + 1 : -1] for ln in text.splitlines() if ln.startswith("![")]
    assert all((page.parent / im).is_file() for im in images)
    assert len(images) == len(set(images))  # each picture once


def test_an_unfinished_suite_is_drawn_from_its_plan_and_compared_with_a_shorter_budget(
    tmp_path, capsys
):
    """The long suite between sittings: no report.json yet, so ``--suite`` names the plan;
    the runs without a record are left out and counted; ``--compare-with`` adds the
    verdicts that changed against the same task at another budget."""
    from lrfree.bench.optimizers import default_optimizers
    from lrfree.bench.tasks import SUITES

    short, _, lines, meta = stored_folder(tmp_path)  # 2 epochs: sgd-lw 58 vs the grid's 63
    write_folder(short, lines, meta)
    out = tmp_path / "long"
    out.mkdir()
    runs = runner.plan(
        list(SUITES["quick"]), default_optimizers("quick"), 1, None, None, sizes=SUITES["quick"]
    )
    mine = [r for r in runs if r.task.name == "mnist1d-mlp" and r.spec in ("adamw@grid", "sgd-lw")]
    recs = []
    for r in mine:  # the long budget: sgd-lw ahead of every grid rate
        acc = 70.0 if r.spec == "sgd-lw" else 60.0
        rec = record(r.task.name, r.spec, r.entry.family, r.lr, r.seed, acc, grid=r.grid)
        recs.append({**rec, "key": r.key})
    (out / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    page = tmp_path / "docs" / "results-long.md"
    argv = [str(out), "--suite", "quick", "--seeds", "1", "--compare-with", str(short)]
    assert pages.main([*argv, "--results-page", str(page), "--no-plots"]) == 0
    left_out = len({r.key for r in runs}) - len(mine)
    assert f"left out {left_out} run(s) without a record" in capsys.readouterr().err
    text = page.read_text()
    assert "lrfree bench --suite quick --seeds 1" in text and "(not finished)" in text
    assert "## `long` against `out`" in text
    assert "| mnist1d-mlp | `sgd-lw` | -5.00 (loss) | +10.00 (win) |" in text
    assert "Tuned baselines that changed with the budget: none." in text


def test_redraw_of_a_folder_without_records_says_so(tmp_path, capsys):
    assert pages.main([str(tmp_path)]) == 2
    assert "not the --out folder of a finished lrfree bench" in capsys.readouterr().err


def test_lr_figure_cuts_grid_rates_far_below_every_default_off_the_axis():
    accs = dict(zip(GRIDS["adamw@grid"], (10.0, 80.0, 85.0, 82.0, 5.0)))
    recs = [record("t", "adamw@grid", "baseline", lr, 0, a, grid=True) for lr, a in accs.items()]
    recs += [record("t", "auto", "lrfree", None, 0, 84.0)]
    recs += [record("t", "prodigy", "peer", None, 0, 78.0)]
    ax = plots.lr_figure(report.aggregate(recs), "t").axes[0]
    lo, hi = ax.get_ylim()
    assert 10.0 < lo < 78.0 and 85.0 < hi < 90.0  # the defaults and the best rate, only
    marks = [a for a in ax.lines if a.get_gid() == "off-axis"]
    assert sorted(float(m.get_xdata()[0]) for m in marks) == [1e-4, 1e-2]
    texts = {a.get_text() for a in ax.texts}
    assert {"10.0", "5.0"} <= texts
    assert any("2 grid rate(s) off the axis" in x.get_text() for x in ax.figure.texts)
    # without such a rate, nothing is cut
    ax = plots.lr_figure(report.aggregate(accuracy_records(seeds=1)), "acc-task").axes[0]
    assert not [a for a in ax.lines if a.get_gid() == "off-axis"]
