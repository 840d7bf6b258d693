"""The one owner of the setting presets and of checking and resolving options.

Every layer (scene data, the generator, the environment and its sources, exports and the trainers)
checks its arguments with the validators here, so the same mistake gets the same message everywhere,
and resolves episode options (steps, visible objects, attributes, final cameras) with
:func:`episode_options`. The presets are read from the scene spec (``scenes/spec.json``,
``generator.presets`` and ``steps_per_setting``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from tvr_gym.core.spec import SPEC

if TYPE_CHECKING:  # only for annotations: trance is above this module
    from tvr_gym.core.trance import Problem

__all__ = [
    "DEFAULT_RENDER_SIZE",
    "ENV_CONFIG_KEYS",
    "MAX_IMAGE_SIDE",
    "OBS_MODES",
    "PROMPT_LAYOUTS",
    "RENDERERS",
    "RENDER_MODES",
    "SETTINGS",
    "VIEWS",
    "EPISODE_OPTIONS",
    "EnvConfig",
    "EpisodeOptions",
    "check_choice",
    "check_int",
    "check_int_range",
    "check_layout",
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
DEFAULT_RENDER_SIZE: tuple[int, int] = tuple(SPEC.raw["camera"]["native_size"])  # type: ignore[assignment]
"""(width, height) of a render unless told otherwise: the spec's native camera size, 320 x 240."""
RENDERERS = ("auto", "gl", "numpy", "blender", "none")
"""The renderer names (:func:`tvr_gym.render.make_renderer`); ``auto`` is gl where EGL works, else numpy."""
OBS_MODES = ("image", "text")
"""``image``: the final state is only shown as an image; ``text``: the prompt also holds its table."""
PROMPT_LAYOUTS = ("tables", "compact")
"""``tables``: the task text (vocabulary, direction convention, answer format) and one table per state;
``compact`` (text mode only): one line of task, then one line per object that pairs each attribute's
initial and final value (``initial > final``). Both show the two whole states and nothing more (no
difference, no marker of what changed); ``compact`` is a little over half the tokens (about 290 of the
tiny tokenizer's instead of 520) and puts the two values of an attribute side by side, for small models
trained from scratch."""
RENDER_MODES = ("rgb_array", "rgb_array_list")
"""The environments' ``render_mode`` values (besides ``None``): a frame of this moment, or the frames of the
episode so far (one per reset and step; ``tvr_gym.envs.frames``)."""

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


def check_layout(layout: str, obs_mode: str) -> str:
    """``layout`` if it is a :data:`PROMPT_LAYOUTS` name that ``obs_mode`` allows, else a ``ValueError``."""
    check_choice("prompt_layout", layout, PROMPT_LAYOUTS)
    if layout == "compact" and obs_mode != "text":
        raise ValueError("prompt_layout: 'compact' pairs the initial and final values, so it needs obs_mode='text'")
    return layout


def _flag(default: Any, flag: str, dest: str | None = None, **argparse_kwargs: Any) -> Any:
    """A config field with its command-line flag (``tvr_gym.apps.cliargs.add_env_options`` reads it); ``dest``
    names the parsed value when the field's own name means something else on a command line (``steps``)."""
    return dataclasses.field(default=default, metadata={"flag": flag, "dest": dest, "argparse": argparse_kwargs})


@dataclass(frozen=True)
class EnvConfig:
    """Every keyword the TVR environments share, checked once when built (``docs/environments.md``).

    The single-shot and the interactive environment, the exports, the trainers and every CLI subcommand
    build one; a new shared keyword is a field here, and its flag (the field's ``flag`` metadata) reaches
    every subcommand that takes environment options. ``episode`` is the resolved :class:`EpisodeOptions`
    of ``setting`` with ``steps``, ``max_visible``, ``attributes`` and ``final_views``.
    """

    setting: str = _flag("crossview", "--setting", choices=SETTINGS, help="the setting (TVR-Interactive-v0 only)")
    source: str | os.PathLike[str] = _flag(
        "procedural", "--source", help="'procedural' (default) or a TRANCE-format directory"
    )
    steps: int | tuple[int, int] | None = _flag(
        None, "--transformations", dest="transformations", type=int, help="transformations per episode"
    )
    max_visible: int | None = _flag(None, "--max-visible", type=int, help="at most this many visible objects")
    attributes: Sequence[str] | None = _flag(
        None, "--attributes", nargs="+", choices=SPEC.attributes, help="the attributes the steps may change"
    )
    final_views: Sequence[str] | None = _flag(
        None, "--final-views", nargs="+", choices=VIEWS, help="cameras of the final image"
    )
    renderer: str = _flag("auto", "--renderer", choices=RENDERERS,
                          help="default auto: gl, else numpy; none: black images, for table-only agents")  # fmt: skip
    render_size: tuple[int, int] = _flag(
        DEFAULT_RENDER_SIZE, "--size", dest="size", nargs=2, type=int, metavar=("W", "H"),
        help=f"image size (default {DEFAULT_RENDER_SIZE[0]} {DEFAULT_RENDER_SIZE[1]})",
    )  # fmt: skip
    obs_mode: str = _flag("image", "--obs-mode", choices=OBS_MODES, help="image, or text (both object tables)")
    prompt_layout: str = _flag("tables", "--prompt-layout", choices=PROMPT_LAYOUTS, help="tables; compact: text only")
    render_mode: str | None = None
    cache_dir: str | os.PathLike[str] | None = _flag(None, "--cache-dir", help="on-disk render cache")
    cache_size: int | None = _flag(None, "--cache-size", type=int, help="images in the in-memory render cache")
    episode: EpisodeOptions = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("renderer", self.renderer, RENDERERS)
        check_choice("obs_mode", self.obs_mode, OBS_MODES)
        check_layout(self.prompt_layout, self.obs_mode)
        if self.render_mode is not None:
            check_choice("render_mode", self.render_mode, RENDER_MODES)
        object.__setattr__(self, "render_size", check_size(self.render_size, "render_size"))
        if not isinstance(self.source, (str, os.PathLike)):
            raise ValueError(f"source: expected 'procedural' or a TRANCE directory path, got {self.source!r}")
        if self.cache_size is not None:
            check_int("cache_size", self.cache_size, 0)
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ValueError(f"cache_dir: expected a directory path, got {self.cache_dir!r}")
        episode = episode_options(
            self.setting,
            steps=self.steps,
            max_visible=self.max_visible,
            attributes=self.attributes,
            final_views=self.final_views,
        )
        object.__setattr__(self, "episode", episode)

    @classmethod
    def split(
        cls, kwargs: Mapping[str, Any], own: Sequence[str] = (), defaults: Mapping[str, Any] | None = None
    ) -> tuple[EnvConfig, dict[str, Any]]:
        """(the config of ``kwargs``, the keywords of ``own``): an environment's keywords, split and checked.

        ``own`` names the keywords an environment takes besides the config's; ``defaults`` changes config
        defaults (the interactive environment's setting). Any other key is a ``ValueError`` listing the
        valid ones.
        """
        unknown = sorted(set(kwargs) - set(ENV_CONFIG_KEYS) - set(own))
        if unknown:
            valid = ", ".join((*ENV_CONFIG_KEYS, *own))
            raise ValueError(f"unknown keyword(s) {', '.join(unknown)}; valid: {valid}")
        shared = {**(defaults or {}), **{k: v for k, v in kwargs.items() if k in ENV_CONFIG_KEYS}}
        return cls(**shared), {k: v for k, v in kwargs.items() if k in own}


ENV_CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EnvConfig) if f.init)
"""The keywords :class:`EnvConfig` holds, in order."""
