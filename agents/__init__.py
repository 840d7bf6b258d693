"""Agents that act in the TVR environments through one interface (:class:`tvr_gym.agents.base.Agent`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvr_gym.agents.base import Agent, act_batch
from tvr_gym.agents.baselines import NoOpAgent, OracleAgent, RandomAgent, VisibleGuessAgent
from tvr_gym.envs.registration import INTERACTIVE_ID

__all__ = [
    "AGENT_NAMES", "Agent", "NoOpAgent", "OracleAgent", "RandomAgent", "VisibleGuessAgent", "act_batch", "make_agent",
]  # fmt: skip

AGENT_NAMES = ("random", "visible", "oracle", "noop", "greedy", "mllm:PATH", "ppo:PATH", "openai:MODEL@URL")
"""Agent specs accepted by :func:`make_agent` (``greedy`` on ``TVR-Interactive-v0`` only; ``visible`` and ``noop``
on single-shot environments only)."""


def make_agent(spec: str, seed: int | None = 0, obs_mode: str | None = None, env_id: str | None = None) -> Any:
    """Build an agent from a spec: ``random``, ``visible`` (a random guess on the objects in view),
    ``oracle``, ``noop``, ``greedy``, ``mllm:PATH``, ``ppo:PATH``, ``openai:MODEL@URL``.

    ``env_id`` ``TVR-Interactive-v0`` makes the agents that play it: ``random``, ``oracle`` and ``greedy`` as
    :class:`~tvr_gym.agents.solvers.TablePlayer`, ``ppo:PATH`` a MaskablePPO model trained on it; ``mllm:`` and
    ``openai:`` agents play it as chats.

    ``obs_mode`` (``image`` or ``text``) says what a policy sees. A checkpoint trained by tvr-gym records
    it in ``tvr_policy.json``; one trained elsewhere (verl, EasyR1, another TRL script) has none and must
    be told, so ``mllm:PATH`` without that file needs ``obs_mode``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"agent: expected a string, got {type(spec).__name__}; valid: {', '.join(AGENT_NAMES)}")
    if obs_mode is not None and obs_mode not in ("image", "text"):
        raise ValueError(f"obs_mode: unknown {obs_mode!r}; valid: image, text")
    name, _, path = spec.partition(":")
    if env_id == INTERACTIVE_ID:
        from tvr_gym.agents.solvers import TABLE_PLAYERS, TablePlayer

        if name in TABLE_PLAYERS and not path:
            return TablePlayer(name, seed=seed)
        if name in ("visible", "noop") and not path:
            raise ValueError(f"agent: {name} answers single-shot problems; on {env_id} use {', '.join(TABLE_PLAYERS)}, "
                             "ppo:PATH, mllm:PATH or openai:MODEL@URL")  # fmt: skip
        if name == "ppo" and path:
            from tvr_gym.agents.ppo import InteractivePPOAgent

            return InteractivePPOAgent.load(path)
    elif name == "greedy" and not path:
        raise ValueError(f"agent: greedy plays {INTERACTIVE_ID} (--env {INTERACTIVE_ID}); it has no single-shot form")
    if name == "random" and not path:
        return RandomAgent(seed=seed)
    if name == "visible" and not path:
        return VisibleGuessAgent(seed=seed)
    if name == "oracle" and not path:
        return OracleAgent()
    if name == "noop" and not path:
        return NoOpAgent()
    if name == "mllm" and path:
        from tvr_gym.agents.mllm import MLLMAgent
        from tvr_gym.agents.mllm.policy import POLICY_FILE

        if obs_mode is None and Path(path).is_dir() and not (Path(path) / POLICY_FILE).is_file():
            raise ValueError(
                f"agent: {path} has no {POLICY_FILE} (trained outside tvr-gym?): say what it reads with "
                "--obs-mode image or --obs-mode text"
            )
        return MLLMAgent.from_pretrained(path, obs_mode=obs_mode)
    if name == "ppo" and path:
        from tvr_gym.agents.ppo import PPOAgent

        return PPOAgent.load(path)
    if name == "openai" and path:
        from tvr_gym.agents.openai_agent import OpenAIAgent

        return OpenAIAgent.from_spec(path, use_images=obs_mode != "text")
    raise ValueError(f"agent: unknown spec {spec!r}; valid: {', '.join(AGENT_NAMES)}")
