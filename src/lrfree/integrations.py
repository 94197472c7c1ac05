"""Log the rate each block actually used from PyTorch Lightning and the Hugging Face Trainer,
and evaluate an averaging optimizer's average from Lightning.

Framework learning-rate monitors show ``group["lr"]``: Lightning's ``LearningRateMonitor``
and the ``learning_rate`` entry of the HF Trainer's logs. For an lrfree optimizer that is the
user's base rate only; the rate a block used is ``lr * alpha`` (``opt.effective_lr()``), and
the two can differ by orders of magnitude. Two callbacks here log the rate used, per
block, and the rule's diagnostics (``lrfree.logging.scalars``), to whatever the framework
logs to:

* ``LightningRateLogger`` (a ``lightning.pytorch.Callback``): to every logger of the Trainer
  (``trainer.loggers``: TensorBoard, CSV, W&B, ...), at the step Lightning's own
  ``self.log`` uses, and into ``trainer.callback_metrics``;
* ``HFRateLogger`` (a ``transformers.TrainerCallback``): into the ``logs`` dict of every
  training log record (``on_log``), so the values reach every ``report_to`` integration,
  the console and ``trainer.state.log_history``.

A third callback, ``LightningAveraging``, is for optimizers with iterate averaging
(``lrfree.Auto``, ``averaging="schedule_free"``): it calls ``opt.eval()`` before Lightning's
validation, test and predict loops and ``opt.train()`` after them and at the start of every
training epoch, so that the model is evaluated at the average ``x`` and trained at ``y``. The
HF Trainer needs no callback for this: it calls ``optimizer.train()`` in its training step and
``optimizer.eval()`` before evaluating (``transformers.Trainer.training_step`` and
``evaluation_loop``), which every lrfree optimizer has (no-ops without averaging).

The rate loggers read the optimizer right after its ``step()`` and before the scheduler's:
the values are those of the step just taken (``lr`` as the Trainer's ``learning_rate`` shows
it, times the rule's ``alpha``), not the next step's. Tags are ``<prefix>/effective_lr/<block>`` and
``<prefix>/<rule>/<field>/<block>`` (``prefix="lrfree"``); an optimizer that is not an lrfree
one logs ``<prefix>/lr/group<i>``.

The frameworks are imported when a callback is first used (``from lrfree.integrations import
LightningRateLogger``), never by ``import lrfree``: the core needs only torch. Without them
an ``ImportError`` names the extra, ``pip install lrfree[ecosystem]``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .logging import scalars

# the callbacks, LightningRateLogger, LightningAveraging and HFRateLogger, are module
# attributes built on first
# access (``__getattr__``); they stay out of __all__ so that ``import *`` imports no framework
__all__ = ["backward", "rates", "unwrap"]

_EXTRA = "pip install lrfree[ecosystem]"


def unwrap(optimizer: Any) -> Any:
    """The user's optimizer inside a framework's wrapper (Lightning's ``LightningOptimizer``,
    accelerate's ``AcceleratedOptimizer``), or ``optimizer`` itself.

    Example::

        >>> import torch, lrfree
        >>> from lrfree.integrations import unwrap
        >>> opt = lrfree.AdamHD([torch.nn.Parameter(torch.ones(2))])
        >>> class Wrapper:  # accelerate keeps the user's optimizer in .optimizer
        ...     optimizer = opt
        >>> unwrap(Wrapper()) is opt, unwrap(opt) is opt
        (True, True)
    """
    seen: set[int] = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        # the innermost: Lightning's wrapper is an instance of the optimizer's own class too
        # (a __dict__ copy), so it has effective_lr; its step() runs the wrapped object's
        inner = getattr(optimizer, "_optimizer", None) or getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            return optimizer
        optimizer = inner
    return optimizer


def backward(
    optimizer: Any,
    loss: torch.Tensor,
    outputs: torch.Tensor | None = None,
    *,
    backward_fn: Callable[..., Any] | None = None,
    **inputs: Any,
) -> None:
    """The one curvature entry (``lrfree.Composed.backward``) from a framework's training step.

    ``optimizer`` may be wrapped (``unwrap``); ``backward_fn`` is the framework's backward,
    called as ``backward_fn(loss, create_graph=..., retain_graph=...)`` with what the next
    step needs: Lightning's ``self.manual_backward`` in a manual-optimization
    ``training_step``, the HF ``Trainer``'s ``self.accelerator.backward`` in an overridden
    ``training_step`` (so loss scaling and gradient accumulation stay the framework's). Then
    call the optimizer's ``step()`` as usual. An optimizer that is not an lrfree one gets a
    plain ``backward_fn(loss)`` (or ``loss.backward()``).

    Example (Lightning: ``backward_fn=self.manual_backward``)::

        >>> import torch, lrfree
        >>> from lrfree.integrations import backward
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh())
        >>> opt = lrfree.SGDLW(model.named_parameters())
        >>> calls = []
        >>> def manual_backward(loss, **kw):  # what the framework runs
        ...     calls.append(kw)
        ...     loss.backward(**kw)
        >>> out = model(torch.randn(8, 3))
        >>> backward(opt, out.square().mean(), out, backward_fn=manual_backward)
        >>> opt.step()
        >>> calls
        [{'create_graph': True}]
    """
    opt = unwrap(optimizer)
    if callable(getattr(opt, "curvature_due", None)) and callable(getattr(opt, "backward", None)):
        opt.backward(loss, outputs, backward_fn=backward_fn, **inputs)
    elif backward_fn is not None:
        backward_fn(loss)
    else:
        loss.backward()


def rates(
    optimizer: Any, *, prefix: str = "lrfree", diagnostics: bool = True, max_elements: int = 8
) -> dict[str, float]:
    """One read-out of an optimizer (unwrapped) as ``{"<prefix>/<tag>": value}``.

    ``diagnostics=False`` keeps the rates only (``effective_lr/...``, or ``lr/group<i>`` for
    an optimizer that is not an lrfree one). Reads device values: a host sync.

    Example::

        >>> import torch, lrfree
        >>> from lrfree.integrations import rates
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = lrfree.AdamHD(model.named_parameters(), lr=1e-2)
        >>> sorted(rates(opt, diagnostics=False))
        ['lrfree/effective_lr/global']
    """
    values = scalars(unwrap(optimizer), max_elements=max_elements)
    if not diagnostics:
        values = {
            k: v for k, v in values.items() if k.startswith("effective_lr/") or k.startswith("lr/")
        }
    head = prefix.rstrip("/")
    return {f"{head}/{k}" if head else k: v for k, v in values.items()}


def _import(module: str, what: str) -> Any:
    try:
        __import__(module)
    except ImportError as e:
        raise ImportError(
            f"lrfree.integrations.{what} needs the '{module.split('.')[0]}' package, which "
            f"is not installed: {_EXTRA}"
        ) from e
    return sys.modules[module]


def _check(every_n_steps: int | None, prefix: str, max_elements: int) -> None:
    if every_n_steps is not None and (
        isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
    ):
        raise ValueError(f"Invalid every_n_steps: {every_n_steps!r} (expected None or >= 1)")
    if not isinstance(prefix, str):
        raise ValueError(f"Invalid prefix: {prefix!r} (expected a string)")
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise ValueError(f"Invalid max_elements: {max_elements!r} (expected an integer >= 1)")


# ------------------------------------------------------------------ Lightning
def _lightning_base(what: str = "LightningRateLogger") -> type:
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl  # the standalone package, same API
        except ImportError as e:
            raise ImportError(
                f"lrfree.integrations.{what} needs PyTorch Lightning (the "
                f"'lightning' package), which is not installed: {_EXTRA}"
            ) from e
    return pl.Callback


def _make_lightning_logger() -> type:
    base = _lightning_base("LightningRateLogger")

    class LightningRateLogger(base):  # type: ignore[misc, valid-type]
        """Logs the rate each block used (``opt.effective_lr()``) and the rule's diagnostics
        to the Trainer's loggers.

        Args:
            every_n_steps: read on the optimizer steps of these batches; ``None`` (default):
                when Lightning itself sends logs (the Trainer's ``log_every_n_steps``).
            prefix: the tags' first part (``"lrfree/effective_lr/<block>"``); with several
                optimizers, ``"<prefix><i>"`` for optimizer ``i``.
            diagnostics: also log the rule's diagnostics (``lrfree.logging.scalars``).
            max_elements: see ``lrfree.logging.scalars``.

        Each read-out goes to every logger in ``trainer.loggers`` at the step Lightning's own
        ``self.log`` uses for that batch (as ``LearningRateMonitor`` does), and, through
        ``pl_module.log_dict(..., logger=False)``, into ``trainer.callback_metrics``. The
        optimizer is read by a ``register_step_post_hook``: right after ``step()``, before
        the scheduler's ``step()``, whether Lightning steps (automatic optimization) or
        ``training_step`` does (manual). ``last`` holds the latest read-out.
        """

        def __init__(
            self,
            every_n_steps: int | None = None,
            *,
            prefix: str = "lrfree",
            diagnostics: bool = True,
            max_elements: int = 8,
        ) -> None:
            super().__init__()
            _check(every_n_steps, prefix, max_elements)
            self.every_n_steps = every_n_steps
            self.prefix = prefix
            self.diagnostics = diagnostics
            self.max_elements = max_elements
            self.last: dict[str, float] = {}
            self._due = False
            self._pending: dict[str, float] = {}
            self._handles: list[Any] = []

        def _tag(self, i: int, n: int) -> str:
            return self.prefix if n == 1 else f"{self.prefix}{i}"

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self._remove_hooks()
            optimizers = [unwrap(o) for o in trainer.optimizers]
            for i, opt in enumerate(optimizers):
                self._handles.append(
                    opt.register_step_post_hook(self._reader(self._tag(i, len(optimizers))))
                )

        def _reader(self, prefix: str) -> Callable[..., None]:
            def read(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                if self._due:
                    self._pending.update(
                        rates(
                            opt,
                            prefix=prefix,
                            diagnostics=self.diagnostics,
                            max_elements=self.max_elements,
                        )
                    )

            return read

        def _step(self, trainer: Any) -> int:
            loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
            return int(getattr(loop, "_batches_that_stepped", trainer.global_step))

        def on_train_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
            self._pending = {}
            if self.every_n_steps is None:
                connector = getattr(trainer, "_logger_connector", None)
                due = getattr(connector, "should_update_logs", None)
                if due is None:  # a Lightning without the connector: its documented cadence
                    every = max(1, int(trainer.log_every_n_steps or 1))
                    due = (self._step(trainer) + 1) % every == 0
                self._due = bool(due)
            else:
                self._due = self._step(trainer) % self.every_n_steps == 0

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any, **kw: Any) -> None:
            self._due = False
            if not self._pending:
                return
            values, self._pending = self._pending, {}
            self.last = values
            step = self._step(trainer)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)
            pl_module.log_dict(values, on_step=True, on_epoch=False, logger=False)

        def _remove_hooks(self) -> None:
            for h in self._handles:
                h.remove()
            self._handles = []

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._remove_hooks()

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self._remove_hooks()

    LightningRateLogger.__module__ = __name__
    LightningRateLogger.__qualname__ = "LightningRateLogger"
    return LightningRateLogger


def _with_modes(trainer: Any) -> list[Any]:
    """The optimizers of ``trainer`` (unwrapped) that have ``train()`` and ``eval()``."""
    found = []
    for wrapped in getattr(trainer, "optimizers", None) or []:
        opt = unwrap(wrapped)
        if callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None)):
            found.append(opt)
    return found


def _in_train_mode(opt: Any) -> bool:
    """False when a param group is in eval mode (``group["train_mode"]``: lrfree's and
    ``schedulefree``'s flag); an optimizer without the flag counts as training."""
    return all(g.get("train_mode", True) for g in getattr(opt, "param_groups", ()))


def _make_lightning_averaging() -> type:
    base = _lightning_base("LightningAveraging")

    class LightningAveraging(base):  # type: ignore[misc, valid-type]
        """Evaluates the model at the averaged iterate ``x`` and trains it at ``y``:
        ``opt.eval()`` / ``opt.train()`` at Lightning's loop boundaries.

        Optimizers with iterate averaging (``lrfree.Auto``; any lrfree optimizer with
        ``averaging="schedule_free"``; ``schedulefree``'s optimizers too) keep two points:
        the parameters hold ``y`` (where the gradient is taken) while training and the
        average ``x`` (the model to evaluate) after ``opt.eval()``. Lightning calls neither
        method; this callback does, on every optimizer of the Trainer that has both (found
        inside Lightning's wrapper by ``unwrap``; other optimizers are left alone, and for an
        lrfree optimizer without averaging both calls are no-ops, so it may always be added):

        * ``opt.eval()`` when a validation, test or predict loop starts (the sanity check
          and the validation inside ``fit`` included), and, when the loop ends, ``opt.train()``
          for each optimizer that was in train mode before it (the model is back at ``y``,
          as it was);
        * ``opt.train()`` when a training epoch starts (e.g. after a resume from a
          checkpoint saved in eval mode).

        Checkpoints: a checkpoint Lightning saves during ``fit`` (``ModelCheckpoint``, which
        runs after this callback's ``on_validation_end``) holds ``y`` in ``state_dict`` and
        ``z`` and ``train_mode=True`` in the optimizer state, so resuming continues exactly,
        but ``Model.load_from_checkpoint`` then gives ``y``, not ``x``. To save ``x``, call
        ``opt.eval()`` before ``trainer.save_checkpoint(...)``: the optimizer state then says
        ``train_mode=False`` and a resumed ``fit`` with this callback goes back to ``y`` at
        its first epoch start (without it, ``step()`` raises). The callback only reaches the
        optimizers ``trainer.optimizers`` holds: those of a ``fit`` (a ``validate`` or
        ``test`` after ``fit`` on the same Trainer included), none in a Trainer that only
        evaluates.

        Example::

            import lightning as L
            import lrfree
            from lrfree.integrations import LightningAveraging, LightningRateLogger

            class Model(L.LightningModule):
                ...
                def configure_optimizers(self):
                    return lrfree.Auto(self.parameters())

            trainer = L.Trainer(
                max_epochs=3, callbacks=[LightningAveraging(), LightningRateLogger()]
            )
            trainer.fit(Model(), train_loader, val_loader)  # validation at x, training at y
            opt = trainer.optimizers[0]
            opt.eval()  # the model now holds x: save or export it
            trainer.save_checkpoint("final.ckpt")
        """

        def __init__(self) -> None:
            super().__init__()
            self._restore: list[Any] = []

        def _to_eval(self, trainer: Any) -> None:
            self._to_train(trainer)  # a loop that did not end (an exception): back first
            for opt in _with_modes(trainer):
                if _in_train_mode(opt):
                    self._restore.append(opt)
                opt.eval()

        def _to_train(self, trainer: Any) -> None:
            restore, self._restore = self._restore, []
            for opt in restore:
                opt.train()

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._restore = []
            for opt in _with_modes(trainer):
                opt.train()

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            self._to_eval(trainer)

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            self._to_train(trainer)

        def on_test_start(self, trainer: Any, pl_module: Any) -> None:
            self._to_eval(trainer)

        def on_test_end(self, trainer: Any, pl_module: Any) -> None:
            self._to_train(trainer)

        def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
            self._to_eval(trainer)

        def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
            self._to_train(trainer)

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._to_train(trainer)

    LightningAveraging.__module__ = __name__
    LightningAveraging.__qualname__ = "LightningAveraging"
    return LightningAveraging


# ------------------------------------------------------------- HF Trainer
def _log_due(args: Any, state: Any, step: int) -> bool:
    """Whether the Trainer logs after global step ``step`` (DefaultFlowCallback's rule; any
    other strategy than "steps": read every step, the last read-out is used)."""
    strategy = str(getattr(getattr(args, "logging_strategy", None), "value", "steps"))
    if strategy != "steps":
        return True
    every = max(1, int(getattr(state, "logging_steps", 0) or args.logging_steps or 1))
    return (
        step % every == 0
        or (step == 1 and bool(getattr(args, "logging_first_step", False)))
        or step >= int(getattr(state, "max_steps", 0) or 0) > 0
    )


def _make_hf_logger() -> type:
    transformers = _import("transformers", "HFRateLogger")
    base = transformers.TrainerCallback

    class HFRateLogger(base):  # type: ignore[misc, valid-type]
        """Adds the rate each block used (``opt.effective_lr()``) and the rule's diagnostics
        to every training log record of a ``transformers.Trainer``.

        Args:
            prefix: the tags' first part (``"lrfree/effective_lr/<block>"``).
            diagnostics: also log the rule's diagnostics (``lrfree.logging.scalars``).
            max_elements: see ``lrfree.logging.scalars``.

        Pass it as ``Trainer(..., callbacks=[HFRateLogger()])`` or ``trainer.add_callback``.
        The optimizer is read in ``on_optimizer_step`` (after ``optimizer.step()``, before the
        scheduler's step: the step's ``lr``, as in the record's ``learning_rate``) on the
        steps the Trainer will log. ``on_log`` adds the values to the record's ``logs`` (and
        to ``trainer.state.log_history``). A callback sees what the callbacks before it
        changed, so this one moves itself to the front of the Trainer's callback list when
        the Trainer starts (``on_init_end``, ``on_train_begin``): the reporting callbacks
        (TensorBoard, W&B, the console printer) then receive the rates.
        """

        def __init__(
            self, *, prefix: str = "lrfree", diagnostics: bool = True, max_elements: int = 8
        ) -> None:
            _check(None, prefix, max_elements)
            self.prefix = prefix
            self.diagnostics = diagnostics
            self.max_elements = max_elements
            self.last: dict[str, float] = {}
            self._pending: tuple[int, dict[str, float]] | None = None
            self._warned = False

        def _go_first(self) -> None:
            # called from CallbackHandler.call_event, whose `self` is the handler: moving this
            # callback from index k to 0 leaves every later callback at its index, so the
            # handler's loop in progress neither skips nor repeats one
            frame = sys._getframe(1)
            for _ in range(4):
                frame = frame.f_back
                if frame is None:
                    return
                callbacks = getattr(frame.f_locals.get("self"), "callbacks", None)
                if isinstance(callbacks, list) and any(c is self for c in callbacks):
                    if callbacks[0] is not self:
                        callbacks.remove(self)
                        callbacks.insert(0, self)
                    return

        def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._go_first()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._go_first()
            self._pending = None

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = int(state.global_step) + 1  # the Trainer counts this step after it
            opt = kwargs.get("optimizer")
            if opt is None or not _log_due(args, state, step):
                return
            self._pending = (
                step,
                rates(
                    opt,
                    prefix=self.prefix,
                    diagnostics=self.diagnostics,
                    max_elements=self.max_elements,
                ),
            )

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs is None or "loss" not in logs:  # training records only
                return
            if self._pending is None or self._pending[0] != state.global_step:
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"HFRateLogger: no read-out of step {state.global_step} (logging "
                        "strategy or steps changed during training?); that record has no "
                        "lrfree rates",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return
            values = self._pending[1]
            self.last = values
            logs.update(values)
            history = getattr(state, "log_history", None)
            if history and history[-1].get("step") == state.global_step and "loss" in history[-1]:
                history[-1].update(values)

    HFRateLogger.__module__ = __name__
    HFRateLogger.__qualname__ = "HFRateLogger"
    return HFRateLogger


_FACTORIES: dict[str, Callable[[], type]] = {
    "LightningRateLogger": _make_lightning_logger,
    "LightningAveraging": _make_lightning_averaging,
    "HFRateLogger": _make_hf_logger,
}


def __getattr__(name: str) -> Any:
    """``LightningRateLogger``, ``LightningAveraging`` and ``HFRateLogger`` are built, on
    first access, on top of the framework's callback class (imported then, not with
    ``lrfree``)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = factory()
    globals()[name] = cls
    return cls


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_FACTORIES))
