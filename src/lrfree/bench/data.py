"""Data for the benchmark: MNIST-1D (generated), Fashion-MNIST (idx files), Planetoid graphs,
and a character-level corpus of Python standard-library sources.

Fashion-MNIST is looked for, in order, in ``data_dir`` (or ``$LRFREE_DATA``), in
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``), and in the cache
folder ``~/.cache/lrfree/fashion-mnist``; with ``download=True`` it is fetched into the cache
and its SHA-256 checked. Planetoid raw files (Cora, CiteSeer) are read from ``data_dir``
(``.../planetoid`` or the folder holding ``ind.<name>.*``), ``$LRFREE_DATA``, the ``shared/data``
folder beside a checkout, or downloaded. The standard-library corpus is read from this
Python's own ``Lib`` folder (``sysconfig.get_paths()["stdlib"]``) and checked against a pinned
SHA-256 (CPython 3.11.7's files); another Python version raises ``CorpusMismatch``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import struct
import sysconfig
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "STDLIB_FILES",
    "STDLIB_SHA256",
    "ChecksumError",
    "CorpusMismatch",
    "DataMissing",
    "Split",
    "csbm_graph",
    "load_fashion_mnist",
    "load_mnist1d",
    "load_planetoid",
    "load_stdlib_charlm",
    "read_stdlib_corpus",
    "subset_split",
    "verify_planetoid",
]

CACHE = Path(os.environ.get("LRFREE_CACHE", Path.home() / ".cache" / "lrfree"))
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# name -> SHA-256 of the *decompressed* idx payload (read off Debian's dataset-fashion-mnist
# files; checking the payload makes the check independent of how the file was gzipped)
FMNIST_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"
# file -> SHA-256 of the raw Planetoid file (computed from the copies in the project's
# shared/data/planetoid, taken from the Planetoid repository, kimiyoung/planetoid, MIT);
# every file is checked before it is unpickled, wherever it was found or downloaded
PLANETOID_SHA256 = {
    "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
}


class ChecksumError(OSError):
    """A data file's SHA-256 is not the pinned one: the message names the file, the
    expected and the actual hash."""


class DataMissing(FileNotFoundError):
    """A dataset is not on this machine; the message says the ways to get it."""


class CorpusMismatch(DataMissing):
    """The standard-library corpus of this Python is not the pinned one (files missing, or
    another Python version's sources): the message names the missing files or the expected
    and actual SHA-256. A ``DataMissing``, so ``lrfree bench`` stops with the message and the
    tests skip with it."""


@dataclass
class Split:
    """Tensors of one dataset: train / test inputs and integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def subset_split(split: Split, train_subset: int | None, test_subset: int | None) -> Split:
    """The first ``train_subset`` training and ``test_subset`` test examples (``None``: all).

    The graph tasks hold one full-graph "batch" (their split is by node masks), which any
    subset keeps whole.

    Example::

        >>> s = Split(torch.arange(10.0), torch.arange(10), torch.arange(6.0), torch.arange(6))
        >>> subset_split(s, 4, 3).y_train.tolist(), subset_split(s, None, None) is s
        ([0, 1, 2, 3], True)
    """
    if train_subset is None and test_subset is None:
        return split
    for v in (train_subset, test_subset):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"a subset must be a positive number of examples, got {v!r}")
    tr = slice(None) if train_subset is None else slice(0, train_subset)
    te = slice(None) if test_subset is None else slice(0, test_subset)
    return Split(split.x_train[tr], split.y_train[tr], split.x_test[te], split.y_test[te])


# ------------------------------------------------------------------ MNIST-1D
@functools.lru_cache(maxsize=2)
def load_mnist1d(seed: int = 42) -> Split:
    """MNIST-1D generated by the ``mnist1d`` package (4000 train / 1000 test, length 40).

    Uses ``make_dataset(get_dataset_args())``, which generates the data locally
    (``get_dataset()`` would download it). Cached: the MLP and CNN tasks share one
    generation (the benchmark only reads these tensors).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    f = torch.float32
    return Split(
        torch.as_tensor(d["x"], dtype=f),
        torch.as_tensor(d["y"], dtype=torch.long),
        torch.as_tensor(d["x_test"], dtype=f),
        torch.as_tensor(d["y_test"], dtype=torch.long),
    )


# ------------------------------------------------------------- Fashion-MNIST
def _payload_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with gzip.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_fmnist(data_dir: str | Path | None, download: bool) -> Path:
    candidates = []
    for base in (data_dir, os.environ.get("LRFREE_DATA")):
        if base:
            candidates += [Path(base), Path(base) / "fashion-mnist"]
    candidates += [DEBIAN_FMNIST, CACHE / "fashion-mnist"]
    for c in candidates:
        if all((c / f).is_file() for f in FMNIST_FILES):
            return c
    if not download:
        raise DataMissing(
            "Fashion-MNIST not found (looked in: "
            + ", ".join(str(c) for c in candidates)
            + "). Get it either way: `apt-get install dataset-fashion-mnist` (Debian, puts the "
            "files in /usr/share/datasets/fashion-mnist), or pass download=True / "
            "`lrfree bench --download` to fetch it into ~/.cache/lrfree (checksums verified); "
            "--data-dir DIR points at a folder holding the four *-ubyte.gz files."
        )
    target = CACHE / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name, digest in FMNIST_FILES.items():
        path = target / name
        if not path.is_file():
            tmp = path.with_suffix(".part")
            urllib.request.urlretrieve(FMNIST_URL + name, tmp)
            tmp.rename(path)
        if _payload_sha256(path) != digest:
            path.unlink()
            raise OSError(f"checksum mismatch for {name}; removed it, try again")
    return target


def load_fashion_mnist(
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    flatten: bool = False,
    train_subset: int | None = None,
) -> Split:
    """Fashion-MNIST as float tensors in [0, 1], shape (N, 1, 28, 28) or (N, 784).

    ``train_subset`` keeps the first N training examples (a fixed, documented subset).
    """
    root = _find_fmnist(data_dir, download)
    arrays = {name: _read_idx(root / name) for name in FMNIST_FILES}

    def images(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.float32) / 255.0)
        return t.reshape(len(t), -1) if flatten else t.unsqueeze(1)

    split = Split(
        images(arrays["train-images-idx3-ubyte.gz"]),
        torch.from_numpy(arrays["train-labels-idx1-ubyte.gz"].astype(np.int64)),
        images(arrays["t10k-images-idx3-ubyte.gz"]),
        torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64)),
    )
    if train_subset is not None:
        split.x_train, split.y_train = split.x_train[:train_subset], split.y_train[:train_subset]
    return split


# ----------------------------------------------------------------- Planetoid
@dataclass
class Graph:
    """A citation graph: node features, labels, a normalised sparse adjacency, masks."""

    x: torch.Tensor
    y: torch.Tensor
    adj: torch.Tensor  # sparse, D^-1/2 (A + I) D^-1/2
    train_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_planetoid(root: str | Path, name: str) -> None:
    """Check the SHA-256 of every raw file of Planetoid ``name`` in ``root`` against
    ``PLANETOID_SHA256``; raise ``ChecksumError`` (file, expected, actual) on a mismatch."""
    if name not in ("cora", "citeseer"):
        raise ValueError(f"Invalid Planetoid name: {name!r} (expected 'cora' or 'citeseer')")
    for f, expected in PLANETOID_SHA256.items():
        if not f.startswith(f"ind.{name}."):
            continue
        path = Path(root) / f
        actual = _file_sha256(path)
        if actual != expected:
            raise ChecksumError(
                f"checksum mismatch for {path}: expected SHA-256 {expected}, got {actual} "
                "(a corrupted or different copy; replace it with the Planetoid repository's "
                "file, or delete it and pass --download)"
            )


def _planetoid_dir(name: str, data_dir: str | Path | None, download: bool) -> Path:
    here = Path(__file__).resolve()
    candidates = []
    for base in (data_dir, os.environ.get("LRFREE_DATA")):
        if base:
            candidates += [Path(base), Path(base) / "planetoid"]
    candidates += [p / "shared" / "data" / "planetoid" for p in here.parents[:6]]
    candidates.append(CACHE / "planetoid")
    files = [
        f"ind.{name}.{s}" for s in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
    ]
    for c in candidates:
        if all((c / f).is_file() for f in files):
            return c
    if not download:
        raise DataMissing(
            f"Planetoid '{name}' raw files not found (looked in: "
            + ", ".join(str(c) for c in candidates)
            + "). Pass --data-dir pointing at a folder with ind.<name>.* files, or "
            "--download to fetch them from the Planetoid repository into ~/.cache/lrfree."
        )
    target = CACHE / "planetoid"
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (target / f).is_file():
            tmp = target / (f + ".part")
            urllib.request.urlretrieve(PLANETOID_URL + f, tmp)
            actual = _file_sha256(tmp)
            if actual != PLANETOID_SHA256[f]:
                tmp.unlink()
                raise ChecksumError(
                    f"checksum mismatch for downloaded {f}: expected SHA-256 "
                    f"{PLANETOID_SHA256[f]}, got {actual}; removed it, try again"
                )
            tmp.rename(target / f)
    return target


class _PlanetoidUnpickler(pickle.Unpickler):
    """Reads the Planetoid raw files (Python 2 pickles of SciPy / NumPy objects) and nothing
    else: a file naming any other class is refused, not executed. The files name
    ``scipy.sparse.csr.csr_matrix`` and ``numpy.core.multiarray``, module paths that SciPy
    and NumPy 2 deprecate; they are read from the public namespaces instead."""

    _ALLOWED = {
        ("collections", "defaultdict"),
        ("__builtin__", "list"),
        ("builtins", "list"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        import scipy.sparse

        if module.startswith("scipy.sparse") and name.endswith("_matrix"):
            return getattr(scipy.sparse, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == (
            "_reconstruct"
        ):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a Planetoid raw file")


def load_planetoid(
    name: str, data_dir: str | Path | None = None, *, download: bool = False, n_test: int = 1000
) -> Graph:
    """Cora / CiteSeer from the Planetoid raw files.

    The split follows the LW paper: the 1000 Planetoid test nodes are the test set and all
    other nodes are for training. CiteSeer's isolated test indices get zero features, as in
    the reference loaders. Every raw file's SHA-256 is checked against ``PLANETOID_SHA256``
    before it is read (``ChecksumError`` naming the file, the expected and the actual hash).
    """
    import scipy.sparse as sp

    if name not in ("cora", "citeseer"):
        raise ValueError(f"Invalid Planetoid name: {name!r} (expected 'cora' or 'citeseer')")
    root = _planetoid_dir(name, data_dir, download)
    verify_planetoid(root, name)
    objs = {}
    for s in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        with open(root / f"ind.{name}.{s}", "rb") as fh:
            objs[s] = _PlanetoidUnpickler(fh, encoding="latin1").load()
    test_idx = [int(line) for line in (root / f"ind.{name}.test.index").read_text().split()]
    test_sorted = sorted(test_idx)
    tx, ty = objs["tx"], objs["ty"]
    if name == "citeseer":  # isolated test nodes: pad to the full index range
        full = range(min(test_sorted), max(test_sorted) + 1)
        tx_ext = sp.lil_matrix((len(full), tx.shape[1]))
        tx_ext[np.array(test_sorted) - min(test_sorted), :] = tx
        ty_ext = np.zeros((len(full), ty.shape[1]))
        ty_ext[np.array(test_sorted) - min(test_sorted), :] = ty
        tx, ty = tx_ext, ty_ext
    features = sp.vstack((objs["allx"], tx)).tolil()
    labels = np.vstack((objs["ally"], ty))
    features[test_idx, :] = features[test_sorted, :]
    labels[test_idx, :] = labels[test_sorted, :]
    n = features.shape[0]
    rows, cols = [], []
    for src, dsts in objs["graph"].items():
        for d in dsts:
            if src < n and d < n:
                rows += [src, d]
                cols += [d, src]
    a = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    a = a + sp.eye(n)
    deg = np.asarray(a.sum(1)).ravel()
    dinv = sp.diags(1.0 / np.sqrt(deg))
    norm = (dinv @ a @ dinv).tocoo()
    adj = torch.sparse_coo_tensor(
        torch.from_numpy(np.vstack([norm.row, norm.col]).astype(np.int64)),
        torch.from_numpy(norm.data.astype(np.float32)),
        (n, n),
        check_invariants=True,
    ).coalesce()
    feats = np.asarray(features.todense(), dtype=np.float32)
    rowsum = feats.sum(1, keepdims=True)
    rowsum[rowsum == 0] = 1.0
    x = torch.from_numpy(feats / rowsum)
    y = torch.from_numpy(labels.argmax(1).astype(np.int64))
    test_mask = torch.zeros(n, dtype=torch.bool)
    test_mask[torch.tensor(test_sorted[:n_test])] = True
    return Graph(x, y, adj, ~test_mask, test_mask, int(labels.shape[1]))


# ------------------------------------------------------- standard-library corpus
STDLIB_FILES = (
    "argparse.py", "textwrap.py", "contextlib.py", "fractions.py", "random.py",
    "tempfile.py", "functools.py", "heapq.py", "calendar.py", "csv.py",
    "shlex.py", "pprint.py", "gettext.py", "tokenize.py", "numbers.py",
    "string.py", "weakref.py", "operator.py", "graphlib.py", "queue.py",
)  # fmt: skip
"""Twenty pure-Python modules of CPython's ``Lib`` (501,348 bytes in 3.11.7), concatenated in
this order; the validation split (the last 10%) falls in ``weakref`` .. ``queue``."""
STDLIB_SHA256 = "e8f379aba4c270c0dd73155e3c0db16e63c5acbc6672f705941e5b03da076eb2"
"""SHA-256 of the concatenated bytes of ``STDLIB_FILES`` as CPython 3.11.7 ships them."""


def read_stdlib_corpus(root: str | Path | None = None) -> bytes:
    """The concatenated bytes of ``STDLIB_FILES`` from ``root`` (default: this Python's
    ``sysconfig.get_paths()["stdlib"]``), checked against ``STDLIB_SHA256``.

    Raises ``CorpusMismatch`` naming the missing files, or the expected and actual hash (the
    sources of another Python version differ)."""
    import platform

    folder = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    missing = [f for f in STDLIB_FILES if not (folder / f).is_file()]
    if missing:
        raise CorpusMismatch(
            f"the stdlib-charlm corpus needs CPython 3.11's sources: {', '.join(missing)} "
            f"not found in {folder} (Python {platform.python_version()})"
        )
    data = b"".join((folder / f).read_bytes() for f in STDLIB_FILES)
    actual = hashlib.sha256(data).hexdigest()
    if actual != STDLIB_SHA256:
        raise CorpusMismatch(
            f"the stdlib-charlm corpus ({len(STDLIB_FILES)} files of {folder}, Python "
            f"{platform.python_version()}) has SHA-256 {actual}, expected {STDLIB_SHA256} "
            "(pinned from CPython 3.11.7's sources; another Python version's files differ, "
            "so its losses would not be comparable)"
        )
    return data


@functools.lru_cache(maxsize=2)
def load_stdlib_charlm(seq_len: int = 64, val_fraction: float = 0.1) -> Split:
    """Byte-level language modelling on ``read_stdlib_corpus()``: ``x`` holds ``seq_len``
    consecutive bytes (int64, vocabulary 256), ``y`` the same window shifted by one byte.

    The corpus is split at a fixed position (the first ``1 - val_fraction`` for training, the
    rest for validation, so the two share no window) and each part is cut into windows at
    offsets ``0, seq_len, 2 seq_len, ...`` (the bytes after the last whole window are
    dropped): no randomness, the same tensors on every call. Cached (the benchmark only reads
    these tensors).
    """
    data = torch.frombuffer(bytearray(read_stdlib_corpus()), dtype=torch.uint8).long()
    cut = int(len(data) * (1 - val_fraction))

    def windows(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = (len(part) - 1) // seq_len  # each window needs its next byte as a target
        x = part[: n * seq_len].view(n, seq_len)
        y = part[1 : n * seq_len + 1].view(n, seq_len)
        return x.clone(), y.clone()

    x_train, y_train = windows(data[:cut])
    x_test, y_test = windows(data[cut:])
    return Split(x_train, y_train, x_test, y_test)


def csbm_graph(
    n: int = 2500,
    classes: int = 7,
    features: int = 1000,
    topic: int = 50,
    p_topic: float = 0.015,
    p_other: float = 0.01,
    homophily: float = 0.6,
    mean_extra_degree: float = 1.5,
    n_test: int = 1000,
    seed: int = 20261205,
) -> Graph:
    """A generated citation-like graph for development (the ``csbm-gcn`` task): a contextual
    stochastic block model, the same for every call with the same arguments.

    ``n`` nodes in ``classes`` classes (class shares drawn from a Dirichlet(5)); each node has
    ``1 + Poisson(mean_extra_degree)`` edge stubs, each joining a node of its own class with
    probability ``homophily`` and a uniformly random node otherwise; undirected, with the
    normalised adjacency ``D^-1/2 (A + I) D^-1/2`` of the Planetoid loader. Features:
    ``features`` binary "words", each class with ``topic`` topic words seen with probability
    ``p_topic`` (every other word ``p_other``). Split as ``load_planetoid``: ``n_test``
    random test nodes, every other node labelled for training.

    Example::

        >>> g = csbm_graph(n=300, n_test=100)
        >>> g.x.shape, g.num_classes, int(g.test_mask.sum()), int(g.train_mask.sum())
        (torch.Size([300, 1000]), 7, 100, 200)
        >>> torch.equal(g.x, csbm_graph(n=300, n_test=100).x)
        True
    """
    gen = torch.Generator().manual_seed(seed)
    share = torch._standard_gamma(torch.full((classes,), 5.0), generator=gen)
    y = torch.multinomial(share / share.sum(), n, replacement=True, generator=gen)
    words = torch.full((classes, features), p_other)
    for c in range(classes):
        words[c, torch.randperm(features, generator=gen)[:topic]] = p_topic
    x = torch.bernoulli(words[y], generator=gen)
    stubs = 1 + torch.poisson(torch.full((n,), mean_extra_degree), generator=gen).long()
    src = torch.repeat_interleave(torch.arange(n), stubs)
    same = torch.rand(len(src), generator=gen) < homophily
    members = [torch.nonzero(y == c).flatten() for c in range(classes)]
    dst = torch.randint(0, n, (len(src),), generator=gen)
    for c in range(classes):
        pick = same & (y[src] == c)
        idx = torch.randint(0, len(members[c]), (int(pick.sum()),), generator=gen)
        dst[pick] = members[c][idx]
    keep = src != dst
    src, dst = src[keep], dst[keep]
    loops = torch.arange(n).repeat(2, 1)
    edges = torch.cat([torch.stack([src, dst]), torch.stack([dst, src]), loops], 1)
    a = torch.sparse_coo_tensor(edges, torch.ones(edges.shape[1]), (n, n)).coalesce()
    a = torch.sparse_coo_tensor(a.indices(), torch.ones_like(a.values()), (n, n)).coalesce()
    deg = torch.sparse.sum(a, 1).to_dense()
    norm = deg.rsqrt()
    i = a.indices()
    adj = torch.sparse_coo_tensor(i, norm[i[0]] * norm[i[1]], (n, n)).coalesce()
    test_mask = torch.zeros(n, dtype=torch.bool)
    test_mask[torch.randperm(n, generator=gen)[:n_test]] = True
    return Graph(x, y, adj, ~test_mask, test_mask, classes)
