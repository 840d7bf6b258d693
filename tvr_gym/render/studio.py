"""The studio around the objects, as the ``gl`` and ``numpy`` renderers light and reflect it.

The official scene stands on one diffuse sheet (spec ``stage``): a flat floor that curves up into a
backdrop wall, under a black world. What an object reflects or receives as indirect light is this
sheet lit by the lamps. This module computes, per lamp rig:

- :func:`floor_radiance` — the light leaving the floor at any point (what the camera sees of the
  ground, without object shadows);
- :func:`studio_texture` — every direction seen from above the scene centre (the lit floor and
  backdrop wall, or black): an equirectangular texture that metal and glass reflect;
- :func:`irradiance_sh` — the light that texture casts on a surface of any orientation
  (9 spherical-harmonic coefficients): the indirect light of matte surfaces.

Units: a diffuse surface of albedo ``a`` under irradiance ``E`` (``lamp_irradiance``) shows ``a * E``;
so radiance and irradiance share one linear scale (``render.exposure`` sets it).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tvr_gym.core.spec import SPEC
from tvr_gym.render.base import RENDER, LampLight

STAGE = SPEC.raw["stage"]
UPHILL = np.asarray(STAGE["uphill"], dtype=np.float64)
LATERAL = np.asarray(STAGE["lateral"], dtype=np.float64)
PROFILE = np.asarray(STAGE["profile"], dtype=np.float64)
"""(s, z) pairs: the sheet's height z at uphill distance s from the scene centre."""
FLOOR_ALBEDO = np.full(3, float(STAGE["albedo"]))
_STUDIO = RENDER["studio"]
FLAT_END = float(PROFILE[PROFILE[:, 1] <= float(_STUDIO["flat_below"])][-1, 0])
"""Up to this uphill distance the sheet counts as flat floor (its height stays below
``render.studio.flat_below``): rays meet it exactly; further on, they march."""
EYE = np.array([0.0, 0.0, float(_STUDIO["eye_height"])])
"""Where :func:`studio_texture` looks from: above the scene centre."""
STUDIO_TEXELS = tuple(int(v) for v in _STUDIO["texels"])


def lamp_terms(light: LampLight, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit direction to the lamp, its irradiance on a surface facing it (N, 3), and distance at ``p``.

    Area lamps face the origin: their light falls off with the cosine of the angle off their aim.
    """
    if light.position is None:
        n = len(p)
        return np.broadcast_to(light.direction, (n, 3)), np.broadcast_to(light.radiance, (n, 3)), np.full(n, np.inf)
    to_lamp = light.position - p
    inv = 1.0 / np.sqrt(np.einsum("ij,ij->i", to_lamp, to_lamp))
    ldir = to_lamp * inv[:, None]
    aim = -light.position / math.sqrt(float(light.position @ light.position))
    emit = np.clip(-(ldir @ aim), 0.0, 1.0)
    return ldir, light.radiance[None, :] * (emit * inv * inv)[:, None], 1.0 / inv


def lamp_irradiance(p: np.ndarray, n: np.ndarray, lights: list[LampLight]) -> np.ndarray:
    """Irradiance (N, 3) from every lamp and the sun at points ``p`` with normals ``n``, unshadowed."""
    e = np.zeros((len(p), 3))
    for light in lights:
        ldir, radiance, _ = lamp_terms(light, p)
        e += radiance * np.clip(np.einsum("ij,ij->i", n, ldir), 0.0, None)[:, None]
    return e


def sheet_height(s: np.ndarray) -> np.ndarray:
    """Height of the sheet at uphill distance ``s`` (flat floor, then the curve of the wall)."""
    return np.interp(s, PROFILE[:, 0], PROFILE[:, 1])


def sheet_normal(s: np.ndarray) -> np.ndarray:
    """Unit normals (N, 3) of the sheet at uphill distance ``s``."""
    ds = 0.05
    slope = (sheet_height(s + ds) - sheet_height(s - ds)) / (2 * ds)
    n = np.zeros((len(s), 3))
    n[:, :2] = -slope[:, None] * UPHILL[None, :]
    n[:, 2] = 1.0
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def on_sheet(p: np.ndarray) -> np.ndarray:
    """Whether horizontal positions ``p`` (N, >=2) lie within the sheet's extent."""
    s = p[:, :2] @ UPHILL
    lateral = p[:, :2] @ LATERAL
    lo, hi = STAGE["lateral_extent"]
    return (s >= PROFILE[0, 0]) & (s <= PROFILE[-1, 0]) & (lateral >= lo) & (lateral <= hi)


def trace_sheet(origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hit of rays ``origin + t d`` with the sheet: (points (N, 3), hit mask (N,)).

    The flat floor (uphill distance up to :data:`FLAT_END`) is hit exactly; the rising
    part is probed at ``render.studio.march_steps`` even steps across its uphill range, and the
    crossing refined linearly (the gl renderer's studio pass does the same on the GPU).
    """
    s0 = origin[:2] @ UPHILL
    ds = d[:, :2] @ UPHILL
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 2] < 0, -origin[2] / d[:, 2], np.inf)
        t_in = np.where(ds > 0, np.maximum((FLAT_END - s0) / ds, 0.0), np.inf)
        t_out = np.where(ds > 0, (PROFILE[-1, 0] - s0) / ds, np.inf)
    floor_hit = np.isfinite(t_floor) & (s0 + np.where(np.isfinite(t_floor), t_floor, 0.0) * ds <= FLAT_END)
    steps = int(_STUDIO["march_steps"])
    wall = ~floor_hit & np.isfinite(t_in)
    t = np.where(floor_hit, t_floor, np.inf)
    if wall.any():
        frac = np.linspace(0.0, 1.0, steps)
        tw = t_in[wall, None] + frac[None, :] * (t_out[wall] - t_in[wall])[:, None]
        p = origin[None, None, :] + tw[..., None] * d[wall, None, :]
        above = p[..., 2] - sheet_height(p[..., :2] @ UPHILL)
        below = above <= 0.0
        crossed = below.any(axis=1)
        k = np.maximum(below.argmax(axis=1), 1)
        rows = np.arange(len(tw))
        a0, a1 = above[rows, k - 1], above[rows, k]
        mix = np.clip(a0 / np.maximum(a0 - a1, 1e-12), 0.0, 1.0)
        hit_t = np.where(below[:, 0], tw[:, 0], tw[rows, k - 1] + mix * (tw[rows, k] - tw[rows, k - 1]))
        t[np.flatnonzero(wall)[crossed]] = hit_t[crossed]
    hit = np.isfinite(t)
    points = origin[None, :] + np.where(hit, t, 0.0)[:, None] * d
    return points, hit & on_sheet(points)


def studio_radiance(origin: np.ndarray, d: np.ndarray, lights: list[LampLight]) -> np.ndarray:
    """Radiance (N, 3) seen from ``origin`` along unit directions ``d``: the lit sheet, else black."""
    points, hit = trace_sheet(origin, d)
    out = np.zeros((len(d), 3))
    if hit.any():
        p = points[hit]
        n = sheet_normal(p[:, :2] @ UPHILL)
        out[hit] = FLOOR_ALBEDO * lamp_irradiance(p, n, lights)
    return out


def floor_radiance(p: np.ndarray, lights: list[LampLight]) -> np.ndarray:
    """Radiance (N, 3) leaving the flat floor at points ``p`` (z = 0), unshadowed; black off the sheet."""
    up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), p.shape)
    return np.where(on_sheet(p)[:, None], FLOOR_ALBEDO * lamp_irradiance(p, up, lights), 0.0)


@functools.lru_cache(maxsize=1)
def floor_bounce() -> tuple[np.ndarray, np.ndarray]:
    """Light the sheet receives from the rest of the sheet (one bounce), by uphill distance:
    (s values, irradiance (N,)). Near the backdrop wall the floor gets a fifth more than its direct
    light. Computed once, for the unjittered lamps; it is a small, smooth correction.
    """
    from tvr_gym.render.base import default_lamps, lamp_lights

    n_theta, n_phi = 12, 24
    theta = (np.arange(n_theta) + 0.5) / n_theta * np.pi / 2
    phi = (np.arange(n_phi) + 0.5) / n_phi * 2 * np.pi
    theta, phi = np.meshgrid(theta, phi, indexing="ij")
    d = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1).reshape(-1, 3)
    cosine = (np.cos(theta) * np.sin(theta) * (np.pi / 2 / n_theta) * (2 * np.pi / n_phi)).reshape(-1) / np.pi
    lights = lamp_lights(default_lamps())
    s = np.linspace(PROFILE[0, 0], PROFILE[-1, 0], int(_STUDIO["bounce_texels"]))
    e = np.empty(len(s))
    for k, sk in enumerate(s):
        q = np.array([*(sk * UPHILL), float(sheet_height(np.array([sk]))[0]) + 1e-3])
        e[k] = float((studio_radiance(q, d, lights).mean(axis=1) * cosine).sum())
    return s, e


def studio_directions(width: int, height: int) -> np.ndarray:
    """Unit directions (height, width, 3) at the texel centres of the studio texture: columns are
    azimuth (atan2(y, x) from -pi to pi), rows elevation from straight down (row 0) to straight up."""
    az = (np.arange(width) + 0.5) / width * 2 * np.pi - np.pi
    el = (np.arange(height) + 0.5) / height * np.pi - np.pi / 2
    el, az = np.meshgrid(el, az, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def studio_texture(lights: list[LampLight]) -> np.ndarray:
    """The studio seen from :data:`EYE` in every direction (float32 (H, W, 3), :func:`studio_directions`)."""
    w, h = STUDIO_TEXELS
    d = studio_directions(w, h).reshape(-1, 3)
    return studio_radiance(EYE, d, lights).reshape(h, w, 3).astype(np.float32)


def _sh_basis(d: np.ndarray) -> np.ndarray:
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    return np.stack(
        [
            np.full_like(x, 0.282095),
            0.488603 * y,
            0.488603 * z,
            0.488603 * x,
            1.092548 * x * y,
            1.092548 * y * z,
            0.315392 * (3 * z * z - 1),
            1.092548 * x * z,
            0.546274 * (x * x - y * y),
        ],
        axis=1,
    )


_COSINE_LOBE = np.array([math.pi] + [2 * math.pi / 3] * 3 + [math.pi / 4] * 5)
"""The clamped-cosine kernel per SH band (Ramamoorthi and Hanrahan 2001)."""


@functools.lru_cache(maxsize=4)
def _sh_projection(width: int, height: int) -> np.ndarray:
    """(9, H*W): texel radiance -> irradiance SH coefficients (solid angle, basis and cosine kernel / pi)."""
    d = studio_directions(width, height).reshape(-1, 3)
    weight = np.sqrt(np.clip(1.0 - d[:, 2] ** 2, 0.0, None)) * (np.pi / height) * (2 * np.pi / width)
    return (_sh_basis(d) * weight[:, None]).T * (_COSINE_LOBE[:, None] / math.pi)


def irradiance_sh(texture: np.ndarray) -> np.ndarray:
    """9 SH coefficients (9, 3) of the irradiance that a :func:`studio_texture` casts, divided by pi
    to match :func:`lamp_irradiance` (a diffuse surface of albedo ``a`` and normal ``n`` shows ``a * E(n)``)."""
    h, w = texture.shape[:2]
    return (_sh_projection(w, h) @ texture.reshape(-1, 3).astype(np.float64)).astype(np.float32)


def sh_irradiance(coeffs: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Irradiance (N, 3) for unit normals ``n`` from :func:`irradiance_sh` coefficients."""
    return np.clip(_sh_basis(n) @ coeffs, 0.0, None)


__all__ = [
    "EYE",
    "STUDIO_TEXELS",
    "floor_bounce",
    "floor_radiance",
    "irradiance_sh",
    "lamp_irradiance",
    "lamp_terms",
    "on_sheet",
    "sh_irradiance",
    "sheet_height",
    "studio_directions",
    "studio_texture",
    "studio_radiance",
    "trace_sheet",
]
