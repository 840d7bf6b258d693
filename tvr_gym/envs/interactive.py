"""Interactive TVR: the agent transforms the scene turn by turn until it says ``done``.

See :class:`TVRInteractive` and ``docs/interactive.md``. The core is synchronous and picklable; its
whole state is a problem key and the steps applied so far (:meth:`TVRInteractive.get_state`), so an
episode can be copied (:meth:`~TVRInteractive.spawn`) for every member of a GRPO group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from gymnasium import spaces

from tvr_gym.core.answer import DONE, format_answer, format_item, read_turn
from tvr_gym.core.metrics import episode_line
from tvr_gym.core.options import EnvConfig, check_choice, check_int
from tvr_gym.core.prompt import PROMPT_CHARSET, PROMPT_MAX_LENGTH, interactive_prompt, state_table
from tvr_gym.core.reward import REWARD_LIMIT, REWARD_NAMES, get_reward
from tvr_gym.core.scene import State
from tvr_gym.core.trance import Problem
from tvr_gym.core.transform import changed_entries
from tvr_gym.envs.base import (
    ACTION_CHARSET,
    ACTION_MAX_LENGTH,
    CENTRE,
    TVREnvBase,
    action_display,
    reset_index,
    weights_dict,
)
from tvr_gym.envs.board import POTENTIALS, Board, Outcome, read_saved, wrong_objects
from tvr_gym.envs.frames import Caption
from tvr_gym.render.cache import render_view

TERMINAL_REWARDS = (*REWARD_NAMES, "none")
"""What the last turn adds: a reward of the net change (:data:`tvr_gym.core.reward.REWARD_NAMES`) or nothing."""
COST_KINDS = ("illegal", "noop", "unreadable")
DEFAULT_COSTS = {"illegal": 0.1, "noop": 0.05, "unreadable": 0.1}
"""What an illegal, no-op or unreadable turn costs (subtracted from its reward)."""
DEFAULT_SLACK = 3
"""Turns allowed beyond the most steps an episode can hold, plus ``done``."""
DEFAULT_POTENTIAL = "graded"
"""The potential of the per-turn progress (:data:`tvr_gym.envs.board.POTENTIALS`)."""
DEFAULT_SUCCESS_BONUS = 1.0
"""Added to the terminal reward when ``done`` ends a successful episode (so truncation scores below it)."""
DEFAULT_IDLE_COST = 3.0
"""Taken at the end when the scene is as it began (STAR charges passive inaction: ``done`` at once is no refuge).
3 puts ``done`` at once below any first step: MaskablePPO's held-out success on interactive Basic rose from about
0.15 (idle cost 1) to 0.275 (``benchmarks/results/interactive_rewards_idle.md``)."""
FEEDBACK_MAX_LENGTH = 1024
TASK = "make the current scene the target: one transformation per turn, then done"
"""What the caption of an episode's first frame says."""


class TVRInteractive(TVREnvBase):
    """Interactive TVR: reach the target state by one transformation per turn, then say ``done``.

    ## Description
    An episode is a TVR problem (generated, or a sample of a TRANCE directory). The agent sees the
    **target**, the final state from its final camera (CrossView keeps its camera change), and the
    **current** state from the centre camera, which starts as the initial state. Each turn it names
    one transformation ``obj.attr.value`` (the answer grammar, read by the same tolerant parser) or
    ``done``. A legal transformation changes the current state; an unreadable one (several
    transformations or ``<answer>`` blocks are unreadable too), an illegal one (a move off the grid, a
    move or size change that overlaps another object) or a no-op (the state stays equal under TVR's
    equality: the value it already has, a move between two hidden places) changes nothing, and the
    feedback text says why. A change to a hidden object counts as TVR's metrics count it: it is applied,
    and the feedback says the image does not show it.

    ## Observation Space
    ``Dict`` with ``target`` and ``current``: ``Box(0, 255, (H, W, 3), uint8)`` images of
    ``render_size = (W, H)``; ``prompt``: ``Text``, the task and the table of the 10 initial objects
    (with ``obs_mode="text"`` also the target's and the current state's tables); ``feedback``:
    ``Text``, what the last turn did (empty after ``reset``).

    ## Action Space
    ``Text(4096)``: one transformation, e.g. ``<answer>2.color.cyan</answer>``, or ``done``. Any value
    is read, never an error.

    ## Rewards
    Per turn the progress ``Φ(s_t) − Φ(s_{t−1})`` with ``Φ = −`` (TVR distance to the target), minus
    ``costs`` for an illegal, no-op or unreadable turn. The last turn (``done`` or truncation) adds
    ``terminal_reward`` of the net change from the initial to the current state, whatever the path
    (:func:`tvr_gym.core.metrics.net_change`; default ``state``; ``none`` for nothing). The
    progress terms telescope to ``Φ(end) − Φ(start)``, so a trainer that sums a trajectory's rewards
    sees the same total as one that takes the end change. ``info`` holds ``turn_reward``, ``progress``
    and ``outcome`` every turn, and at the end ``terminal``, ``metrics`` (TVR's metrics of the net
    change, comparable with the single-shot environments) and ``interactive`` (Success, Misplaced,
    FixedStrict, turns).

    ## Starting State
    A problem drawn from ``source`` with ``self.np_random``; ``reset(options={"index": k})`` as in
    :class:`tvr_gym.envs.single_shot.TVRGym`. The current state is the initial state.

    ## Episode End
    ``terminated`` on ``done``; reaching the target does not end the episode. ``truncated`` after
    :attr:`turn_limit` turns (the same for every episode of a setting: Basic 1 + 1 + ``slack``, Event
    and CrossView 4 + 1 + ``slack``; ``max_turns`` sets it).

    ## Arguments
    ``setting`` (``basic|event|crossview``, default ``event``), ``terminal_reward``,
    ``reward_weights`` (of the terminal reward), ``costs`` (dict over ``illegal, noop, unreadable``),
    ``max_turns`` (int: a fixed limit), ``slack``, ``render_size``, ``renderer``, ``final_views``,
    ``source``, ``max_visible``, ``steps``, ``attributes``, ``obs_mode`` (``image|text``),
    ``render_mode`` (``None``, ``"rgb_array"`` or ``"rgb_array_list"``), ``cache_dir``, ``cache_size``: as for
    :class:`tvr_gym.envs.single_shot.TVRGym` (:class:`~tvr_gym.core.options.EnvConfig`); ``prompt_layout`` is
    ``tables`` only.
    ``close()`` lets go of the process's shared renderer (:meth:`tvr_gym.envs.base.TVREnvBase.close`).
    """

    OWN_KEYWORDS = (
        "terminal_reward", "reward_weights", "costs", "max_turns", "slack", "potential", "success_bonus", "idle_cost",
    )  # fmt: skip
    CONFIG_DEFAULTS = {"setting": "event"}

    @classmethod
    def check_own(
        cls,
        terminal_reward: str = "state",
        reward_weights: Any = None,
        costs: Mapping[str, float] | None = None,
        max_turns: int | None = None,
        slack: int = DEFAULT_SLACK,
        potential: str = DEFAULT_POTENTIAL,
        success_bonus: float = DEFAULT_SUCCESS_BONUS,
        idle_cost: float = DEFAULT_IDLE_COST,
    ) -> dict[str, Any]:
        check_choice("terminal_reward", terminal_reward, TERMINAL_REWARDS)
        check_choice("potential", potential, POTENTIALS)
        for name, value in (("success_bonus", success_bonus), ("idle_cost", idle_cost)):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not 0 <= value <= REWARD_LIMIT:  # NaN fails the comparison too
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        weights = weights_dict(reward_weights)
        try:
            terminal_fn = None if terminal_reward == "none" else get_reward(terminal_reward, **weights)
        except ValueError as exc:
            raise ValueError(f"reward_weights: {exc}") from None
        return {
            "terminal_reward": terminal_reward,
            "terminal_fn": terminal_fn,
            "costs": _check_costs(costs),
            "max_turns": None if max_turns is None else check_int("max_turns", max_turns, 1),
            "slack": check_int("slack", slack, 0),
            "potential": potential,
            "success_bonus": float(success_bonus),
            "idle_cost": float(idle_cost),
        }

    @classmethod
    def check_kwargs(cls, **kwargs: Any) -> tuple[EnvConfig, dict[str, Any]]:
        config, own = super().check_kwargs(**kwargs)
        if config.prompt_layout != "tables":
            raise ValueError(f"prompt_layout: {config.prompt_layout!r}; TVR-Interactive-v0 shows its states as tables")
        return config, own

    def __init__(self, **kwargs: Any) -> None:
        self.config = dict(kwargs)
        """The keywords this environment was made with (:meth:`spawn` makes its twin with them)."""
        env_config, own = self.check_kwargs(**kwargs)
        super().__init__(env_config)
        self.terminal_name, self._terminal_fn = own["terminal_reward"], own["terminal_fn"]
        self.costs, self.max_turns, self.slack = own["costs"], own["max_turns"], own["slack"]
        self.potential_kind: str = own["potential"]
        """The potential the per-turn progress follows (``potential``: :data:`tvr_gym.envs.board.POTENTIALS`)."""
        self.success_bonus, self.idle_cost = own["success_bonus"], own["idle_cost"]
        image = self.image_space()
        self.observation_space = spaces.Dict(
            {
                "target": image,
                "current": image,
                "prompt": spaces.Text(PROMPT_MAX_LENGTH, min_length=1, charset=PROMPT_CHARSET),
                "feedback": spaces.Text(FEEDBACK_MAX_LENGTH, min_length=0, charset=PROMPT_CHARSET),
            }
        )
        self.action_space = spaces.Text(ACTION_MAX_LENGTH, min_length=0, charset=ACTION_CHARSET)
        self.board: Board | None = None
        """The running episode's rules and state (``None`` before the first reset)."""
        self._feedback = ""
        self._return: float | None = None  # the episode's rewards so far, for the frames' caption (None: unknown)

    # ------------------------------------------------------------------ episode

    @property
    def problem(self) -> Problem | None:
        """The episode's problem (``None`` before the first reset)."""
        return None if self.board is None else self.board.problem

    @property
    def current(self) -> State | None:
        """The current state."""
        return None if self.board is None else self.board.current

    @property
    def turn_limit(self) -> int:
        """The turns an episode allows before it is truncated: ``max_turns``, else the most steps an episode
        of these options can hold, plus one for ``done``, plus ``slack`` (the same for every episode, so
        the limit never tells how many steps the answer has)."""
        return self.max_turns or self.options.steps[1] + 1 + self.slack

    def potential(self) -> float:
        """Φ of the episode so far (:meth:`tvr_gym.envs.board.Board.potential` of this env's ``potential``)."""
        assert self.board is not None
        return self.board.potential(self.potential_kind)

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        info = self.begin(seed=seed, options=options)
        return self._observation(), info

    def step(self, action: Any):
        reward, terminated, truncated, info = self.play_turn(action)
        return self._observation(), reward, terminated, truncated, info

    def begin(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`reset` without rendering the observation: the ``info``. For agents that read the states
        (:attr:`current`, :attr:`problem`) rather than the images, such as the SB3 view."""
        super().reset(seed=seed)
        key, problem = self.source.draw(self.np_random, reset_index(options))
        self.board, self._feedback, self._return = Board(key, problem), "", 0.0
        self._show(self._waiting_caption(), new_episode=True)
        return self._info()

    def play_turn(self, action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        """:meth:`step` without rendering the observation: (reward, terminated, truncated, info)."""
        board = self.board
        if board is None or board.done:
            raise RuntimeError("step() needs a running episode: call reset() first")
        before = board.potential(self.potential_kind)
        outcome = board.play(read_turn(action))
        progress = board.potential(self.potential_kind) - before
        reward = progress - self.costs.get(outcome.kind, 0.0)
        terminated = outcome.kind == DONE
        truncated = not terminated and board.turns >= self.turn_limit
        self._feedback = _feedback_text(outcome, board.turns, self.turn_limit, truncated)
        info = self._info()
        info.update({"turn_reward": reward, "progress": progress, "outcome": outcome.kind})
        if terminated or truncated:
            board.done = True
            end = {**board.end(self._terminal_fn), **self._bonus(board, terminated)}
            reward += end["terminal"] + end["bonus"]
            info.update(end)
        self._add_to_return(float(reward))
        self._show(self._turn_caption(action_display(action), float(reward), info))
        return float(reward), terminated, truncated, info

    def truncate(self) -> tuple[float, dict[str, Any]]:
        """End the running episode now, as truncated, without a turn: (terminal reward, final info).

        For limits the environment does not know, such as a rollout's image budget
        (:class:`tvr_gym.core.chat.ImageBudget`): the episode still gets its terminal reward and metrics.
        """
        board = self.board
        if board is None or board.done:
            raise RuntimeError("truncate() needs a running episode")
        board.done = True
        end = {**board.end(self._terminal_fn), **self._bonus(board, False)}
        info = self._info()
        info.update({**end, "outcome": "truncated"})
        self._add_to_return(end["terminal"])
        self._show(self._turn_caption(None, end["terminal"], info))
        return end["terminal"], info

    def _bonus(self, board: Board, by_done: bool) -> dict[str, float]:
        """``bonus``: ``success_bonus`` when ``done`` ends a successful episode, minus ``idle_cost`` when the
        episode ends with the scene as it began (TVR's equality), whatever the path."""
        won = by_done and not wrong_objects(board.current, board.problem.final)
        idle = not changed_entries(board.problem.initial, board.current)
        return {"bonus": (self.success_bonus if won else 0.0) - (self.idle_cost if idle else 0.0)}

    def _render_pair(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.board is None else (self._target_image(), self._current_image())

    def _panel_labels(self) -> tuple[str, str]:
        view = CENTRE if self.board is None else self.board.problem.final_view or CENTRE
        return f"target ({view} camera)", f"current ({CENTRE} camera)"

    def _waiting_caption(self) -> Caption:
        """The caption before a turn: the task, and the turns taken."""
        turns = 0 if self.board is None else self.board.turns
        return Caption(feedback=TASK, episode_return=self._return, detail=f"turn {turns} of {self.turn_limit}")

    def _add_to_return(self, reward: float) -> None:
        """Add to the episode's return (unknown, ``None``, for an episode restored by :meth:`set_state`)."""
        self._return = None if self._return is None else self._return + reward

    def _turn_caption(self, action: str | None, reward: float, info: dict[str, Any]) -> Caption:
        """The caption after a turn (``action`` ``None``: the episode was truncated without one); at the end,
        also the truth, the metrics and what the last reward held besides the turn's."""
        board = self.board
        assert board is not None
        caption = Caption(
            action=action, feedback=self._feedback if action is not None else "truncated before a turn",
            reward=reward, episode_return=self._return,
        )  # fmt: skip
        if "metrics" not in info:
            return caption
        return dataclasses.replace(
            caption,
            detail=f"terminal {info['terminal']:+.2f}, bonus {info['bonus']:+.2f}",
            truth=", ".join(format_item(t) for t in board.problem.transformations) or "(no transformations)",
            metrics=episode_line(info["metrics"], info["interactive"]),
        )

    # ------------------------------------------------------------------ groups and state

    def get_state(self) -> str:
        """The episode as JSON: the problem key, the steps applied so far, the turns taken and whether it ended."""
        if self.board is None:
            raise RuntimeError("get_state() needs an episode: call reset() first")
        return json.dumps(self.board.saved())

    def set_state(self, state: str | bytes | Mapping[str, Any]) -> None:
        """Restore an episode from :meth:`get_state` (same source and options).

        A state that is not one :meth:`get_state` could have written (malformed JSON, a missing or mistyped
        field, an unreadable or unreplayable step, a problem key the source lacks) raises ``ValueError``
        saying what is wrong, and leaves the environment as it was.
        """
        key, steps, turns, done = read_saved(state)
        try:
            problem = self.source.from_key(key)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"state: key {key!r} names no problem of this source ({exc})") from None
        self.board, self._feedback, self._return = Board.replayed(key, problem, steps, turns, done), "", None
        self._show(self._waiting_caption(), new_episode=True)

    def spawn(self) -> TVRInteractive:
        """A new environment at this one's state (its own copy: stepping one leaves the other alone)."""
        twin = TVRInteractive(**self.config)
        if self.board is not None:
            twin.set_state(self.get_state())
            twin._feedback, twin._return, twin._caption = self._feedback, self._return, self._caption
        return twin

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # every field is plain data; renderers live in the process

    # ------------------------------------------------------------------ internals

    def _info(self) -> dict[str, Any]:
        board = self.board
        assert board is not None
        return {
            "turn": board.turns,
            "turn_limit": self.turn_limit,
            "potential": board.potential(self.potential_kind),
            "applied": board.answer(),
            "truth": format_answer(board.problem.transformations),
            "key": dict(board.key),
            "final_view": board.problem.final_view or CENTRE,
        }

    def _observation(self) -> dict[str, Any]:
        board = self.board
        assert board is not None
        prompt = interactive_prompt(board.problem, self.obs_mode)
        if self.obs_mode == "text":
            prompt += "\n" + state_table(board.current, "Current objects")
        return {
            "target": self._target_image().copy(),
            "current": self._current_image().copy(),
            "prompt": prompt,
            "feedback": self._feedback,
        }

    def _target_image(self) -> np.ndarray:
        assert self.board is not None
        p = self.board.problem
        view = p.final_view or CENTRE
        return render_view(p.final, view, p.render_seed, self.renderer_name, self.render_size, self.cache)

    def _current_image(self) -> np.ndarray:
        assert self.board is not None
        p, current = self.board.problem, self.board.current
        return render_view(current, CENTRE, p.render_seed, self.renderer_name, self.render_size, self.cache)


_EXECUTOR: ThreadPoolExecutor | None = None


def render_executor() -> ThreadPoolExecutor:
    """The process's one worker thread for environment steps off an event loop (renders take turns anyway)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvr-steps")
    return _EXECUTOR


class AsyncTVRInteractive:
    """An asyncio facade over :class:`TVRInteractive` for async trainers (verl's agent loops, async
    rollout servers): ``await reset()``, ``await step()``, ``await close()`` run the synchronous core on
    :func:`render_executor`, so renders never block the event loop. Images stay uint8 arrays."""

    def __init__(self, env: TVRInteractive | None = None, **kwargs: Any) -> None:
        self.env = env if env is not None else TVRInteractive(**kwargs)

    async def _run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(render_executor(), functools.partial(fn, *args, **kwargs))

    async def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        return await self._run(self.env.reset, seed=seed, options=options)

    async def step(self, action: Any):
        return await self._run(self.env.step, action)

    async def truncate(self):
        return await self._run(self.env.truncate)

    async def spawn(self) -> AsyncTVRInteractive:
        return AsyncTVRInteractive(await self._run(self.env.spawn))

    def get_state(self) -> str:
        return self.env.get_state()

    async def set_state(self, state: str | Mapping[str, Any]) -> None:
        await self._run(self.env.set_state, state)

    async def close(self) -> None:
        await self._run(self.env.close)


def _check_costs(costs: Mapping[str, float] | None) -> dict[str, float]:
    if costs is None:
        return dict(DEFAULT_COSTS)
    if not isinstance(costs, Mapping):
        raise ValueError(f"costs: expected a dict over {', '.join(COST_KINDS)}, got {type(costs).__name__}")
    bad = sorted(set(costs) - set(COST_KINDS))
    if bad:
        raise ValueError(f"costs: unknown key(s) {', '.join(bad)}; valid: {', '.join(COST_KINDS)}")
    out = dict(DEFAULT_COSTS)
    for k, v in costs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise ValueError(f"costs.{k}: expected a finite number >= 0, got {v!r}")
        out[k] = float(v)
    return out


QUOTES = "'\"`\u2018\u2019\u201c\u201d"
"""Quote marks the feedback drops (the prompt's character set has none) rather than turn into spaces."""
_SPACES = re.compile(r" {2,}")


def _feedback_text(outcome: Outcome, turn: int, limit: int, truncated: bool) -> str:
    """The feedback line in the prompt's character set: quotes dropped, other characters and runs of
    spaces as one space."""
    text = f"{outcome.feedback}. Turn {turn} of {limit}."
    if truncated:
        text += " No turns left."
    kept = "".join(c if c in PROMPT_CHARSET else "" if c in QUOTES else " " for c in text)
    return _SPACES.sub(" ", kept)[:FEEDBACK_MAX_LENGTH]


__all__ = [
    "AsyncTVRInteractive",
    "COST_KINDS",
    "DEFAULT_COSTS",
    "TERMINAL_REWARDS",
    "TVRInteractive",
    "render_executor",
]
