"""Fast analytic instance masks and per-object pixel counts for the occlusion rule (rule 6 of ``docs/generator.md``).

Each visible object is rasterised only inside a tight screen box around its silhouette: the ray
through every pixel centre there is intersected with the exact analytic shape (cube: a box of half-side r/sqrt(2)
rotated by ``rotation`` degrees about +z; cylinder: radius r, height 2r; sphere: radius r), which
gives a hit flag and a depth per pixel. Overlaps are resolved by that depth, so the result is a
z-buffer of the true shapes at pixel centres, the same camera model (:mod:`tvr_gym.render.rig`)
as every renderer. Footprints are cached per object geometry, so a step that changes one object
only re-rasterises that object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tvr_gym.core.options import check_size
from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.spec import SPEC
from tvr_gym.render.rig import Camera

__all__ = [
    "MASK_SIZE",
    "MIN_PIXELS",
    "Footprint",
    "RasterCamera",
    "instance_mask",
    "pixel_counts",
]

MASK_SIZE: tuple[int, int] = (int(SPEC.occlusion_mask_size[0]), int(SPEC.occlusion_mask_size[1]))
"""(width, height) of the instance mask the occlusion rule is measured on."""
MIN_PIXELS: int = SPEC.occlusion_min_pixels
"""An object covering fewer pixels than this is occluded."""

GeometryKey = tuple[str, str, tuple[int, int], float]

_SQUARE = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
"""A cube's corners in its own frame (x, y), in half-sides."""
_POLYGON_SIDES = 16
_POLYGON = np.stack(
    [
        np.cos(np.arange(_POLYGON_SIDES) * 2 * np.pi / _POLYGON_SIDES),
        np.sin(np.arange(_POLYGON_SIDES) * 2 * np.pi / _POLYGON_SIDES),
    ],
    axis=1,
) / math.cos(math.pi / _POLYGON_SIDES)
"""A polygon around the unit circle, so a cylinder's silhouette box is never too small."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """An object's silhouette inside its clipped bounding box.

    ``depth`` (rows ``v0..v0+H``, columns ``u0..u0+W``) is the ray parameter of the first hit along
    the camera's (unnormalised) pixel ray, ``inf`` where the ray misses; depths of different objects
    at the same pixel are directly comparable. ``hits`` is the number of finite entries.
    """

    u0: int
    v0: int
    depth: np.ndarray
    hits: int

    @property
    def u1(self) -> int:
        return self.u0 + self.depth.shape[1]

    @property
    def v1(self) -> int:
        return self.v0 + self.depth.shape[0]


def _geometry_key(obj: SceneObject) -> GeometryKey:
    return (obj.shape, obj.size, obj.position, obj.rotation)


def _slab(origin: float, direction: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of the slab lo <= origin + t * direction <= hi."""
    t_lo = (lo - origin) / direction
    t_hi = (hi - origin) / direction
    return np.minimum(t_lo, t_hi), np.maximum(t_lo, t_hi)


class RasterCamera:
    """A :class:`~tvr_gym.render.rig.Camera` prepared for fast silhouette rasterisation at ``size``.

    Footprints and bounding boxes are cached by object geometry (shape, size, position, rotation);
    colour and material do not matter for a mask.
    """

    def __init__(self, camera: Camera, size: tuple[int, int] = MASK_SIZE) -> None:
        if not isinstance(camera, Camera):
            raise ValueError(f"camera: expected a tvr_gym.render.Camera, got {type(camera).__name__}")
        w, h = check_size(size)
        self.camera = camera
        self.size = (w, h)
        right, up, forward = camera.basis()
        self._right, self._up, self._forward = right, up, forward
        self._eye = np.asarray(camera.location, dtype=np.float64)
        self._focal = camera.focal_pixels(w)
        us = (np.arange(w) + 0.5 - w / 2.0) / self._focal
        vs = (h / 2.0 - (np.arange(h) + 0.5)) / self._focal
        self._rows = forward[:, None] + right[:, None] * us[None, :]  # (3, W)
        self._cols = up[:, None] * vs[None, :]  # (3, H)
        # |d|^2 = 1 + u^2 + v^2 for the orthonormal camera basis
        self._norm_rows, self._norm_cols = 1.0 + us * us, vs * vs
        self._boxes: dict[GeometryKey, tuple[int, int, int, int] | None] = {}
        self._footprints: dict[GeometryKey, Footprint | None] = {}
        # fast path for objects seen before; holding the object keeps its id from being reused
        self._by_id: dict[int, tuple[SceneObject, tuple[int, int, int, int] | None]] = {}

    # -- geometry -----------------------------------------------------------------------------
    def bbox(self, obj: SceneObject) -> tuple[int, int, int, int] | None:
        """Pixel box (u0, v0, u1, v1), end-exclusive and clipped to the image, or ``None`` if off-screen."""
        known = self._by_id.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        key = _geometry_key(obj)
        if key in self._boxes:
            box = self._boxes[key]
            self._by_id[id(obj)] = (obj, box)
            return box
        box = self._screen_box(obj)
        self._boxes[key] = box
        self._by_id[id(obj)] = (obj, box)
        return box

    def _screen_box(self, obj: SceneObject) -> tuple[int, int, int, int] | None:
        """A pixel box holding the object's whole silhouette (the full image if it reaches the camera plane)."""
        w, h = self.size
        f = self._focal
        r = SPEC.size_radius[obj.size]
        base = np.array([obj.position[0] * SPEC.cell, obj.position[1] * SPEC.cell, 0.0])
        if obj.shape == "sphere":
            # exact extent: the planes through the eye tangent to the sphere
            rel = base + (0.0, 0.0, r) - self._eye
            x, y, z = float(rel @ self._right), float(rel @ self._up), float(rel @ self._forward)
            if z <= r:
                return (0, 0, w, h)
            au, du = math.atan2(x, z), math.asin(r / math.hypot(x, z))
            av, dv = math.atan2(y, z), math.asin(r / math.hypot(y, z))
            if max(abs(au) + du, abs(av) + dv) >= math.pi / 2:
                return (0, 0, w, h)
            umin, umax = w / 2.0 + f * math.tan(au - du), w / 2.0 + f * math.tan(au + du)
            vmin, vmax = h / 2.0 - f * math.tan(av + dv), h / 2.0 - f * math.tan(av - dv)
        else:
            if obj.shape == "cube":
                half = r / math.sqrt(2.0)
                c, s = math.cos(math.radians(obj.rotation)), math.sin(math.radians(obj.rotation))
                ring = _SQUARE @ np.array([[c, s], [-s, c]]) * half
                height = 2.0 * half
            else:
                ring = _POLYGON * r
                height = 2.0 * r
            n = len(ring)
            pts = np.empty((2 * n, 3))
            pts[:n, :2] = pts[n:, :2] = ring + base[:2]
            pts[:n, 2], pts[n:, 2] = 0.0, height
            rel = pts - self._eye
            depth = rel @ self._forward
            if depth.min() <= 0.0:
                return (0, 0, w, h)
            u = w / 2.0 + f * (rel @ self._right) / depth
            v = h / 2.0 - f * (rel @ self._up) / depth
            umin, umax, vmin, vmax = u.min(), u.max(), v.min(), v.max()
        u0, u1 = max(0, math.floor(umin)), min(w, math.ceil(umax) + 1)
        v0, v1 = max(0, math.floor(vmin)), min(h, math.ceil(vmax) + 1)
        return (u0, v0, u1, v1) if u0 < u1 and v0 < v1 else None

    def footprint(self, obj: SceneObject) -> Footprint | None:
        """The object's silhouette and depth (``None`` when no pixel centre sees it)."""
        key = _geometry_key(obj)
        if key in self._footprints:
            return self._footprints[key]
        box = self.bbox(obj)
        fp = None if box is None else self._rasterize(obj, box)
        self._footprints[key] = fp
        return fp

    def _rasterize(self, obj: SceneObject, box: tuple[int, int, int, int]) -> Footprint | None:
        u0, v0, u1, v1 = box
        # pixel ray d = forward + u * right + v * up splits into a row part (u) and a column part (v)
        rows = self._rows[:, u0:u1]  # (3, nu)
        cols = self._cols[:, v0:v1]  # (3, nv)
        r = SPEC.size_radius[obj.size]
        o = self._eye - (obj.position[0] * SPEC.cell, obj.position[1] * SPEC.cell, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if obj.shape == "sphere":
                depth = _hit_sphere(o - (0.0, 0.0, r), rows, cols, self._norm_rows[u0:u1], self._norm_cols[v0:v1], r)
            elif obj.shape == "cylinder":
                depth = _hit_prism(o, rows, cols, r, 2.0 * r, None)
            else:
                half = r / math.sqrt(2.0)
                depth = _hit_prism(o, rows, cols, half, 2.0 * half, math.radians(obj.rotation))
        hits = int(np.count_nonzero(depth < np.inf))
        return Footprint(u0, v0, depth, hits) if hits else None

    # -- composition --------------------------------------------------------------------------
    def visible_pixels(self, objects: Sequence[SceneObject], i: int) -> int:
        """Pixels of object ``i`` in the instance mask of ``objects`` (0 if it is not visible)."""
        return self.visible_pixels_of(objects, (i,))[0]

    def visible_pixels_of(self, objects: Sequence[SceneObject], indices: Sequence[int]) -> list[int]:
        """Pixels of each object in ``indices`` in the instance mask of ``objects``.

        Only objects whose screen boxes intersect the target's are rasterised and compared.
        """
        boxes = [(j, box) for j, o in enumerate(objects) if o.visible and (box := self.bbox(o)) is not None]
        return [self._count(objects, i, boxes) for i in indices]

    def _count(self, objects: Sequence[SceneObject], i: int, boxes: list[tuple[int, tuple[int, int, int, int]]]) -> int:
        me = objects[i]
        if not me.visible:
            return 0
        fp = self.footprint(me)
        if fp is None:
            return 0
        seen = None
        for j, box in boxes:
            if j == i or box[0] >= fp.u1 or box[2] <= fp.u0 or box[1] >= fp.v1 or box[3] <= fp.v0:
                continue
            fq = self.footprint(objects[j])
            if fq is None:
                continue
            a0, a1 = max(fp.u0, fq.u0), min(fp.u1, fq.u1)
            b0, b1 = max(fp.v0, fq.v0), min(fp.v1, fq.v1)
            if a0 >= a1 or b0 >= b1:
                continue
            mine = fp.depth[b0 - fp.v0 : b1 - fp.v0, a0 - fp.u0 : a1 - fp.u0]
            theirs = fq.depth[b0 - fq.v0 : b1 - fq.v0, a0 - fq.u0 : a1 - fq.u0]
            in_front = theirs < mine
            if not in_front.any():
                continue
            if seen is None:
                seen = fp.depth < np.inf
            seen[b0 - fp.v0 : b1 - fp.v0, a0 - fp.u0 : a1 - fp.u0] &= ~in_front
        return fp.hits if seen is None else int(np.count_nonzero(seen))

    def mask(self, objects: Sequence[SceneObject]) -> np.ndarray:
        """The instance mask (H, W): nearest visible object's index per pixel, -1 for background."""
        w, h = self.size
        zbuf = np.full((h, w), np.inf)
        ids = np.full((h, w), -1, dtype=np.int64)
        for i, obj in enumerate(objects):
            if not obj.visible:
                continue
            fp = self.footprint(obj)
            if fp is None:
                continue
            zreg = zbuf[fp.v0 : fp.v1, fp.u0 : fp.u1]
            closer = fp.depth < zreg
            zreg[closer] = fp.depth[closer]
            ids[fp.v0 : fp.v1, fp.u0 : fp.u1][closer] = i
        return ids


def _outer(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """(nv, nu) array row[u] + col[v]."""
    return row[None, :] + col[:, None]


def _hit_sphere(oc, rows, cols, norm_rows, norm_cols, r: float) -> np.ndarray:
    """First-hit ray parameter of a sphere of radius ``r`` (``oc``: ray origin minus the centre)."""
    a = _outer(norm_rows, norm_cols)
    b = _outer(oc @ rows, oc @ cols)
    c = float(oc @ oc) - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0.0) & (t > 0.0), t, np.inf)


def _hit_prism(o, rows, cols, half: float, height: float, angle: float | None) -> np.ndarray:
    """First-hit ray parameter of an upright solid on z in [0, height] with its axis through the origin.

    ``angle is None``: a cylinder of radius ``half``; else a square box of half-side ``half``
    rotated by ``angle`` radians about +z. ``o`` is the ray origin relative to the base centre.
    """
    if angle is not None:
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, s, 0.0], [-s, c, 0.0]])  # world -> local x, y
        ox, oy = rot @ o
        dx = _outer(rot[0] @ rows, rot[0] @ cols)
        dy = _outer(rot[1] @ rows, rot[1] @ cols)
    else:
        ox, oy = o[0], o[1]
        dx = _outer(rows[0], cols[0])
        dy = _outer(rows[1], cols[1])
    dz = _outer(rows[2], cols[2])
    z_in, z_out = _slab(o[2], dz, 0.0, height)
    if angle is None:
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - half * half)
        root = np.sqrt(np.maximum(disc, 0.0))
        enter = np.maximum((-b - root) / a, z_in)
        leave = np.minimum((-b + root) / a, z_out)
        inside = disc >= 0.0
    else:
        x_in, x_out = _slab(ox, dx, -half, half)
        y_in, y_out = _slab(oy, dy, -half, half)
        enter = np.maximum(np.maximum(x_in, y_in), z_in)
        leave = np.minimum(np.minimum(x_out, y_out), z_out)
        inside = True
    return np.where(inside & (enter <= leave) & (leave > 0.0), enter, np.inf)


def _check_state(state: State) -> None:
    if not isinstance(state, State):
        raise ValueError(f"state: expected a tvr_gym.core.scene.State, got {type(state).__name__}")


def instance_mask(state: State, camera: Camera, size: tuple[int, int] = MASK_SIZE) -> np.ndarray:
    """The instance mask (H, W) of ``state`` seen by ``camera``: object index, -1 for background.

    Only visible objects (inside the visible square) are drawn.
    """
    _check_state(state)
    return RasterCamera(camera, size).mask(state.objects)


def pixel_counts(state: State, camera: Camera, size: tuple[int, int] = MASK_SIZE) -> np.ndarray:
    """Pixels per object (length 10, index order) in :func:`instance_mask`; 0 for hidden objects."""
    mask = instance_mask(state, camera, size)
    return np.bincount(mask[mask >= 0].ravel(), minlength=len(state.objects))[: len(state.objects)]
