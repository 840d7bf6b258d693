"""Stable-Baselines3 spaces for :class:`~tvr_gym.envs.interactive.TVRInteractive`: one discrete action per turn.

* Action: ``Discrete(331)``. Action ``a < 330`` is object ``a // 33`` with the pair
  ``PAIRS[a % 33]`` (:data:`tvr_gym.core.transform.PAIRS`), sent to the environment as the text
  ``obj.attr.value``; action ``330`` (:data:`DONE_ACTION`) is ``done``.
* Action masks (:meth:`InteractiveSB3.action_masks`, as sb3-contrib's ``MaskablePPO`` reads them): a
  step is masked out when the environment would refuse it as illegal (a move off the grid; a move or
  size change that overlaps another object) or as a no-op (the scene looks the same), judged on the
  current state by the environment's own rule (:func:`~tvr_gym.core.transform.try_apply`); ``done`` is always
  allowed.
* Observation: ``float32 Box(-1, 1, (401,))``: the current state's object table, the target's
  (:func:`tvr_gym.envs.wrappers.encode_state`, world frame) and the fraction of the turn limit used.

:func:`make_interactive_sb3_env` builds ``TVR-Interactive-v0`` and wraps it; :func:`play_episode` plays
one episode with any SB3-style policy (``predict(obs, action_masks=...)``). See ``docs/interactive.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tvr_gym.core.answer import DONE, format_item
from tvr_gym.core.options import is_int
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS, legal_steps, pair_index, state_distance, try_apply
from tvr_gym.envs.board import Board
from tvr_gym.envs.interactive import TVRInteractive
from tvr_gym.envs.registration import INTERACTIVE_ID
from tvr_gym.envs.wrappers import FEATURES_PER_OBJECT, encode_state

__all__ = [
    "DONE_ACTION",
    "N_ACTIONS",
    "SOLVERS",
    "InteractiveSB3",
    "MaskedRandomPolicy",
    "action_of",
    "action_text",
    "greedy_action",
    "legal_mask",
    "make_interactive_sb3_env",
    "observation_size",
    "play_episode",
    "solver_action",
    "step_of",
    "symbolic_observation",
]

_N_OBJECTS = SPEC.n_objects
_N_PAIRS = len(PAIRS)
N_ACTIONS = _N_OBJECTS * _N_PAIRS + 1
"""Object x pair steps, then ``done``."""
DONE_ACTION = N_ACTIONS - 1
"""The action that ends the episode."""


def step_of(action: Any) -> tuple | None:
    """The (object, attribute, value) step of an action, or ``None`` for :data:`DONE_ACTION`."""
    a = _check_action(action)
    if a == DONE_ACTION:
        return None
    attr, value = PAIRS[a % _N_PAIRS]
    return (a // _N_PAIRS, attr, value)


def action_text(action: Any) -> str:
    """The environment's text for an action: ``obj.attr.value`` or ``done``."""
    step = step_of(action)
    return DONE if step is None else format_item(step)


def action_of(step: tuple | str | None) -> int:
    """The action of an (object, attribute, value) step; ``None`` or ``"done"`` give :data:`DONE_ACTION`."""
    if step is None or step == DONE:
        return DONE_ACTION
    obj, attr, value = step
    if not is_int(obj) or not 0 <= obj < _N_OBJECTS:
        raise ValueError(f"step: object {obj!r} out of range 0..{_N_OBJECTS - 1}")
    return int(obj) * _N_PAIRS + pair_index(attr, tuple(value) if isinstance(value, list) else value)


def _check_action(action: Any) -> int:
    arr = np.asarray(action)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"action: expected one integer in 0..{N_ACTIONS - 1}, got {action!r}")
    a = int(arr.reshape(()))
    if not 0 <= a < N_ACTIONS:
        raise ValueError(f"action: {a} out of range 0..{N_ACTIONS - 1}")
    return a


def legal_mask(state: State) -> np.ndarray:
    """``bool (N_ACTIONS,)``: True for the steps that would change ``state`` legally, and for ``done``.

    The environment's one rule, :func:`~tvr_gym.core.transform.try_apply`, for all steps at once
    (:func:`~tvr_gym.core.transform.legal_steps`): a step is masked in exactly when the environment would
    apply it (not off the grid, no overlap, a visible change).
    """
    return np.append(legal_steps(state).reshape(-1), True)  # object-major, as the actions; then done


SOLVERS = ("oracle", "greedy")
"""The solvers of :func:`solver_action`."""


def greedy_action(current: State, target: State, mask: np.ndarray) -> int:
    """Of the actions ``mask`` allows, the step that leaves the smallest TVR distance to ``target``, if smaller
    than now; else :data:`DONE_ACTION`. Ties go to the first such action."""
    best, best_distance = DONE_ACTION, state_distance(current, target)
    for action in np.flatnonzero(mask[:DONE_ACTION]):
        step = step_of(int(action))
        outcome = try_apply(current, step)
        if not outcome.legal:
            continue
        distance = state_distance(current.with_object(step[0], outcome.obj), target)
        if distance < best_distance:
            best, best_distance = int(action), distance
    return best


def solver_action(name: str, board: Board) -> int:
    """The action of the solver ``name`` (:data:`SOLVERS`) on a running episode's ``board``: ``oracle`` plays
    the true steps in order (turn ``k``, step ``k``), then ``done``; ``greedy`` the :func:`greedy_action` among
    the legal steps. Solvers read the target state, which a learner cannot."""
    if name == "oracle":
        steps = board.problem.truth_steps
        return action_of(steps[board.turns]) if board.turns < len(steps) else DONE_ACTION
    if name == "greedy":
        return greedy_action(board.current, board.problem.final, legal_mask(board.current))
    raise ValueError(f"solver: unknown {name!r}; valid: {', '.join(SOLVERS)}")


def observation_size() -> int:
    """Length of the observation: two object tables and the turn fraction."""
    return 2 * _N_OBJECTS * FEATURES_PER_OBJECT + 1


def symbolic_observation(current: State, target: State, turn: int, turn_limit: int) -> np.ndarray:
    """The observation: the current then the target object table, then ``turn / turn_limit`` (at most 1)."""
    fraction = np.float32([min(turn / turn_limit, 1.0)])
    return np.concatenate([encode_state(current), encode_state(target), fraction])


def _unwrapped_interactive(env: gym.Env) -> TVRInteractive:
    base = env.unwrapped
    if not isinstance(base, TVRInteractive):
        raise ValueError(f"env: expected a TVRInteractive env ({INTERACTIVE_ID}), not {type(base).__name__}")
    return base


class InteractiveSB3(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``Discrete(331)`` actions, a symbolic ``Box`` observation and :meth:`action_masks` (module docstring).

    Rewards, ``terminated``/``truncated`` and ``info`` are the environment's; ``info["action_text"]``
    holds the text each action stood for. The environment's images are never rendered
    (:meth:`~tvr_gym.envs.interactive.TVRInteractive.begin` and ``play_turn``): the observation is the
    object tables. (An environment made with ``render_mode="rgb_array_list"`` still keeps a frame of each turn,
    for ``tvr-gym record``.)
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._base = _unwrapped_interactive(env)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(observation_size(),), dtype=np.float32)
        self._mask: tuple[State, np.ndarray] | None = None  # (state, its mask)

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        info = self._base.begin(seed=seed, options=options)  # the images are never rendered: not read here
        return self._observation(info), info

    def step(self, action: Any):
        """One turn. At the turn limit the episode is ``truncated`` as in the environment and also
        ``terminated``: the limit is part of this task (the observation holds the turn fraction, and the
        terminal reward is paid then), so nothing follows it. SB3 adds ``gamma * V(last observation)`` to the
        last reward of an episode that is truncated but not terminated, as if it went on; here that value is
        of a state it never trained on, and it paid the policy for running out the turns
        (``docs/interactive.md``)."""
        text = action_text(action)
        reward, terminated, truncated, info = self._base.play_turn(text)
        info["action_text"] = text
        return self._observation(info), reward, terminated or truncated, truncated, info

    def action_masks(self) -> np.ndarray:
        """The legal, state-changing steps of the current state, and ``done`` (see :func:`legal_mask`)."""
        state = self._base.current
        if state is None:
            raise RuntimeError("action_masks() needs an episode: call reset() first")
        if self._mask is None or self._mask[0] is not state:
            self._mask = (state, legal_mask(state))
        return self._mask[1].copy()

    def _observation(self, info: Mapping[str, Any]) -> np.ndarray:
        problem, state = self._base.problem, self._base.current
        assert problem is not None and state is not None
        return symbolic_observation(state, problem.final, info["turn"], info["turn_limit"])


def make_interactive_sb3_env(render_size: tuple[int, int] = (16, 12), **env_kwargs: Any) -> InteractiveSB3:
    """``gym.make("TVR-Interactive-v0", render_size=..., **env_kwargs)`` wrapped by :class:`InteractiveSB3`.

    ``render_size`` defaults to 16x12: the observation holds no pixels, so the renders only cost time.
    """
    return InteractiveSB3(gym.make(INTERACTIVE_ID, render_size=render_size, **env_kwargs))


class MaskedRandomPolicy:
    """The random reference: a uniform choice among the masked-in actions (``done`` included)."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, observation: Any, action_masks: np.ndarray, deterministic: bool = True) -> tuple[int, None]:
        return int(self.rng.choice(np.flatnonzero(action_masks))), None


def play_episode(
    env: InteractiveSB3,
    policy: Any,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Play one episode of ``env`` with ``policy`` (e.g. a ``MaskablePPO`` model) and return its record.

    ``policy.predict(obs, action_masks=mask, deterministic=...)`` picks each action from the masked
    ones. The record holds the summed ``reward``, the ``actions`` as text, the ``turns`` (each one's
    ``action``, ``outcome`` and ``reward``), and the environment's final
    ``interactive`` (success, misplaced, fixed_strict, turns, applied) and ``metrics`` (TVR's metrics of
    the net change), ``applied`` and ``truth``.
    """
    if not isinstance(env, InteractiveSB3):
        raise ValueError(f"env: expected an InteractiveSB3 env, not {type(env).__name__}")
    obs, info = env.reset(seed=seed, options=options)
    total, turns = 0.0, []
    while True:
        action, _ = policy.predict(obs, action_masks=env.action_masks(), deterministic=deterministic)
        obs, reward, terminated, truncated, info = env.step(int(np.asarray(action).reshape(())))
        total += float(reward)
        turns.append({"action": info["action_text"], "outcome": info["outcome"], "reward": float(reward)})
        if terminated or truncated:
            break
    return {
        "reward": total,
        "actions": [t["action"] for t in turns],
        "turns": turns,
        "terminated": bool(terminated and not truncated),  # ended by done (the SB3 view ends both ways)
        "interactive": info["interactive"],
        "metrics": info["metrics"],
        "applied": info["applied"],
        "truth": info["truth"],
        "key": info["key"],
    }
