"""Agents that act in the TVR environments through one interface (:class:`agents.base.Agent`)."""

from __future__ import annotations

from typing import Any

from agents.base import Agent, act_batch
from agents.baselines import NoOpAgent, OracleAgent, RandomAgent

__all__ = ["AGENT_NAMES", "Agent", "NoOpAgent", "OracleAgent", "RandomAgent", "act_batch", "make_agent"]

AGENT_NAMES = ("random", "oracle", "noop", "mllm:PATH", "ppo:PATH")
"""Agent specs accepted by :func:`make_agent`."""


def make_agent(spec: str, seed: int | None = 0) -> Any:
    """Build an agent from a spec: ``random``, ``oracle``, ``noop``, ``mllm:PATH`` or ``ppo:PATH``."""
    if not isinstance(spec, str):
        raise ValueError(f"agent: expected a string, got {type(spec).__name__}; valid: {', '.join(AGENT_NAMES)}")
    name, _, path = spec.partition(":")
    if name == "random" and not path:
        return RandomAgent(seed=seed)
    if name == "oracle" and not path:
        return OracleAgent()
    if name == "noop" and not path:
        return NoOpAgent()
    if name == "mllm" and path:
        from agents.mllm import MLLMAgent

        return MLLMAgent.from_pretrained(path)
    if name == "ppo" and path:
        from agents.ppo import PPOAgent

        return PPOAgent.load(path)
    raise ValueError(f"agent: unknown spec {spec!r}; valid: {', '.join(AGENT_NAMES)}")
