"""The TVR environments: one Gymnasium class for Basic, Event and CrossView (see ``docs/environments.md``)."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tvr_gym.answer import format_answer
from tvr_gym.cache import LRU, RenderCache, observed_image, shared_lru
from tvr_gym.options import SETTINGS, VIEWS, check_choice, check_size, episode_options
from tvr_gym.prompt import OBS_MODES, PROMPT_CHARSET, PROMPT_MAX_LENGTH, build_prompt, check_layout
from tvr_gym.render import RENDERERS
from tvr_gym.reward import REWARD_NAMES, get_reward, score_answer
from tvr_gym.sources import ProceduralSource, TranceSource
from tvr_gym.trance import Problem

ACTION_CHARSET = "".join(sorted(set(PROMPT_CHARSET)))
"""Characters of the action space: letters, digits, space, newline and ``.,:;()<>/-_``."""

ACTION_MAX_LENGTH = 4096
RENDER_MODES = ("rgb_array",)
_CENTRE = VIEWS[0]
_GAP = 4
"""Pixels between the two images of ``render()``."""


class TVRGym(gym.Env):
    """Transformation-Driven Visual Reasoning (TVR) on TRANCE scenes.

    ## Description
    Each episode shows two images of one 3D scene of 10 indexed objects: the initial state and the
    final state. The agent answers, in text, the sequence of atomic transformations
    ``obj.attr.value`` that turns the first into the second. ``setting`` selects the task:
    ``basic`` (1 step, centre camera), ``event`` (1-4 steps, centre camera) or ``crossview``
    (1-4 steps, the final image from the left, centre or right camera; directions are always named
    in the frame of the initial centre camera).

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
    After one step: ``terminated=True``. Calling ``step`` again needs a ``reset``. :meth:`score` scores
    more answers for the same episode without ending it (a trainer's group of completions).

    ## Arguments
    ``setting``, ``reward``, ``reward_weights``, ``render_size=(320, 240)``, ``renderer``
    (a name of :data:`tvr_gym.render.RENDERERS`: ``auto|gl|numpy|blender``), ``final_views`` (CrossView:
    default all three cameras, so ID, OOD and TAcc exist; Basic and Event: centre only), ``source``
    (``"procedural"`` or a TRANCE directory), ``max_visible``, ``steps`` (int or (lo, hi)),
    ``attributes`` (the attributes the steps may change; default all five), ``obs_mode``
    (``image|text``), ``render_mode`` (``None`` or ``"rgb_array"``), ``cache_dir`` (on-disk render
    cache), ``cache_size`` (images in the in-memory LRU; default: the process-wide shared LRU; 0
    turns it off) and ``prompt_layout`` (``tables``, or ``compact`` in text mode: one line per object
    pairing its initial and final values; :data:`tvr_gym.prompt.PROMPT_LAYOUTS`).
    Episode options are checked by :func:`tvr_gym.options.episode_options`.
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
        prompt_layout: str = "tables",
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError(f"unknown keyword(s) {', '.join(sorted(unknown))}; valid: {', '.join(KEYWORDS)}")
        self.setting = check_choice("setting", setting, SETTINGS)
        self.reward_name = check_choice("reward", reward, REWARD_NAMES)
        self.renderer_name = check_choice("renderer", renderer, RENDERERS)
        self.obs_mode = check_choice("obs_mode", obs_mode, OBS_MODES)
        self.prompt_layout = check_layout(prompt_layout, self.obs_mode)
        self.render_mode = None if render_mode is None else check_choice("render_mode", render_mode, RENDER_MODES)
        self.render_size = check_size(render_size, "render_size")
        self.options = episode_options(
            setting, steps=steps, max_visible=max_visible, attributes=attributes, final_views=final_views
        )
        self.final_views = self.options.final_views
        self.reward_weights = _weights_dict(reward_weights)
        try:
            self._reward_fn = get_reward(reward, **self.reward_weights)
        except ValueError as exc:
            raise ValueError(f"reward_weights: {exc}") from None
        self.cache = RenderCache(shared_lru() if cache_size is None else LRU(cache_size), cache_dir)
        self.source_name = str(source)
        self.source = _make_source(source, self.options)

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
        self._done = True

    # ------------------------------------------------------------------ episode

    @property
    def problem(self) -> Problem | None:
        """The current episode's problem (``None`` before the first reset)."""
        return self._problem

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        super().reset(seed=seed)
        problem = self.source.sample(self.np_random, _reset_index(options))
        self._problem = problem
        self._obs = {
            "initial": self._image(problem, "initial", _CENTRE),
            "final": self._image(problem, "final", problem.final_view or _CENTRE),
            "prompt": build_prompt(problem, self.obs_mode, self.prompt_layout),
        }
        self._truth = format_answer(problem.transformations)
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
        scored = score_answer(action if isinstance(action, str) else _as_text(action), self._problem, self._reward_fn)
        info = self._base_info()
        info["reward_terms"] = scored.terms
        info["metrics"] = scored.metrics
        info["parsed"] = scored.parsed.to_dict()
        if not isinstance(action, str):
            info["parsed"]["errors"].insert(0, f"action: expected a str, got {type(action).__name__}")
        return scored.total, info

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
        state["_obs"] = None  # images are rebuilt from the render cache by the next reset
        return state

    def close(self) -> None:
        """Nothing to release: renderers are shared per process."""

    # ------------------------------------------------------------------ internals

    def _observation(self) -> dict[str, Any]:
        assert self._obs is not None
        obs = self._obs
        return {"initial": obs["initial"].copy(), "final": obs["final"].copy(), "prompt": obs["prompt"]}

    def _base_info(self) -> dict[str, Any]:
        assert self._problem is not None
        return {
            "truth": self._truth,
            "problem": self._problem.to_dict(),  # a fresh copy for every call
            "final_view": self._problem.final_view or _CENTRE,
        }

    def _image(self, problem: Problem, phase: str, view: str) -> np.ndarray:
        return observed_image(problem, phase, view, self.renderer_name, self.render_size, self.cache)


KEYWORDS = tuple(name for name in inspect.signature(TVRGym.__init__).parameters if name not in ("self", "unknown"))
"""The keyword arguments of :class:`TVRGym`, in order."""


def _reset_index(options: Mapping[str, Any] | None) -> Any:
    """The ``index`` of ``reset(options=...)`` (``None`` when absent); any other key is an error."""
    options = dict(options or {})
    bad = sorted(set(options) - {"index"})
    if bad:
        raise ValueError(f"options: unknown key(s) {', '.join(bad)}; valid: index")
    return options.get("index")


def _as_text(action: Any) -> str:
    if isinstance(action, (bytes, bytearray, memoryview)):
        return bytes(action).decode("utf-8", errors="replace")
    return ""


def _weights_dict(weights: Any) -> dict[str, float]:
    """``reward_weights`` (None, a dict or a weights dataclass) as keyword overrides."""
    if weights is None:
        return {}
    if dataclasses.is_dataclass(weights) and not isinstance(weights, type):
        return dataclasses.asdict(weights)
    if not isinstance(weights, Mapping):
        raise ValueError(f"reward_weights: expected a dict or a weights dataclass, got {type(weights).__name__}")
    return dict(weights)


def _make_source(source: Any, options) -> ProceduralSource | TranceSource:
    if isinstance(source, str) and source == "procedural":
        return ProceduralSource(options)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source: expected 'procedural' or a TRANCE directory path, got {source!r}")
    return TranceSource(source, options)
