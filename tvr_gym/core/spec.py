"""Typed, cached view of the scene specification in ``scenes/spec.json``.

The spec is the single source of truth for the vocabulary, geometry, cameras, lamps and
materials. Everything else derives from :data:`SPEC`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

Move = tuple[str, int]
"""A move value: (direction name, step)."""


@dataclass(frozen=True)
class Spec:
    """The parsed scene specification."""

    raw: dict[str, Any]
    n_objects: int
    attributes: tuple[str, ...]
    values: dict[str, tuple[str, ...]]
    color_rgb: dict[str, tuple[int, int, int]]
    size_radius: dict[str, float]
    cell: float
    grid_limit: int
    visible_limit: int
    min_gap_cells: int
    directions: dict[str, tuple[int, int]]
    steps: tuple[int, ...]
    cells_per_step: int
    visible_objects: tuple[int, int]
    steps_per_setting: dict[str, tuple[int, int]]
    occlusion_min_pixels: int
    occlusion_mask_size: tuple[int, int]

    @property
    def moves(self) -> tuple[Move, ...]:
        """All 16 move values in canonical order (direction order, then step)."""
        return tuple((d, s) for d in self.directions for s in self.steps)

    def radius_cells(self, size: str) -> int:
        """Object radius in grid cells (6, 4 or 2)."""
        return round(self.size_radius[size] / self.cell)

    def half_height(self, shape: str, size: str) -> float:
        """Height of the object's centre above the ground, in world units."""
        r = self.size_radius[size]
        return r / math.sqrt(2.0) if shape == "cube" else r


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    """Load and parse ``scenes/spec.json`` (cached)."""
    raw = json.loads(resources.files("tvr_gym.scenes").joinpath("spec.json").read_text(encoding="utf-8"))
    grid = raw["grid"]
    moves = raw["moves"]
    return Spec(
        raw=raw,
        n_objects=int(raw["objects_per_scene"]),
        attributes=tuple(raw["attributes"]),
        values={k: tuple(v) for k, v in raw["values"].items()},
        color_rgb={k: tuple(v) for k, v in raw["color_rgb"].items()},
        size_radius={k: float(v) for k, v in raw["size_radius"].items()},
        cell=float(grid["cell"]),
        grid_limit=int(grid["limit"]),
        visible_limit=int(grid["visible_limit"]),
        min_gap_cells=int(grid["min_gap_cells"]),
        directions={name: (int(dx), int(dy)) for name, dx, dy in moves["directions"]},
        steps=tuple(int(s) for s in moves["steps"]),
        cells_per_step=int(moves["cells_per_step"]),
        visible_objects=tuple(raw["visible_objects"]),
        steps_per_setting={k: tuple(v) for k, v in raw["steps_per_setting"].items()},
        occlusion_min_pixels=int(raw["occlusion"]["min_pixels"]),
        occlusion_mask_size=tuple(raw["occlusion"]["mask_size"]),
    )


SPEC = load_spec()
