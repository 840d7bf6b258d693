"""The TRANCE data format (``docs/task.md``): problems, streaming loader, atomic writer and replay."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tvr_gym.core.atomic import atomic_open
from tvr_gym.core.options import check_int
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import Transformation, apply, changed_entries, replay, simulate, state_distance

__all__ = [
    "Problem", "TranceFormatError", "image_name", "load_trance", "parse_line", "read_lines", "replay", "save_trance",
]

DATA_FILE = "data.jsonl"
IMAGE_DIR = "image"
CAMERA_NAMES: dict[str, str] = dict(SPEC.raw["camera"]["trance_names"])
"""Our view name -> TRANCE camera name (``center`` -> ``Camera_Center``)."""
VIEW_OF_CAMERA = {v: k for k, v in CAMERA_NAMES.items()}


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
        """Parse a TRANCE sample dict; ``ValueError`` names the bad field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"sample: expected a JSON object, got {type(d).__name__}")
        for key in ("idx", "states", "transformations"):
            if key not in d:
                raise ValueError(f"{key}: missing from sample")
        states = d["states"]
        if not isinstance(states, list) or len(states) != 2:
            raise ValueError("states: expected [initial, final]")
        parsed_states = []
        images: dict[str, dict[str, str]] = {}
        for phase, s in zip(("initial", "final"), states):
            if not isinstance(s, Mapping) or "objects" not in s:
                raise ValueError(f"states.{phase}: expected an object with 'objects'")
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
        if not isinstance(d["transformations"], list):
            raise ValueError("transformations: expected a list")
        steps = []
        for i, t in enumerate(d["transformations"]):
            try:
                steps.append(Transformation.from_dict(t))
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"transformations[{i}].{exc}") from None
        _check_replay(parsed_states[0], parsed_states[1], steps)
        known = {"idx", "states", "transformations", "final_view", "render_seed"}
        final_view = d.get("final_view")
        if final_view is not None and final_view not in CAMERA_NAMES:
            raise ValueError(f"final_view: expected one of {list(CAMERA_NAMES)}, got {final_view!r}")
        render_seed = d.get("render_seed")
        if render_seed is not None:
            render_seed = check_int("render_seed", render_seed, 0)
        return cls(
            idx=check_int("idx", d["idx"]),
            initial=parsed_states[0],
            final=parsed_states[1],
            transformations=steps,
            images=images,
            root=root,
            final_view=final_view,
            extra={k: v for k, v in d.items() if k not in known},
            render_seed=render_seed,
        )


def _check_replay(initial: State, final: State, steps: list[Transformation]) -> None:
    """The final state must be the replay of the steps: every move on the grid, every entry as recorded."""
    state = initial
    for i, step in enumerate(steps):
        try:
            state = apply(state, step)
        except ValueError as exc:
            raise ValueError(f"transformations[{i}]: cannot be applied ({exc})") from None
    for k, (got, want) in enumerate(zip(state.objects, final.objects)):
        for attr in SPEC.attributes:
            if got.get(attr) != want.get(attr):
                raise ValueError(
                    f"states.final.objects[{k}].{attr}: {want.get(attr)!r} is not the replay of the "
                    f"transformations, which give {got.get(attr)!r}"
                )


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


def parse_line(text: str, where: str, root: Path | None) -> Problem:
    """One sample line as a :class:`Problem`; any defect raises :class:`TranceFormatError` naming ``where``."""
    try:
        return Problem.from_dict(json.loads(text), root=root)
    except RecursionError:
        raise TranceFormatError(f"{where}: nested too deeply to be a TRANCE sample") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise TranceFormatError(f"{where}: {exc}") from None


def load_trance(path: str | os.PathLike[str]) -> Iterator[Problem]:
    """Stream problems from a TRANCE-format directory (``data.jsonl`` + ``image/``) or jsonl file.

    Lines are read one at a time, so a large dataset never sits in memory. A broken line, one whose
    final state is not the replay of its steps, a move off the grid or options lacking the value raise
    :class:`TranceFormatError` naming the file and line number.
    """
    data, root = _data_file(path)
    if not data.is_file():
        raise FileNotFoundError(f"no {DATA_FILE} in {root}")
    for lineno, _, text in read_lines(data):
        yield parse_line(text, f"{data}:{lineno}", root)


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
