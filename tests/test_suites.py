"""The papers' suites (``lrfree.bench.suites``): plans, sizes, estimates, one smoke run each."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest
import torch

from data_available import fmnist_available
from lrfree.bench import cost, runner, suites
from lrfree.bench import optimizers as bopt
from lrfree.bench.tasks import (
    PAPER_TASKS,
    SUITES,
    TASKS,
    BenchConfig,
    ResidualCNN,
    TaskSize,
    residual_cnn,
    task_loss,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_papers_tasks_and_baselines_are_registry_entries_in_no_other_suite():
    paper = {n for n, t in TASKS.items() if "paper" in t.tags}
    assert paper == set(PAPER_TASKS)
    assert {"adam", "rmsprop"} <= set(bopt.BENCH_OPTIMIZERS)
    assert {"adam", "rmsprop"} <= set(cost.FACTORS)
    for t in paper:  # measured costs, on the task
        assert TASKS[t].step_seconds and TASKS[t].eval_seconds and TASKS[t].load_seconds
        assert all(t not in sizes for sizes in SUITES.values())


def test_names_are_new_and_the_headline_suites_exist():
    assert not set(suites.PAPER_SUITES) & set(SUITES)
    for name in ("paper-lw", "paper-tlr", "paper-adalip", "paper-adler", "paper-camhd"):
        assert name in suites.PAPER_SUITES
    for name, s in suites.PAPER_SUITES.items():
        assert s.name == name and name.startswith("paper-")


@pytest.mark.parametrize("name", sorted(suites.PAPER_SUITES))
def test_every_spec_builds_on_its_tasks(name):
    """Every run of the plan resolves (known task, known optimizer) and every distinct
    (task, optimizer entry) builds on the task's model: an option the class does not take
    (a misspelt keyword) fails here, not hours into a suite."""
    runs = suites.plan_runs(name)
    assert runs
    built = set()
    for r in runs:
        if (r.task.name, r.entry.name) in built:
            continue
        built.add((r.task.name, r.entry.name))
        torch.manual_seed(0)
        model = r.task.model() if r.task.batch_size > 0 else torch.nn.Linear(2, 2)
        r.entry.build(model, r.lr, steps_per_epoch=10, loss=r.task.loss)
    plan = suites.suite_plan(name)
    assert {r.spec for r in runs} == set(plan.optimizers)
    assert {r.task.name for r in runs} == set(plan.tasks)


# The sizes of the docs' reproduction commands: (epochs, training examples, test examples),
# None = all; seeds = the number of seeds the docs' table pools.
DOCS_SIZES = {
    # lw_fmnist.py --epochs 10 --seeds 0 (all 60k images, the 10k test set)
    "paper-lw": ({"fmnist-mlp": (10, None, None)}, 1),
    # lw_fmnist.py --train-subset 10000 --epochs 10 --seeds 0
    "paper-lw-10k": ({"fmnist-mlp": (10, 10000, None)}, 1),
    # tlr_robustness.py (default: 3 epochs, all 60k images, seed 0)
    "paper-tlr": ({"fmnist-tlr-mlp": (3, None, None)}, 1),
    # tlr_robustness.py --epochs 10
    "paper-tlr-10ep": ({"fmnist-tlr-mlp": (10, None, None)}, 1),
    # tlr_robustness.py --train-subset 20000 --epochs 10 --seeds 0
    "paper-tlr-20k": ({"fmnist-tlr-mlp": (10, 20000, None)}, 1),
    # adalip_robustness.py / adalip_variants.py --train-subset 2048 --test-subset 1000
    # --epochs 5, seeds 0-2 (constant schedule)
    "paper-adalip": ({"fmnist-adalip-cnn": (5, 2048, 1000)}, 3),
    # adler_fmnist.py --train-subset 4096 --test-subset 2000 --epochs 3 --seeds 0 1 2;
    # adler_trust.py: the quick suite's MNIST-1D tasks at their 30 epochs
    "paper-adler": (
        {
            "fmnist-resnet": (3, 4096, 2000),
            "fmnist-resnet-sigmoid": (3, 4096, 2000),
            "fmnist-resnet-tanh": (3, 4096, 2000),
            "mnist1d-cnn": (None, None, None),
            "mnist1d-mlp": (None, None, None),
        },
        3,
    ),
    # adler_fmnist.py --train-subset 2048 --test-subset 2000 --epochs 3 --seeds 0 1 2
    "paper-adler-2048": (
        dict.fromkeys(
            ("fmnist-resnet", "fmnist-resnet-sigmoid", "fmnist-resnet-tanh"), (3, 2048, 2000)
        ),
        3,
    ),
    # camhd_fmnist.py --train-subset 10000 --epochs 10 --seeds 0 1 2
    "paper-camhd": (
        dict.fromkeys(
            (
                "fmnist-ffnn-100-100",
                "fmnist-ffnn-1000-100",
                "fmnist-ffnn-1000-1000",
                "fmnist-lenet5-b256",
            ),
            (10, 10000, None),
        ),
        3,
    ),
    # camhd_fmnist.py --train-subset 10000 --epochs 5 --seeds 0 1 2
    "paper-camhd-5ep": (
        dict.fromkeys(
            (
                "fmnist-ffnn-100-100",
                "fmnist-ffnn-1000-100",
                "fmnist-ffnn-1000-1000",
                "fmnist-lenet5-b256",
            ),
            (5, 10000, None),
        ),
        3,
    ),
}


def test_sizes_match_the_docs_commands():
    assert set(DOCS_SIZES) == set(suites.PAPER_SUITES)
    for name, (sizes, seeds) in DOCS_SIZES.items():
        plan = suites.suite_plan(name)
        assert plan.seeds == seeds, name
        got = {t: (s.epochs, s.train_subset, s.test_subset) for t, s in plan.sizes.items()}
        assert got == sizes, name
        for r in suites.plan_runs(name):  # the runner applies them (task defaults included)
            epochs, train, test = sizes[r.task.name]
            assert r.epochs == (epochs or r.task.epochs)
            assert r.train_subset == (train or r.task.train_subset)
            assert r.test_subset == test


def test_sweeps_match_the_docs():
    """The rate lists of the robustness sweeps are the scripts' (and the docs')."""
    tlr = suites.suite_plan("paper-tlr").optimizers
    for lr in ("0.1", "0.01", "0.001", "0.0001", "1e-05", "1e-06"):
        assert f"sgd-tlr[preset=paper]@{lr}" in tlr
        assert f"sgd-m[momentum=0.0]@{lr}" in tlr
        assert f"sgd-tlr[momentum=0.8,preset=paper,weight_decay=0.0005]@{lr}" in tlr
    adalip = suites.suite_plan("paper-adalip").optimizers
    assert sum(s.startswith("sgd-m[momentum=0.0]@") for s in adalip) == 8
    assert sum(s.startswith("rmsprop@") for s in adalip) == 6
    assert sum(s.startswith("adam@") for s in adalip) == 4
    assert sum("schedule=sqrt" in s for s in adalip) == 2 * (8 + 6 + 4)
    grid = suites.ADLER_SGD_LRS
    assert len(grid) == 10 and math.isclose(grid[0], 1e-5) and math.isclose(grid[-1], 0.3)
    assert math.isclose(grid[8], 9.5e-2, rel_tol=0.01)  # docs/adler.md's "lr=9.5e-02"


def test_estimates_are_the_cost_models():
    """Each suite's recorded estimate is ``cost.estimate(plan, jobs=2)`` within 10% (the
    cost tables are re-measured from time to time: update ``estimate_s`` and the docs)."""
    for name, s in suites.PAPER_SUITES.items():
        got = suites.estimate(name, jobs=2)
        assert got == pytest.approx(s.estimate_s, rel=0.1), (name, got)


def test_every_suite_is_named_beside_its_docs_table():
    """The page a suite regenerates names its command (``lrfree bench --suite NAME``, alone or
    with its ``--out``; not a longer suite name that starts the same), and so does
    docs/benchmark.md's table of suites."""
    text = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    for name, s in suites.PAPER_SUITES.items():
        page = re.match(r"docs/(\w+\.md)", s.regenerates).group(1)
        command = re.compile(rf"lrfree bench --suite {re.escape(name)}(?![\w-])")
        assert command.search(text[page]), (name, page)
        assert f"`lrfree bench --suite {name}`" in text["benchmark.md"], name


def test_residual_cnn_relu_is_the_bench_resnet():
    torch.manual_seed(0)
    a = ResidualCNN("relu")
    torch.manual_seed(0)
    b = residual_cnn()
    pa, pb = list(a.parameters()), list(b.parameters())
    assert [p.shape for p in pa] == [p.shape for p in pb]
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(a(x), b(x))


def test_robustness_table():
    recs = [
        {"task": "t", "optimizer": "o", "spec": f"o@{lr}", "lr": lr, "seed": s, "grid": False,
         "final_metric": m}
        for lr, s, m in [(0.1, 0, 80.0), (0.1, 1, 84.0), (0.1, 2, 70.0), (0.01, 0, 60.0)]
    ]  # fmt: skip
    recs.append({"task": "t", "optimizer": "o", "spec": "o", "lr": None, "seed": 0,
                 "grid": False, "final_metric": 1.0})  # fmt: skip
    recs.append({"task": "t", "optimizer": "g", "spec": "g@grid", "lr": 0.1, "seed": 0,
                 "grid": True, "final_metric": 1.0})  # fmt: skip
    (row,) = suites.robustness_table(recs)
    assert row["per_lr"] == {0.01: 60.0, 0.1: 80.0}  # the median over seeds
    assert row["spread"] == 20.0 and row["std"] == 10.0 and row["seeds"] == 3
    lr, mean, std = row["best"]  # the best mean over seeds, as a grid search reports it
    assert lr == 0.1 and mean == pytest.approx(78.0) and std == pytest.approx((104 / 3) ** 0.5)
    for r in recs:  # a loss: lower is better
        r["higher_is_better"] = False
    assert suites.robustness_table(recs)[0]["best"] == (0.01, 60.0, 0.0)
    assert "| t | `o` | 3 |" in suites.robustness_markdown(recs)


# one task and one or two of the suite's specs, at one epoch of N_TRAIN images; the first spec
# must lower the test loss (on N_TEST images) by 0.05 nats (a clear step of training), the
# others at all
N_TRAIN, N_TEST = 1024, 500
SMOKE = {
    "paper-lw": ("fmnist-mlp", ["sgd-lw", "adamw-lw[preset=paper]"]),
    "paper-lw-10k": ("fmnist-mlp", ["sgd-lw[preset=paper]"]),
    "paper-tlr": ("fmnist-tlr-mlp", ["sgd-tlr[preset=paper]@0.1"]),
    "paper-tlr-10ep": (
        "fmnist-tlr-mlp",
        ["sgd-tlr[momentum=0.8,preset=paper,weight_decay=0.0005]@0.01"],
    ),
    "paper-tlr-20k": (
        "fmnist-tlr-mlp",
        [suites._HG.format(eta=0.1, form="multiplicative") + "@0.1"],
    ),
    "paper-adalip": ("fmnist-adalip-cnn", ["adalip[preset=paper,schedule=constant]@0.1"]),
    "paper-adler": ("fmnist-resnet-tanh", ["adler[preset=paper]"]),
    "paper-adler-2048": ("fmnist-resnet", ["adler[preset=paper,trust=2.0]"]),
    "paper-camhd": (
        "fmnist-ffnn-100-100",
        ["adam-hd[hypergrad_lr=1e-07,preset=paper]@0.0003"],
    ),
    "paper-camhd-5ep": ("fmnist-ffnn-100-100", None),  # the 3-level CAM-HD
}


@functools.cache
def _test_split(task: str):
    return runner.subset_split(TASKS[task].load(BenchConfig()), N_TRAIN, N_TEST)


@torch.no_grad()
def _initial_test_loss(run: runner.Run) -> float:
    split = _test_split(run.task.name)
    torch.manual_seed(run.seed)  # the runner's initialisation of the run's model
    model = run.task.model()
    return float(task_loss(run.task, model(split.x_test), split.y_test))


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_smoke_run_through_the_runner(name, tmp_path):
    """One epoch of ``N_TRAIN`` images through ``runner.run_suite``: the records carry the suite's
    sizes, and training lowered the test loss below the untrained model's (a spec wired to
    the wrong optimizer options, a task wired to the wrong data or loss would not)."""
    if not fmnist_available():
        pytest.skip("Fashion-MNIST not installed (make test installs dataset-fashion-mnist)")
    task, specs = SMOKE[name]
    plan = suites.suite_plan(name)
    if specs is None:
        specs = [s for s in plan.optimizers if "levels=('element', 'layer'" in s][:1]
    assert specs and set(specs) <= set(plan.optimizers)
    runs = suites.plan_runs(name, epochs=1, train_subset=N_TRAIN, test_subset=N_TEST, seeds=1)
    runs = [r for r in runs if r.task.name == task and r.spec in specs]
    assert [r.spec for r in runs] == [s for s in plan.optimizers if s in specs]
    records = runner.run_suite(runs, tmp_path, BenchConfig(), progress=False)
    before = _initial_test_loss(runs[0])
    for rec in records:
        assert (rec["epochs"], rec["train_subset"], rec["test_subset"]) == (1, N_TRAIN, N_TEST)
        assert not rec["diverged"]
        assert math.isfinite(rec["final_train_loss"])
        margin = 0.05 if rec["spec"] == specs[0] else 0.0
        assert rec["per_epoch"][0]["test_loss"] < before - margin, (rec["spec"], before)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(runs)


def test_sizes_are_task_sizes():
    for s in suites.PAPER_SUITES.values():
        for part in s.parts:
            assert part.seeds >= 1 and part.optimizers
            assert all(isinstance(v, TaskSize) for v in part.tasks.values())
