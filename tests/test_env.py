"""The TVR environments: Gymnasium API, determinism, scoring any input, sources, keywords and the render cache."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tvr_gym
from tvr_gym.core.answer import format_answer, parse_answer
from tvr_gym.core.prompt import PROMPT_CHARSET, PROMPT_MAX_LENGTH, build_prompt, initial_visible, interactive_prompt
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem, load_trance
from tvr_gym.core.transform import Transformation
from tvr_gym.envs.registration import ENV_IDS
from tvr_gym.envs.single_shot import ACTION_CHARSET, TVRGym
from tvr_gym.render.cache import load_image, shared_renderer

from props import examples, problems

SMALL = (64, 48)
IDS = list(ENV_IDS)


def make(env_id: str = "TVR-CrossView-v0", **kw) -> gym.Env:
    kw.setdefault("render_size", SMALL)
    return gym.make(env_id, **kw)


# ---------------------------------------------------------------------------- registration and API


def test_make_without_import_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "import gymnasium as gym; e = gym.make('tvr_gym:TVR-CrossView-v0', render_size=(32, 24)); "
        "print(e.unwrapped.setting)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "crossview"


def test_registered_ids_and_exports():
    assert set(IDS) == {"TVR-Basic-v0", "TVR-Event-v0", "TVR-CrossView-v0"}
    assert all(env_id in gym.registry for env_id in IDS)
    assert tvr_gym.TVRGym is TVRGym
    assert callable(tvr_gym.generate)


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_small(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's own advisory warnings
        check_env(make(env_id).unwrapped)


def test_check_env_default_size():
    env = gym.make("TVR-CrossView-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert obs["initial"].shape == (240, 320, 3) and obs["final"].dtype == np.uint8


@pytest.mark.parametrize("env_id,lo,hi,views", [
    ("TVR-Basic-v0", 1, 1, {"center"}),
    ("TVR-Event-v0", 1, 4, {"center"}),
    ("TVR-CrossView-v0", 1, 4, {"left", "center", "right"}),
])
def test_settings_serve_their_step_counts_and_views(env_id, lo, hi, views):
    env = make(env_id)
    seen_views, seen_steps = set(), set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        n = len(info["problem"]["transformations"])
        assert lo <= n <= hi
        seen_steps.add(n)
        seen_views.add(info["final_view"])
        assert env.observation_space.contains(obs)
    assert seen_views == views
    assert len(seen_steps) > 1 or lo == hi


def test_reset_and_step_info():
    env = make()
    obs, info = env.reset(seed=3)
    assert set(info) == {"truth", "problem", "final_view"}
    assert parse_answer(info["truth"]).well_formed
    obs2, reward, terminated, truncated, info2 = env.step(info["truth"])
    assert terminated is True and truncated is False
    assert {"reward_terms", "metrics", "parsed", "truth", "problem", "final_view"} <= set(info2)
    assert math.isclose(reward, sum(info2["reward_terms"].values()))
    assert info2["metrics"]["acc"] == 1.0
    json.dumps(info2)  # JSON-able throughout
    np.testing.assert_array_equal(obs2["final"], obs["final"])


def test_step_needs_reset():
    env = TVRGym(render_size=SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")
    env.reset(seed=0)
    env.step("x")
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")


def test_render_rgb_array_shows_both_images_over_a_caption_of_one_size():
    from tvr_gym.envs.frames import frame_layout, frame_size

    env = make(render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    frame = env.render()
    h, w = SMALL[1], SMALL[0]
    top = frame_layout(SMALL).panels_top
    assert frame.shape == (*frame_size(SMALL)[::-1], 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[top : top + h, :w], obs["initial"])
    np.testing.assert_array_equal(frame[top : top + h, -w:], obs["final"])
    env.step("<think></think><answer>1.color.red</answer>")
    answered = env.render()
    assert answered.shape == frame.shape
    np.testing.assert_array_equal(answered[: top + h], frame[: top + h])  # the same images and labels
    assert (answered[top + h :] != frame[top + h :]).any()  # the caption now tells the answer


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_episode_and_reward():
    a, b = make(cache_size=0), make(cache_size=0)
    for seed in (0, 7, 123456):
        (oa, ia), (ob, ib) = a.reset(seed=seed), b.reset(seed=seed)
        for key in ("initial", "final"):
            np.testing.assert_array_equal(oa[key], ob[key])
        assert oa["prompt"] == ob["prompt"] and ia == ib
        answer = "<think></think><answer>1.color.red, 2.position.front.1</answer>"
        assert a.step(answer)[1] == b.step(answer)[1]
    assert a.reset(seed=1)[1] != a.reset(seed=2)[1]


def test_unseeded_resets_follow_np_random():
    a, b = make(), make()
    a.reset(seed=5)
    b.reset(seed=5)
    assert [a.reset()[1]["truth"] for _ in range(4)] == [b.reset()[1]["truth"] for _ in range(4)]


# ---------------------------------------------------------------------------- scoring anything


@pytest.fixture(scope="module")
def scoring_envs():
    envs = {name: TVRGym(render_size=(32, 24), reward=name) for name in ("star", "state", "sparse")}
    for i, env in enumerate(envs.values()):
        env.reset(seed=11 + i)
    return envs


def _mutate(truth: str, data) -> str:
    """A near miss: one edit (delete, duplicate, swap or replace a character / item) of the truth."""
    kind = data.draw(st.sampled_from(["delete", "insert", "replace", "drop_item", "dup_item", "swap_tags"]))
    if kind in ("delete", "insert", "replace"):
        i = data.draw(st.integers(0, len(truth) - 1))
        ch = data.draw(st.sampled_from(list(ACTION_CHARSET) + ["é", "\x00", "\U0001f600"]))
        return {"delete": truth[:i] + truth[i + 1 :], "insert": truth[:i] + ch + truth[i:],
                "replace": truth[:i] + ch + truth[i + 1 :]}[kind]
    body = truth.split("<answer>")[1].split("</answer>")[0]
    items = [s for s in body.split(", ") if s]
    if kind == "drop_item" and items:
        items.pop(data.draw(st.integers(0, len(items) - 1)))
    elif kind == "dup_item" and items:
        items.append(items[0])
    elif kind == "swap_tags":
        return truth.replace("<think>", "<answer>", 1)
    return "<think></think><answer>" + ", ".join(items) + "</answer>"


def _check_finite(env: TVRGym, action) -> None:
    reward, info = env.score(action)
    assert isinstance(reward, float) and math.isfinite(reward)
    assert all(math.isfinite(v) for v in info["reward_terms"].values())
    json.dumps(info["parsed"])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_random_text_never_raises(scoring_envs, text):
    for env in scoring_envs.values():
        _check_finite(env, text)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_near_misses_never_raise(scoring_envs, data):
    for env in scoring_envs.values():
        _check_finite(env, _mutate(env.score("")[1]["truth"], data))


@pytest.mark.parametrize("action", [
    "", "x" * 3_000_000, "<answer>" + "1.color.red, " * 200_000 + "</answer>", b"\xff\xfe<answer>1.color.red",
    None, 42, ["1.color.red"], "\x00\ud800", "<think><think></answer><answer>",
])
def test_hostile_actions_get_a_defined_score(scoring_envs, action):
    for env in scoring_envs.values():
        _check_finite(env, action)
    env = make()
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(action)
    assert terminated and math.isfinite(reward)


def test_reward_selection_and_weights():
    truth_env = {name: make(reward=name) for name in ("star", "state", "sparse")}
    rewards = {}
    for name, env in truth_env.items():
        _, info = env.reset(seed=4)
        rewards[name] = env.step(info["truth"])[1]
    n = len(info["problem"]["transformations"])
    assert rewards == {"star": 1.0 + 5.0 * n, "state": 1.0 + 5.0 * n, "sparse": 1.0}
    env = make(reward="star", reward_weights={"full": 10.0, "format": 0.0})
    _, info = env.reset(seed=4)
    assert env.step(info["truth"])[1] == 10.0 * n
    from tvr_gym.core.reward import StarWeights

    env = make(reward="star", reward_weights=StarWeights(missing=0.0))
    env.reset(seed=4)
    assert env.step("<think></think><answer></answer>")[1] == 1.0


# ---------------------------------------------------------------------------- prompt


def test_prompt_content_and_charset():
    env = make(obs_mode="text")
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        prompt = obs["prompt"]
        assert set(prompt) <= set(PROMPT_CHARSET) and len(prompt) <= PROMPT_MAX_LENGTH
        for word in (*SPEC.values["color"], *SPEC.directions, "<answer>", "Initial objects", "Final objects"):
            assert word in prompt
        rows = [line for line in prompt.splitlines() if line[:2].rstrip(":").isdigit() and ": " in line]
        assert len(rows) == 2 * SPEC.n_objects
        initial = info["problem"]["states"][0]["objects"]
        for i, obj in enumerate(initial):
            x, y = obj["position"]
            hidden = abs(x) > SPEC.visible_limit or abs(y) > SPEC.visible_limit
            assert rows[i] == (
                f"{i}: {obj['color']} {obj['material']} {obj['shape']} {obj['size']} at {x} {y} "
                + ("hidden" if hidden else "visible")
            )
    assert "Final objects" not in make().reset(seed=0)[0]["prompt"]


@settings(max_examples=examples(60), deadline=None)
@given(problem=problems())
def test_initial_visible_reads_back_the_initial_tables_visibility_in_every_layout(problem):
    """Hidden in the final state but visible initially, or the other way round: the initial table decides."""
    visible = [i for i, o in enumerate(problem.initial.objects) if o.visible]
    shown = [build_prompt(problem, "image"), build_prompt(problem, "text"), build_prompt(problem, "text", "compact"),
             interactive_prompt(problem, "image"), interactive_prompt(problem, "text")]  # fmt: skip
    for prompt in shown:
        assert initial_visible(prompt) == visible
    assert initial_visible("") == [] and initial_visible("12: red at 0 0 visible") == []


def test_prompt_is_a_pure_function_of_the_problem(trance_problems, trance_dir):
    p = trance_problems[0]
    copy = Problem.from_dict(json.loads(json.dumps(p.to_dict())))  # equal content, nothing shared
    assert build_prompt(copy) == build_prompt(p)
    assert build_prompt(trance_problems[1]) != build_prompt(p)
    env = make("TVR-Event-v0", source=str(trance_dir))
    obs, _ = env.reset(seed=4)
    assert obs["prompt"] == build_prompt(env.unwrapped.problem)
    with pytest.raises(ValueError, match="valid: image, text"):
        build_prompt(p, "audio")


def _read_compact(prompt: str) -> tuple[list[dict], list[dict]]:
    """Both object tables back from a compact prompt (an independent reader of its documented rows)."""
    rows = prompt.splitlines()[1:]
    assert [int(r.split(":")[0]) for r in rows] == list(range(SPEC.n_objects))
    states: tuple[list[dict], list[dict]] = ([], [])
    for row in rows:
        words = [w for w in row.split(": ", 1)[1].split(" ") if w not in ("x", "y")]  # the two axis labels
        assert words[1::3] == [">"] * 7
        pairs = [words[k : k + 3 : 2] for k in range(0, len(words), 3)]
        assert len(pairs) == 7 and all(len(p) == 2 for p in pairs)  # 4 attributes, x, y, visibility
        for k, state in enumerate(states):
            color, material, shape, size, x, y, seen = (p[k] for p in pairs)
            state.append({"color": color, "material": material, "shape": shape, "size": size,
                          "position": [int(x), int(y)], "seen": seen})  # fmt: skip
    return states


@settings(max_examples=examples(40), deadline=None)
@given(problem=problems())
def test_the_compact_layout_shows_both_whole_states_and_nothing_more(problem):
    prompt = build_prompt(problem, "text", "compact")
    assert set(prompt) <= set(PROMPT_CHARSET)
    for state, shown in zip((problem.initial, problem.final), _read_compact(prompt)):
        for obj, row in zip(state.objects, shown):
            assert row["position"] == list(obj.position) and row["seen"] == ("visible" if obj.visible else "hidden")
            assert [row[a] for a in ("color", "material", "shape", "size")] == [
                obj.color, obj.material, obj.shape, obj.size]  # fmt: skip
    # nothing more: the prompt is a function of the two states alone, whatever the transformations were
    unrelated = Transformation(0, "color", "red", ("red",))  # a step that does not lead to the final state
    other = dataclasses.replace(problem, transformations=(unrelated,) * len(problem.transformations))
    assert build_prompt(other, "text", "compact") == prompt


def test_the_compact_layout_is_text_only_and_flows_from_the_env():
    env = make(obs_mode="text", prompt_layout="compact")
    obs, _ = env.reset(seed=3)
    assert obs["prompt"] == build_prompt(env.unwrapped.problem, "text", "compact")
    assert len(obs["prompt"]) < len(build_prompt(env.unwrapped.problem, "text")) * 0.6
    with pytest.raises(ValueError, match="prompt_layout: 'compact' .* needs obs_mode='text'"):
        make(prompt_layout="compact")
    with pytest.raises(ValueError, match="prompt_layout: unknown value 'grid'; valid: tables, compact"):
        make(obs_mode="text", prompt_layout="grid")


# ---------------------------------------------------------------------------- keywords


@pytest.mark.parametrize("kwargs,match", [
    ({"colour": "red"}, "valid: setting"),
    ({"setting": "hard"}, "valid: basic, event, crossview"),
    ({"reward": "dense"}, "valid: star, state, sparse"),
    ({"renderer": "vulkan"}, "valid: auto"),
    ({"obs_mode": "audio"}, "valid: image, text"),
    ({"render_mode": "human"}, "render_mode: unknown value .human.; valid: rgb_array"),
    ({"final_views": ("top",)}, "valid: center, left, right"),
    ({"steps": 5}, "1..4"),
    ({"steps": (0, 2)}, "1..4"),
    ({"max_visible": 11}, "1..10"),
    ({"render_size": (0, 10)}, "render_size"),
    ({"source": "/no/such/dir"}, "procedural"),
    ({"reward_weights": {"bonus": 1.0}}, "valid: format"),
    ({"reward": "sparse", "reward_weights": {"full": 1.0}}, "no weights"),
    ({"reward_weights": {"wrong": float("inf")}}, "wrong must be a finite number >= 0, got inf"),
    ({"reward_weights": {"full": float("nan")}}, "full must be a finite number >= 0, got nan"),
    ({"reward_weights": {"missing": "1.0"}}, "missing must be a finite number >= 0, got '1.0'"),
    ({"reward_weights": {"object": -0.5}}, "object must be a finite number >= 0, got -0.5"),
    ({"reward_weights": {"format": True}}, "format must be a finite number >= 0, got True"),
    ({"reward": "state", "reward_weights": {"illegal": -1}}, "illegal must be a finite number >= 0"),
    ({"reward": "no_object_tier", "reward_weights": {"wrong": float("-inf")}}, "wrong must be a finite"),
    ({"cache_size": -1}, "cache_size"),
    ({"attributes": ("colour",)}, "valid: color, material, position, shape, size"),
    ({"attributes": "color"}, "attributes"),
])
def test_bad_keywords_raise_value_error_listing_valid_values(kwargs, match):
    kwargs.setdefault("render_size", SMALL)
    with pytest.raises(ValueError, match=match):
        TVRGym(**kwargs)


def test_basic_and_event_are_centre_only():
    with pytest.raises(ValueError, match="valid: center"):
        make("TVR-Event-v0", final_views=("left",))
    env = make("TVR-CrossView-v0", final_views=("center",))
    assert {env.reset(seed=s)[1]["final_view"] for s in range(5)} == {"center"}


def test_steps_and_max_visible_are_applied():
    env = make("TVR-Event-v0", steps=3, max_visible=4)
    for seed in range(6):
        _, info = env.reset(seed=seed)
        assert len(info["problem"]["transformations"]) == 3
        visible = [o for o in info["problem"]["states"][0]["objects"]
                   if max(abs(o["position"][0]), abs(o["position"][1])) <= SPEC.visible_limit]
        assert 1 <= len(visible) <= 4


def test_attributes_restrict_the_changed_attributes(trance_dir):
    env = make("TVR-Event-v0", attributes=("color", "size"))
    for seed in range(6):
        _, info = env.reset(seed=seed)
        assert {t["attr"] for t in info["problem"]["transformations"]} <= {"color", "size"}
    served = make("TVR-Event-v0", source=str(trance_dir), attributes=("position",))
    assert 0 < len(served.unwrapped.source) < 100
    for seed in range(6):
        _, info = served.reset(seed=seed)
        assert {t["attr"] for t in info["problem"]["transformations"]} == {"position"}


def test_bad_reset_options():
    env = make()
    with pytest.raises(ValueError, match="valid: index"):
        env.reset(seed=0, options={"level": 2})


# ---------------------------------------------------------------------------- TRANCE directory source


def test_trance_source_serves_the_official_samples(trance_dir, trance_problems):
    size = tuple(SPEC.raw["camera"]["released_size"])
    env = make("TVR-CrossView-v0", source=str(trance_dir), render_size=size, final_views=("left", "center", "right"))
    official = {p.idx: p for p in trance_problems}
    served_from_files = 0
    for k in range(len(trance_problems)):
        obs, info = env.reset(seed=k, options={"index": k})
        expected = official[info["problem"]["idx"]].to_dict()
        assert {key: v for key, v in info["problem"].items() if key != "final_view"} == expected
        reward = env.step(info["truth"])[1]
        assert info["problem"]["final_view"] == info["final_view"]
        n = len(expected["transformations"])
        assert reward == 1.0 + 5.0 * n
        prob = official[info["problem"]["idx"]]
        init_file, fin_file = prob.image_path("initial", "center"), prob.image_path("final", info["final_view"])
        if init_file is not None and fin_file is not None:
            served_from_files += 1
            np.testing.assert_array_equal(obs["initial"], load_image(init_file, size))
            np.testing.assert_array_equal(obs["final"], load_image(fin_file, size))
    assert served_from_files == 4  # samples 0, 1, 5 and 10 have all their images


def test_trance_source_resizes_and_filters(trance_dir):
    env = make("TVR-Basic-v0", source=trance_dir)
    seen = set()
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        assert len(info["problem"]["transformations"]) == 1 and info["final_view"] == "center"
        assert obs["initial"].shape == (SMALL[1], SMALL[0], 3)
        seen.add(info["problem"]["idx"])
    assert len(seen) > 5
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": 25})  # 25 one-step samples: 0..24


def test_broken_trance_line_is_reported(trance_dir, tmp_path):
    lines = (trance_dir / "data.jsonl").read_text().splitlines()
    (tmp_path / "data.jsonl").write_text("\n".join([lines[0], "{broken"]) + "\n")
    with pytest.raises(ValueError, match=r"data\.jsonl:2"):
        make(source=tmp_path)


# ---------------------------------------------------------------------------- cache, pickling, vector envs


def _count_renders(monkeypatch, size):
    renderer = shared_renderer("auto", size)
    calls = []
    original = renderer.render

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(renderer, "render", counting)
    return calls


def test_same_seed_twice_renders_once(monkeypatch):
    size = (48, 36)
    calls = _count_renders(monkeypatch, size)
    env = make(render_size=size, cache_size=8)
    first, _ = env.reset(seed=99)
    assert len(calls) == 2  # initial and final
    again, _ = env.reset(seed=99)
    assert len(calls) == 2
    np.testing.assert_array_equal(first["final"], again["final"])
    copies = [make(render_size=size) for _ in range(4)]  # G copies on the shared LRU
    for copy in copies:
        copy.reset(seed=100)
    assert len(calls) == 4
    first["final"][:] = 0  # handed-out arrays are copies: the cache is unharmed
    assert env.reset(seed=99)[0]["final"].any()


def test_disk_cache_is_reused_and_atomic(monkeypatch, tmp_path):
    size = (40, 30)
    calls = _count_renders(monkeypatch, size)
    a = make(render_size=size, cache_dir=tmp_path, cache_size=0)
    obs_a, _ = a.reset(seed=5)
    assert len(calls) == 2
    b = make(render_size=size, cache_dir=tmp_path, cache_size=0)
    obs_b, _ = b.reset(seed=5)
    assert len(calls) == 2
    np.testing.assert_array_equal(obs_a["initial"], obs_b["initial"])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2 and all(p.suffix == ".img" and not p.name.startswith(".tmp") for p in files)
    files[0].write_bytes(b"damaged")  # a damaged entry is rendered again, never served
    c = make(render_size=size, cache_dir=tmp_path, cache_size=0)
    with pytest.warns(RuntimeWarning, match="unreadable entry"):
        obs_c, _ = c.reset(seed=5)
    assert len(calls) == 3
    np.testing.assert_array_equal(obs_a["final"], obs_c["final"])


def _npz_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(3))
    return buf.getvalue()


def _entries(directory):
    return sorted(p for p in directory.rglob("*.img"))


def encode_entry(image):
    from tvr_gym.render.store import encode_entry

    return encode_entry(image)


def _flip_pixels(path):
    """Flip bytes well after the entry's headers: the array still loads, with wrong pixels."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 2000, len(data) - 1000):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _folder_in_place(path):
    path.unlink()
    (path / "inside").mkdir(parents=True)


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b""),  # 0 bytes: np.load raises EOFError
        lambda path: path.write_bytes(encode_entry(np.zeros((5, 7, 3), np.uint8))),  # an intact entry, wrong shape
        lambda path: path.write_bytes(encode_entry(np.zeros((30, 40, 3), np.float32))),  # ... of the wrong dtype
        lambda path: path.write_bytes(encode_entry(np.zeros((30, 40, 3), np.uint8))[40:]),  # a bare .npy array
        lambda path: path.write_bytes(_npz_bytes()),  # an .npz archive, not an array
        _flip_pixels,  # intact headers, damaged pixels: caught by the checksum
        _folder_in_place,  # a folder where the entry belongs: removed, the entry written again
    ],
)
def test_a_damaged_cache_entry_is_rendered_again_with_one_warning(monkeypatch, tmp_path, damage):
    size = (40, 30)
    calls = _count_renders(monkeypatch, size)
    obs, _ = make(render_size=size, cache_dir=tmp_path, cache_size=0).reset(seed=5)
    for path in _entries(tmp_path):
        damage(path)
    env = make(render_size=size, cache_dir=tmp_path, cache_size=0)
    with pytest.warns(RuntimeWarning, match="render cache") as caught:
        again, _ = env.reset(seed=5)
    assert len([w for w in caught if "render cache" in str(w.message)]) == 1
    assert len(calls) == 4
    np.testing.assert_array_equal(obs["initial"], again["initial"])
    np.testing.assert_array_equal(obs["final"], again["final"])
    from tvr_gym.render.store import decode_entry

    repaired = [decode_entry(p.read_bytes()) for p in _entries(tmp_path)]
    assert len(repaired) == 2 and all(image.shape == (30, 40, 3) for image in repaired)


def test_an_unwritable_cache_directory_warns_once_and_renders(monkeypatch, tmp_path):
    import errno

    import tvr_gym.render.store

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tvr_gym.render.store, "atomic_open", full_disk)
    env = make(render_size=(40, 30), cache_dir=tmp_path, cache_size=0)
    with pytest.warns(RuntimeWarning, match="cannot write") as caught:
        first, _ = env.reset(seed=5)
        env.reset(seed=6)
    assert len(caught) == 1
    assert first["final"].any()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="cannot create"):
        env = make(render_size=(40, 30), cache_dir=blocked / "cache", cache_size=0)
    np.testing.assert_array_equal(env.reset(seed=5)[0]["final"], first["final"])


def test_the_render_cache_tells_rotations_apart():
    from tvr_gym.core.scene import SceneObject, State
    from tvr_gym.render.cache import RenderCache, render_view

    def scene(rotation: float) -> State:
        cube = SceneObject("red", "rubber", "cube", "large", (0, 0), rotation)
        parked = [SceneObject("gray", "rubber", "cube", "small", (40, 40 - 10 * k)) for k in range(9)]
        return State((cube, *parked))

    cache = RenderCache(tvr_gym.render.cache.LRU(8))
    square = render_view(scene(0.0), "center", 0, "numpy", (64, 48), cache)
    turned = render_view(scene(30.0), "center", 0, "numpy", (64, 48), cache)
    assert cache.misses == 2
    assert np.abs(square.astype(int) - turned.astype(int)).sum() > 0


@pytest.mark.parametrize("env_id", ["TVR-Basic-v0", "TVR-Interactive-v0"])
def test_close_lets_go_of_the_shared_renderer_and_the_last_one_closes_it(env_id):
    """One rule for both kinds: open environments share a renderer; the last to close closes it; the GL
    context stays (a fork after a close must still render); release_renderers frees the context."""
    pytest.importorskip("moderngl")
    from tvr_gym.render import gl_available, pool

    if not gl_available():
        pytest.skip("gl renderer needs an EGL context (Mesa: libegl1 libegl-mesa0 libgl1-mesa-dri)")
    import tvr_gym.render.gl as gl

    size = (36, 20)  # a size no other test uses, so the pool's count here is this test's alone
    first, second = (gym.make(env_id, renderer="gl", render_size=size).unwrapped for _ in range(2))
    assert pool.holders("gl", size) == 2
    first.reset(seed=1)
    second.reset(seed=2)
    renderer = pool.shared_renderer("gl", size)
    first.close()
    first.close()  # a second close does nothing
    assert pool.holders("gl", size) == 1 and pool.is_open("gl", size) and not renderer.closed
    second.reset(seed=3)  # the other environment still draws with it
    second.close()
    assert pool.holders("gl", size) == 0 and not pool.is_open("gl", size) and renderer.closed
    assert gl._SHARED is not None  # the context stays for later renderers and forked workers
    third = gym.make(env_id, renderer="gl", render_size=size).unwrapped
    obs, _ = third.reset(seed=1)
    assert obs[next(iter(obs))].shape == (20, 36, 3) and obs[next(iter(obs))].any()
    pool.release_renderers()
    assert gl._SHARED is None and not pool.is_open("gl", size)
    obs, _ = third.reset(seed=1)  # a new context on demand
    assert obs[next(iter(obs))].any()
    third.close()


def test_env_pickles():
    env = TVRGym(render_size=SMALL, reward="star", reward_weights={"wrong": 2.0})
    env.reset(seed=8)
    clone = pickle.loads(pickle.dumps(env))
    o1, i1 = env.reset(seed=9)
    o2, i2 = clone.reset(seed=9)
    np.testing.assert_array_equal(o1["final"], o2["final"])
    assert env.step("1.color.red")[1] == clone.step("1.color.red")[1]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode):
    # async workers are spawned: a worker forked from a process whose gl context was released hangs in Mesa
    # (docs/environments.md, "Vector environments")
    vector_kwargs = {"context": "spawn"} if mode == "async" else {}
    envs = gym.make_vec(
        "TVR-Event-v0", num_envs=2, vectorization_mode=mode, render_size=(32, 24), vector_kwargs=vector_kwargs
    )
    try:
        obs, infos = envs.reset(seed=[1, 2])
        assert obs["initial"].shape == (2, 24, 32, 3) and len(obs["prompt"]) == 2
        truths = list(infos["truth"])
        obs, rewards, terminated, truncated, infos = envs.step(truths)
        assert terminated.all() and not truncated.any()
        assert all(r >= 6.0 for r in rewards)  # format 1 + 5 per true step
        single = make("TVR-Event-v0", render_size=(32, 24))
        assert truths[0] == single.reset(seed=1)[1]["truth"]
        obs, rewards, *_ = envs.step(["", ""])  # autoreset step
        obs, rewards, *_ = envs.step(["", ""])
        assert all(r < 0 for r in rewards)
    finally:
        envs.close()


def test_export_round_trip_preserves_observations(tmp_path):
    """Episodes written as a TRANCE directory are served back with the same images and truth."""
    from tvr_gym.apps.cli import main

    assert main(["export", "--format", "trance", "--env", "TVR-CrossView-v0", "--n", "3", "--seed", "4",
                 "--size", "48", "36", "--out", str(tmp_path), "--quiet"]) == 0  # fmt: skip
    assert len(list(load_trance(tmp_path))) == 3
    live = make(render_size=(48, 36))
    served = make(render_size=(48, 36), source=tmp_path)
    for i in range(3):
        obs, info = live.reset(seed=4, options={"index": i})
        obs2, info2 = served.reset(options={"index": i})
        assert info2["truth"] == info["truth"] and info2["final_view"] == info["final_view"]
        np.testing.assert_array_equal(obs2["final"], obs["final"])
        assert obs2["prompt"] == obs["prompt"]
    assert format_answer([]) == "<think></think><answer></answer>"


@pytest.mark.parametrize("reward", ["star", "state", "sparse"])
def test_a_step_parses_once_and_simulates_at_most_once(reward, monkeypatch):
    """One scorer: the reward and the metrics of an answer share its parse and its one simulation."""
    import tvr_gym.core.answer
    import tvr_gym.core.metrics

    counts = {"parse": 0, "simulate": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(tvr_gym.core.metrics, "parse_answer", counting("parse", tvr_gym.core.metrics.parse_answer))
    monkeypatch.setattr(tvr_gym.core.metrics, "simulate", counting("simulate", tvr_gym.core.metrics.simulate))
    env = gym.make("TVR-Event-v0", render_size=(32, 24), renderer="numpy", reward=reward)
    for seed in range(6):
        env.reset(seed=seed)
        truth = env.unwrapped.problem.transformations
        before = dict(counts)
        _, total, _, _, info = env.step(format_answer([*reversed(truth), (3, "size", "large")]))
        assert counts["parse"] - before["parse"] == 1
        assert counts["simulate"] - before["simulate"] == 1
        assert info["metrics"]["n_pred"] == len(truth) + 1 and math.isfinite(total)
    assert tvr_gym.core.answer.parse_answer is not tvr_gym.core.metrics.parse_answer
