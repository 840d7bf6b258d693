"""The fast analytic instance mask used by the occlusion rule (tvr_gym.problems.occlusion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.spec import SPEC
from tvr_gym.problems.generator import generate
from tvr_gym.problems.occlusion import MASK_SIZE, RasterCamera, instance_mask, pixel_counts
from tvr_gym.render import make_renderer
from tvr_gym.render.rig import VIEWS, camera_rig, object_center

from props import examples

PARKED = [(-40, -40), (-40, 0), (-40, 40), (0, -40), (0, 40), (40, -40), (40, 0), (40, 40), (-40, 25)]
"""Nine hidden slots outside the visible square, far from each other."""


def lone(shape: str, size: str = "large", pos=(0, 0), rotation: float = 0.0) -> State:
    """Object 0 alone in the visible square; the other nine parked out of view."""
    first = SceneObject("red", "rubber", shape, size, pos, rotation)
    return State((first, *(SceneObject("gray", "rubber", "cube", "small", p) for p in PARKED)))


def pair(front: SceneObject, back: SceneObject) -> State:
    return State((front, back, *(SceneObject("gray", "rubber", "cube", "small", p) for p in PARKED[:8])))


@pytest.mark.parametrize("size", ["large", "medium", "small"])
@pytest.mark.parametrize("pos", [(0, 0), (-15, 10), (12, -12)])
def test_lone_sphere_area_matches_the_pinhole_disc(size, pos):
    cam = camera_rig("center")
    state = lone("sphere", size, pos)
    dist = float(np.linalg.norm(object_center(state[0]) - np.asarray(cam.location)))
    r = SPEC.size_radius[size]
    expected = math.pi * (cam.focal_pixels(MASK_SIZE[0]) * r / dist) ** 2
    # off-axis perspective stretches the disc into a slightly larger ellipse
    assert 0.97 * expected <= pixel_counts(state, cam)[0] <= 1.08 * expected


@pytest.mark.parametrize("shape", ["cube", "sphere", "cylinder"])
@pytest.mark.parametrize("view", VIEWS)
def test_lone_object_mask_is_centred_on_its_projected_centre(shape, view):
    cam = camera_rig(view, jitter_seed=11)
    state = lone(shape, "medium", (6, -9), 30.0)
    mask = instance_mask(state, cam)
    vs, us = np.nonzero(mask == 0)
    u, v = cam.project(object_center(state[0]), MASK_SIZE)
    assert abs(us.mean() + 0.5 - u) < 2.5 and abs(vs.mean() + 0.5 - v) < 2.5
    assert set(np.unique(mask)) == {-1, 0}


@settings(max_examples=examples(25), deadline=None)
@given(
    x=st.integers(-20, 20),
    y=st.integers(-20, 20),
    size=st.sampled_from(SPEC.values["size"]),
    rotation=st.floats(0, 360, exclude_max=True),
    view=st.sampled_from(VIEWS),
)
def test_sphere_and_cube_lie_inside_the_cylinder_around_them(x, y, size, rotation, view):
    """Sphere and cube (half-diagonal r, height < 2r) fit in the cylinder of radius r and height 2r."""
    cam = camera_rig(view)
    cyl = instance_mask(lone("cylinder", size, (x, y)), cam) == 0
    for shape in ("sphere", "cube"):
        inner = instance_mask(lone(shape, size, (x, y), rotation), cam) == 0
        assert inner.sum() > 0
        assert not (inner & ~cyl).any()
    assert cyl.sum() > (instance_mask(lone("sphere", size, (x, y)), cam) == 0).sum()


@pytest.mark.parametrize("rotation", [0.0, 17.0, 45.0])
def test_cube_mask_is_symmetric_under_quarter_turns(rotation):
    cam = camera_rig("left", jitter_seed=3)
    a = instance_mask(lone("cube", "large", (-5, 8), rotation), cam)
    b = instance_mask(lone("cube", "large", (-5, 8), rotation + 90.0), cam)
    assert (a != b).sum() <= 2  # rounding at a pixel centre at most
    assert not np.array_equal(a, instance_mask(lone("cube", "large", (-5, 8), rotation + 30.0), cam))


def test_nearer_object_hides_the_one_behind():
    cam = camera_rig("center")  # +x points toward the centre camera
    front = SceneObject("red", "rubber", "cylinder", "large", (10, 0))
    back = SceneObject("blue", "rubber", "sphere", "small", (0, 0))
    both = pixel_counts(pair(front, back), cam)
    assert both[0] == pixel_counts(lone("cylinder", "large", (10, 0)), cam)[0]
    assert pixel_counts(lone("sphere", "small", (0, 0)), cam)[0] > SPEC.occlusion_min_pixels
    assert both[1] == 0
    # seen from the side, the same two objects no longer hide each other completely
    side = pixel_counts(pair(front, back), camera_rig("right"))
    assert 0 < side[1] <= pixel_counts(lone("sphere", "small", (0, 0)), camera_rig("right"))[0]


def test_hidden_objects_are_never_drawn():
    cam = camera_rig("center")
    state = lone("sphere", "large", (0, 0))
    counts = pixel_counts(state, cam)
    assert counts[0] > 0 and not counts[1:].any()
    assert counts.shape == (10,)


@settings(max_examples=examples(10), deadline=None)
@given(seed=st.integers(0, 2**32), index=st.integers(0, 10**6))
def test_fast_counts_equal_the_zbuffer_mask_and_adding_objects_never_adds_pixels(seed, index):
    problem = generate("crossview", seed, index)
    for view in VIEWS:
        cam = camera_rig(view, problem.render_seed)
        raster = RasterCamera(cam)
        counts = pixel_counts(problem.final, cam)
        objs = problem.final.objects
        assert [raster.visible_pixels(objs, i) for i in range(10)] == counts.tolist()
        mask = instance_mask(problem.final, cam)
        assert counts.sum() == (mask >= 0).sum()
        for i, obj in enumerate(objs):
            if obj.visible:
                alone = pixel_counts(lone(obj.shape, obj.size, obj.position, obj.rotation), cam)[0]
                assert counts[i] <= alone
            else:
                assert counts[i] == 0


def test_fast_mask_equals_the_exact_ray_caster():
    """The numpy renderer's exact mask (one ray per pixel centre) agrees with the fast mask."""
    renderer = make_renderer("numpy")
    for index in range(4):
        problem = generate("crossview", 2024, index)
        for state in (problem.initial, problem.final):
            for view in VIEWS:
                cam = camera_rig(view, problem.render_seed)
                exact = renderer.render_mask(state, cam)
                fast = instance_mask(state, cam)
                assert fast.shape == exact.shape == (MASK_SIZE[1], MASK_SIZE[0])
                assert (fast != exact).mean() < 0.002
                for i in np.unique(exact[exact >= 0]):
                    a, b = fast == i, exact == i
                    assert (a & b).sum() / (a | b).sum() > 0.97


def test_other_mask_sizes_scale_the_counts():
    cam = camera_rig("center")
    state = lone("sphere", "large")
    full = pixel_counts(state, cam)[0]
    half = pixel_counts(state, cam, (160, 120))[0]
    assert instance_mask(state, cam, (160, 120)).shape == (120, 160)
    assert abs(4 * half - full) < 0.05 * full


def test_bad_input_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="state"):
        instance_mask("not a state", camera_rig("center"))
    with pytest.raises(ValueError, match="camera"):
        pixel_counts(lone("cube"), "center")
    with pytest.raises(ValueError, match="size"):
        instance_mask(lone("cube"), camera_rig("center"), (0, 10))


@settings(max_examples=examples(20), deadline=None)
@given(
    shape=st.sampled_from(SPEC.values["shape"]),
    size=st.sampled_from(SPEC.values["size"]),
    x=st.integers(-20, 20),
    y=st.integers(-20, 20),
    rotation=st.floats(0, 360, exclude_max=True),
    view=st.sampled_from(VIEWS),
    jitter=st.integers(0, 2**31),
)
def test_lone_object_silhouette_equals_the_exact_ray_caster(shape, size, x, y, rotation, view, jitter):
    """Also shows the screen box never cuts the silhouette, whatever the shape, rotation or camera."""
    cam = camera_rig(view, jitter)
    state = lone(shape, size, (x, y), rotation)
    exact = make_renderer("numpy").render_mask(state, cam)
    fast = instance_mask(state, cam)
    assert (exact == 0).sum() > 0
    assert (fast != exact).sum() <= 2


def test_counting_only_some_objects_gives_their_mask_counts():
    problem = generate("event", 8, 1, visible=10)
    cam = camera_rig("right", problem.render_seed)
    counts = pixel_counts(problem.final, cam)
    raster = RasterCamera(cam)
    assert raster.visible_pixels_of(problem.final.objects, [7, 2]) == [counts[7], counts[2]]
    assert raster.visible_pixels(problem.final.objects, 4) == counts[4]
