"""GRPO for the multimodal LLM policy on any TVR environment, in one file (CleanRL style).

Reading order: the config, the math (advantages, k3 KL, clipped surrogate, loss aggregation), the
checkpoints, the setup, the steps of the loop, then :func:`train`, which reads from top to bottom as this
sketch (its named steps on the right):

    check every argument; build the environments                                  check_config()
    seed every process; build the policy, a frozen reference and the optimizer    build_policy()
        (--resume: restore them, the episode stream and the log)                  resume()
    for each step:
        draw B episode seeds from a seeded stream; reset one environment per episode
        sample G completions per episode (a group) and score     -> rewards       rollout_groups()
          each group on its episode with env.score(text)                          score_group()
          (interactive: G copies of each episode, played turn by turn; rewards = returns,
           every turn a sample of its own)                                        interactive_rollouts()
        group-normalise the rewards                              -> advantages
        mu inner updates of the clipped surrogate (+ beta * k3 KL to the frozen reference), each
            over grad_accum micro-batches; the old log-probs are the first update's own forward
            pass, which still runs on the sampling weights                        update_policy(), update()
        log to TensorBoard                                                        step_record(), log_step()
        checkpoint, evaluate on held-out seeds                                    held_out_eval()
    save the last step as an exact checkpoint, and the model as OUT/final         finish()
    (a signal stops after the step, a second aborts it; none interrupts a save)   GracefulStop, abort()

Rewards come only from the gymnasium interface, so every registered TVR id trains the same way.
Device placement, gradient synchronisation and multi-GPU runs are handled by ``accelerate``.
See ``docs/mllm-grpo.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import pickle
import random
import re
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tvr_gym.agents.evaluate import evaluate
from tvr_gym.agents.interactive import Episode, evaluate_interactive, play, start
from tvr_gym.agents.mllm.policy import POLICY_FILE, MLLMAgent, resolve_dtype
from tvr_gym.agents.mllm.sampling import sample, sample_chats, token_logprobs
from tvr_gym.agents.mllm.tiny import build_tiny_base
from tvr_gym.core.atomic import atomic_write_text, replace_dir
from tvr_gym.core.chat import DEFAULT_WINDOW, ImageBudget, image_tokens
from tvr_gym.core.metrics import format_table
from tvr_gym.core.options import check_choice, check_int, check_size
from tvr_gym.core.prompt import OBS_MODES
from tvr_gym.core.reward import REWARD_NAMES
from tvr_gym.envs.registration import INTERACTIVE_ID, check_env_id

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
OPTIMIZERS = ("adamw", "sgd")
DTYPES = ("float32", "bfloat16", "float16")
EVAL_SEED_BASE = 2**31
"""Held-out evaluation seeds start here; training seeds are drawn below it, so the two never meet."""
TINY_LR = 1e-3
PRETRAINED_LR = 1e-6


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


# ====================================================================== config
@dataclass
class GRPOConfig:
    """Every training option; ``tvr-gym train grpo`` has one flag per field (see ``docs/mllm-grpo.md``)."""

    model: str = field(default="tiny", metadata=_help("'tiny' (built in OUT/base) or a local checkpoint directory"))
    env: str = field(default="TVR-Basic-v0", metadata=_help("a registered TVR environment id"))
    out: str = field(default="runs/grpo", metadata=_help("output directory: checkpoints, TensorBoard, evals"))
    steps: int = field(default=100, metadata=_help("GRPO steps"))
    max_minutes: float = field(
        default=0.0, metadata=_help("also stop after the step that spends this much training time (0: no limit)")
    )
    batch_size: int = field(default=4, metadata=_help("episodes per step (per process)"))
    group_size: int = field(default=4, metadata=_help("completions per episode (G)"))
    reward: str = field(default="star", metadata=_help("star | state | sparse | a STAR ablation", choices=REWARD_NAMES))
    obs_mode: str = field(default="text", metadata=_help("what the policy reads", choices=OBS_MODES))
    size: list[int] = field(default_factory=lambda: [160, 120], metadata=_help("image size W H"))
    lr: float | None = field(default=None, metadata=_help("default: 1e-3 for tiny, 1e-6 for a checkpoint"))
    beta: float = field(default=0.0, metadata=_help("KL coefficient (k3 estimator); 0 = no reference model"))
    clip: float = field(default=0.2, metadata=_help("PPO ratio clip epsilon"))
    mu: int = field(default=1, metadata=_help("inner updates per batch"))
    loss: str = field(default="grpo", metadata=_help("loss aggregation", choices=LOSS_TYPES))
    scale_std: bool | None = field(
        default=None, metadata=_help("divide advantages by the group std (default: yes, except for dr_grpo)")
    )
    grad_accum: int = field(default=1, metadata=_help("micro-batches per update"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    optimizer: str = field(default="adamw", metadata=_help("adamw, or plain sgd (no momentum)", choices=OPTIMIZERS))
    skip_flat: bool = field(
        default=False,
        metadata=_help("no update when every advantage is zero: Adam's moments stay put (the KL term is skipped too)"),
    )
    lora: bool = field(default=False, metadata=_help("train LoRA adapters (peft) instead of all weights"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha"))
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("recompute activations in the backward pass: less memory, more compute")
    )
    save_every: int = field(default=50, metadata=_help("steps between checkpoints (0: only the last)"))
    eval_every: int = field(default=50, metadata=_help("steps between held-out evaluations (0: off)"))
    eval_episodes: int = field(default=32, metadata=_help("held-out episodes per evaluation"))
    seed: int = field(default=0, metadata=_help("seed of the episode stream and of the processes' RNGs"))
    max_new_tokens: int = field(default=64, metadata=_help("completion length limit"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature"))
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling"))
    resume: bool = field(default=False, metadata=_help("continue from the latest OUT/checkpoint-STEP"))
    device: str | None = field(default=None, metadata=_help("auto, cpu, cuda or mps; default: accelerate's choice"))
    dtype: str | None = field(default=None, metadata=_help("model dtype (default: bf16 on CUDA)", choices=DTYPES))
    quiet: bool = field(default=False, metadata=_help("no progress bar"))
    window: int = field(default=DEFAULT_WINDOW, metadata=_help("interactive: turns shown with their images"))
    max_images: int = field(default=0, metadata=_help("interactive: images an episode may show (0: no limit)"))
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata=_help("further environment keywords"))

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSS_TYPES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("reward", self.reward, REWARD_NAMES)
        check_choice("obs_mode", self.obs_mode, OBS_MODES)
        if self.dtype is not None:
            check_choice("dtype", self.dtype, DTYPES)
        for name in ("steps", "batch_size", "group_size", "mu", "grad_accum", "max_new_tokens"):
            check_int(name, getattr(self, name), 1)
        for name in ("save_every", "eval_every", "eval_episodes", "window", "max_images"):
            check_int(name, getattr(self, name), 0)
        self.size = list(check_size(self.size))
        self.budget()  # checks max_images: 0 (no limit), else at least the target and the first render
        if self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum: {self.grad_accum} must divide batch_size {self.batch_size}")
        if not (isinstance(self.max_minutes, (int, float)) and 0 <= self.max_minutes < math.inf):
            raise ValueError(f"max_minutes: expected a finite number >= 0, got {self.max_minutes!r}")
        if self.beta < 0 or self.clip < 0 or self.temperature <= 0:
            raise ValueError("beta and clip must be >= 0 and temperature > 0")
        if self.scale_std is None:
            self.scale_std = self.loss != "dr_grpo"
        if self.lr is None:
            self.lr = TINY_LR if self.model == "tiny" else PRETRAINED_LR

    @property
    def interactive(self) -> bool:
        """Whether the environment is multi-turn (``TVR-Interactive-v0``)."""
        return self.env == INTERACTIVE_ID

    def env_options(self) -> dict[str, Any]:
        """The keywords of every environment of the run (an interactive one takes its terminal reward)."""
        reward_key = "terminal_reward" if self.interactive else "reward"
        return {"obs_mode": self.obs_mode, "render_size": tuple(self.size), reward_key: self.reward, **self.env_kwargs}

    def budget(self) -> ImageBudget:
        """The image budget of an interactive episode."""
        return ImageBudget(self.max_images or None, image_tokens(tuple(self.size)))


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
# What is pickle and what is not. The weights (model.safetensors, also in accelerate_state/) are safetensors;
# trainer_state.json, tvr_policy.json, manifest.json, the config and the processor's files are JSON or text.
# Only accelerate_state/optimizer.bin and random_states_RANK.pkl are torch.save pickles; accelerate loads them
# with torch.load(weights_only=True), an unpickler that builds tensors, numbers, strings, containers and numpy
# arrays and refuses every other global, so a checkpoint someone hands you cannot run code when resumed.
# The manifest guards against damage, not against tampering: whoever can change a file can change it too.
TRAINER_STATE = "trainer_state.json"
"""Step, skipped updates, the episode-seed stream, the log and the config: plain JSON."""
ACCELERATE_STATE = "accelerate_state"
"""``accelerator.save_state``: optimizer, weights and every process's RNG, whole under ZeRO-3 and FSDP."""
MANIFEST = "manifest.json"
"""The sha256 of every other file of a checkpoint, written last; ``--resume`` checks them all before loading."""
FINAL = "final"
"""OUT/final: the model of the last step, written after its exact checkpoint."""
LOG_FILE = "log.jsonl"
_STALE = re.compile(
    r"\.tmp-(?:checkpoint-\d+|partial-\d+|final)"  # save_checkpoint's temporary directories
    r"|\.(?:config\.json|log\.jsonl|eval-\d+\.(?:json|txt))\.[a-z0-9_]{8}\.tmp"  # atomic_write_text's (mkstemp)
)
"""What a run killed mid-write leaves in OUT."""


def latest_checkpoint(out: Path) -> Path | None:
    """The highest-step ``checkpoint-STEP`` directory, if any. Only complete checkpoints are renamed into place,
    so a later one that fails :func:`verify_checkpoint` is damaged: it is never silently passed over."""
    steps = [p.name.removeprefix("checkpoint-") for p in out.glob("checkpoint-*") if p.is_dir()]
    found = [int(step) for step in steps if step.isdigit()]
    return out / f"checkpoint-{max(found)}" if found else None


def remove_stale_temporaries(out: Path) -> None:
    """Remove what a killed run left half-written in ``out`` (:data:`_STALE`, ours by name only). Only one run
    writes into an OUT (a save already replaces its own temporary directory), so at the start all are stale."""
    for path in out.iterdir():
        if not _STALE.fullmatch(path.name) or path.is_symlink():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def finished(out: Path, checkpoint: Path) -> bool:
    """Whether the run whose last exact checkpoint is ``checkpoint`` ended: OUT/final holds that checkpoint's
    weights (its safetensors files, by their manifests) and the log ends at its step. A run killed (or stopped
    by a signal) between that checkpoint and its end has not, and ``--resume`` then finishes it."""
    try:
        final = json.loads((out / FINAL / MANIFEST).read_text(encoding="utf-8"))["sha256"]
        saved = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))["sha256"]
        logged = (out / LOG_FILE).read_text(encoding="utf-8").splitlines()
        weights = {name: digest for name, digest in final.items() if name.endswith(".safetensors")}
        same_model = bool(weights) and all(saved.get(name) == digest for name, digest in weights.items())
        return same_model and bool(logged) and json.loads(logged[-1])["step"] == load_trainer_state(checkpoint)["step"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def file_digests(folder: Path) -> dict[str, str]:
    """The sha256 of every file under ``folder`` but its manifest, by path relative to ``folder``."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != MANIFEST:
            with path.open("rb") as fh:
                digests[name] = hashlib.file_digest(fh, "sha256").hexdigest()
    return digests


def verify_checkpoint(checkpoint: Path) -> None:
    """Refuse a checkpoint that is not exactly as saved: every file its manifest lists must be there with the
    same sha256, and no other. Raises a ``ValueError`` naming the first file that differs."""
    manifest = checkpoint / MANIFEST
    fix = f"nothing was changed; move {checkpoint.name} aside to resume from an earlier checkpoint"
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
        expected = {str(name): str(digest) for name, digest in expected.items()}
    except FileNotFoundError:
        raise ValueError(f"resume: {manifest}: missing, so this checkpoint cannot be verified; {fix}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"resume: {manifest}: unreadable ({type(exc).__name__}: {exc}); {fix}") from None
    present = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()} - {MANIFEST}
    missing, unlisted = sorted(expected.keys() - present), sorted(present - expected.keys())
    if missing:
        raise ValueError(f"resume: {checkpoint / missing[0]}: missing (listed in {MANIFEST}); {fix}")
    if unlisted:
        raise ValueError(f"resume: {checkpoint / unlisted[0]}: not listed in {MANIFEST}; {fix}")
    damaged = [name for name, digest in file_digests(checkpoint).items() if digest != expected[name]]
    if damaged:
        raise ValueError(f"resume: {checkpoint / damaged[0]}: damaged (its sha256 differs from {MANIFEST}); {fix}")


def save_checkpoint(
    accelerator, model, processor, target: Path, policy: dict[str, Any], trainer_state: dict[str, Any] | None
) -> None:
    """Write ``target`` atomically: the Hugging Face checkpoint (whole weights, processor, policy settings)
    that ``tvr-gym eval --agent mllm:DIR`` reads and, with ``trainer_state``, everything ``--resume`` needs.

    Every process takes part (gathering sharded weights and optimizer state is collective). All goes
    to a temporary directory beside ``target``, sealed with a manifest of sha256 digests and renamed into
    place once complete. Formats: see the comment above (only the accelerate state is pickle, weights-only).
    """
    tmp = target.with_name(f".tmp-{target.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # the full weights, gathered from ZeRO-3 / FSDP shards
    if trainer_state is not None:
        accelerator.save_state(str(tmp / ACCELERATE_STATE), safe_serialization=True)
    # save_state returns on each process once its own files are written (every rank writes its
    # random_states_RANK.pkl): the rename below must wait for all of them, or a late rank's file is lost
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / POLICY_FILE).write_text(json.dumps(policy, indent=1) + "\n")
        if trainer_state is not None:
            (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1) + "\n")
        (tmp / MANIFEST).write_text(json.dumps({"sha256": file_digests(tmp)}, indent=1) + "\n")
        replace_dir(tmp, target)
    accelerator.wait_for_everyone()


def trainer_state(cfg: GRPOConfig, step: int, seed_stream: np.random.Generator, skipped: int, history: list) -> dict:
    """The JSON half of an exact checkpoint (the other half is accelerate's state)."""
    return {
        "step": step, "seed_stream": seed_stream.bit_generator.state, "skipped": skipped, "history": history,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
    }  # fmt: skip


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The JSON trainer state of an exact checkpoint."""
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def resume(accelerator, checkpoint: Path, seed_stream: np.random.Generator) -> tuple[int, int, list]:
    """Continue from an exact checkpoint (verified by :func:`check_config`): weights, optimizer and every
    process's RNG from accelerate's state (checked by :func:`check_rng_restored`); the episode stream's
    position from the JSON, which also gives the (step, skipped updates, log) returned."""
    from accelerate.utils import RNG_STATE_NAME

    state_dir = checkpoint / ACCELERATE_STATE
    try:
        accelerator.load_state(str(state_dir))
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met something other than data
        first = str(exc).splitlines()[0]
        raise ValueError(f"resume: {state_dir}: refused by torch.load(weights_only=True): {first}") from exc
    check_rng_restored(state_dir / f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl")
    state = load_trainer_state(checkpoint)
    seed_stream.bit_generator.state = state["seed_stream"]
    return state["step"], state["skipped"], state["history"]


def check_rng_restored(path: Path) -> None:
    """``accelerator.load_state`` swallows any error while it restores the RNG states, and a resume that
    samples from fresh RNGs is not exact: fail unless Python's, numpy's and torch's CPU RNGs now equal ``path``'s."""
    from accelerate.utils import load

    try:
        saved = load(path)  # weights_only=True, as accelerate loads it
        restored = (random.getstate() == saved["random_state"]
                    and all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), saved["numpy_random_seed"]))
                    and torch.equal(torch.get_rng_state(), saved["torch_manual_seed"]))  # fmt: skip
        reason = "" if restored else "they differ from the file"
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means the states were not restored
        restored, reason = False, f"{type(exc).__name__}: {exc}".splitlines()[0]
    if not restored:
        raise ValueError(f"resume: {path}: the RNG states were not restored ({reason}); refusing an inexact resume")


# ====================================================================== setup
def make_accelerator(cfg: GRPOConfig):
    """``accelerate``'s view of the run: the processes, their devices and gradient synchronisation."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # Unused parameters are normal here (e.g. the vision tower on text observations), so DDP must allow them.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cfg.device == "cpu", kwargs_handlers=[ddp])


def lora_config(lora_r: int, lora_alpha: int):
    """The LoRA adapters we train: every projection of the language model (``peft.LoraConfig``)."""
    from peft import LoraConfig

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=rf".*language_model.*\.({'|'.join(targets)})"
    )


def load_model(base: Path, lora: bool, lora_r: int, lora_alpha: int, dtype: torch.dtype,
               gradient_checkpointing: bool = False):  # fmt: skip
    """The trainable model: the full weights of ``base``, or ``base`` with new LoRA adapters; with
    ``gradient_checkpointing``, its layers recompute their activations in the backward pass."""
    from transformers import AutoModelForImageTextToText

    kwargs = {"local_files_only": True, "trust_remote_code": False, "use_safetensors": True, "dtype": dtype}
    model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    if gradient_checkpointing:
        # transformers 5.2x calls it activation checkpointing (the old name warns); the non-reentrant kind needs
        # no input that requires a gradient, so it also works under LoRA, where the embeddings are frozen
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    if not lora:
        return model
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora_r, lora_alpha))


def resolve_model_dir(cfg: GRPOConfig) -> Path:
    """The base checkpoint: ``--model tiny`` builds one in OUT/base, once and atomically."""
    if cfg.model != "tiny":
        return Path(cfg.model).expanduser().resolve()
    return build_tiny_base(Path(cfg.out).resolve() / "base", seed=cfg.seed)


def check_config(cfg: GRPOConfig) -> Path | None:
    """Everything that can be checked before a model or a directory is built; the checkpoint to resume,
    verified file by file (:func:`verify_checkpoint`)."""
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
        verify_checkpoint(resume_from)
        done = load_trainer_state(resume_from)["step"]
        if done > cfg.steps or (done == cfg.steps and finished(out, resume_from)):
            raise ValueError(f"resume: {resume_from.name} already reached step {done}; raise --steps to extend the run")
    return resume_from


@dataclass
class Policy:
    """The policy being trained: the model as ``accelerate`` prepared it, its processor, the agent that samples
    with it, the frozen reference (``None`` unless the KL term needs a copy of its own), the optimizer and the
    trainable parameters."""

    model: Any
    processor: Any
    agent: MLLMAgent
    ref_model: Any
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]

    def save(self, accelerator, target: Path, trainer_state: dict[str, Any] | None = None) -> Path:
        """:func:`save_checkpoint` of this policy (with ``trainer_state``: an exact checkpoint); returns ``target``."""
        save_checkpoint(accelerator, self.model, self.processor, target, self.agent.settings(), trainer_state)
        return target


def build_policy(cfg: GRPOConfig, base: Path, accelerator) -> Policy:
    """The :class:`Policy` of ``base``, prepared by ``accelerate``; the agent samples with the unwrapped model.

    A KL term needs a frozen reference: a second copy of ``base``, or with LoRA the policy with its adapter
    disabled (no copy).
    """
    from transformers import AutoProcessor

    dtype = resolve_dtype(cfg.dtype, accelerator.device)
    model = load_model(base, cfg.lora, cfg.lora_r, cfg.lora_alpha, dtype, cfg.gradient_checkpointing)
    processor = AutoProcessor.from_pretrained(base, local_files_only=True, trust_remote_code=False)
    agent = MLLMAgent(model, processor, use_images=cfg.obs_mode == "image", max_new_tokens=cfg.max_new_tokens,
                      prompt_layout=cfg.env_kwargs.get("prompt_layout"))  # fmt: skip
    ref_model = None
    if cfg.beta > 0 and not cfg.lora:
        ref_model = load_model(base, False, cfg.lora_r, cfg.lora_alpha, dtype)
        ref_model.requires_grad_(False).eval().to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer_class = torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.AdamW
    optimizer = optimizer_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    agent.model = accelerator.unwrap_model(model)
    return Policy(model, processor, agent, ref_model, optimizer, params)


# ====================================================================== steps 2-3: rollouts and rewards
def score_group(env: gym.Env, texts: list[str]) -> tuple[list[float], dict[str, list[float]], list[float]]:
    """Score the G completions of one group on its episode (the env's current one, reset once).

    Returns (rewards, reward terms by name, TVR Acc per completion). ``env.score`` scores without
    ending the episode, so the whole group needs a single reset.
    """
    rewards, accs = [], []
    terms: dict[str, list[float]] = defaultdict(list)
    for text in texts:
        reward, info = env.unwrapped.score(text)
        rewards.append(float(reward))
        for key, value in info.get("reward_terms", {}).items():
            terms[key].append(float(value))
        accs.append(float(info.get("metrics", {}).get("acc", 0.0)))
    return rewards, terms, accs


@dataclass
class TurnSamples:
    """The turns of a step's interactive episodes, one training sample each: the chat the model saw
    and the completion it sampled, so that only model tokens are scored (the environment's replies
    are context)."""

    chats: list[Any]
    completions: list[torch.Tensor]
    pad_id: int

    def __len__(self) -> int:
        return len(self.chats)


def interactive_rollouts(cfg: GRPOConfig, agent: MLLMAgent, envs, seeds) -> tuple[list[Episode], TurnSamples]:
    """G sampled episodes per seed, every member of a group starting from its seed's scene
    (:meth:`~tvr_gym.envs.interactive.TVRInteractive.spawn`), played turn by turn to their ends."""
    use_images = cfg.obs_mode == "image"
    episodes = []
    for env, seed in zip(envs, seeds):
        obs = env.reset(seed=int(seed))[0]
        group = [env.unwrapped] + [env.unwrapped.spawn() for _ in range(cfg.group_size - 1)]
        episodes += [start(copy, obs, use_images) for copy in group]

    def policy(chats):
        return sample_chats(agent, chats, cfg.temperature, cfg.top_p)

    play(episodes, policy, use_images, cfg.window, cfg.budget())
    chats = [chat for e in episodes for chat in e.chats]
    completions = [ids for e in episodes for ids in e.completions]
    return episodes, TurnSamples(chats, completions, agent.pad_id)


@dataclass
class Rollout:
    """A step's scored groups: the training samples and, per completion (an interactive episode counts as
    one), its reward, TVR Acc, reward terms and the samples it spans (its turns; 1 when single-turn)."""

    batch: Any
    """Single-turn :class:`~tvr_gym.agents.mllm.sampling.Samples`, or the episodes' :class:`TurnSamples`."""
    rewards: torch.Tensor
    accs: list[float]
    terms: dict[str, list[float]]
    turns: torch.Tensor
    lengths: torch.Tensor
    """Completion lengths in tokens, one per sample."""
    generation_time: float = 0.0
    """Seconds spent sampling: encoding the prompts, generating, decoding (interactive: playing the episodes,
    the environments' turns included)."""


def rollout_groups(cfg: GRPOConfig, agent: MLLMAgent, envs, seeds) -> Rollout:
    """Reset one environment per seed, sample G completions per episode and score each group on its own
    episode (:func:`score_group`). Interactive: G episodes per seed, played turn by turn
    (:func:`interactive_rollouts`), each one's return its reward."""
    G = cfg.group_size
    if cfg.interactive:
        start = time.perf_counter()
        episodes, batch = interactive_rollouts(cfg, agent, envs, seeds)
        generation_time = time.perf_counter() - start
        accs = [float((e.final or {}).get("metrics", {}).get("acc", 0.0)) for e in episodes]
        terms = defaultdict(list)
        for e in episodes:
            for key, value in (e.final or {}).get("interactive", {}).items():
                terms[key].append(float(value))
        turns = torch.tensor([len(e.chats) for e in episodes])
        lengths = torch.tensor([len(c) for c in batch.completions], dtype=torch.float)
        return Rollout(batch, torch.tensor([e.total for e in episodes]), accs, terms, turns, lengths, generation_time)
    observations = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    start = time.perf_counter()
    batch = sample(agent, observations, G, temperature=cfg.temperature, top_p=cfg.top_p, with_logprobs=False)
    generation_time = time.perf_counter() - start
    rewards, terms, accs = [], defaultdict(list), []
    for i, env in enumerate(envs):
        group_rewards, group_terms, group_accs = score_group(env, batch.texts[i * G : (i + 1) * G])
        rewards += group_rewards
        accs += group_accs
        for key, values in group_terms.items():
            terms[key] += values
    turns = torch.ones(len(rewards), dtype=torch.long)
    return Rollout(batch, torch.tensor(rewards), accs, terms, turns, batch.lengths.float(), generation_time)


# ====================================================================== step 5: the policy update
def batch_rows(batch, rows: slice, agent: MLLMAgent) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(processor inputs, completion ids, completion mask) of some rows of a batch: a slice of sampled
    single-turn :class:`Samples`, or turns encoded now (their chats differ in length and images)."""
    if isinstance(batch, TurnSamples):
        inputs = agent.encode_chats(batch.chats[rows])
        completions = batch.completions[rows]
        width = max(len(c) for c in completions)
        ids = torch.full((len(completions), width), batch.pad_id, dtype=torch.long)
        mask = torch.zeros((len(completions), width), dtype=torch.long)
        for k, c in enumerate(completions):
            ids[k, : len(c)], mask[k, : len(c)] = c, 1
        return inputs, ids.to(agent.device), mask.to(agent.device)
    n = batch.inputs["input_ids"].shape[0]
    return _slice_inputs(batch.inputs, rows, n), batch.completion_ids[rows], batch.completion_mask[rows]


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


def _chunks(n: int, parts: int) -> list[slice]:
    bounds = [round(c * n / parts) for c in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def reference_logprobs(cfg: GRPOConfig, agent: MLLMAgent, batch, ref_model) -> list[torch.Tensor] | None:
    """The frozen reference's log-probs of each micro-batch (``None`` without a KL term)."""
    if cfg.beta <= 0:
        return None
    out = []
    with torch.no_grad(), agent.model.disable_adapter() if cfg.lora else contextlib.nullcontext():
        for rows in _chunks(len(batch), cfg.grad_accum):
            inputs, ids, mask = batch_rows(batch, rows, agent)
            out.append(token_logprobs(agent, inputs, ids, mask, cfg.temperature, model=ref_model))
    return out


def update(cfg: GRPOConfig, accelerator, model, optimizer, params, agent: MLLMAgent, batch, advantages, ref_logp):
    """``mu`` clipped-surrogate updates, each accumulated over ``grad_accum`` micro-batches of ``batch``
    (single-turn samples, or the turns of interactive episodes).

    The old log-probs are the first update's own forward pass (it still runs on the sampling weights).
    An update with a non-finite gradient is dropped. Returns (per-update stats, updates dropped).
    """
    chunks = _chunks(len(batch), cfg.grad_accum)
    old_logp: dict[int, torch.Tensor] = {}
    stats: dict[str, list[float]] = defaultdict(list)
    dropped = 0
    model.train()
    for inner in range(cfg.mu):
        for c, rows in enumerate(chunks):
            inputs, ids, mask = batch_rows(batch, rows, agent)
            last = c == len(chunks) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                logp = token_logprobs(agent, inputs, ids, mask, cfg.temperature, model=model)
                if inner == 0:
                    old_logp[c] = logp.detach()
                loss, loss_stats = grpo_loss(
                    logp, old_logp[c], advantages[rows], mask, None if ref_logp is None else ref_logp[c],
                    cfg.beta, cfg.clip, cfg.loss, cfg.max_new_tokens,
                )  # fmt: skip
                accelerator.backward(loss / len(chunks))
            stats["loss"].append(float(loss.detach()))
            for key, value in loss_stats.items():
                stats[key].append(value)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        if torch.isfinite(torch.as_tensor(grad_norm)):
            optimizer.step()
        else:
            dropped += 1  # a non-finite loss or gradient: this update is dropped, training goes on
        optimizer.zero_grad(set_to_none=True)
    return stats, dropped


def update_policy(cfg: GRPOConfig, accelerator, policy: Policy, batch, advantages: torch.Tensor):
    """Step 5: the reference's log-probs, then :func:`update`, skipped with ``skip_flat`` when every advantage
    of every process is zero (a flat batch). Returns (per-update stats, updates dropped, flat)."""
    advantages = advantages.to(accelerator.device)
    ref_logp = reference_logprobs(cfg, policy.agent, batch, policy.ref_model)
    flat = bool(accelerator.gather(advantages.abs().max().reshape(1)).max() == 0)  # the same on every rank
    if cfg.skip_flat and flat:
        return {"loss": [0.0], "kl": [0.0], "clip_frac": [0.0]}, 0, flat
    stats, dropped = update(
        cfg, accelerator, policy.model, policy.optimizer, policy.params, policy.agent, batch, advantages, ref_logp
    )
    return stats, dropped, flat


# ====================================================================== steps 6-7 and the end: logging, evaluation
def step_record(cfg: GRPOConfig, accelerator, step: int, rollout: Rollout, stats, skipped: int, flat: bool, t0: float):
    """The log record of a step: reward and Acc averaged over every process, the update's statistics, the
    completion length, counters, times (the step's from ``t0``, and the part of it spent sampling) and the mean
    of each reward term."""
    terms_group = "interactive" if cfg.interactive else "reward_terms"
    return {
        "step": step,
        "loss": float(np.mean(stats["loss"][: cfg.grad_accum])),
        "reward": float(accelerator.gather(rollout.rewards.to(accelerator.device)).mean()),  # over all processes
        "acc": float(accelerator.gather(torch.tensor(rollout.accs, device=accelerator.device)).mean()),
        "kl": float(np.mean(stats["kl"])),
        "clip_frac": float(np.mean(stats["clip_frac"])),
        "completion_len": float(rollout.lengths.mean()),
        "skipped": float(skipped),
        "flat": float(flat),
        "step_time": time.perf_counter() - t0,
        "generation_time": rollout.generation_time,
        "wall_time": time.time(),
        **{f"{terms_group}/{k}": float(np.mean(v)) for k, v in rollout.terms.items()},
    }


def log_step(writer, bar, history: list[dict[str, float]], record: dict[str, float]) -> None:
    """A step's record to the log, TensorBoard (main process only: ``writer`` is ``None`` elsewhere) and the bar."""
    history.append(record)
    if writer is not None:
        for key, value in record.items():
            if key != "step":
                writer.add_scalar(key if "/" in key else f"train/{key}", value, record["step"])
    bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['acc']:.2f}", refresh=False)
    bar.update(1)


def run_eval(cfg: GRPOConfig, agent: MLLMAgent, out: Path, step: int) -> dict[str, Any]:
    """Greedy answers (or greedy episodes, when interactive) on the held-out seeds, with the evaluator of
    every agent; writes OUT/eval-STEP.json/.txt."""
    batch_size = min(16, max(cfg.eval_episodes, 1))
    payload: dict[str, Any] = {"step": step, "env": cfg.env, "episodes": cfg.eval_episodes}
    if cfg.interactive:
        result = evaluate_interactive(
            agent, cfg.env, cfg.eval_episodes, EVAL_SEED_BASE, cfg.env_options(), cfg.window, cfg.budget(), batch_size
        )
        payload.update(summary=result["summary"], interactive=result["interactive"])
        payload["reward"] = result["interactive"].get("return", math.nan)
    else:
        result = evaluate(
            agent, cfg.env, cfg.eval_episodes, seed=EVAL_SEED_BASE, env_kwargs=cfg.env_options(), progress=False,
            batch_size=batch_size,
        )  # fmt: skip
        rewards = [r["reward"] for r in result.records]
        payload.update(summary=result.summary, reward=float(np.mean(rewards)) if rewards else math.nan)
    atomic_write_text(out / f"eval-{step}.json", json.dumps(payload, indent=1, default=str) + "\n")
    atomic_write_text(out / f"eval-{step}.txt", format_table(payload["summary"]) + "\n")
    return payload


def held_out_eval(cfg: GRPOConfig, accelerator, agent: MLLMAgent, out: Path, record: dict[str, float], writer) -> None:
    """The main process evaluates (:func:`run_eval`) and adds ``eval_acc`` and ``eval_reward`` to the step's
    record and to TensorBoard; the other processes wait for it."""
    if accelerator.is_main_process:
        step = record["step"]
        result = run_eval(cfg, agent, out, step)
        acc = result["summary"]["overall"]["Acc"]
        record["eval_acc"] = math.nan if acc is None else float(acc)
        record["eval_reward"] = result["reward"]
        if writer is not None:
            writer.add_scalar("eval/acc", record["eval_acc"], step)
            writer.add_scalar("eval/reward", result["reward"], step)
    accelerator.wait_for_everyone()


def close_log(accelerator, out: Path, writer, history: list[dict[str, float]]) -> None:
    """TensorBoard closed and the log written as OUT/log.jsonl (atomically)."""
    if writer is not None:
        writer.close()
    if accelerator.is_main_process:
        atomic_write_text(out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in history))


def report(accelerator, line: str) -> None:
    """One line to stderr from the main process: what an interrupted run kept and how to go on."""
    if accelerator.is_main_process:
        print(line, file=sys.stderr, flush=True)


def finish(accelerator, policy: Policy, out: Path, last: Path, writer, history, stop: GracefulStop,
           interrupted: bool) -> None:  # fmt: skip
    """The end of a run whose last step is the exact checkpoint ``last``: the model as OUT/final (unless
    ``interrupted``: a signal stopped the loop), the log; after any signal, one line saying what was kept."""
    if not interrupted:
        policy.save(accelerator, out / FINAL)
    close_log(accelerator, out, writer, history)
    waited = "; a signal during the save waited for it" if stop.deferred else ""
    if interrupted:
        report(accelerator, f"interrupted: kept {last} and log.jsonl{waited}; continue with --resume")
    elif stop.requested:
        report(accelerator, f"interrupted after the last step: kept {last}, {out / 'final'} and log.jsonl{waited}")


def abort(accelerator, policy: Policy, out: Path, step: int, writer, history, stop: GracefulStop) -> None:
    """A second signal mid-step: the step may be partly applied, so these weights go to OUT/partial-STEP,
    never over an exact checkpoint; the log of the finished steps is kept."""
    with stop.saving():
        partial = policy.save(accelerator, out / f"partial-{step}")
        close_log(accelerator, out, writer, history)
    exact = latest_checkpoint(out)
    then = f"--resume continues from {exact}" if exact else "no exact checkpoint yet: rerun without --resume"
    report(accelerator, f"aborted: weights in {partial} (not resumable), log.jsonl up to step {step}; {then}")


class GracefulStop:
    """SIGINT (Ctrl-C) and SIGTERM (sent by schedulers) ask to stop after the current step, which is then
    saved as an exact checkpoint; a second signal aborts at once (one ``KeyboardInterrupt``, later ones are
    ignored). No signal interrupts a save (:meth:`saving`): one that arrives during it only asks to stop
    (``deferred``), and the save finishes first. Handlers are installed in the main thread only, and
    :meth:`close` restores the previous ones."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        """The first signal received (its exit status is 128 + it)."""
        self.deferred = False
        self._aborted = False
        self._saving = 0
        in_main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}

    def _on_signal(self, signum, frame) -> None:
        self.signum = self.signum or signum
        self.deferred = self.deferred or self._saving > 0
        if self.requested and not self._saving and not self._aborted:
            self._aborted = True
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def saving(self):
        """Within this block a signal only asks to stop, so the save in it completes."""
        self._saving += 1
        try:
            yield
        finally:
            self._saving -= 1

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def interrupted(self) -> KeyboardInterrupt:
        """The ``KeyboardInterrupt`` that ends the run, carrying the signal (``signum``) for its exit status."""
        exc = KeyboardInterrupt()
        exc.signum = self.signum or signal.SIGINT  # type: ignore[attr-defined]
        return exc


# ====================================================================== training
def train(cfg: GRPOConfig) -> list[dict[str, float]]:
    """Run GRPO as configured; returns the per-step log (also written to OUT/log.jsonl)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    # ---- every argument (and a resume checkpoint, file by file) is checked, the environments built, before any write
    resume_from = check_config(cfg)
    envs = [gym.make(cfg.env, **cfg.env_options()) for _ in range(cfg.batch_size)]  # one per episode of a step
    accelerator = make_accelerator(cfg)
    B, G, rank, world = cfg.batch_size, cfg.group_size, accelerator.process_index, accelerator.num_processes
    out = Path(cfg.out).expanduser().resolve()
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    base = resolve_model_dir(cfg)

    # ---- seeding: each process its own RNGs; one episode stream shared, each process taking its slice
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)
    seed_stream = np.random.default_rng(cfg.seed)

    # ---- policy, frozen reference, optimizer; a resumed run restores them, the episode stream and the log
    policy = build_policy(cfg, base, accelerator)
    step, skipped, history = (0, 0, []) if resume_from is None else resume(accelerator, resume_from, seed_stream)
    writer = SummaryWriter(str(out / "tensorboard")) if accelerator.is_main_process else None
    if accelerator.is_main_process:
        atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=1, default=str) + "\n")
    exact = set() if resume_from is None else {step}  # the steps that have an exact checkpoint

    stop = GracefulStop()  # until the last save: a signal stops after the step, a second aborts (never a save)

    def checkpoint(step: int) -> Path:
        """OUT/checkpoint-STEP with everything ``--resume`` needs, written once per step."""
        if step not in exact:
            with stop.saving():
                state = trainer_state(cfg, step, seed_stream, skipped, history)
                policy.save(accelerator, out / f"checkpoint-{step}", state)
            exact.add(step)
        return out / f"checkpoint-{step}"

    bar = tqdm(total=None if cfg.max_minutes else cfg.steps, initial=step, desc="grpo",  # a budget: no ETA
               disable=cfg.quiet or not accelerator.is_main_process)  # fmt: skip
    try:
        budget = cfg.max_minutes * 60 or math.inf  # training seconds (steps only, not evals or checkpoints)
        spent = sum(h["step_time"] for h in history)  # a resumed run counts its earlier steps
        while step < cfg.steps and not stop.requested and spent < budget:
            t0 = time.perf_counter()
            # ---- 1. episodes: B seeds per process from the shared stream, one environment each
            seeds = seed_stream.integers(0, EVAL_SEED_BASE, size=B * world)[rank * B : (rank + 1) * B].tolist()
            # ---- 2-3. rollouts: G completions (interactive: episodes) per seed, each group scored on its episode
            rollout = rollout_groups(cfg, policy.agent, envs, seeds)
            # ---- 4. group-normalised advantages; every turn of an interactive episode gets its episode's
            advantages = group_advantages(rollout.rewards, G, cfg.scale_std).repeat_interleave(rollout.turns)
            # ---- 5. mu inner updates of the clipped surrogate (none, with skip_flat, when no group has a signal)
            stats, dropped, flat = update_policy(cfg, accelerator, policy, rollout.batch, advantages)
            skipped += dropped
            step += 1
            # ---- 6. logging
            record = step_record(cfg, accelerator, step, rollout, stats, skipped, flat, t0)
            spent += record["step_time"]
            log_step(writer, bar, history, record)
            # ---- 7. checkpoint and held-out evaluation
            if cfg.save_every and step % cfg.save_every == 0:
                checkpoint(step)
            if cfg.eval_every and cfg.eval_episodes and step % cfg.eval_every == 0:
                held_out_eval(cfg, accelerator, policy.agent, out, record, writer)
        # ---- the last step is always an exact checkpoint, so --resume can extend a finished run too
        interrupted = stop.requested  # the loop ended on a signal: no OUT/final
        with stop.saving():
            finish(accelerator, policy, out, checkpoint(step), writer, history, stop, interrupted)
    except KeyboardInterrupt:  # a second signal mid-step
        abort(accelerator, policy, out, step, writer, history, stop)
        raise stop.interrupted() from None
    finally:
        stop.close()  # only now: every save above is covered
        bar.close()
        for env in envs:
            env.close()
    if stop.requested:
        raise stop.interrupted()
    return history
