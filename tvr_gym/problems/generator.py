"""The TRANCE problem generator: scenes and transformation sequences under every rule of ``docs/generator.md``.

``generate(setting, seed, index)`` builds one :class:`~tvr_gym.core.trance.Problem` from its own RNG,
``numpy.random.SeedSequence([seed, index, crc32(setting)])``, so any sample of a dataset can be made
alone and in any order. See ``docs/generator.md`` for the rules, options and balance.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tvr_gym.core.options import SETTINGS, check_int, episode_options
from tvr_gym.core.scene import RADIUS_CELLS, SceneObject, State, is_visible_position
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem, image_name
from tvr_gym.core.transform import (
    MOVE_TYPES,
    Transformation,
    Value,
    applied,
    move_type,
    moved,
    out_options,
    state_distance,
)
from tvr_gym.problems.occlusion import MIN_PIXELS, RasterCamera
from tvr_gym.render.rig import VIEWS, camera_rig

__all__ = ["SETTINGS", "GenerationError", "generate", "sample_scene"]

_GEN = SPEC.raw["generator"]
_RENDER_SEED_LIMIT = 1 << int(_GEN["render_seed_bits"])
_MOVES: tuple[tuple[str, int], ...] = SPEC.moves
_MOVE_VECTORS = np.array([moved((0, 0), m) for m in _MOVES], dtype=np.int64)
_CATEGORICAL = tuple(a for a in SPEC.attributes if a != "position")
_PLACEMENT_BATCH = 8
"""Candidate positions drawn per RNG call while placing an object."""


class GenerationError(RuntimeError):
    """No problem satisfying the options was found within ``max_tries`` scenes."""


def _rng(setting: str, seed: int, index: int) -> np.random.Generator:
    seed, index = check_int("seed", seed, 0), check_int("index", index, 0)
    return np.random.default_rng(np.random.SeedSequence([seed, index, zlib.crc32(setting.encode())]))


# -- scenes ---------------------------------------------------------------------------------------
def _clear(pos: tuple[int, int], radius: int, placed: Sequence[tuple[tuple[int, int], int]]) -> bool:
    gap = SPEC.min_gap_cells
    for (x, y), r in placed:
        reach = radius + r + gap
        if (pos[0] - x) ** 2 + (pos[1] - y) ** 2 < reach * reach:
            return False
    return True


def sample_scene(rng: np.random.Generator, n_visible: int) -> list[SceneObject] | None:
    """Ten random objects, ``n_visible`` of them inside the visible square, on the grid, none overlapping.

    Which indices are visible is random. Returns ``None`` when the objects could not be placed
    within ``placement_tries`` draws each (the caller draws a new scene).
    """
    n = SPEC.n_objects
    if not 1 <= n_visible <= n:
        raise ValueError(f"n_visible: expected 1..{n}, got {n_visible!r}")
    order = rng.permutation(n)
    counts = [len(SPEC.values[a]) for a in _CATEGORICAL]
    picks = rng.integers(0, counts, size=(n, len(counts)))
    rotations = rng.random(n) * 360.0 % 360.0  # [0, 360): rounding can never give 360
    vlim, lim = SPEC.visible_limit, SPEC.grid_limit
    tries = int(_GEN["placement_tries"])
    placed: list[tuple[tuple[int, int], int]] = []
    objects: list[SceneObject | None] = [None] * n
    for rank, i in enumerate(order):
        values = {a: SPEC.values[a][picks[i, k]] for k, a in enumerate(_CATEGORICAL)}
        radius = RADIUS_CELLS[values["size"]]
        visible = rank < n_visible
        span = vlim if visible else lim
        pos = None
        drawn = 0
        while pos is None and drawn < tries:
            batch = min(_PLACEMENT_BATCH, tries - drawn)
            drawn += batch
            for x, y in rng.integers(-span, span + 1, size=(batch, 2)).tolist():
                if (visible or not is_visible_position((x, y))) and _clear((x, y), radius, placed):
                    pos = (x, y)
                    break
        if pos is None:
            return None
        placed.append((pos, radius))
        objects[i] = SceneObject(position=pos, rotation=float(rotations[i]), **values)
    return objects  # type: ignore[return-value]


# -- transformations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Class:
    """A sampling class: an attribute, or a position move type; ``weight`` is its share of pairs."""

    attr: str
    move_type: str | None
    weight: float


def _classes(attributes: Sequence[str]) -> list[_Class]:
    out = []
    for attr in attributes:
        if attr == "position":
            out.extend(_Class(attr, t, len(_MOVES) / len(MOVE_TYPES)) for t in MOVE_TYPES)
        else:
            out.append(_Class(attr, None, float(len(SPEC.values[attr]))))
    return out


class _Episode:
    """Mutable working state of one problem while its steps are drawn."""

    def __init__(self, objects: list[SceneObject], cameras: dict[str, RasterCamera]) -> None:
        self.objects = objects
        self.cameras = cameras
        self.transformed: set[int] = set()
        self.came_in: set[int] = set()
        """Objects brought into view by an ``in`` move; like TRANCE, they may be transformed again."""
        center = cameras["center"]
        shown = [i for i, o in enumerate(objects) if o.visible]
        counts = center.visible_pixels_of(objects, shown)
        self.eligible = {i for i, n in zip(shown, counts) if n >= MIN_PIXELS}
        self.steps: list[Transformation] = []

    # candidates: {value: [object indices]} that pass every rule except occlusion
    def candidates(self, cls: _Class) -> dict[Value, list[int]]:
        if cls.attr == "position":
            return self._move_candidates(cls.move_type)
        active = self._in_view()
        out: dict[Value, list[int]] = {}
        for value in SPEC.values[cls.attr]:
            objs = [i for i in active if self.objects[i].get(cls.attr) != value]
            if cls.attr == "size":
                objs = [i for i in objs if not self._grows_into_other(i, value)]
            if objs:
                out[value] = objs
        return out

    def _in_view(self) -> list[int]:
        """Rule 4: objects visible and unoccluded in the initial centre view, or brought in since, that are in view."""
        return [i for i in sorted(self.eligible | self.came_in) if self.objects[i].visible]

    def _grows_into_other(self, i: int, size: str) -> bool:
        radius = RADIUS_CELLS[size]
        me = self.objects[i]
        if radius <= me.radius_cells:
            return False
        others = [(o.position, o.radius_cells) for j, o in enumerate(self.objects) if j != i]
        return not _clear(me.position, radius, others)

    def _move_candidates(self, kind: str | None) -> dict[Value, list[int]]:
        objs = self.objects
        if kind == "in":
            rows = [i for i, o in enumerate(objs) if not o.visible]
        else:
            rows = self._in_view()
            if kind == "out":
                rows = [i for i in rows if i not in self.transformed]
        if not rows:
            return {}
        pos = np.array([o.position for o in objs], dtype=np.int64)
        rad = np.array([o.radius_cells for o in objs], dtype=np.int64)
        sel = np.array(rows)
        dest = pos[sel, None, :] + _MOVE_VECTORS[None, :, :]  # (rows, moves, 2)
        reach_ok = np.abs(dest).max(axis=-1)
        on_grid = reach_ok <= SPEC.grid_limit
        ends_visible = reach_ok <= SPEC.visible_limit
        ok = on_grid & (~ends_visible if kind == "out" else ends_visible)
        diff = dest[:, :, None, :] - pos[None, None, :, :]
        dist2 = (diff * diff).sum(axis=-1)  # (rows, moves, 10)
        reach = rad[sel, None] + rad[None, :] + SPEC.min_gap_cells  # (rows, 10)
        clash = dist2 < (reach * reach)[:, None, :]
        clash[np.arange(len(rows)), :, sel] = False
        ok &= ~clash.any(axis=-1)
        out: dict[Value, list[int]] = {}
        for m in np.flatnonzero(ok.any(axis=0)):
            out[_MOVES[m]] = [rows[r] for r in np.flatnonzero(ok[:, m])]
        return out

    def try_step(self, i: int, attr: str, value: Value) -> bool:
        """Apply the step if the occlusion rule holds afterwards (rule 6); report success."""
        old = self.objects[i]
        new = applied(old, attr, value)  # candidates land on the grid by construction
        assert new is not None
        objects = list(self.objects)
        objects[i] = new
        if new.visible:
            # geometry is unchanged by colour and material: only the changed object needs a check
            targets = [i] if attr in ("color", "material") else sorted(self.transformed | {i})
            targets = [t for t in targets if objects[t].visible]
            for cam in self.cameras.values():
                if min(cam.visible_pixels_of(objects, targets)) < MIN_PIXELS:
                    return False
        # an out move only removes an object from the masks, so no other object loses pixels
        if attr == "position":
            kind = move_type(old.position, new.position)
            options = out_options(old.position) if kind == "out" else (value,)
            step = Transformation(i, attr, value, options, kind)
        else:
            step = Transformation(i, attr, value)
        if step.type == "in":
            self.came_in.add(i)
        self.objects = objects
        self.transformed.add(i)
        self.steps.append(step)
        return True


def _pick_weighted(rng: np.random.Generator, classes: Sequence[_Class]) -> int:
    bounds = np.cumsum([c.weight for c in classes])
    return min(int(np.searchsorted(bounds, rng.random() * bounds[-1], side="right")), len(classes) - 1)


def _draw_steps(rng: np.random.Generator, episode: _Episode, n_steps: int, classes: Sequence[_Class]) -> bool:
    """Draw ``n_steps`` balanced, feasible steps into ``episode``; ``False`` if the scene cannot host them.

    Per step: a class (attribute, or move type for position) by its share of the 33 pairs, then a
    value uniformly among the values some object can take, then an object uniformly among those.
    A candidate that fails the occlusion rule is dropped and another drawn; an empty class is dropped.
    """
    for _ in range(n_steps):
        available = list(classes)
        done = False
        while available and not done:
            cls = available.pop(_pick_weighted(rng, available))
            cands = episode.candidates(cls)
            while cands and not done:
                values = list(cands)
                value = values[int(rng.integers(len(values)))]
                objs = cands[value]
                i = objs.pop(int(rng.integers(len(objs))))
                if not objs:
                    del cands[value]
                done = episode.try_step(i, cls.attr, value)
        if not done:
            return False
    return True


def generate(setting: str, seed: int, index: int = 0, max_tries: int | None = None, **options: Any) -> Problem:
    """One TVR problem of ``setting`` (``basic``, ``event`` or ``crossview``), deterministic in its arguments.

    Sample ``index`` under base ``seed`` uses its own RNG, so shards can be generated independently.
    ``options`` override the preset (``steps``, ``visible`` or ``max_visible``, ``attributes``,
    ``final_views``: :func:`tvr_gym.core.options.episode_options`); ``max_tries`` scenes are tried before
    :class:`GenerationError` (default ``generator.max_tries`` of the spec). Raises ``ValueError`` for
    bad arguments.
    """
    opts = episode_options(setting, **options)
    max_tries = check_int("max_tries", _GEN["max_tries"] if max_tries is None else max_tries, 1)
    rng = _rng(setting, seed, index)
    n_steps = int(rng.integers(opts.steps[0], opts.steps[1] + 1))
    n_visible = int(rng.integers(opts.visible[0], opts.visible[1] + 1))
    final_view = opts.final_views[int(rng.integers(len(opts.final_views)))]
    render_seed = int(rng.integers(_RENDER_SEED_LIMIT))
    cameras = {view: RasterCamera(camera_rig(view, render_seed)) for view in VIEWS}
    classes = _classes(opts.attributes)
    for _ in range(max_tries):
        objects = sample_scene(rng, n_visible)
        if objects is None:
            continue
        episode = _Episode(objects, cameras)
        if not _draw_steps(rng, episode, n_steps, classes):
            continue
        initial, final = State(tuple(objects)), State(tuple(episode.objects))
        # rule 9: a sequence that ends where it started (out and back in, red then blue then red) would
        # make the empty answer correct; such a scene is dropped and another drawn
        if state_distance(initial, final):
            return Problem(
                idx=int(index),
                initial=initial,
                final=final,
                transformations=episode.steps,
                images={
                    "initial": {"center": image_name(int(index), "init", "center")},
                    "final": {view: image_name(int(index), "fin", view) for view in VIEWS},
                },
                final_view=final_view,
                extra={"setting": setting, "seed": int(seed)},
                render_seed=render_seed,
            )
    raise GenerationError(
        f"no {setting} problem with {n_steps} steps and {n_visible} visible objects found in {max_tries} "
        f"scenes (seed={seed}, index={index}, options={options}); relax steps, visible or attributes, "
        "or raise max_tries"
    )
