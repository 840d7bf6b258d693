"""Renderers: interface, masks, gl/numpy agreement, and conformance with the official TRANCE images."""

from __future__ import annotations

import colorsys
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.spec import SPEC
from tvr_gym.render import RENDERERS, Renderer, camera_rig, lamp_rig, make_renderer, object_center

from props import examples

SIZE = (320, 240)
OFFICIAL_SAMPLES = (0, 1, 5, 10)
SHOTS = (("initial", "center"), ("final", "left"), ("final", "center"), ("final", "right"))


@pytest.fixture(scope="module")
def numpy_renderer() -> Renderer:
    return make_renderer("numpy", SIZE)


@pytest.fixture(scope="module")
def gl_renderer() -> Renderer:
    try:
        return make_renderer("gl", SIZE)
    except RuntimeError as exc:
        pytest.skip(f"gl renderer needs an EGL context (Mesa: libegl1 libegl-mesa0 libgl1-mesa-dri): {exc}")


@pytest.fixture(params=["numpy", "gl"])
def renderer(request) -> Renderer:
    return request.getfixturevalue(f"{request.param}_renderer")


def _state(objs: list[SceneObject]) -> State:
    """Pad with objects far outside the visible square (they must never be drawn)."""
    filler = [SceneObject("red", "rubber", "cube", "small", (40, -40 + 8 * k)) for k in range(10)]
    return State(tuple(objs + filler[: 10 - len(objs)]))


def _fixture_views(problems, n=12):
    for prob in problems[:n]:
        for phase, view in SHOTS:
            yield prob, (prob.initial if phase == "initial" else prob.final), view


# -- interface and bad input --------------------------------------------------------------------


def test_unknown_renderer_name_lists_valid_ones():
    with pytest.raises(ValueError, match="renderer") as err:
        make_renderer("vulkan")
    for name in RENDERERS:
        assert name in str(err.value)


@pytest.mark.parametrize("size", [(0, 240), (320, -1), (320,), "320x240", (320.0, 240), (True, 2), (10**6, 10)])
def test_bad_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="size"):
        make_renderer("numpy", size)


def test_bad_state_camera_and_lamps(renderer, trance_problems):
    cam = camera_rig("center")
    state = trance_problems[0].initial
    with pytest.raises(ValueError, match="state"):
        renderer.render(state.to_dicts(), cam)
    with pytest.raises(ValueError, match="state"):
        renderer.render_mask(None, cam)
    with pytest.raises(ValueError, match="camera"):
        renderer.render(state, "center")
    with pytest.raises(ValueError, match="lamps"):
        renderer.render(state, cam, lamps=["key"])


def test_auto_falls_back_to_numpy_with_one_warning(monkeypatch):
    import tvr_gym.render as render_pkg
    import tvr_gym.render.gl as gl_mod

    def broken(size=SIZE):
        raise RuntimeError("no EGL here")

    monkeypatch.setattr(gl_mod, "GLRenderer", broken)
    monkeypatch.setattr(render_pkg, "_warned_fallback", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = make_renderer("auto", (64, 48))
        second = make_renderer("auto", (64, 48))
    assert first.name == second.name == "numpy"
    assert len([w for w in caught if "numpy" in str(w.message)]) == 1


def test_auto_prefers_gl(gl_renderer):
    assert make_renderer("auto", (64, 48)).name == "gl"


def test_gl_renderers_share_one_context(gl_renderer):
    other = make_renderer("gl", (64, 48))
    assert other._gl is gl_renderer._gl
    assert other.render(_state([]), camera_rig("center")).shape == (48, 64, 3)


# -- images and masks ---------------------------------------------------------------------------


def test_image_shape_dtype_and_determinism(renderer, trance_problems):
    state, cam, lamps = trance_problems[5].initial, camera_rig("left", 7), lamp_rig(7)
    first = renderer.render(state, cam, lamps)
    assert first.dtype == np.uint8 and first.shape == (SIZE[1], SIZE[0], 3)
    assert np.array_equal(first, renderer.render(state, cam, lamps))
    mask = renderer.render_mask(state, cam)
    assert np.issubdtype(mask.dtype, np.integer) and mask.shape == (SIZE[1], SIZE[0])
    assert np.array_equal(mask, renderer.render_mask(state, cam))
    # lamp jitter changes the light, not the geometry
    assert not np.array_equal(first, renderer.render(state, cam, lamp_rig(8)))


def test_non_square_size(renderer):
    r = make_renderer(renderer.name, (97, 31))
    state = _state([SceneObject("blue", "metal", "sphere", "large", (0, 0))])
    assert r.render(state, camera_rig("center")).shape == (31, 97, 3)
    assert r.render_mask(state, camera_rig("center")).shape == (31, 97)


def test_empty_scene_mask_is_all_background(renderer):
    state = _state([])
    assert not state.visible_indices()
    mask = renderer.render_mask(state, camera_rig("center"))
    assert (mask == -1).all()
    image = renderer.render(state, camera_rig("center")).astype(int)
    # the ground is light gray and the four boundary lines are drawn in the middle of the image
    assert 90 < image[SIZE[1] // 2, SIZE[0] // 2].mean() < 230
    assert np.abs(image[..., 0] - image[..., 2]).mean() < 12


def test_invisible_objects_never_drawn(renderer, trance_problems):
    for prob, state, view in _fixture_views(trance_problems, 8):
        mask = renderer.render_mask(state, camera_rig(view))
        drawn = set(np.unique(mask).tolist()) - {-1}
        assert drawn <= set(state.visible_indices()), (prob.idx, view)


def test_object_at_the_edge_is_drawn_and_just_outside_is_not(renderer):
    lim = SPEC.visible_limit
    inside = _state([SceneObject("cyan", "rubber", "sphere", "large", (0, lim))])
    outside = _state([SceneObject("cyan", "rubber", "sphere", "large", (0, lim + 1))])
    assert (renderer.render_mask(inside, camera_rig("center")) == 0).sum() > 100
    assert (renderer.render_mask(outside, camera_rig("center")) == -1).all()


def _nearer(state: State, cam, i: int, j: int) -> bool:
    eye = np.asarray(cam.location)
    return np.linalg.norm(object_center(state[j]) - eye) < np.linalg.norm(object_center(state[i]) - eye)


def test_projected_centre_lies_in_own_mask(renderer, trance_problems):
    checked = 0
    for prob, state, view in _fixture_views(trance_problems, 10):
        cam = camera_rig(view)
        mask = renderer.render_mask(state, cam)
        for i in state.visible_indices():
            u, v = cam.project(object_center(state[i]), SIZE)
            hit = int(mask[int(v), int(u)])
            assert hit == i or (hit >= 0 and _nearer(state, cam, i, hit)), (prob.idx, view, i, hit)
            checked += 1
    assert checked > 50


def _centroids(mask: np.ndarray) -> dict[int, tuple[float, float, int]]:
    out = {}
    for i in np.unique(mask):
        if i < 0:
            continue
        vs, us = np.nonzero(mask == i)
        out[int(i)] = (us.mean(), vs.mean(), len(us))
    return out


def test_gl_and_numpy_masks_agree(gl_renderer, numpy_renderer, trance_problems):
    compared = 0
    for prob, state, view in _fixture_views(trance_problems, 10):
        cam = camera_rig(view, prob.idx)
        a = _centroids(gl_renderer.render_mask(state, cam))
        b = _centroids(numpy_renderer.render_mask(state, cam))
        assert set(a) == set(b) or all(min(a.get(k, (0, 0, 0))[2], b.get(k, (0, 0, 0))[2]) < 5 for k in set(a) ^ set(b))
        for i in set(a) & set(b):
            if min(a[i][2], b[i][2]) < 20:
                continue
            assert abs(a[i][0] - b[i][0]) <= 1.5 and abs(a[i][1] - b[i][1]) <= 1.5, (prob.idx, view, i, a[i], b[i])
            assert abs(a[i][2] - b[i][2]) <= 0.1 * b[i][2] + 10
            compared += 1
    assert compared > 50


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SPEC.values["color"]),
            st.sampled_from(SPEC.values["material"]),
            st.sampled_from(SPEC.values["shape"]),
            st.sampled_from(SPEC.values["size"]),
            st.integers(-SPEC.grid_limit, SPEC.grid_limit),
            st.integers(-SPEC.grid_limit, SPEC.grid_limit),
            st.floats(0, 360),
        ),
        min_size=10,
        max_size=10,
    ),
    st.sampled_from(("center", "left", "right")),
)
def test_random_scenes_masks_only_hold_visible_objects(numpy_renderer, objs, view):
    state = State(tuple(SceneObject(c, m, s, z, (x, y), rot) for c, m, s, z, x, y, rot in objs))
    mask = make_renderer("numpy", (80, 60)).render_mask(state, camera_rig(view))
    assert set(np.unique(mask).tolist()) - {-1} <= set(state.visible_indices())
    assert mask.min() >= -1


# -- colour conformance with the official Blender renders ---------------------------------------


def _hsv(rgb) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=float) / 255.0))


_REF = {name: _hsv(rgb) for name, rgb in SPEC.color_rgb.items()}


def color_matches(rgb, color: str) -> bool:
    """Hue/chroma test that ignores shading: gray is unsaturated; other colours keep their hue."""
    h, s, v = _hsv(rgb)
    if color == "gray":
        return s < 0.3
    if s < 0.2 or v < 0.06:
        return False
    dh = abs(h - _REF[color][0])
    return min(dh, 1.0 - dh) * 360.0 < 30.0


def test_color_matches_reference_colours():
    for name, rgb in SPEC.color_rgb.items():
        assert color_matches(rgb, name)
        assert color_matches(np.asarray(rgb) * 0.5, name)  # shading keeps the hue
    assert not color_matches((200, 30, 30), "blue")
    assert not color_matches((30, 30, 200), "gray")


def _official_points(problems, renderer, size):
    """(object colour, official pixel block, our pixel) at each visible, unoccluded object's centre."""
    by_idx = {p.idx: p for p in problems}
    for idx in OFFICIAL_SAMPLES:
        prob = by_idx[idx]
        for phase, view in SHOTS:
            path = prob.image_path(phase, view)
            assert path is not None, f"official image missing for sample {idx} {phase} {view}"
            official = np.asarray(Image.open(path).convert("RGB"))
            state = prob.initial if phase == "initial" else prob.final
            cam = camera_rig(view)
            mask = renderer.render_mask(state, cam)
            ours = renderer.render(state, cam)
            for i in state.visible_indices():
                if (mask == i).sum() < 0.6 * _solo_area(renderer, state, i, cam):
                    continue  # occluded: the official pixel may show another object
                u, v = cam.project(object_center(state[i]), size)
                uo, vo = cam.project(object_center(state[i]), official.shape[1::-1])
                block = official[max(int(vo) - 3, 0) : int(vo) + 4, max(int(uo) - 3, 0) : int(uo) + 4].reshape(-1, 3)
                yield state[i].color, block, ours[int(v), int(u)]


def _solo_area(renderer, state, i, cam) -> int:
    alone = _state([state[i]])
    return int((renderer.render_mask(alone, cam) == 0).sum())


@pytest.mark.parametrize("name", ["numpy", "gl"])
def test_official_images_show_our_object_colours(request, name, trance_problems):
    renderer = request.getfixturevalue(f"{name}_renderer")
    colors = SPEC.values["color"]
    official_hits = ours_hits = total = 0
    wrong_hits = np.zeros(len(colors) - 1)
    for color, block, ours in _official_points(trance_problems, renderer, SIZE):
        official_hits += any(color_matches(px, color) for px in block)
        ours_hits += color_matches(ours, color)
        total += 1
        for shift in range(1, len(colors)):  # negative control: a wrong colour name must rarely match
            wrong = colors[(colors.index(color) + shift) % len(colors)]
            wrong_hits[shift - 1] += any(color_matches(px, wrong) for px in block)
    assert total >= 30
    assert official_hits / total > 0.75, (official_hits, total)
    assert ours_hits / total > 0.9, (ours_hits, total)
    assert (wrong_hits / total < 0.5).all(), wrong_hits


def test_ground_brightness_matches_official(gl_renderer, numpy_renderer, trance_problems):
    by_idx = {p.idx: p for p in trance_problems}
    for renderer in (gl_renderer, numpy_renderer):
        r = make_renderer(renderer.name, tuple(SPEC.raw["camera"]["released_size"]))
        for idx in OFFICIAL_SAMPLES:
            prob = by_idx[idx]
            official = np.asarray(Image.open(prob.image_path("initial", "center")).convert("RGB")).mean(-1)
            cam = camera_rig("center")
            ours = r.render(prob.initial, cam).mean(-1)
            background = r.render_mask(prob.initial, cam) == -1
            for band in np.array_split(np.arange(official.shape[0]), 4):
                sel = np.zeros_like(background)
                sel[band] = True
                sel &= background
                assert abs(ours[sel].mean() - official[sel].mean()) < 0.12 * official[sel].mean(), (
                    r.name,
                    idx,
                    band[0],
                )


# -- blender --------------------------------------------------------------------------------------


def test_missing_blender_says_how_to_install(monkeypatch, tmp_path):
    from tvr_gym.render.blender import BlenderNotFoundError

    monkeypatch.setenv("TVR_GYM_BLENDER", str(tmp_path / "no-such-blender"))
    with pytest.raises(BlenderNotFoundError, match="apt-get install -y blender"):
        make_renderer("blender", (64, 48))
    monkeypatch.delenv("TVR_GYM_BLENDER")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BlenderNotFoundError, match="TVR_GYM_BLENDER"):
        make_renderer("blender", (64, 48))


def test_a_blender_that_does_not_run_is_reported_not_used(monkeypatch, tmp_path):
    from tvr_gym.render.blender import BlenderNotFoundError, blender_problem

    broken = tmp_path / "blender"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries: libGL.so.1' >&2\nexit 127\n")
    broken.chmod(0o755)
    monkeypatch.setenv("TVR_GYM_BLENDER", str(broken))
    with pytest.raises(BlenderNotFoundError, match="does not run as Blender.*libGL.so.1.*apt-get install -y blender"):
        make_renderer("blender", (64, 48))
    assert "does not run" in blender_problem()


@pytest.fixture(scope="module")
def blender_renderer():

    from tvr_gym.render.blender import BlenderRenderer, blender_problem

    problem = blender_problem()  # found and run once: a broken install skips with its reason
    if problem is not None:
        pytest.skip(problem)
    r = BlenderRenderer((80, 60), samples=4)
    yield r
    r.close()


def test_blender_renders_and_restarts_a_crashed_worker(blender_renderer):
    import signal

    state = _state(
        [
            SceneObject("red", "rubber", "sphere", "large", (0, 0)),
            SceneObject("blue", "metal", "cube", "large", (10, -14), 30.0),
        ]
    )
    cam = camera_rig("center")
    image = blender_renderer.render(state, cam)
    assert image.dtype == np.uint8 and image.shape == (60, 80, 3)
    for i, color in ((0, "red"), (1, "blue")):
        u, v = cam.project(object_center(state[i]), (80, 60))
        assert color_matches(image[int(v), int(u)], color), (color, image[int(v), int(u)])
    assert np.array_equal(
        blender_renderer.render_mask(state, cam), make_renderer("numpy", (80, 60)).render_mask(state, cam)
    )
    pid = blender_renderer.pid
    os.kill(pid, signal.SIGKILL)
    again = blender_renderer.render(state, cam)
    assert again.shape == (60, 80, 3) and blender_renderer.pid not in (None, pid)
    u, v = cam.project(object_center(state[0]), (80, 60))
    assert color_matches(again[int(v), int(u)], "red")


def test_the_none_renderer_draws_black_frames_of_the_size_and_checks_inputs(trance_problems):
    renderer = make_renderer("none", (32, 24))
    state, cam = trance_problems[0].initial, camera_rig("center")
    image, mask = renderer.render(state, cam), renderer.render_mask(state, cam)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8 and not image.any()
    assert mask.shape == (24, 32) and (mask == -1).all()
    with pytest.raises(ValueError, match="state"):
        renderer.render(state.to_dicts(), cam)
    env = gym.make("TVR-Basic-v0", renderer="none", render_size=(32, 24))
    obs, _ = env.reset(seed=3)
    assert obs["initial"].shape == (24, 32, 3) and not obs["final"].any()
    assert obs["prompt"] == gym.make("TVR-Basic-v0", renderer="numpy", render_size=(32, 24)).reset(seed=3)[0]["prompt"]


def test_gl_renders_the_same_frame_from_any_thread(gl_renderer):
    """A trainer's data thread or a web server's request threads render with the process's one GL context."""
    import threading

    from tvr_gym.problems.generator import generate

    problem = generate("crossview", 3, index=2)
    camera = camera_rig("left")
    in_main = gl_renderer.render(problem.final, camera)
    made_elsewhere: dict[str, object] = {}

    def elsewhere() -> None:
        try:
            made_elsewhere["frame"] = gl_renderer.render(problem.final, camera)
            other = make_renderer("gl", size=(80, 60))  # a renderer created in this thread, too
            made_elsewhere["small"] = other.render(problem.final, camera)
            other.close()
        except Exception as exc:  # re-raised below, in the test's thread
            made_elsewhere["error"] = exc

    threads = [threading.Thread(target=elsewhere) for _ in range(2)]
    for thread in threads:
        thread.start()
        thread.join()
    assert "error" not in made_elsewhere, made_elsewhere.get("error")
    assert np.array_equal(made_elsewhere["frame"], in_main)
    assert np.array_equal(made_elsewhere["small"], make_renderer("gl", size=(80, 60)).render(problem.final, camera))
    assert np.array_equal(gl_renderer.render(problem.final, camera), in_main)  # and the main thread still can
