"""GRPO for the multimodal LLM policy on any TVR environment, in one file (CleanRL style).

Reading order: the config, the math (advantages, k3 KL, clipped surrogate, loss aggregation), the
checkpoint helpers, then :func:`train`, which is the whole loop from top to bottom:

    for each step:
        draw B episode seeds from a seeded stream
        sample G completions per episode (a group = G copies of one episode, same seed)
        score every completion with env.step(text)            -> rewards
        group-normalise the rewards                           -> advantages
        mu inner updates of the clipped surrogate (+ beta * k3 KL to a frozen reference),
            each over grad_accum micro-batches; the old log-probs are the first update's own
            forward pass, which still runs on the sampling weights
        log to TensorBoard, checkpoint, evaluate on held-out seeds

Rewards come only from the gymnasium interface, so every registered TVR id trains the same way.
Device placement, gradient synchronisation and multi-GPU runs are handled by ``accelerate``.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.mllm.policy import POLICY_FILE
from agents.mllm.tiny import build_tiny_base
from tvr_gym.atomic import atomic_write_text, replace_dir
from tvr_gym.registration import check_env_id

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
REWARDS = ("star", "state", "sparse")
OBS_MODES = ("text", "image")
EVAL_SEED_BASE = 2**31
"""Held-out evaluation seeds start here; training seeds are drawn below it, so the two never meet."""
TINY_LR = 1e-3
PRETRAINED_LR = 1e-6


# ====================================================================== config
@dataclass
class GRPOConfig:
    """Every training option. ``lr=None`` means 1e-3 for the tiny preset and 1e-6 for a real checkpoint."""

    model: str = "tiny"
    env: str = "TVR-Basic-v0"
    out: str = "runs/grpo"
    steps: int = 100
    batch_size: int = 4
    group_size: int = 4
    reward: str = "star"
    obs_mode: str = "text"
    render_size: tuple[int, int] = (160, 120)
    lr: float | None = None
    beta: float = 0.0
    clip: float = 0.2
    mu: int = 1
    loss: str = "grpo"
    scale_std: bool | None = None
    """Divide advantages by the group std; ``None`` = yes, except for ``dr_grpo`` (Dr.GRPO has none)."""
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    save_every: int = 50
    eval_every: int = 50
    eval_episodes: int = 32
    seed: int = 0
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    resume: bool = False
    device: str | None = None
    dtype: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        for name, choices in (("loss", LOSS_TYPES), ("reward", REWARDS), ("obs_mode", OBS_MODES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: unknown {getattr(self, name)!r}; valid: {', '.join(choices)}")
        for name in ("steps", "batch_size", "group_size", "mu", "grad_accum", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("save_every", "eval_every", "eval_episodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0 (0 disables), got {getattr(self, name)!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum: {self.grad_accum} must divide batch_size {self.batch_size}")
        if self.beta < 0 or self.clip < 0 or self.temperature <= 0:
            raise ValueError("beta and clip must be >= 0 and temperature > 0")
        if self.scale_std is None:
            self.scale_std = self.loss != "dr_grpo"
        if self.lr is None:
            self.lr = TINY_LR if self.model == "tiny" else PRETRAINED_LR
        self.render_size = tuple(self.render_size)


# ====================================================================== the math
def group_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(r - group mean) [/ (group std + eps)], rows ordered group-major. Exactly 0 for a constant group."""
    grouped = rewards.double().view(-1, group_size)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_std and group_size > 1:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    adv = torch.where(constant, torch.zeros_like(adv), adv)
    return adv.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, 0 when equal)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int) -> torch.Tensor:
    """Reduce an (N, T) per-token loss to a scalar.

    ``grpo``: mean over each sequence's tokens, then mean over sequences.
    ``dr_grpo``: sum over all tokens / (N * max_len), a constant independent of completion lengths.
    ``dapo``: mean over all tokens of the batch (token-level).
    """
    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    if mode == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()
    if mode == "dr_grpo":
        return masked.sum() / (per_token.shape[0] * max_len)
    if mode == "dapo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    raise ValueError(f"loss: unknown {mode!r}; valid: {', '.join(LOSS_TYPES)}")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    clip: float = 0.2,
    mode: str = "grpo",
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-ratio policy loss (+ beta * k3 KL) aggregated by ``mode``; returns (loss, stats)."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv)
    per_token = -surrogate
    kl = None
    if ref_logp is not None and beta > 0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, mode, max_len or mask.shape[1])
    with torch.no_grad():
        m = mask.bool()
        n = m.sum().clamp(min=1)
        clipped = ((ratio < 1.0 - clip) & (adv < 0)) | ((ratio > 1.0 + clip) & (adv > 0))
        stats = {
            "clip_frac": float((clipped & m).sum() / n),
            "kl": float((kl * m).sum() / n) if kl is not None else 0.0,
            "ratio": float((ratio * m).sum() / n),
        }
    return loss, stats


# ====================================================================== checkpoints
TRAINER_STATE = "trainer_state.json"
"""Step, skipped updates, the episode-seed stream, the log and the config: plain JSON."""
ACCELERATE_STATE = "accelerate_state"
"""``accelerator.save_state``: optimizer, weights and every process's RNG, whole under ZeRO-3 and FSDP.
It loads with ``torch.load(weights_only=True)``, so a handed-over checkpoint cannot run code."""


def latest_checkpoint(out: Path) -> Path | None:
    """The highest-step exact ``checkpoint-STEP`` directory (one ``--resume`` can continue from), if any."""
    found = []
    for path in out.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / TRAINER_STATE).is_file() and (path / ACCELERATE_STATE).is_dir():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def save_checkpoint(
    accelerator, model, processor, target: Path, policy: dict[str, Any], trainer_state: dict[str, Any] | None
) -> None:
    """Write ``target`` atomically: the Hugging Face checkpoint (whole weights, processor, policy settings)
    that ``tvr-gym eval --agent mllm:DIR`` reads and, with ``trainer_state``, everything ``--resume`` needs.

    Every process takes part (gathering sharded weights and optimizer state is collective). All goes
    to a temporary directory beside ``target``, renamed into place once complete.
    """
    tmp = target.with_name(f".tmp-{target.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # the full weights, gathered from ZeRO-3 / FSDP shards
    if trainer_state is not None:
        accelerator.save_state(str(tmp / ACCELERATE_STATE), safe_serialization=True)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / POLICY_FILE).write_text(json.dumps(policy, indent=1) + "\n")
        if trainer_state is not None:
            (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1) + "\n")
        replace_dir(tmp, target)
    accelerator.wait_for_everyone()


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The JSON trainer state of an exact checkpoint."""
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def load_model(path: Path, base: Path, lora: bool, lora_r: int, lora_alpha: int, dtype: torch.dtype):
    """The trainable model: full weights from ``path``, or ``base`` + a (new or saved) LoRA adapter."""
    from transformers import AutoModelForImageTextToText

    kwargs = {"local_files_only": True, "trust_remote_code": False, "use_safetensors": True, "dtype": dtype}
    if not lora:
        return AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    from peft import LoraConfig, PeftModel, get_peft_model

    model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    if (path / "adapter_config.json").is_file():
        return PeftModel.from_pretrained(model, path, is_trainable=True)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=0.0,
        target_modules=rf".*language_model.*\.({'|'.join(targets)})",
    )
    return get_peft_model(model, config)


# ====================================================================== evaluation
def evaluate(agent, env, episodes: int, batch: int = 16) -> dict[str, Any]:
    """Greedy answers on the held-out seeds; returns the DESIGN 1.7 summary and its text table."""
    from tvr_gym.metrics import format_table, summarize

    records, rewards = [], []
    seeds = [EVAL_SEED_BASE + i for i in range(episodes)]
    for start in range(0, episodes, batch):
        chunk = seeds[start : start + batch]
        observations = [env.reset(seed=seed)[0] for seed in chunk]
        answers = agent.act_batch(observations)
        for seed, answer in zip(chunk, answers):
            env.reset(seed=seed)
            _, reward, _, _, info = env.step(answer)
            rewards.append(float(reward))
            records.append({**info["metrics"], "final_view": info["final_view"], "reward": float(reward)})
    summary = summarize(records)
    return {"summary": summary, "table": format_table(summary), "reward": float(np.mean(rewards))}


# ====================================================================== training
def resolve_model_dir(cfg: GRPOConfig) -> Path:
    """The base checkpoint: ``--model tiny`` builds one in OUT/base, once and atomically."""
    if cfg.model != "tiny":
        return Path(cfg.model).expanduser().resolve()
    return build_tiny_base(Path(cfg.out).resolve() / "base", seed=cfg.seed)


def check_config(cfg: GRPOConfig) -> Path | None:
    """Everything that can be checked before a model or a directory is built; the checkpoint to resume."""
    check_env_id(cfg.env)
    if cfg.model != "tiny":
        path = Path(cfg.model).expanduser()
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ValueError(f"model: {cfg.model!r} is neither 'tiny' nor a checkpoint directory (no config.json)")
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a directory")
    resume_from = latest_checkpoint(out) if cfg.resume and out.is_dir() else None
    if cfg.resume and resume_from is None:
        raise ValueError(f"resume: {out} holds no exact checkpoint-STEP to resume from; run without --resume")
    if resume_from is not None:
        done = load_trainer_state(resume_from)["step"]
        if done >= cfg.steps:
            raise ValueError(f"resume: {resume_from.name} already reached step {done}; raise --steps to extend the run")
    return resume_from


def train(cfg: GRPOConfig) -> list[dict[str, float]]:
    """Run GRPO as configured; returns the per-step log (also written to OUT/log.jsonl)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import tvr_gym  # noqa: F401  (registers the TVR environments)
    from agents.mllm.policy import MLLMAgent, _resolve_dtype

    # ---- every argument is checked, and the environments built, before anything is written
    resume_from = check_config(cfg)
    env_kwargs = {"obs_mode": cfg.obs_mode, "render_size": cfg.render_size, "reward": cfg.reward, **cfg.env_kwargs}
    env = gym.make(cfg.env, **env_kwargs)
    eval_env = gym.make(cfg.env, **env_kwargs)
    # Unused parameters are normal here (e.g. the vision tower on text observations), so DDP must allow them.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(cpu=cfg.device == "cpu", kwargs_handlers=[ddp])
    rank, world = accelerator.process_index, accelerator.num_processes
    out = Path(cfg.out).expanduser().resolve()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    base = resolve_model_dir(cfg)
    dtype = _resolve_dtype(cfg.dtype, accelerator.device)

    # ---- seeding, and where to start from
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)
    seed_stream = np.random.default_rng(cfg.seed)  # same on every process; each takes its own slice
    start_step, skipped, history = 0, 0, []

    # ---- policy, frozen reference, optimizer
    model = load_model(base, base, cfg.lora, cfg.lora_r, cfg.lora_alpha, dtype)
    processor = AutoProcessor.from_pretrained(base, local_files_only=True, trust_remote_code=False)
    agent = MLLMAgent(model, processor, use_images=cfg.obs_mode == "image", max_new_tokens=cfg.max_new_tokens)
    ref_model = None
    if cfg.beta > 0 and not cfg.lora:
        ref_model = AutoModelForImageTextToText.from_pretrained(
            base, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype
        )
        ref_model.requires_grad_(False).eval().to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    agent.model = accelerator.unwrap_model(model)

    if resume_from is not None:  # weights, optimizer and RNG from accelerate's state, the rest from JSON
        accelerator.load_state(str(resume_from / ACCELERATE_STATE))
        state = load_trainer_state(resume_from)
        seed_stream.bit_generator.state = state["seed_stream"]
        start_step, skipped, history = state["step"], state["skipped"], state["history"]

    writer = SummaryWriter(str(out / "tensorboard")) if accelerator.is_main_process else None
    if accelerator.is_main_process:
        atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=1, default=str) + "\n")

    def trainer_state(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "seed_stream": seed_stream.bit_generator.state,
            "skipped": skipped,
            "history": history,
            "config": json.loads(json.dumps(asdict(cfg), default=str)),
        }

    exact: set[int] = {start_step} if resume_from is not None else set()

    def checkpoint(step: int) -> Path:
        """OUT/checkpoint-STEP with everything ``--resume`` needs, written once per step."""
        target = out / f"checkpoint-{step}"
        if step not in exact:
            save_checkpoint(accelerator, model, processor, target, agent.settings(), trainer_state(step))
            exact.add(step)
        return target

    # SIGINT (Ctrl-C) and SIGTERM (sent by schedulers) ask to stop after the current step, which is then
    # saved as an exact checkpoint. A second signal aborts at once: only weights are saved, as partial-STEP.
    stop = {"requested": False}

    def on_signal(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    handled = (signal.SIGINT, signal.SIGTERM) if _is_main_thread() else ()
    previous_handlers = {sig: signal.signal(sig, on_signal) for sig in handled}
    show_bar = cfg.progress and accelerator.is_main_process
    bar = tqdm(total=cfg.steps, initial=start_step, desc="grpo", disable=not show_bar)
    step = start_step
    try:
        while step < cfg.steps and not stop["requested"]:
            t0 = time.perf_counter()
            B, G = cfg.batch_size, cfg.group_size
            # ---- 1. episodes: B seeds per process from the shared stream
            seeds = seed_stream.integers(0, EVAL_SEED_BASE, size=B * world)[rank * B : (rank + 1) * B].tolist()
            observations = [env.reset(seed=int(s))[0] for s in seeds]

            # ---- 2. rollouts: G completions per episode
            samples = agent.sample(observations, G, temperature=cfg.temperature, top_p=cfg.top_p, with_logprobs=False)

            # ---- 3. rewards from the environment (a group = G copies of one episode)
            rewards = torch.zeros(B * G)
            terms: dict[str, list[float]] = defaultdict(list)
            accs = []
            for i, text in enumerate(samples.texts):
                env.reset(seed=int(seeds[i // G]))
                _, reward, _, _, info = env.step(text)
                rewards[i] = float(reward)
                for k, v in info.get("reward_terms", {}).items():
                    terms[k].append(float(v))
                accs.append(float(info.get("metrics", {}).get("acc", 0.0)))

            # ---- 4. advantages, old and reference log-probs
            advantages = group_advantages(rewards, G, cfg.scale_std).to(accelerator.device)
            mask = samples.completion_mask
            old_logp = torch.zeros(mask.shape, device=accelerator.device)  # filled by the first inner update
            ref_logp = None
            if cfg.beta > 0:
                with torch.no_grad():
                    frozen = agent.model.disable_adapter() if cfg.lora else contextlib.nullcontext()
                    with frozen:
                        ref_logp = agent.token_logprobs(
                            samples.inputs, samples.completion_ids, mask, cfg.temperature, model=ref_model
                        )

            # ---- 5. mu inner updates, each accumulated over grad_accum micro-batches of whole groups
            model.train()
            chunk_rows = B * G // cfg.grad_accum
            step_stats: dict[str, list[float]] = defaultdict(list)
            for inner in range(cfg.mu):
                for c in range(cfg.grad_accum):
                    rows = slice(c * chunk_rows, (c + 1) * chunk_rows)
                    inputs = _slice_inputs(samples.inputs, rows, samples.inputs["input_ids"].shape[0])
                    sync = c == cfg.grad_accum - 1
                    with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
                        logp = agent.token_logprobs(
                            inputs, samples.completion_ids[rows], mask[rows], cfg.temperature, model=model
                        )
                        if inner == 0:  # still the sampling weights: these are the old log-probs
                            old_logp[rows] = logp.detach()
                        loss, stats = grpo_loss(
                            logp,
                            old_logp[rows],
                            advantages[rows],
                            mask[rows],
                            ref_logp[rows] if ref_logp is not None else None,
                            cfg.beta,
                            cfg.clip,
                            cfg.loss,
                            cfg.max_new_tokens,
                        )
                        accelerator.backward(loss / cfg.grad_accum)
                    step_stats["loss"].append(float(loss.detach()))
                    for k, v in stats.items():
                        step_stats[k].append(v)
                grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                if torch.isfinite(torch.as_tensor(grad_norm)):
                    optimizer.step()
                else:
                    skipped += 1  # a non-finite loss or gradient: this update is dropped, training goes on
                optimizer.zero_grad(set_to_none=True)
            step += 1

            # ---- 6. logging
            record = {
                "step": step,
                "loss": float(np.mean(step_stats["loss"][: cfg.grad_accum])),
                "reward": float(accelerator.gather(rewards.to(accelerator.device)).mean()),  # over all processes
                "acc": float(accelerator.gather(torch.tensor(accs, device=accelerator.device)).mean()),
                "kl": float(np.mean(step_stats["kl"])),
                "clip_frac": float(np.mean(step_stats["clip_frac"])),
                "completion_len": float(samples.lengths.float().mean()),
                "skipped": float(skipped),
                "step_time": time.perf_counter() - t0,
                "wall_time": time.time(),
                **{f"reward_terms/{k}": float(np.mean(v)) for k, v in terms.items()},
            }
            history.append(record)
            if writer is not None:
                for k, v in record.items():
                    if k != "step":
                        writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
                bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['acc']:.2f}", refresh=False)
                bar.update(1)

            # ---- 7. checkpoint and held-out evaluation
            if cfg.save_every and step % cfg.save_every == 0:
                checkpoint(step)
            if cfg.eval_every and cfg.eval_episodes and step % cfg.eval_every == 0:
                _run_eval(accelerator, agent, eval_env, cfg, out, step, writer, history)
    except KeyboardInterrupt:
        # A second signal mid-step: the step may be partly applied, so these weights are no exact checkpoint.
        save_checkpoint(accelerator, model, processor, out / f"partial-{step}", agent.settings(), None)
        if accelerator.is_main_process:
            print(f"aborted: weights saved to {out / f'partial-{step}'}; --resume continues from the last "
                  "exact checkpoint")  # fmt: skip
        raise
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        bar.close()
        env.close()
        eval_env.close()

    # the last step is always an exact checkpoint, so --resume can extend a finished run too
    last = checkpoint(step)
    if stop["requested"]:
        if accelerator.is_main_process:
            print(f"interrupted: saved {last}; continue with --resume")
    else:
        save_checkpoint(accelerator, model, processor, out / "final", agent.settings(), None)
    if writer is not None:
        writer.close()
    if accelerator.is_main_process:
        _write_jsonl(out / "log.jsonl", history)
    if stop["requested"]:
        raise KeyboardInterrupt
    return history


def _run_eval(accelerator, agent, env, cfg, out, step, writer, history) -> None:
    if accelerator.is_main_process:
        result = evaluate(agent, env, cfg.eval_episodes)
        payload = {"step": step, "env": cfg.env, "episodes": cfg.eval_episodes, **result}
        atomic_write_text(out / f"eval-{step}.json", json.dumps(payload, indent=1, default=str) + "\n")
        atomic_write_text(out / f"eval-{step}.txt", result["table"] + "\n")
        acc = _overall_acc(result["summary"])
        history[-1]["eval_acc"] = acc
        history[-1]["eval_reward"] = result["reward"]
        if writer is not None:
            writer.add_scalar("eval/acc", acc, step)
            writer.add_scalar("eval/reward", result["reward"], step)
    accelerator.wait_for_everyone()


def _overall_acc(summary: dict[str, Any]) -> float:
    """The overall TVR Acc of a :func:`tvr_gym.metrics.summarize` result (NaN when empty)."""
    acc = summary["overall"]["Acc"]
    return math.nan if acc is None else float(acc)


def _slice_inputs(inputs: dict[str, torch.Tensor], rows: slice, n: int) -> dict[str, torch.Tensor]:
    """Rows of a processor batch; image tensors are flattened over images, so slice them per image."""
    result = {k: v[rows] for k, v in inputs.items() if v.dim() >= 1 and v.shape[0] == n and k != "pixel_values"}
    if "image_grid_thw" in inputs:
        grid = inputs["image_grid_thw"]
        per_row = grid.shape[0] // n
        img = slice(rows.start * per_row, rows.stop * per_row)
        patches = grid.prod(dim=1)
        offsets = torch.cat([patches.new_zeros(1), patches.cumsum(0)])
        result["image_grid_thw"] = grid[img]
        result["pixel_values"] = inputs["pixel_values"][int(offsets[img.start]) : int(offsets[img.stop])]
    return result


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
