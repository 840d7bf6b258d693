"""Sharded table exports to a URL (``export --out s3://...``), through fsspec.

Object stores are stood in for by fsspec's own in-memory file system (``memory://``), which has no rename and
no locks, like S3: the export takes the same upload-then-move path it takes there. A ``file://`` URL on Ray is
in tests/test_cluster.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tvr_gym.data.dataset import DatasetDirError
from tvr_gym.data.export import export
from tvr_gym.data.shards import shard_files

ROWS = {"fmt": "verl", "env_id": "TVR-Basic-v0", "n": 5, "seed": 3, "progress": False, "renderer": "gl"}


@pytest.fixture
def memory():
    """fsspec's process-wide memory file system, emptied after the test."""
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    yield fs
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    export(**ROWS, out=out, shard_size=2)
    return out / "train"


def names(fs, root: str) -> list[str]:
    return sorted(path.rsplit("/", 1)[1] for path in fs.ls(root, detail=False))


def test_shards_uploaded_to_a_url_are_the_local_shards_byte_for_byte(memory, local_shards):
    target = export(**ROWS, out="memory://bucket/data", shard_size=2)
    assert target == "memory://bucket/data/train"
    local = sorted(p.name for p in local_shards.iterdir())
    assert names(memory, "/bucket/data/train") == local
    assert names(memory, "/bucket/data/.tvr-gym-shards") == ["train.json"]  # no temporary object left
    for name in local:
        assert memory.cat_file(f"/bucket/data/train/{name}") == (local_shards / name).read_bytes(), name
    assert shard_files(target) == [f"memory://bucket/data/train/shard-0000{k}-of-00003.parquet" for k in range(3)]


def test_a_url_export_resumes_shard_by_shard_and_refuses_another_export(memory, local_shards):
    export(**ROWS, out="memory://b/x", shard_size=2)
    kept = memory.info("/b/x/train/shard-00000-of-00003.parquet")["created"]
    memory.rm("/b/x/train/shard-00001-of-00003.parquet")
    memory.pipe_file("/b/x/.tvr-gym-shards/.train.shard-00002-of-00003.parquet.0a1b2c3d.tmp", b"half")  # killed
    memory.pipe_file("/b/x/.tvr-gym-shards/.val.shard-00000-of-00001.parquet.0a1b2c3d.tmp", b"another split's")
    export(**ROWS, out="memory://b/x", shard_size=2)
    assert memory.info("/b/x/train/shard-00000-of-00003.parquet")["created"] == kept  # not made again
    assert names(memory, "/b/x/train") == sorted(p.name for p in local_shards.iterdir())
    assert names(memory, "/b/x/.tvr-gym-shards") == [".val.shard-00000-of-00001.parquet.0a1b2c3d.tmp", "train.json"]
    assert memory.cat_file("/b/x/train/shard-00001-of-00003.parquet") == (
        local_shards / "shard-00001-of-00003.parquet").read_bytes()  # fmt: skip
    with pytest.raises(DatasetDirError, match=r"holds another export \(rows_per_shard: 2 there, 3 now\)"):
        export(**ROWS, out="memory://b/x", shard_size=3)


def test_a_failed_upload_leaves_no_shard_and_no_temporary(memory, monkeypatch):
    from fsspec.implementations.memory import MemoryFileSystem

    def broken_move(self, source, target, **kwargs):
        if target.endswith(".parquet"):
            raise OSError("connection reset")
        return original(self, source, target, **kwargs)

    original = MemoryFileSystem.mv
    monkeypatch.setattr(MemoryFileSystem, "mv", broken_move)
    with pytest.raises(OSError, match="connection reset"):
        export(**ROWS, out="memory://c/x", shard_size=2)
    assert not memory.ls("/c/x/train")
    assert names(memory, "/c/x/.tvr-gym-shards") == ["train.json"]


def test_a_url_export_refuses_a_prefix_that_holds_other_objects(memory):
    memory.pipe_file("/d/x/train/notes.txt", b"mine")
    with pytest.raises(DatasetDirError, match="is not empty and is no sharded export"):
        export(**ROWS, out="memory://d/x", shard_size=2)
    assert names(memory, "/d/x/train") == ["notes.txt"]


@pytest.mark.parametrize(
    "command, message",
    [
        (["export", "--format", "trance"], "is a URL; only export's table formats write to one"),
        (["generate"], "is a URL; only export's table formats write to one"),
        (["export", "--format", "verl", "--out", "nosuch://b/x"], "fsspec knows no file system 'nosuch'"),
        (["export", "--format", "verl", "--out", "s3://b/x"], "the 's3' file system needs a package"),
    ],
)
def test_a_url_where_none_can_be_written_is_one_line_exit_2(tmp_path, command, message):
    out = ["--out", "gs://b/x"] if "--out" not in command else []
    found = subprocess.run([sys.executable, "-m", "tvr_gym", *command, "--n", "2", *out], capture_output=True,
                           text=True, cwd=tmp_path)  # fmt: skip
    assert found.returncode == 2 and message in found.stderr and len(found.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing made locally (no "gs:" directory)


def test_every_split_directory_reads_as_the_train_split_easyr1_asks_for(tmp_path):
    """EasyR1 loads a directory with ``load_dataset(type, data_dir=..., split="train")``, whatever the split."""
    from datasets import load_dataset

    for split in ("train", "val", "test"):
        export(**{**ROWS, "n": 3}, out=tmp_path, split=split, shard_size=2)
    for split in ("val", "test"):
        assert len(load_dataset("parquet", data_dir=str(tmp_path / split), split="train")) == 3
    assert {name: len(rows) for name, rows in load_dataset("parquet", data_dir=str(tmp_path)).items()} == {
        "train": 3, "validation": 3, "test": 3}  # fmt: skip
