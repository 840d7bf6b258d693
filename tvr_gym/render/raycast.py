"""The ``numpy`` renderer: an analytic, vectorised ray caster of the TRANCE scene.

It needs nothing but numpy, so it is the fallback where EGL is missing, and its masks are exact
(one ray through each pixel centre, the same rays as :meth:`Camera.rays`). Shading follows the
``gl`` renderer: Lambert + Blinn-Phong from the same lamps, a hard shadow from the shadow lamp, a
sky/ground reflection on metal and blended glass with a fresnel rim.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict

import numpy as np

from tvr_gym.core.options import DEFAULT_RENDER_SIZE
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.render.base import (
    GROUND,
    RENDER,
    LampLight,
    Primitive,
    Renderer,
    check_inputs,
    lamp_lights,
    linear_to_srgb,
    primitives,
    srgb_to_linear,
    surface,
)
from tvr_gym.render.rig import Camera, Lamp
from tvr_gym.render.shading import (
    OCCLUSION,
    fresnel,
    grain_noise,
    lamps,
    lamps_seen,
    normalize,
    open_floor,
    reflect,
    refract,
    shading_normal,
)
from tvr_gym.render.studio import (
    FLOOR_ALBEDO,
    STAGE,
    UPHILL,
    floor_bounce,
    irradiance_sh,
    lamp_terms,
    on_sheet,
    sh_irradiance,
    sheet_normal,
    studio_texture,
    trace_sheet,
)

EPS = 1e-4
GRAIN_WIDTH = float(RENDER["grain"]) / 255.0 * math.sqrt(12.0)
"""The width of uniform noise whose standard deviation is the spec's ``render.grain`` grey levels."""
_LINE_HALF = float(GROUND["line_width"]) / 2.0
_SQUARE = SPEC.visible_limit * SPEC.cell


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


def exit_point(prim: Primitive, p: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where rays starting on ``prim``'s surface at ``p`` and heading inside along ``d`` leave it:
    (distance (N,), outward normal there (N, 3)). The glass's sharp shape, as in the gl shader."""
    o = _rotate_z(p - prim.center, -prim.angle)
    ld = _rotate_z(d, -prim.angle)
    h = prim.half
    if prim.shape == "sphere":
        t = -2.0 * np.einsum("ij,ij->i", o, ld)
        return t, _rotate_z((o + t[:, None] * ld) / prim.radius, prim.angle)
    safe = np.where(np.abs(ld) < 1e-12, 1e-12, ld)
    n = np.zeros_like(o)
    if prim.shape == "cube":
        far = (np.sign(safe) * h - o) / safe
        axis = far.argmin(axis=1)
        rows = np.arange(len(o))
        t = far[rows, axis]
        n[rows, axis] = np.sign(safe[rows, axis])
        return t, _rotate_z(n, prim.angle)
    a = ld[:, 0] ** 2 + ld[:, 1] ** 2
    b = o[:, 0] * ld[:, 0] + o[:, 1] * ld[:, 1]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - h * h
    with np.errstate(divide="ignore", invalid="ignore"):
        side = np.where(a > 1e-12, (-b + np.sqrt(np.clip(b * b - a * c, 0.0, None))) / a, np.inf)
    cap = (np.sign(safe[:, 2]) * h - o[:, 2]) / safe[:, 2]
    use_side = side < cap
    t = np.where(use_side, side, cap)
    q = o + t[:, None] * ld
    radial = q[:, :2] / np.maximum(np.hypot(q[:, 0], q[:, 1]), 1e-12)[:, None]
    n[:, :2] = np.where(use_side[:, None], radial, 0.0)
    n[:, 2] = np.where(use_side, 0.0, np.sign(safe[:, 2]))
    return t, _rotate_z(n, prim.angle)


def object_frame(prim: Primitive, p: np.ndarray) -> np.ndarray:
    """World points (N, 3) in the object's frame (centred, unrotated)."""
    return _rotate_z(p - prim.center, -prim.angle)


def line_coverage(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How much of each pixel (H*W,) the boundary lines cover, box-filtered over the pixel's footprint
    on the ground (the gl ground shader's formula, with ``fwidth`` from neighbouring pixels)."""
    h, w = shape
    xy = points[:, :2].reshape(h, w, 2)
    fw = np.abs(np.gradient(xy, axis=1)) + np.abs(np.gradient(xy, axis=0))
    fw = np.maximum(fw.reshape(-1, 2), 1e-5)
    a = np.abs(points[:, :2])
    d = np.abs(a - _SQUARE)
    overlap = np.minimum(d + 0.5 * fw, _LINE_HALF) - np.maximum(d - 0.5 * fw, -_LINE_HALF)
    cov = np.minimum(np.clip(overlap, 0.0, None) / fw, 1.0)
    reach = _SQUARE + _LINE_HALF
    return np.maximum(cov[:, 0] * (a[:, 1] <= reach), cov[:, 1] * (a[:, 0] <= reach))


class NumpyRenderer(Renderer):
    """Analytic ray caster in numpy; exact instance masks."""

    name = "numpy"

    def __init__(self, size: tuple[int, int] = DEFAULT_RENDER_SIZE, grain: bool = True) -> None:
        super().__init__(size)
        self.grain = bool(grain)
        self._grain = GRAIN_WIDTH if grain else 0.0
        self._rays: OrderedDict[Camera, np.ndarray] = OrderedDict()
        self._grounds: OrderedDict[tuple, _GroundLayer] = OrderedDict()
        self._studio_cache: tuple | None = None

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
        """The lit sheet seen through every pixel for this camera and lamp rig, without object shadows
        (cached: it does not depend on the objects)."""
        key = (camera, tuple(lamps))
        layer = self._grounds.get(key)
        if layer is None:
            layer = _GroundLayer(np.asarray(camera.location, dtype=np.float64), rays, lights)
            self._grounds[key] = layer
            if len(self._grounds) > 4:
                self._grounds.popitem(last=False)
        return layer

    def _studio(self, lamps: list[Lamp], lights: list[LampLight]) -> _Studio:
        key = tuple(lamps)
        if self._studio_cache is None or self._studio_cache[0] != key:
            self._studio_cache = (key, _Studio(lights))
        return self._studio_cache[1]

    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        lamps = check_inputs(state, camera, lamps)
        lights = lamp_lights(lamps)
        prims = primitives(state)
        glass = [k for k, prim in enumerate(prims) if surface(prim.material).glass]
        opaque = [k for k in range(len(prims)) if k not in glass]
        depth, slot, rays = self._trace([prims[k] for k in opaque], camera)
        w, h = self.size
        origin = np.asarray(camera.location, dtype=np.float64)
        d = rays.reshape(-1, 3)
        ground = self._ground(camera, lamps, lights, rays)
        studio = self._studio(lamps, lights)
        seed = zlib.crc32(origin.tobytes())
        linear = ground.linear.copy()
        shaded = ground.shadowed(prims, lambda p: self._shadow(p, prims, lights))
        if shaded is not None:
            linear[shaded[0]] = shaded[1]
        flat_slot, flat_depth = slot.reshape(-1), depth.reshape(-1)
        for s_, k in enumerate(opaque):  # the opaque scene first: glass refracts it
            sel = np.flatnonzero(flat_slot == s_)
            if sel.size:
                p = origin + d[sel] * flat_depth[sel, None]
                linear[sel] = self._shade(prims[k], p, -d[sel], prims, lights, studio, k)
        image = linear_to_srgb(linear) + grain_noise(len(d), self._grain, seed)[:, None]
        for k in sorted(glass, key=lambda k: -float(np.linalg.norm(prims[k].center - origin))):  # back to front
            sel, t = self._hits(prims[k], camera, flat_depth)
            if sel.size:
                p = origin + d[sel] * t[:, None]
                color = self._glass(prims[k], p, -d[sel], image, camera, prims, lights, studio, k)
                image[sel] = linear_to_srgb(color) + grain_noise(sel.size, self._grain, seed + k)[:, None]
        return (np.clip(image, 0.0, 1.0).reshape(h, w, 3) * 255.0 + 0.5).astype(np.uint8)

    def _hits(self, prim: Primitive, camera: Camera, nearer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat pixel indices where ``prim`` is hit before the distance ``nearer`` (H*W,), and the distances."""
        box = self._screen_box(prim, camera)
        if box is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        u0, u1, v0, v1 = box
        w = self.size[0]
        rays = self._camera_rays(camera)[v0:v1, u0:u1].reshape(-1, 3)
        origin = np.broadcast_to(np.asarray(camera.location, dtype=np.float64), rays.shape)
        t = intersect(prim, origin, rays)
        rows, cols = np.divmod(np.arange(len(t)), u1 - u0)
        flat = (rows + v0) * w + cols + u0
        keep = t < nearer[flat]
        return flat[keep], t[keep]

    def _shade(self, prim, p, v, prims, lights, studio: _Studio, k: int) -> np.ndarray:
        """Linear colour of rubber or metal at surface points ``p`` seen along ``-v``."""
        surf = surface(prim.material)
        n = self._normal(prim, p)
        shadow = self._shadow(p, prims, lights, skip=k)
        diffuse, glossy = lamps(p, n, v, surf.lobes, lights, shadow)
        r = reflect(-v, n)
        if surf.kind == "conductor":
            return prim.albedo * (glossy + studio.radiance(p, r, surf.lobes, prim, self._floor_shadow(prims, lights)))
        f = fresnel(np.einsum("ij,ij->i", n, v), surf.ior)[:, None]
        indirect = sh_irradiance(studio.sh, n) * (1.0 - OCCLUSION * (0.5 - 0.5 * n[:, 2:3]))
        body = prim.albedo * (diffuse + indirect)
        return body * (1.0 - f) + (glossy + sh_irradiance(studio.sh, r)) * f

    def _glass(self, prim, p, v, image, camera, prims, lights, studio: _Studio, k: int) -> np.ndarray:
        """Linear colour of glass at surface points ``p``: Fresnel reflection of the lamps and the studio,
        plus the light that crosses the object from what ``image`` (sRGB, drawn so far) shows behind it,
        tinted by the colour on the way in and on the way out."""
        surf = surface(prim.material)
        n = self._normal(prim, p)
        shadow = self._shadow(p, prims, lights, skip=k)
        _, glossy = lamps(p, n, v, surf.lobes, lights, shadow)
        f = fresnel(np.einsum("ij,ij->i", n, v), surf.ior)[:, None]
        floor_shadow = self._floor_shadow(prims, lights)
        reflected = glossy + studio.radiance(p, reflect(-v, n), surf.lobes, prim, floor_shadow)
        inside = refract(-v, n, 1.0 / surf.ior)
        q = p.copy()
        leave_dir = np.zeros_like(p)
        leave_weight = np.zeros(len(p))
        pending = np.abs(inside).sum(axis=1) > 0
        for _ in range(2):  # one total internal reflection at most, as in the gl shader
            idx = np.flatnonzero(pending)
            if idx.size == 0:
                break
            t, m = exit_point(prim, q[idx], inside[idx])
            q[idx] += t[:, None] * inside[idx]
            bent = refract(inside[idx], -m, surf.ior)
            out = np.abs(bent).sum(axis=1) > 0
            leave_dir[idx[out]] = normalize(bent[out])
            leave_weight[idx[out]] = 1.0 - fresnel(np.einsum("ij,ij->i", inside[idx[out]], m[out]), 1.0 / surf.ior)
            inside[idx[~out]] = reflect(inside[idx[~out]], -m[~out])
            pending[idx[out]] = False
        behind = np.zeros_like(p)
        left = leave_weight > 0
        if left.any():
            seen = self._behind(q[left], leave_dir[left], image, camera, prim, studio, floor_shadow)
            behind[left] = leave_weight[left, None] * prim.albedo * seen
        return prim.albedo * (f * reflected + (1.0 - f) * behind)

    def _floor_shadow(self, prims: list[Primitive], lights: list[LampLight]):
        return lambda q: self._shadow(q, prims, lights)

    def _behind(self, q, d, image, camera, prim, studio: _Studio, floor_shadow) -> np.ndarray:
        """What ``image`` shows along rays leaving the glass at ``q`` in directions ``d`` (linear)."""
        out = studio.sky(d) + lamps_seen(q, d, studio.lights)
        down = d[:, 2] < -0.02
        if down.any():
            g = q[down] - d[down] * (q[down, 2] / d[down, 2])[:, None]
            u, v = camera.project(g, self.size)
            w, h = self.size
            on = (u >= 0) & (u < w) & (v >= 0) & (v < h) & np.isfinite(u) & np.isfinite(v)
            seen = floor_light(g, studio.lights, floor_shadow)
            iu, iv = np.clip(u.astype(np.int64), 0, w - 1), np.clip(v.astype(np.int64), 0, h - 1)
            shown = srgb_to_linear(np.clip(image.reshape(h, w, 3)[iv, iu], 0.0, 1.0))
            seen = np.where(on[:, None], shown, seen)
            seen = seen * open_floor(g, prim.center, prim.angle, prim.half, prim.shape)[:, None]
            out[down] = np.clip(seen - own_shadow(g, prim, studio.lights), 0.0, None)
        return out

    @staticmethod
    def _normal(prim: Primitive, p: np.ndarray) -> np.ndarray:
        local = object_frame(prim, p)
        mesh = object_frame(prim, surface_normal(prim, p) + prim.center)
        return _rotate_z(shading_normal(prim.shape, local, prim.half, mesh), prim.angle)

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


def own_shadow(q: np.ndarray, prim: Primitive, lights: list[LampLight]) -> np.ndarray:
    """The light of the lamps ``prim`` hides from floor points ``q`` (N, 3), besides the shadow lamp
    (whose shadows are drawn anyway): the object's own shadows, as the floor behind glass shows them."""
    hidden = np.zeros((len(q), 3))
    for light in lights:
        if light.casts_shadow:
            continue
        ldir, e, _ = lamp_terms(light, q)
        blocked = np.isfinite(intersect(prim, q, np.ascontiguousarray(ldir)))
        hidden += np.where(blocked[:, None], e * np.clip(ldir[:, 2:3], 0.0, None), 0.0)
    return FLOOR_ALBEDO * hidden


def floor_light(q: np.ndarray, lights: list[LampLight], shadow) -> np.ndarray:
    """The flat floor's radiance at points ``q`` (N, 3) with the shadow lamp's shadows; black off the sheet."""
    up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), q.shape)
    rest = np.zeros((len(q), 3))
    key = np.zeros((len(q), 3))
    for light in lights:
        ldir, e, _ = lamp_terms(light, q)
        term = e * np.clip(np.einsum("ij,ij->i", up, ldir), 0.0, None)[:, None]
        if light.casts_shadow:
            key = term
        else:
            rest += term
    lit = shadow(q)
    if lit is not None:
        key = key * lit[:, None]
    s, e = floor_bounce()
    bounce = np.interp(q[:, :2] @ UPHILL, s, e)[:, None]
    return np.where(on_sheet(q)[:, None], FLOOR_ALBEDO * (rest + key + bounce), 0.0)


class _Studio:
    """The studio for one lamp rig: its texture with blurred levels and its irradiance SH."""

    def __init__(self, lights: list[LampLight]) -> None:
        self.lights = lights
        texture = studio_texture(lights)
        self.sh = irradiance_sh(texture)
        self.levels = [texture.astype(np.float64)]
        while min(self.levels[-1].shape[:2]) > 1:
            t = self.levels[-1]
            self.levels.append(0.25 * (t[0::2, 0::2] + t[1::2, 0::2] + t[0::2, 1::2] + t[1::2, 1::2]))

    def sky(self, d: np.ndarray, level: int = 0) -> np.ndarray:
        """The studio texture along directions ``d`` (N, 3) at blur ``level`` (bilinear)."""
        tex = self.levels[min(level, len(self.levels) - 1)]
        h, w = tex.shape[:2]
        u = (np.arctan2(d[:, 1], d[:, 0]) / (2 * np.pi) + 0.5) * w - 0.5
        v = (np.arcsin(np.clip(d[:, 2], -1.0, 1.0)) / np.pi + 0.5) * h - 0.5
        u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fu, fv = (u - u0)[:, None], (v - v0)[:, None]
        u0, u1 = u0 % w, (u0 + 1) % w
        v0, v1 = np.clip(v0, 0, h - 1), np.clip(v0 + 1, 0, h - 1)
        top = tex[v0, u0] * (1 - fu) + tex[v0, u1] * fu
        bottom = tex[v1, u0] * (1 - fu) + tex[v1, u1] * fu
        return top * (1 - fv) + bottom * fv

    def radiance(self, p, d, lobes, prim: Primitive, shadow) -> np.ndarray:
        """What rays from ``p`` along ``d`` see of the studio through the material's ``lobes``:
        the floor (with shadows, dark under the object itself) or the blurred texture."""
        out = np.zeros((len(p), 3))
        w = self.levels[0].shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(d[:, 2] < -0.05, -p[:, 2] / d[:, 2], np.inf)
        floor = t < float(RENDER["irradiance_extent"])
        if floor.any():
            q = p[floor] + t[floor, None] * d[floor]
            weight = sum(lw for lw, _ in lobes)
            seen = (
                floor_light(q, self.lights, shadow)
                * open_floor(q, prim.center, prim.angle, prim.half, prim.shape)[:, None]
            )
            out[floor] = weight * seen
        sky = ~floor
        if sky.any():
            for lw, alpha in lobes:
                level = int(round(math.log2(max(2.0 * max(alpha, 0.005) * w / (2 * np.pi), 1.0))))
                out[sky] += lw * self.sky(d[sky], level)
        return out


class _GroundLayer:
    """The sheet seen through every pixel, lit by every lamp; object shadows are added per scene."""

    def __init__(self, origin: np.ndarray, rays: np.ndarray, lights: list[LampLight]) -> None:
        h, w = rays.shape[:2]
        d = rays.reshape(-1, 3)
        points, hit = trace_sheet(origin, d)
        self.points, self.hit = points, hit
        s = points[:, :2] @ UPHILL
        normals = sheet_normal(s)
        cover = line_coverage(points, (h, w))
        albedo = FLOOR_ALBEDO + (float(STAGE["line_albedo"]) - FLOOR_ALBEDO) * cover[:, None]
        self.albedo = albedo
        self.caster = next((light for light in lights if light.casts_shadow), None)
        rest = np.zeros((len(d), 3))
        self.key = np.zeros((len(d), 3))
        for light in lights:
            ldir, e, _ = lamp_terms(light, points)
            term = e * np.clip(np.einsum("ij,ij->i", normals, ldir), 0.0, None)[:, None]
            if light is self.caster:
                self.key = term
            else:
                rest += term
        bounce_s, bounce_e = floor_bounce()
        self.rest = rest + np.interp(s, bounce_s, bounce_e)[:, None]
        self.linear = np.where(hit[:, None], albedo * (self.rest + self.key), 0.0)

    def shadowed(self, prims: list[Primitive], shadow) -> tuple[np.ndarray, np.ndarray] | None:
        """(pixel indices, linear colour) of the ground in the shadow lamp's shadow, or None."""
        if self.caster is None or not prims:
            return None
        lamp = self.caster.position
        p = self.points
        cand_all = []
        for prim in prims:
            # the object's shadow lies inside the lamp's projection of its bounding box onto the ground
            b = prim.bound_radius
            corners = prim.center + np.array([[sx, sy, sz] for sx in (-b, b) for sy in (-b, b) for sz in (-b, b)])
            corners[:, 2] = np.minimum(corners[:, 2], lamp[2] - 1e-3)
            scale = lamp[2] / (lamp[2] - corners[:, 2])
            shadow_xy = lamp[:2] + (corners[:, :2] - lamp[:2]) * scale[:, None]
            lo = np.minimum(shadow_xy.min(axis=0), corners[:, :2].min(axis=0))
            hi = np.maximum(shadow_xy.max(axis=0), corners[:, :2].max(axis=0))
            cand_all.append(
                np.flatnonzero(
                    (p[:, 0] >= lo[0]) & (p[:, 0] <= hi[0]) & (p[:, 1] >= lo[1]) & (p[:, 1] <= hi[1]) & self.hit
                )
            )
        cand = np.unique(np.concatenate(cand_all))
        if cand.size == 0:
            return None
        lit = shadow(p[cand])
        dark = lit < 1.0
        if not dark.any():
            return None
        idx = cand[dark]
        return idx, self.albedo[idx] * (self.rest[idx] + self.key[idx] * lit[dark, None])


__all__ = ["NumpyRenderer", "exit_point", "intersect", "surface_normal"]
