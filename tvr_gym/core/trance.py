"""The TRANCE data format (``docs/task.md``): problems, streaming loader, atomic writer and replay."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from tvr_gym.core.atomic import atomic_open
from tvr_gym.core.options import check_int, is_int, is_number
from tvr_gym.core.scene import State, is_visible_position
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import (
    Transformation,
    Value,
    apply,
    changed_entries,
    move_type,
    moved,
    out_options,
    replay,
    simulate,
    state_distance,
)

__all__ = [
    "MAX_STEPS", "MIN_STEPS", "Problem", "TranceFormatError", "image_name", "load_trance", "parse_line", "read_lines",
    "read_problems", "replay", "save_trance",
]

DATA_FILE = "data.jsonl"
IMAGE_DIR = "image"
CAMERA_NAMES: dict[str, str] = dict(SPEC.raw["camera"]["trance_names"])
"""Our view name -> TRANCE camera name (``center`` -> ``Camera_Center``)."""
VIEW_OF_CAMERA = {v: k for k, v in CAMERA_NAMES.items()}
MIN_STEPS = min(lo for lo, _ in SPEC.steps_per_setting.values())
MAX_STEPS = max(hi for _, hi in SPEC.steps_per_setting.values())
"""A problem holds ``MIN_STEPS..MAX_STEPS`` transformations (1..4: the spec's ``steps_per_setting``)."""
FULL_TURN = 360.0
"""A rotation is in degrees, in ``[0, FULL_TURN)``."""


class TranceFormatError(ValueError):
    """A TRANCE file that cannot be read; the message names the file and line."""


def image_name(idx: int, phase: str, view: str) -> str:
    """Official file name, e.g. ``img_000005-fin.L.png``; ``phase`` is ``init`` or ``fin``."""
    return f"img_{idx:06d}-{phase}.{SPEC.raw['camera']['file_suffix'][view]}.png"


@dataclass
class Problem:
    """One TVR sample: initial and final states, the transformation sequence and image files.

    ``images`` maps ``"initial"``/``"final"`` to {view: file name under ``root/image``}. ``final_view``
    is the camera of the final observation when the problem fixes one (CrossView), else ``None``.
    It holds ``MIN_STEPS..MAX_STEPS`` transformations (``ValueError`` otherwise): the rewards' bounds rely on it.
    """

    idx: int
    initial: State
    final: State
    transformations: list[Transformation]
    images: dict[str, dict[str, str]] = field(default_factory=lambda: {"initial": {}, "final": {}})
    root: Path | None = None
    final_view: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    render_seed: int | None = None
    """The camera and lamp jitter seed of the episode (``camera_rig(view, render_seed)``), when it has one."""

    def __post_init__(self) -> None:
        _check_step_count(len(self.transformations))

    @property
    def n_steps(self) -> int:
        return len(self.transformations)

    @cached_property
    def changed(self) -> frozenset[tuple[int, str]]:
        """The (object, attribute) entries the problem changes (TVR's equality), computed once."""
        return changed_entries(self.initial, self.final)

    @cached_property
    def truth_steps(self) -> tuple[tuple[int, str, Any], ...]:
        """The true sequence as parsed answers read it: (object, attribute, value) per step."""
        return tuple((t.obj_idx, t.attr, t.value) for t in self.transformations)

    @cached_property
    def truth_acc(self) -> float:
        """TVR's Acc of the true sequence itself (1.0 unless the recorded sequence is illegal), computed once."""
        sim = simulate(self.initial, self.truth_steps)
        return float(not sim.error_out and not sim.error_overlap and state_distance(sim.state, self.final) == 0)

    def image_path(self, phase: str, view: str) -> Path | None:
        """The image file of ``phase`` (``initial``/``final``) from ``view``, if it exists.

        A file that resolves outside the dataset's image directory (a symlink leading away) is refused
        with :class:`TranceFormatError`.
        """
        name = self.images.get(phase, {}).get(view)
        if name is None or self.root is None:
            return None
        folder = self.root / IMAGE_DIR
        path = folder / name
        if not path.is_file():
            return None
        if not path.resolve().is_relative_to(folder.resolve()):
            raise TranceFormatError(f"{path}: leads outside the dataset directory {self.root}; refused")
        return path

    def to_dict(self) -> dict[str, Any]:
        """The TRANCE sample dict. Rotations and ``final_view`` are kept when set."""
        rot = any(o.rotation for o in self.initial.objects)
        d: dict[str, Any] = {
            "idx": self.idx,
            "states": [
                {
                    "objects": s.to_dicts(with_rotation=rot),
                    "images": {CAMERA_NAMES[v]: n for v, n in self.images.get(phase, {}).items()},
                }
                for s, phase in ((self.initial, "initial"), (self.final, "final"))
            ],
            "transformations": [t.to_dict() for t in self.transformations],
        }
        if self.final_view is not None:
            d["final_view"] = self.final_view
        if self.render_seed is not None:
            d["render_seed"] = self.render_seed
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path | None = None) -> Problem:
        """Parse a TRANCE sample dict; ``ValueError`` names the bad field.

        Besides each field's own rules, the final state must be the replay of the transformations,
        each step's ``options`` and ``type`` must be the ones its move implies (``docs/task.md``),
        rotations must be finite, in ``[0, 360)`` and the same in both states, and no number anywhere
        may be NaN or infinite.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"sample: expected a JSON object, got {type(d).__name__}")
        for key in ("idx", "states", "transformations"):
            if key not in d:
                raise ValueError(f"{key}: missing from sample")
        idx = check_int("idx", d["idx"], 0)
        states = d["states"]
        if not isinstance(states, list) or len(states) != 2:
            raise ValueError("states: expected [initial, final]")
        parsed_states = []
        images: dict[str, dict[str, str]] = {}
        for phase, s in zip(("initial", "final"), states):
            if not isinstance(s, Mapping) or "objects" not in s:
                raise ValueError(f"states.{phase}: expected an object with 'objects'")
            _check_rotations(s["objects"], phase)
            try:
                parsed_states.append(State.from_dicts(s["objects"]))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"states.{phase}.{exc}") from None
            images[phase] = {}
            if not isinstance(s.get("images") or {}, Mapping):
                raise ValueError(f"states.{phase}.images: expected an object mapping cameras to file names")
            for cam, name in (s.get("images") or {}).items():
                if cam not in VIEW_OF_CAMERA:
                    raise ValueError(f"states.{phase}.images: unknown camera {cam!r}")
                images[phase][VIEW_OF_CAMERA[cam]] = _safe_image_name(name)
        _check_visible(parsed_states[0])
        if not isinstance(d["transformations"], list):
            raise ValueError("transformations: expected a list")
        steps = []
        for i, t in enumerate(d["transformations"]):
            try:
                steps.append(Transformation.from_dict(t))
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"transformations[{i}].{exc}") from None
        _check_step_count(len(steps))  # before the replay, which a long list would make slow
        _check_steps(parsed_states[0], parsed_states[1], steps)
        known = {"idx", "states", "transformations", "final_view", "render_seed"}
        final_view = d.get("final_view")
        if final_view is not None and final_view not in CAMERA_NAMES:
            raise ValueError(f"final_view: expected one of {list(CAMERA_NAMES)}, got {final_view!r}")
        render_seed = d.get("render_seed")
        if render_seed is not None:
            render_seed = check_int("render_seed", render_seed, 0)
        extra = {k: v for k, v in d.items() if k not in known}
        if extra:
            _check_finite(extra)
        return cls(
            idx=idx,
            initial=parsed_states[0],
            final=parsed_states[1],
            transformations=steps,
            images=images,
            root=root,
            final_view=final_view,
            extra=extra,
            render_seed=render_seed,
        )


def _check_visible(initial: State) -> None:
    """At least the spec's lowest number of visible objects (1) stands in the visible square at the start."""
    low = SPEC.visible_objects[0]
    seen = 0
    for obj in initial.objects:
        if seen >= low:
            return
        seen += is_visible_position(obj.position)
    if seen < low:
        raise ValueError(f"states.initial.objects: at least {low} must stand in the visible square, got {seen}")


def _check_step_count(n: int) -> None:
    if not MIN_STEPS <= n <= MAX_STEPS:
        raise ValueError(f"transformations: a problem holds {MIN_STEPS}..{MAX_STEPS} steps, got {n}")


def _check_rotations(objects: Any, phase: str) -> None:
    """Every ``rotation`` given is a finite number of degrees in ``[0, 360)`` (checked before it becomes a
    float, which a huge integer would overflow)."""
    if not isinstance(objects, list):
        return  # State.from_dicts names the defect
    for k, obj in enumerate(objects):
        if (type(obj) is not dict and not isinstance(obj, Mapping)) or "rotation" not in obj:
            continue  # the common case, a dict, takes no isinstance(Mapping)
        r = obj["rotation"]
        if not is_number(r) or not (is_int(r) or math.isfinite(r)) or not 0 <= r < FULL_TURN:
            raise ValueError(
                f"states.{phase}.objects[{k}].rotation: expected a finite number of degrees in "
                f"[0, {FULL_TURN:g}), got {r!r}"
            )


def _check_finite(value: Any) -> None:
    """No NaN or infinite float anywhere inside ``value`` (JSON-like: dicts, lists, scalars)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v!r}: a sample holds finite numbers only")
        if isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def _check_steps(initial: State, final: State, steps: list[Transformation]) -> None:
    """The final state must be the replay of the steps (every move on the grid, every entry as recorded,
    rotations untouched), and each step's options and move type the ones its move implies."""
    state = initial
    for i, step in enumerate(steps):
        start = state.objects[step.obj_idx].position
        try:
            state = apply(state, step)
        except ValueError as exc:
            raise ValueError(f"transformations[{i}]: cannot be applied ({exc})") from None
        _check_options(i, step, start)
    if state.objects == final.objects:
        return
    for k, (got, want) in enumerate(zip(state.objects, final.objects)):
        for attr in SPEC.attributes:
            if got.get(attr) != want.get(attr):
                raise ValueError(
                    f"states.final.objects[{k}].{attr}: {want.get(attr)!r} is not the replay of the "
                    f"transformations, which give {got.get(attr)!r}"
                )
        if got.rotation != want.rotation:
            raise ValueError(
                f"states.final.objects[{k}].rotation: {want.rotation!r}, but the initial state has "
                f"{got.rotation!r}; a rotation is never transformed"
            )


def _check_options(i: int, step: Transformation, start: tuple[int, int]) -> None:
    """``options`` holds exactly the values giving the same observation: every move from ``start`` that
    lands on the grid outside the visible square for an ``out`` move, else the value alone
    (``docs/task.md``), each once and in any order. A move's ``type``, when given, is its move type."""
    options = step.options
    kind = None
    if step.attr == "position":
        kind = move_type(start, moved(start, step.value))  # type: ignore[arg-type]
        if step.type is not None and step.type != kind:
            raise ValueError(f"transformations[{i}].type: {step.type!r}, but the move from {start} is {kind!r}")
    elif step.type is not None:
        raise ValueError(f"transformations[{i}].type: only a move has a type, got {step.type!r}")
    if kind != "out":
        if len(options) == 1:  # it holds the value (Transformation checks it)
            return
        expected: tuple[Value, ...] = (step.value,)
    else:
        expected = _out_options(start)
    if len(options) != len(expected) or set(options) != set(expected):
        raise ValueError(
            f"transformations[{i}].options: {_json_values(options)} are not the values that give the "
            f"same observation; expected {_json_values(expected)} (each once, any order)"
        )


_out_options = lru_cache(maxsize=None)(out_options)
"""``out_options`` by start position, computed once per position (a few thousand on the grid)."""


def _json_values(values: Iterable[Value]) -> str:
    return json.dumps([list(v) if isinstance(v, tuple) else v for v in values])


def _safe_image_name(name: Any) -> str:
    """Refuse image paths that are absolute or escape the image directory."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"images: expected a file name, got {name!r}")
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or name.startswith("~"):
        raise ValueError(f"images: path {name!r} escapes the image directory")
    return name


def _data_file(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        return p / DATA_FILE, p
    if p.is_file():
        return p, p.parent
    raise FileNotFoundError(f"no TRANCE dataset at {p} (expected a directory holding {DATA_FILE}, or the file)")


def read_lines(data: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, byte offset, text) of every sample line of a ``data.jsonl``.

    The one reader of the format, shared by :func:`load_trance` and the environment's dataset index, so
    both always agree on which line is which sample. Lines end at ``\n`` (``\r\n`` too); a line holding
    only whitespace, Unicode whitespace included, is skipped. Bytes that are not UTF-8, and ``\r`` used
    as a line end, raise :class:`TranceFormatError` naming the file and line.
    """
    offset = 0
    with data.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TranceFormatError(f"{data}:{lineno}: not UTF-8 (byte {exc.start} of the line)") from None
            if "\r" in text.rstrip("\r\n"):
                raise TranceFormatError(f"{data}:{lineno}: a line ends with '\\r' alone; JSON lines end with '\\n'")
            if text.strip():
                yield lineno, start, text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name}: a sample holds finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text}: overflows a float; a sample holds finite numbers only")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in one JSON object; one of its values would be lost")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=_finite_float, parse_constant=_reject_constant)


def strict_json(text: str) -> Any:
    """Strict JSON for samples and ground truths: a key repeated in an object, ``NaN``, ``Infinity`` and a
    number too large for a float raise ``ValueError``."""
    return _DECODER.decode(text)


def parse_line(text: str, where: str, root: Path | None) -> Problem:
    """One sample line as a :class:`Problem`; any defect raises :class:`TranceFormatError` naming ``where``.

    Besides :meth:`Problem.from_dict`'s rules, the line is strict JSON: a key repeated within an object,
    ``NaN``, ``Infinity`` and a number too large for a float are refused.
    """
    try:
        return Problem.from_dict(strict_json(text), root=root)
    except RecursionError:
        raise TranceFormatError(f"{where}: nested too deeply to be a TRANCE sample") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
        raise TranceFormatError(f"{where}: {exc}") from None


def read_problems(data: Path, root: Path | None) -> Iterator[tuple[int, int, Problem]]:
    """(line number, byte offset, problem) of every sample of a ``data.jsonl``, each idx once.

    :func:`read_lines` and :func:`parse_line` together, plus the file-wide rule: a sample whose ``idx``
    an earlier line already holds (a repeated sample, or the file written twice) raises
    :class:`TranceFormatError` naming both lines.
    """
    line_of: dict[int, int] = {}
    for lineno, offset, text in read_lines(data):
        problem = parse_line(text, f"{data}:{lineno}", root)
        first = line_of.setdefault(problem.idx, lineno)
        if first != lineno:
            raise TranceFormatError(
                f"{data}:{lineno}: idx {problem.idx} is already the sample of line {first}; each idx is unique"
            )
        yield lineno, offset, problem


def load_trance(path: str | os.PathLike[str]) -> Iterator[Problem]:
    """Stream problems from a TRANCE-format directory (``data.jsonl`` + ``image/``) or jsonl file.

    Lines are read one at a time, so a large dataset never sits in memory (only the idx seen so far).
    Any defect of a line (:func:`parse_line`) or a repeated idx (:func:`read_problems`) raises
    :class:`TranceFormatError` naming the file and line number.
    """
    data, root = _data_file(path)
    if not data.is_file():
        raise FileNotFoundError(f"no {DATA_FILE} in {root}")
    for _, _, problem in read_problems(data, root):
        yield problem


def save_trance(problems: Iterable[Problem], path: str | os.PathLike[str], copy_images: bool = True) -> int:
    """Write problems to ``path/data.jsonl`` atomically; copy their existing image files.

    Returns the number of problems written. The file appears only when complete.
    """
    root = Path(path)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_open(root / DATA_FILE, "w", encoding="utf-8") as fh:
        for prob in problems:
            fh.write(json.dumps(prob.to_dict(), separators=(",", ":")) + "\n")
            n += 1
            if copy_images and prob.root is not None and prob.root.resolve() != root.resolve():
                for views in prob.images.values():
                    for name in views.values():
                        src = prob.root / IMAGE_DIR / name
                        if src.is_file():
                            atomic_copy(src, root / IMAGE_DIR / name)
    return n


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a file so that ``dst`` is either absent or complete."""
    with atomic_open(dst, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out)
