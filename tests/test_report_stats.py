"""The report's paired comparison over seeds against the tuned baseline: per-seed
differences, the bootstrap interval, the win / tie / loss rule, and its markdown section."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("numpy")

from lrfree.bench import report

BASE = {0: 80.0, 1: 81.0, 2: 82.0}  # the tuned baseline's seeds: spread (std) 1.0


def test_identical_runs_tie_with_a_zero_width_interval():
    c = report.compare(dict(BASE), BASE)
    assert c["diffs"] == [0.0, 0.0, 0.0] and c["mean"] == 0.0
    assert c["interval"] == (0.0, 0.0)
    assert c["verdict"] == "tie" and c["rule"] == "bootstrap"


def test_a_constant_difference_of_two_points_wins_with_interval_two_two():
    c = report.compare({s: v + 2.0 for s, v in BASE.items()}, BASE)
    assert c["diffs"] == [2.0, 2.0, 2.0]
    assert c["interval"] == (2.0, 2.0)
    assert c["spread"] == pytest.approx(1.0)
    assert c["verdict"] == "win"
    worse = report.compare({s: v - 2.0 for s, v in BASE.items()}, BASE)
    assert worse["interval"] == (-2.0, -2.0) and worse["verdict"] == "loss"


def test_mixed_signs_tie():
    c = report.compare({0: 84.0, 1: 78.0, 2: 86.0}, BASE)  # +4, -3, +4: mean 1.67 > spread 1
    assert c["diffs"] == [4.0, -3.0, 4.0]
    lo, hi = c["interval"]
    assert lo < 0 < hi  # the interval straddles 0, so the spread rule is not what ties it
    assert c["verdict"] == "tie"


def test_a_difference_within_the_baseline_spread_ties_even_with_an_interval_above_zero():
    c = report.compare({s: v + 0.5 for s, v in BASE.items()}, BASE)  # 0.5 <= spread 1.0
    assert c["interval"] == (0.5, 0.5) and c["verdict"] == "tie"
    assert report.verdict([0.5, 0.5, 0.5], (0.5, 0.5), spread=0.4) == "win"


def test_a_loss_metric_flips_the_direction_and_is_in_percent_of_the_baseline():
    base = {0: 0.5, 1: 0.5, 2: 0.5}
    lower = {0: 0.25, 1: 0.25, 2: 0.25}  # half the baseline's loss: 50% better
    c = report.compare(lower, base, higher_is_better=False)
    assert c["diffs"] == [50.0, 50.0, 50.0] and c["verdict"] == "win"
    assert report.compare(lower, base, higher_is_better=True)["verdict"] == "loss"
    higher = report.compare({0: 0.75, 1: 0.75, 2: 0.75}, base, higher_is_better=False)
    assert higher["diffs"] == [-50.0, -50.0, -50.0] and higher["verdict"] == "loss"
    # the spread is in the same units: percent of the baseline's mean loss
    spread = report.baseline_spread({0: 0.4, 1: 0.5, 2: 0.6}, higher_is_better=False)
    assert spread == pytest.approx(100 * 0.1 / 0.5)


def test_one_seed_falls_back_to_the_fixed_one_point_line():
    for value, expected in [(81.5, "win"), (80.5, "tie"), (79.0, "tie"), (78.5, "loss")]:
        c = report.compare({0: value}, {0: 80.0})
        assert c["n"] == 1 and c["rule"] == "1-point" and c["verdict"] == expected, value
        assert c["interval"] == (value - 80.0, value - 80.0)
    # on a loss task the line is 1% of the baseline's loss
    assert report.compare({0: 0.98}, {0: 1.0}, higher_is_better=False)["verdict"] == "win"
    assert report.compare({0: 1.005}, {0: 1.0}, higher_is_better=False)["verdict"] == "tie"
    assert report.compare({0: 1.02}, {0: 1.0}, higher_is_better=False)["verdict"] == "loss"


def test_seeds_missing_on_one_side_are_paired_only_where_both_exist():
    # seed 2 has no baseline run, seed 3 no entry run: only seeds 0 and 1 are compared
    c = report.compare({0: 83.0, 1: 84.0, 2: 10.0}, {0: 80.0, 1: 81.0, 3: 99.0})
    assert c["seeds"] == [0, 1] and c["diffs"] == [3.0, 3.0] and c["n"] == 2
    # ... while the baseline's spread uses all its own seeds, paired or not
    assert c["spread"] == pytest.approx(report.baseline_spread({0: 80.0, 1: 81.0, 3: 99.0}))
    assert c["verdict"] == "tie"  # |3| <= the spread of 80, 81, 99 (10.7)
    # one seed in common: the 1-point line; none: no verdict
    assert report.compare({0: 83.0, 5: 1.0}, {0: 80.0, 1: 81.0})["rule"] == "1-point"
    none = report.compare({5: 83.0}, {0: 80.0, 1: 81.0})
    assert none["n"] == 0 and none["verdict"] is None and none["rule"] is None
    assert all(math.isnan(x) for x in none["interval"])


def test_the_bootstrap_is_deterministic_and_narrower_than_the_range_with_more_seeds():
    diffs = [0.3, -1.2, 2.5, 0.9, 1.1, -0.4, 0.0]
    assert report.bootstrap_interval(diffs) == report.bootstrap_interval(diffs)
    a = report.compare({0: 81.0, 1: 79.0, 2: 84.0}, BASE)
    b = report.compare({0: 81.0, 1: 79.0, 2: 84.0}, BASE)
    assert a == b
    # with 3 seeds the 95% interval is the range (all-min samples have probability 1/27)
    assert report.bootstrap_interval([-1.0, 0.5, 3.0]) == (-1.0, 3.0)
    # with 5 seeds a sample of five copies of the largest has probability 1/3125 < 2.5%
    lo, hi = report.bootstrap_interval([0.0, 0.0, 0.0, 0.0, 10.0])
    assert lo == 0.0 and 0.0 < hi < 10.0


def test_a_diverged_run_is_infinitely_worse_on_its_seed():
    base = {0: 0.30, 1: 0.31, 2: 0.32}
    d = report.paired_differences({0: 0.30, 1: math.inf, 2: 0.32}, base, False)
    assert d[1] == -math.inf and d[0] == 0.0 and d[2] == 0.0
    assert report.paired_differences({0: math.inf}, {0: math.inf}, False) == {0: 0.0}
    assert report.paired_differences({0: 1.0}, {0: math.inf}, False) == {0: math.inf}
    # diverged on one seed of three, even on the others: a loss (a user meets that seed too)
    c = report.compare({0: 0.30, 1: math.inf, 2: 0.32}, base, higher_is_better=False)
    assert c["interval"] == (-math.inf, 0.0) and c["verdict"] == "loss"
    # diverged on every seed: a loss
    c = report.compare({s: math.inf for s in base}, base, higher_is_better=False)
    assert c["interval"] == (-math.inf, -math.inf) and c["verdict"] == "loss"


# --- the markdown section, from fake run records ------------------------------------------


def rec(task, spec, family, lr, seed, final, *, grid=False, loss=False):
    """One run record with the fields the report reads."""
    return {
        "task": task,
        "spec": spec,
        "optimizer": spec.partition("@")[0],
        "family": family,
        "lr": lr,
        "grid": grid,
        "seed": seed,
        "per_epoch": [{"epoch": 1, "time": 1.0, "train_loss": 0.5, "metric": final}],
        "diverged": not math.isfinite(final),
        "metric_name": "test_loss" if loss else "accuracy",
        "higher_is_better": not loss,
        "final_metric": final,
        "final_train_loss": 0.5,
        "seconds": 1.0,
    }


def fake_records(seeds=3):
    recs = []
    for k in range(seeds):
        # "acc": adamw@grid at 1e-3 is the tuned baseline (80, 81, 82: spread 1)
        recs += [
            rec("acc", "adamw@grid", "baseline", 1e-3, k, 80.0 + k, grid=True),
            rec("acc", "adamw@grid", "baseline", 1e-2, k, 70.0, grid=True),
            rec("acc", "sgd-m@grid", "baseline", 0.1, k, 78.0 + k, grid=True),  # -2: loss
            rec("acc", "adamw-lw", "lrfree", None, k, 83.0 + k),  # +3 every seed: win
            rec("acc", "sgd-lw", "lrfree", None, k, [80.5, 80.5, 82.5][k]),  # +-0.5: tie
            rec("acc", "prodigy", "peer", None, k, 75.0 + k),  # -5: loss
        ]
        # "loss": lower is better, adamw@grid the baseline (0.30, 0.31, 0.32)
        kw = {"loss": True}
        recs += [
            rec("loss", "adamw@grid", "baseline", 1e-3, k, 0.30 + 0.01 * k, grid=True, **kw),
            rec("loss", "adamw-lw", "lrfree", None, k, 0.27 + 0.01 * k, **kw),  # 9.7%: win
            rec("loss", "sgd-lw", "lrfree", None, k, 0.33 + 0.01 * k, **kw),  # -9.7%: loss
            rec("loss", "prodigy", "peer", None, k, 0.31, **kw),  # -3.2, 0, +3.2 %: tie
        ]
    return recs


META = {
    "seeds": 3,
    "env": {"processor": "x86_64", "cpus": 2, "threads": 1, "jobs": 2, "torch": "2", "lrfree": "0"},
}


def _table_row(md: str, section: str, spec: str) -> list[str]:
    body = md.split(section, 1)[1].split("\n### ", 1)[0]
    (line,) = [x for x in body.splitlines() if x.startswith(f"| {spec} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_has_the_paired_section_with_the_right_counts():
    agg = report.aggregate(fake_records())
    assert agg["acc"]["tuned"] == "adamw@grid" and agg["loss"]["tuned"] == "adamw@grid"
    md = report.markdown(agg, META)
    section = "### Paired over seeds against the tuned baseline"
    assert section in md
    # the existing sections are still there, in order
    assert md.index("### Summary across tasks") < md.index(section)
    assert md.index(section) < md.index("### Against the tuned grid of each optimizer's base")
    # the rule and the number of seeds are stated
    assert "Seeds paired in every comparison: 3." in md
    assert "|mean difference| <= spread" in md and "10000 resamples" in md
    # per optimizer: win, tie, loss, tasks, won on, lost on
    assert _table_row(md, section, "adamw-lw") == [
        *["adamw-lw", "lrfree", "2", "0", "0", "2", "acc, loss", "-"]
    ]
    assert _table_row(md, section, "sgd-lw")[2:] == ["0", "1", "1", "2", "-", "loss"]
    assert _table_row(md, section, "prodigy")[2:] == ["0", "1", "1", "2", "-", "acc"]
    assert _table_row(md, section, "sgd-m@grid")[2:] == ["0", "0", "1", "1", "-", "acc"]
    assert not any(x.startswith("| adamw@grid |") for x in md.split(section)[1].splitlines())
    # the summary carries the counts next to the means' columns
    summary = "### Summary across tasks"
    assert _table_row(md, summary, "adamw-lw")[3] == "2 / 0 / 0"
    assert _table_row(md, summary, "sgd-lw")[3] == "0 / 1 / 1"
    assert _table_row(md, summary, "adamw@grid")[3] == "-"  # the baseline on both tasks
    assert report.markdown(report.aggregate(fake_records()), META) == md  # deterministic


def test_markdown_with_one_seed_says_it_uses_the_one_point_line():
    md = report.markdown(report.aggregate(fake_records(seeds=1)), {**META, "seeds": 1})
    assert "One seed per comparison" in md and "1-point line" in md
    section = "### Paired over seeds against the tuned baseline"
    # seed 0 only: adamw-lw +3 (win) and 10% of the loss (win); sgd-lw +0.5 (tie), -10% (loss)
    assert _table_row(md, section, "adamw-lw")[2:6] == ["2", "0", "0", "2"]
    assert _table_row(md, section, "sgd-lw")[2:6] == ["0", "1", "1", "2"]
