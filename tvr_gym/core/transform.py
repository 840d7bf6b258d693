"""Atomic transformations, the 33-pair vocabulary, move types, options and replay (``docs/task.md``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from tvr_gym.core.options import check_int, is_int
from tvr_gym.core.scene import ATTRIBUTES, RADIUS_CELLS, SceneObject, State, is_visible_position, on_grid, overlaps
from tvr_gym.core.spec import SPEC, Move

Value = Union[str, Move]
"""An attribute value: a string, or (direction, step) for a move."""

PAIRS: tuple[tuple[str, Value], ...] = tuple(
    (attr, value)
    for attr in SPEC.attributes
    for value in (SPEC.moves if attr == "position" else SPEC.values[attr])
)
"""The 33 attribute-value pairs in canonical order (attributes alphabetical, then spec order)."""

PAIR_INDEX: dict[tuple[str, Value], int] = {pair: i for i, pair in enumerate(PAIRS)}

MOVE_TYPES = ("inner", "out", "in")


def pair_index(attr: str, value: Value) -> int:
    """Index of an (attribute, value) pair in :data:`PAIRS`; ``ValueError`` if unknown."""
    try:
        return PAIR_INDEX[(attr, value)]
    except KeyError:
        raise ValueError(f"unknown pair {attr}={value!r}") from None


def moved(position: tuple[int, int], move: Move) -> tuple[int, int]:
    """The grid position after a move (may be off the grid)."""
    dx, dy = SPEC.directions[move[0]]
    n = move[1] * SPEC.cells_per_step
    return (position[0] + dx * n, position[1] + dy * n)


def move_type(start: tuple[int, int], end: tuple[int, int]) -> str | None:
    """``inner``, ``out`` or ``in``; ``None`` for invisible to invisible."""
    a, b = is_visible_position(start), is_visible_position(end)
    if a and b:
        return "inner"
    if a:
        return "out"
    if b:
        return "in"
    return None


def out_options(position: tuple[int, int]) -> tuple[Move, ...]:
    """Every move from ``position`` that lands on the grid and outside the visible square."""
    result = []
    for move in SPEC.moves:
        end = moved(position, move)
        if on_grid(end) and not is_visible_position(end):
            result.append(move)
    return tuple(result)


def _value_from_json(attr: str, val: Any) -> Value:
    if attr == "position":
        if (
            not isinstance(val, (list, tuple))
            or len(val) != 2
            or val[0] not in SPEC.directions
            or not is_int(val[1])
            or val[1] not in SPEC.steps
        ):
            raise ValueError(f"val: {val!r} is not a move [direction, step]")
        return (str(val[0]), int(val[1]))
    if attr not in SPEC.values:
        raise ValueError(f"attr: unknown attribute {attr!r}; valid: {', '.join(SPEC.attributes)}")
    if val not in SPEC.values[attr]:
        raise ValueError(f"val: unknown {attr} {val!r}; valid: {', '.join(SPEC.values[attr])}")
    return val


def _value_to_json(value: Value) -> Any:
    return [value[0], value[1]] if isinstance(value, tuple) else value


@dataclass(frozen=True, slots=True)
class Transformation:
    """One atomic step: (object index, attribute, value), plus its equivalent ``options``.

    ``options`` holds every value giving the same observation (``docs/task.md``); it always contains
    ``value``. ``type`` is the move type for position steps.
    """

    obj_idx: int
    attr: str
    value: Value
    options: tuple[Value, ...] = field(default=())
    type: str | None = None

    def __post_init__(self) -> None:
        if not is_int(self.obj_idx) or not 0 <= self.obj_idx < SPEC.n_objects:
            raise ValueError(f"obj_idx: expected 0..{SPEC.n_objects - 1}, got {self.obj_idx!r}")
        _value_from_json(self.attr, self.value)
        if not self.options:
            object.__setattr__(self, "options", (self.value,))
        elif self.value not in self.options:
            raise ValueError(f"options: {self.options!r} lack the value {self.value!r}")
        if self.type is not None and self.type not in MOVE_TYPES:
            raise ValueError(f"type: expected one of {MOVE_TYPES}, got {self.type!r}")

    @property
    def pair(self) -> tuple[str, Value]:
        return (self.attr, self.value)

    def to_dict(self) -> dict[str, Any]:
        """TRANCE transformation dict."""
        d: dict[str, Any] = {
            "obj_idx": self.obj_idx,
            "attr": self.attr,
            "val": _value_to_json(self.value),
            "options": [_value_to_json(v) for v in self.options],
        }
        if self.attr == "position":
            d["type"] = self.type
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transformation:
        """Parse a TRANCE transformation dict; ``ValueError`` names the bad field."""
        for key in ("obj_idx", "attr", "val"):
            if key not in d:
                raise ValueError(f"{key}: missing from transformation")
        attr = d["attr"]
        value = _value_from_json(attr, d["val"])
        raw_options = d.get("options") or [value]
        if not isinstance(raw_options, list):
            raise ValueError(f"options: expected a list, got {raw_options!r}")
        options = tuple(_value_from_json(attr, v) for v in raw_options)
        return cls(check_int("obj_idx", d["obj_idx"]), attr, value, options, d.get("type"))


def applied(obj: SceneObject, attr: str, value: Value) -> SceneObject | None:
    """``obj`` after one step: moved by (direction, step), or with ``attr`` set to ``value``.

    ``None`` when a move leaves the grid. The value must be in the vocabulary (a parsed or validated
    step); the one way of applying a step, used by :func:`apply`, :func:`simulate` and the generator.
    """
    if attr == "position":
        value = moved(obj.position, value)  # type: ignore[arg-type]
        if not on_grid(value):
            return None
    return obj.changed(attr, value)


def apply(state: State, step: Transformation) -> State:
    """Apply one step. Raises ``ValueError`` if a move leaves the grid; overlap is not checked."""
    new = applied(state.objects[step.obj_idx], step.attr, step.value)
    if new is None:
        lim = SPEC.grid_limit
        raise ValueError(f"position: a move {step.value} takes object {step.obj_idx} off the grid [-{lim}, {lim}]")
    return state.with_object(step.obj_idx, new)


def replay(state: State, transformations: Iterable[Transformation]) -> State:
    """The final state after applying ``transformations`` in order."""
    for step in transformations:
        state = apply(state, step)
    return state


GEOMETRIC = ("position", "size")
"""The attributes whose change can make an object overlap another."""
STEP_KINDS = ("applied", "off_grid", "overlap", "noop")


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one step does to a state under TVR's rules (:func:`try_apply`).

    ``kind`` is ``applied`` (a legal step that changes how the scene looks), ``off_grid`` (a move that
    leaves the grid: no object), ``overlap`` (a move or size change that overlaps object ``hit``) or
    ``noop`` (legal, but the scene looks the same). ``obj`` is the stepped object (``None`` off the grid).
    """

    kind: str
    obj: SceneObject | None
    hit: int | None = None

    @property
    def legal(self) -> bool:
        """A step that changes the scene legally: what the interactive environment applies."""
        return self.kind == "applied"


def try_apply(state: State, step: tuple[int, str, Value]) -> StepOutcome:
    """The one legality rule: the outcome of (obj, attr, value) on ``state``, checked in order off the grid,
    overlap (against all 10 objects, visible or not), then no visible change.

    TVR's evaluator (:func:`simulate`), the interactive environment's turn and its SB3 action mask all
    judge a step by this function. The step must be well-typed (parsed or from :data:`PAIRS`).
    """
    return _judge(state.objects, step)


def _judge(objs: Sequence[SceneObject], step: tuple[int, str, Value], noop: bool = True) -> StepOutcome:
    """:func:`try_apply` on a state's objects (a list while :func:`simulate` steps through a sequence).

    ``noop=False`` skips the last check and calls a legal no-op ``applied``: the evaluator applies both
    alike, and it runs for every step of every scored answer.
    """
    obj_idx, attr, value = step
    new = applied(objs[obj_idx], attr, value)
    if new is None:
        return StepOutcome("off_grid", None)
    if attr in GEOMETRIC:
        for j, other in enumerate(objs):  # a plain loop: this runs for every move of every scored answer
            if j != obj_idx and overlaps(new, other):
                return StepOutcome("overlap", new, j)
    if noop and not _looks_changed(objs[obj_idx], new):
        return StepOutcome("noop", new)
    return StepOutcome("applied", new)


def _pair_tables() -> dict[str, Any]:
    """:data:`PAIRS` as arrays for :func:`legal_steps`: each pair's attribute, value, move offset (cells) and
    new radius (size pairs)."""
    attrs = np.array([attr for attr, _ in PAIRS])
    offsets = np.zeros((len(PAIRS), 2), dtype=np.int64)
    radii = np.zeros(len(PAIRS), dtype=np.int64)
    for k, (attr, value) in enumerate(PAIRS):
        if attr == "position":
            offsets[k] = moved((0, 0), value)  # type: ignore[arg-type]
        elif attr == "size":
            radii[k] = RADIUS_CELLS[value]  # type: ignore[index]
    by_attr = {a: (np.flatnonzero(attrs == a), np.array([v for b, v in PAIRS if b == a])) for a in ATTRIBUTES}
    return {"attrs": attrs, "by_attr": by_attr, "offsets": offsets, "radii": radii}


_PAIR_TABLES = _pair_tables()


def legal_steps(state: State) -> np.ndarray:
    """``bool (n_objects, len(PAIRS))``: entry ``[i, k]`` is ``try_apply(state, (i, *PAIRS[k])).legal``, computed
    for every step at once (the interactive action mask asks for all 330 at every turn).

    The same rule, written on arrays: a colour, material or shape step is legal when the value differs; a size
    step when it differs and the new size overlaps no other object; a move when it stays on the grid, overlaps
    no other object and starts or ends in the visible square. A property test checks it against
    :func:`try_apply` on every step of random states.
    """
    objs = state.objects
    tables = _PAIR_TABLES
    attrs, offsets, radii = tables["attrs"], tables["offsets"], tables["radii"]
    positions = np.array([o.position for o in objs], dtype=np.int64)  # (N, 2)
    radius = np.array([o.radius_cells for o in objs], dtype=np.int64)  # (N,)
    n = len(objs)
    legal = np.zeros((n, len(PAIRS)), dtype=bool)
    for attr, (ks, values) in tables["by_attr"].items():  # the categorical attributes: legal when the value differs
        current = np.array([getattr(o, attr) for o in objs])
        legal[:, ks] = current[:, None] != values[None, :]
    others = ~np.eye(n, dtype=bool)  # (N, N): j != i

    def free(centres: np.ndarray, radius_i: np.ndarray) -> np.ndarray:
        """(N, K) centres of object i with radius (N, K): no overlap with any other object j."""
        gap = centres[:, :, None, :] - positions[None, None, :, :]  # (N, K, N, 2)
        reach = radius_i[:, :, None] + radius[None, None, :] + SPEC.min_gap_cells
        hit = (gap**2).sum(-1) < reach**2
        return ~(hit & others[:, None, :]).any(-1)

    sizes = np.flatnonzero(attrs == "size")
    in_place = np.repeat(positions[:, None, :], len(sizes), 1)
    legal[:, sizes] &= free(in_place, np.broadcast_to(radii[sizes], (n, len(sizes))))
    moves = np.flatnonzero(attrs == "position")
    to = positions[:, None, :] + offsets[moves][None, :, :]  # (N, M, 2)
    grid, seen = SPEC.grid_limit, SPEC.visible_limit
    on = (np.abs(to) <= grid).all(-1)
    shown = (np.abs(to) <= seen).all(-1) | (np.abs(positions) <= seen).all(-1)[:, None]
    legal[:, moves] = on & shown & free(to, np.broadcast_to(radius[:, None], (n, len(moves))))
    return legal


def _looks_changed(a: SceneObject, b: SceneObject) -> bool:
    """``bool(object_changes(a, b))``, written out: :func:`try_apply` runs it for every step of every answer."""
    if a.color != b.color or a.material != b.material or a.shape != b.shape or a.size != b.size:
        return True
    return a.position != b.position and (is_visible_position(a.position) or is_visible_position(b.position))


@dataclass(frozen=True, slots=True)
class Simulation:
    """The outcome of simulating a predicted sequence as TVR's evaluator does (``docs/rewards.md#metrics``)."""

    state: State
    error_out: bool
    error_overlap: bool
    illegal_steps: int


def simulate(state: State, steps: Sequence[tuple[int, str, Value]]) -> Simulation:
    """Apply (obj, attr, value) steps, flagging off-grid moves and overlaps (:func:`try_apply`).

    As TVR's evaluator does, an off-grid move is flagged and skipped, and a move or size change that
    overlaps another object is flagged and still applied. Steps are assumed well-typed (as produced by
    the parser).
    """
    objs = list(state.objects)
    error_out = error_overlap = False
    illegal = 0
    for step in steps:
        outcome = _judge(objs, step, noop=False)
        if outcome.obj is None:
            error_out = True
            illegal += 1
            continue
        if outcome.kind == "overlap":
            error_overlap = True
            illegal += 1
        objs[step[0]] = outcome.obj
    return Simulation(State(tuple(objs)), error_out, error_overlap, illegal)


def object_changes(a: SceneObject, b: SceneObject) -> list[str]:
    """The attributes in which two versions of one object differ, with TVR's equality: two positions
    outside the visible square are equal."""
    changed = [attr for attr in ATTRIBUTES if getattr(a, attr) != getattr(b, attr)]
    if a.position != b.position and (is_visible_position(a.position) or is_visible_position(b.position)):
        changed.append("position")
    return changed


def changed_entries(initial: State, final: State) -> frozenset[tuple[int, str]]:
    """The (object, attribute) entries that differ between two states, with TVR's equality (as
    :func:`state_distance`: two positions outside the visible square are equal)."""
    pairs = zip(initial.objects, final.objects, strict=True)
    return frozenset((i, attr) for i, (a, b) in enumerate(pairs) for attr in object_changes(a, b))


def state_distance(pred: State, true: State) -> int:
    """Number of (object, attribute) entries that differ (TVR's distance, ``docs/rewards.md#metrics``).

    Positions are equal when identical, or when both lie outside the visible square.
    """
    dist = 0
    for a, b in zip(pred.objects, true.objects, strict=True):
        dist += (a.color != b.color) + (a.material != b.material) + (a.shape != b.shape) + (a.size != b.size)
        if a.position != b.position and (is_visible_position(a.position) or is_visible_position(b.position)):
            dist += 1
    return dist
