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
from pathlib import Path

import numpy as np
import torch

from benchmarks import cpu_model
from benchmarks.grpo_runs import RATES, RUNNERS, RunSpec
from tvr_gym.agents.mllm.tiny import make_tiny_model

ENV_ID = "TVR-Basic-v0"


def run_spec(args) -> RunSpec:
    """The settings both trainers get: text observations, the tiny model on CPU."""
    return RunSpec(env_id=ENV_ID, obs_mode="text", steps=args.steps, batch_size=args.batch_size,
                   group_size=args.group_size, max_new_tokens=args.max_new_tokens, lr=1e-3, seed=args.seed)  # fmt: skip


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
    spec = run_spec(args)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "tiny", seed=args.seed)
        for r in range(args.rounds):
            for name in ("ours", "trl") if r % 2 == 0 else ("trl", "ours"):
                torch.manual_seed(args.seed)
                run = RUNNERS[name](model_dir, Path(tmp) / f"{name}-{r}", spec)
                results[name].append({key: run[key] for key in RATES})
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
