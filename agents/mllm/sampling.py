"""What a trainer needs of the MLLM policy beyond inference: sampled completions and their log-probs.

:func:`sample` draws G completions per observation (single-turn GRPO), :func:`sample_chats` one next
turn per chat (multi-turn GRPO), and :func:`token_logprobs` scores completions under a model, with the
vision tokens masked as :meth:`~tvr_gym.agents.mllm.policy.MLLMAgent.generate_ids` bans them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tvr_gym.agents.mllm.policy import MLLMAgent

Chat = tuple[list[dict[str, Any]], Sequence[Any]]
"""(messages, their images in block order)."""


@dataclass
class Samples:
    """G completions per observation, flattened observation-major (row ``i*G + g``)."""

    inputs: dict[str, torch.Tensor]
    """Processor output for the prompts (left padded), one row per completion."""
    completion_ids: torch.Tensor
    """(N, T) sampled token ids, right padded with the pad id."""
    completion_mask: torch.Tensor
    """(N, T) 1 for tokens up to and including the first end-of-turn token."""
    logprobs: torch.Tensor | None
    """(N, T) per-token log-probabilities under the sampling policy (zero where masked)."""
    texts: list[str]
    """Decoded completions."""

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")


def _sampled_ids(agent: MLLMAgent, inputs: Mapping[str, torch.Tensor], max_new_tokens: int | None, **sampling: Any):
    """Sampled completion ids (padded after the first end-of-turn token) and their mask."""
    ids = agent.generate_ids(dict(inputs), max_new_tokens, do_sample=True, **sampling)
    mask = agent.completion_mask(ids)
    return torch.where(mask.bool(), ids, torch.full_like(ids, agent.pad_id)), mask


@torch.no_grad()
def sample_chats(
    agent: MLLMAgent,
    chats: Sequence[Chat],
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
) -> Samples:
    """One sampled next turn per chat, with its token ids (no log-probs: a trainer computes them)."""
    _check_temperature(temperature)
    inputs = agent.encode_chats(chats)
    with agent.evaluating():
        ids, mask = _sampled_ids(agent, inputs, max_new_tokens, temperature=temperature, top_p=top_p)
    return Samples(inputs, ids, mask, None, agent.decode(ids, mask))


@torch.no_grad()
def sample(
    agent: MLLMAgent,
    obs_list: Sequence[Mapping[str, Any]],
    G: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int | None = None,
    with_logprobs: bool = True,
) -> Samples:
    """G sampled completions per observation, with their token ids and per-token log-probs.

    ``with_logprobs=False`` skips the scoring pass (``Samples.logprobs`` is then ``None``): a
    trainer whose first update runs on the sampling weights gets them from that forward pass.
    """
    if G < 1:
        raise ValueError(f"G: expected >= 1, got {G}")
    _check_temperature(temperature)
    inputs = agent.encode([obs for obs in obs_list for _ in range(G)])
    with agent.evaluating():
        ids, mask = _sampled_ids(agent, inputs, max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        logprobs = token_logprobs(agent, inputs, ids, mask, temperature=temperature) if with_logprobs else None
    return Samples(inputs, ids, mask, logprobs, agent.decode(ids, mask))


def token_logprobs(
    agent: MLLMAgent,
    inputs: Mapping[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    model=None,
) -> torch.Tensor:
    """(N, T) log-probs of ``completion_ids`` given the prompts, under ``model`` (default: the agent's);
    gradients flow when enabled. The banned vision tokens are masked out of the distribution, as during
    generation."""
    model = model if model is not None else agent.model
    n_new = completion_ids.shape[1]
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    input_ids = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    attention = torch.cat([inputs["attention_mask"], completion_mask.to(inputs["attention_mask"].dtype)], dim=1)
    if "mm_token_type_ids" in extra:
        mm = extra["mm_token_type_ids"]
        extra["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(completion_ids, dtype=mm.dtype)], dim=1)
    out = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=n_new + 1, use_cache=False, **extra)
    logits = out.logits[:, :-1, :].float() / temperature
    if agent.suppressed_ids:
        logits[..., agent.suppressed_ids] = float("-inf")
    logp = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return torch.where(completion_mask.bool(), logp, torch.zeros_like(logp))


__all__ = ["Samples", "sample", "sample_chats", "token_logprobs"]
