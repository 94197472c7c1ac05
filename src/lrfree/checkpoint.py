"""Crash-safe checkpoints: atomic writes and the RNG state a bit-identical resume needs.

A training run killed at any instant (``SIGKILL``, power loss) must find either the previous
checkpoint or the new one on disk, never a torn file. ``save_atomic`` writes to a temporary
file in the same directory, flushes it to disk (``fsync``) and renames it over the target
(``os.replace``: atomic on POSIX and Windows). A bit-identical resume needs, besides the model,
optimizer and scheduler ``state_dict()``, every random number generator the loop draws from:
``rng_state()`` captures them (Python, torch CPU, and CUDA when initialised) and
``set_rng_state()`` restores them. NumPy's global generator is included when NumPy is
installed. Everything is plain Python types and tensors (NumPy's state too), so a checkpoint
loads with ``torch.load(path, weights_only=True)``, torch's safe default.

Example::

    >>> import os, tempfile, torch
    >>> from lrfree.checkpoint import rng_state, save_atomic, set_rng_state
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> save_atomic({"step": 3, "rng": rng_state()}, path)
    >>> a = torch.rand(2)
    >>> ckpt = torch.load(path, weights_only=True)
    >>> set_rng_state(ckpt["rng"])
    >>> torch.equal(torch.rand(2), a)
    True

Tested by tests/test_resume.py (a subprocess killed with ``SIGKILL`` mid-step and mid-write,
resumed, bit-identical to an uninterrupted run for every exported optimizer).
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any

import torch

__all__ = ["rng_state", "save_atomic", "set_rng_state"]


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` so that ``path`` is never a partial file.

    Writes ``<dir>/.<name>.<random>.tmp``, ``fsync``s it, then ``os.replace``s it onto
    ``path`` (and ``fsync``s the directory where the platform allows). On any error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def rng_state() -> dict[str, Any]:
    """The state of every global RNG a training loop may draw from (for ``set_rng_state``)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    else:
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = {  # plain types and a tensor: torch.load(weights_only=True) reads it
            "bit_generator": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by ``rng_state``."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        saved = state["numpy"]
        if isinstance(saved, dict):
            keys = saved["keys"]
            keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
            saved = (
                saved["bit_generator"],
                keys.astype(np.uint32),
                int(saved["pos"]),
                int(saved["has_gauss"]),
                float(saved["cached_gaussian"]),
            )
        np.random.set_state(saved)  # or the tuple of np.random.get_state() (older checkpoints)
