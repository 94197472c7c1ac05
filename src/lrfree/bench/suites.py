"""The papers' experiments as benchmark suites: ``lrfree bench --suite paper-lw`` and kin.

Each suite declares, as data, one paper's headline experiment as the method pages report it
at CPU scale: the tasks with their sizes (a ``TaskSize`` per task), the optimizer specs (the
paper's optimizer at ``preset="paper"``, the library defaults, the baselines and grids the
paper compares against, and the robustness sweeps as ``NAME[key=value]@LR`` specs), the
seeds, and the section of ``docs/`` it regenerates. A suite runs through the benchmark's own
runner (``runner.plan`` / ``runner.run_suite``), so its records, tables and plots are the
bench's; ``robustness_table`` adds the papers' one statistic the bench report lacks, the
spread of a sweep's final metric over its initial rates.

A suite is made of ``Part`` s: the tasks of a part run every spec of that part, for the
part's number of seeds (seeds ``0 .. seeds-1``). Within a suite a task has one size, so that
the report, which groups records by task and spec, never mixes two sizes; where a page
reports the same model at two sizes, the second size is a suite of its own
(``paper-lw-10k`` beside ``paper-lw``).

=====================  ===========================================  =====  ============
suite                  regenerates                                  runs   estimate
=====================  ===========================================  =====  ============
``paper-lw``           docs/layerwise.md, full-size table           9      11 min 14 s
``paper-lw-10k``       docs/layerwise.md, reduced-size table        14     3 min 19 s
``paper-tlr``          docs/tlr.md, the two 3-epoch tables          26     2 min 24 s
``paper-tlr-10ep``     docs/tlr.md, the two 10-epoch tables         24     7 min 0 s
``paper-tlr-20k``      docs/tlr.md, 2026-11-22 table + Table 1      24     3 min 27 s
``paper-adalip``       docs/adalip.md, Tables 2-3, both schedules   216    54 min 2 s
``paper-adler``        docs/adler.md, Run B + the trust tables      138    11 min 17 s
``paper-adler-2048``   docs/adler.md, Run A + ``trust=2``           126    7 min 19 s
``paper-camhd``        docs/hypergradient.md, Run B (10 epochs)     84     11 min 24 s
``paper-camhd-5ep``    docs/hypergradient.md, Run A (5 epochs)      84     5 min 48 s
=====================  ===========================================  =====  ============

The estimates are ``lrfree.bench.cost.estimate(plan_runs(name), jobs=2)``: two parallel runs
of one thread, the measured cost tables (``tests/test_suites.py`` keeps ``estimate_s`` within
10% of them). A ``NAME[k=v]`` entry costs as its base: the LW paper preset's curvature
pass every 20 steps is estimated at the default's every-step cost (``paper-lw`` and
``paper-lw-10k`` are estimated high, by up to 3x for their LW runs), and the 3-level CAM-HD
(element level) at the 2-level factor 1.45 where docs/hypergradient.md measured 2-3.7x
Adam's time on the FFNNs (``paper-camhd*`` are estimated low).

``lrfree bench --suite paper-X`` plans a suite with ``plan_runs`` (``--epochs``,
``--train-subset``, ``--test-subset`` and ``--seeds`` override its sizes and seeds as for the
other suites); ``suite_plan(name)`` gives ``(tasks, sizes, optimizers, seeds)``. The models
the bench's own tasks lack are bench tasks tagged ``paper`` (``lrfree.bench.tasks``), the
papers' torch Adam and RMSprop are registry baselines (``lrfree.bench.optimizers``): training
code lives in the loop files, so this module is data and is left out of every fingerprint
(``results.NOT_TRAINING``).

Example::

    >>> plan = suite_plan("paper-tlr")
    >>> plan.tasks, plan.sizes["fmnist-tlr-mlp"].epochs, plan.seeds
    (['fmnist-tlr-mlp'], 3, 1)
    >>> len(plan.optimizers)
    26
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import cost
from .optimizers import split_spec
from .plan import plan
from .tasks import TaskSize

__all__ = [
    "PAPER_SUITES",
    "PaperSuite",
    "Part",
    "SuitePlan",
    "estimate",
    "plan_runs",
    "robustness_markdown",
    "robustness_section",
    "robustness_table",
    "suite_plan",
]


# --------------------------------------------------------------------- suites
@dataclass(frozen=True, eq=False)
class Part:
    """Tasks (with their sizes) that run every spec of ``optimizers`` for ``seeds`` seeds."""

    tasks: dict[str, TaskSize]
    optimizers: tuple[str, ...]
    seeds: int = 1


@dataclass(frozen=True, eq=False)
class PaperSuite:
    """One paper's experiment as a benchmark suite.

    ``regenerates``: the docs section(s) whose tables the suite reproduces; ``scale``: how it
    relates to the paper's full-size experiment; ``replaces``: the ``benchmarks/`` scripts
    (and their commands) that produced those tables; ``estimate_s``: ``estimate(name)``,
    seconds with two parallel runs.
    """

    name: str
    paper: str
    parts: tuple[Part, ...]
    regenerates: str
    scale: str
    replaces: str
    estimate_s: float


class SuitePlan(NamedTuple):
    """What ``lrfree bench`` needs to plan a suite: the tasks in order, their sizes, every
    optimizer spec of any part (in order) and the most seeds of any part."""

    tasks: list[str]
    sizes: dict[str, TaskSize]
    optimizers: list[str]
    seeds: int


def _at(spec: str, lrs: Iterable[float]) -> tuple[str, ...]:
    """``spec`` at each rate: ``_at("adam", [1e-3])`` -> ``("adam@0.001",)``."""
    return tuple(f"{spec}@{lr!r}" for lr in lrs)


# --- LW (Bahamou & Goldfarb style layer-wise Hessian steps; docs/layerwise.md)
_LW_PAPER = "adamw-lw[preset=paper]"
_LW_BC = "adamw-lw[preset=paper,bias_correction=True]"
_LW_FULL = Part(
    {"fmnist-mlp": TaskSize(10, None, None)},
    ("adamw@grid", _LW_PAPER, _LW_BC, "adamw-lw", "sgd-lw"),
)
_LW_10K = Part(
    {"fmnist-mlp": TaskSize(10, 10000, None)},
    (
        "adamw@grid",
        _LW_PAPER,
        _LW_BC,
        "adamw-lw[preset=paper,bias_correction=True,weight_decay=0.1]",
        "adamw-lw[preset=paper,bias_correction=True,weight_decay=1.0]",
        "adamw-lw[preset=paper,bias_correction=True,warmup_steps=79]",
        "adamw-lw[preset=paper,bias_correction=True,update_every=5]",
        "adamw-lw[preset=paper,beta_t=0.999,bias_correction=True]",
        "sgd-lw[preset=paper]",
        "sgd-lw[preset=paper,bias_correction=True]",
    ),
)

# --- TLR (docs/tlr.md, paper Fig. 2 and Table 1)
TLR_LRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
_TLR_SWEEPS = (
    # the setup: plain SGD for both
    *_at("sgd-tlr[preset=paper]", TLR_LRS),
    *_at("sgd-m[momentum=0.0]", TLR_LRS),
    # the authors' setup: momentum 0.8, weight decay 5e-4 for both
    *_at("sgd-tlr[momentum=0.8,preset=paper,weight_decay=0.0005]", TLR_LRS),
    *_at("sgd-m[momentum=0.8,weight_decay=0.0005]", TLR_LRS),
)
_HG = "composed-adamw[blocks=global,direction=sgd,eta={eta},form={form},p=0.2,"
_HG += "rule=hypergradient-window,steps_per_epoch=157]"  # K = round(0.2 * 157) = 31
_TLR_20K = Part(
    {"fmnist-tlr-mlp": TaskSize(10, 20000, None)},
    (
        *_at("sgd-tlr[preset=paper]", TLR_LRS),
        *_at("sgd-m[momentum=0.0]", TLR_LRS),
        *_at(_HG.format(eta=0.01, form="additive"), TLR_LRS),
        *_at(_HG.format(eta=0.1, form="multiplicative"), TLR_LRS),
    ),
)

# --- AdaLip (docs/adalip.md, paper Tables 2-3)
ADALIP_LRS = {
    "sgd": (0.005, 0.01, 0.05, 0.1, 0.5, 0.7, 1.0, 1.3),
    "rmsprop": (0.0003, 0.0005, 0.0007, 0.001, 0.005, 0.01),
    "adam": (0.0005, 0.001, 0.005, 0.01),
}
_LIPS = {"sgd": ("adalip", "adalip-u"), "rmsprop": ("rmslip", "rmslip-u")}
_LIPS["adam"] = ("adamlip", "adamlip-u")
_BASES = {"sgd": "sgd-m[momentum=0.0]", "rmsprop": "rmsprop", "adam": "adam"}
_ADALIP_SIZE = {"fmnist-adalip-cnn": TaskSize(5, 2048, 1000)}
_ADALIP_CONSTANT = Part(
    _ADALIP_SIZE,
    tuple(
        spec
        for fam, lrs in ADALIP_LRS.items()
        for spec in (
            *_at(_BASES[fam], lrs),
            *(s for lip in _LIPS[fam] for s in _at(f"{lip}[preset=paper,schedule=constant]", lrs)),
        )
    )
    + ("adalip", "rmslip", "adamlip", "adalip-u", "rmslip-u", "adamlip-u"),
    seeds=3,
)
_ADALIP_SQRT = Part(
    _ADALIP_SIZE,
    tuple(
        s
        for fam, lrs in ADALIP_LRS.items()
        for lip in _LIPS[fam]
        for s in _at(f"{lip}[preset=paper,schedule=sqrt]", lrs)
    ),
    seeds=1,
)

# --- ADLER (docs/adler.md, paper Table 1 at CPU scale, and the trust cap)
ADLER_SGD_LRS = tuple(10 ** (-5 + i * (math.log10(0.3) + 5) / 9) for i in range(10))
"""Ten rates log-spaced from 1e-5 to 3e-1 (``benchmarks/adler_fmnist.py``'s grid)."""
_ADLER_RESNETS = ("fmnist-resnet", "fmnist-resnet-sigmoid", "fmnist-resnet-tanh")
_ADLER_TABLE1 = (
    "adler[preset=paper]",
    "adler[preset=paper,variant=gn]",
    *_at("sgd-m[momentum=0.0]", ADLER_SGD_LRS),
    "adler",
)
_ADLER_TRUST = Part(
    {"mnist1d-cnn": TaskSize(), "mnist1d-mlp": TaskSize()},
    ("adler[preset=paper]", "adler[preset=paper,trust=1.0]", "adler[preset=paper,trust=2.0]"),
    seeds=3,
)
_ADLER_BETA = Part({"mnist1d-cnn": TaskSize()}, ("adler[beta=0.9,preset=paper]",), seeds=3)

# --- CAM-HD (docs/hypergradient.md, paper Fig. 2 / Table 2)


def _camhd_specs(lr: float, conv: bool) -> tuple[str, ...]:
    """Adam, Adam-HD at 1e-7 and 1e-9, Adam-CAM-HD with 2 and 3 levels (paper Table 1's
    settings per model), all at base rate ``lr``, then the library's defaults."""
    hg, delta, decay = (1e-8, 0.03, 0.002) if conv else (1e-7, 0.01, 0.0)
    mid = "filter" if conv else "layer"
    gammas2 = (0.2, 0.8) if conv else (0.5, 0.5)
    cam = f"adam-camhd[decay_rate={decay!r},delta={delta!r},hypergrad_lr={hg!r},preset=paper,"
    return (
        f"adam@{lr!r}",
        f"adam-hd[hypergrad_lr=1e-07,preset=paper]@{lr!r}",
        f"adam-hd[hypergrad_lr=1e-09,preset=paper]@{lr!r}",
        f"{cam}gammas={gammas2!r},levels=({mid!r}, 'global')]@{lr!r}",
        f"{cam}gammas=(0.3, 0.3, 0.4),levels=('element', {mid!r}, 'global')]@{lr!r}",
        "adam-hd",
        "adam-camhd",
    )


def _camhd_parts(epochs: int) -> tuple[Part, ...]:
    size = TaskSize(epochs, 10000, None)
    return (
        Part({"fmnist-ffnn-100-100": size}, _camhd_specs(3e-4, conv=False), seeds=3),
        Part(
            {"fmnist-ffnn-1000-100": size, "fmnist-ffnn-1000-1000": size},
            _camhd_specs(1e-3, conv=False),
            seeds=3,
        ),
        Part({"fmnist-lenet5-b256": size}, _camhd_specs(1e-3, conv=True), seeds=3),
    )


_LW = "Bahamou & Goldfarb, layer-wise step sizes (papers/layerwise-step-sizes-LW.txt)"
_TLR = "Newton trainable learning rate (papers/newton-trainable-lr-TLR.txt)"
_ADALIP = "AdaLip (papers/adalip.txt)"
_ADLER = "ADLER (papers/adler.txt)"
_CAMHD = "CAM-HD, hierarchical hypergradient (papers/cam-hd-hierarchical-hypergradient.txt)"

PAPER_SUITES: dict[str, PaperSuite] = {
    s.name: s
    for s in [
        PaperSuite(
            "paper-lw",
            _LW,
            (_LW_FULL,),
            "docs/layerwise.md, 'Fashion-MNIST MLP: AdamWLW (the paper's settings) vs AdamW "
            "over its grid', full-size table",
            "The paper's Fashion-MNIST MLP experiment (784-1000-500-100-10, all 60k images, "
            "10 epochs, batch 128) at its size, one seed (the paper averages runs); the "
            "paper's autoencoder and GCN experiments are not in the docs' tables and not here "
            "(the full suite runs those models at its own sizes).",
            "benchmarks/lw_fmnist.py --epochs 10 --seeds 0 (+ --only-lw)",
            674.0,
        ),
        PaperSuite(
            "paper-lw-10k",
            _LW,
            (_LW_10K,),
            "docs/layerwise.md, reduced-size table (first 10,000 training examples)",
            "The same experiment on the first 10k of the 60k images (790 steps), one seed: the "
            "variants of the paper's settings the page compares.",
            "benchmarks/lw_fmnist.py --train-subset 10000 --epochs 10 --seeds 0 --variant ...",
            199.0,
        ),
        PaperSuite(
            "paper-tlr",
            _TLR,
            (
                Part(
                    {"fmnist-tlr-mlp": TaskSize(3, None, None)},
                    (*_TLR_SWEEPS, "sgd-tlr", "adam-tlr"),
                ),
            ),
            "docs/tlr.md, 'Robustness to the initial rate': the issue's setup (plain SGD) and "
            "the authors' setup (momentum 0.8, weight decay 5e-4), 3 epochs",
            "Paper Fig. 2 (robustness of the initial rate, lr0 = 1e-1 ... 1e-6) with the "
            "paper's MNIST MLP on Fashion-MNIST: all 60k images, batch 128 (K = 94), 3 of the "
            "issue's 10 epochs, one seed; the paper trains longer and on MNIST.",
            "benchmarks/tlr_robustness.py [--momentum 0.8 --weight-decay 5e-4]",
            144.0,
        ),
        PaperSuite(
            "paper-tlr-10ep",
            _TLR,
            (Part({"fmnist-tlr-mlp": TaskSize(10, None, None)}, _TLR_SWEEPS),),
            "docs/tlr.md, 'The authors' setup at the issue's full size (10 epochs)' and 'The "
            "issue's setup at full size (10 epochs), rerun with today's code'",
            "The same sweep at the issue's full size, 10 epochs (the docs ran SGD only at "
            "0.1 there; the suite runs every rate).",
            "benchmarks/tlr_robustness.py --epochs 10 [--momentum 0.8 --weight-decay 5e-4]",
            420.0,
        ),
        PaperSuite(
            "paper-tlr-20k",
            _TLR,
            (_TLR_20K,),
            "docs/tlr.md, 'Earlier runs (2026-11-22)', reduced size, and 'The first-order "
            "comparators (the paper's Table 1 question, same windows)'",
            "The first 20k images (157 steps per epoch, K = 31), 10 epochs, one seed: TLR, "
            "SGD and the paper's additive / multiplicative hypergradient comparators on the "
            "same windows.",
            "benchmarks/tlr_robustness.py --train-subset 20000 --epochs 10 --seeds 0 "
            "[--methods hg-add hg-mult]",
            207.0,
        ),
        PaperSuite(
            "paper-adalip",
            _ADALIP,
            (_ADALIP_CONSTANT, _ADALIP_SQRT),
            "docs/adalip.md, 'Robustness to the learning rate (paper Tables 2-3)': the "
            "seed-0 and pooled tables, the seeds 0-2 std summary and 'All six variants, "
            "both schedules'",
            "Paper Tables 2-3 (SGD / RMSProp / Adam vs their Lip and Lip-U variants over "
            "the paper's rate lists) with the paper's MNIST CNN on Fashion-MNIST, cut to the "
            "first 2,048 images and 1,000 test images, 5 epochs (80 steps per run), seeds "
            "0-2 (the sqrt schedule seed 0); the paper runs full training, 25 runs per rate.",
            "benchmarks/adalip_robustness.py and benchmarks/adalip_variants.py "
            "--train-subset 2048 --test-subset 1000 --epochs 5",
            3242.0,
        ),
        PaperSuite(
            "paper-adler",
            _ADLER,
            (
                Part(dict.fromkeys(_ADLER_RESNETS, TaskSize(3, 4096, 2000)), _ADLER_TABLE1, 3),
                _ADLER_TRUST,
                _ADLER_BETA,
            ),
            "docs/adler.md, 'Reproduction' Run B (4096 images) and 'Divergence on the "
            "MNIST-1D CNN, and the trust cap' (the trust and beta = 0.9 tables)",
            "Paper Table 1 (ADLER vs its GN comparator vs SGD over ten rates; relu / sigmoid "
            "/ tanh residual CNN without BatchNorm) on Fashion-MNIST instead of CIFAR-100: "
            "the first 4,096 images, 2,000 test images, 3 epochs (96 steps), seeds 0-2; "
            "and ADLER at trust inf / 1 / 2 on the quick suite's MNIST-1D tasks (30 epochs).",
            "benchmarks/adler_fmnist.py --train-subset 4096 --test-subset 2000 --epochs 3 "
            "--seeds 0 1 2; benchmarks/adler_trust.py",
            677.0,
        ),
        PaperSuite(
            "paper-adler-2048",
            _ADLER,
            (
                Part(
                    dict.fromkeys(_ADLER_RESNETS, TaskSize(3, 2048, 2000)),
                    (*_ADLER_TABLE1, "adler[preset=paper,trust=2.0]"),
                    3,
                ),
            ),
            "docs/adler.md, 'Reproduction' Run A (2048 images) and its trust = 2 table",
            "Run A of the same experiment: the first 2,048 images (48 steps), seeds 0-2.",
            "benchmarks/adler_fmnist.py --train-subset 2048 --test-subset 2000 --epochs 3 "
            "--seeds 0 1 2 [--methods adler-trust2]",
            439.0,
        ),
        PaperSuite(
            "paper-camhd",
            _CAMHD,
            _camhd_parts(10),
            "docs/hypergradient.md, 'Run B: 10,000 training examples, 10 epochs'",
            "Paper Fig. 2 / Table 2 (Adam vs Adam-HD vs Adam-CAM-HD; FFNNs [100,100], "
            "[1000,100], [1000,1000] and LeNet-5 with Table 1's batch sizes and rates) on "
            "Fashion-MNIST instead of MNIST: the first 10k of 60k images, the paper's 10 "
            "epochs, seeds 0-2 (the paper: 10 seeds).",
            "benchmarks/camhd_fmnist.py --train-subset 10000 --epochs 10 --seeds 0 1 2",
            684.0,
        ),
        PaperSuite(
            "paper-camhd-5ep",
            _CAMHD,
            _camhd_parts(5),
            "docs/hypergradient.md, 'Run A: 10,000 training examples, 5 epochs'",
            "Run A of the same experiment: 5 epochs.",
            "benchmarks/camhd_fmnist.py --train-subset 10000 --epochs 5 --seeds 0 1 2",
            348.0,
        ),
    ]
}
"""Every paper suite by name; the five headline ones are ``paper-lw``, ``paper-tlr``,
``paper-adalip``, ``paper-adler`` and ``paper-camhd``."""


def get_suite(name: str) -> PaperSuite:
    if name not in PAPER_SUITES:
        raise ValueError(f"Unknown paper suite {name!r}; known: {sorted(PAPER_SUITES)}")
    return PAPER_SUITES[name]


def suite_plan(name: str) -> SuitePlan:
    """The suite's tasks, sizes, optimizer specs (every part's, in order) and seeds (the
    most of any part), for summaries (``--list``, the results page's sizes). Not a plan:
    ``runner.plan`` of these would run every spec on every task; ``plan_runs`` gives the
    suite's runs, part by part.

    Example::

        >>> p = suite_plan("paper-adler")
        >>> p.tasks[:2], p.sizes["fmnist-resnet"].train_subset, p.seeds
        (['fmnist-resnet', 'fmnist-resnet-sigmoid'], 4096, 3)
    """
    suite = get_suite(name)
    sizes: dict[str, TaskSize] = {}
    for part in suite.parts:
        for task, size in part.tasks.items():
            if sizes.setdefault(task, size) != size:
                raise ValueError(f"suite {name!r} gives task {task!r} two sizes")
    specs = list(dict.fromkeys(s for part in suite.parts for s in part.optimizers))
    return SuitePlan(list(sizes), sizes, specs, max(p.seeds for p in suite.parts))


def plan_runs(
    name: str,
    *,
    epochs: int | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seeds: int | None = None,
) -> list[Any]:
    """The runner's runs of suite ``name`` (``runner.Run`` s, part by part): the arguments
    override the suite's sizes and every part's seeds, as ``lrfree bench``'s ``--epochs``,
    ``--train-subset``, ``--test-subset`` and ``--seeds`` do."""
    suite = get_suite(name)
    suite_plan(name)  # (checks that no task has two sizes)
    runs = []
    for part in suite.parts:
        runs += plan(
            list(part.tasks),
            list(part.optimizers),
            seeds if seeds is not None else part.seeds,
            epochs,
            train_subset,
            sizes=part.tasks,
            test_subset=test_subset,
        )
    return runs


def estimate(name: str, jobs: int = 2) -> float:
    """``cost.estimate`` of the suite's runs with ``jobs`` parallel runs (seconds)."""
    return cost.estimate(plan_runs(name), jobs=jobs)


# ------------------------------------------------------------- the sweep table
def robustness_table(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The papers' robustness statistic: per task and optimizer entry run at explicit rates
    (``NAME@LR`` specs), the final metric per rate (the median over seeds, as
    ``benchmarks/adalip_robustness.py``), then over the rates: ``max``, ``median``,
    ``mean``, ``std`` (population) and ``spread`` (best minus worst, ``docs/tlr.md``'s
    "worst-best"); and ``best``: the rate with the best mean over seeds, with that mean and
    its standard deviation (``docs/adler.md``'s "SGD (best of grid)"). Entries with fewer
    than two rates are left out.

    .. math::

        m_r = \\operatorname{median}_s\\, \\mathrm{metric}(r, s), \\qquad
        \\mathrm{spread} = \\max_r m_r - \\min_r m_r

    Example::

        >>> recs = [{"task": "t", "optimizer": "sgd", "spec": f"sgd@{lr}", "lr": lr,
        ...          "seed": 0, "final_metric": acc, "grid": False}
        ...         for lr, acc in [(0.1, 80.0), (0.01, 60.0)]]
        >>> row, = robustness_table(recs)
        >>> row["optimizer"], row["per_lr"], row["spread"], row["best"]
        ('sgd', {0.01: 60.0, 0.1: 80.0}, 20.0, (0.1, 80.0, 0.0))
    """
    by: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    higher: dict[tuple[str, str], bool] = {}
    for r in records:
        if r.get("grid") or r.get("lr") is None or not split_spec(r["spec"])[1]:
            continue  # a grid (the report's) or an entry at its default rate: no sweep
        key = (r["task"], r["optimizer"])
        by[key][float(r["lr"])].append(float(r["final_metric"]))
        higher[key] = bool(r.get("higher_is_better", True))
    rows = []
    for (task, opt), per in sorted(by.items()):
        if len(per) < 2:
            continue
        per_lr = {lr: statistics.median(per[lr]) for lr in sorted(per)}
        vals = list(per_lr.values())
        sign = 1.0 if higher[(task, opt)] else -1.0
        best = max(per, key=lambda lr: sign * statistics.fmean(per[lr]))
        rows.append(
            {
                "task": task,
                "optimizer": opt,
                "per_lr": per_lr,
                "seeds": max(len(v) for v in per.values()),
                "max": max(vals),
                "median": statistics.median(vals),
                "mean": statistics.fmean(vals),
                "std": statistics.pstdev(vals),
                "spread": max(vals) - min(vals),
                "best": (best, statistics.fmean(per[best]), statistics.pstdev(per[best])),
            }
        )
    return rows


def robustness_markdown(records: Iterable[dict[str, Any]]) -> str:
    """``robustness_table`` as a markdown table (one row per task and optimizer)."""
    rows = robustness_table(records)
    lines = [
        "| task | optimizer | seeds | final metric per rate (median over seeds) "
        "| max | median | mean | std | worst-best | best rate: mean +- std over seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = ", ".join(f"{lr:g}: {m:.2f}" for lr, m in r["per_lr"].items())
        lines.append(
            f"| {r['task']} | `{r['optimizer']}` | {r['seeds']} | {cells} | {r['max']:.2f} "
            f"| {r['median']:.2f} | {r['mean']:.2f} | {r['std']:.3f} | {r['spread']:.2f} "
            f"| {r['best'][0]:g}: {r['best'][1]:.2f} +- {r['best'][2]:.2f} |"
        )
    return "\n".join(lines)


def robustness_section(records: Iterable[dict[str, Any]]) -> str:
    """The report's section for a paper suite: ``robustness_markdown`` under a heading that
    says what it is; ``""`` when no entry ran at two or more explicit rates.

    Example::

        >>> recs = [{"task": "t", "optimizer": "sgd", "spec": f"sgd@{lr}", "lr": lr,
        ...          "seed": 0, "final_metric": acc, "grid": False}
        ...         for lr, acc in [(0.1, 80.0), (0.01, 60.0)]]
        >>> robustness_section(recs).splitlines()[1]
        '## Robustness over the rates'
        >>> robustness_section([])
        ''
    """
    records = list(records)
    if not robustness_table(records):
        return ""
    return (
        "\n## Robustness over the rates\n\n"
        "The papers' sweep statistic (`lrfree.bench.suites.robustness_table`): per task and "
        "entry run at explicit rates (`NAME@LR`), the final metric at each rate (median over "
        "seeds), then its max, median, mean, standard deviation and worst-best over the rates, "
        "and the rate with the best mean over seeds.\n\n" + robustness_markdown(records) + "\n"
    )
