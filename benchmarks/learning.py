"""Learning curves: GRPO from scratch on the tiny model with the star, state and sparse rewards.

Every run gets the same budget (steps, B, G, lr, completion length) on ``TVR-Basic-v0``; 3 seeds per
reward. The held-out evaluation (greedy, fixed seeds disjoint from training) runs every
``--eval-every`` steps and reports TVR Acc and the STAR reward of the greedy answers (the common
yardstick, whatever reward the run trained on). Runs go two at a time (one thread each).
Writes ``benchmarks/results/learning.png`` and the raw curves to ``OUT/curves.json``.

    .venv/bin/python -m benchmarks.learning [--steps 40] [--obs-mode text] [--out runs/learning]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REWARDS = ("star", "state", "sparse")
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    import gymnasium as gym

    import tvr_gym  # noqa: F401
    from agents.mllm.grpo import GRPOConfig, evaluate, train
    from agents.mllm.policy import MLLMAgent

    cfg = GRPOConfig(**job["config"])
    t0 = time.time()
    history = train(cfg)
    # the common yardstick: STAR reward and Acc of greedy answers on the held-out seeds
    star_env = gym.make(cfg.env, obs_mode=cfg.obs_mode, render_size=cfg.render_size, reward="star")
    curve = []
    out = Path(cfg.out)
    points = [(0, out / "base")] + sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*"))
    for step, path in points:
        agent = MLLMAgent.from_pretrained(
            path, device="cpu", use_images=cfg.obs_mode == "image", max_new_tokens=cfg.max_new_tokens
        )
        result = evaluate(agent, star_env, cfg.eval_episodes)
        curve.append({"step": step, "acc": result["summary"]["overall"]["Acc"], "star": result["reward"]})
    return {
        "reward": job["reward"],
        "seed": cfg.seed,
        "train": [{k: h[k] for k in ("step", "reward", "acc", "completion_len")} for h in history],
        "eval": curve,
        "seconds": time.time() - t0,
    }


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"star": "tab:blue", "state": "tab:orange", "sparse": "tab:green"}
    styles = {"star": ("-", "o", 9), "state": ("--", "s", 6), "sparse": (":", "^", 6)}
    for reward in REWARDS:
        mine = [r for r in runs if r["reward"] == reward]
        if not mine:
            continue
        steps = [e["step"] for e in mine[0]["eval"]]
        for ax, key in ((axes[0], "acc"), (axes[1], "star")):
            values = np.array([[e[key] for e in r["eval"]] for r in mine], dtype=float)
            line, marker, size = styles[reward]
            ax.plot(
                steps,
                values.mean(0),
                linestyle=line,
                marker=marker,
                markersize=size,
                color=colors[reward],
                label=f"{reward} (mean of {len(mine)}, band: min-max)",
            )
            ax.fill_between(steps, values.min(0), values.max(0), color=colors[reward], alpha=0.12)
        train_steps = [h["step"] for h in mine[0]["train"]]
        values = np.array([[h["reward"] for h in r["train"]] for r in mine], dtype=float)
        k = min(5, len(train_steps))
        smooth = np.array([np.convolve(v, np.ones(k) / k, mode="valid") for v in values])
        axes[2].plot(
            train_steps[k - 1 :],
            smooth.mean(0),
            linestyle=styles[reward][0],
            color=colors[reward],
            label=f"{reward} (own scale)",
        )
    axes[0].set(title="held-out TVR Acc (greedy)", xlabel="GRPO step", ylabel="Acc", ylim=(-0.02, 1.02))
    axes[1].set(title="held-out STAR reward (greedy)", xlabel="GRPO step", ylabel="reward")
    axes[2].set(title="training reward (own reward, 5-step mean)", xlabel="GRPO step", ylabel="reward")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def title_of(args: argparse.Namespace) -> str:
    return (
        f"tiny Qwen2.5-VL, GRPO from scratch on TVR-Basic-v0 ({args.obs_mode} obs), {args.steps} steps, "
        f"B={args.batch_size} G={args.group_size} lr={args.lr}, {args.seeds} seeds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
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
        plot(saved["runs"], Path(args.png), title_of(argparse.Namespace(**saved["args"])))
        return
    jobs = []
    for reward in REWARDS:
        for seed in range(args.seeds):
            config = dict(
                model="tiny",
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
                progress=False,
            )
            jobs.append({"reward": reward, "config": config})
    t0 = time.time()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(run_one, jobs))
    wall = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / f"curves-{args.obs_mode}.json").write_text(json.dumps({"args": vars(args), "wall": wall, "runs": runs}))
    plot(runs, Path(args.png), title_of(args))
    print(f"wall time {wall:.0f} s; plot {args.png}")
    for reward in REWARDS:
        mine = [r for r in runs if r["reward"] == reward]
        first = np.mean([r["eval"][0]["acc"] for r in mine]), np.mean([r["eval"][0]["star"] for r in mine])
        last = np.mean([r["eval"][-1]["acc"] for r in mine]), np.mean([r["eval"][-1]["star"] for r in mine])
        tr = (
            [np.mean([h["reward"] for h in r["train"][:10]]) for r in mine],
            [np.mean([h["reward"] for h in r["train"][-10:]]) for r in mine],
        )
        print(
            f"{reward}: held-out Acc {first[0]:.3f} -> {last[0]:.3f}, held-out STAR {first[1]:.2f} -> {last[1]:.2f}, "
            f"train reward (first/last 10 steps) {np.mean(tr[0]):.2f} -> {np.mean(tr[1]):.2f}"
        )


if __name__ == "__main__":
    main()
