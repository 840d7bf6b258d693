"""The material models of the ``numpy`` renderer, term for term those of the ``gl`` renderer's shaders.

All arrays are (N, 3) points, normals or directions, unit where it matters; colours are linear.
See ``docs/rendering.md`` for the model: Cycles' rubber, metal and glass set-ups of the official
scene, lit by the lamps and by the studio (:mod:`tvr_gym.render.studio`).
"""

from __future__ import annotations

import math

import numpy as np

from tvr_gym.core.spec import SPEC
from tvr_gym.render.base import RENDER, LampLight
from tvr_gym.render.studio import lamp_terms

BEVEL = {shape: float(v) for shape, v in SPEC.raw["bevel"].items() if shape in SPEC.values["shape"]}
CONTACT = float(RENDER["contact"])
OCCLUSION = float(RENDER["occlusion"])


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products (N,)."""
    return np.einsum("ij,ij->i", a, b)


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def reflect(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``d`` mirrored about the normals ``n`` (GLSL ``reflect``)."""
    return d - 2.0 * dot(d, n)[:, None] * n


def refract(d: np.ndarray, n: np.ndarray, eta: float | np.ndarray) -> np.ndarray:
    """GLSL ``refract``: ``d`` bent through a surface of normal ``n`` (facing ``d``) with index ratio
    ``eta``; zero rows where the light is totally reflected."""
    cos = dot(n, d)
    k = 1.0 - eta * eta * (1.0 - cos * cos)
    out = eta * d - (eta * cos + np.sqrt(np.clip(k, 0.0, None)))[:, None] * n
    return np.where((k >= 0.0)[:, None], out, 0.0)


def fresnel(cos: np.ndarray, eta: float) -> np.ndarray:
    """Unpolarised Fresnel reflectance of a dielectric boundary (index ratio ``eta``), as Cycles computes it."""
    c = np.abs(cos)
    g2 = eta * eta - 1.0 + c * c
    g = np.sqrt(np.clip(g2, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (g - c) / (g + c)
        b = (c * (g + c) - 1.0) / (c * (g - c) + 1.0)
        f = 0.5 * a * a * (1.0 + b * b)
    return np.where(g2 < 0.0, 1.0, np.nan_to_num(f, nan=1.0))


def ggx(n: np.ndarray, v: np.ndarray, ldir: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """Radiance a GGX lobe of width ``alpha`` reflects toward ``v`` per unit irradiance from ``ldir`` (N,)."""
    nl = dot(n, ldir)
    h = normalize(ldir + v)
    nh = np.clip(dot(n, h), 0.0, None)
    nv = np.clip(dot(n, v), 1e-3, None)
    a2 = np.asarray(alpha) ** 2
    q = nh * nh * (a2 - 1.0) + 1.0
    k = 0.5 * np.asarray(alpha)
    nlc = np.clip(nl, 1e-6, None)
    g = nlc / (nlc * (1.0 - k) + k) * nv / (nv * (1.0 - k) + k)
    with np.errstate(divide="ignore", invalid="ignore"):
        lobe = a2 / (q * q) * g / (4.0 * nv)
    return np.where(nl > 0.0, np.nan_to_num(lobe), 0.0)


def lamps(
    p: np.ndarray,
    n: np.ndarray,
    v: np.ndarray,
    lobes: tuple[tuple[float, float], ...],
    lights: list[LampLight],
    shadow: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Direct light at ``p``: (diffuse irradiance, radiance the glossy ``lobes`` reflect), both (N, 3).

    ``shadow`` scales the shadow lamp's light; a lamp's reflection is as wide as the lamp looks.
    """
    diffuse = np.zeros((len(p), 3))
    glossy = np.zeros((len(p), 3))
    for light in lights:
        ldir, e, dist = lamp_terms(light, p)
        if light.casts_shadow and shadow is not None:
            e = e * shadow[:, None]
        diffuse += e * np.clip(dot(n, ldir), 0.0, None)[:, None]
        spread = 0.25 * light.size / dist if light.position is not None else np.full(len(p), 0.25 * light.size)
        g = sum(w * ggx(n, v, ldir, np.minimum(np.sqrt(a * a + spread * spread), 1.0)) for w, a in lobes)
        glossy += e * np.asarray(g)[:, None]
    return diffuse, glossy


def source(d: np.ndarray, ldir: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """GGX's distribution as the image of a round source of angular radius ``alpha`` centred on
    ``ldir``, seen along ``d`` (N,); it integrates to 1 over the sphere."""
    c = dot(d, ldir)
    a2 = np.asarray(alpha) ** 2
    q = c * c * (a2 - 1.0) + 1.0
    return np.where(c > 0.0, a2 / (math.pi * q * q), 0.0)


def lamps_seen(q: np.ndarray, d: np.ndarray, lights: list[LampLight]) -> np.ndarray:
    """The lamps and the sun seen along rays from ``q`` in directions ``d`` (N, 3): what a ray
    refracted through glass meets when it leaves upward."""
    seen = np.zeros((len(q), 3))
    for light in lights:
        ldir, e, dist = lamp_terms(light, q)
        alpha = 0.5 * light.size / dist if light.position is not None else 0.5 * light.size
        seen += e * source(d, ldir, alpha)[:, None]
    return seen


def shading_normal(shape: str, local: np.ndarray, half: float, mesh_normal: np.ndarray) -> np.ndarray:
    """The normal of the official mesh's rounded edges at object-frame points ``local`` (N, 3) of a
    sharp ``shape`` of half-extent ``half``; ``mesh_normal`` (object frame) where the surface is flat."""
    bevel = BEVEL.get(shape, 0.0)
    inner = half * (1.0 - bevel)
    if shape == "cube":
        d = local - np.clip(local, -inner, inner)
        edge = dot(d, d) > 1e-12
        return np.where(edge[:, None], normalize(d), mesh_normal)
    if shape == "cylinder":
        r = np.hypot(local[:, 0], local[:, 1])
        dr, dz = np.clip(r - inner, 0.0, None), np.clip(np.abs(local[:, 2]) - inner, 0.0, None)
        edge = (dr > 0.0) & (dz > 0.0)
        radial = local[:, :2] / np.maximum(r, 1e-12)[:, None]
        rounded = normalize(np.column_stack([radial * dr[:, None], np.sign(local[:, 2]) * dz]))
        return np.where(edge[:, None], rounded, mesh_normal)
    return mesh_normal


def open_floor(q: np.ndarray, center: np.ndarray, angle: float, half: float, shape: str) -> np.ndarray:
    """1 on open floor, falling to ``render.contact`` on the floor under the object itself (N,)."""
    c, s = math.cos(angle), math.sin(angle)
    rel = q[:, :2] - center[:2]
    o = np.abs(np.column_stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]])) / half
    inside = o.max(axis=1) if shape == "cube" else np.hypot(o[:, 0], o[:, 1])
    t = np.clip((inside - 0.85) / 0.3, 0.0, 1.0)
    return CONTACT + (1.0 - CONTACT) * t * t * (3.0 - 2.0 * t)


def grain_noise(n: int, width: float, seed: int) -> np.ndarray:
    """``n`` uniform grain values in sRGB units of total ``width`` (zero mean), reproducible from ``seed``."""
    if width <= 0.0:
        return np.zeros(n)
    return (np.random.default_rng(seed).random(n) - 0.5) * width


__all__ = [
    "fresnel",
    "ggx",
    "grain_noise",
    "lamps",
    "lamps_seen",
    "open_floor",
    "reflect",
    "refract",
    "shading_normal",
    "source",
]
