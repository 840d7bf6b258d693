"""The renderer interface and the scene description every renderer shares.

A :class:`Renderer` turns a :class:`~tvr_gym.core.scene.State` seen by a :class:`~tvr_gym.render.rig.Camera`
into an sRGB image and an instance mask. Only visible objects (inside the visible square) are drawn.
Shading constants come from the spec sections ``materials``, ``ground``, ``lamps`` and ``render``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from tvr_gym.core.options import DEFAULT_RENDER_SIZE, check_size
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.render.rig import Camera, Lamp, lamp_rig, object_center

RENDER = SPEC.raw["render"]
GROUND = SPEC.raw["ground"]
MATERIALS = SPEC.raw["materials"]
MAX_SIZE = 8192


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear light."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB in [0, 1] (clipped)."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)


def check_inputs(state, camera, lamps=None) -> list[Lamp]:
    """Validate render inputs; returns the lamps (``lamp_rig(None)`` by default)."""
    if not isinstance(state, State):
        raise ValueError(f"state: expected a tvr_gym.core.scene.State, got {type(state).__name__}")
    if not isinstance(camera, Camera):
        raise ValueError(f"camera: expected a tvr_gym.render.Camera (see camera_rig), got {type(camera).__name__}")
    if lamps is None:
        return default_lamps()
    lamps = list(lamps)
    if not all(isinstance(lamp, Lamp) for lamp in lamps):
        raise ValueError("lamps: expected a list of tvr_gym.render.Lamp (see lamp_rig)")
    return lamps


_DEFAULT_LAMPS: list[Lamp] = []


def default_lamps() -> list[Lamp]:
    """The unjittered lamp rig (cached)."""
    if not _DEFAULT_LAMPS:
        _DEFAULT_LAMPS.extend(lamp_rig(None))
    return _DEFAULT_LAMPS


def object_albedo(color: str) -> np.ndarray:
    """Linear albedo of a colour name. Like CLEVR, the spec RGB is used as linear reflectance when
    ``render.albedo_space`` is ``linear``; with ``srgb`` it is decoded from sRGB first."""
    rgb = np.asarray(SPEC.color_rgb[color], dtype=np.float64) / 255.0
    return rgb if RENDER["albedo_space"] == "linear" else srgb_to_linear(rgb)


@dataclass(frozen=True)
class Primitive:
    """One visible object as the renderers see it (world units, linear colour)."""

    index: int
    shape: str
    center: np.ndarray
    radius: float
    half: float
    """Half-extent: the cube's half-side, the sphere or cylinder radius (cylinder half-height too)."""
    angle: float
    """Rotation about +z in radians."""
    albedo: np.ndarray
    material: str
    size: str

    @property
    def bound_radius(self) -> float:
        """Radius of a sphere around the centre that encloses the object."""
        return self.half * math.sqrt(3.0) if self.shape == "cube" else self.radius * math.sqrt(2.0)


def primitives(state: State) -> list[Primitive]:
    """The visible objects of ``state`` as primitives, in index order."""
    prims = []
    for i, obj in enumerate(state.objects):
        if not obj.visible:
            continue
        r = SPEC.size_radius[obj.size]
        half = r / math.sqrt(2.0) if obj.shape == "cube" else r
        albedo = object_albedo(obj.color)
        prims.append(
            Primitive(
                i, obj.shape, object_center(obj), r, half, math.radians(obj.rotation), albedo, obj.material, obj.size
            )
        )
    return prims


@dataclass(frozen=True)
class LampLight:
    """A lamp reduced to what shading needs: position (or sun direction) and linear radiance."""

    position: np.ndarray | None
    direction: np.ndarray | None
    """For the sun: the unit direction TOWARD the light."""
    radiance: np.ndarray
    casts_shadow: bool
    size: float = 0.0
    """Side of the square area lamp (world units), or the sun's angular diameter (radians); reflections
    of a lamp are as wide as it looks."""


def lamp_lights(lamps: list[Lamp]) -> list[LampLight]:
    """Lamp rig -> irradiance scales: ``strength * exposure`` for area lamps (then times the cosines over the
    squared distance) and ``strength * sun_scale`` for the sun (spec ``render``, Cycles' conventions)."""
    out = []
    for lamp in lamps:
        color = np.asarray(lamp.color, dtype=np.float64)
        if lamp.location is not None:
            out.append(
                LampLight(
                    np.asarray(lamp.location, dtype=np.float64),
                    None,
                    color * lamp.strength * float(RENDER["exposure"]),
                    lamp.name == RENDER["shadow_lamp"],
                    lamp.size,
                )
            )
        else:
            d = -np.asarray(lamp.direction, dtype=np.float64)
            out.append(
                LampLight(
                    None, d / np.linalg.norm(d), color * lamp.strength * float(RENDER["sun_scale"]), False, lamp.size
                )
            )
    return out


@dataclass(frozen=True)
class Surface:
    """How a material scatters light, from the official Cycles setup (spec ``materials.*.cycles``).

    ``lobes`` are the glossy lobes as (weight, alpha), alpha being the GGX/Beckmann width, Cycles'
    roughness squared. ``ior`` is the glass's index of refraction, or for rubber the index of the
    Fresnel factor that blends its diffuse body with its glossy coat.
    """

    kind: str
    lobes: tuple[tuple[float, float], ...]
    ior: float

    @property
    def glass(self) -> bool:
        return self.kind == "dielectric"


def surface(material: str) -> Surface:
    """The :class:`Surface` of a material name."""
    m = MATERIALS[material]
    cycles = m["cycles"]
    if m["kind"] == "conductor":
        lobes = tuple((float(lobe["weight"]), float(lobe["roughness"]) ** 2) for lobe in cycles["lobes"])
        return Surface("conductor", lobes, 0.0)
    if m["kind"] == "dielectric":
        return Surface("dielectric", ((1.0, float(cycles["roughness"]) ** 2),), float(cycles["ior"]))
    return Surface("diffuse", ((1.0, float(cycles["glossy_roughness"]) ** 2),), float(cycles["glossy_fresnel_ior"]))


class Renderer(ABC):
    """Draws a state from a camera. Subclasses set :attr:`name` and implement the two methods."""

    name: str = "abstract"

    def __init__(self, size: tuple[int, int] = DEFAULT_RENDER_SIZE) -> None:
        self._size = check_size(size)

    @property
    def size(self) -> tuple[int, int]:
        """Image size (width, height) in pixels."""
        return self._size

    @abstractmethod
    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        """The sRGB image, uint8 (H, W, 3). ``lamps`` defaults to ``lamp_rig(None)``."""

    @abstractmethod
    def render_mask(self, state: State, camera: Camera) -> np.ndarray:
        """The instance mask, int (H, W): the object index, or -1 for background."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (a no-op unless the renderer holds any)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
