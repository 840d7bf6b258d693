"""The one owner of the setting presets and of checking and resolving options.

Every layer (scene data, the generator, the environment and its sources, exports and the trainers)
checks its arguments with the validators here, so the same mistake gets the same message everywhere,
and resolves episode options (steps, visible objects, attributes, final cameras) with
:func:`episode_options`. The presets are read from the scene spec (``scenes/spec.json``,
``generator.presets`` and ``steps_per_setting``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from tvr_gym.spec import SPEC

if TYPE_CHECKING:  # only for annotations: trance is above this module
    from tvr_gym.trance import Problem

__all__ = [
    "MAX_IMAGE_SIDE",
    "SETTINGS",
    "VIEWS",
    "EPISODE_OPTIONS",
    "EpisodeOptions",
    "check_choice",
    "check_int",
    "check_int_range",
    "check_size",
    "check_subset",
    "episode_options",
    "is_int",
    "is_number",
]

_PRESETS: dict[str, dict[str, Any]] = SPEC.raw["generator"]["presets"]
SETTINGS: tuple[str, ...] = tuple(_PRESETS)
"""The setting presets: ``basic``, ``event``, ``crossview``."""
VIEWS: tuple[str, ...] = tuple(SPEC.raw["camera"]["rigs"])
"""The cameras, centre first: ``center``, ``left``, ``right``."""
MAX_IMAGE_SIDE = 8192
"""The largest image width or height (the renderers' framebuffer limit)."""

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), and not a ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (int or float, Python or numpy), and not a ``bool``."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within [low, high]; ``ValueError`` naming ``name`` otherwise."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bound = (
            f" in {low}..{high}" if low is not None and high is not None
            else f" >= {low}" if low is not None else f" <= {high}" if high is not None else ""
        )  # fmt: skip
        raise ValueError(f"{name}: expected an integer{bound}, got {value!r}")
    return int(value)


def check_int_range(name: str, value: Any, low: int, high: int) -> tuple[int, int]:
    """An int or an inclusive (lo, hi) pair of ints, within [low, high] and lo <= hi, as a pair."""
    pair = (value, value) if is_int(value) else value
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(is_int(v) for v in pair)):
        raise ValueError(f"{name}: expected an integer or an inclusive (lo, hi) pair of integers, got {value!r}")
    lo, hi = int(pair[0]), int(pair[1])
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name}: {value!r} is out of range; expected values in {low}..{high} with lo <= hi")
    return lo, hi


def check_size(value: Any, name: str = "size") -> tuple[int, int]:
    """An image size (width, height): two integers in 1..:data:`MAX_IMAGE_SIDE`."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value)):
        raise ValueError(f"{name}: expected (width, height), two integers, got {value!r}")
    w, h = int(value[0]), int(value[1])
    if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
        raise ValueError(f"{name}: width and height must be in 1..{MAX_IMAGE_SIDE}, got {value!r}")
    return w, h


def check_choice(name: str, value: T, choices: Sequence[T]) -> T:
    """``value`` when it is one of ``choices``; ``ValueError`` listing them otherwise."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value checked against a set or dict
        ok = False
    if not ok:
        raise ValueError(f"{name}: unknown value {value!r}; valid: {', '.join(map(str, choices))}")
    return value


def check_subset(name: str, values: Any, valid: Sequence[str], keep_order: bool = False) -> tuple[str, ...]:
    """A non-empty collection of names from ``valid``, without repeats, in the given order or ``valid``'s."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"{name}: expected a list of names from {', '.join(valid)}; got {values!r}")
    items = list(values)
    for item in items:
        check_choice(name, item, valid)
    if not items:
        raise ValueError(f"{name}: must not be empty; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(items)) if keep_order else tuple(v for v in valid if v in items)


@dataclass(frozen=True)
class EpisodeOptions:
    """Which problems a setting serves: step count, visible objects, changed attributes, final cameras."""

    setting: str
    steps: tuple[int, int]
    visible: tuple[int, int]
    attributes: tuple[str, ...]
    final_views: tuple[str, ...]

    def accepts(self, problem: Problem) -> bool:
        """Whether a given problem (e.g. of a TRANCE directory) fits these options."""
        return (
            self.steps[0] <= problem.n_steps <= self.steps[1]
            and self.visible[0] <= len(problem.initial.visible_indices()) <= self.visible[1]
            and (problem.final_view is None or problem.final_view in self.final_views)
            and all(t.attr in self.attributes for t in problem.transformations)
        )


EPISODE_OPTIONS = ("steps", "visible", "max_visible", "attributes", "final_views")
"""The option names :func:`episode_options` takes."""


def episode_options(setting: str, **options: Any) -> EpisodeOptions:
    """The preset of ``setting`` with ``options`` applied and checked (``None`` keeps the preset's value).

    ``steps``: an int or inclusive (lo, hi) within the setting's range (Basic 1, Event and CrossView
    1..4). ``visible``: visible objects at the start, int or (lo, hi) within 1..10; ``max_visible=k`` is
    ``visible=(1, k)``. ``attributes``: the attributes that may change. ``final_views``: the cameras the
    final image is drawn from, in draw order; Basic and Event are centre only.
    """
    check_choice("setting", setting, SETTINGS)
    for name in options:
        if name not in EPISODE_OPTIONS:
            raise ValueError(f"{name}: unknown option; valid: {', '.join(EPISODE_OPTIONS)}")
    steps, visible, max_visible, attributes, final_views = (options.get(name) for name in EPISODE_OPTIONS)
    lo, hi = SPEC.steps_per_setting[setting]
    preset_views = tuple(_PRESETS[setting]["final_views"])
    if visible is not None and max_visible is not None:
        raise ValueError("visible and max_visible: give one of them")
    if max_visible is not None:
        visible = (SPEC.visible_objects[0], check_int("max_visible", max_visible, *SPEC.visible_objects))
    allowed_views = VIEWS if len(preset_views) > 1 else preset_views
    return EpisodeOptions(
        setting=setting,
        steps=check_int_range("steps", (lo, hi) if steps is None else steps, lo, hi),
        visible=check_int_range("visible", SPEC.visible_objects if visible is None else visible, *SPEC.visible_objects),
        attributes=check_subset("attributes", SPEC.attributes if attributes is None else attributes, SPEC.attributes),
        final_views=check_subset(
            "final_views", preset_views if final_views is None else _as_list(final_views), allowed_views, True
        ),
    )


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value
