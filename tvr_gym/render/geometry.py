"""Unit triangle meshes for the gl renderer: positions and normals, outward (CCW) winding.

Each mesh is centred on the origin and scaled uniformly by the object's radius (or half-side):
a sphere of radius 1, a cube of half-side 1 and a cylinder of radius 1 and half-height 1.
"""

from __future__ import annotations

import math

import numpy as np

from tvr_gym.core.spec import SPEC

_R = SPEC.raw["render"]


def _outward(tris: np.ndarray) -> np.ndarray:
    """Flip triangles (T, 3, 6) so that their winding is CCW seen from outside (convex, origin-centred)."""
    p = tris[:, :, :3]
    face = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    inward = np.einsum("ij,ij->i", face, p.mean(axis=1)) < 0
    tris[inward] = tris[inward][:, ::-1]
    return tris


def _pack(tris: np.ndarray) -> np.ndarray:
    """(T, 3, 6) triangles -> flat float32 interleaved vertex data (position, normal)."""
    return np.ascontiguousarray(_outward(tris).reshape(-1, 6), dtype=np.float32)


def sphere(segments: int | None = None, rings: int | None = None) -> np.ndarray:
    """Unit UV sphere with smooth normals."""
    seg, ring = (32, 16) if segments is None else (segments, rings)
    th = np.linspace(0.0, math.pi, ring + 1)
    ph = np.linspace(0.0, 2.0 * math.pi, seg + 1)
    grid = np.stack(
        [np.sin(th)[:, None] * np.cos(ph)[None], np.sin(th)[:, None] * np.sin(ph)[None], np.cos(th)[:, None] + 0 * ph],
        axis=-1,
    )
    tris = []
    for i in range(ring):
        for j in range(seg):
            a, b, c, d = grid[i, j], grid[i + 1, j], grid[i + 1, j + 1], grid[i, j + 1]
            if i > 0:
                tris.append((a, b, d))
            if i < ring - 1:
                tris.append((b, c, d))
    v = np.asarray(tris)
    return _pack(np.concatenate([v, v], axis=-1))


def cube() -> np.ndarray:
    """Unit cube (half-side 1) with flat face normals."""
    tris = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u, w = np.zeros(3), np.zeros(3)
            u[(axis + 1) % 3], w[(axis + 2) % 3] = 1.0, 1.0
            c = n
            quad = [c - u - w, c + u - w, c + u + w, c - u + w]
            for a, b, d in ((0, 1, 2), (0, 2, 3)):
                tris.append([np.concatenate([quad[k], n]) for k in (a, b, d)])
    return _pack(np.asarray(tris))


def cylinder(segments: int | None = None) -> np.ndarray:
    """Unit cylinder (radius 1, z in [-1, 1]) with smooth sides and flat caps."""
    seg = 32 if segments is None else segments
    ph = np.linspace(0.0, 2.0 * math.pi, seg + 1)
    ring = np.stack([np.cos(ph), np.sin(ph), np.zeros_like(ph)], axis=-1)
    up, down = np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, -1.0])
    tris = []
    for j in range(seg):
        p0, p1 = ring[j], ring[j + 1]
        top0, top1, bot0, bot1 = p0 + up, p1 + up, p0 + down, p1 + down
        tris.append([np.concatenate([bot0, p0]), np.concatenate([bot1, p1]), np.concatenate([top1, p1])])
        tris.append([np.concatenate([bot0, p0]), np.concatenate([top1, p1]), np.concatenate([top0, p0])])
        tris.append([np.concatenate([up, up]), np.concatenate([top0, up]), np.concatenate([top1, up])])
        tris.append([np.concatenate([down, down]), np.concatenate([bot1, down]), np.concatenate([bot0, down])])
    return _pack(np.asarray(tris))


def simplified(profile: np.ndarray, tolerance: float) -> np.ndarray:
    """The fewest points of a polyline (N, 2) whose segments stay within ``tolerance`` of its heights
    (Douglas-Peucker in the height)."""
    keep = {0, len(profile) - 1}
    stack = [(0, len(profile) - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        x, z = profile[a + 1 : b, 0], profile[a + 1 : b, 1]
        error = np.abs(z - np.interp(x, profile[[a, b], 0], profile[[a, b], 1]))
        k = int(error.argmax())
        if error[k] > tolerance:
            keep.add(a + 1 + k)
            stack += [(a, a + 1 + k), (a + 1 + k, b)]
    return profile[sorted(keep)]


def sheet_mesh() -> tuple[np.ndarray, np.ndarray]:
    """The studio's sheet (spec ``stage``): one strip of quads across its lateral extent per segment
    of its profile, simplified to within ``render.studio.flat_below`` (llvmpipe pays for every long
    triangle): one quad of floor, then the curve of the backdrop wall.

    Returns (xyz float32 (V, 3), triangle indices int32 (T, 3), CCW seen from above).
    """
    stage = SPEC.raw["stage"]
    uphill, lateral = np.asarray(stage["uphill"]), np.asarray(stage["lateral"])
    profile = simplified(np.asarray(stage["profile"], dtype=np.float64), float(_R["studio"]["flat_below"]))
    lo, hi = stage["lateral_extent"]
    xyz = []
    for s, z in profile:
        for side in (lo, hi):
            xy = s * uphill + side * lateral
            xyz.append((xy[0], xy[1], z))
    tris = []
    for k in range(len(profile) - 1):
        a, b, c, d = 2 * k, 2 * k + 1, 2 * k + 3, 2 * k + 2
        tris += [(a, b, c), (a, c, d)]
    xyz_arr, tris_arr = np.asarray(xyz, dtype=np.float32), np.asarray(tris, dtype=np.int32)
    p = xyz_arr[tris_arr]
    upward = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] > 0
    tris_arr[~upward] = tris_arr[~upward][:, ::-1]
    return xyz_arr, tris_arr


def indexed(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share identical vertices: (unique vertices (V, 6) float32, triangle indices (T, 3) int32)."""
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    return np.ascontiguousarray(unique, dtype=np.float32), inverse.reshape(-1, 3).astype(np.int32)


def unit_mesh(shape: str, size: str) -> tuple[np.ndarray, np.ndarray]:
    """The indexed unit mesh of ``shape``, tessellated for ``size`` (spec ``render.segments``)."""
    segments = int(_R["segments"][size])
    if shape == "sphere":
        return indexed(sphere(segments, max(segments // 2, 3)))
    if shape == "cylinder":
        return indexed(cylinder(segments))
    if shape == "cube":
        return indexed(cube())
    raise ValueError(f"shape: unknown {shape!r}; valid: sphere, cube, cylinder")
