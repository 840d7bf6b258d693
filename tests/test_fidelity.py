"""The gl and numpy renderers against the official TRANCE images, and the physics of their materials."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks.fidelity import (
    MATERIALS,
    View,
    colour_distance,
    fit_cameras,
    generated_views,
    measure_objects,
    object_masks,
    official_views,
    render_view,
)
from tvr_gym.core.scene import SceneObject, State
from tvr_gym.problems.generator import generate
from tvr_gym.render import camera_rig, lamp_rig, make_renderer
from tvr_gym.render.base import default_lamps, lamp_lights
from tvr_gym.render.studio import STUDIO_TEXELS, irradiance_sh, sh_irradiance, studio_texture

SIZE = (320, 240)

# Per-object mean-colour distance (0-255) to the official images, per material, that a renderer
# must stay within. Measured 2026-11-29 (gl / numpy; benchmarks/results/fidelity.md): nominal
# cameras rubber 9.0 / 7.7, metal 13.0 / 13.4, glass 14.2 / 13.3; fitted cameras 4.8 / 4.1,
# 13.7 / 13.6, 10.0 / 9.0. The bounds leave a few levels of room; the goal was <= 20.
NOMINAL_BOUND = {"rubber": 12.0, "metal": 16.0, "glass": 18.0}
FITTED_BOUND = {"rubber": 8.0, "metal": 16.0, "glass": 13.0}
BIAS_BOUND = 8.0
"""No material may be uniformly brighter or darker than the official one by more than this (mean RGB)."""


@pytest.fixture(scope="module")
def gl() -> object:
    try:
        return make_renderer("gl", SIZE)
    except RuntimeError as exc:
        pytest.skip(f"gl renderer needs an EGL context (Mesa: libegl1 libegl-mesa0 libgl1-mesa-dri): {exc}")


@pytest.fixture(scope="module")
def numpy_renderer():
    return make_renderer("numpy", SIZE)


@pytest.fixture(scope="module")
def official(trance_dir) -> list[View]:
    return official_views(trance_dir)


@pytest.fixture(scope="module")
def fitted(official, gl) -> list[View]:
    return fit_cameras(official, make_renderer("gl", (160, 120)))


def _state(objs: list[SceneObject]) -> State:
    filler = [SceneObject("red", "rubber", "cube", "small", (40, -40 + 8 * k)) for k in range(10)]
    return State(tuple(objs + filler[: 10 - len(objs)]))


# -- against the official images ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gl", "numpy_renderer"])
def test_each_material_keeps_the_official_colour(request, name, official):
    renderer = request.getfixturevalue(name)
    rows = measure_objects(renderer, official)
    assert {r["material"] for r in rows} == set(MATERIALS)
    distance = colour_distance(rows)
    for material, bound in NOMINAL_BOUND.items():
        assert distance[material] <= bound, (renderer.name, material, distance)
        bias = np.mean([r["ours_mean"] - r["official_mean"] for r in rows if r["material"] == material], axis=0)
        assert np.abs(bias).max() <= BIAS_BOUND, (renderer.name, material, bias)


@pytest.mark.parametrize("name", ["gl", "numpy_renderer"])
def test_with_the_jitter_recovered_the_colours_are_closer_still(request, name, fitted):
    distance = colour_distance(measure_objects(request.getfixturevalue(name), fitted))
    for material, bound in FITTED_BOUND.items():
        assert distance[material] <= bound, (name, material, distance)


def test_camera_fit_recovers_a_known_jitter(gl):
    """Images drawn from a moved camera play the official ones: the fit finds the move."""
    small = make_renderer("gl", (160, 120))
    problem = generate("crossview", 5, 2)
    shift = (0.3, -0.18, 0.24)
    views = []
    for phase, state in (("initial", problem.initial), ("final", problem.final)):
        view = View(state, "center", None, {}, None, f"fake-{phase}", sample=0)
        image = small.render(state, replace(view, offset=shift).camera)
        views.append(replace(view, official=image))
    (found, *_) = fit_cameras(views, small)
    assert np.allclose(found.offset, shift, atol=0.035), found.offset
    assert found.masks, "the fitted views carry the masks of the moved camera"


# -- the physics of the materials -------------------------------------------------------------------


def _lit_pixels(renderer, obj: SceneObject) -> np.ndarray:
    state = _state([obj])
    camera = camera_rig("center")
    mask = renderer.render_mask(state, camera) == 0
    inner = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) & np.roll(mask, -2, 1)
    return renderer.render(state, camera)[inner].astype(float)


@pytest.mark.parametrize("name", ["gl", "numpy_renderer"])
@pytest.mark.parametrize("shape", ["sphere"])
def test_metal_reflects_its_surroundings_so_it_varies_more_than_rubber(request, name, shape):
    renderer = request.getfixturevalue(name)
    spread = {}
    for material in ("rubber", "metal"):
        pixels = _lit_pixels(renderer, SceneObject("blue", material, shape, "large", (0, 0)))
        spread[material] = pixels.mean(1).std()
    assert spread["metal"] > 1.5 * spread["rubber"], spread


@pytest.mark.parametrize("name", ["gl", "numpy_renderer"])
def test_glass_refracts_what_is_behind_it_instead_of_blending_it(request, name):
    """A glass sphere is a lens: a red cylinder behind its left half shows through its right half
    (the image is inverted), and a blue one behind its right half through its left half. Blending
    the cylinders through the glass would show each on its own side."""
    renderer = request.getfixturevalue(name)
    glass = SceneObject("gray", "glass", "sphere", "large", (6, 0))
    red = SceneObject("red", "rubber", "cylinder", "large", (-6, -5))
    blue = SceneObject("blue", "rubber", "cylinder", "large", (-6, 5))
    camera = camera_rig("center")
    state = _state([glass, red, blue])
    image = renderer.render(state, camera).astype(float)
    mask = renderer.render_mask(state, camera) == 0
    ys, xs = np.nonzero(mask)
    left, right = image[ys[xs < xs.mean()], xs[xs < xs.mean()]], image[ys[xs > xs.mean()], xs[xs > xs.mean()]]
    redness = lambda px: (px[:, 0] - px[:, 2]).mean()  # noqa: E731
    assert redness(right) > redness(left) + 10, (redness(left), redness(right))
    # the glass changes what it shows: its pixels are neither the cubes' nor the ground's colours
    without = renderer.render(_state([red, blue]), camera).astype(float)
    assert np.abs(image[mask] - without[mask]).mean() > 20


@pytest.mark.parametrize("name", ["gl", "numpy_renderer"])
def test_glass_is_darker_where_it_looks_at_its_own_shadowed_footprint(request, name):
    """Light reaches the floor under a glass object only through the object's sides: its bottom
    part, which looks down at that floor, is darker than the ground around it."""
    renderer = request.getfixturevalue(name)
    pixels = _lit_pixels(renderer, SceneObject("gray", "glass", "cube", "large", (0, 0)))
    ground = renderer.render(_state([]), camera_rig("center"))[100:140, 140:180].astype(float)
    assert pixels.mean() < 0.6 * ground.mean()


# -- the two renderers agree, and the studio is the same on both -------------------------------------------


def test_gl_and_numpy_show_the_same_materials(gl, numpy_renderer):
    views = list(generated_views(16, seed=3))
    distance: dict[str, list[float]] = {m: [] for m in MATERIALS}
    for v in views:
        a, b = render_view(gl, v).astype(float), render_view(numpy_renderer, v).astype(float)
        for i, mask in v.masks.items():
            distance[v.state[i].material].append(float(np.linalg.norm(a[mask].mean(0) - b[mask].mean(0))))
        assert np.abs(a - b).mean() < 3.0, v.label
    for material, d in distance.items():
        assert d and np.mean(d) < 8.0, (material, np.mean(d))


def test_the_gpu_studio_is_the_numpy_studio(gl):
    from tvr_gym.render.gl import shared_context

    for seed in (None, 17):
        lamps = lamp_rig(seed)
        gl.render(_state([]), camera_rig("center", seed), lamps)
        w, h = STUDIO_TEXELS
        gpu = np.frombuffer(shared_context().studio_tex.read(), dtype=np.float32).reshape(h, w, 4)[..., :3]
        cpu = studio_texture(lamp_lights(lamps))
        assert np.abs(gpu - cpu).max() < 0.01, seed
        assert cpu.max() > 0.2 and (cpu == 0).any()  # a lit sheet under a black world


def test_the_studio_lights_a_face_turned_down_more_than_one_turned_up():
    """The lit floor fills most of the lower hemisphere, the black world most of the upper one."""
    sh = irradiance_sh(studio_texture(lamp_lights(default_lamps())))
    down, up, side = sh_irradiance(sh, np.array([[0, 0, -1.0], [0, 0, 1.0], [1.0, 0, 0]]))
    assert down.mean() > 5 * up.mean()
    assert up.mean() < side.mean() < down.mean()


def test_grain_is_small_seeded_by_the_camera_and_optional(gl):
    from tvr_gym.render.gl import GLRenderer

    state = _state([SceneObject("green", "rubber", "sphere", "large", (0, 0))])
    camera = camera_rig("left", 5)
    plain = GLRenderer(SIZE, grain=False).render(state, camera).astype(float)
    grainy = gl.render(state, camera).astype(float)
    assert np.array_equal(grainy, gl.render(state, camera).astype(float))
    assert 0.3 < (grainy - plain).std() < 1.5
    other = gl.render(state, camera_rig("left", 6)).astype(float) - plain
    assert not np.array_equal(grainy - plain, other)


def test_object_masks_follow_the_camera(official):
    view = next(v for v in official if v.masks)
    moved = replace(view, offset=(0.0, 0.5, 0.0))
    masks = object_masks(view.state, moved.camera)
    shared = set(masks) & set(view.masks)
    assert shared and any(not np.array_equal(masks[i], view.masks[i]) for i in shared)
