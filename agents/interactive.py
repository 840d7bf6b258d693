"""Multi-turn episodes of ``TVR-Interactive-v0`` for chat policies: rollouts (greedy or sampled) and evaluation.

A chat policy answers a batch of chats (:func:`tvr_gym.core.chat.interactive_messages`: messages and their
images) with one turn each; the MLLM policy's ``act_chats`` and
:func:`~tvr_gym.agents.mllm.sampling.sample_chats` are such policies. One rollout drives many episodes
in lock step, one model call per turn for all running episodes; each turn is kept as a training sample
(the chat the model saw and its completion), so a trainer scores only model tokens.
See ``docs/interactive.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tvr_gym.core.chat import DEFAULT_WINDOW, Exchange, ImageBudget, interactive_messages
from tvr_gym.core.metrics import summarize
from tvr_gym.core.prompt import state_table

Chat = tuple[list[dict[str, Any]], list[np.ndarray]]


@dataclass
class Episode:
    """One interactive episode as a chat policy plays it."""

    env: Any
    """The (unwrapped) :class:`tvr_gym.envs.interactive.TVRInteractive` it runs in."""
    prompt: str
    target: np.ndarray | None
    first: np.ndarray | None
    history: list[Exchange] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    chats: list[Chat] = field(default_factory=list)
    """The chat before each turn: what the model saw."""
    completions: list[torch.Tensor] = field(default_factory=list)
    """Each turn's completion token ids (sampled rollouts only)."""
    final: dict[str, Any] | None = None
    """The last step's info (terminal reward, metrics), once the episode ended."""

    @property
    def finished(self) -> bool:
        return self.final is not None

    @property
    def total(self) -> float:
        """The episode's return: the sum of its rewards."""
        return float(sum(self.rewards))

    def chat(self, window: int, system: str | None = None) -> Chat:
        return interactive_messages(self.prompt, self.target, self.first, self.history, window, system)


def start(env: gym.Env, obs: dict[str, Any], use_images: bool) -> Episode:
    """An :class:`Episode` from a fresh observation of ``env``."""
    images = (obs["target"], obs["current"]) if use_images else (None, None)
    return Episode(env.unwrapped, obs["prompt"], *images)


def _reply(episode: Episode, action: str, obs: dict[str, Any], use_images: bool) -> Exchange:
    feedback = obs["feedback"]
    if not use_images:  # text mode: the state itself goes with the feedback
        feedback += "\n" + state_table(episode.env.current, "Current objects")
    return Exchange(action, feedback, obs["current"] if use_images else None)


def play(
    episodes: Sequence[Episode],
    policy: Callable[[list[Chat]], Any],
    use_images: bool,
    window: int = DEFAULT_WINDOW,
    budget: ImageBudget = ImageBudget(),  # noqa: B008 - frozen
    system: str | None = None,
) -> list[Episode]:
    """Run every episode to its end, one policy call per turn for all running episodes.

    ``policy(chats)`` returns the turns' texts, or a :class:`~tvr_gym.agents.mllm.sampling.Samples`
    (whose token ids are kept for training). Before a turn whose reply would not fit ``budget``, an
    episode is truncated (:meth:`~tvr_gym.envs.interactive.TVRInteractive.truncate`), with its terminal reward.
    """
    while True:
        running = [e for e in episodes if not e.finished]
        for e in running:
            if not budget.allows(len(e.history) + 1, window):
                reward, info = e.env.truncate()
                e.rewards.append(reward)
                e.final = info
        running = [e for e in running if not e.finished]
        if not running:
            return list(episodes)
        chats = [e.chat(window, system) for e in running]
        answer = policy(chats)
        texts = answer if isinstance(answer, list) else answer.texts
        for k, (e, text) in enumerate(zip(running, texts)):
            e.chats.append(chats[k])
            if not isinstance(answer, list):
                e.completions.append(answer.completion_ids[k][answer.completion_mask[k].bool()].cpu())
            obs, reward, terminated, truncated, info = e.env.step(text)
            e.rewards.append(float(reward))
            e.history.append(_reply(e, text, obs, use_images))
            if terminated or truncated:
                e.final = info


def evaluate_interactive(
    agent,
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    window: int = DEFAULT_WINDOW,
    budget: ImageBudget = ImageBudget(),  # noqa: B008 - frozen
    batch_size: int = 16,
) -> dict[str, Any]:
    """Greedy episodes ``seed .. seed + episodes - 1``: the mean return, Success, Misplaced, FixedStrict
    and turns, and TVR's metrics of the applied sequences (comparable with single-shot evaluations)."""
    use_images = agent.obs_mode == "image"
    records, interactive = [], []
    for first in range(0, episodes, batch_size):
        seeds = range(seed + first, seed + min(first + batch_size, episodes))
        envs = [gym.make(env_id, **(env_kwargs or {})) for _ in seeds]
        batch = [start(env, env.reset(seed=s)[0], use_images) for env, s in zip(envs, seeds)]
        play(batch, agent.act_chats, use_images, window, budget)
        for e in batch:
            final = e.final or {}
            interactive.append({**final.get("interactive", {}), "return": e.total})
            records.append({**final.get("metrics", {}), "reward": e.total, "final_view": final.get("final_view")})
        for env in envs:
            env.close()
    means = {k: float(np.mean([r[k] for r in interactive])) for k in interactive[0]} if interactive else {}
    return {"episodes": episodes, "interactive": means, "summary": summarize(records)}


__all__ = ["Episode", "evaluate_interactive", "play", "start"]
