"""The TRANCE format: streaming load, atomic save, round trip and bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.trance import TranceFormatError, load_trance, replay, save_trance

from props import examples


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


# ---------------------------------------------------------------- damaged data


def _official_lines(trance_dir) -> list[str]:
    return (trance_dir / "data.jsonl").read_text().splitlines()


@pytest.mark.parametrize("blank", ["\u00a0", "\u2028", "\u001c", " \t ", "\u3000\u00a0"])
def test_whitespace_only_lines_shift_no_sample(trance_dir, tmp_path, blank):
    """The loader and the environment's index read the same lines, so Basic serves only 1-step problems."""
    import gymnasium as gym

    lines = _official_lines(trance_dir)
    mixed = [lines[0], blank, *lines[1:3], blank, *lines[3:]]
    (tmp_path / "data.jsonl").write_bytes(("\n".join(mixed) + "\n").encode("utf-8"))
    assert [p.to_dict() for p in load_trance(tmp_path)] == [json.loads(line) for line in lines]
    env = gym.make("tvr_gym:TVR-Basic-v0", source=str(tmp_path), render_size=(32, 24))
    samples = [json.loads(line) for line in lines]
    official = {json.dumps(d["states"]) for d in samples if len(d["transformations"]) == 1}
    for k in range(len(env.unwrapped.source)):
        _, info = env.reset(seed=0, options={"index": k})
        assert len(info["problem"]["transformations"]) == 1
        assert json.dumps(info["problem"]["states"]) in official


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"idx": 0, "states": "\xff\xfe"}\n', r"data\.jsonl:2: not UTF-8"),
        (b"[" * 100_000 + b"\n", r"data\.jsonl:2: nested too deeply"),
        (b'{"idx": 0}\r{"idx": 1}\r', r"data\.jsonl:2: .*'\\r' alone"),
        (b'{"idx": 0, "states": [], "transformations": []}\n', r"data\.jsonl:2: states"),
        (b'{"idx": 0, "states": [{"objects": [], "images": []}, {}], "transformations": {}}\n', r"data\.jsonl:2"),
        (b'[1, 2, 3]\n', r"data\.jsonl:2: sample: expected a JSON object"),
    ],
)
def test_damaged_lines_name_the_file_and_line(trance_dir, tmp_path, payload, match):
    first = _official_lines(trance_dir)[0].encode()
    (tmp_path / "data.jsonl").write_bytes(first + b"\n" + payload)
    with pytest.raises(TranceFormatError, match=match):
        list(load_trance(tmp_path))


def _sample(trance_dir, k: int = 1) -> dict:
    return json.loads(_official_lines(trance_dir)[k])


def test_a_final_state_that_is_not_the_replay_is_reported_at_load(trance_dir, tmp_path):
    sample = _sample(trance_dir)
    step = sample["transformations"][0]
    obj = sample["states"][1]["objects"][step["obj_idx"]]
    obj["size"] = next(s for s in ("large", "medium", "small") if s != obj["size"])
    _write(tmp_path, [json.dumps(sample)])
    where = rf"data\.jsonl:1: states\.final\.objects\[{step['obj_idx']}\]\.size"
    with pytest.raises(TranceFormatError, match=where + ".*replay"):
        list(load_trance(tmp_path))


def test_an_off_grid_move_is_reported_at_load(trance_dir, tmp_path):
    sample = _sample(trance_dir)
    k = 3
    sample["states"][0]["objects"][k]["position"] = [-40, 0]
    sample["states"][1]["objects"] = [dict(o) for o in sample["states"][0]["objects"]]  # a grid-bound final state
    sample["transformations"] = [{"obj_idx": k, "attr": "position", "val": ["front", 1], "options": [["front", 1]],
                                  "type": "out"}]  # fmt: skip
    _write(tmp_path, [json.dumps(sample)])
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:1: transformations\[0\]: cannot be applied .*off the"):
        list(load_trance(tmp_path))


def test_options_that_lack_the_value_are_reported_at_load(trance_dir, tmp_path):
    sample = next(json.loads(line) for line in _official_lines(trance_dir)
                  if any(len(t["options"]) > 1 for t in json.loads(line)["transformations"]))  # fmt: skip
    step = next(t for t in sample["transformations"] if len(t["options"]) > 1)
    step["options"] = [o for o in step["options"] if o != step["val"]]
    _write(tmp_path, [json.dumps(sample)])
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:1: transformations\[\d\]\.options: .* lack the value"):
        list(load_trance(tmp_path))


def test_an_unreadable_image_is_named_when_first_read(trance_dir, tmp_path):
    import shutil

    import gymnasium as gym

    shutil.copytree(trance_dir, tmp_path / "data")
    name = _sample(trance_dir, 0)["states"][0]["images"]["Camera_Center"]
    (tmp_path / "data" / "image" / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    env = gym.make("tvr_gym:TVR-Event-v0", source=str(tmp_path / "data"), render_size=(32, 24))
    env.reset(seed=0, options={"index": 1})  # other samples are served as usual
    with pytest.raises(TranceFormatError, match=rf"{name}: not a readable image"):
        env.reset(seed=0, options={"index": 0})


def test_a_symlink_that_leaves_the_dataset_is_refused(trance_dir, tmp_path):
    import shutil

    shutil.copytree(trance_dir, tmp_path / "data")
    outside = tmp_path / "secret.png"
    shutil.copy(trance_dir / "image" / "img_000000-init.C.png", outside)
    link = tmp_path / "data" / "image" / "img_000000-init.C.png"
    link.unlink()
    link.symlink_to(outside)
    problem = next(load_trance(tmp_path / "data"))
    with pytest.raises(TranceFormatError, match="outside the dataset"):
        problem.image_path("initial", "center")
    inside = tmp_path / "data" / "image" / "img_000000-fin.C.png"
    (tmp_path / "data" / "image" / "alias.png").symlink_to(inside)  # a link within the dataset is fine
    problem.images["initial"]["center"] = "alias.png"
    assert problem.image_path("initial", "center") is not None


@settings(max_examples=examples(200), deadline=None)
@given(data=st.data())
def test_any_damage_to_a_sample_line_is_a_format_error_or_a_valid_problem(trance_dir, tmp_path_factory, data):
    line = bytearray(_official_lines(trance_dir)[data.draw(st.integers(0, 99))].encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(line) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            line[at] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del line[at]
        else:
            line[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    root = tmp_path_factory.mktemp("fuzz")
    (root / "data.jsonl").write_bytes(bytes(line) + b"\n")
    try:
        problems = list(load_trance(root))
    except TranceFormatError as exc:
        assert "data.jsonl:" in str(exc)
    else:
        for problem in problems:
            assert replay(problem.initial, problem.transformations).same_as(problem.final)
