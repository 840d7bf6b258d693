"""Solvers of ``TVR-Interactive-v0`` that read the states: the references a learner is measured against.

- :class:`OraclePolicy` plays the problem's true steps in order, then ``done``: the upper bound, and the
  source of demonstrations.
- :class:`GreedyPolicy` looks one step ahead: of the legal steps (the SB3 action mask), the one that most
  reduces the TVR distance to the target, and ``done`` when none does. It knows no path, only the tables,
  so it shows what reading the two states alone achieves.

Both are SB3-style policies of an :class:`~tvr_gym.envs.interactive_sb3.InteractiveSB3` environment
(``predict(observation, action_masks)``), so :func:`~tvr_gym.envs.interactive_sb3.play_episode` plays them
as it plays MaskablePPO; they read the environment they are bound to, which a learner cannot.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tvr_gym.envs.interactive_sb3 import (
    SOLVERS,
    InteractiveSB3,
    MaskedRandomPolicy,
    greedy_action,
    make_interactive_sb3_env,
    solver_action,
)


class _BoundPolicy:
    """A policy that reads the states of the environment it is bound to."""

    name = "solver"

    def __init__(self, env: InteractiveSB3) -> None:
        if not isinstance(env, InteractiveSB3):
            raise ValueError(f"env: a solver plays an InteractiveSB3 env, not {type(env).__name__}")
        self.env = env

    def predict(self, observation: Any, action_masks: np.ndarray, deterministic: bool = True) -> tuple[int, None]:
        base = self.env.unwrapped
        if base.board is None:
            raise RuntimeError("predict() needs an episode: reset the environment first")
        return solver_action(self.name, base.board), None


class OraclePolicy(_BoundPolicy):
    """The true steps in order (turn ``k`` plays step ``k``), then ``done``."""

    name = "oracle"


class GreedyPolicy(_BoundPolicy):
    """The legal step that leaves the smallest TVR distance to the target, if smaller than now; else
    ``done`` (:func:`~tvr_gym.envs.interactive_sb3.greedy_action`)."""

    name = "greedy"


def make_solver(name: str, env: InteractiveSB3) -> OraclePolicy | GreedyPolicy:
    """The solver called ``name`` (:data:`SOLVERS`), bound to ``env``."""
    if name == "oracle":
        return OraclePolicy(env)
    if name == "greedy":
        return GreedyPolicy(env)
    raise ValueError(f"solver: unknown {name!r}; valid: {', '.join(SOLVERS)}")


TABLE_PLAYERS = ("random", "oracle", "greedy")
"""The :class:`TablePlayer` names: the masked random policy and the solvers."""


class TablePlayer:
    """``random``, ``oracle`` or ``greedy`` as an agent of ``tvr-gym eval --env TVR-Interactive-v0``: it plays
    through the SB3 view (:func:`tvr_gym.agents.interactive.play_tables`), as MaskablePPO does. ``random``
    draws each episode's actions from ``seed`` and the episode's seed, so a resumed evaluation plays the
    episodes an uninterrupted one plays."""

    interactive = True
    privileged = False

    def __init__(self, name: str, seed: int | None = 0) -> None:
        if name not in TABLE_PLAYERS:
            raise ValueError(f"agent: unknown {name!r} for TVR-Interactive-v0; valid: {', '.join(TABLE_PLAYERS)}")
        self.name = name
        self.seed = seed

    def make_env(self, **env_kwargs: Any) -> InteractiveSB3:
        return make_interactive_sb3_env(**env_kwargs)

    def table_policy(self, env: InteractiveSB3, episode_seed: int) -> Any:
        """The policy that plays the episode of ``episode_seed`` in ``env``."""
        if self.name == "random":
            return MaskedRandomPolicy(None if self.seed is None else [self.seed, episode_seed])
        return make_solver(self.name, env)


__all__ = [
    "SOLVERS", "TABLE_PLAYERS", "GreedyPolicy", "OraclePolicy", "TablePlayer", "greedy_action", "make_solver",
]  # fmt: skip
