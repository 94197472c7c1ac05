"""The ``stdlib-charlm`` task: the pinned corpus, its split, the transformer, its training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lrfree
from lrfree.bench import data, loop, runner
from lrfree.bench.data import CorpusMismatch, DataMissing
from lrfree.bench.tasks import CharTransformer, get_task

TASK = get_task("stdlib-charlm")


@pytest.fixture(scope="module")
def split():
    try:
        return TASK.load(None)
    except CorpusMismatch as exc:  # another Python's sources: not the pinned corpus
        pytest.skip(str(exc))


def test_a_wrong_pinned_hash_raises_naming_both_hashes(monkeypatch):
    try:
        data.read_stdlib_corpus()
    except CorpusMismatch as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(data, "STDLIB_SHA256", "0" * 64)
    with pytest.raises(CorpusMismatch, match=r"has SHA-256 e8f379ab\w+, expected 0{64}"):
        data.read_stdlib_corpus()
    assert issubclass(CorpusMismatch, DataMissing)  # `lrfree bench` stops with the message


def test_missing_corpus_files_are_named(tmp_path):
    (tmp_path / "argparse.py").write_text("")
    with pytest.raises(CorpusMismatch, match=r"textwrap\.py, .*not found in"):
        data.read_stdlib_corpus(tmp_path)


def test_split_is_fixed_windows_shifted_by_one(split):
    corpus = data.read_stdlib_corpus()
    again = data.load_stdlib_charlm.__wrapped__(seq_len=64)  # uncached: built anew
    for a, b in zip(
        (split.x_train, split.y_train, split.x_test, split.y_test),
        (again.x_train, again.y_train, again.x_test, again.y_test),
    ):
        assert a.dtype == torch.long and torch.equal(a, b)
    assert split.x_train.shape == (7050, 64) and split.x_test.shape == (783, 64)
    assert torch.equal(split.y_train[:, :-1], split.x_train[:, 1:])  # next-byte targets
    assert bytes(split.x_train[1].tolist()) == corpus[64:128]  # window i at offset 64 i
    cut = int(len(corpus) * 0.9)  # validation: the last 10%, disjoint from training
    assert bytes(split.x_test[0].tolist()) == corpus[cut : cut + 64]
    assert int(split.y_train.max()) < 256


def test_attention_goes_through_sdpa_causally(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("is_causal"))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    torch.manual_seed(0)
    model = CharTransformer()
    x = torch.randint(0, 256, (2, 64))
    out = model(x)
    assert out.shape == (2, 256, 64)  # (batch, vocabulary, sequence)
    assert calls == [True, True]  # one causal attention per layer
    # causal: a later byte does not change the logits before it
    x2 = x.clone()
    x2[:, 40] = (x2[:, 40] + 1) % 256
    assert torch.allclose(model(x2)[:, :, :40], out[:, :, :40], atol=1e-6)
    assert not torch.allclose(model(x2)[:, :, 40:], out[:, :, 40:])


def test_adamw_lowers_the_validation_loss_in_20_steps(split):
    torch.manual_seed(0)
    model = TASK.model()
    # 3e-3: at the default 1e-3, 20 steps reach 3.5 (from 5.8), not yet the unigram level
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    small = runner.subset_split(split, 20 * TASK.batch_size, 200)
    before, _ = runner._evaluate(TASK, model, small)
    gen = torch.Generator().manual_seed(0)
    for x, y in runner._batches(small, TASK.batch_size, gen):
        runner.train_step(TASK, runner._default_step, model, opt, x, y)
    after, _ = runner._evaluate(TASK, model, small)
    assert before > TASK.collapse > after  # from near log(256) to below the unigram level


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_graph_mode_lw_step_runs_under_the_math_backend(split):
    torch.manual_seed(0)
    model = TASK.model()
    opt = lrfree.SGDLW(model.named_parameters())
    x, y = split.x_train[:4], split.y_train[:4]
    assert opt.curvature_due()
    with pytest.raises(RuntimeError, match="no double backward"):  # the fused kernel
        runner._default_step(TASK, model, opt, x, y)
    opt = lrfree.SGDLW(model.named_parameters())
    assert type(runner.attention_backend(TASK, opt)).__name__ != "nullcontext"
    before = [p.detach().clone() for p in model.parameters()]
    loss = runner.train_step(TASK, runner._default_step, model, opt, x, y)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(v > 0 for v in opt.effective_lr().values())
    adamw = torch.optim.AdamW(model.parameters())  # first-order: the fused kernel stays
    assert type(runner.attention_backend(TASK, adamw)).__name__ == "nullcontext"


def test_adler_checks_the_declared_loss_on_the_sequence_layout(split):
    from lrfree.bench import optimizers as bopt

    torch.manual_seed(0)
    model = TASK.model()
    entry = bopt.lookup("adler")
    opt = entry.build(model, None, loss=TASK.loss)
    x, y = split.x_train[:4], split.y_train[:4]
    step = loop.entry_step(entry, opt)  # ADLER asks for the outputs (Rule.feed)
    assert step is loop.outputs_step and loop.second_order_due(opt)  # its first step estimates
    runner.train_step(TASK, step, model, opt, x, y, entry.second_order)  # the check runs here
    assert opt._workspace().cache["adler.loss_checked"]  # verified against autograd: matched
    assert opt.effective_lr()["global"] > 0
