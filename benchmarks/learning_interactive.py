"""Learning curves of the tiny policy on TVR-Interactive-v0 with our multi-turn GRPO, 3 seeds.

The start is the format-warmed tiny model of :mod:`benchmarks.learning` (random well-formed one-item
answers, never the truth), so it writes a turn in the answer grammar but knows nothing of the task.
Every run gets the same budget on interactive Basic (one true step, then ``done``) with text
observations; every ``--eval-every`` steps its checkpoint plays fixed held-out episodes greedily
(:func:`tvr_gym.agents.interactive.evaluate_interactive`): Success, the return, TVR Acc of the applied
sequence and the turns used. A random agent (a random transformation, then ``done``) on the same
episodes gives chance level. Writes ``benchmarks/results/learning_interactive.png`` and
``OUT/curves.json``.

    .venv/bin/python -m benchmarks.learning_interactive [--steps 120 --eval-every 30] [--out runs/learning-interactive]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks import report, run_line
from benchmarks.learning import build_start
from tvr_gym.core.atomic import atomic_write_text

ENV = "TVR-Interactive-v0"
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = (
    ("success", "held-out Success"),
    ("return", "held-out return"),
    ("acc", "held-out TVR Acc"),
    ("turns", "turns used"),
)


def env_kwargs(obs_mode: str) -> dict:
    return {"setting": "basic", "render_size": (160, 120) if obs_mode == "image" else (32, 24)}


def held_out(agent, episodes: int, obs_mode: str) -> dict[str, float]:
    from tvr_gym.agents.interactive import evaluate_interactive
    from tvr_gym.agents.mllm.grpo import EVAL_SEED_BASE

    result = evaluate_interactive(agent, ENV, episodes, EVAL_SEED_BASE, env_kwargs(obs_mode))
    scores = result["interactive"]
    return {
        "success": scores["success"],
        "return": scores["return"],
        "acc": result["summary"]["overall"]["Acc"],
        "turns": scores["turns"],
    }


def random_agent_scores(episodes: int, obs_mode: str) -> dict[str, float]:
    """A random one-item turn, then ``done``, on the held-out episodes."""
    import gymnasium as gym

    import tvr_gym  # noqa: F401
    from tvr_gym.agents.baselines import RandomAgent
    from tvr_gym.agents.mllm.grpo import EVAL_SEED_BASE
    from tvr_gym.core.metrics import summarize

    guesser = RandomAgent(seed=0, max_items=1)
    env = gym.make(ENV, **env_kwargs(obs_mode))
    rows, records = [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED_BASE + k)
        _, r1, *_ = env.step(guesser.act({"prompt": obs["prompt"]}))
        _, r2, _, _, info = env.step("done")
        rows.append({**info["interactive"], "return": r1 + r2})
        records.append({**info["metrics"], "reward": r1 + r2})
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("success", "return", "turns")}
    return {**means, "acc": summarize(records)["overall"]["Acc"]}


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from tvr_gym.agents.mllm.grpo import GRPOConfig, train
    from tvr_gym.agents.mllm.policy import MLLMAgent

    cfg = GRPOConfig(**job["config"])
    t0 = time.time()
    history = train(cfg)
    curve = [{"step": 0, **job["start"]}]
    for step, path in sorted((int(p.name.split("-")[1]), p) for p in Path(cfg.out).glob("checkpoint-*")):
        agent = MLLMAgent.from_pretrained(path, device="cpu", use_images=cfg.obs_mode == "image")
        curve.append({"step": step, **held_out(agent, cfg.eval_episodes, cfg.obs_mode)})
    keys = ("step", "reward", "acc", "interactive/turns")
    return {
        "seed": cfg.seed,
        "train": [{k: h.get(k, float("nan")) for k in keys} for h in history],
        "eval": curve,
        "seconds": time.time() - t0,
    }


def plot(runs: list[dict], chance: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(24, 4.6))
    steps = [e["step"] for e in runs[0]["eval"]]
    for ax, (key, name) in zip(axes, METRICS):
        values = np.array([[e[key] for e in r["eval"]] for r in runs], dtype=float)
        for row in values:
            ax.plot(steps, row, color="tab:blue", alpha=0.35, linewidth=1)
        ax.plot(
            steps, values.mean(0), color="tab:blue", marker="o", label=f"multi-turn GRPO (mean of {len(runs)} seeds)"
        )
        ax.axhline(chance[key], color="black", linestyle="-.", linewidth=1, label="random turn then done")
        ax.set(title=f"{name} (greedy)", xlabel="GRPO step (0 = warmed-up start)")
        ax.grid(alpha=0.3)
    train_steps = [h["step"] for h in runs[0]["train"]]
    values = np.array([[h["reward"] for h in r["train"]] for r in runs], dtype=float)
    k = min(10, len(train_steps))
    smooth = np.array([np.convolve(v, np.ones(k) / k, mode="valid") for v in values])
    axes[4].plot(train_steps[k - 1 :], smooth.mean(0), color="tab:blue")
    axes[4].fill_between(train_steps[k - 1 :], smooth.min(0), smooth.max(0), color="tab:blue", alpha=0.15)
    axes[4].set(title="training return (10-step mean, band: min-max)", xlabel="GRPO step")
    axes[4].grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--eval-episodes", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--obs-mode", choices=("text", "image"), default="text")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/learning-interactive")
    parser.add_argument("--png", default=str(RESULTS / "learning_interactive.png"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    start = build_start(out, args)
    from tvr_gym.agents.mllm.policy import MLLMAgent

    start_agent = MLLMAgent.from_pretrained(start, device="cpu", use_images=args.obs_mode == "image")
    start_scores = held_out(start_agent, args.eval_episodes, args.obs_mode)
    chance = random_agent_scores(args.eval_episodes, args.obs_mode)
    print(f"start {start_scores}; random {chance}", flush=True)
    jobs = []
    for seed in range(args.seeds):
        config = dict(
            model=str(start), env=ENV, out=str(out / f"seed-{seed}"), steps=args.steps, batch_size=args.batch_size,
            group_size=args.group_size, reward="state", obs_mode=args.obs_mode,
            size=list(env_kwargs(args.obs_mode)["render_size"]),
            lr=args.lr, max_new_tokens=args.max_new_tokens, save_every=args.eval_every, eval_every=0,
            eval_episodes=args.eval_episodes, seed=seed, device="cpu", quiet=True, env_kwargs={"setting": "basic"},
        )  # fmt: skip
        jobs.append({"config": config, "start": start_scores})
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(run_one, jobs))
    wall = time.time() - t0
    atomic_write_text(
        out / "curves.json", json.dumps({"args": vars(args), "wall": wall, "chance": chance, "runs": runs})
    )
    title = (
        f"tiny Qwen2.5-VL, format warm-up then multi-turn GRPO on interactive Basic ({args.obs_mode} obs): "
        f"{args.steps} steps, B={args.batch_size} G={args.group_size}, state terminal reward, {args.seeds} seeds"
    )
    plot(runs, chance, Path(args.png), title)
    lines = [
        "# Learning curves: multi-turn GRPO on TVR-Interactive-v0 (tiny policy)",
        "",
        run_line(
            f".venv/bin/python -m benchmarks.learning_interactive --steps {args.steps} --eval-every {args.eval_every}"
        ),
        "",
        f"Wall time {wall:.0f} s. {title}. Held-out: {args.eval_episodes} greedy episodes; reference: a random "
        "one-item turn then `done` on the same episodes.",
        "",
        "| | " + " | ".join(name for _, name in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
        "| random turn then done | " + " | ".join(f"{chance[k]:.3f}" for k, _ in METRICS) + " |",
        "| warmed-up start | " + " | ".join(f"{start_scores[k]:.3f}" for k, _ in METRICS) + " |",
    ]
    for r in runs:
        last = r["eval"][-1]
        lines.append(
            f"| seed {r['seed']}, step {last['step']} | " + " | ".join(f"{last[k]:.3f}" for k, _ in METRICS) + " |"
        )
    lines += ["", "![curves](learning_interactive.png)"]
    report(lines, RESULTS / "learning_interactive.md")


if __name__ == "__main__":
    main()
