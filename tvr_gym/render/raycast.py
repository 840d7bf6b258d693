"""The ``numpy`` renderer: an analytic, vectorised ray caster of the TRANCE scene.

It needs nothing but numpy, so it is the fallback where EGL is missing, and its masks are exact
(one ray through each pixel centre, the same rays as :meth:`Camera.rays`). Shading follows the
``gl`` renderer: Lambert + Blinn-Phong from the same lamps, a hard shadow from the shadow lamp, a
sky/ground reflection on metal and blended glass with a fresnel rim.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from tvr_gym.render.base import (
    GROUND,
    RENDER,
    LampLight,
    Primitive,
    Renderer,
    check_inputs,
    lamp_lights,
    linear_to_srgb,
    material_params,
    primitives,
)
from tvr_gym.render.rig import Camera, Lamp
from tvr_gym.scene import State
from tvr_gym.spec import SPEC

EPS = 1e-4
_LINE_HALF = float(GROUND["line_width"]) / 2.0
_SQUARE = SPEC.visible_limit * SPEC.cell
_EXTENT = float(GROUND["extent"])


def _rotate_z(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    out = v.copy()
    out[..., 0] = c * v[..., 0] - s * v[..., 1]
    out[..., 1] = s * v[..., 0] + c * v[..., 1]
    return out


def intersect(prim: Primitive, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance along each ray (o + t d, shapes (N, 3)) to ``prim``'s surface; ``inf`` on a miss."""
    oc = o - prim.center
    if prim.shape == "sphere":
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - prim.radius**2
        disc = b * b - c
        with np.errstate(invalid="ignore"):
            t = -b - np.sqrt(disc)
        return np.where((disc >= 0) & (t > EPS), t, np.inf)
    if prim.shape == "cube":
        lo_ = _rotate_z(oc, -prim.angle)
        ld = _rotate_z(d, -prim.angle)
        ld = np.where(np.abs(ld) < 1e-12, 1e-12, ld)
        inv = 1.0 / ld
        t1 = (-prim.half - lo_) * inv
        t2 = (prim.half - lo_) * inv
        tnear = np.minimum(t1, t2).max(axis=1)
        tfar = np.maximum(t1, t2).min(axis=1)
        return np.where((tnear <= tfar) & (tnear > EPS), tnear, np.inf)
    # upright cylinder: radius r, half-height r, centre at height r
    r = prim.radius
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = oc[:, 0] * d[:, 0] + oc[:, 1] * d[:, 1]
    c = oc[:, 0] ** 2 + oc[:, 1] ** 2 - r * r
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
        z_side = oc[:, 2] + t_side * d[:, 2]
        side_ok = (disc >= 0) & (a > 1e-12) & (np.abs(z_side) <= r) & (t_side > EPS)
        t_cap = (r - oc[:, 2]) / d[:, 2]
    px = oc[:, 0] + t_cap * d[:, 0]
    py = oc[:, 1] + t_cap * d[:, 1]
    cap_ok = (d[:, 2] < 0) & (px * px + py * py <= r * r) & (t_cap > EPS)
    return np.minimum(np.where(side_ok, t_side, np.inf), np.where(cap_ok, t_cap, np.inf))


def surface_normal(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """Outward unit normals of ``prim`` at surface points ``p`` (N, 3)."""
    q = p - prim.center
    if prim.shape == "sphere":
        return q / prim.radius
    if prim.shape == "cube":
        lq = _rotate_z(q, -prim.angle)
        axis = np.abs(lq).argmax(axis=1)
        n = np.zeros_like(lq)
        n[np.arange(len(lq)), axis] = np.sign(lq[np.arange(len(lq)), axis])
        return _rotate_z(n, prim.angle)
    n = np.zeros_like(q)
    radial = np.hypot(q[:, 0], q[:, 1])
    cap = q[:, 2] > prim.radius * (1.0 - 1e-6)
    n[cap, 2] = 1.0
    side = ~cap
    n[side, 0] = q[side, 0] / np.maximum(radial[side], 1e-9)
    n[side, 1] = q[side, 1] / np.maximum(radial[side], 1e-9)
    return n


def environment(direction: np.ndarray) -> np.ndarray:
    """The fake environment reflected by metal and glass: a sky gradient over a gray ground (linear)."""
    env = RENDER["env"]
    zenith, horizon, ground = (np.asarray(env[k], dtype=np.float64) for k in ("zenith", "horizon", "ground"))
    z = direction[:, 2:3]
    sky = horizon + (zenith - horizon) * np.clip(z, 0.0, 1.0)
    return np.where(z >= 0, sky, ground + (horizon - ground) * np.clip(1.0 + 4.0 * z, 0.0, 1.0))


def lamp_terms(light: LampLight, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit direction to the lamp, incoming radiance (N, 3) and distance at points ``p``."""
    if light.position is None:
        n = len(p)
        return np.broadcast_to(light.direction, (n, 3)), np.broadcast_to(light.radiance, (n, 3)), np.full(n, np.inf)
    to_lamp = light.position - p
    inv = 1.0 / np.sqrt(np.einsum("ij,ij->i", to_lamp, to_lamp))
    ldir = to_lamp * inv[:, None]
    aim = -light.position / math.sqrt(float(light.position @ light.position))
    emit = np.clip(-(ldir @ aim), 0.0, 1.0)
    return ldir, light.radiance[None, :] * (emit * inv * inv)[:, None], 1.0 / inv


def irradiance(
    p: np.ndarray,
    n: np.ndarray,
    view: np.ndarray,
    shininess: float | None,
    lights: list[LampLight],
    shadow: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse irradiance (hemisphere ambient + Lambert) and Blinn-Phong specular light, both (N, 3).

    ``shininess`` None skips the highlights (matte materials); the sun adds no highlight.
    """
    ambient = float(RENDER["ambient"]) * (0.6 + 0.4 * np.clip(n[:, 2:3], 0.0, 1.0))
    diffuse = ambient * np.ones((len(p), 3))
    spec = np.zeros((len(p), 3))
    for light in lights:
        ldir, radiance, _ = lamp_terms(light, p)
        if light.casts_shadow and shadow is not None:
            radiance = radiance * shadow[:, None]
        ndl = np.clip(np.einsum("ij,ij->i", n, ldir), 0.0, None)[:, None]
        diffuse += radiance * ndl
        if shininess is None or light.position is None:
            continue
        half = ldir + view
        half /= np.sqrt(np.einsum("ij,ij->i", half, half))[:, None]
        ndh = np.clip(np.einsum("ij,ij->i", n, half), 1e-4, None)[:, None]
        spec += radiance * (ndl > 0) * ndh**shininess
    return diffuse, spec


def mirror(n: np.ndarray, view: np.ndarray) -> np.ndarray:
    """The environment seen in the mirror direction (N, 3)."""
    return environment(2.0 * np.einsum("ij,ij->i", n, view)[:, None] * n - view)


def shade(
    p: np.ndarray,
    n: np.ndarray,
    view: np.ndarray,
    albedo: np.ndarray,
    params: dict[str, float],
    lights: list[LampLight],
    shadow: np.ndarray | None,
) -> np.ndarray:
    """Linear colour of opaque surface points: ambient + Lambert + Blinn-Phong per lamp + mirrored environment."""
    shiny = params["specular"] >= float(RENDER["min_specular"])
    diffuse, spec = irradiance(p, n, view, params["shininess"] if shiny else None, lights, shadow)
    color = albedo * diffuse * (1.0 - params["reflect"])
    if not shiny:
        return color
    color += params["specular"] * spec
    if params["reflect"] > 0:
        color += params["reflect"] * albedo * mirror(n, view)
    return color


def glass_layers(
    p: np.ndarray,
    n: np.ndarray,
    view: np.ndarray,
    albedo: np.ndarray,
    params: dict[str, float],
    lights: list[LampLight],
    shadow: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Glass as two sRGB-space layers: (transmission factor, added light) with ``out = behind * T + A``.

    The transmission is tinted by the colour squared; a fresnel rim reflects the environment.
    """
    rim = fresnel(n, view) * float(RENDER["glass_fresnel"])
    tint = np.clip(albedo * albedo * (float(RENDER["glass_tint"]) * (1.0 - params["alpha"])), 0.0, 1.0)
    transmission = tint ** (1.0 / 2.2) * (1.0 - rim)
    diffuse, spec = irradiance(p, n, view, params["shininess"], lights, shadow)
    added = albedo * diffuse * float(RENDER["glass_diffuse"]) * (1.0 - rim) + params["specular"] * spec
    return transmission, linear_to_srgb(added + rim * mirror(n, view))


def fresnel(n: np.ndarray, view: np.ndarray) -> np.ndarray:
    """Schlick-style rim factor in [0, 1] (N, 1)."""
    cos = np.clip(np.einsum("ij,ij->i", n, view), 0.0, 1.0)[:, None]
    return (1.0 - cos) ** 3


def ground_albedo(p: np.ndarray) -> np.ndarray:
    """Ground colour (N, 3, linear) with the four boundary lines of the visible square."""
    x, y = np.abs(p[:, 0]), np.abs(p[:, 1])
    reach = _SQUARE + _LINE_HALF
    on_line = ((np.abs(x - _SQUARE) <= _LINE_HALF) & (y <= reach)) | (
        (np.abs(y - _SQUARE) <= _LINE_HALF) & (x <= reach)
    )
    ground = np.asarray(GROUND["color"], dtype=np.float64)
    line = np.asarray(GROUND["line_color"], dtype=np.float64)
    return np.where(on_line[:, None], line, ground)


class NumpyRenderer(Renderer):
    """Analytic ray caster in numpy; exact instance masks."""

    name = "numpy"

    def __init__(self, size: tuple[int, int] = (320, 240)) -> None:
        super().__init__(size)
        self._rays: OrderedDict[Camera, np.ndarray] = OrderedDict()
        self._grounds: OrderedDict[tuple, _GroundLayer] = OrderedDict()

    def _camera_rays(self, camera: Camera) -> np.ndarray:
        rays = self._rays.get(camera)
        if rays is None:
            rays = camera.rays(self.size)[1]
            self._rays[camera] = rays
            if len(self._rays) > 8:
                self._rays.popitem(last=False)
        return rays

    def _trace(self, prims: list[Primitive], camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest object hit per pixel: (t (H, W), slot into ``prims`` or -1, unit rays (H, W, 3))."""
        w, h = self.size
        rays = self._camera_rays(camera)
        origin = np.asarray(camera.location, dtype=np.float64)
        depth = np.full((h, w), np.inf)
        slot = np.full((h, w), -1, dtype=np.int64)
        for k, prim in enumerate(prims):
            box = self._screen_box(prim, camera)
            if box is None:
                continue
            u0, u1, v0, v1 = box
            d = rays[v0:v1, u0:u1].reshape(-1, 3)
            t = intersect(prim, np.broadcast_to(origin, d.shape), d).reshape(v1 - v0, u1 - u0)
            win = t < depth[v0:v1, u0:u1]
            depth[v0:v1, u0:u1][win] = t[win]
            slot[v0:v1, u0:u1][win] = k
        return depth, slot, rays

    def _screen_box(self, prim: Primitive, camera: Camera) -> tuple[int, int, int, int] | None:
        """Pixel rectangle (u0, u1, v0, v1) that holds the object's projection, or None if off-screen."""
        w, h = self.size
        b = prim.bound_radius
        corners = prim.center + np.array([[sx, sy, sz] for sx in (-b, b) for sy in (-b, b) for sz in (-b, b)])
        u, v = camera.project(corners, self.size)
        u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 1, w)
        v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 1, h)
        if u0 >= u1 or v0 >= v1:
            return None
        return u0, u1, v0, v1

    def render_mask(self, state: State, camera: Camera) -> np.ndarray:
        check_inputs(state, camera)
        prims = primitives(state)
        _, slot, _ = self._trace(prims, camera)
        index = np.array([p.index for p in prims] + [-1], dtype=np.int64)
        return index[slot]

    def _ground(self, camera: Camera, lamps: list[Lamp], lights: list[LampLight], rays: np.ndarray) -> _GroundLayer:
        """The lit ground without shadows for this camera and lamp rig (cached: it does not depend on the objects)."""
        key = (camera, tuple(lamps))
        layer = self._grounds.get(key)
        if layer is None:
            layer = _GroundLayer(np.asarray(camera.location, dtype=np.float64), rays.reshape(-1, 3), lights)
            self._grounds[key] = layer
            if len(self._grounds) > 4:
                self._grounds.popitem(last=False)
        return layer

    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        lamps = check_inputs(state, camera, lamps)
        lights = lamp_lights(lamps)
        prims = primitives(state)
        depth, slot, rays = self._trace(prims, camera)
        w, h = self.size
        origin = np.asarray(camera.location, dtype=np.float64)
        d = rays.reshape(-1, 3)
        view = -d
        ground = self._ground(camera, lamps, lights, rays)
        image = ground.srgb.copy()
        shaded = ground.shadowed(prims)
        if shaded is not None:
            image[shaded[0]] = shaded[1]
        flat_slot = slot.reshape(-1)
        flat_depth = depth.reshape(-1)
        for k, prim in enumerate(prims):
            sel = np.flatnonzero(flat_slot == k)
            if sel.size == 0:
                continue
            p = origin + d[sel] * flat_depth[sel, None]
            n = surface_normal(prim, p)
            params = material_params(prim.material)
            shadow = self._shadow(p, prims, lights, skip=k)
            if params["alpha"] < 1.0:
                transmission, added = glass_layers(p, n, view[sel], prim.albedo, params, lights, shadow)
                image[sel] = np.clip(image[sel] * transmission + added, 0.0, 1.0)
            else:
                image[sel] = linear_to_srgb(shade(p, n, view[sel], prim.albedo, params, lights, shadow))
        return (image.reshape(h, w, 3) * 255.0 + 0.5).astype(np.uint8)

    @staticmethod
    def _shadow(p: np.ndarray, prims: list[Primitive], lights: list[LampLight], skip: int = -1) -> np.ndarray | None:
        """Light factor of the shadow lamp at points ``p``: 1 lit, ``1 - shadow_strength`` blocked."""
        caster = next((light for light in lights if light.casts_shadow), None)
        if caster is None:
            return None
        ldir, _, dist = lamp_terms(caster, p)
        lit = np.ones(len(p))
        strength = float(RENDER["shadow_strength"])
        for k, prim in enumerate(prims):
            if k == skip:
                continue
            oc = prim.center - p
            along = np.einsum("ij,ij->i", oc, ldir)
            miss2 = np.einsum("ij,ij->i", oc, oc) - along * along
            cand = np.flatnonzero((along > 0) & (miss2 < prim.bound_radius**2))
            if cand.size == 0:
                continue
            t = intersect(prim, p[cand] + ldir[cand] * EPS * 10, ldir[cand])
            blocked = cand[t < dist[cand]]
            lit[blocked] = 1.0 - strength
        return lit


class _GroundLayer:
    """The ground seen through every pixel, lit by every lamp; shadows are added per scene."""

    def __init__(self, origin: np.ndarray, d: np.ndarray, lights: list[LampLight]) -> None:
        with np.errstate(divide="ignore"):
            tg = np.where(d[:, 2] < 0, -origin[2] / d[:, 2], np.inf)
        on_ground = np.isfinite(tg)
        p = origin + d * np.where(on_ground, tg, 0.0)[:, None]
        far = ~on_ground | (np.abs(p[:, :2]).max(axis=1) > _EXTENT)
        self.points = p
        self.albedo = ground_albedo(p)
        self.rest = np.full((len(p), 3), float(RENDER["ambient"]))
        self.caster = next((light for light in lights if light.casts_shadow), None)
        self.key = np.zeros((len(p), 3))
        for light in lights:
            ldir, radiance, dist = lamp_terms(light, p)
            e = radiance * np.clip(ldir[:, 2:3], 0.0, None)
            if light is self.caster:
                self.key, self.key_dir, self.key_dist = e, ldir, dist
            else:
                self.rest += e
        self.ground_mask = ~far
        linear = self.albedo * (self.rest + self.key)
        linear[far] = np.asarray(RENDER["env"]["horizon"])
        self.srgb = linear_to_srgb(linear)

    def shadowed(self, prims: list[Primitive]) -> tuple[np.ndarray, np.ndarray] | None:
        """(pixel indices, their sRGB colour) of the ground in the shadow lamp's shadow, or None."""
        if self.caster is None or not prims:
            return None
        lamp = self.caster.position
        p = self.points
        lit = np.ones(len(p))
        strength = float(RENDER["shadow_strength"])
        for prim in prims:
            # the object's shadow lies inside the lamp's projection of its bounding box onto the ground
            b = prim.bound_radius
            corners = prim.center + np.array([[sx, sy, sz] for sx in (-b, b) for sy in (-b, b) for sz in (-b, b)])
            corners[:, 2] = np.minimum(corners[:, 2], lamp[2] - 1e-3)
            scale = lamp[2] / (lamp[2] - corners[:, 2])
            shadow_xy = lamp[:2] + (corners[:, :2] - lamp[:2]) * scale[:, None]
            lo = np.minimum(shadow_xy.min(axis=0), corners[:, :2].min(axis=0))
            hi = np.maximum(shadow_xy.max(axis=0), corners[:, :2].max(axis=0))
            cand = np.flatnonzero(
                (p[:, 0] >= lo[0]) & (p[:, 0] <= hi[0]) & (p[:, 1] >= lo[1]) & (p[:, 1] <= hi[1]) & self.ground_mask
            )
            if cand.size == 0:
                continue
            t = intersect(prim, p[cand], self.key_dir[cand])
            lit[cand[t < self.key_dist[cand]]] = 1.0 - strength
        idx = np.flatnonzero(lit < 1.0)
        if idx.size == 0:
            return None
        linear = self.albedo[idx] * (self.rest[idx] + self.key[idx] * lit[idx, None])
        return idx, linear_to_srgb(linear)


__all__ = ["NumpyRenderer", "intersect", "surface_normal"]
