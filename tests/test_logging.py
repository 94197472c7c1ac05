"""lrfree.logging: read-outs, and the TensorBoard / CSV / JSONL files read back."""

from __future__ import annotations

import csv
import json
import logging as stdlib_logging
import math

import pytest
import torch

import lrfree
from lrfree.logging import (
    CSVWriter,
    JSONLWriter,
    OptimizerLogger,
    TensorBoardWriter,
    rule_diagnostics,
    scalars,
)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def train(opt: torch.optim.Optimizer, model: torch.nn.Module, steps: int, log=None) -> None:
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 2, (16,), generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        due = opt.curvature_due() if hasattr(opt, "curvature_due") else False
        loss.backward(create_graph=due)
        opt.step()
        if log is not None:
            log.log(step)


def test_stdlib_logging_is_not_shadowed():
    assert stdlib_logging.getLogger is not None
    assert stdlib_logging.__name__ == "logging" and "lrfree" not in stdlib_logging.__file__
    assert lrfree.logging.__name__ == "lrfree.logging"


def test_scalars_layerwise_effective_lr_and_diagnostics():
    model = mlp()
    opt = lrfree.SGDLW(model.named_parameters(), update_every=2)
    train(opt, model, 4)
    values = scalars(opt)
    for block, lr in opt.effective_lr().items():
        assert values[f"effective_lr/{block}"] == lr
    for block in ("0", "2"):
        st = opt.state[dict(model.named_parameters())[f"{block}.weight"]]
        assert values[f"layerwise/rejected/{block}"] == float(st["layerwise.rejected"])
        assert values[f"layerwise/count/{block}"] == float(st["layerwise.count"])
        assert values[f"layerwise/delta2/{block}"] == pytest.approx(float(st["layerwise.delta2"]))
        assert values[f"layerwise/count/{block}"] + values[f"layerwise/rejected/{block}"] == 2


def test_short_vectors_element_by_element_long_ones_by_mean():
    model = mlp()
    opt = lrfree.SGDCAMHD(model.named_parameters(), lr=0.1)
    train(opt, model, 3)
    diag = rule_diagnostics(opt)
    first = next(iter(diag))
    gamma = opt.state[opt.param_groups[0]["params"][0]]["cam-hd.gamma"]
    assert gamma.numel() == 2
    for k in range(2):
        assert diag[first][f"cam-hd/gamma[{k}]"] == pytest.approx(float(gamma[k]))
    # the per-parameter "prev" buffer of the owner (8 x 4 entries) is summarised by its mean
    prev = opt.state[opt.param_groups[0]["params"][0]]["cam-hd.prev"]
    assert diag[first]["cam-hd/prev.mean"] == pytest.approx(float(prev.double().mean()))
    assert "cam-hd/gamma.mean" not in diag[first]
    diag1 = rule_diagnostics(opt, max_elements=1)
    assert "cam-hd/gamma.mean" in diag1[first] and "cam-hd/gamma[0]" not in diag1[first]


def test_filter_blocks_one_effective_lr_per_output_unit():
    model = mlp()
    opt = lrfree.Composed(
        model.named_parameters(), direction="sgd", rule="hypergradient", blocks="filter", lr=0.1
    )
    train(opt, model, 2)
    values = scalars(opt)
    assert sum(k.startswith("effective_lr/0[") for k in values) == 8
    assert sum(k.startswith("effective_lr/2[") for k in values) == 2


def test_plain_torch_optimizer_logs_group_lr():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert scalars(opt) == {"lr/group0": 0.25}
    assert rule_diagnostics(opt) == {}


def test_tensorboard_event_file_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = mlp()
    opt = lrfree.SGDLW(model.named_parameters(), update_every=2)
    written: dict[int, dict[str, float]] = {}

    class Recorder:
        def write(self, step, values):
            written[step] = dict(values)

        def close(self):
            pass

    with OptimizerLogger(opt, TensorBoardWriter(tmp_path), Recorder(), every=2) as log:
        train(opt, model, 6, log)
    assert sorted(written) == [0, 2, 4]
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"lrfree/{k}" for k in written[4]} == tags
    for tag in ("effective_lr/0", "effective_lr/2", "layerwise/rejected/0", "layerwise/raw/2"):
        events = acc.Scalars(f"lrfree/{tag}")
        assert [e.step for e in events] == [0, 2, 4]
        for e in events:  # TensorBoard stores float32
            assert e.value == pytest.approx(written[e.step][tag], rel=1e-6, abs=1e-30) or (
                math.isinf(e.value) and math.isinf(written[e.step][tag])
            )


def test_tensorboard_existing_writer_and_tag_cleaning(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    sw = SummaryWriter(str(tmp_path))
    tb = TensorBoardWriter(writer=sw, prefix="")
    assert tb.tag("effective_lr/features.3[2]@group1") == "effective_lr/features.3[2]@group1"
    assert tb.tag("a b:c") == "a_b_c"
    tb.write(0, {"x": 1.0})
    tb.close()  # flushes, does not close the user's writer
    sw.add_scalar("y", 2.0, 0)
    sw.close()


def test_csv_and_jsonl_read_back(tmp_path):
    model = mlp()
    opt = lrfree.AdamHD(model.named_parameters(), lr=1e-2, blocks="layer")
    csv_path, jsonl_path = tmp_path / "sub" / "rates.csv", tmp_path / "rates.jsonl"
    with OptimizerLogger(opt, CSVWriter(csv_path), JSONLWriter(jsonl_path)) as log:
        train(opt, model, 3, log)
        last = scalars(opt)
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "tag", "value"]
    final = {tag: float(v) for step, tag, v in rows[1:] if step == "2"}
    assert final == last  # repr(float) round-trips exactly
    lines = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2]
    assert {k: v for k, v in lines[-1].items() if k != "step"} == last
    # appending to an existing CSV does not repeat the header
    w = CSVWriter(csv_path)
    w.write(3, {"a": float("nan")})
    w.close()
    rows = list(csv.reader(csv_path.open()))
    assert rows.count(["step", "tag", "value"]) == 1 and rows[-1] == ["3", "a", "nan"]


def test_jsonl_non_finite_values_are_null(tmp_path):
    w = JSONLWriter(tmp_path / "x.jsonl")
    w.write(7, {"a": float("inf"), "b": float("nan"), "c": 1.5})
    w.close()
    assert json.loads((tmp_path / "x.jsonl").read_text()) == {
        "step": 7,
        "a": None,
        "b": None,
        "c": 1.5,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "Invalid every: 0 (expected an integer >= 1)"),
        ({"every": 1.5}, "Invalid every: 1.5 (expected an integer >= 1)"),
        ({"max_elements": 0}, "Invalid max_elements: 0 (expected an integer >= 1)"),
    ],
)
def test_logger_bad_arguments(kwargs, message):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        OptimizerLogger(opt, **kwargs)


def test_logger_skips_steps_between():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    log = OptimizerLogger(opt, every=3)
    assert log.log(1) == {} and log.log(3) == {"lr/group0": 0.1}
