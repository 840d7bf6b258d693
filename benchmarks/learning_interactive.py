"""Learning curves of the tiny policy on TVR-Interactive-v0 with our multi-turn GRPO, 3 seeds.

``--start format`` (the default) starts from the format-warmed tiny model (random well-formed one-item
answers, never the truth), so it writes a turn in the answer grammar but knows nothing of the task.
``--start sft`` starts from SFT on oracle demonstrations (``tvr-gym export --demonstrations oracle``, one
prompt-completion row per turn, TRL's ``SFTTrainer`` for ``--sft-minutes``) and then compares two arms
with the same training time (``--minutes``): multi-turn GRPO, and continued SFT on more demonstrations.
Every run gets the same budget on interactive Basic (one true step, then ``done``) with text
observations; every ``--eval-every`` steps its checkpoint plays fixed held-out episodes greedily
(:func:`tvr_gym.agents.interactive.evaluate_interactive`): Success, the return, TVR Acc of the applied
sequence and the turns used. A random agent (a random transformation, then ``done``) on the same
episodes gives chance level. Writes ``benchmarks/results/learning_interactive.png`` and
``OUT/curves.json``.

    .venv/bin/python -m benchmarks.learning_interactive [--steps 120 --eval-every 30] [--out runs/learning-interactive]
    .venv/bin/python -m benchmarks.learning_interactive --start sft --sft-minutes 10 --minutes 10 --seeds 1
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


def format_start(out: Path, args: argparse.Namespace) -> Path:
    """A tiny model with a format warm-up on Basic prompts (random well-formed answers), built once."""
    import torch

    from tvr_gym.agents.mllm.tiny import make_tiny_model
    from tvr_gym.agents.mllm.warmup import WARMUP_FILE, warmup_format

    start = out / "warm-base"
    if (start / WARMUP_FILE).is_file():
        return start
    torch.set_num_threads(args.workers)
    raw = make_tiny_model(out / "raw-base", seed=0)
    return warmup_format(raw, start, "TVR-Basic-v0", steps=args.warmup_steps, obs_mode=args.obs_mode, seed=0)


def demonstrations(out: Path, n: int, obs_mode: str, start: int = 0) -> Path:
    """Oracle demonstrations of interactive Basic, rows ``start .. start + n - 1``, exported once."""
    from tvr_gym.data.export import export

    path = out / f"demos-{obs_mode}-{start}-{n}"
    if not (path / "train" / "dataset_info.json").is_file():
        export("hf", ENV, n, path, start=start, progress=False, demonstrations="oracle", obs_mode=obs_mode,
               renderer="numpy", **env_kwargs(obs_mode))  # fmt: skip
    return path


def sft(model: Path, data: Path, out: Path, minutes: float, obs_mode: str, lr: float, seed: int = 0) -> Path:
    """TRL's ``SFTTrainer`` on demonstration turns for ``minutes`` of training; returns ``OUT/final``."""
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tvr_gym.agents.mllm.trl_train import TVRArguments, _load, _save_final, sft_rows, train_rows

    tvr = TVRArguments(model=str(model), env=ENV, dataset=str(data), obs_mode=obs_mode)
    rows = sft_rows(train_rows(tvr, out, progress=False))

    class Budget(TrainerCallback):  # stop after the step that spends the training time
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = time.perf_counter() - self.start >= minutes * 60

    config = SFTConfig(output_dir=str(out), max_steps=10**9, per_device_train_batch_size=8, learning_rate=lr,
                       lr_scheduler_type="constant", report_to="none", save_strategy="no", disable_tqdm=True,
                       use_cpu=True, bf16=False, seed=seed, logging_steps=50)  # fmt: skip
    model_, processor = _load(model)
    trainer = SFTTrainer(model=model_, args=config, train_dataset=rows, processing_class=processor,
                         callbacks=[Budget()])  # fmt: skip
    trainer.train()
    return _save_final(trainer, processor, out, tvr, max_new_tokens=16)


def sft_start(out: Path, args: argparse.Namespace) -> Path:
    """The SFT start: a fresh tiny model after ``--sft-minutes`` of SFT on oracle demonstrations, built once."""
    import torch

    from tvr_gym.agents.mllm.tiny import make_tiny_model

    final = out / "sft-start" / "final"
    if (final / "tvr_policy.json").is_file():
        return final
    torch.set_num_threads(args.workers)
    raw = out / "raw-base"
    if not (raw / "config.json").is_file():
        make_tiny_model(raw, seed=0)
    data = demonstrations(out, args.demos, args.obs_mode)
    return sft(raw, data, out / "sft-start", args.sft_minutes, args.obs_mode, args.sft_lr)


def run_sft_arm(job: dict) -> dict:
    """Continued SFT on demonstrations the start never saw, for the GRPO arm's training time."""
    import torch

    torch.set_num_threads(1)
    from tvr_gym.agents.mllm.policy import MLLMAgent

    t0 = time.time()
    final = sft(Path(job["start_dir"]), Path(job["data"]), Path(job["out"]), job["minutes"], job["obs_mode"],
                job["lr"], job["seed"])  # fmt: skip
    agent = MLLMAgent.from_pretrained(final, device="cpu", use_images=job["obs_mode"] == "image")
    end = held_out(agent, job["eval_episodes"], job["obs_mode"])
    return {"arm": "sft", "seed": job["seed"], "train": [], "eval": [{"step": 0, **job["start"]}, {"step": 1, **end}],
            "seconds": time.time() - t0}  # fmt: skip


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
        "arm": "grpo",
        "seed": cfg.seed,
        "train": [{k: h.get(k, float("nan")) for k in keys} for h in history],
        "eval": curve,
        "seconds": time.time() - t0,
    }


def plot(runs: list[dict], chance: dict[str, float], path: Path, title: str) -> None:
    """Held-out curves of every GRPO run and their mean. Runs with a time budget stop at different steps: the mean
    covers the evaluations all of them reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(24, 4.6))
    common = min(len(r["eval"]) for r in runs)
    for ax, (key, name) in zip(axes, METRICS):
        for r in runs:
            ax.plot([e["step"] for e in r["eval"]], [e[key] for e in r["eval"]], color="tab:blue", alpha=0.35,
                    linewidth=1)  # fmt: skip
        mean = np.mean([[e[key] for e in r["eval"][:common]] for r in runs], axis=0)
        steps = [e["step"] for e in runs[0]["eval"][:common]]
        ax.plot(steps, mean, color="tab:blue", marker="o", label=f"multi-turn GRPO (mean of {len(runs)} seeds)")
        ax.axhline(chance[key], color="black", linestyle="-.", linewidth=1, label="random turn then done")
        ax.set(title=f"{name} (greedy)", xlabel="GRPO step (0 = warmed-up start)")
        ax.grid(alpha=0.3)
    common = min(len(r["train"]) for r in runs)
    train_steps = [h["step"] for h in runs[0]["train"][:common]]
    values = np.array([[h["reward"] for h in r["train"][:common]] for r in runs], dtype=float)
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


def write_report(curves: dict) -> None:
    """The plot and ``benchmarks/results/learning_interactive[_sft].md`` from a run's ``curves.json``."""
    args, runs, chance = argparse.Namespace(**curves["args"]), curves["runs"], curves["chance"]
    start_scores = curves.get("start") or runs[0]["eval"][0]  # every run's step 0 is the start
    suffix = "" if args.start == "format" else "_sft"
    budget = f"{args.minutes:g} min per arm" if args.minutes else f"{args.steps} steps"
    start_name = "format warm-up"
    if args.start == "sft":
        start_name = f"SFT on oracle demonstrations ({args.sft_minutes:g} min)"
    title = (
        f"tiny Qwen2.5-VL, {start_name}, then multi-turn GRPO on interactive Basic ({args.obs_mode} obs): "
        f"{budget}, B={args.batch_size} G={args.group_size}, state terminal reward, {args.seeds} seeds"
    )
    grpo_runs = [r for r in runs if r.get("arm", "grpo") == "grpo"]
    plot(grpo_runs, chance, RESULTS / f"learning_interactive{suffix}.png", title)
    command = f".venv/bin/python -m benchmarks.learning_interactive --start {args.start} --seeds {args.seeds} "
    command += f"--minutes {args.minutes:g}" if args.minutes else f"--steps {args.steps} --eval-every {args.eval_every}"
    lines = [
        "# Learning curves: multi-turn GRPO on TVR-Interactive-v0 (tiny policy)",
        "",
        run_line(command + (f" --sft-minutes {args.sft_minutes:g}" if args.start == "sft" else "")),
        "",
        f"Wall time {curves['wall']:.0f} s. {title}. Held-out: {args.eval_episodes} greedy episodes; reference: a "
        "random one-item turn then `done` on the same episodes.",
        "",
        "| | " + " | ".join(name for _, name in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
        "| random turn then done | " + " | ".join(f"{chance[k]:.3f}" for k, _ in METRICS) + " |",
        f"| start ({start_name}) | " + " | ".join(f"{start_scores[k]:.3f}" for k, _ in METRICS) + " |",
    ]
    for r in runs:
        last = r["eval"][-1]
        arm = "continued SFT, end" if r.get("arm") == "sft" else f"GRPO, step {last['step']}"
        lines.append(f"| seed {r['seed']}, {arm} | " + " | ".join(f"{last[k]:.3f}" for k, _ in METRICS) + " |")
    lines += ["", f"![curves](learning_interactive{suffix}.png)"]
    report(lines, RESULTS / f"learning_interactive{suffix}.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", choices=("format", "sft"), default="format", help="format warm-up, or SFT on "
                        "oracle demonstrations with a continued-SFT arm beside GRPO")  # fmt: skip
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--minutes", type=float, default=None, help="training minutes per arm instead of --steps")
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--eval-episodes", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--sft-minutes", type=float, default=10.0, help="--start sft: SFT minutes of the start")
    parser.add_argument("--sft-lr", type=float, default=3e-3)
    parser.add_argument("--demos", type=int, default=2048, help="--start sft: demonstrations of the start (and as "
                        "many unseen ones for the continued-SFT arm)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--obs-mode", choices=("text", "image"), default="text")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="default runs/learning-interactive[-sft]")
    parser.add_argument("--replot", metavar="DIR", default=None, help="only redraw the plot and the report from "
                        "DIR/curves.json (a finished run's --out)")  # fmt: skip
    args = parser.parse_args()
    if args.replot:
        write_report(json.loads((Path(args.replot) / "curves.json").read_text()))
        return
    suffix = "" if args.start == "format" else "_sft"
    out = Path(args.out or f"runs/learning-interactive{suffix.replace('_', '-')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    start = format_start(out, args) if args.start == "format" else sft_start(out, args)
    from tvr_gym.agents.mllm.policy import MLLMAgent

    start_agent = MLLMAgent.from_pretrained(start, device="cpu", use_images=args.obs_mode == "image")
    start_scores = held_out(start_agent, args.eval_episodes, args.obs_mode)
    chance = random_agent_scores(args.eval_episodes, args.obs_mode)
    print(f"start {start_scores}; random {chance}", flush=True)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = []
        for seed in range(args.seeds):
            config = dict(
                model=str(start), env=ENV, out=str(out / f"seed-{seed}"), steps=args.steps if args.minutes is None
                else 10**6, max_minutes=args.minutes or 0.0, batch_size=args.batch_size, group_size=args.group_size,
                reward="state", obs_mode=args.obs_mode, size=list(env_kwargs(args.obs_mode)["render_size"]),
                lr=args.lr, max_new_tokens=args.max_new_tokens, save_every=args.eval_every, eval_every=0,
                eval_episodes=args.eval_episodes, seed=seed, device="cpu", quiet=True, env_kwargs={"setting": "basic"},
            )  # fmt: skip
            futures.append(pool.submit(run_one, {"config": config, "start": start_scores}))
            if args.start == "sft":
                data = demonstrations(out, args.demos, args.obs_mode, start=args.demos)  # rows the start never saw
                job = {"start_dir": str(start), "data": str(data), "out": str(out / f"sft-seed-{seed}"),
                       "minutes": args.minutes or 10.0, "obs_mode": args.obs_mode, "lr": args.sft_lr, "seed": seed,
                       "eval_episodes": args.eval_episodes, "start": start_scores}  # fmt: skip
                futures.append(pool.submit(run_sft_arm, job))
        runs = [f.result() for f in futures]
    curves = {"args": vars(args), "wall": time.time() - t0, "chance": chance, "start": start_scores, "runs": runs}
    atomic_write_text(out / "curves.json", json.dumps(curves))
    write_report(curves)


if __name__ == "__main__":
    main()
