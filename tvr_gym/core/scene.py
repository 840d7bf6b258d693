"""Objects, 10-object states and grid geometry (``docs/task.md#scene-model``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tvr_gym.core.options import is_int, is_number
from tvr_gym.core.spec import SPEC

ATTRIBUTES = ("color", "material", "shape", "size")
"""The categorical attributes; ``position`` is the fifth, integer one."""

RADIUS_CELLS: dict[str, int] = {size: SPEC.radius_cells(size) for size in SPEC.values["size"]}
"""Object radius in grid cells by size (6, 4, 2), read once from the spec."""
_GAP = SPEC.min_gap_cells


def is_visible_position(position: tuple[int, int]) -> bool:
    """True when a grid position lies inside the visible square (inclusive)."""
    lim = SPEC.visible_limit
    return -lim <= position[0] <= lim and -lim <= position[1] <= lim


def on_grid(position: tuple[int, int]) -> bool:
    """True when a grid position lies on the whole plane."""
    lim = SPEC.grid_limit
    return -lim <= position[0] <= lim and -lim <= position[1] <= lim


@dataclass(frozen=True, slots=True)
class SceneObject:
    """One object: four categorical attributes, an integer grid position and a rotation.

    ``rotation`` (degrees about the vertical axis) only affects rendering; it is never
    transformed and is not part of the TRANCE format.
    """

    color: str
    material: str
    shape: str
    size: str
    position: tuple[int, int]
    rotation: float = 0.0

    def __post_init__(self) -> None:
        for attr in ATTRIBUTES:
            value = getattr(self, attr)
            if value not in SPEC.values[attr]:
                raise ValueError(f"{attr}: unknown value {value!r}; valid: {', '.join(SPEC.values[attr])}")
        pos = self.position
        if (
            not isinstance(pos, tuple)
            or len(pos) != 2
            or not all(is_int(v) for v in pos)
        ):
            raise ValueError(f"position: expected two integers, got {pos!r}")
        if not on_grid(pos):
            lim = SPEC.grid_limit
            raise ValueError(f"position: {pos} is off the grid [-{lim}, {lim}]")

    @property
    def visible(self) -> bool:
        """Whether the object stands inside the visible square."""
        return is_visible_position(self.position)

    @property
    def radius_cells(self) -> int:
        return RADIUS_CELLS[self.size]

    def changed(self, attr: str, value: Any) -> SceneObject:
        """A copy with ``attr`` set to ``value``, which the caller has checked (a parsed or validated step).

        Skips the constructor's checks: simulating an answer makes one object per step, and the parser
        only produces vocabulary values; a move's destination is checked for the grid by its caller.
        """
        new = object.__new__(SceneObject)
        for name in _FIELDS:
            object.__setattr__(new, name, value if name == attr else getattr(self, name))
        return new

    def get(self, attr: str) -> Any:
        """The value of ``attr`` (``position`` gives the (x, y) tuple)."""
        return getattr(self, attr)

    def to_dict(self, with_rotation: bool = False) -> dict[str, Any]:
        """TRANCE object dict (rotation only when asked)."""
        d: dict[str, Any] = {
            "color": self.color,
            "material": self.material,
            "shape": self.shape,
            "size": self.size,
            "position": [self.position[0], self.position[1]],
        }
        if with_rotation:
            d["rotation"] = self.rotation
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SceneObject:
        """Build from a TRANCE object dict, raising ``ValueError`` naming a bad field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"object: expected a dict, got {type(d).__name__}")
        missing = [k for k in (*ATTRIBUTES, "position") if k not in d]
        if missing:
            raise ValueError(f"{missing[0]}: missing from object")
        pos = d["position"]
        if not isinstance(pos, (list, tuple)) or len(pos) != 2:
            raise ValueError(f"position: expected [x, y], got {pos!r}")
        rotation = d.get("rotation", 0.0)
        if not is_number(rotation):
            raise ValueError(f"rotation: expected a number, got {rotation!r}")
        return cls(d["color"], d["material"], d["shape"], d["size"], (pos[0], pos[1]), float(rotation))


_FIELDS = ("color", "material", "shape", "size", "position", "rotation")


def overlaps(a: SceneObject, b: SceneObject) -> bool:
    """Centre distance < r_a + r_b + the minimum gap, all in cells (``docs/task.md#scene-model``)."""
    dx = a.position[0] - b.position[0]
    dy = a.position[1] - b.position[1]
    reach = RADIUS_CELLS[a.size] + RADIUS_CELLS[b.size] + _GAP
    return dx * dx + dy * dy < reach * reach


@dataclass(frozen=True, slots=True)
class State:
    """The full scene: exactly ``SPEC.n_objects`` objects, indexed for the whole episode."""

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple):
            object.__setattr__(self, "objects", tuple(self.objects))
        if len(self.objects) != SPEC.n_objects:
            raise ValueError(f"objects: a state holds exactly {SPEC.n_objects} objects, got {len(self.objects)}")

    def __getitem__(self, i: int) -> SceneObject:
        return self.objects[i]

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self):
        return iter(self.objects)

    def with_object(self, i: int, obj: SceneObject) -> State:
        """A copy with object ``i`` replaced."""
        objs = list(self.objects)
        objs[i] = obj
        return State(tuple(objs))

    def visible_indices(self) -> list[int]:
        return [i for i, o in enumerate(self.objects) if o.visible]

    def overlapping(self, i: int) -> list[int]:
        """Indices of the objects that object ``i`` overlaps (all 10 are checked)."""
        me = self.objects[i]
        return [j for j, o in enumerate(self.objects) if j != i and overlaps(me, o)]

    def to_dicts(self, with_rotation: bool = False) -> list[dict[str, Any]]:
        """TRANCE object dicts."""
        return [o.to_dict(with_rotation) for o in self.objects]

    @classmethod
    def from_dicts(cls, dicts: Iterable[Mapping[str, Any]]) -> State:
        """Build from TRANCE object dicts, raising ``ValueError`` naming the object and field."""
        objs = []
        for i, d in enumerate(dicts):
            try:
                objs.append(SceneObject.from_dict(d))
            except ValueError as exc:
                raise ValueError(f"objects[{i}].{exc}") from None
        return cls(tuple(objs))

    def same_as(self, other: State) -> bool:
        """Equality of everything the TRANCE format records (rotation ignored)."""
        return all(
            a.color == b.color
            and a.material == b.material
            and a.shape == b.shape
            and a.size == b.size
            and a.position == b.position
            for a, b in zip(self.objects, other.objects, strict=True)
        )
