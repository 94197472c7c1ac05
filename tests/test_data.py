"""Planetoid raw files are checked against pinned SHA-256 checksums before they are read."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import pytest

pytest.importorskip("scipy")
pytest.importorskip("numpy")

from lrfree.bench import data


def _shared(name: str) -> Path:
    try:
        return data._planetoid_dir(name, None, False)
    except data.DataMissing as e:
        pytest.skip(f"Planetoid files not on this machine: {e}")


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_pinned_checksums_match_the_shared_files(name):
    root = _shared(name)
    files = [f for f in data.PLANETOID_SHA256 if f.startswith(f"ind.{name}.")]
    assert len(files) == 8
    for f in files:
        assert hashlib.sha256((root / f).read_bytes()).hexdigest() == data.PLANETOID_SHA256[f]
    data.verify_planetoid(root, name)


def test_load_planetoid_verifies_and_loads(tmp_path):
    root = _shared("cora")
    g = data.load_planetoid("cora", root)
    assert tuple(g.x.shape) == (2708, 1433) and g.num_classes == 7


@pytest.mark.parametrize("victim", ["ind.cora.graph", "ind.cora.test.index"])
def test_corrupted_copy_is_refused_with_file_and_hashes(tmp_path, victim):
    root = _shared("cora")
    for f in data.PLANETOID_SHA256:
        if f.startswith("ind.cora."):
            shutil.copyfile(root / f, tmp_path / f)
    raw = bytearray((tmp_path / victim).read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit
    (tmp_path / victim).write_bytes(bytes(raw))
    actual = hashlib.sha256(bytes(raw)).hexdigest()
    with pytest.raises(data.ChecksumError) as info:
        data.load_planetoid("cora", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / victim) in msg
    assert data.PLANETOID_SHA256[victim] in msg and actual in msg


def test_a_substituted_pickle_is_never_unpickled(tmp_path):
    """The check comes first: a file that is not the pinned one is refused by its hash,
    before the (restricted) unpickler reads it."""
    root = _shared("cora")
    for f in data.PLANETOID_SHA256:
        if f.startswith("ind.cora."):
            shutil.copyfile(root / f, tmp_path / f)
    (tmp_path / "ind.cora.x").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(data.ChecksumError, match=r"ind\.cora\.x"):
        data.load_planetoid("cora", tmp_path)


def test_download_with_a_bad_checksum_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("LRFREE_DATA", raising=False)
    # not beside a checkout: no shared/data/planetoid to find
    monkeypatch.setattr(data, "__file__", str(tmp_path / "a" / "b" / "c" / "d" / "e" / "x.py"))
    fetched = []

    def fake_fetch(url, dest):
        fetched.append(url)
        Path(dest).write_bytes(b"not the planetoid file")

    monkeypatch.setattr(data.urllib.request, "urlretrieve", fake_fetch)
    with pytest.raises(data.ChecksumError, match=r"downloaded ind\.cora\.\S+: expected SHA-256"):
        data.load_planetoid("cora", tmp_path / "empty", download=True)
    assert len(fetched) == 1
    assert not any((tmp_path / "cache" / "planetoid").iterdir())  # the bad file is removed


def test_unknown_planetoid_name():
    with pytest.raises(ValueError, match="Invalid Planetoid name: 'pubmed'"):
        data.load_planetoid("pubmed")
