"""Atomic writes leave either the old file or the complete new one."""

from __future__ import annotations

import pytest

from tvr_gym.core.atomic import atomic_open, atomic_write_text, save_png


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


# ---------------------------------------------------------------------------- PNG level


def zlib_level_flag(png: bytes) -> int:
    """FLEVEL of the first IDAT's zlib header (RFC 1950): 0 for zlib levels 0-1, 1 for 2-5, 2 for 6, 3 for 7-9."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png[png.index(b"IDAT") + 5] >> 6


def test_every_png_we_write_is_fast_zlib_and_lossless(tmp_path):
    """Datasets, exports and data URLs all go through encode_png: PIL's default level 6 took two thirds of
    generate's time (benchmarks/bench_png.py)."""
    import base64
    import io

    import numpy as np
    from datasets import Image as ImageFeature
    from datasets import load_from_disk
    from PIL import Image

    from tvr_gym.core.chat import png_data_url
    from tvr_gym.data.dataset import generate_dataset
    from tvr_gym.data.export import export

    image = np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    url = base64.b64decode(png_data_url(image).removeprefix("data:image/png;base64,"))
    save_png(image, tmp_path / "a.png")
    for png in (url, (tmp_path / "a.png").read_bytes()):
        assert zlib_level_flag(png) == 0
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), image)

    generate_dataset(tmp_path / "data", "basic", seed=1, n=1, renderer="numpy", progress=False)
    written = sorted((tmp_path / "data").rglob("*.png"))
    assert len(written) == 4 and all(zlib_level_flag(p.read_bytes()) == 0 for p in written)

    export("hf", "TVR-Basic-v0", 2, tmp_path / "hf", seed=1, progress=False, renderer="numpy", obs_mode="image")
    rows = load_from_disk(str(tmp_path / "hf"))["train"]
    rows = rows.cast_column("images", [ImageFeature(decode=False)])
    stored = [image["bytes"] for row in rows for image in row["images"]]
    assert len(stored) == 4 and all(zlib_level_flag(png) == 0 for png in stored)
