"""``Composed``: one ``torch.optim.Optimizer`` for direction x step-size rule x blocks.

    p  <-  p - lr * alpha_b * d            (AdamW: first p <- p * (1 - lr * alpha_b * wd))

* ``direction`` (``d``): ``sgd``, ``momentum``, ``nesterov``, ``adam``, ``adamw``, ``rmsprop``;
* ``rule`` (``alpha_b``): ``constant`` and the adaptive rules of ``lrfree.rules``;
* ``blocks`` (``b``): ``global``, ``layer``, ``tensor``, ``filter``, ``element``.

``group["lr"]`` is the user's (and their scheduler's); the adaptive multiplier ``alpha`` lives
in the optimizer state, so the effective rate is ``lr * alpha`` (see ``effective_lr()``).

Example::

    >>> import torch, lrfree
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> opt = lrfree.Composed(model.named_parameters(), direction="adamw", lr=1e-3)
    >>> x, y = torch.randn(16, 4), torch.randn(16, 1)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
    >>> sorted(opt.effective_lr())
    ['0', '2']
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from .averaging import AVERAGING, schedule_free_update, to_eval, to_train
from .blocks import GRANULARITIES, Partition
from .directions import DIRECTIONS, Direction, get_direction
from .directions.base import scalar_dtype
from .distributed import replica_group, replica_mean
from .hyper import Hyper, boolean, choice, real, validate
from .rules import RULES, Rule, StepContext, Workspace, get_rule

__all__ = ["Composed"]

_STRUCTURE = ("direction", "rule", "blocks")


def _owner(group: dict[str, Any]) -> str:
    return f"direction {group['direction']!r}, rule {group['rule']!r}"


class Composed(torch.optim.Optimizer):
    """A direction, a step-size rule and a block partition, composed into one optimizer.

    Args:
        params: ``model.parameters()``, ``model.named_parameters()`` (names tell which module a
            tensor belongs to; ``blocks="layer"`` needs them) or a list of param-group dicts.
        direction: the base optimizer's direction (see ``lrfree.directions.DIRECTIONS``).
        rule: the step-size rule (see ``lrfree.rules.RULES``).
        blocks: which parameters share one step size.
        lr: the base learning rate; ``None`` takes the rule's default or else the direction's.
        **hyperparameters: the direction's and the rule's hyperparameters (unknown names raise
            ``TypeError`` listing the known ones), and the common ones: ``foreach`` and
            ``nonfinite`` (a step whose gradients hold NaN / inf: ``"skip"``, the default,
            leaves parameters and state unchanged and counts it in ``skipped_steps``;
            ``"raise"`` raises ``FloatingPointError``; ``"off"`` does not check and saves one
            reduction and one host sync per step; docs/guarantees.md);
            ``averaging`` (``"none"``; ``"schedule_free"``: schedule-free iterate averaging
            with interpolation ``sf_beta``, see ``lrfree.averaging``; call ``opt.eval()``
            before evaluating and ``opt.train()`` before training again).
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        direction: str = "adamw",
        rule: str = "constant",
        blocks: str = "layer",
        lr: float | None = None,
        **hyperparameters: Any,
    ) -> None:
        d = get_direction(direction)
        r = get_rule(rule)
        choice(GRANULARITIES)("blocks", blocks, "optimizer")
        specs = self._specs(d, r)
        unknown = sorted(set(hyperparameters) - set(specs))
        if unknown:
            raise TypeError(
                f"Unknown hyperparameter(s) {unknown} for direction {direction!r} and rule "
                f"{rule!r}; known: {sorted(set(specs) | {'lr'})}"
            )
        if lr is None:
            lr = r.default_lr if r.default_lr is not None else d.default_lr
        defaults: dict[str, Any] = {"direction": direction, "rule": rule, "blocks": blocks}
        defaults["lr"] = lr
        defaults.update({k: spec.default for k, spec in specs.items()})
        defaults.update(hyperparameters)
        owner = f"direction {direction!r}, rule {rule!r}"
        defaults.update(validate({"lr": _LR, **specs}, defaults, owner))
        r.check(defaults, owner)
        self._partitions: dict[tuple[int, str], tuple[tuple[int, ...], Partition]] = {}
        super().__init__(params, defaults)
        self._workspace()  # now: a wrapper that copies __dict__ (Lightning's) shares it

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _specs(d: Direction, r: Rule) -> dict[str, Hyper]:
        clash = (set(d.hyper) & set(r.hyper)) | ((set(d.hyper) | set(r.hyper)) & set(_COMMON))
        if clash:  # a registry error, caught by the test suite
            raise RuntimeError(f"{d!r} and {r!r} both define {sorted(clash)}")
        return {**_COMMON, **d.hyper, **r.hyper}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its keys and values are checked like the constructor's.

        A key that the group's direction and rule do not have (a typo, another direction's
        hyperparameter) is a ``TypeError`` listing the known ones; a complex parameter is a
        ``ValueError``. A rejected group leaves the optimizer as it was.
        """
        if isinstance(param_group, dict):
            self._check_group_keys(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_params(group, len(self.param_groups) - 1)
            self._validate_group(group)
        except Exception:
            self.param_groups.pop()  # a rejected group leaves the optimizer as it was
            raise
        self._partitions = {}

    def _check_group_keys(self, param_group: dict[str, Any]) -> None:
        """The keys a user put in a param group must be hyperparameters of its direction and
        rule (the constructor rejects unknown keywords the same way)."""
        dname = param_group.get("direction", self.defaults["direction"])
        rname = param_group.get("rule", self.defaults["rule"])
        d = DIRECTIONS.get(dname) if isinstance(dname, str) else None
        r = RULES.get(rname) if isinstance(rname, str) else None
        if d is None or r is None:  # an invalid direction / rule: _validate_group names it
            return
        known = {*self._specs(d, r), "lr", *_STRUCTURE, *_GROUP_KEYS}
        unknown = sorted(str(k) for k in param_group if k not in known)
        if unknown:
            raise TypeError(
                f"Unknown hyperparameter(s) {unknown} in a param group for direction "
                f"{d.name!r} and rule {r.name!r}; known: "
                f"{sorted(set(self._specs(d, r)) | {'lr', *_STRUCTURE})}"
            )

    @staticmethod
    def _check_params(group: dict[str, Any], group_index: int) -> None:
        names = group.get("param_names")
        for i, p in enumerate(group["params"]):
            if p.is_complex():
                name = names[i] if names else f"{i} of param group {group_index}"
                raise ValueError(
                    f"Complex parameter {name!r} ({p.dtype}) is not supported by lrfree "
                    "optimizers (the Adam / RMSprop second moments and the step-size rules "
                    "are defined for real tensors): store it as a real tensor with "
                    "torch.view_as_real and use torch.view_as_complex in the forward pass"
                )

    def _validate_group(self, group: dict[str, Any]) -> None:
        for key in _STRUCTURE:
            valid = {"direction": sorted(DIRECTIONS), "rule": sorted(RULES)}.get(key, GRANULARITIES)
            group[key] = choice(valid)(key, group[key], "param group")
        d, r = DIRECTIONS[group["direction"]], RULES[group["rule"]]
        specs = self._specs(d, r)
        for k, spec in specs.items():  # a group that switched rule or direction
            group.setdefault(k, spec.default)
        owner = _owner(group)
        group.update(validate({"lr": _LR, **specs}, group, owner))
        r.check(group, owner)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """torch's, plus its backward compatibility (as ``torch.optim.Adam.__setstate__``):
        a group key missing from an older checkpoint takes its default, and a step counter
        saved as a plain number (torch's older format) becomes a tensor."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key in _STRUCTURE:
                group.setdefault(key, self.defaults[key])
            d, r = DIRECTIONS.get(group["direction"]), RULES.get(group["rule"])
            if d is not None and r is not None:
                for k, spec in self._specs(d, r).items():
                    group.setdefault(k, spec.default)
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st and not isinstance(st["step"], Tensor):
                    st["step"] = torch.tensor(float(st["step"]), dtype=scalar_dtype())
        self._partitions = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, with checks, and rule state kept in its saved dtype.

        * The load pre-hooks (``register_load_state_dict_pre_hook``) run first and what they
          return or modify is what is loaded; the post-hooks run last, after all of it.
        * A ``state_dict`` of another algorithm (direction, rule or blocks), with other
          parameter names or another order (optimizers built from ``named_parameters()``;
          the wrapper prefixes ``module.`` and ``_orig_mod.`` are ignored), without names
          where this optimizer's blocks depend on them, or with state of another shape than
          its parameter is a ``ValueError`` naming the difference; this optimizer is left
          unchanged.
        * Older torch formats load: missing group keys take their defaults, a step counter
          saved as a number becomes a tensor (as torch's Adam and RMSprop do). A dict without
          lrfree's ``direction`` / ``rule`` / ``blocks`` keys (saved by torch's own optimizer
          of the same direction) is taken as this optimizer's, its missing keys (the rule's)
          take this optimizer's values; a hyperparameter of another direction or rule in it
          (torch SGD's ``momentum`` into an Adam) is refused.
        * torch casts every floating-point state tensor to its parameter's dtype, which would
          round a bf16 model's float32 rates to bf16; ``"<rule>.<field>"`` entries are
          restored with their saved dtype (on the parameter's device).
        """
        state_dict = state_dict.copy()  # shallow, as torch's
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        state_dict = self._checked_for_load(_renamed(state_dict))
        saved_state = state_dict["state"]
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        # torch's load, without running the hooks a second time (ours run around it)
        hooks = (
            self._optimizer_load_state_dict_pre_hooks,
            self._optimizer_load_state_dict_post_hooks,
        )
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        try:
            super().load_state_dict(state_dict)
        finally:
            (
                self._optimizer_load_state_dict_pre_hooks,
                self._optimizer_load_state_dict_post_hooks,
            ) = hooks
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for idx, p in zip(saved_ids, params):
            for k, v in saved_state.get(idx, {}).items():
                if "." in str(k) and isinstance(v, Tensor):
                    self.state[p][k] = v.to(device=p.device, copy=True)
        self._partitions = {}
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _checked_for_load(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """The ``state_dict`` to hand to torch's loader: checked against this optimizer (a
        ``ValueError`` naming the difference), its groups completed and validated (copies;
        the caller's dict is not modified)."""
        saved_groups = state_dict["param_groups"]
        groups = self.param_groups
        several = len(groups) > 1
        out_groups = []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            where = f" (param group {gi})" if several else ""
            saved = dict(saved)
            missing = [k for k in _STRUCTURE if k not in saved]
            for k in missing:  # a dict without them (older, or torch's): taken as ours
                saved[k] = group[k]
            differ = [k for k in _STRUCTURE if saved[k] != group[k]]
            if differ:
                keys = ["direction", "rule"] + (["blocks"] if "blocks" in differ else [])
                raise ValueError(
                    f"state_dict is from {_describe(saved, keys)}; this optimizer is "
                    f"{_describe(group, keys)}{where}: loading it would switch the algorithm"
                )
            if missing:
                d, r = DIRECTIONS.get(saved["direction"]), RULES.get(saved["rule"])
                if d is not None and r is not None:
                    foreign = sorted((set(saved) & _all_hyper()) - set(self._specs(d, r)))
                    if foreign:
                        raise ValueError(
                            f"state_dict's param group {gi} holds {foreign}, which "
                            f"{_owner(group)} does not have: it is from another optimizer"
                        )
                    for k in self._specs(d, r):  # e.g. the rule's: this run's values
                        if k in group:
                            saved.setdefault(k, group[k])
            self._check_names(group, saved, state_dict["state"], where)
            self._validate_group(saved)  # other missing keys: defaults (as torch); checks
            out_groups.append(saved)
        out_groups.extend(saved_groups[len(groups) :])  # torch reports a count mismatch
        lengths = [len(g["params"]) for g in groups]
        if len(out_groups) == len(groups) and lengths == [len(g["params"]) for g in out_groups]:
            self._check_shapes(state_dict["state"], out_groups)
        return {**state_dict, "param_groups": out_groups}

    def _check_names(
        self, group: dict[str, Any], saved: dict[str, Any], saved_state: dict, where: str
    ) -> None:
        names = group.get("param_names")
        saved_names = saved.get("param_names")
        if names is None or len(group["params"]) != len(saved["params"]):
            return  # unnamed here: torch adopts the saved names (its documented behaviour)
        if saved_names is None:
            per_block = any(  # rule state, kept per block (the skip counter is not)
                "." in str(k) and not str(k).startswith("nonfinite.")
                for idx in saved["params"]
                for k in (saved_state.get(idx) or {})
            )
            kinds = {group["blocks"], *_levels(group)} & {"layer", "filter"} if per_block else set()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the unnamed fall-back warns
                differ = [
                    k
                    for k in sorted(kinds)
                    if _members(group["params"], None, k) != _members(group["params"], names, k)
                ]
            if differ:
                raise ValueError(
                    "state_dict holds no parameter names (its optimizer was built from "
                    "model.parameters()) but this one was built from named_parameters() with "
                    f"blocks {differ!r}{where}: the blocks, and so the saved rates, differ; "
                    "build this optimizer from model.parameters() to load it"
                )
            return
        a, b = [_plain_name(n) for n in saved_names], [_plain_name(n) for n in names]
        if a == b:
            saved["param_names"] = list(names)  # the same parameters: keep this run's names
            return
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        first = f"position {i} is {_at(saved_names, i)} in the state_dict, {_at(names, i)} here"
        if sorted(a) == sorted(b):
            raise ValueError(
                f"state_dict's parameters are in another order than this optimizer's{where}: "
                f"{first}; build the optimizer over the parameters in the saved order"
            )
        raise ValueError(
            f"state_dict's parameter names differ from this optimizer's{where}: {first}; if "
            "they are the same parameters in the same order, rename 'param_names' in a "
            "register_load_state_dict_pre_hook"
        )

    def _check_shapes(self, saved_state: dict[Any, Any], saved_groups: list[dict]) -> None:
        """Direction buffers (``exp_avg``, ...) must have their parameter's shape: catches a
        load into other or reordered parameters, named or not."""
        offset = 0
        for gi, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            names = group.get("param_names")
            for i, (idx, p) in enumerate(zip(saved["params"], group["params"])):
                st = saved_state.get(idx)
                if not isinstance(st, dict):
                    continue
                for k, v in st.items():
                    if "." in str(k) or not isinstance(v, Tensor) or v.dim() == 0:
                        continue  # rule state is per block; step counters are 0-d
                    if tuple(v.shape) != tuple(p.shape):
                        name = names[i] if names else f"param{offset + i}"
                        raise ValueError(
                            f"state_dict's {k!r} for parameter {name!r} (param group {gi}, "
                            f"index {i}) has shape {tuple(v.shape)}, the parameter "
                            f"{tuple(p.shape)}: the state is for other parameters (another "
                            "model, or the parameters were reordered)"
                        )
            offset += len(group["params"])

    def partition(self, group_index: int, blocks: str | None = None) -> Partition:
        """The block partition of a parameter group (cached).

        ``blocks`` defaults to the group's granularity; rules that combine several levels
        (CAM-HD) ask for others.
        """
        group = self.param_groups[group_index]
        kind = group["blocks"] if blocks is None else blocks
        key = (group_index, kind)
        ident = tuple(id(p) for p in group["params"])
        cached = self._partitions.get(key)
        if cached is not None and cached[0] == ident:
            return cached[1]
        names = group.get("param_names")
        n_groups = len(self.param_groups)
        part = Partition.build(
            group["params"],
            names,
            kind,
            global_name="global" if n_groups == 1 else f"global[{group_index}]",
        )
        if names is None and kind != "global":
            offset = sum(len(g["params"]) for g in self.param_groups[:group_index])
            for s in part.sets:  # unnamed: number parameters across groups
                s.name = f"param{offset + s.members[0]}"
                s.labels = (
                    [s.name]
                    if len(s.labels) <= 1
                    else [f"{s.name}[{k}]" for k in range(len(s.labels))]
                )
        self._partitions[key] = (ident, part)
        return part

    # -------------------------------------------------------------------- step
    def _workspace(self) -> Workspace:
        """What the rules of this optimizer share (``lrfree.rules.base.Workspace``): built
        once, rebuilt (keeping what ``backward`` fed and the caches) if ``state`` or
        ``param_groups`` were replaced."""
        ws: Workspace | None = self.__dict__.get("_workspace_")
        if ws is None or ws.state is not self.state or ws.groups is not self.param_groups:
            ws = Workspace(
                self.state,
                self.param_groups,
                self.partition,
                partial(replica_mean, self),
                partial(replica_group, self),
                *((ws.fed, ws.cache) if ws is not None else ()),
            )
            self.__dict__["_workspace_"] = ws
        return ws

    def _check_inputs(self, inputs: dict[str, Any], where: str) -> set[str]:
        allowed = set(chain.from_iterable(RULES[g["rule"]].step_inputs for g in self.param_groups))
        unknown = sorted(set(inputs) - allowed)
        if unknown:
            raise TypeError(
                f"{where}() got unexpected keyword argument(s) {unknown}; "
                f"the rules of this optimizer accept {sorted(allowed)}"
            )
        return allowed

    def _clock(self, group: dict[str, Any], rule: Rule) -> int:
        """The group clock: steps this group has taken (``"<rule>.step"``, rules with
        ``clock``; 0 otherwise)."""
        if not rule.clock or not group["params"]:
            return 0
        return int(self.state.get(group["params"][0], {}).get(rule.key("step"), 0))

    def backward(
        self,
        loss: Tensor,
        outputs: Tensor | None = None,
        *,
        backward_fn: Callable[..., Any] | None = None,
        **inputs: Any,
    ) -> None:
        """``loss.backward()`` that feeds curvature to the next ``step()``: the one entry for
        every rule (then call ``opt.step()``, no arguments needed).

        Accumulates ``d loss / d p`` into ``p.grad`` as ``loss.backward()`` does. On a
        curvature step of some group (``Rule.curvature_due``) it keeps what that group's rule
        needs (``Rule.feed``): LW's Hessian route differentiates with ``create_graph=True``;
        LW's ``curvature="ggn"`` keeps the graph and ``outputs`` (and its ``loss_fn=``);
        ADLER builds its linear graph from ``outputs`` (``Adler.linear_backward``: one
        tangent-only pass in the step). Otherwise (and always for first-order rules) a plain
        ``loss.backward()``; ``outputs`` and ``inputs`` are then only kept for rules that take
        them. ``inputs``: the rules' step inputs (``loss_fn=``, ``targets=``, ``model=``...),
        handed to the next ``step()`` (an argument given to ``step()`` itself wins). What is
        kept is released when that step ends.

        ``backward_fn``: a framework's backward to run instead of ``loss.backward``, called as
        ``backward_fn(loss, create_graph=..., retain_graph=...)`` (Lightning's
        ``manual_backward``, ``accelerator.backward``; ``lrfree.integrations.backward``).
        ADLER's linear graph cannot go through it: its estimate steps then keep the graph and
        the outputs instead (the double-VJP route, ``step(outputs=...)``).

        The older forms stay as aliases: ``loss.backward(create_graph=opt.curvature_due())``
        then ``step()`` (LW, Hessian), ``loss.backward(retain_graph=...)`` then
        ``step(outputs=, loss_fn=)`` (LW GGN, ADLER) and ``lrfree.rules.adler.backward``.

        >>> import torch, lrfree
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = lrfree.Composed(model.named_parameters(), direction="momentum", rule="adler")
        >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> out = model(x)
        >>> opt.backward(torch.nn.functional.cross_entropy(out, y), out)
        >>> opt.step()
        """
        allowed = self._check_inputs(inputs, "backward")
        if outputs is not None and (not isinstance(outputs, Tensor) or not outputs.requires_grad):
            raise ValueError("backward(loss, outputs): outputs must be a tensor with a graph")
        ws = self._workspace()
        ws.fed.clear()  # a second backward before the step (accumulation): the latest wins
        due: dict[str, tuple[int, Rule]] = {}
        for gi, group in enumerate(self.param_groups):
            rule = RULES[group["rule"]]
            kind = rule.feed(group)
            if kind is not None and rule.curvature_due(group, self._clock(group, rule)):
                due.setdefault(kind, (gi, rule))
        keep = dict(inputs)
        if outputs is not None and "outputs" in allowed:
            keep["outputs"] = outputs
        if "outputs" in due:
            gi, rule = due["outputs"]
            if outputs is None or keep.get("loss_fn") is None:
                raise ValueError(
                    f"{rule.name} (param group {gi}, curvature='ggn'): this is a curvature "
                    "step and the Gauss-Newton route needs the outputs and the loss as a "
                    "function of them: opt.backward(loss, outputs, loss_fn=lambda z: "
                    "my_loss(z, y)); nothing was differentiated"
                )
        if "linear" in due and outputs is None:
            if keep.get("model") is None or keep.get("inputs") is None:
                gi, rule = due["linear"]
                raise ValueError(
                    f"{rule.name} (param group {gi}): this step estimates the rate and needs "
                    "the network outputs: opt.backward(loss, outputs) (or "
                    "opt.backward(loss, model=model, inputs=x), forward-mode JVPs); nothing "
                    "was differentiated"
                )
            del due["linear"]  # forward-mode route: a plain backward
        if "linear" in due and backward_fn is not None:  # the framework's backward: keep the
            due.setdefault("outputs", due.pop("linear"))  # graph, the double-VJP route
        run = backward_fn if backward_fn is not None else _plain_backward
        if "linear" in due:
            if "graph" in due:
                raise NotImplementedError(
                    "backward(): one step of this optimizer needs both an exact-Hessian graph "
                    f"(param group {due['graph'][0]}) and a linear-graph route (param group "
                    f"{due['linear'][0]}); use loss.backward(create_graph=True) and "
                    "step(outputs=...) for it"
                )
            params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
            assert outputs is not None
            ws.fed["graph"] = due["linear"][1].linear_backward(loss, outputs, params)
        elif "graph" in due:
            run(loss, create_graph=True)
        elif "outputs" in due:
            run(loss, retain_graph=True)
        else:
            run(loss)
        ws.fed["inputs"] = keep

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, **inputs: Any) -> Any:  # type: ignore[override]
        """One optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss (zero_grad, forward,
                backward), as in torch. Rules that need curvature may call it again.
            **inputs: keyword inputs some rules take (see each rule's ``step_inputs``); those
                given to ``backward()`` before this step are added (these win).
        """
        self._check_inputs(inputs, "step")
        ws = self._workspace()
        try:
            fed = ws.fed.get("inputs")
            if fed:
                inputs = {**fed, **inputs}
            return self._step(closure, inputs, ws)
        finally:
            ws.fed.clear()  # what backward() kept is for this step only

    def _step(
        self, closure: Callable[[], Any] | None, inputs: dict[str, Any], ws: Workspace
    ) -> Any:
        for gi, group in enumerate(self.param_groups):  # plain Python floats: no host sync
            if not group.get("train_mode", True):
                raise RuntimeError(
                    f"step() after opt.eval(): param group {gi} holds the averaged iterate "
                    "(averaging='schedule_free'); call opt.train() before training again"
                )
            lr = group["lr"]
            if type(lr) is not float or not 0.0 <= lr < math.inf:
                _check_lr("lr", lr, f"param group {gi}, {_owner(group)}")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_sparse()  # before anything moves: a rejected step changes nothing
        if not self._grads_finite():  # the non-finite policy: nothing moves, nothing updates
            return loss
        steps = []
        for gi, group in enumerate(self.param_groups):
            ctx = self._context(gi, group, closure, loss, inputs, ws)
            if ctx is not None:
                rule = RULES[group["rule"]]
                rule.begin(ctx)  # every group's, before any group moves
                steps.append((ctx, rule))
        for ctx, rule in steps:  # the group clocks advance once every begin accepted the step
            if rule.clock:
                self.state[ctx.params[0]][rule.key("step")] = ctx.step
        for ctx, rule in steps:
            self._step_group(ctx, rule)
        return loss

    def _context(
        self,
        gi: int,
        group: dict[str, Any],
        closure: Callable[[], Any] | None,
        loss: Any,
        inputs: dict[str, Any],
        ws: Workspace,
    ) -> StepContext | None:
        """The rule's view of one group's step (``None``: no parameter has a gradient)."""
        params: list[Tensor] = group["params"]
        grads: list[Tensor | None] = [None if p.grad is None else p.grad.detach() for p in params]
        idx = [i for i, g in enumerate(grads) if g is not None]
        if not idx:
            return None
        full = self.partition(gi)
        part = full if len(idx) == len(params) else full.restrict([g is not None for g in grads])
        direction = DIRECTIONS[group["direction"]]
        ctx = StepContext(group, gi, params, grads, idx, part, inputs, closure, loss, ws, direction)
        rule = RULES[group["rule"]]
        if rule.clock:
            n = self._clock(group, rule)
            ctx.step = n + 1
            ctx.curvature = rule.curvature_due(group, n)
        return ctx

    def _step_group(self, ctx: StepContext, rule: Rule) -> None:
        group, params, grads, part = ctx.group, ctx.params, ctx.grads, ctx.partition
        direction = DIRECTIONS[group["direction"]]
        idx = ctx.active
        ps = [params[i] for i in idx]
        foreach = group["foreach"]
        if foreach is None:  # multi-tensor paths on CPU and CUDA (torch's default is CUDA
            # only; ours also drop per-block Python work and temporaries: on the CPU, 1.1-1.65x
            # faster training steps for the Adam / RMSprop / Lipschitz optimizers, no clear
            # change for the SGD-direction ones; docs/performance.md)
            foreach = all(p.device.type in ("cpu", "cuda") for p in ps)
        foreach = foreach and len({(p.device, p.dtype) for p in ps}) == 1
        ctx.foreach = foreach
        if group["averaging"] == "none" and _passive(rule):
            # the constant rule: the direction's own step, kernel for kernel its torch
            # optimizer's (one addcdiv for Adam / RMSprop, no materialised d)
            gs = [grads[i] for i in idx]
            direction.step_many(ps, gs, [self.state[p] for p in ps], group, group["lr"], foreach)  # type: ignore[arg-type]
            return
        ds = direction.update_many(
            ps, [grads[i] for i in idx], [self.state[p] for p in ps], group, foreach=foreach
        )
        ctx.directions = [None] * len(params)
        for i, d in zip(idx, ds):
            ctx.directions[i] = d
        alphas = rule.rates(ctx)
        lr = group["lr"]
        wd = group["weight_decay"] if direction.decoupled_decay else 0.0
        if group["averaging"] == "schedule_free":
            if alphas is None:
                sf_scales: list[Tensor | float] = [lr] * len(ps)
            else:
                if len(alphas) != len(part.sets):
                    raise RuntimeError(
                        f"{rule!r} returned {len(alphas)} rates for {len(part.sets)} blocks"
                    )
                sf_scales = _scaled(part, alphas, idx, lr)  # type: ignore[assignment]
            schedule_free_update(
                ps,
                ds,
                sf_scales,
                [self.state[p] for p in ps],
                beta=group["sf_beta"],
                weight_decay=wd,
                foreach=foreach,
            )
        elif alphas is None:  # lr unchanged (the constant rule took step_many above)
            if foreach:
                if wd != 0:
                    torch._foreach_mul_(ps, 1 - lr * wd)
                torch._foreach_add_(ps, ds, alpha=-lr)
            else:
                for p, d in zip(ps, ds):
                    if wd != 0:
                        p.mul_(1 - lr * wd)
                    p.add_(d, alpha=-lr)
        else:
            if len(alphas) != len(part.sets):
                raise RuntimeError(
                    f"{rule!r} returned {len(alphas)} rates for {len(part.sets)} blocks"
                )
            scales = _scaled(part, alphas, idx, lr)
            if foreach and ps[0].dtype == scales[0].dtype:
                if wd != 0:
                    torch._foreach_mul_(ps, _decays(scales, wd))
                torch._foreach_addcmul_(ps, ds, scales, value=-1)
            else:
                for p, d, scale in zip(ps, ds, scales):
                    self._apply(p, d, scale, wd)
        rule.end(ctx)

    def _check_sparse(self) -> None:
        offset = 0
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None and p.grad.is_sparse:
                    names = group.get("param_names")
                    name = names[i] if names else f"param{offset + i}"
                    raise RuntimeError(
                        f"lrfree optimizers do not support sparse gradients ({name!r}, param "
                        f"group {gi}); no parameter or state was changed"
                    )
            offset += len(group["params"])

    @staticmethod
    def _apply(p: Tensor, d: Tensor, scale: Tensor, wd: float) -> None:
        """``p <- p (1 - scale wd) - scale d`` for one parameter (the readable reference)."""
        if p.dtype == scale.dtype:
            if wd != 0:
                p.mul_(1 - scale * wd)
            p.addcmul_(d, scale, value=-1)
        else:  # low-precision parameter: do the arithmetic in the rate's dtype, round once
            new = p.to(scale.dtype)
            if wd != 0:
                new.mul_(1 - scale * wd)
            new.addcmul_(d.to(scale.dtype), scale, value=-1)
            p.copy_(new)

    # ------------------------------------------------------- non-finite policy
    def _grads_finite(self) -> bool:
        """The ``nonfinite`` policy: whether this step may proceed.

        Over the gradients of every group whose ``nonfinite`` is not ``"off"``: one cheap
        reduction per tensor (the sum on the CPU, ``torch._foreach_norm`` elsewhere: NaN and
        inf propagate; an overflow of finite values falls back to an exact check) and one
        host sync. All finite: True. Otherwise ``"raise"`` (in a
        group holding a non-finite gradient) raises ``FloatingPointError`` naming the
        parameters; ``"skip"`` leaves parameters and optimizer state untouched, counts the
        step in ``skipped_steps`` (saved in the state) and warns once per optimizer.
        """
        checked = [g for g in self.param_groups if _policy(g) != "off"]
        grads = [
            p.grad
            for g in checked
            for p in g["params"]
            if p.grad is not None and not p.grad.is_sparse and p.grad.numel() > 0
        ]
        if not grads:
            return True
        # a screen: NaN / inf in a tensor make its sum (CPU) or 2-norm (one fused kernel
        # elsewhere) non-finite; the inf-norm would be exact but costs ~15x a sum on the CPU
        # (docs/performance.md). A finite gradient whose sum overflows goes to the exact
        # per-tensor check below, which then lets the step proceed.
        dev = grads[0].device
        if dev.type == "cpu":
            screen = [g.sum() for g in grads]
        else:
            screen = list(torch._foreach_norm(grads))
        worst = torch.stack([n.to(device=dev, dtype=torch.float32) for n in screen])
        if bool(torch.isfinite(worst).all()):  # the one host sync of the check
            return True
        bad: list[str] = []
        policies = set()
        offset = 0
        for g in self.param_groups:
            names = g.get("param_names")
            for i, p in enumerate(g["params"]):
                gr = p.grad
                if _policy(g) != "off" and gr is not None and not gr.is_sparse:
                    if not bool(torch.isfinite(gr).all()):
                        bad.append(names[i] if names else f"param{offset + i}")
                        policies.add(_policy(g))
            offset += len(g["params"])
        if not bad:  # the screen overflowed on finite values
            return True
        if "raise" in policies:
            raise FloatingPointError(
                f"non-finite gradient (NaN or inf) in {bad} (nonfinite='raise'); "
                "nonfinite='skip' skips such steps instead"
            )
        st = self.state[self.param_groups[0]["params"][0]]
        st[_SKIPPED] = int(st.get(_SKIPPED, 0)) + 1
        if not getattr(self, "_nonfinite_warned", False):
            self._nonfinite_warned = True
            warnings.warn(
                f"lrfree: non-finite gradient (NaN or inf) in {bad}; step skipped: parameters "
                "and optimizer state unchanged (counted in skipped_steps; warned once per "
                "optimizer; nonfinite='raise' raises, 'off' does not check)",
                RuntimeWarning,
                stacklevel=4,
            )
        return False

    @property
    def skipped_steps(self) -> int:
        """Steps skipped by ``nonfinite="skip"`` (saved in the state, survives a resume)."""
        if not self.param_groups or not self.param_groups[0]["params"]:
            return 0
        return int(self.state.get(self.param_groups[0]["params"][0], {}).get(_SKIPPED, 0))

    # ------------------------------------------------------ averaging modes
    def eval(self) -> None:
        """Put the averaged iterate ``x`` into the parameters (``averaging="schedule_free"``):
        call it before evaluating or saving the model, and ``train()`` before the next
        ``step()``. A no-op for groups without averaging, so a loop may always call it."""
        for group in self.param_groups:
            if group["averaging"] != "none" and group.get("train_mode", True):
                params = list(group["params"])
                to_eval(params, [self.state.get(p, {}) for p in params], group["sf_beta"])
                group["train_mode"] = False

    def train(self) -> None:
        """Put the gradient point ``y`` back into the parameters after ``eval()`` (schedule-
        free averaging); a no-op otherwise."""
        for group in self.param_groups:
            if group["averaging"] != "none" and not group.get("train_mode", True):
                params = list(group["params"])
                to_train(params, [self.state.get(p, {}) for p in params], group["sf_beta"])
                group["train_mode"] = True

    # ------------------------------------------------------------- read-outs
    def curvature_due(self) -> bool:
        """Whether the next ``step()`` needs the graph of the gradient pass kept: LW's
        curvature steps (``loss.backward(create_graph=True)`` for the Hessian route,
        ``retain_graph=True`` and ``step(outputs=, loss_fn=)`` for the GGN route).

        Rules without curvature always answer False, so a loop may call it unconditionally::

            loss.backward(create_graph=opt.curvature_due())

        ``opt.backward(loss, outputs)`` asks this itself (for every curvature rule, ADLER
        included) and is the simpler entry.
        """
        for g in self.param_groups:
            rule = RULES[g["rule"]]
            if rule.feed(g) in ("graph", "outputs") and rule.curvature_due(g, self._clock(g, rule)):
                return True
        return False

    def needs_outputs(self) -> bool:
        """Whether some group's rule takes the model's outputs on its curvature steps
        (``Rule.feed``: ``"outputs"`` for LW's ``curvature="ggn"``, ``"linear"`` for ADLER's
        ``variant="ggn"``): feed such an optimizer with ``opt.backward(loss, outputs)``.
        A loop that serves any optimizer may choose its step from it, as the benchmark does.

        >>> import torch, lrfree
        >>> params = list(torch.nn.Linear(2, 2).parameters())
        >>> lrfree.ADLER(params).needs_outputs(), lrfree.SGDLW(params).needs_outputs()
        (True, False)
        """
        return any(RULES[g["rule"]].feed(g) in ("outputs", "linear") for g in self.param_groups)

    def second_order_due(self) -> bool:
        """Whether the next ``opt.backward(...)`` and ``step()`` differentiate twice: some group
        estimates curvature on the next step through what its backward keeps (``Rule.feed``;
        LW's curvature steps, ADLER's estimate steps). ``curvature_due()`` answers for the
        routes that need the graph kept by the user's own ``loss.backward``; this one for
        every route (a loop picks an attention kernel that has a double backward from it).

        >>> import torch, lrfree
        >>> opt = lrfree.ADLER(torch.nn.Linear(2, 2).parameters())
        >>> opt.second_order_due(), opt.curvature_due()
        (True, False)
        """
        for g in self.param_groups:
            rule = RULES[g["rule"]]
            if rule.feed(g) is not None and rule.curvature_due(g, self._clock(g, rule)):
                return True
        return False

    def effective_lr(self) -> dict[str, float]:
        """Current effective learning rate ``lr * alpha`` per block, by readable name.

        Names: the module path for ``layer`` blocks (``"0"``, ``"features.3"``), ``"global"``
        (``"global[i]"`` with several groups), the parameter path for ``tensor`` blocks,
        ``"<module>[k]"`` per output unit for ``filter`` blocks, and for ``element`` blocks the
        parameter path with the mean rate over its entries. A name that appears in two groups
        gets ``"@group<i>"`` appended. Blocks that have not stepped yet report ``lr``.
        Reads device values (a host sync): call it for logging, not inside a hot loop.
        """
        out: dict[str, float] = {}
        for gi, group in enumerate(self.param_groups):
            rule = RULES[group["rule"]]
            lr = float(group["lr"])
            for s in self.partition(gi).sets:
                owner_state = self.state.get(group["params"][s.owner], {})
                a = rule.alpha(owner_state)
                if a is None:
                    values = [lr] * len(s.labels)
                elif s.kind == "element":  # an empty tensor has no rate: report lr
                    values = [lr * float(a.double().mean()) if a.numel() else lr]
                else:
                    values = [lr * v for v in a.double().reshape(-1).tolist()]
                for label, v in zip(s.labels, values):
                    out[label if label not in out else f"{label}@group{gi}"] = v
        return out

    def __repr__(self) -> str:
        g = self.param_groups[0] if self.param_groups else self.defaults
        return (
            f"{type(self).__name__}(direction={g['direction']!r}, rule={g['rule']!r}, "
            f"blocks={g['blocks']!r}, groups={len(self.param_groups)})"
        )


_real_lr = real(0.0)


def _check_lr(name: str, value: Any, owner: str) -> float:
    if isinstance(value, Tensor):  # torch's convention for an unsupported lr: ValueError
        raise ValueError(
            f"Invalid {name}: a Tensor ({value!r}) is not supported, pass a Python float "
            f"(e.g. {name}=float(t)) [{owner}]"
        )
    return _real_lr(name, value, owner)


_LR = Hyper(1e-3, _check_lr, "base learning rate")

_GROUP_KEYS = (
    "params",
    "param_names",
    "initial_lr",
    "max_lr",
    "min_lr",
    "base_lr",
    "train_mode",
)
"""Keys a param group may hold besides hyperparameters: torch's, its LR schedulers' and the
averaging mode (``train_mode``, set by ``train()`` / ``eval()``)."""


def _all_hyper() -> set[str]:
    """Every registered direction's and rule's hyperparameter names."""
    return {k for o in (*DIRECTIONS.values(), *RULES.values()) for k in o.hyper}


_WRAPPERS = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


def _describe(group: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k} {group[k]!r}" for k in keys)


def _plain_name(name: Any) -> Any:
    """A parameter name without the prefixes of DDP / DataParallel (``module.``),
    ``torch.compile`` and activation checkpointing wrappers."""
    if not isinstance(name, str):
        return name
    for w in _WRAPPERS:
        name = name.replace(w, "")
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


def _at(names: Any, i: int) -> str:
    return repr(names[i]) if i < len(names) else "missing"


def _levels(group: dict[str, Any]) -> list[str]:
    """Block levels a rule reads besides ``blocks`` (CAM-HD's ``levels``)."""
    levels = group.get("levels")
    return [k for k in levels if isinstance(k, str)] if isinstance(levels, (list, tuple)) else []


def _members(params: list[Tensor], names: Any, kind: str) -> list[list[int]]:
    return [s.members for s in Partition.build(params, names, kind).sets]


def _optional_bool(name: str, value: Any, owner: str) -> bool | None:
    return None if value is None else boolean()(name, value, owner)


def _plain_backward(loss: Tensor, **kwargs: Any) -> None:
    loss.backward(**kwargs)


_RENAMED = {"layerwise.skipped": "layerwise.rejected", "adler.skipped": "adler.rejected"}
"""State keys renamed since a release (old -> new): a ``state_dict`` saved with an old key
loads under the new one (docs/changelog.md)."""


def _renamed(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the ``_RENAMED`` keys of its per-parameter state renamed (copies
    where a key changes; the caller's dict is not modified)."""
    saved = state_dict.get("state")
    if not isinstance(saved, dict):
        return state_dict
    out = None
    for idx, st in saved.items():
        if isinstance(st, dict) and any(k in _RENAMED for k in st):
            if out is None:
                out = dict(saved)
            out[idx] = {
                (_RENAMED[k] if k in _RENAMED and _RENAMED[k] not in st else k): v
                for k, v in st.items()
            }
    return state_dict if out is None else {**state_dict, "state": out}


_NONFINITE = ("skip", "raise", "off")
_SKIPPED = "nonfinite.skipped"


def _scaled(part: Partition, alphas: list[Tensor], idx: list[int], lr: float) -> list[Tensor]:
    """``lr * alpha_b`` per active parameter (indexed like ``idx``), shaped to broadcast
    against it. Scalar rates of one dtype and device (``global`` / ``layer`` / ``tensor``
    blocks) are multiplied as one stacked vector: one kernel instead of one per block, the
    same values (elementwise)."""
    a0 = alphas[0] if alphas else None
    if a0 is not None and all(
        a.dim() == 0 and a.dtype == a0.dtype and a.device == a0.device for a in alphas
    ):
        alphas = list((torch.stack(alphas) * lr).unbind())
        lr = 1.0
    per = part.broadcast(alphas)
    if lr == 1.0:
        return [per[i] for i in idx]  # type: ignore[misc]
    return [per[i] * lr for i in idx]  # type: ignore[operator]


def _decays(scales: list[Tensor], wd: float) -> list[Tensor]:
    """``1 - scale * wd`` per parameter (stacked where the scales are scalars of one dtype
    and device, as in ``_scaled``)."""
    s0 = scales[0]
    if all(s.dim() == 0 and s.dtype == s0.dtype and s.device == s0.device for s in scales):
        return list((1 - torch.stack(scales) * wd).unbind())
    return [1 - sc * wd for sc in scales]


def _passive(rule: Rule) -> bool:
    """A rule without hooks (the constant rule): it reads nothing and ``alpha = 1``."""
    t = type(rule)
    return t.begin is Rule.begin and t.rates is Rule.rates and t.end is Rule.end


def _policy(group: dict[str, Any]) -> str:
    """A group's ``nonfinite`` (checked again here: a user may have assigned it directly)."""
    return choice(_NONFINITE)("nonfinite", group.get("nonfinite", "skip"), "param group")


_COMMON: dict[str, Hyper] = {
    "nonfinite": Hyper(
        "skip",
        choice(_NONFINITE),
        "a step with NaN / inf gradients: 'skip' (nothing changes, counted), 'raise', 'off'",
    ),
    "foreach": Hyper(
        None, _optional_bool, "multi-tensor kernels; None: on when every tensor is on CPU/CUDA"
    ),
    "averaging": Hyper(
        "none",
        choice(AVERAGING),
        "iterate averaging: 'schedule_free' keeps z and evaluates at x (opt.eval()/train())",
    ),
    "sf_beta": Hyper(
        0.9, real(0.0, 1.0, lo_open=True), "schedule-free interpolation y = (1-b) z + b x"
    ),
}
