"""One GRPO run of our trainer or of TRL's ``GRPOTrainer`` on the same settings, timed the same way.

Shared by ``benchmarks/bench_grpo.py`` (tiny model, CPU) and ``benchmarks/bench_gpu.py`` (3B/7B, one GPU).
Both trainers take B episodes x G completions per step with the same completion length, temperature 1,
beta 0, one inner update and ``grpo`` loss aggregation; the same checkpoint, dtype and attention. Ours
reads the STAR reward through ``env.score``, TRL through ``tvr_gym.integrations.trl_reward`` on the rows
``train trl-grpo`` exports. A run is timed from the end of its first step to the end of its last, so
loading, compilation and the first step's warm-up stay out of the numbers, and neither side renders
inside the timed steps (ours: :func:`warm_render_cache`; TRL's rows are exported before it starts).

Each run returns a :data:`RunResult`: steps/s, generated tokens/s, the mean completion length, the share
of step time spent generating (ours: ``generation_time`` of its log, sampling = encoding, ``generate``
and decoding; TRL: around its ``_generate``, which does the same), peak memory and the attention used.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RunResult = dict[str, Any]
LORA_DEFAULTS = (16, 32)
"""LoRA rank and alpha of both trainers' LoRA runs (our ``GRPOConfig``'s defaults)."""
RATES = ("steps_per_s", "tokens_per_s")
"""The throughputs a comparison divides (ours / TRL)."""


@dataclass
class RunSpec:
    """What both trainers are given; ``device`` is ``cpu`` or ``cuda``."""

    env_id: str = "TVR-Basic-v0"
    obs_mode: str = "text"
    size: tuple[int, int] = (160, 120)
    steps: int = 8
    batch_size: int = 4
    group_size: int = 4
    grad_accum: int = 1
    """Micro-batches per update: ours splits B x G into this many, TRL takes B x G / this per device and step."""
    max_new_tokens: int = 32
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    lora: bool = False
    gradient_checkpointing: bool = False
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ValueError(f"steps: a timed run needs at least 2 (the first is warm-up), got {self.steps}")
        self.size = (int(self.size[0]), int(self.size[1]))
        if self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum: {self.grad_accum} must divide batch_size {self.batch_size}")

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON values (``RunSpec(**spec.as_dict())`` gives the spec back)."""
        return {**asdict(self), "size": list(self.size)}

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def completions(self) -> int:
        """Completions per step (B x G)."""
        return self.batch_size * self.group_size

    def torch_dtype(self):
        """bf16 on CUDA (both trainers' default there), fp32 on CPU."""
        import torch

        return torch.bfloat16 if self.cuda else torch.float32


def episode_seeds(spec: RunSpec) -> list[int]:
    """The episode seeds our trainer draws, in order (its seeded stream, one more step than the run)."""
    return np.random.default_rng(spec.seed).integers(0, 2**31, size=spec.batch_size * (spec.steps + 1)).tolist()


def warm_render_cache(spec: RunSpec) -> None:
    """Render every episode of our run once in this process, so our timed steps read the process-wide cache."""
    import gymnasium as gym

    import tvr_gym  # noqa: F401  (registers the environments)

    env = gym.make(spec.env_id, obs_mode=spec.obs_mode, render_size=spec.size, **spec.env_kwargs)
    for seed in episode_seeds(spec):
        env.reset(seed=int(seed))
    env.close()


def memory_reset(spec: RunSpec) -> None:
    """Start a run's GPU memory peak from zero (CUDA only)."""
    if spec.cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()


def memory_peaks(spec: RunSpec) -> dict[str, float | None]:
    """The run's peak GPU memory (``max_memory_allocated``, GiB; ``None`` on CPU) and this process's peak RSS
    (MiB; a lifetime peak, so in a shared process it is an upper bound for the run)."""
    gpu = None
    if spec.cuda:
        import torch

        gpu = torch.cuda.max_memory_allocated() / 2**30
    return {"peak_gpu_gib": gpu, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def timed_result(spec: RunSpec, ends: list[float], lengths: list[float], generation: list[float]) -> RunResult:
    """Rates over the steps after the first: ``ends`` are the steps' end times, ``lengths`` their mean completion
    lengths and ``generation`` the seconds each spent generating."""
    elapsed = ends[-1] - ends[0]
    timed = len(ends) - 1
    return {
        "steps_per_s": timed / elapsed,
        "tokens_per_s": sum(lengths[1 : timed + 1]) * spec.completions / elapsed,
        "mean_completion_len": float(np.mean(lengths)),
        "generation_share": sum(generation[1 : timed + 1]) / elapsed,
        "timed_steps": timed,
    }


# ============================================================ ours
@contextlib.contextmanager
def observed_ours(seen: dict[str, Any]):
    """Our trainer as it runs, with two benchmark-only changes: the checkpoints it writes at the end (an exact
    checkpoint plus OUT/final: about 37 GB for 3B with AdamW) are skipped, since they are outside the timing
    and would fill a GPU machine's disk, and the attention implementation of the model it loads is recorded."""
    from tvr_gym.agents.mllm import grpo

    load_model, save_checkpoint = grpo.load_model, grpo.save_checkpoint

    def observed_load(*args, **kwargs):
        model = load_model(*args, **kwargs)
        seen["attention"] = model.config._attn_implementation
        return model

    grpo.load_model, grpo.save_checkpoint = observed_load, lambda *args, **kwargs: None
    try:
        yield
    finally:
        grpo.load_model, grpo.save_checkpoint = load_model, save_checkpoint


def run_ours(model_dir: Path, out: Path, spec: RunSpec) -> RunResult:
    """``tvr-gym train grpo`` on ``spec`` (its config and :func:`~tvr_gym.agents.mllm.grpo.train`)."""
    from tvr_gym.agents.mllm.grpo import GRPOConfig, train

    cfg = GRPOConfig(
        model=str(model_dir), env=spec.env_id, out=str(out), steps=spec.steps, batch_size=spec.batch_size,
        group_size=spec.group_size, grad_accum=spec.grad_accum, obs_mode=spec.obs_mode, size=list(spec.size),
        max_new_tokens=spec.max_new_tokens, lr=spec.lr, lora=spec.lora, lora_r=LORA_DEFAULTS[0],
        lora_alpha=LORA_DEFAULTS[1], gradient_checkpointing=spec.gradient_checkpointing, save_every=0, eval_every=0,
        device=spec.device, dtype="bfloat16" if spec.cuda else None, quiet=True, seed=spec.seed,
        env_kwargs=dict(spec.env_kwargs),
    )  # fmt: skip
    warm_render_cache(spec)
    seen: dict[str, Any] = {}
    memory_reset(spec)
    with observed_ours(seen):
        history = train(cfg)
    result = timed_result(
        spec, [h["wall_time"] for h in history], [h["completion_len"] for h in history],
        [h["generation_time"] for h in history],
    )  # fmt: skip
    return {**result, **memory_peaks(spec), "attention": seen.get("attention")}


# ============================================================ TRL
def trl_config(spec: RunSpec, out: Path):
    """TRL's ``GRPOConfig`` for ``spec``: one generation of B x G per optimizer step (TRL's steps per generation
    default to its accumulation steps), TRL's own bf16 on CUDA."""
    from trl import GRPOConfig as TRLConfig

    return TRLConfig(
        output_dir=str(out), per_device_train_batch_size=spec.completions // spec.grad_accum,
        gradient_accumulation_steps=spec.grad_accum, num_generations=spec.group_size,
        max_completion_length=spec.max_new_tokens, learning_rate=spec.lr, beta=0.0, num_iterations=1,
        loss_type="grpo", scale_rewards="group", temperature=1.0, max_steps=spec.steps, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=not spec.cuda, bf16=spec.cuda, seed=spec.seed,
        shuffle_dataset=False, disable_tqdm=True, gradient_checkpointing=spec.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # as ours; TRL's default is on, ours off
    )  # fmt: skip


def run_trl(model_dir: Path, out: Path, spec: RunSpec) -> RunResult:
    """``tvr-gym train trl-grpo``'s parts: the exported rows, the tvr-gym TRL reward and TRL's trainer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    from tvr_gym.agents.mllm.grpo import lora_config
    from tvr_gym.agents.mllm.trl_train import TVRArguments, train_rows
    from tvr_gym.integrations import trl_reward

    tvr = TVRArguments(model=str(model_dir), env=spec.env_id, obs_mode=spec.obs_mode, size=list(spec.size),
                       n=spec.batch_size * (spec.steps + 1), episode_seed=spec.seed)  # fmt: skip
    rows = train_rows(tvr, out, progress=False)
    ends: list[float] = []
    lengths: list[float] = []
    generation: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    class TimedGRPOTrainer(GRPOTrainer):
        """TRL's trainer, timing its ``_generate`` (prompt encoding, ``generate`` and decoding, as ours)."""

        def _generate(self, prompts):
            start = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                generation.append(time.perf_counter() - start)

    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, local_files_only=True, dtype=spec.torch_dtype(), attn_implementation="sdpa"
    )
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    memory_reset(spec)
    trainer = TimedGRPOTrainer(
        model=model, reward_funcs=trl_reward("star"), args=trl_config(spec, out), train_dataset=rows,
        processing_class=processor, callbacks=[Clock()],
        peft_config=lora_config(*LORA_DEFAULTS) if spec.lora else None,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # its log dicts, one per step, would bury the benchmark's own lines
    trainer.train()
    attention = trainer.model.config._attn_implementation
    return {**timed_result(spec, ends, lengths, generation), **memory_peaks(spec), "attention": attention}


RUNNERS = {"ours": run_ours, "trl": run_trl}
