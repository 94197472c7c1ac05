"""Cross-rank reductions: the one module of lrfree that talks to ``torch.distributed``.

Two kinds of reduction exist, and nothing else in lrfree communicates:

* **Shard completion** (FSDP2, DTensor parameters). A norm or inner product over a sharded
  tensor is a sum of per-shard partial sums: ``Partition.inner`` computes the partials on the
  local shards (``DTensor.to_local()``) and ``complete_shard_sums`` sums them over the mesh
  dimensions along which the tensor is *sharded* (never over replicated ones, which would
  double-count). All blocks of one ``inner`` call are packed into one tensor: one
  ``all_reduce`` per reduction call. The per-block helpers (``block_shard_groups``,
  ``block_partial_dot``, ``complete_block_sums``) also complete the finite-difference
  curvature of sharded parameters (``lrfree.curvature.fd``); this module imports no
  curvature.
* **Replica averaging** (DDP, and any data-parallel replicas). Gradients arrive averaged, so
  first-order rules (TLR, AdaLip, HD, CAM-HD) compute the same numbers on every rank and issue
  no collective. Curvature numbers (LW's ``d^T H d``, ADLER's ``v^T Q v``) are computed per
  rank on the local batch; ``replica_mean`` averages them (one packed ``all_reduce``)::

      q_b = (1 / W) sum_r q_b^(r)

  That is the curvature of the objective ``(1 / W) sum_r L_r`` whose gradient DDP averages, so
  with mean-reduced losses and equal local batch sizes it is the full-batch value. With
  unequal local batches, scale each rank's loss (``sum_r / B * W``) as for the gradient.

Statistics stay device tensors (no ``.item()``): every rank takes the same branches, and no
collective depends on a value only one rank sees. Reductions run over the *full* block
partition of a group (inactive blocks contribute zeros), so ranks agree on the packed sizes.

Replica averaging is on whenever ``torch.distributed`` is initialised with more than one rank;
``configure(optimizer, replicas=None)`` turns it off (ranks that train independent models), or
names another process group. ``configure(optimizer, check_rates=True)`` adds a debug check
after every step: all ranks must hold the same rates, else ``RuntimeError`` with the ranks and
values.

Example (single process: nothing is reduced)::

    >>> import torch, lrfree
    >>> from lrfree import distributed
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = lrfree.SGDHD(model.named_parameters(), lr=0.1)
    >>> distributed.replica_group(opt) is None
    True
    >>> [float(v) for v in distributed.replica_mean(opt, [torch.tensor(2.0)])]
    [2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "RateMismatchError",
    "block_partial_dot",
    "block_shard_groups",
    "check_rates",
    "complete_block_sums",
    "complete_shard_sums",
    "configure",
    "is_sharded",
    "local",
    "replica_group",
    "replica_mean",
    "shard_groups",
]

_DEFAULT = object()


@dataclass
class _Config:
    group: Any = _DEFAULT  # _DEFAULT: the world group when initialised; None: no averaging
    check_rates: bool = False
    hook: Any = None


class RateMismatchError(RuntimeError):
    """Raised by the ``check_rates`` debug option when ranks hold different rates."""


# ----------------------------------------------------------------------- helpers
def _ready() -> bool:
    return dist.is_available() and dist.is_initialized()


_DTENSOR: list[Any] = []


def _dtensor_cls() -> Any:
    if not _DTENSOR:  # imported once: is_sharded runs on every reduction
        try:
            from torch.distributed.tensor import DTensor
        except ImportError:  # pragma: no cover - torch built without distributed
            DTensor = None
        _DTENSOR.append(DTensor)
    return _DTENSOR[0]


def is_sharded(t: Any) -> bool:
    """Whether ``t`` is a DTensor (an FSDP2 / tensor-parallel parameter, gradient or state)."""
    cls = _dtensor_cls()
    return cls is not None and isinstance(t, cls)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (shares storage); any other tensor unchanged."""
    return t.to_local() if is_sharded(t) else t  # type: ignore[attr-defined]


def shard_groups(t: Tensor) -> tuple[Any, ...]:
    """The process groups over which the partial sums of DTensor ``t`` must be added: one per
    mesh dimension with a ``Shard`` placement (``Replicate`` dimensions hold copies and are
    not summed; a plain tensor has none)."""
    if not is_sharded(t):
        return ()
    from torch.distributed.tensor import Shard

    mesh = t.device_mesh  # type: ignore[attr-defined]
    return tuple(
        mesh.get_group(dim)
        for dim, pl in enumerate(t.placements)  # type: ignore[attr-defined]
        if isinstance(pl, Shard)
    )


def _all_reduce(t: Tensor, group: Any) -> None:
    """The one call site of ``torch.distributed.all_reduce`` in lrfree (a sum, in place)."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)


def _pack(values: Sequence[Tensor]) -> tuple[Tensor, list[tuple[torch.Size, torch.dtype]]]:
    dtype = torch.float32
    for v in values:
        dtype = torch.promote_types(dtype, v.dtype)
    meta = [(v.shape, v.dtype) for v in values]
    flat = torch.cat([v.detach().reshape(-1).to(dtype) for v in values])
    return flat, meta


def _unpack(flat: Tensor, meta: Sequence[tuple[torch.Size, torch.dtype]]) -> list[Tensor]:
    out, pos = [], 0
    for shape, dtype in meta:
        n = 1
        for s in shape:
            n *= int(s)
        out.append(flat[pos : pos + n].reshape(shape).to(dtype))
        pos += n
    return out


# ------------------------------------------------------------------ configuration
def configure(
    optimizer: torch.optim.Optimizer,
    *,
    replicas: Any = _DEFAULT,
    check_rates: bool | None = None,
) -> None:
    """Distributed settings of one optimizer.

    Args:
        optimizer: an lrfree optimizer.
        replicas: the process group over which curvature numbers are averaged (the
            data-parallel replicas); default: the world group; ``None``: no averaging (ranks
            train different models or data-parallelism is handled elsewhere).
        check_rates: after every ``step()``, all-gather every block rate over the world group
            and raise ``RateMismatchError`` naming the ranks and values if any differ (one
            extra collective per step: a debug option).

    >>> import torch, lrfree
    >>> opt = lrfree.SGDHD(torch.nn.Linear(2, 1).named_parameters(), lr=0.1)
    >>> configure(opt, replicas=None, check_rates=True)  # no-ops in a single process
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Invalid optimizer: {type(optimizer).__name__} (expected an Optimizer)")
    cfg = _config(optimizer)
    if replicas is not _DEFAULT:
        cfg.group = replicas
    if check_rates is not None:
        if not isinstance(check_rates, bool):
            raise TypeError(f"Invalid check_rates: {check_rates!r} (expected True or False)")
        cfg.check_rates = check_rates
        if check_rates and cfg.hook is None:
            cfg.hook = optimizer.register_step_post_hook(lambda opt, args, kwargs: _post(opt))
        elif not check_rates and cfg.hook is not None:
            cfg.hook.remove()
            cfg.hook = None


def _config(optimizer: torch.optim.Optimizer) -> _Config:
    cfg = optimizer.__dict__.get("_lrfree_dist")
    if cfg is None:
        cfg = _Config()
        optimizer.__dict__["_lrfree_dist"] = cfg
    return cfg


def replica_group(optimizer: torch.optim.Optimizer) -> Any:
    """The process group curvature numbers are averaged over, or ``None`` (not distributed,
    one rank, or ``configure(..., replicas=None)``)."""
    cfg = optimizer.__dict__.get("_lrfree_dist")
    group = _DEFAULT if cfg is None else cfg.group
    if group is None or not _ready():
        return None
    if group is _DEFAULT:
        group = dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


# -------------------------------------------------------------------- reductions
def replica_mean(optimizer: torch.optim.Optimizer, values: Sequence[Tensor]) -> list[Tensor]:
    """``values`` averaged over the optimizer's replica group: one packed ``all_reduce``
    (none when there is no group). Every rank must call it with the same shapes."""
    group = replica_group(optimizer)
    if group is None or not values:
        return list(values)
    flat, meta = _pack(values)
    _all_reduce(flat, group)
    flat = flat / dist.get_world_size(group)
    return _unpack(flat, meta)


def complete_shard_sums(
    partials: Sequence[Tensor], groups: Sequence[tuple[Any, ...]]
) -> list[Tensor]:
    """Add per-shard partial sums across their shard groups.

    ``partials[k]`` was computed on local shards that are sharded along ``groups[k]`` (from
    ``shard_groups``; ``()``: nothing to add). Values with the same groups are packed into one
    tensor and all-reduced once.
    """
    out = list(partials)
    keys: dict[tuple[int, ...], list[int]] = {}
    for k, gs in enumerate(groups):
        if gs:
            keys.setdefault(tuple(id(g) for g in gs), []).append(k)
    for idx in keys.values():
        flat, meta = _pack([partials[k] for k in idx])
        for g in groups[idx[0]]:
            _all_reduce(flat, g)
        for k, v in zip(idx, _unpack(flat, meta)):
            out[k] = v
    return out


def block_shard_groups(params: Sequence[Tensor], idx: Sequence[int], name: str) -> tuple[Any, ...]:
    """The shard groups of the block ``params[i] for i in idx``, from its parameters'
    placements (structure: the same on every rank); ``()`` for a block of plain tensors.
    ``NotImplementedError`` when the members are sharded over different meshes (``name``
    names the block)."""
    found: tuple[Any, ...] = ()
    for i in idx:
        g = shard_groups(params[i])
        if g and found and tuple(map(id, g)) != tuple(map(id, found)):
            raise NotImplementedError(
                f"block {name!r} mixes parameters sharded over different meshes"
            )
        found = g or found
    return found


def block_partial_dot(
    params: Sequence[Tensor],
    xs: Sequence[Tensor | None],
    ys: Sequence[Tensor | None],
    idx: Sequence[int],
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """``(sum over sharded members, sum over plain members)`` of ``<local x_i, local y_i>``
    over the block ``idx`` (pairs with a ``None`` skipped): the sharded sum is a partial sum
    to be completed across the block's shard groups (``complete_block_sums``), the plain one
    is already complete (plain and replicated tensors are not summed across ranks)."""
    dev = local(params[idx[0]]).device
    acc_s = torch.zeros((), dtype=dtype, device=dev)
    acc_p = torch.zeros((), dtype=dtype, device=dev)
    for i in idx:
        x, y = xs[i], ys[i]
        if x is None or y is None:
            continue
        prod = torch.dot(local(x).reshape(-1).to(dtype), local(y).reshape(-1).to(dtype))
        if shard_groups(params[i]):
            acc_s = acc_s + prod
        else:
            acc_p = acc_p + prod
    return acc_s, acc_p


def complete_block_sums(
    pairs: Sequence[tuple[Tensor, Tensor]], groups: Sequence[Any]
) -> list[Tensor]:
    """The complete block sums from ``block_partial_dot``'s pairs: the sharded partials added
    across ``groups[k]`` (``block_shard_groups``; one packed all-reduce per group), plus the
    plain sums. Every rank must call it with the same number of pairs."""
    done = complete_shard_sums([a for a, _ in pairs], groups)
    return [a + b for a, (_, b) in zip(done, pairs)]


def sharded_inner(
    part: Any, xs: Sequence[Tensor | None], ys: Sequence[Tensor | None]
) -> list[Tensor]:
    """``Partition.inner`` over DTensor members: local partial sums, then one packed
    all-reduce per shard group; members that are plain or replicated tensors are added once
    (not summed across ranks). Scalar blocks only (``global``, ``layer``, ``tensor``)."""
    return sharded_inner_many(part, [(xs, ys)])[0]


def sharded_inner_many(
    part: Any, pairs: Sequence[tuple[Sequence[Tensor | None], Sequence[Tensor | None]]]
) -> list[list[Tensor]]:
    """Several ``sharded_inner`` at once, all completed by one packed all-reduce."""
    return sharded_inner_each([(part, xs, ys) for xs, ys in pairs])


def sharded_inner_each(
    items: Sequence[tuple[Any, Sequence[Tensor | None], Sequence[Tensor | None]]],
) -> list[list[Tensor]]:
    """``[sharded_inner(part, xs, ys) for part, xs, ys in items]`` (the partitions may
    differ, e.g. CAM-HD's levels), all completed by one packed all-reduce."""
    groups, partials, sizes = [], [], []
    for part, xs, ys in items:
        for s in part.sets:
            if s.kind not in ("global", "layer", "tensor"):
                raise NotImplementedError(_BLOCKS_MSG.format(kind=s.kind))
            groups.append(block_shard_groups(part.params, s.members, s.name))
            partials.append(block_partial_dot(part.params, xs, ys, s.members, s.dtype))
        sizes.append(len(part.sets))
    # every rank packs every block (zeros included): the collective sizes always agree
    flat = complete_block_sums(partials, groups)
    out, k = [], 0
    for n in sizes:
        out.append(flat[k : k + n])
        k += n
    return out


_BLOCKS_MSG = (
    "blocks={kind!r} is not supported with sharded (DTensor / FSDP2) parameters: its rates "
    "would be sharded like the parameters; use blocks='layer', 'tensor' or 'global'"
)


def check_partition(params: Sequence[Tensor], kind: str) -> None:
    """Raise ``NotImplementedError`` for block kinds lrfree cannot shard (``filter``,
    ``element``) when any parameter is a DTensor."""
    if kind in ("filter", "element") and any(is_sharded(p) for p in params):
        raise NotImplementedError(_BLOCKS_MSG.format(kind=kind))


# -------------------------------------------------------------------- rate check
def _rates(optimizer: torch.optim.Optimizer) -> tuple[list[str], Tensor]:
    names, vals = [], []
    for gi, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            for k, v in sorted(optimizer.state.get(p, {}).items()):
                if isinstance(k, str) and k.endswith(".alpha") and isinstance(v, Tensor):
                    vv = local(v).detach().reshape(-1).double()
                    names.extend(f"group{gi}/{k}[{j}]" for j in range(vv.numel()))
                    vals.append(vv)
    flat = torch.cat(vals) if vals else torch.zeros(0, dtype=torch.float64)
    return names, flat


def check_rates(optimizer: torch.optim.Optimizer) -> None:
    """Raise ``RateMismatchError`` unless every rank holds the same rates (bitwise; NaNs
    compare equal). One ``all_gather`` of the sizes and one of the values, over the world
    group; a no-op outside ``torch.distributed``."""
    if not _ready() or dist.get_world_size() == 1:
        return
    names, flat = _rates(optimizer)
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([flat.numel()], dtype=torch.int64))
    n = [int(s) for s in sizes]
    if len(set(n)) > 1:
        raise RateMismatchError(f"ranks hold different numbers of rates: {dict(enumerate(n))}")
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat.contiguous())
    ref = gathered[0]
    for r in range(1, world):
        other = gathered[r]
        same = (other == ref) | (torch.isnan(other) & torch.isnan(ref))
        if not bool(same.all()):
            j = int((~same).nonzero()[0, 0])
            raise RateMismatchError(
                f"rates differ across ranks: {names[j]} is {float(ref[j])!r} on rank 0 and "
                f"{float(other[j])!r} on rank {r} ({int((~same).sum())} of {ref.numel()} "
                "values differ)"
            )


def _post(optimizer: torch.optim.Optimizer) -> None:
    cfg = optimizer.__dict__.get("_lrfree_dist")
    if cfg is not None and cfg.check_rates:
        check_rates(optimizer)
