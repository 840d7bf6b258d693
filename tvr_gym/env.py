"""The TVR environments: one Gymnasium class for Basic, Event and CrossView (DESIGN 1.1, Part 2)."""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tvr_gym.cache import (
    LRU,
    RenderCache,
    file_key,
    load_image,
    render_view,
    shared_lru,
)
from tvr_gym.prompt import OBS_MODES, PROMPT_CHARSET, PROMPT_MAX_LENGTH, build_prompt
from tvr_gym.render import RENDERERS
from tvr_gym.render.rig import VIEWS
from tvr_gym.spec import SPEC
from tvr_gym.trance import Problem

SETTINGS = tuple(SPEC.steps_per_setting)
"""``basic``, ``event``, ``crossview``."""

ACTION_CHARSET = "".join(sorted(set(PROMPT_CHARSET)))
"""Characters of the action space: letters, digits, space, newline and ``.,:;()<>/-_``."""

ACTION_MAX_LENGTH = 4096
RENDER_MODES = ("rgb_array",)
DEFAULT_FINAL_VIEWS: dict[str, tuple[str, ...]] = {
    setting: tuple(preset["final_views"]) for setting, preset in SPEC.raw["generator"]["presets"].items()
}
"""The cameras each setting draws its final image from, read from the spec (CrossView: all three)."""
_CENTRE = VIEWS[0]


def _valid(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; valid: {', '.join(map(str, choices))}")


class TVRGym(gym.Env):
    """Transformation-Driven Visual Reasoning (TVR) on TRANCE scenes.

    ## Description
    Each episode shows two images of one 3D scene of 10 indexed objects: the initial state and the
    final state. The agent answers, in text, the sequence of atomic transformations
    ``obj.attr.value`` that turns the first into the second. ``setting`` selects the task:
    ``basic`` (1 step, centre camera), ``event`` (1-4 steps, centre camera) or ``crossview``
    (1-4 steps, the final image from another camera; directions are always named in the frame of
    the initial centre camera).

    ## Observation Space
    ``Dict`` with ``initial`` and ``final``: ``Box(0, 255, (H, W, 3), uint8)`` images of
    ``render_size = (W, H)``, and ``prompt``: ``Text`` holding the task, the vocabulary, the
    direction convention, the answer format and the table of the 10 initial objects (hidden ones
    marked). With ``obs_mode="text"`` the prompt also holds the final state's table.

    ## Action Space
    ``Text(4096)`` over letters, digits, space, newline and ``.,:;()<>/-_``: the completion, e.g.
    ``<think>…</think><answer>2.color.cyan, 4.position.front-left.1</answer>``. ``step()`` scores
    ANY value: other characters, longer strings and non-strings get a defined score, never an error.

    ## Rewards
    ``reward="star"`` (STAR-R1's fine-grained reward, default), ``"state"`` (simulates the answer and
    compares states), ``"sparse"`` (1 if fully correct) or a STAR ablation name of
    :data:`tvr_gym.reward.ABLATIONS`. ``reward_weights`` (dict or the weights dataclass of
    :mod:`tvr_gym.reward`) changes the constants. ``info["reward_terms"]`` holds every term.

    ## Starting State
    A problem drawn from ``source`` with ``self.np_random``: procedurally generated (TRANCE's rules),
    or a sample of a TRANCE-format directory. ``reset(options={"index": k})`` picks the ``k``-th
    problem of the seed (procedural) or of the directory.

    ## Episode End
    After one step: ``terminated=True``. Calling ``step`` again needs a ``reset``.

    ## Arguments
    ``setting``, ``reward``, ``reward_weights``, ``render_size=(320, 240)``, ``renderer``
    (a name of :data:`tvr_gym.render.RENDERERS`: ``auto|gl|numpy|blender``), ``final_views`` (CrossView:
    default all three cameras, so ID, OOD and TAcc exist; Basic and Event: centre only), ``source``
    (``"procedural"`` or a TRANCE directory), ``max_visible``,
    ``steps`` (int or (lo, hi)), ``attributes`` (the attributes the steps may change; default all five),
    ``obs_mode`` (``image|text``), ``render_mode`` (``None`` or
    ``"rgb_array"``), ``cache_dir`` (on-disk render cache) and ``cache_size`` (images in the
    in-memory LRU; default: the process-wide shared LRU; 0 turns it off).
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 1}

    def __init__(
        self,
        setting: str = "crossview",
        reward: str = "star",
        reward_weights: Any = None,
        render_size: tuple[int, int] = (320, 240),
        renderer: str = "auto",
        final_views: Sequence[str] | None = None,
        source: str | os.PathLike[str] = "procedural",
        max_visible: int | None = None,
        steps: int | tuple[int, int] | None = None,
        attributes: Sequence[str] | None = None,
        obs_mode: str = "image",
        render_mode: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(f"unknown keyword(s) {', '.join(sorted(unknown))}; valid: {', '.join(KEYWORDS)}")
        _valid("setting", setting, SETTINGS)
        _valid("reward", reward, _reward_names())
        _valid("renderer", renderer, RENDERERS)
        _valid("obs_mode", obs_mode, OBS_MODES)
        if render_mode is not None:
            _valid("render_mode", render_mode, (None, *RENDER_MODES))
        self.setting = setting
        self.reward_name = reward
        self.render_size = _check_size(render_size)
        self.renderer_name = renderer
        self.final_views = _check_views(setting, final_views)
        self.steps = _check_steps(setting, steps)
        self.max_visible = _check_max_visible(max_visible)
        self.attributes = _check_attributes(attributes)
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.reward_weights = _weights_dict(reward, reward_weights)
        self._reward_fn = _reward_fn(reward, self.reward_weights)
        memory = shared_lru() if cache_size is None else LRU(cache_size)
        self.cache = RenderCache(memory, cache_dir)
        self.source_name = str(source)
        self.source = _make_source(source, setting, self.final_views, self.steps, self.max_visible, self.attributes)

        w, h = self.render_size
        image = spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(
            {
                "initial": image,
                "final": image,
                "prompt": spaces.Text(PROMPT_MAX_LENGTH, min_length=1, charset=PROMPT_CHARSET),
            }
        )
        self.action_space = spaces.Text(ACTION_MAX_LENGTH, min_length=0, charset=ACTION_CHARSET)
        self._problem: Problem | None = None
        self._obs: dict[str, Any] | None = None
        self._truth = ""
        self._problem_blob = b""
        self._done = True
        self._episodes: LRU[Any, tuple[dict[str, Any], str, bytes]] = LRU(0 if cache_size == 0 else _EPISODE_MEMO)

    # ------------------------------------------------------------------ episode

    @property
    def problem(self) -> Problem | None:
        """The current episode's problem (``None`` before the first reset)."""
        return self._problem

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        bad = sorted(set(options) - {"index"})
        if bad:
            raise ValueError(f"options: unknown key(s) {', '.join(bad)}; valid: index")
        key, problem = self.source.sample(self.np_random, options.get("index"))
        episode = self._episodes.get(key)
        if episode is None:
            episode = self._prepare(problem)
            self._episodes.put(key, episode)
        self._problem = problem
        self._obs, self._truth, self._problem_blob = episode
        self._done = False
        return self._observation(), self._base_info()

    def step(self, action: Any):
        if self._problem is None or self._done:
            raise RuntimeError("step() needs a fresh episode: call reset() first (an episode is one step)")
        reward, info = self.score(action)
        self._done = True
        return self._observation(), reward, True, False, info

    def score(self, action: Any) -> tuple[float, dict[str, Any]]:
        """Score an answer against the current episode without ending it: (reward, step info)."""
        if self._problem is None:
            raise RuntimeError("score() needs an episode: call reset() first")
        from tvr_gym.answer import parse_answer
        from tvr_gym.metrics import episode_metrics

        parsed = parse_answer(action if isinstance(action, str) else _as_text(action))
        result = self._reward_fn(parsed, self._problem)
        info = self._base_info()
        info["reward_terms"] = {k: float(v) for k, v in result.terms.items()}
        info["metrics"] = episode_metrics(parsed, self._problem)
        info["parsed"] = parsed.to_dict()
        if not isinstance(action, str):
            info["parsed"]["errors"].insert(0, f"action: expected a str, got {type(action).__name__}")
        return float(result.total), info

    def render(self):
        """``rgb_array``: the initial and final images side by side (``None`` without a render mode)."""
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array'")
            return None
        if self._obs is None:
            return np.zeros((self.render_size[1], 2 * self.render_size[0] + _GAP, 3), dtype=np.uint8)
        gap = np.full((self.render_size[1], _GAP, 3), 255, dtype=np.uint8)
        return np.concatenate([self._obs["initial"], gap, self._obs["final"]], axis=1)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_reward_fn")  # may be a closure; rebuilt on unpickling
        state["_episodes"] = LRU(self._episodes.maxsize)  # image references: rebuilt from the render cache
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reward_fn = _reward_fn(self.reward_name, self.reward_weights)

    def close(self) -> None:
        """Nothing to release: renderers are shared per process."""

    # ------------------------------------------------------------------ internals

    def _prepare(self, problem: Problem) -> tuple[dict[str, Any], str, bytes]:
        """Observation (cached read-only images), truth and pickled problem dict of an episode."""
        from tvr_gym.answer import format_answer

        obs = {
            "initial": self._image(problem, "initial", _CENTRE),
            "final": self._image(problem, "final", problem.final_view or _CENTRE),
            "prompt": build_prompt(problem, self.obs_mode),
        }
        return obs, format_answer(problem.transformations), pickle.dumps(problem.to_dict(), protocol=5)

    def _observation(self) -> dict[str, Any]:
        assert self._obs is not None
        obs = self._obs
        return {"initial": obs["initial"].copy(), "final": obs["final"].copy(), "prompt": obs["prompt"]}

    def _base_info(self) -> dict[str, Any]:
        assert self._problem is not None
        return {
            "truth": self._truth,
            "problem": pickle.loads(self._problem_blob),  # a fresh copy for every call
            "final_view": self._problem.final_view or _CENTRE,
        }

    def _image(self, problem: Problem, phase: str, view: str) -> np.ndarray:
        """The observed image: the dataset's own file when present, else a (cached) render."""
        path = problem.image_path(phase, view)
        if path is not None:
            shape = (self.render_size[1], self.render_size[0], 3)
            return self.cache.get_or_make(
                file_key(path, self.render_size), lambda: load_image(path, self.render_size), shape
            )
        state = problem.initial if phase == "initial" else problem.final
        seed = problem.extra.get("render_seed")
        return render_view(state, view, seed, self.renderer_name, self.render_size, self.cache)


_GAP = 4
_EPISODE_MEMO = 16
"""Prepared episodes (image references, prompt, truth) kept per environment: G copies skip all work."""
KEYWORDS = (
    "setting",
    "reward",
    "reward_weights",
    "render_size",
    "renderer",
    "final_views",
    "source",
    "max_visible",
    "steps",
    "attributes",
    "obs_mode",
    "render_mode",
    "cache_dir",
    "cache_size",
)


def _as_text(action: Any) -> str:
    if isinstance(action, (bytes, bytearray, memoryview)):
        return bytes(action).decode("utf-8", errors="replace")
    return ""


def _check_size(size: Any) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or not all(8 <= int(v) <= 4096 for v in size)
    ):
        raise ValueError(f"render_size: expected (width, height), two integers in 8..4096, got {size!r}")
    return int(size[0]), int(size[1])


def _check_views(setting: str, final_views: Sequence[str] | None) -> tuple[str, ...]:
    if final_views is None:
        return DEFAULT_FINAL_VIEWS[setting]
    views = (final_views,) if isinstance(final_views, str) else tuple(final_views)
    allowed = VIEWS if setting == "crossview" else (_CENTRE,)
    if not views or any(v not in allowed for v in views):
        raise ValueError(f"final_views: {final_views!r} not allowed for {setting}; valid: {', '.join(allowed)}")
    return tuple(dict.fromkeys(views))


def _check_steps(setting: str, steps: Any) -> tuple[int, int]:
    lo, hi = SPEC.steps_per_setting[setting]
    if steps is None:
        return lo, hi
    rng = (steps, steps) if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) else steps
    if (
        not isinstance(rng, (tuple, list))
        or len(rng) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in rng)
        or not lo <= rng[0] <= rng[1] <= hi
    ):
        raise ValueError(f"steps: expected an integer or (lo, hi) within {lo}..{hi} for {setting}, got {steps!r}")
    return int(rng[0]), int(rng[1])


def _check_max_visible(max_visible: Any) -> int | None:
    lo, hi = SPEC.visible_objects
    if max_visible is None:
        return None
    if isinstance(max_visible, bool) or not isinstance(max_visible, (int, np.integer)) or not lo <= max_visible <= hi:
        raise ValueError(f"max_visible: expected an integer in {lo}..{hi}, got {max_visible!r}")
    return int(max_visible)


def _reward_names() -> tuple[str, ...]:
    from tvr_gym.reward import ABLATIONS, REWARDS

    return (*REWARDS, *(a for a in ABLATIONS if a not in REWARDS))


def _weights_dict(name: str, weights: Any) -> dict[str, float]:
    """``reward_weights`` (None, a dict or a weights dataclass) as keyword overrides, validated."""
    from tvr_gym import reward as reward_mod

    if weights is None:
        return {}
    if dataclasses.is_dataclass(weights) and not isinstance(weights, type):
        weights = dataclasses.asdict(weights)
    if not isinstance(weights, Mapping):
        raise ValueError(f"reward_weights: expected a dict or a weights dataclass, got {type(weights).__name__}")
    weights = dict(weights)
    try:
        reward_mod.get_reward(name, **weights)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reward_weights: {exc}") from None
    return weights


def _reward_fn(name: str, weights: dict[str, float]):
    from tvr_gym.reward import get_reward

    return get_reward(name, **weights)


def _make_source(source: Any, setting: str, final_views, steps, max_visible, attributes):
    from tvr_gym.sources import ProceduralSource, TranceSource

    if isinstance(source, str) and source == "procedural":
        return ProceduralSource(setting, final_views, steps, max_visible, attributes)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source: expected 'procedural' or a TRANCE directory path, got {source!r}")
    return TranceSource(source, final_views, steps, max_visible, attributes)


def _check_attributes(attributes: Any) -> tuple[str, ...] | None:
    if attributes is None:
        return None
    if isinstance(attributes, str) or not isinstance(attributes, Sequence) or not attributes:
        raise ValueError(f"attributes: expected a non-empty list of {', '.join(SPEC.attributes)}; got {attributes!r}")
    for attr in attributes:
        _valid("attributes", attr, SPEC.attributes)
    return tuple(attributes)
