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
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from tvr_gym.core.chat import DEFAULT_WINDOW, Exchange, ImageBudget, interactive_messages, reply_exchange
from tvr_gym.core.metrics import summarize
from tvr_gym.envs.base import CENTRE

if TYPE_CHECKING:  # torch loads only where a model does (the CLI's eval of a baseline needs none)
    import torch

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
    outcomes: list[str] = field(default_factory=list)
    """Each turn's outcome kind (``info["outcome"]``: applied, illegal, unreadable, done, ...)."""
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
                e.outcomes.append(info["outcome"])
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
            e.outcomes.append(info["outcome"])
            e.history.append(reply_exchange(text, obs, e.env.current, use_images))
            if terminated or truncated:
                e.final = info


INTERACTIVE_KEYS = ("success", "misplaced", "fixed_strict", "turns", "applied")
"""The per-episode scores of ``info["interactive"]`` that an evaluation averages (with the return)."""


def episode_record(
    seed: int, problem: Any, total: float, final: dict[str, Any], turns: list[dict[str, Any]]
) -> dict[str, Any]:
    """One finished episode as an evaluation journals it: the keys a single-shot record has for
    :func:`tvr_gym.core.metrics.summarize` (``n_steps``, ``final_view``, ``reward``: the return, ``metrics``: TVR's
    metrics of the net change), the ``truth`` and ``applied`` steps, ``interactive`` and every turn."""
    return {
        "seed": int(seed),
        "n_steps": len(problem.transformations),
        "final_view": problem.final_view or CENTRE,
        "truth": final["truth"],
        "applied": final["applied"],
        "reward": float(total),
        "interactive": {k: final["interactive"][k] for k in INTERACTIVE_KEYS},
        "metrics": final["metrics"],
        "turns": turns,
    }


def interactive_means(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The means of :data:`INTERACTIVE_KEYS` and of the ``return`` over :func:`episode_record` records."""
    if not records:
        return {}
    means = {k: float(np.mean([r["interactive"][k] for r in records])) for k in INTERACTIVE_KEYS}
    means["return"] = float(np.mean([r["reward"] for r in records]))
    return means


def play_tables(agent: Any, env: Any, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Episodes ``seeds`` played through the SB3 view ``env``
    (:class:`~tvr_gym.envs.interactive_sb3.InteractiveSB3`) by an agent that reads the object tables:
    ``agent.table_policy(env, seed)`` gives each episode's policy (MaskablePPO, a solver, the masked random
    policy), so an episode is the same whatever ran before it."""
    from tvr_gym.envs.interactive_sb3 import play_episode

    records = []
    for seed in seeds:
        policy = agent.table_policy(env, seed)
        played = play_episode(env, policy, seed=seed, deterministic=getattr(agent, "deterministic", True))
        board = env.unwrapped.board
        records.append(episode_record(seed, board.problem, played["reward"], played, played["turns"]))
    return records


def play_chats(
    agent: Any,
    envs: Sequence[gym.Env],
    seeds: Sequence[int],
    window: int = DEFAULT_WINDOW,
    budget: ImageBudget = ImageBudget(),  # noqa: B008 - frozen
) -> list[dict[str, Any]]:
    """Episodes ``seeds`` (one per env of ``envs``) played in lock step by a chat policy
    (``agent.act_chats``: an MLLM policy, a served model), greedy; each turn keeps the model's text and
    the feedback. A turn whose reply would not fit ``budget`` truncates the episode (:func:`play`)."""
    use_images = agent.obs_mode == "image"
    batch = [start(env, env.reset(seed=seed)[0], use_images) for env, seed in zip(envs, seeds)]
    play(batch, agent.act_chats, use_images, window, budget)
    records = []
    for e, seed in zip(batch, seeds):
        turns = [
            {
                "action": e.history[k].action if k < len(e.history) else None,  # None: truncated before a turn
                "feedback": e.history[k].feedback if k < len(e.history) else None,
                "outcome": outcome,
                "reward": reward,
            }
            for k, (outcome, reward) in enumerate(zip(e.outcomes, e.rewards))
        ]
        assert e.final is not None and e.env.board is not None
        records.append(episode_record(seed, e.env.board.problem, e.total, e.final, turns))
    return records


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
    """Greedy episodes ``seed .. seed + episodes - 1`` of a chat policy, in memory: the means of the
    interactive scores and the return, and TVR's metrics of the net changes (comparable with single-shot
    evaluations). ``tvr-gym eval`` (:func:`tvr_gym.agents.evaluate.evaluate`) journals the same episodes."""
    records = []
    for first in range(0, episodes, batch_size):
        seeds = range(seed + first, seed + min(first + batch_size, episodes))
        envs = [gym.make(env_id, **(env_kwargs or {})) for _ in seeds]
        try:
            records += play_chats(agent, envs, list(seeds), window, budget)
        finally:
            for env in envs:
                env.close()
    return {"episodes": episodes, "interactive": interactive_means(records), "summary": summarize_episodes(records)}


def summarize_episodes(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """TVR's tables (:func:`tvr_gym.core.metrics.summarize`) of :func:`episode_record` records' net changes."""
    keys = ("n_steps", "final_view", "reward")
    return summarize([{**r["metrics"], **{k: r[k] for k in keys}} for r in records])


__all__ = [
    "INTERACTIVE_KEYS", "Episode", "episode_record", "evaluate_interactive", "interactive_means", "play", "play_chats",
    "play_tables", "start", "summarize_episodes",
]  # fmt: skip
