"""The agent interface: anything with ``act(obs) -> str`` can be evaluated on any TVR environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

Observation = Mapping[str, Any]
"""An environment observation: ``initial`` and ``final`` images and the ``prompt``."""


@runtime_checkable
class Agent(Protocol):
    """Maps an observation to a completion ``<think>…</think><answer>…</answer>``.

    ``act_batch`` answers several observations at once; its default loops over :meth:`act`, and
    batched agents (e.g. an MLLM) override it. Agents that declare ``privileged = True`` are handed
    each episode's reset ``info`` through :meth:`observe_privileged` by the evaluator before acting;
    no other agent ever sees the ground truth.
    """

    privileged: bool = False

    def act(self, obs: Observation) -> str: ...

    def act_batch(self, observations: Sequence[Observation]) -> list[str]:
        return [self.act(obs) for obs in observations]

    def observe_privileged(self, info: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Receive the reset ``info`` of the next episode (only for ``privileged`` agents)."""

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 - optional hook
        """Start a new run (reseed any randomness)."""


def act_batch(agent: Any, observations: Sequence[Observation]) -> list[str]:
    """``agent.act_batch`` when it has one, else a loop over ``agent.act``."""
    batch = getattr(agent, "act_batch", None)
    answers = batch(list(observations)) if callable(batch) else [agent.act(obs) for obs in observations]
    if len(answers) != len(observations):
        raise ValueError(f"act_batch: returned {len(answers)} answers for {len(observations)} observations")
    return list(answers)
