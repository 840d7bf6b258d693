"""Episode frames (``render()``), ``tvr-gym record`` and gymnasium's ``RecordVideo`` on the TVR environments."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageSequence

import tvr_gym  # noqa: F401  (registers the environment ids)
from tvr_gym.agents import make_agent
from tvr_gym.agents.evaluate import evaluate
from tvr_gym.apps import record as recorder
from tvr_gym.apps.record import DEFAULT_FPS, LAST_HOLD, record
from tvr_gym.envs.frames import ELLIPSIS, ROWS, Caption, caption_layout, fit_lines, frame_layout, frame_size
from tvr_gym.envs.registration import INTERACTIVE_ID

SMALL = (64, 48)
NATIVE = (320, 240)
SCRIPT = "<script>alert('x')</script>"
HOSTILE = [
    "x" * 2000,
    "<think>" + "word " * 400 + "</think><answer>2.color.cyan, 4.position.front-left.1</answer>",
    "étoile 星 🚀 ʕ•ᴥ•ʔ \u200b\u202e tail",
    SCRIPT * 20,
    "line\nbreaks\tand\x00nul \ud800",
    "",
]
"""Actions a frame must show without crashing or overflowing."""


def make(env_id: str, **kw) -> gym.Env:
    kw.setdefault("render_size", SMALL)
    return gym.make(env_id, **kw)


def gif_frames(path: Path) -> list[Image.Image]:
    with Image.open(path) as im:
        return [frame.copy() for frame in ImageSequence.Iterator(im)]


# ---------------------------------------------------------------------------- frames


@pytest.mark.parametrize("env_id", ["TVR-CrossView-v0", INTERACTIVE_ID])
def test_every_frame_of_every_episode_has_the_one_size(env_id):
    env = make(env_id, render_mode="rgb_array_list")
    expected = (*frame_size(SMALL)[::-1], 3)
    shapes = set()
    for seed in range(3):
        env.reset(seed=seed)
        for action in [*HOSTILE[:3], "done"] if env_id == INTERACTIVE_ID else [HOSTILE[seed]]:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        frames = env.render()
        assert len(frames) >= 2  # the reset frame and one per step
        shapes |= {f.shape for f in frames}
        assert env.render() == []  # render() hands the frames over once
    assert shapes == {expected}
    env.close()


def test_rgb_array_list_starts_over_at_each_reset():
    env = make(INTERACTIVE_ID, render_mode="rgb_array_list")
    env.reset(seed=0)
    env.step("1.color.red")
    env.reset(seed=1)
    env.step("done")
    assert len(env.render()) == 2  # the second episode's reset and its one step


@pytest.mark.parametrize("size", [(16, 12), SMALL, (100, 75), NATIVE, (641, 481)])
@pytest.mark.parametrize("action", HOSTILE)
def test_every_line_fits_the_frame_and_a_long_one_is_ellipsized(size, action):
    caption = Caption(
        action=action, feedback=action, reward=-1234.5, episode_return=99.25, detail="turn 3 of 8",
        truth="2.color.cyan, 4.position.front-left.1, 7.size.large, 9.material.metal", metrics=action,
    )  # fmt: skip
    layout = frame_layout(size)
    width, height = layout.size
    placed = caption_layout(caption, ("initial (center camera)", "final (right camera)"), size)
    for line in placed:
        assert line.x >= 0 and line.x + line.width <= width - layout.margin, (size, line)
        assert line.y >= 0 and line.y + layout.line_height <= height, (size, line)
        assert "\n" not in line.text and "\x00" not in line.text
    if size == NATIVE and len(action) > 500:
        first_row = range(layout.strip_top, layout.strip_top + layout.margin + 2 * layout.line_height)
        action_lines = [p.text for p in placed if p.y in first_row and p.x > layout.margin]
        shown = " ".join(action_lines)
        assert ELLIPSIS in shown and len(shown) < len(action)
        assert shown.endswith(" ".join(action.split())[-8:])  # the end of an answer, where its <answer> is, stays


def test_the_caption_shows_each_row_whole_when_it_fits():
    truth = "2.color.cyan, 4.position.front-left.1, 7.size.large, 9.material.metal"
    caption = Caption(action="2.color.cyan", feedback="applied 2.color.cyan. Turn 1 of 8.", reward=1.5,
                      episode_return=0.25, truth=truth, metrics="Acc 1 · LAcc 1 · AD 0 · AND 0")  # fmt: skip
    texts = [p.text for p in caption_layout(caption, ("target", "current"), NATIVE)]
    assert [row.label for row in ROWS] == [t for t in texts if t in {row.label for row in ROWS}]
    for whole in ("target", "current", "2.color.cyan", "applied 2.color.cyan. Turn 1 of 8.", "+1.50 · return +0.25",
                  truth, "Acc 1 · LAcc 1 · AD 0 · AND 0"):  # fmt: skip
        assert whole in texts
    assert not any(ELLIPSIS in t for t in texts)


def test_fit_lines_keeps_within_its_lines_and_width():
    layout = frame_layout(NATIVE)
    for text in HOSTILE:
        for most in (1, 2, 3):
            for keep_tail in (False, True):
                lines = fit_lines(text, layout.font, 200, most, keep_tail)
                assert len(lines) <= most and all(layout.font.getlength(line) <= 200 for line in lines)
    assert fit_lines("short", layout.font, 200, 1) == ["short"]
    assert fit_lines("word " * 100, layout.font, 1, 2) == []  # too narrow even for the ellipsis: nothing drawn


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=600), width=st.integers(0, 700), most=st.integers(0, 3), keep_tail=st.booleans())
def test_any_text_fits_or_is_left_out(text, width, most, keep_tail):
    font = frame_layout(NATIVE).font
    lines = fit_lines(text, font, width, most, keep_tail)
    assert len(lines) <= most and all(font.getlength(line) <= width for line in lines)
    if lines and ELLIPSIS not in "".join(lines):  # whole: every word of the text is shown
        assert "".join(lines).replace(" ", "") == "".join(c if c.isprintable() else "?" for c in "".join(text.split()))


def test_the_panels_are_labelled_and_the_truth_shows_only_at_the_end():
    single = make("TVR-CrossView-v0", render_mode="rgb_array").unwrapped
    single.reset(seed=2)
    labels = single._panel_labels()
    assert labels[0].startswith("initial") and labels[1].startswith("final")
    assert single.problem.final_view in labels[1] or single.problem.final_view is None
    assert single.caption.truth == "" and single.caption.action is None
    single.step(SCRIPT)
    assert single.caption.action == SCRIPT and single.caption.truth and "Acc" in single.caption.metrics
    assert single.caption.feedback.startswith("read 0 steps; ")

    env = make(INTERACTIVE_ID, render_mode="rgb_array").unwrapped
    env.reset(seed=2)
    assert env._panel_labels()[0].startswith("target") and env._panel_labels()[1].startswith("current")
    assert env.caption.detail == f"turn 0 of {env.turn_limit}"
    first = env.step("1.color.red")[1]
    assert env.caption.action == "1.color.red" and env.caption.feedback.endswith(f"Turn 1 of {env.turn_limit}.")
    assert env.caption.truth == "" and env.caption.metrics == ""  # not before the episode ends
    last = env.step("done")[1]
    assert env.caption.truth and "Success" in env.caption.metrics
    assert math.isclose(env.caption.reward, last) and math.isclose(env.caption.episode_return, first + last)


def test_a_frame_is_the_images_and_a_caption_that_changes_with_each_step():
    env = make(INTERACTIVE_ID, render_mode="rgb_array")
    obs, _ = env.reset(seed=4)
    first = env.render()
    top, (w, h) = frame_layout(SMALL).panels_top, SMALL
    np.testing.assert_array_equal(first[top : top + h, :w], obs["target"])
    np.testing.assert_array_equal(first[top : top + h, -w:], obs["current"])
    env.step(12345)  # not a text: read, shown as its repr, never an error
    second = env.render()
    assert second.shape == first.shape and (second[top + h :] != first[top + h :]).any()


# ---------------------------------------------------------------------------- record


def test_a_single_shot_gif_has_the_reset_frame_and_the_answer(tmp_path):
    paths = record("oracle", "TVR-CrossView-v0", 2, tmp_path / "out", seed=5, formats=("gif",),
                   env_kwargs={"render_size": SMALL})  # fmt: skip
    assert paths == [tmp_path / "out" / "episode-00000.gif", tmp_path / "out" / "episode-00001.gif"]
    for path in paths:
        frames = gif_frames(path)
        assert len(frames) == 2 and {f.size for f in frames} == {frame_size(SMALL)}
        with Image.open(path) as im:
            durations = [f.info["duration"] for f in ImageSequence.Iterator(im)]
        assert durations == [round(1000 / DEFAULT_FPS), round(1000 / DEFAULT_FPS) * LAST_HOLD]


@pytest.mark.parametrize("agent", ["greedy", "random"])
def test_an_interactive_gif_has_one_frame_more_than_turns_and_plays_evals_episodes(tmp_path, agent):
    kwargs = {"render_size": SMALL, "setting": "event"}
    paths = record(agent, INTERACTIVE_ID, 2, tmp_path / "out", seed=3, formats=("gif",), env_kwargs=kwargs)
    result = evaluate(make_agent(agent, seed=3, env_id=INTERACTIVE_ID), INTERACTIVE_ID, 2, seed=3,
                      env_kwargs=kwargs, progress=False)  # fmt: skip
    for path, episode in zip(paths, result.records, strict=True):
        frames = gif_frames(path)
        assert len(frames) == episode["interactive"]["turns"] + 1
        assert {f.size for f in frames} == {frame_size(SMALL)}


def test_mp4s_are_written_where_an_encoder_is_installed(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is not installed (pip install imageio-ffmpeg)")
    import imageio.v2 as imageio

    paths = record("greedy", INTERACTIVE_ID, 1, tmp_path, env_kwargs={"render_size": SMALL, "setting": "basic"})
    assert [p.name for p in paths] == ["episode-00000.gif", "episode-00000.mp4"]
    with imageio.get_reader(paths[1]) as reader:
        first = reader.get_data(0)
    assert first.shape == (*frame_size(SMALL)[::-1], 3)


def test_without_an_encoder_only_gifs_are_written_and_it_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recorder, "mp4_available", lambda: False)
    paths = record("random", "TVR-Basic-v0", 2, tmp_path, env_kwargs={"render_size": SMALL})
    assert [p.suffix for p in paths] == [".gif", ".gif"]
    assert capsys.readouterr().err.count("no MP4 encoder") == 1
    with pytest.raises(ValueError, match="no MP4 encoder"):  # nothing it could write: refused before any work
        record("random", "TVR-Basic-v0", 1, tmp_path / "mp4", formats=("mp4",))
    assert not (tmp_path / "mp4").exists()


def test_bad_arguments_to_record_fail_before_anything_is_made(tmp_path):
    out = tmp_path / "out"
    for kwargs, match in [
        ({"episodes": 0}, "episodes"), ({"fps": 0}, "fps"), ({"fps": float("nan")}, "fps"), ({"seed": -1}, "seed"),
        ({"formats": ("gif", "avi")}, "formats"), ({"env_kwargs": {"render_mode": "rgb_array"}}, "render_mode"),
        ({"env_kwargs": {"bogus": 1}}, "bogus"), ({"env_id": "Nope-v0"}, "Nope"), ({"agent_spec": "bogus"}, "bogus"),
        ({"agent_spec": "greedy"}, "greedy"), ({"agent_spec": "visible", "env_id": INTERACTIVE_ID}, "single-shot"),
    ]:  # fmt: skip
        args = {"agent_spec": "random", "env_id": "TVR-Basic-v0", "episodes": 1, "out": out, **kwargs}
        with pytest.raises(ValueError, match=match):
            record(**args)
        assert not out.exists()


# ---------------------------------------------------------------------------- command line


@pytest.fixture
def tvr_gym_main():
    """``tvr-gym``'s ``main``, in this process."""
    from tvr_gym.apps import cli

    return cli.main


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--episodes", "0"], "--episodes"),
        (["--fps", "0"], "--fps"),
        (["--fps", "nan"], "--fps"),
        (["--seed", "-1"], "--seed"),
        (["--env", "Nope-v0"], "Nope-v0"),
        (["--agent", "bogus"], "bogus"),
        (["--agent", "greedy"], "greedy"),
        (["--size", "0", "0"], "render_size"),
        (["--max-images", "1"], "--max-images"),
        (["--setting", "basic"], "--setting"),
    ],
)
def test_the_command_refuses_bad_arguments_with_one_line_and_creates_nothing(tvr_gym_main, tmp_path, capsys, flags,
                                                                              match):  # fmt: skip
    out = tmp_path / "out"
    assert tvr_gym_main(["record", "--out", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tvr-gym record: error:") and match in err and "\n" not in err
    assert not out.exists()


def test_the_command_refuses_an_out_it_cannot_write_and_unknown_formats(tvr_gym_main, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert tvr_gym_main(["record", "--out", str(blocker / "out"), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        tvr_gym_main(["record", "--out", str(tmp_path / "out"), "--formats", "avi"])
    assert exc.value.code == 2 and not (tmp_path / "out").exists()


def test_the_command_writes_the_episodes(tvr_gym_main, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["record", "--agent", "oracle", "--env", "TVR-Event-v0", "--episodes", "2", "--out", str(out),
            "--size", "64", "48", "--formats", "gif", "--quiet"]  # fmt: skip
    assert tvr_gym_main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["episode-00000.gif", "episode-00001.gif"]
    assert f"wrote 2 episodes (GIF) to {out}" in capsys.readouterr().out


# ---------------------------------------------------------------------------- gymnasium's RecordVideo


@pytest.mark.parametrize("env_id", ["TVR-Event-v0", INTERACTIVE_ID])
def test_gymnasiums_record_video_works_unchanged(tmp_path, env_id):
    pytest.importorskip("moviepy", reason="RecordVideo needs moviepy (pip install moviepy)")
    import imageio.v2 as imageio
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(make(env_id, render_mode="rgb_array"), str(tmp_path / "videos"), episode_trigger=lambda e: True,
                      disable_logger=True)  # fmt: skip
    steps = []
    for seed in range(2):
        env.reset(seed=seed)
        for k, action in enumerate(["1.color.red", "2.size.small", "done"]):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                steps.append(k + 1)
                break
    env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    for video, n in zip(videos, steps, strict=True):
        with imageio.get_reader(video) as reader:
            frames = list(reader.iter_data())  # list(reader) sizes a list by the length ffmpeg reports: inf
        assert len(frames) == n + 1  # render_fps 1: one video frame per env frame
        assert {f.shape for f in frames} == {(*frame_size(SMALL)[::-1], 3)}
