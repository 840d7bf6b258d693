"""Expert episodes of ``TVR-Interactive-v0`` as multi-turn chats: the SFT data of a warm start.

A solver (:data:`~tvr_gym.envs.interactive_sb3.SOLVERS`: ``oracle`` plays the true steps then ``done``,
``greedy`` the one-step lookahead) plays episode ``reset(seed=seed, options={"index": i})``; each of its
turns is written as a policy is asked to write it (``<think></think><answer>STEP</answer>``) and answered
by the environment. The chat is the one a chat policy sees (:func:`tvr_gym.core.chat.interactive_messages`,
with the images of the last :data:`~tvr_gym.core.chat.DEFAULT_WINDOW` replies), ending with the solver's
last turn. ``tvr-gym export --env TVR-Interactive-v0 --demonstrations oracle`` writes them for TRL's SFT
(``--format hf``) or verl's multi-turn SFT (``--format verl``); see ``docs/interactive.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tvr_gym.core.chat import DEFAULT_WINDOW, Exchange, count_images, interactive_messages, reply_exchange
from tvr_gym.core.options import check_choice
from tvr_gym.envs.interactive_sb3 import SOLVERS, action_text, solver_action
from tvr_gym.envs.registration import INTERACTIVE_ID

__all__ = ["Demonstration", "demonstrations", "turn_rows", "turn_text"]


def turn_text(step: str) -> str:
    """A turn as the interactive prompt asks for it: an empty reasoning block and one step (or ``done``)."""
    return f"<think></think><answer>{step}</answer>"


@dataclass(frozen=True)
class Demonstration:
    """One solver episode as a chat: ``messages`` (blocks ``{"type": "image"}`` and ``{"type": "text", ...}``, the
    assistant's turns last) and ``images``, one per image block in block order."""

    index: int
    seed: int
    setting: str
    solver: str
    messages: list[dict[str, Any]]
    images: list[np.ndarray]
    problem: dict[str, Any]
    final_view: str
    answer: str
    """The true answer (the steps the problem was made with)."""
    success: bool
    """Whether the episode ended with the target reached and ``done`` said (an oracle's always does)."""
    episode_return: float

    @property
    def n_steps(self) -> int:
        return len(self.problem["transformations"])

    @property
    def n_turns(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)


def demonstrations(
    indices: Iterable[int], seed: int = 0, solver: str = "oracle", window: int = DEFAULT_WINDOW, **env_kwargs: Any
) -> Iterator[Demonstration]:
    """The solver's episodes ``reset(seed=seed, options={"index": i})`` of ``TVR-Interactive-v0`` for ``indices``."""
    import gymnasium as gym

    check_choice("solver", solver, SOLVERS)
    env = gym.make(INTERACTIVE_ID, **env_kwargs)
    base = env.unwrapped
    use_images = base.obs_mode == "image"
    try:
        for i in indices:
            obs, info = env.reset(seed=seed, options={"index": i})
            prompt = obs["prompt"]
            target, first = (obs["target"], obs["current"]) if use_images else (None, None)
            history: list[Exchange] = []
            total, done = 0.0, False
            while not done:
                text = turn_text(action_text(solver_action(solver, base.board)))
                obs, reward, terminated, truncated, info = env.step(text)
                total += float(reward)
                history.append(reply_exchange(text, obs, base.current, use_images))
                done = terminated or truncated
            messages, images = interactive_messages(prompt, target, first, history[:-1], window)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": history[-1].action}]})
            yield Demonstration(
                index=i, seed=seed, setting=base.setting, solver=solver, messages=messages, images=images,
                problem=base.problem.to_dict(), final_view=info["final_view"],
                answer=info["truth"],
                success=bool(info["interactive"]["success"]), episode_return=total,
            )  # fmt: skip
    finally:
        env.close()


def turn_rows(messages: list[dict[str, Any]], images: list[Any]) -> list[dict[str, Any]]:
    """A demonstration's chat as one prompt-completion row per assistant turn: the chat before the turn
    (``prompt``, with the ``images`` of its image blocks) and the turn (``completion``). What a policy is
    asked at each turn, so an SFT loss on completions trains exactly the turns (TRL's default)."""
    rows = []
    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            before = messages[:k]
            rows.append({"prompt": before, "completion": [message], "images": list(images[: count_images(before)])})
    return rows
