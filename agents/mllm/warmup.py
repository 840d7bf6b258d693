"""Format warm-up: teach a (tiny) checkpoint the answer grammar, but not the task.

A real Qwen2.5-VL starts GRPO from an instruct model that already writes
``<think>…</think><answer>obj.attr.value</answer>``; the tiny preset starts from random weights and
never does. :func:`warmup_format` closes that gap with a short supervised pass whose targets are
well-formed answers with RANDOM valid items (:class:`tvr_gym.agents.baselines.RandomAgent`), drawn afresh for
every prompt and independent of the episode: never the truth. The model learns the grammar and to
stop after ``</answer>``, and learns nothing about which item is right, so its accuracy stays at
chance level and any later gain comes from the reward.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tvr_gym  # noqa: F401  (registers the environments)
from tvr_gym.agents.baselines import RandomAgent
from tvr_gym.agents.mllm.policy import POLICY_FILE, MLLMAgent
from tvr_gym.atomic import replace_dir
from tvr_gym.options import check_choice, check_int
from tvr_gym.prompt import OBS_MODES
from tvr_gym.registration import check_env_id
from tvr_gym.spec import SPEC

WARMUP_FILE = "tvr_warmup.json"
"""Written beside a warmed-up checkpoint: the warm-up settings and its loss curve."""
TEXT_RENDER_SIZE = (32, 24)
"""Render size of warm-up episodes in text mode: the policy reads only the prompt, so keep rendering cheap."""
EPISODE_SEED_BASE = 2**30
"""Warm-up episode seeds start here: below the GRPO held-out seeds (2^31), away from small training seeds."""


def max_items_of(env_id: str) -> int:
    """The largest number of transformations an episode of ``env_id`` can have (1 for Basic)."""

    check_env_id(env_id)
    setting = gym.spec(env_id).kwargs.get("setting", "crossview")
    return int(SPEC.steps_per_setting[setting][1])


def sample_observations(
    env_id: str, n: int, obs_mode: str = "text", render_size: tuple[int, int] = (160, 120), seed: int = 0, **env_kwargs
) -> list[dict[str, Any]]:
    """``n`` observations of ``env_id`` via ``gym.make``/``reset``, seeds ``EPISODE_SEED_BASE + seed * n + i``."""
    max_items_of(env_id)  # validates the id
    env = gym.make(env_id, obs_mode=obs_mode, render_size=render_size, **env_kwargs)
    try:
        return [env.reset(seed=EPISODE_SEED_BASE + seed * n + i)[0] for i in range(n)]
    finally:
        env.close()


def _target_batch(agent: MLLMAgent, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer token ids + end of turn, right padded with the pad id, and their mask."""
    rows = [agent.tokenizer(a, add_special_tokens=False)["input_ids"] + [agent.eos_id] for a in answers]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), agent.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def warmup_format(
    model_dir: str | Path,
    out_dir: str | Path,
    env_id: str = "TVR-Basic-v0",
    steps: int = 150,
    batch_size: int = 8,
    lr: float = 3e-3,
    obs_mode: str = "text",
    episodes: int = 64,
    max_items: int | None = None,
    render_size: tuple[int, int] | None = None,
    seed: int = 0,
    max_new_tokens: int = 32,
    env_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Fine-tune ``model_dir`` on (prompt, random well-formed answer) pairs; save the result to ``out_dir``.

    Prompts come from ``episodes`` episodes of ``env_id`` (cycled; each visit gets a fresh random
    answer of 1..``max_items`` items, default: the setting's maximum). ``render_size`` defaults to a
    thumbnail in text mode, where the images are not read, and to 160x120 in image mode. The loss is
    the mean negative log-likelihood of the answer tokens and the end-of-turn token. ``out_dir`` (may
    equal ``model_dir``) is written atomically: model, processor, ``tvr_policy.json`` and
    ``tvr_warmup.json`` with the loss curve. Returns ``out_dir``.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("episodes", episodes)):
        check_int(name, value, 1)
    check_choice("obs_mode", obs_mode, OBS_MODES)
    if not lr > 0:
        raise ValueError(f"lr: expected > 0, got {lr!r}")
    items = max_items if max_items is not None else max_items_of(env_id)
    if render_size is None:
        render_size = TEXT_RENDER_SIZE if obs_mode == "text" else (160, 120)
    observations = sample_observations(env_id, episodes, obs_mode, render_size, seed, **(env_kwargs or {}))
    agent = MLLMAgent.from_pretrained(
        model_dir, device="cpu", dtype="float32", use_images=obs_mode == "image", max_new_tokens=max_new_tokens
    )
    guesser = RandomAgent(seed=seed, max_items=items)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed)
    model = agent.model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    queue: list[int] = []
    for _ in range(steps):
        while len(queue) < batch_size:
            queue.extend(order.permutation(episodes).tolist())
        picked, queue = queue[:batch_size], queue[batch_size:]
        batch = [observations[i] for i in picked]
        targets, mask = _target_batch(agent, [guesser.act(obs) for obs in batch])
        logp = agent.token_logprobs(agent.encode(batch), targets, mask)
        loss = -(logp.sum() / mask.sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    record = {
        "base": str(Path(model_dir).resolve()),
        "env": env_id,
        "obs_mode": obs_mode,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "episodes": episodes,
        "max_items": items,
        "seed": seed,
        "targets": "random valid items (tvr_gym.agents.baselines.RandomAgent), never the truth",
        "loss": losses,
    }
    return _save(agent, Path(out_dir), record)


def _save(agent: MLLMAgent, out: Path, record: dict[str, Any]) -> Path:
    """Write the checkpoint to a temp directory beside ``out``, then rename it into place."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    agent.model.save_pretrained(tmp, safe_serialization=True)
    agent.processor.save_pretrained(tmp)
    (tmp / POLICY_FILE).write_text(json.dumps(agent.settings(), indent=1) + "\n")
    (tmp / WARMUP_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return replace_dir(tmp, out)
