"""The one camera model (pinhole, look-at) and the lamp rig of every renderer (``docs/rendering.md``)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from tvr_gym.core.options import VIEWS, check_choice
from tvr_gym.core.spec import SPEC

_CAM = SPEC.raw["camera"]


def _jitter(seed: int | None, key: int, n: int, scale: float) -> np.ndarray:
    if seed is None:
        return np.zeros(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFF, key]))
    return rng.uniform(-scale, scale, size=n)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at ``location`` aiming at ``target`` with +z up.

    The focal length and sensor width are in millimetres; the sensor fits the image width, as
    Blender's default does for landscape images.
    """

    location: tuple[float, float, float]
    target: tuple[float, float, float] = tuple(_CAM["look_at"])  # type: ignore[assignment]
    focal_length_mm: float = float(_CAM["focal_length_mm"])
    sensor_width_mm: float = float(_CAM["sensor_width_mm"])
    view: str = "center"

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right, up, forward) unit vectors in world coordinates."""
        return self._basis

    @functools.cached_property
    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        eye = np.asarray(self.location, dtype=np.float64)
        forward = np.asarray(self.target, dtype=np.float64) - eye
        forward /= np.linalg.norm(forward)
        right = np.array([forward[1], -forward[0], 0.0])  # forward x (0, 0, 1)
        right /= np.linalg.norm(right)
        up = np.array(
            [
                right[1] * forward[2] - right[2] * forward[1],
                right[2] * forward[0] - right[0] * forward[2],
                right[0] * forward[1] - right[1] * forward[0],
            ]
        )
        return right, up, forward

    def focal_pixels(self, width: int) -> float:
        """Focal length in pixels for an image ``width`` pixels wide."""
        return self.focal_length_mm / self.sensor_width_mm * width

    def to_camera(self, xyz: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> camera coordinates (x right, y up, depth forward)."""
        right, up, forward = self.basis()
        d = np.asarray(xyz, dtype=np.float64) - np.asarray(self.location)
        return np.stack([d @ right, d @ up, d @ forward], axis=-1)

    def project(self, xyz, size: tuple[int, int] = tuple(_CAM["native_size"])) -> tuple:  # type: ignore[assignment]
        """World point(s) -> pixel (u, v) for an image of ``size`` = (width, height).

        ``u`` grows to the right and ``v`` downwards; pixel ``i`` covers [i, i+1). For an array
        of points (..., 3) it returns two arrays.
        """
        w, h = size
        c = self.to_camera(xyz)
        f = self.focal_pixels(w)
        u = w / 2.0 + f * c[..., 0] / c[..., 2]
        v = h / 2.0 - f * c[..., 1] / c[..., 2]
        if np.ndim(u) == 0:
            return float(u), float(v)
        return u, v

    def rays(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Ray origin (3,) and unit directions (H, W, 3) through each pixel centre."""
        w, h = size
        right, up, forward = self.basis()
        f = self.focal_pixels(w)
        us = (np.arange(w) + 0.5 - w / 2.0) / f
        vs = (h / 2.0 - (np.arange(h) + 0.5)) / f
        d = forward[None, None, :] + us[None, :, None] * right + vs[:, None, None] * up
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.asarray(self.location, dtype=np.float64), d

    def view_matrix(self) -> np.ndarray:
        """4x4 world -> OpenGL eye matrix (camera looks down -z)."""
        right, up, forward = self.basis()
        eye = np.asarray(self.location, dtype=np.float64)
        m = np.eye(4)
        m[0, :3], m[1, :3], m[2, :3] = right, up, -forward
        m[:3, 3] = -m[:3, :3] @ eye
        return m

    def projection_matrix(self, size: tuple[int, int], near: float = 0.1, far: float = 100.0) -> np.ndarray:
        """4x4 OpenGL projection matching :meth:`project` exactly."""
        w, h = size
        f = self.focal_pixels(w)
        m = np.zeros((4, 4))
        m[0, 0] = 2.0 * f / w
        m[1, 1] = 2.0 * f / h
        m[2, 2] = -(far + near) / (far - near)
        m[2, 3] = -2.0 * far * near / (far - near)
        m[3, 2] = -1.0
        return m


def camera_rig(view: str, jitter_seed: int | None = None) -> Camera:
    """The ``center``, ``left`` or ``right`` camera, jittered by U(-j, j) per axis when seeded.

    One seed gives the same jitter for the initial and final images of an episode.
    """
    check_choice("view", view, VIEWS)
    base = np.asarray(_CAM["rigs"][view], dtype=np.float64)
    loc = base + _jitter(jitter_seed, VIEWS.index(view), 3, float(_CAM["jitter"]))
    return Camera(location=tuple(float(v) for v in loc), view=view)


@dataclass(frozen=True)
class Lamp:
    """An area lamp aimed at the origin (``direction`` set for the sun instead)."""

    name: str
    location: tuple[float, float, float] | None
    direction: tuple[float, float, float] | None
    strength: float
    color: tuple[float, float, float]
    size: float = 0.0
    """Side of the square area lamp in world units; for the sun, its angular diameter in radians."""


def lamp_rig(jitter_seed: int | None = None) -> list[Lamp]:
    """The key, back and fill lamps (jittered by U(-1, 1) per axis when seeded) and the sun."""
    lamps_spec = SPEC.raw["lamps"]
    scale = float(lamps_spec["jitter"])
    lamps = []
    for k, (name, lamp) in enumerate((n, v) for n, v in lamps_spec.items() if isinstance(v, dict)):
        color = tuple(float(c) for c in lamp["color"])
        if "location" in lamp:
            loc = np.asarray(lamp["location"], dtype=np.float64) + _jitter(jitter_seed, 100 + k, 3, scale)
            location = tuple(float(v) for v in loc)
            lamps.append(Lamp(name, location, None, float(lamp["strength"]), color, float(lamp["size"])))
        else:
            direction = tuple(float(v) for v in lamp["direction"])
            lamps.append(Lamp(name, None, direction, float(lamp["strength"]), color, math.radians(lamp["angle_deg"])))
    return lamps


def object_center(obj) -> np.ndarray:
    """World (x, y, z) of an object's centre: grid position times the cell size, resting on the ground."""
    return np.array(
        [obj.position[0] * SPEC.cell, obj.position[1] * SPEC.cell, SPEC.half_height(obj.shape, obj.size)]
    )
