"""Learning curves: GRPO on the format-warmed tiny model with the star, state and sparse rewards.

One tiny Qwen2.5-VL is built and given a short format warm-up (:mod:`tvr_gym.agents.mllm.warmup`: random
well-formed answers, never the truth), so it starts where a real instruct model starts: it writes the
answer grammar but knows nothing about the task. From that one checkpoint, every run gets the same
budget (steps, B, G, lr, completion length) on ``TVR-Basic-v0``, 3 seeds per reward. Every
``--eval-every`` steps the checkpoint answers fixed held-out episodes greedily (seeds disjoint from
training) and is scored with the common yardstick whatever it trained on: TVR Acc, the STAR reward,
Basic ObjAcc/AttrAcc/ValAcc and the well-formed rate. The random agent on the same episodes gives
chance level. Runs go two at a time (one thread each).
Writes ``benchmarks/results/learning.png`` and the raw curves to ``OUT/curves-MODE.json``.

    .venv/bin/python -m benchmarks.learning [--steps 300 --eval-every 50] [--obs-mode text] [--out runs/learning]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from tvr_gym.atomic import atomic_write_text

REWARDS = ("star", "state", "sparse")
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = (
    ("acc", "held-out TVR Acc"),
    ("star", "held-out STAR reward"),
    ("obj", "held-out Basic ObjAcc"),
    ("attr", "held-out Basic AttrAcc"),
    ("val", "held-out Basic ValAcc"),
    ("format", "held-out well-formed with an item"),
)
"""The held-out curves (key in an eval point, panel title)."""


def held_out_scores(agent: Any, env: Any, episodes: int, batch: int = 16) -> dict[str, float]:
    """Greedy answers of ``agent`` on the held-out seeds, scored through ``env`` (a STAR-reward env)."""
    from tvr_gym.agents.base import act_batch
    from tvr_gym.agents.mllm.grpo import EVAL_SEED_BASE
    from tvr_gym.metrics import summarize

    records, formats = [], []
    seeds = [EVAL_SEED_BASE + i for i in range(episodes)]
    for start in range(0, episodes, batch):
        chunk = seeds[start : start + batch]
        answers = act_batch(agent, [env.reset(seed=s)[0] for s in chunk])
        for seed, answer in zip(chunk, answers):
            env.reset(seed=seed)
            _, reward, _, _, info = env.step(answer)
            parsed = info["parsed"]
            formats.append(float(parsed["well_formed"] and len(parsed["steps"]) > 0))
            records.append({**info["metrics"], "reward": float(reward)})
    summary = summarize(records)
    basic = summary["basic"]
    return {
        "acc": summary["overall"]["Acc"],
        "star": summary["overall"]["reward"],
        "obj": basic["ObjAcc"],
        "attr": basic["AttrAcc"],
        "val": basic["ValAcc"],
        "format": float(np.mean(formats)),
    }


def _star_env(obs_mode: str):
    import gymnasium as gym

    import tvr_gym  # noqa: F401

    return gym.make("TVR-Basic-v0", obs_mode=obs_mode, render_size=(160, 120), reward="star")


def _load(path: Path, obs_mode: str, max_new_tokens: int):
    from tvr_gym.agents.mllm.policy import MLLMAgent

    return MLLMAgent.from_pretrained(path, device="cpu", use_images=obs_mode == "image", max_new_tokens=max_new_tokens)


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from tvr_gym.agents.mllm.grpo import GRPOConfig, train

    cfg = GRPOConfig(**job["config"])
    t0 = time.time()
    history = train(cfg)
    train_seconds = time.time() - t0
    env = _star_env(cfg.obs_mode)
    out = Path(cfg.out)
    curve = [{"step": 0, **job["start"]}]
    for step, path in sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*")):
        scores = held_out_scores(_load(path, cfg.obs_mode, cfg.max_new_tokens), env, cfg.eval_episodes)
        curve.append({"step": step, **scores})
    keys = ("step", "reward", "acc", "completion_len")
    return {
        "reward": job["reward"],
        "seed": cfg.seed,
        "train": [{k: h[k] for k in keys} for h in history],
        "eval": curve,
        "train_seconds": train_seconds,
        "seconds": time.time() - t0,
    }


def plot(runs: list[dict], chance: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(19, 8.4))
    flat = axes.ravel()
    colors = {"star": "tab:blue", "state": "tab:orange", "sparse": "tab:green"}
    styles = {"star": ("-", "o"), "state": ("--", "s"), "sparse": (":", "^")}
    for reward in REWARDS:
        mine = [r for r in runs if r["reward"] == reward]
        if not mine:
            continue
        line, marker = styles[reward]
        steps = [e["step"] for e in mine[0]["eval"]]
        for ax, (key, _) in zip(flat, METRICS):
            values = np.array([[e[key] for e in r["eval"]] for r in mine], dtype=float)
            label = f"{reward} reward (mean of {len(mine)} seeds, band: min-max)"
            mean = values.mean(0)
            ax.plot(steps, mean, linestyle=line, marker=marker, markersize=5, color=colors[reward], label=label)
            ax.fill_between(steps, values.min(0), values.max(0), color=colors[reward], alpha=0.12)
        for ax, key in ((flat[6], "reward"), (flat[7], "completion_len")):
            train_steps = [h["step"] for h in mine[0]["train"]]
            values = np.array([[h[key] for h in r["train"]] for r in mine], dtype=float)
            k = min(10, len(train_steps))
            smooth = np.array([np.convolve(v, np.ones(k) / k, mode="valid") for v in values])
            x = train_steps[k - 1 :]
            ax.plot(x, smooth.mean(0), linestyle=line, color=colors[reward], label=f"{reward} (mean of {len(mine)})")
            ax.fill_between(x, smooth.min(0), smooth.max(0), color=colors[reward], alpha=0.12)
    for ax, (key, name) in zip(flat, METRICS):
        ax.axhline(chance[key], color="black", linestyle="-.", linewidth=1, label="random agent, same episodes")
        ax.set(
            title=f"{name} (greedy)", xlabel="GRPO step (0 = warmed-up start)", ylabel=name.removeprefix("held-out ")
        )
        if key != "star":
            ax.set_ylim(-0.02, 1.02 if key == "format" else max(0.3, ax.get_ylim()[1]))
    flat[6].set(title="training reward (own reward, 10-step mean)", xlabel="GRPO step", ylabel="reward")
    flat[7].set(title="sampled completion length (10-step mean)", xlabel="GRPO step", ylabel="tokens")
    for ax in flat:
        ax.grid(alpha=0.3)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=10, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)


def title_of(args: argparse.Namespace) -> str:
    return (
        f"tiny Qwen2.5-VL after a {args.warmup_steps}-step format warm-up (random answers), GRPO on TVR-Basic-v0 "
        f"({args.obs_mode} obs): {args.steps} steps, B={args.batch_size} G={args.group_size} lr={args.lr}, "
        f"{args.seeds} seeds, {args.eval_episodes} held-out episodes"
    )


def build_start(out: Path, args: argparse.Namespace) -> Path:
    """The shared starting checkpoint: a tiny model with a format warm-up on Basic prompts."""
    import torch

    from tvr_gym.agents.mllm.tiny import make_tiny_model
    from tvr_gym.agents.mllm.warmup import warmup_format

    start = out / "warm-base"
    if (start / "tvr_warmup.json").is_file():
        return start
    torch.set_num_threads(2)
    raw = make_tiny_model(out / "raw-base", seed=0)
    return warmup_format(raw, start, "TVR-Basic-v0", steps=args.warmup_steps, obs_mode=args.obs_mode, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-episodes", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--obs-mode", choices=("text", "image"), default="text")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/learning")
    parser.add_argument("--png", default=str(RESULTS / "learning.png"))
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from OUT/curves-MODE.json")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.replot:
        saved = json.loads((out / f"curves-{args.obs_mode}.json").read_text())
        plot(saved["runs"], saved["chance"], Path(args.png), title_of(argparse.Namespace(**saved["args"])))
        return
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    start = build_start(out, args)
    warm_seconds = time.time() - t0

    from tvr_gym.agents.baselines import RandomAgent

    env = _star_env(args.obs_mode)
    start_scores = held_out_scores(_load(start, args.obs_mode, args.max_new_tokens), env, args.eval_episodes)
    chance = held_out_scores(RandomAgent(seed=0, max_items=1), env, args.eval_episodes)
    print(f"warm-up {warm_seconds:.0f} s; start {start_scores}; random agent {chance}", flush=True)
    jobs = []
    for reward in REWARDS:
        for seed in range(args.seeds):
            config = dict(
                model=str(start),
                env="TVR-Basic-v0",
                out=str(out / f"{args.obs_mode}-{reward}-{seed}"),
                steps=args.steps,
                batch_size=args.batch_size,
                group_size=args.group_size,
                reward=reward,
                obs_mode=args.obs_mode,
                lr=args.lr,
                max_new_tokens=args.max_new_tokens,
                save_every=args.eval_every,
                eval_every=0,
                eval_episodes=args.eval_episodes,
                seed=seed,
                device="cpu",
                quiet=True,
            )
            jobs.append({"reward": reward, "config": config, "start": start_scores})
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(run_one, jobs))
    wall = time.time() - t0
    payload = {"args": vars(args), "wall": wall, "warm_seconds": warm_seconds, "chance": chance, "runs": runs}
    atomic_write_text(out / f"curves-{args.obs_mode}.json", json.dumps(payload))
    plot(runs, chance, Path(args.png), title_of(args))
    print(f"wall time {wall:.0f} s; plot {args.png}")
    report(runs, chance)


def report(runs: list[dict], chance: dict[str, float]) -> None:
    """Print first -> last held-out scores (mean and per seed) and the training reward per reward."""
    print("random agent: " + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))
    for reward in REWARDS:
        mine = [r for r in runs if r["reward"] == reward]
        parts = []
        for key, _ in METRICS:
            first = np.mean([r["eval"][0][key] for r in mine])
            last = [r["eval"][-1][key] for r in mine]
            parts.append(f"{key} {first:.3f} -> {np.mean(last):.3f} ({', '.join(f'{v:.3f}' for v in last)})")
        tr = [np.mean([h["reward"] for h in r["train"][:20]]) for r in mine]
        tr_last = [np.mean([h["reward"] for h in r["train"][-20:]]) for r in mine]
        print(
            f"{reward}: " + "; ".join(parts) + f"; train reward first/last 20 steps {np.mean(tr):.2f} -> "
            f"{np.mean(tr_last):.2f}; train time {np.mean([r['train_seconds'] for r in mine]):.0f} s"
        )


if __name__ == "__main__":
    main()
