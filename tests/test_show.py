"""show_problem: a PNG with both images, the steps in words and the answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from tvr_gym.apps.show import describe_step, show_problem
from tvr_gym.core.transform import Transformation
from tvr_gym.render import make_renderer

SIZE = (64, 48)


def _find(canvas: np.ndarray, patch: np.ndarray) -> bool:
    """True when ``patch`` appears pixel-exactly somewhere in ``canvas``."""
    ph, pw = patch.shape[:2]
    ys, xs = np.nonzero((canvas[: canvas.shape[0] - ph + 1, : canvas.shape[1] - pw + 1] == patch[0, 0]).all(-1))
    return any(np.array_equal(canvas[y : y + ph, x : x + pw], patch) for y, x in zip(ys, xs))


@pytest.fixture(scope="module")
def numpy_renderer():
    return make_renderer("numpy", SIZE)


def test_official_images_are_used_and_png_is_valid(trance_problems, trance_dir, tmp_path):
    """The picture holds exactly the pixels the environment observes (the same resizing)."""
    import gymnasium as gym

    prob = next(p for p in trance_problems if p.idx == 0)
    out = show_problem(prob, tmp_path / "sub" / "p0.png", size=SIZE)
    assert out == tmp_path / "sub" / "p0.png"
    with Image.open(out) as img:
        assert img.format == "PNG"
        canvas = np.asarray(img.convert("RGB"))
    height, width = canvas.shape[:2]
    assert width >= 2 * SIZE[0] and height >= SIZE[1] + 5 * 14
    env = gym.make("tvr_gym:TVR-Event-v0", source=str(trance_dir), render_size=SIZE, final_views=("center",))
    obs, info = env.reset(seed=0, options={"index": 0})
    assert info["problem"]["idx"] == 0
    assert _find(canvas, obs["initial"]) and _find(canvas, obs["final"])
    assert not list(tmp_path.glob("sub/.show-*")), "temporary file left behind"


def test_rendered_when_no_images_and_answer_changes_picture(trance_problems, tmp_path, numpy_renderer):
    prob = dataclasses.replace(trance_problems[3], root=None, final_view="right")
    plain = show_problem(prob, tmp_path / "a.png", renderer="numpy", size=SIZE)
    with_answer = show_problem(prob, tmp_path / "b.png", renderer="numpy", size=SIZE, answer="0.color.red")
    a, b = np.asarray(Image.open(plain).convert("RGB")), np.asarray(Image.open(with_answer).convert("RGB"))
    assert a.shape != b.shape or not np.array_equal(a, b)
    assert b.shape[0] > a.shape[0]  # one more text line
    # the rendered final image comes from the problem's final view
    from tvr_gym.render import camera_rig, lamp_rig

    final = numpy_renderer.render(prob.final, camera_rig("right"), lamp_rig(None))
    assert _find(a, final)


def test_render_seed_jitters_camera(trance_problems, tmp_path, numpy_renderer):
    base = dataclasses.replace(trance_problems[3], root=None)
    seeded = dataclasses.replace(base, render_seed=11)
    a = np.asarray(Image.open(show_problem(base, tmp_path / "a.png", renderer="numpy", size=SIZE)))
    b = np.asarray(Image.open(show_problem(seeded, tmp_path / "b.png", renderer="numpy", size=SIZE)))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_title_changes_picture(trance_problems, tmp_path):
    prob = next(p for p in trance_problems if p.idx == 5)
    a = np.asarray(Image.open(show_problem(prob, tmp_path / "a.png", size=SIZE)))
    b = np.asarray(Image.open(show_problem(prob, tmp_path / "b.png", size=SIZE, title="something else")))
    assert not np.array_equal(a, b)


def test_describe_step(trance_problems):
    prob = next(p for p in trance_problems if p.idx == 0)
    state = prob.initial
    color = Transformation(2, "color", "cyan")
    assert describe_step(color, state) == "object 2 (small yellow glass cube): color -> cyan"
    move = Transformation(2, "position", ("front-left", 1), type="inner")
    assert describe_step(move, state) == "object 2 (small yellow glass cube): move front-left 1 (inner)"


def test_bad_input(tmp_path, trance_problems):
    with pytest.raises(ValueError, match="problem"):
        show_problem({"idx": 0}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="size"):
        show_problem(trance_problems[0], tmp_path / "x.png", size=(0, 0))
    assert not (tmp_path / "x.png").exists()
