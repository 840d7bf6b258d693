"""The TRANCE format: streaming load, atomic save, round trip and bad input."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import MAX_STEPS, MIN_STEPS, TranceFormatError, load_trance, replay, save_trance

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
    good = (trance_dir / "data.jsonl").read_text().splitlines()
    _write(tmp_path, [good[0], good[1], "{not json"])
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


# ---------------------------------------------------------------- options, numbers, ranges and repeats


def _first_line_with(trance_dir, pred) -> tuple[dict, int]:
    """The first official sample, and its step index, whose step satisfies ``pred``."""
    for line in _official_lines(trance_dir):
        sample = json.loads(line)
        for i, t in enumerate(sample["transformations"]):
            if pred(t):
                return sample, i
    raise AssertionError("no such step in the fixture")


def _load_one(tmp_path, sample: dict) -> list:
    _write(tmp_path, [json.dumps(sample)])
    return list(load_trance(tmp_path))


def test_options_wider_than_the_observation_are_refused(trance_dir, tmp_path):
    """Sample 4 changes object 6 to rubber; with every material in its options, ``6.material.metal`` would
    score the maximum and Basic Acc 1 while TVR's Acc is 0."""
    sample = _sample(trance_dir, 4)
    assert sample["transformations"][0]["val"] == "rubber"
    sample["transformations"][0]["options"] = ["rubber", "metal", "glass"]
    with pytest.raises(
        TranceFormatError, match=r'data\.jsonl:1: transformations\[0\]\.options: \["rubber", "metal", "glass"\] '
                                 r'are not the values .* expected \["rubber"\]'
    ):  # fmt: skip
        _load_one(tmp_path, sample)


def _is_out(t: dict) -> bool:
    return t.get("type") == "out"


@pytest.mark.parametrize(
    ("damage", "pred", "match"),
    [
        (lambda t: t["options"].pop(), _is_out, r"\.options: .* expected"),  # an equivalent move missing
        (lambda t: t["options"].append(t["options"][0]), _is_out, r"\.options: .* \(each once"),  # a repeat
        (lambda t: t["options"].append(t["val"]), lambda t: t.get("type") == "inner", r"\.options: "),
        (lambda t: t.update(type="inner"), _is_out, r"\.type: 'inner', but the move from .* is 'out'"),
        (lambda t: t.update(type="out"), lambda t: t["attr"] == "color", r"\.type: only a move has a type"),
    ],
)
def test_options_and_type_must_be_the_ones_the_move_implies(trance_dir, tmp_path, damage, pred, match):
    sample, i = _first_line_with(trance_dir, pred)
    damage(sample["transformations"][i])
    with pytest.raises(TranceFormatError, match=rf"data\.jsonl:1: transformations\[{i}\]" + match):
        _load_one(tmp_path, sample)


@settings(max_examples=examples(150), deadline=None)
@given(data=st.data())
def test_options_are_accepted_exactly_when_they_are_the_equivalent_values(trance_dir, tmp_path_factory, data):
    """Any list of legal values of the step's attribute loads iff it is a reordering of the official options."""
    sample = _sample(trance_dir, data.draw(st.integers(0, 99)))
    i = data.draw(st.integers(0, len(sample["transformations"]) - 1))
    step = sample["transformations"][i]
    official = step["options"]
    legal = [list(m) for m in SPEC.moves] if step["attr"] == "position" else list(SPEC.values[step["attr"]])
    options = data.draw(st.one_of(st.permutations(official), st.lists(st.sampled_from(legal), max_size=18)))
    assume(step["val"] in options)  # options lacking the value have their own test
    step["options"] = list(options)
    root = tmp_path_factory.mktemp("options")
    same = sorted(map(json.dumps, options)) == sorted(map(json.dumps, official))
    if same:
        assert len(_load_one(root, sample)) == 1
    else:
        with pytest.raises(TranceFormatError, match=rf"data\.jsonl:1: transformations\[{i}\]\.options"):
            _load_one(root, sample)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999", "-1e400"])
def test_a_non_finite_number_anywhere_is_refused(trance_dir, tmp_path, literal):
    """``Infinity`` as a rotation used to crash ``reset`` (math domain error), ``NaN`` to hide the object."""
    text = json.dumps(_sample(trance_dir, 1))
    rotated = text.replace('"position":', f'"rotation": {literal}, "position":', 1).replace(" ", "")
    elsewhere = text[:-1] + f', "note": [1, {{"x": {literal}}}]}}'  # a field kept as it is, deep inside
    for line in (rotated, elsewhere):
        (tmp_path / "data.jsonl").write_text(line + "\n")
        with pytest.raises(TranceFormatError, match=rf"data\.jsonl:1: .*{literal.lstrip('-')}.*finite numbers only"):
            list(load_trance(tmp_path))


@pytest.mark.parametrize(
    "rotation", [float("inf"), float("nan"), -1.0, 360.0, 1e300, -0.5, pytest.param(10**400, id="10**400"), "45", True,
                 None],
)
def test_a_rotation_outside_a_turn_is_refused(trance_dir, tmp_path, rotation):
    """Rotations are degrees in [0, 360), as the generator draws them; a dict sample is checked as a line is."""
    from tvr_gym.core.trance import Problem

    sample = _sample(trance_dir, 1)
    for state in sample["states"]:
        state["objects"][3]["rotation"] = rotation
    where = r"states\.initial\.objects\[3\]\.rotation: expected a finite number of degrees in \[0, 360\)"
    with pytest.raises(ValueError, match=where):
        Problem.from_dict(sample)
    if isinstance(rotation, float) and not math.isfinite(rotation):
        return  # JSON has no such number: test_a_non_finite_number_anywhere_is_refused covers the line
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:1: " + where):
        _load_one(tmp_path, sample)


def test_rotations_load_and_must_be_the_same_in_both_states(trance_dir, tmp_path):
    sample = _sample(trance_dir, 1)
    for state in sample["states"]:
        for k, obj in enumerate(state["objects"]):
            obj["rotation"] = 35.5 * k
    (problem,) = _load_one(tmp_path, sample)
    assert [o.rotation for o in problem.final.objects] == [35.5 * k for k in range(10)]
    sample["states"][1]["objects"][2]["rotation"] = 12.0
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:1: states\.final\.objects\[2\]\.rotation: .*never"):
        _load_one(tmp_path, sample)


STEPS_RANGE = rf"transformations: a problem holds {MIN_STEPS}\.\.{MAX_STEPS} steps"


def _too_many_steps(trance_dir) -> dict:
    """Sample 4 (object 6 becomes rubber) as MAX_STEPS + 1 consistent material steps, back and forth."""
    sample = _sample(trance_dir, 4)
    (step,) = sample["transformations"]
    before = sample["states"][0]["objects"][step["obj_idx"]][step["attr"]]
    n = MAX_STEPS + 1
    values = [step["val"] if (n - 1 - j) % 2 == 0 else before for j in range(n)]  # ends at the recorded value
    sample["transformations"] = [{**step, "val": v, "options": [v]} for v in values]
    return sample


def _all_invisible(sample: dict, _) -> None:
    """Every object outside the visible square, in both states (a column beyond its edge)."""
    for state in sample["states"]:
        for k, obj in enumerate(state["objects"]):
            obj["position"] = [SPEC.visible_limit + 1, -SPEC.grid_limit + k * (2 * SPEC.grid_limit // SPEC.n_objects)]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda s, d: s.update(transformations=[]), rf"{STEPS_RANGE}, got 0"),
        (lambda s, d: s.update(_too_many_steps(d)), rf"{STEPS_RANGE}, got {MAX_STEPS + 1}"),
        (lambda s, d: s.update(idx=-1), r"idx: expected an integer >= 0, got -1"),
        (_all_invisible, rf"states\.initial\.objects: at least {SPEC.visible_objects[0]} must stand"),
    ],
)
def test_the_ranges_the_spec_sets_are_checked(trance_dir, tmp_path, damage, match):
    sample, _ = _first_line_with(trance_dir, lambda t: t["attr"] == "color")
    damage(sample, trance_dir)
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:1: " + match):
        _load_one(tmp_path, sample)


def test_a_problem_is_built_with_min_to_max_steps(trance_problems):
    """Problems built in code obey the loader's range: the rewards' bounds (``docs/rewards.md``) rely on it."""
    from dataclasses import replace

    problem = next(p for p in trance_problems if p.n_steps == MAX_STEPS)
    for steps in ([], [*problem.transformations, problem.transformations[0]]):
        with pytest.raises(ValueError, match=rf"{STEPS_RANGE}, got {len(steps)}"):
            replace(problem, transformations=steps)


def test_a_repeated_idx_names_both_lines(trance_dir, tmp_path):
    lines = _official_lines(trance_dir)
    _write(tmp_path, [lines[0], lines[1], lines[0]])
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:3: idx 0 is already the sample of line 1"):
        list(load_trance(tmp_path))
    other = json.loads(lines[2])
    other["idx"] = 1  # a different sample under a used idx
    _write(tmp_path, [lines[0], lines[1], json.dumps(other)])
    with pytest.raises(TranceFormatError, match=r"data\.jsonl:3: idx 1 is already the sample of line 2"):
        list(load_trance(tmp_path))


def test_the_file_written_twice_is_refused(trance_dir, tmp_path):
    lines = _official_lines(trance_dir)
    _write(tmp_path, lines + lines)
    loaded = load_trance(tmp_path)
    assert len([next(loaded) for _ in lines]) == len(lines)  # streaming: the first copy is served
    where = rf"data\.jsonl:{len(lines) + 1}: idx 0 is already the sample of line 1"
    with pytest.raises(TranceFormatError, match=where):
        next(loaded)


def test_an_environment_and_the_trainer_scorer_read_samples_as_strictly_as_the_loader(trance_dir, tmp_path):
    """The environments' TRANCE source and the trainers' ground-truth reader apply the loader's rules too."""
    import gymnasium as gym

    from tvr_gym.integrations.scoring import problem_from_json

    lines = _official_lines(trance_dir)
    _write(tmp_path, lines + lines)
    with pytest.raises(TranceFormatError, match=rf"data\.jsonl:{len(lines) + 1}: idx 0 is already"):
        gym.make("TVR-Event-v0", source=str(tmp_path), renderer="numpy", render_size=(32, 24))
    with pytest.raises(ValueError, match="duplicate key 'idx'"):
        problem_from_json(lines[0].replace('{"idx":', '{"idx":7,"idx":', 1))
    with pytest.raises(ValueError, match="finite numbers only"):
        problem_from_json(lines[0].replace('"position":[-19,37]', '"position":[NaN,37]', 1))


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('{"idx":', '{"idx":7,"idx":', "idx"),  # top level: idx 7 would silently become the last one
        ('"color":', '"color":"red","color":', "color"),  # inside an object of a state
        ('"val":', '"val":"x","val":', "val"),  # inside a transformation
    ],
)
def test_a_repeated_json_key_is_refused(trance_dir, tmp_path, old, new, key):
    line = _official_lines(trance_dir)[1].replace(old, new, 1)
    (tmp_path / "data.jsonl").write_text(line + "\n")
    with pytest.raises(TranceFormatError, match=rf"data\.jsonl:1: duplicate key '{key}' in one JSON object"):
        list(load_trance(tmp_path))
