"""`neurop_diff.files.atomic_write`: the target is replaced whole or not at all, and no temporary file stays."""

from __future__ import annotations

import os
import stat

import pytest

from neurop_diff.files import TMP_MARK, atomic_write, remove_leftovers


def test_a_write_that_raises_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target, suffix=".part", fsync=True) as tmp:
        assert (
            tmp.parent == tmp_path and tmp.name.startswith(f".data.bin{TMP_MARK}") and tmp.suffix == ".part"
        )
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


@pytest.mark.parametrize("fsync", [False, True])
def test_a_complete_write_replaces_the_file(tmp_path, fsync):
    target = tmp_path / "sub" / "data.bin"  # the folder is created
    for payload in (b"first", b"second"):
        with atomic_write(target, fsync=fsync) as tmp:
            assert tmp.is_file() and tmp.parent == target.parent and tmp != target
            with open(tmp, "wb") as f:
                f.write(payload)
        assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["data.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # as open() creates files


def test_mode_and_leftovers(tmp_path):
    target = tmp_path / "cache.npy"
    with atomic_write(target, mode=0o600) as tmp:
        tmp.write_bytes(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    killed = tmp_path / f".cache.npy{TMP_MARK}123-abcd"  # what a killed writer leaves
    other = tmp_path / f".cache.npy.bak{TMP_MARK}1"  # another file's temporary: kept
    killed.write_bytes(b"")
    other.write_bytes(b"")
    remove_leftovers(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cache.npy", other.name])
