"""Supervised fine-tuning of a (tiny) checkpoint: the format warm-up, and SFT on true answers.

A real Qwen2.5-VL starts GRPO from an instruct model that already writes
``<think>…</think><answer>obj.attr.value</answer>``; the tiny preset starts from random weights and
never does. :func:`warmup_format` closes that gap with a short supervised pass whose targets are
well-formed answers with RANDOM valid items (:class:`tvr_gym.agents.baselines.RandomAgent`), drawn afresh for
every prompt and independent of the episode: never the truth. The model learns the grammar and to
stop after ``</answer>``, and learns nothing about which item is right, so its accuracy stays at
chance level and any later gain comes from the reward.

:func:`supervised_finetune` is the same loop on the true answers of training episodes: STAR-R1's SFT
stage, the start of the SFT-then-RL comparison and its continued-SFT control (``benchmarks/learning.py``).
Both are :func:`finetune` with other targets.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tvr_gym  # noqa: F401  (registers the environments)
from tvr_gym.agents.baselines import RandomAgent
from tvr_gym.agents.mllm.policy import POLICY_FILE, MLLMAgent
from tvr_gym.agents.mllm.sampling import token_logprobs
from tvr_gym.core.atomic import replace_dir
from tvr_gym.core.options import check_choice, check_int
from tvr_gym.core.prompt import OBS_MODES
from tvr_gym.core.spec import SPEC
from tvr_gym.envs.registration import check_env_id

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


def sample_episodes(
    env_id: str,
    n: int,
    obs_mode: str = "text",
    render_size: tuple[int, int] = (160, 120),
    seed: int = 0,
    progress: bool = False,
    **env_kwargs: Any,
) -> list[tuple[dict[str, Any], str]]:
    """``n`` (observation, true answer) pairs of ``env_id``, reset seeds ``EPISODE_SEED_BASE + seed * n + i``
    (all below the held-out seeds of :data:`tvr_gym.agents.mllm.grpo.EVAL_SEED_BASE`)."""  # fmt: skip
    from tqdm.auto import tqdm

    max_items_of(env_id)  # validates the id
    env = gym.make(env_id, obs_mode=obs_mode, render_size=render_size, **env_kwargs)
    try:
        pairs = []
        for i in tqdm(range(n), desc="episodes", disable=not progress):
            obs, info = env.reset(seed=EPISODE_SEED_BASE + seed * n + i)
            pairs.append((obs, info["truth"]))
        return pairs
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


def warmup_format(model_dir: str | Path, out_dir: str | Path, env_id: str = "TVR-Basic-v0", **options: Any) -> Path:
    """Fine-tune ``model_dir`` on (prompt, random well-formed answer) pairs: :func:`finetune` with ``targets="random"``.

    Each visit of an episode gets a fresh random answer of 1..``max_items`` items (default: the
    setting's maximum), never the truth.
    """
    return finetune(model_dir, out_dir, "random", env_id, **options)


def supervised_finetune(
    model_dir: str | Path, out_dir: str | Path, env_id: str = "TVR-Basic-v0", **options: Any
) -> Path:
    """Fine-tune ``model_dir`` on (prompt, true answer) pairs of training episodes (SFT): :func:`finetune`
    with ``targets="truth"``. The episodes' seeds never meet the held-out ones."""
    return finetune(model_dir, out_dir, "truth", env_id, **options)


TARGETS = {
    "random": "random valid items (tvr_gym.agents.baselines.RandomAgent), never the truth",
    "truth": "the true answers of the training episodes",
}
"""What :func:`finetune` can train on, each with the note ``tvr_warmup.json`` records."""


def finetune(
    model_dir: str | Path,
    out_dir: str | Path,
    targets: str = "random",
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
    max_seconds: float | None = None,
    save_every: int = 0,
    progress: bool = False,
    shuffle_seed: int | None = None,
    lr_warmup: int = 0,
) -> Path:
    """Supervised fine-tuning of ``model_dir`` on prompts of ``episodes`` episodes of ``env_id``; saves to ``out_dir``.

    ``targets``: ``"random"`` (a fresh random well-formed answer per visit: the format warm-up) or
    ``"truth"`` (each episode's true answer: SFT). Episodes are visited in shuffled passes,
    ``batch_size`` per step, for ``steps`` steps or until ``max_seconds`` of training time, whichever
    comes first. ``render_size`` defaults to a thumbnail in text mode, where the images are not read,
    and to 160x120 in image mode. The loss is the mean negative log-likelihood of the answer tokens and
    the end-of-turn token. With ``save_every``, ``out_dir/checkpoint-STEP`` is written every that many
    steps. ``lr_warmup`` raises the learning rate linearly from 0 over that many first steps. ``seed`` picks the
    episodes (reset seeds ``EPISODE_SEED_BASE + seed * episodes + i``) and the
    initialisation of randomness; ``shuffle_seed`` (default: ``seed``) the order of the visits, so runs
    on the same episodes can differ. ``out_dir`` (may equal ``model_dir``) is written atomically: model, processor,
    ``tvr_policy.json`` and ``tvr_warmup.json`` (settings, loss curve, steps done, training seconds).
    Returns ``out_dir``.
    """
    from tqdm.auto import tqdm

    # ---- arguments, the episodes, the model and its optimizer; all randomness from the seeds
    _check_options(steps, batch_size, episodes, save_every, lr_warmup, targets, obs_mode, lr, max_seconds)
    items = max_items if max_items is not None else max_items_of(env_id)
    size = render_size if render_size is not None else (TEXT_RENDER_SIZE if obs_mode == "text" else (160, 120))
    pairs = sample_episodes(env_id, episodes, obs_mode, size, seed, progress, **(env_kwargs or {}))
    agent = MLLMAgent.from_pretrained(
        model_dir, device="cpu", dtype="float32", use_images=obs_mode == "image", max_new_tokens=max_new_tokens
    )
    agent.prompt_layout = (env_kwargs or {}).get("prompt_layout")  # recorded with the checkpoint
    guesser = RandomAgent(seed=seed, max_items=items)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed if shuffle_seed is None else shuffle_seed)
    optimizer = torch.optim.AdamW([p for p in agent.model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    agent.model.train()
    record = {
        "base": str(Path(model_dir).resolve()), "env": env_id, "obs_mode": obs_mode, "steps": steps,
        "batch_size": batch_size, "lr": lr, "episodes": episodes, "max_items": items, "seed": seed,
        "max_seconds": max_seconds, "env_kwargs": env_kwargs or {}, "shuffle_seed": shuffle_seed,
        "lr_warmup": lr_warmup, "targets": TARGETS[targets],
    }  # fmt: skip
    losses, queue, seconds = [], [], 0.0
    # with a time budget the step count is an upper bound only, so the bar counts steps without an ETA
    bar = tqdm(total=steps if max_seconds is None else None, desc=f"finetune ({targets})", disable=not progress)
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        # ---- a batch of episodes from shuffled passes, each with its target answer
        batch, queue = next_batch(pairs, queue, order, batch_size)
        answers = [guesser.act(obs) if targets == "random" else truth for obs, truth in batch]
        # ---- one step of gradient descent on the answer's negative log-likelihood
        rate = lr * min(1.0, step / lr_warmup) if lr_warmup else lr  # a linear warm-up of the learning rate
        losses.append(supervised_step(agent, optimizer, batch, answers, rate))
        seconds += time.perf_counter() - t0
        bar.update(1)
        out_of_time = max_seconds is not None and seconds >= max_seconds
        if save_every and step % save_every == 0 and not out_of_time and step < steps:
            _save(agent, Path(out_dir) / f"checkpoint-{step}", {**record, "done": step, "seconds": seconds})
            agent.model.train()
        if out_of_time:
            break
    bar.close()
    return _save(agent, Path(out_dir), {**record, "done": len(losses), "seconds": seconds, "loss": losses})


def _check_options(
    steps: int, batch_size: int, episodes: int, save_every: int, lr_warmup: int, targets: str, obs_mode: str,
    lr: float, max_seconds: float | None,
) -> None:  # fmt: skip
    """The checks of :func:`finetune`'s options, before anything is loaded."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("episodes", episodes)):
        check_int(name, value, 1)
    check_int("save_every", save_every, 0)
    check_int("lr_warmup", lr_warmup, 0)
    check_choice("targets", targets, TARGETS)
    check_choice("obs_mode", obs_mode, OBS_MODES)
    if not lr > 0:
        raise ValueError(f"lr: expected > 0, got {lr!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds: expected > 0 or None, got {max_seconds!r}")


def next_batch(pairs: list, queue: list[int], order: np.random.Generator, size: int) -> tuple[list, list[int]]:
    """The next ``size`` of ``pairs`` in the order of ``queue`` (their indices), which is refilled with a shuffled
    pass over all of them whenever it runs short; returns (the batch, the rest of the queue)."""
    while len(queue) < size:
        queue.extend(order.permutation(len(pairs)).tolist())
    return [pairs[i] for i in queue[:size]], queue[size:]


def supervised_step(agent: MLLMAgent, optimizer, batch: list[tuple[Any, str]], answers: list[str], lr: float) -> float:
    """One AdamW step at learning rate ``lr`` on the mean negative log-likelihood of the ``answers`` (and their
    end-of-turn tokens) given the prompts of ``batch``, the gradient clipped to norm 1; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    target_ids, mask = _target_batch(agent, answers)
    logp = token_logprobs(agent, agent.encode([obs for obs, _ in batch]), target_ids, mask)
    loss = -(logp.sum() / mask.sum())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(agent.model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def _save(agent: MLLMAgent, out: Path, record: dict[str, Any]) -> Path:
    """Put the model in eval mode and write the checkpoint to a temp directory beside ``out``, then rename it
    into place."""
    agent.model.eval()
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    agent.model.save_pretrained(tmp, safe_serialization=True)
    agent.processor.save_pretrained(tmp)
    (tmp / POLICY_FILE).write_text(json.dumps(agent.settings(), indent=1) + "\n")
    (tmp / WARMUP_FILE).write_text(json.dumps(record, indent=1) + "\n")
    for kept in sorted(out.glob("checkpoint-*")) if out.is_dir() else []:  # this run's intermediate checkpoints
        os.replace(kept, tmp / kept.name)
    return replace_dir(tmp, out)
