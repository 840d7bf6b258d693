"""GRPO throughput: ``train grpo`` (ours) vs ``train trl-grpo`` (TRL's ``GRPOTrainer``) on the identical tiny
model, batch, G and lengths.

Both train the same tiny Qwen2.5-VL checkpoint on ``TVR-Basic-v0`` text-mode prompts with the same STAR
reward: ours reads it through ``env.step``, TRL through ``tvr_gym.integrations.trl_reward`` on the rows
``train trl-grpo`` exports. B episodes x G completions per step, the same
completion length, temperature 1, beta 0, one inner update, ``grpo`` loss aggregation. Reports GRPO
steps/s and completion tokens/s of each, and the ratio ours / TRL, measured in the same run
(alternating rounds, timed from the end of the first step to the end of the last). Every episode is
rendered once before timing, so neither side pays for rendering. TRL runs without gradient
checkpointing (its default is on), like ours.

    .venv/bin/python -m benchmarks.bench_grpo [--steps 8] [--rounds 2] [--batch-size 4] [--group-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import tvr_gym  # noqa: F401  (registers the environments)
from benchmarks import cpu_model
from tvr_gym.agents.mllm.grpo import GRPOConfig, train
from tvr_gym.agents.mllm.tiny import make_tiny_model

ENV_ID = "TVR-Basic-v0"


def ours(model_dir: Path, out: Path, args) -> dict[str, float]:
    cfg = GRPOConfig(
        model=str(model_dir),
        env=ENV_ID,
        out=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        lr=1e-3,
        save_every=0,
        eval_every=0,
        device="cpu",
        quiet=True,
        seed=args.seed,
    )
    history = train(cfg)
    elapsed = history[-1]["wall_time"] - history[0]["wall_time"]
    n = args.batch_size * args.group_size
    tokens = sum(h["completion_len"] * n for h in history[1:])
    return {"steps_per_s": (len(history) - 1) / elapsed, "tokens_per_s": tokens / elapsed}


def episode_seeds(args) -> list[int]:
    """The episode seeds both trainers see, in order (the stream our trainer draws from)."""
    return np.random.default_rng(args.seed).integers(0, 2**31, size=args.batch_size * (args.steps + 1)).tolist()


def warm_render_cache(args) -> None:
    """Render every episode once, so neither trainer pays for rendering (the process-wide cache is shared)."""
    env = gym.make(ENV_ID, obs_mode="text", render_size=(160, 120))
    for seed in episode_seeds(args):
        env.reset(seed=int(seed))


def trl(model_dir: Path, out: Path, args) -> dict[str, float]:
    """``tvr-gym train trl-grpo``'s parts: the exported rows, the tvr-gym TRL reward and TRL's trainer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    from tvr_gym.agents.mllm.trl_train import TVRArguments, train_rows
    from tvr_gym.integrations import trl_reward

    tvr = TVRArguments(model=str(model_dir), env=ENV_ID, obs_mode="text", n=args.batch_size * (args.steps + 1),
                       episode_seed=args.seed)  # fmt: skip
    rows = train_rows(tvr, out, progress=False)

    stamps: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            stamps.append(time.time())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    config = TRLConfig(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size * args.group_size,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        learning_rate=1e-3,
        beta=0.0,
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        temperature=1.0,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        shuffle_dataset=False,
        disable_tqdm=True,
        gradient_checkpointing=False,  # ours does not recompute activations either
    )
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=trl_reward("star"),
        args=config,
        train_dataset=rows,
        processing_class=processor,
        callbacks=[Clock()],
    )
    trainer.train()
    elapsed = stamps[-1] - stamps[0]
    n = args.batch_size * args.group_size
    tokens = sum(length * n for length in lengths[1 : len(stamps)])
    return {"steps_per_s": (len(stamps) - 1) / elapsed, "tokens_per_s": tokens / elapsed}


def machine() -> str:
    pinned = len(os.sched_getaffinity(0))
    return f"{platform.node()}: {cpu_model()}, {os.cpu_count()} cores, this run pinned to {pinned}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "tiny", seed=args.seed)
        warm_render_cache(args)
        for r in range(args.rounds):
            for name, fn in (("ours", ours), ("trl", trl)) if r % 2 == 0 else (("trl", trl), ("ours", ours)):
                torch.manual_seed(args.seed)
                results[name].append(fn(model_dir, Path(tmp) / f"{name}-{r}", args))
                print(name, r, {k: round(v, 3) for k, v in results[name][-1].items()}, flush=True)
    summary = {name: {k: float(np.median([run[k] for run in runs])) for k in runs[0]} for name, runs in results.items()}
    ratio = {k: summary["ours"][k] / summary["trl"][k] for k in summary["ours"]}
    report = {
        "machine": machine(),
        "settings": vars(args),
        "median": summary,
        "ratio_ours_over_trl": ratio,
        "runs": results,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
