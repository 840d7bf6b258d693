"""The TRANCE format: streaming load, atomic save, round trip and bad input."""

from __future__ import annotations

import json

import pytest

from tvr_gym.trance import TranceFormatError, load_trance, save_trance


def test_load_streams(trance_dir):
    it = load_trance(trance_dir)
    first = next(it)
    assert first.idx == 0 and len(first.initial) == 10
    assert first.image_path("final", "left") is not None


def test_round_trip_is_identical(trance_problems, tmp_path):
    save_trance(trance_problems, tmp_path / "a")
    again = list(load_trance(tmp_path / "a"))
    assert [p.to_dict() for p in again] == [p.to_dict() for p in trance_problems]
    save_trance(again, tmp_path / "b")
    assert (tmp_path / "a" / "data.jsonl").read_bytes() == (tmp_path / "b" / "data.jsonl").read_bytes()
    assert (tmp_path / "a" / "image" / "img_000005-fin.R.png").is_file()


def test_official_lines_survive_round_trip_verbatim(trance_dir, trance_problems):
    lines = [json.loads(line) for line in (trance_dir / "data.jsonl").read_text().splitlines()]
    assert [p.to_dict() for p in trance_problems] == lines


def _write(tmp_path, lines):
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_broken_line_names_file_and_line(trance_dir, tmp_path):
    good = (trance_dir / "data.jsonl").read_text().splitlines()[0]
    _write(tmp_path, [good, good, "{not json"])
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:3"):
        list(load_trance(tmp_path))


def test_bad_field_is_named(trance_dir, tmp_path):
    sample = json.loads((trance_dir / "data.jsonl").read_text().splitlines()[0])
    sample["states"][0]["objects"][3]["color"] = "pink"
    _write(tmp_path, [json.dumps(sample)])
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:1: states\.initial\.objects\[3\]\.color"):
        list(load_trance(tmp_path))


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/../../x.png"])
def test_escaping_image_path_is_refused(trance_dir, tmp_path, name):
    sample = json.loads((trance_dir / "data.jsonl").read_text().splitlines()[0])
    sample["states"][1]["images"]["Camera_Left"] = name
    _write(tmp_path, [json.dumps(sample)])
    with pytest.raises(TranceFormatError, match="escapes"):
        list(load_trance(tmp_path))


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.jsonl"):
        list(load_trance(tmp_path / "nowhere"))


def test_failed_save_leaves_no_partial_file(trance_problems, tmp_path):
    def broken():
        yield trance_problems[0]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        save_trance(broken(), tmp_path)
    assert not (tmp_path / "data.jsonl").exists()
    assert not list(tmp_path.glob(".data-*"))
