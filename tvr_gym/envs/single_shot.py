"""The TVR environments: one Gymnasium class for Basic, Event and CrossView (see ``docs/environments.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from tvr_gym.core.answer import format_answer, format_item
from tvr_gym.core.metrics import episode_line
from tvr_gym.core.options import ENV_CONFIG_KEYS, RENDER_MODES, check_choice  # noqa: F401 (RENDER_MODES: its old home)
from tvr_gym.core.prompt import PROMPT_CHARSET, PROMPT_MAX_LENGTH, build_prompt
from tvr_gym.core.reward import REWARD_NAMES, get_reward, score_answer
from tvr_gym.core.trance import Problem
from tvr_gym.envs.base import (
    ACTION_CHARSET,
    ACTION_MAX_LENGTH,
    CENTRE,
    TVREnvBase,
    action_as_text,
    action_display,
    reset_index,
    weights_dict,
)
from tvr_gym.envs.frames import Caption
from tvr_gym.render.cache import observed_image

QUESTION = "which transformations turn the initial state into the final one?"
"""What the caption of an episode's first frame asks."""


class TVRGym(TVREnvBase):
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
    :data:`tvr_gym.core.reward.ABLATIONS`. ``reward_weights`` (dict or the weights dataclass of
    :mod:`tvr_gym.core.reward`) changes the constants. ``info["reward_terms"]`` holds every term.

    ## Starting State
    A problem drawn from ``source`` with ``self.np_random``: procedurally generated (TRANCE's rules),
    or a sample of a TRANCE-format directory. ``reset(options={"index": k})`` picks the ``k``-th
    problem of the seed (procedural) or of the directory.

    ## Episode End
    After one step: ``terminated=True``. Calling ``step`` again needs a ``reset``. :meth:`score` scores
    more answers for the same episode without ending it (a trainer's group of completions).

    ## Arguments
    ``setting``, ``reward``, ``reward_weights``, ``render_size=(320, 240)``, ``renderer``
    (a name of :data:`tvr_gym.render.RENDERERS`: ``auto|gl|numpy|blender|none``), ``final_views`` (CrossView:
    default all three cameras, so ID, OOD and TAcc exist; Basic and Event: centre only), ``source``
    (``"procedural"`` or a TRANCE directory), ``max_visible``, ``steps`` (int or (lo, hi)),
    ``attributes`` (the attributes the steps may change; default all five), ``obs_mode``
    (``image|text``), ``render_mode`` (``None``, ``"rgb_array"`` or ``"rgb_array_list"``: labelled frames with a
    caption of the step, :mod:`tvr_gym.envs.frames`), ``cache_dir`` (on-disk render
    cache), ``cache_size`` (images in the in-memory LRU; default: the process-wide shared LRU; 0
    turns it off) and ``prompt_layout`` (``tables``, or ``compact`` in text mode: one line per object
    pairing its initial and final values; :data:`tvr_gym.core.prompt.PROMPT_LAYOUTS`).
    Keywords are checked once, by :class:`tvr_gym.core.options.EnvConfig` (the ones every TVR environment
    shares) and :meth:`check_own`; an unknown one is a ``ValueError`` listing the valid ones. ``close()``
    lets go of the process's shared renderer (:meth:`tvr_gym.envs.base.TVREnvBase.close`).
    """

    OWN_KEYWORDS = ("reward", "reward_weights")

    @classmethod
    def check_own(cls, reward: str = "star", reward_weights: Any = None) -> dict[str, Any]:
        check_choice("reward", reward, REWARD_NAMES)
        weights = weights_dict(reward_weights)
        try:
            get_reward(reward, **weights)
        except ValueError as exc:
            raise ValueError(f"reward_weights: {exc}") from None
        return {"reward": reward, "reward_weights": weights}

    def __init__(self, **kwargs: Any) -> None:
        config, own = self.check_kwargs(**kwargs)
        super().__init__(config)
        self.reward_name, self.reward_weights = own["reward"], own["reward_weights"]
        self._reward_fn = get_reward(self.reward_name, **self.reward_weights)
        image = self.image_space()
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
        problem = self.source.sample(self.np_random, reset_index(options))
        self._problem = problem
        self._obs = {
            "initial": self._image(problem, "initial", CENTRE),
            "final": self._image(problem, "final", problem.final_view or CENTRE),
            "prompt": build_prompt(problem, self.obs_mode, self.prompt_layout),
        }
        self._truth = format_answer(problem.transformations)
        self._done = False
        self._show(Caption(feedback=QUESTION), new_episode=True)
        return self._observation(), self._base_info()

    def step(self, action: Any):
        if self._problem is None or self._done:
            raise RuntimeError("step() needs a fresh episode: call reset() first (an episode is one step)")
        reward, info = self.score(action)
        self._done = True
        self._show(self._step_caption(action, reward, info))
        return self._observation(), reward, True, False, info

    def score(self, action: Any) -> tuple[float, dict[str, Any]]:
        """Score an answer against the current episode without ending it: (reward, step info)."""
        if self._problem is None:
            raise RuntimeError("score() needs an episode: call reset() first")
        scored = score_answer(action_as_text(action), self._problem, self._reward_fn)
        info = self._base_info()
        info["reward_terms"] = scored.terms
        info["metrics"] = scored.metrics
        info["parsed"] = scored.parsed.to_dict()
        if not isinstance(action, str):
            info["parsed"]["errors"].insert(0, f"action: expected a str, got {type(action).__name__}")
        return scored.total, info

    def _render_pair(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self._obs is None else (self._obs["initial"], self._obs["final"])

    def _panel_labels(self) -> tuple[str, str]:
        view = CENTRE if self._problem is None else self._problem.final_view or CENTRE
        return f"initial ({CENTRE} camera)", f"final ({view} camera)"

    def _step_caption(self, action: Any, reward: float, info: dict[str, Any]) -> Caption:
        """The caption of the answered episode: the answer, what the parser read, the reward and its terms, the
        truth and the metrics."""
        assert self._problem is not None
        terms = ", ".join(f"{name} {value:+.2f}" for name, value in info["reward_terms"].items() if value)
        return Caption(
            action=action_display(action),
            feedback=parse_feedback(info["parsed"]),
            reward=reward,
            detail=f"terms: {terms}" if terms else "",
            truth=", ".join(format_item(t) for t in self._problem.transformations) or "(no transformations)",
            metrics=episode_line(info["metrics"]),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_obs"] = None  # images are rebuilt from the render cache by the next reset
        return state

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
            "final_view": self._problem.final_view or CENTRE,
        }

    def _image(self, problem: Problem, phase: str, view: str) -> np.ndarray:
        return observed_image(problem, phase, view, self.renderer_name, self.render_size, self.cache)


def parse_feedback(parsed: dict[str, Any]) -> str:
    """What the parser read of an answer (``info["parsed"]``), in words: the steps, then any errors."""
    steps, errors = len(parsed["steps"]), parsed["errors"]
    read = f"read {steps} step{'' if steps == 1 else 's'}" + (f": {parsed['canonical']}" if steps else "")
    if errors:
        return f"{read}; {len(errors)} unreadable: {'; '.join(errors)}"
    return read if parsed["well_formed"] else f"{read} (not <think>...</think><answer>...</answer>)"


KEYWORDS: tuple[str, ...] = (*ENV_CONFIG_KEYS, *TVRGym.OWN_KEYWORDS)
"""The keyword arguments of :class:`TVRGym`."""
