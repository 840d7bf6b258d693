"""Atomic writes leave either the old file or the complete new one."""

from __future__ import annotations

import pytest

from tvr_gym.core.atomic import atomic_open, atomic_write_text


def test_complete_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, ["new ", "text"])
    assert path.read_text() == "new text"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path, "wb") as fh:
            fh.write(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import stat

    import tvr_gym.core.atomic as atomic

    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~atomic._UMASK


def test_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", "r"):
            pass


def test_replace_dir_swaps_in_the_new_directory_and_leaves_no_old_one(tmp_path):
    from tvr_gym.core.atomic import replace_dir

    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights").write_text("old")
    new = tmp_path / ".tmp-ckpt"
    new.mkdir()
    (new / "weights").write_text("new")
    assert replace_dir(new, target) == target
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
