"""Baseline agents: random guesses (blind, or reading which objects the table shows), the privileged oracle
and the empty answer."""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from tvr_gym.agents.base import Agent, Observation
from tvr_gym.core.answer import format_answer
from tvr_gym.core.prompt import initial_visible
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS


class RandomAgent(Agent):
    """A plausible random guess: 1-4 random valid items in the canonical format.

    The guess is a function of the agent's seed and the observation's prompt, so it does not depend on
    the order, the batching or the resumption of an evaluation. ``seed=None`` draws a fresh seed.
    """

    def __init__(self, seed: int | None = 0, max_items: int = 4) -> None:
        if not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items: expected an integer >= 1, got {max_items!r}")
        self.max_items = max_items
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)

    def act(self, obs: Observation) -> str:
        prompt = str(obs.get("prompt", "")) if isinstance(obs, Mapping) else ""
        rng = np.random.default_rng([self.seed, zlib.crc32(prompt.encode("utf-8", errors="replace"))])
        objects = self.candidates(prompt)
        n = int(rng.integers(1, self.max_items + 1))
        steps = []
        for _ in range(n):
            attr, value = PAIRS[int(rng.integers(len(PAIRS)))]
            steps.append((objects[int(rng.integers(len(objects)))], attr, value))
        return format_answer(steps, think="a random guess")

    def candidates(self, prompt: str) -> list[int]:
        """The objects a guess may name: all of them."""
        return list(range(SPEC.n_objects))


class VisibleGuessAgent(RandomAgent):
    """A random guess on the objects the prompt's initial table marks visible (all objects when it has no
    table): what a policy reaches without looking at the images, since only objects in view are
    transformed. The yardstick for image policies, which see that table too."""

    def candidates(self, prompt: str) -> list[int]:
        return initial_visible(prompt) or super().candidates(prompt)


class OracleAgent(Agent):
    """Answers the ground truth, which it can only get through :meth:`observe_privileged`."""

    privileged = True

    def __init__(self) -> None:
        self._truths: deque[str] = deque()

    def reset(self, seed: int | None = None) -> None:
        self._truths.clear()

    def observe_privileged(self, info: Mapping[str, Any]) -> None:
        self._truths.append(str(info["truth"]))

    def act(self, obs: Observation) -> str:
        if not self._truths:
            raise RuntimeError("OracleAgent: no ground truth; the evaluator must call observe_privileged(info) first")
        return self._truths.popleft()


class NoOpAgent(Agent):
    """Always answers nothing (well formed, no items): the star reward gives it -n_gt."""

    def act(self, obs: Observation) -> str:
        return format_answer([])
