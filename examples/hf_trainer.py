"""A Hugging Face ``Trainer`` with an lrfree optimizer, on a tiny BERT built from a config.

The optimizer and its scheduler go in through ``Trainer(..., optimizers=(opt, scheduler))``;
``Trainer`` then calls ``opt.step()`` and ``scheduler.step()`` as it does for its own. No
download: the model is ``BertForSequenceClassification`` from a two-layer ``BertConfig``,
the data random token sequences whose label is a simple function of the tokens.

Rules without curvature (``AdamHD``, ``SGDHD``, CAM-HD, ``Composed(rule="constant")``) work
with the plain ``Trainer``. Curvature rules (``SGDLW``, ``AdamWLW``) need
``loss.backward(create_graph=True)`` on their curvature steps: ``LrfreeTrainer`` below routes
the Trainer's backward through lrfree's one curvature entry
(``lrfree.integrations.backward``, i.e. ``opt.backward``), which passes ``create_graph=True``
to ``accelerator.backward`` on those steps only (graph mode).

The Trainer's ``learning_rate`` log entry is ``group["lr"]``, not the rate used:
``lrfree.integrations.HFRateLogger`` (a ``TrainerCallback``, given to either trainer) adds the
rate each block used (``lr * alpha``) and the rule's diagnostics to every training log record,
so they reach TensorBoard, W&B or whatever ``report_to`` names. With graph mode,
keep ``max_grad_norm=0`` (clipping rescales gradients in place after the graph was built) and
``attn_implementation="eager"`` (CPU's fused attention kernel has no double backward).

After training, the model is evaluated on held-out sequences (``--eval-examples``; also every
``--eval-steps`` steps during training). ``--optimizer Auto`` (schedule-free averaging: the
parameters hold ``y`` while training, the average ``x`` after ``opt.eval()``) needs nothing
more: the Trainer itself calls ``optimizer.train()`` in every training step and
``optimizer.eval()`` before every evaluation (no-ops for optimizers without averaging), so it
evaluates at ``x`` and trains at ``y``, and the model holds ``x`` after the final evaluation.

Run::

    python examples/hf_trainer.py --optimizer AdamHD --max-steps 50
    python examples/hf_trainer.py --optimizer AdamWLW --opt-kwargs '{"update_every": 5}'
    python examples/hf_trainer.py --tiny --optimizer AdamTLR --opt-kwargs '{"update_every": 2}'
    python examples/hf_trainer.py --optimizer Auto --plain-trainer --eval-steps 5

``--tiny`` is the smoke test ``tests/test_examples.py`` runs (3 steps, 64 sequences).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import lrfree
from lrfree.integrations import HFRateLogger, backward, unwrap  # unwrap: accelerate's -> yours


class LrfreeTrainer(Trainer):
    """``Trainer`` whose backward is lrfree's curvature entry (graph mode for curvature rules)."""

    def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        framework_backward = self.accelerator.backward

        def lrfree_backward(loss: torch.Tensor, **kw: Any) -> None:
            def run(loss: torch.Tensor, **extra: Any) -> None:
                framework_backward(loss, **kw, **extra)

            backward(unwrap(self.optimizer), loss, backward_fn=run)

        self.accelerator.backward = lrfree_backward  # type: ignore[method-assign]
        try:
            return super().training_step(model, inputs, *args, **kwargs)
        finally:
            del self.accelerator.backward  # back to the class's method


class RandomTokens(Dataset):
    """``n`` random sequences; label 1 when token ids above ``vocab // 2`` are the majority."""

    def __init__(self, n: int, seq_len: int, vocab: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab, (n, seq_len), generator=gen)
        self.labels = ((self.input_ids > vocab // 2).float().mean(1) > 0.5).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.input_ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def tiny_bert(vocab: int = 128, hidden: int = 32, layers: int = 2) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = "eager"  # double backward (graph mode) needs eager attention
    return BertForSequenceClassification(config)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizer", default="AdamHD", help="an lrfree optimizer class name")
    ap.add_argument("--opt-kwargs", default="{}", help="its keyword arguments, as JSON")
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--eval-examples", type=int, default=128, help="held-out sequences (0: no evaluation)"
    )
    ap.add_argument(
        "--eval-steps", type=int, default=0, help="also evaluate every N steps while training"
    )
    ap.add_argument("--plain-trainer", action="store_true", help="transformers.Trainer itself")
    ap.add_argument("--out", default=None, help="output_dir (default: a temporary folder)")
    ap.add_argument("--report-to", default="none", help="e.g. tensorboard")
    ap.add_argument("--tiny", action="store_true", help="smoke test: 3 steps, 64 sequences")
    args = ap.parse_args(argv)
    if args.tiny:
        args.max_steps, args.examples, args.batch_size = 3, 64, 8
        args.eval_examples = min(args.eval_examples, 32)
    if args.eval_examples < 0 or args.eval_steps < 0:
        ap.error("--eval-examples and --eval-steps must be >= 0")
    if args.eval_steps and not args.eval_examples:
        ap.error("--eval-steps needs --eval-examples >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train for ``--max-steps`` steps, then evaluate (``--eval-examples``); returns
    ``train_loss``, ``eval_loss`` (None without evaluation), the log history, the rates, the
    optimizer and the trainer."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = tiny_bert()
    cls = getattr(lrfree, args.optimizer)
    opt = cls(model.named_parameters(), **json.loads(args.opt_kwargs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / (args.max_steps + 1))
    out = args.out or tempfile.mkdtemp(prefix="hf-trainer-")
    training_args = TrainingArguments(
        output_dir=out,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        eval_strategy="steps" if args.eval_steps else "no",
        eval_steps=args.eval_steps or None,
        logging_steps=max(1, args.max_steps // 5),
        save_strategy="no",
        report_to=args.report_to,
        use_cpu=True,
        max_grad_norm=0.0,  # no clipping: graph mode (see the module docstring)
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer_cls = Trainer if args.plain_trainer else LrfreeTrainer
    held_out = RandomTokens(args.eval_examples, args.seq_len, model.config.vocab_size, seed=1)
    trainer = trainer_cls(
        model=model,
        args=training_args,
        train_dataset=RandomTokens(args.examples, args.seq_len, model.config.vocab_size),
        eval_dataset=held_out if args.eval_examples else None,
        optimizers=(opt, sched),
        callbacks=[HFRateLogger()],  # the rates used, into every training log record
    )
    result = trainer.train()  # calls opt.train() in every training step
    # evaluate() calls opt.eval() first: for Auto the model holds x from here on
    eval_loss = trainer.evaluate()["eval_loss"] if args.eval_examples else None
    return {
        "train_loss": result.training_loss,
        "eval_loss": eval_loss,
        "global_step": result.global_step,
        "log_history": trainer.state.log_history,
        "effective_lr": opt.effective_lr(),
        "optimizer": opt,
        "trainer": trainer,
    }


if __name__ == "__main__":
    res = main()
    keys = ("train_loss", "eval_loss", "global_step", "effective_lr")
    print(json.dumps({k: res[k] for k in keys}, indent=2))
