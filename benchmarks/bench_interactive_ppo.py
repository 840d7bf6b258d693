"""Learning curves: MaskablePPO on interactive Event against PPO on single-shot Event, same budget of env steps.

Both are symbolic (object tables, the policy network ``--arch``: by default the per-object extractor of
:mod:`tvr_gym.agents.ppo_objects`) with the same PPO settings (:data:`LEARN_KWARGS`) and the same number
of environment steps, 3 seeds each:

* **interactive**: sb3-contrib's ``MaskablePPO`` on ``TVR-Interactive-v0`` (setting ``event``) through
  :class:`tvr_gym.envs.interactive_sb3.InteractiveSB3` (one step per turn, masks, progress rewards and the
  ``state`` terminal reward). An episode takes several environment steps.
* **single-shot**: SB3's ``PPO`` on ``TVR-Event-v0`` through :mod:`tvr_gym.envs.wrappers` (the whole answer
  in one ``MultiDiscrete`` action, STAR reward). An episode is one environment step.

Every ``--eval-every`` steps the checkpoint plays the same held-out problems greedily (episode seeds
from 10^6; both ids draw the same problem for a seed) and is scored with TVR's Acc and AD (distance)
of the applied sequence; the interactive runs also report Success and turns. Step 0 is the untrained
network of the same seed. References measured in the same run on the same problems: the random agent
of each interface (uniform over the masked-in actions, ``done`` included; 1-4 random items) and the
no-op answer. Runs go ``--workers`` at a time, one torch thread each.

    .venv/bin/python -m benchmarks.bench_interactive_ppo --out benchmarks/results/interactive_ppo.md

writes the markdown, ``interactive_ppo.png`` and the raw curves ``interactive_ppo.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import cpu_model, report
from tvr_gym.core.atomic import atomic_write_text

TINY = (16, 12)
LEARN_KWARGS = {"learning_rate": 1e-3, "n_steps": 128, "batch_size": 32, "n_epochs": 10, "ent_coef": 0.0}
"""The PPO settings of both interfaces (bench_ppo.py's, at the per-object network's learning rate)."""
HELD_OUT_SEED = 10**6
METHODS = {
    "interactive": ("TVR-Interactive-v0", "MaskablePPO, interactive Event (one step per turn, masks)"),
    "single-shot": ("TVR-Event-v0", "PPO, single-shot Event (whole answer in one action)"),
}
COLORS = {"interactive": "tab:blue", "single-shot": "tab:orange"}


def _evaluate(method: str, path: Path, episodes: int) -> dict[str, float]:
    """Held-out greedy scores of one checkpoint (or training directory)."""
    from tvr_gym.agents.ppo import InteractivePPOAgent, PPOAgent

    if method == "interactive":
        summary = InteractivePPOAgent.load(path).evaluate(episodes, seed=HELD_OUT_SEED, render_size=TINY)["summary"]
        return {k: summary[k] for k in ("acc", "dist", "success", "turns", "applied")}
    from tvr_gym.agents.evaluate import evaluate

    result = evaluate(PPOAgent.load(path), "TVR-Event-v0", episodes, seed=HELD_OUT_SEED,
                      env_kwargs={"render_size": TINY}, progress=False)  # fmt: skip
    return {k: float(np.mean([r["metrics"][k] for r in result.records])) for k in ("acc", "dist")}


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (method, seed) run with checkpoints every ``eval_every`` steps, then score each checkpoint."""
    from tvr_gym.agents.ppo import train_ppo

    method, seed, out = job["method"], job["seed"], Path(job["work"]) / f"{job['method']}-{job['seed']}"
    env_id = METHODS[method][0]
    common = {"obs": "symbolic", "render_size": TINY, "seed": seed, "arch": job["arch"], **LEARN_KWARGS}
    # learning_rate=0 keeps the initial weights of the same seed: the point at step 0
    train_ppo(env_id, LEARN_KWARGS["n_steps"], out / "before", checkpoint_every=0, **{**common, "learning_rate": 0})
    t0, c0 = time.time(), time.process_time()
    train_ppo(env_id, job["timesteps"], out / "run", checkpoint_every=job["eval_every"], **common)
    train_wall, train_cpu = time.time() - t0, time.process_time() - c0
    points = [(0, out / "before")]
    points += [(s, out / "run" / "checkpoints" / f"ppo_{s}_steps.zip") for s in _eval_steps(job)]
    curve = [{"step": step, **_evaluate(method, path, job["episodes"])} for step, path in points]
    monitor = next((out / "run" / "monitor").glob("*.monitor.csv"))
    episodes_seen = sum(1 for line in monitor.read_text().splitlines()[2:] if line.strip())
    return {"method": method, "seed": seed, "eval": curve, "train_wall": train_wall, "train_cpu": train_cpu,
            "episodes_seen": episodes_seen}  # fmt: skip


def _eval_steps(job: dict[str, Any]) -> list[int]:
    every, total = job["eval_every"], job["timesteps"]
    return [s for s in range(every, total + 1, every)]


def references(episodes: int) -> dict[str, dict[str, float]]:
    """Random agents of both interfaces and the no-op answer on the held-out problems."""
    from tvr_gym.agents import NoOpAgent, RandomAgent
    from tvr_gym.agents.evaluate import evaluate
    from tvr_gym.agents.ppo import interactive_summary
    from tvr_gym.envs.interactive_sb3 import MaskedRandomPolicy, make_interactive_sb3_env, play_episode

    env = make_interactive_sb3_env(render_size=TINY)
    policy = MaskedRandomPolicy(seed=0)
    records = [play_episode(env, policy, seed=HELD_OUT_SEED + i) for i in range(episodes)]
    summary = interactive_summary(records)
    out = {"random, interactive (uniform over masked-in actions)": {k: summary[k] for k in
                                                                     ("acc", "dist", "success", "turns")}}  # fmt: skip
    for name, agent in (("random, single-shot (1-4 random items)", RandomAgent(seed=0)),
                        ("no-op (empty answer / done at once)", NoOpAgent())):  # fmt: skip
        result = evaluate(agent, "TVR-Event-v0", episodes, seed=HELD_OUT_SEED, env_kwargs={"render_size": TINY},
                          progress=False)  # fmt: skip
        out[name] = {k: float(np.mean([r["metrics"][k] for r in result.records])) for k in ("acc", "dist")}
    return out


# ---------------------------------------------------------------------------- output


def plot(runs: list[dict], refs: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    panels = (("acc", "held-out TVR Acc (greedy)", "Acc"), ("dist", "held-out AD: TVR distance to the target", "AD"))
    for ax, (key, name, ylabel) in zip(axes, panels):
        for method in METHODS:
            mine = [r for r in runs if r["method"] == method]
            if not mine:
                continue
            steps = [e["step"] for e in mine[0]["eval"]]
            values = np.array([[e[key] for e in r["eval"]] for r in mine], dtype=float)
            label = f"{METHODS[method][1]} (mean of {len(mine)} seeds, band: min-max)"
            ax.plot(steps, values.mean(0), marker="o", markersize=4, color=COLORS[method], label=label)
            ax.fill_between(steps, values.min(0), values.max(0), color=COLORS[method], alpha=0.15)
        styles = {"interactive": ("tab:blue", ":"), "single-shot": ("tab:orange", ":"), "no-op": ("black", "-.")}
        for ref_name, scores in refs.items():
            kind = next(k for k in styles if k in ref_name)
            color, style = styles[kind]
            ax.axhline(scores[key], color=color, linestyle=style, linewidth=1.2, label=ref_name)
        ax.set(title=name, xlabel="environment steps", ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, max(0.1, axes[0].get_ylim()[1]))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def title_of(args: argparse.Namespace) -> str:
    return (f"Symbolic PPO on TVR Event: interactive (MaskablePPO) vs single-shot (PPO), {args.timesteps:,} env steps, "
            f"{len(args.seeds)} seeds, {args.episodes} held-out problems")  # fmt: skip


def _mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def to_markdown(runs, refs, args, command: str, wall: float, png: Path) -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    lines = [
        "## Interactive vs single-shot symbolic PPO on TVR Event",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; wall time {wall / 60:.1f} min "
        f"({args.workers} runs at a time, one torch thread each)",
        f"- Machine: {os.cpu_count()} cores (pinned to {affinity}); {cpu_model()}; no GPU; "
        f"Python {platform.python_version()}; load average at the end {os.getloadavg()[0]:.1f} "
        "(other jobs share the machine)",
        f"- Budget: {args.timesteps:,} environment steps per run, {len(args.seeds)} seeds (`{args.seeds}`), "
        f"checkpoints scored every {args.eval_every:,} steps on {args.episodes} held-out problems "
        f"(episode seeds from {HELD_OUT_SEED:,}; the same problems for both interfaces)",
        f"- PPO settings (both): `{LEARN_KWARGS}`, arch `{args.arch}`, symbolic observations; interactive: "
        "`TVR-Interactive-v0` defaults (setting event, terminal reward `state`, slack 3, costs illegal 0.1 / "
        "no-op 0.05); single-shot: `TVR-Event-v0` defaults (STAR reward)",
        f"- Plot: `{png.name}`",
        "",
        "### Final numbers (greedy, held out; mean ± sd over seeds, then per seed)",
        "",
        "| agent | episodes seen | train time / run | Acc | AD (lower is better) | Success | turns |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        last = [r["eval"][-1] for r in mine]
        first = [r["eval"][0] for r in mine]
        seen = int(np.mean([r["episodes_seen"] for r in mine]))
        t = np.mean([r["train_wall"] for r in mine])
        accs = ", ".join(f"{e['acc']:.3f}" for e in last)
        success = _mean_sd([e["success"] for e in last]) if "success" in last[0] else "–"
        turns = f"{np.mean([e['turns'] for e in last]):.2f}" if "turns" in last[0] else "1"
        lines.append(f"| {METHODS[method][1]}, untrained | – | – | {_mean_sd([e['acc'] for e in first])} | "
                     f"{_mean_sd([e['dist'] for e in first])} | – | – |")  # fmt: skip
        lines.append(f"| {METHODS[method][1]}, after {args.timesteps:,} steps | {seen:,} | {t:.0f} s | "
                     f"{_mean_sd([e['acc'] for e in last])} ({accs}) | {_mean_sd([e['dist'] for e in last])} | "
                     f"{success} | {turns} |")  # fmt: skip
    for name, s in refs.items():
        success = f"{s['success']:.3f}" if "success" in s else "–"
        turns = f"{s['turns']:.2f}" if "turns" in s else "1"
        lines.append(f"| {name} | – | – | {s['acc']:.3f} | {s['dist']:.3f} | {success} | {turns} |")
    lines += ["", "### Curves (held-out Acc / AD, mean over seeds)", ""]
    steps = [e["step"] for e in runs[0]["eval"]]
    lines += ["| env steps | " + " | ".join(f"{m} Acc | {m} AD" for m in METHODS) + " |",
              "|---:|" + "---:|---:|" * len(METHODS)]  # fmt: skip
    for i, step in enumerate(steps):
        cells = []
        for method in METHODS:
            mine = [r for r in runs if r["method"] == method]
            cells += [f"{np.mean([r['eval'][i]['acc'] for r in mine]):.3f}",
                      f"{np.mean([r['eval'][i]['dist'] for r in mine]):.3f}"]  # fmt: skip
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=20_000, help="environment steps per run")
    parser.add_argument("--eval-every", type=int, default=2_500, help="steps between scored checkpoints")
    parser.add_argument("--episodes", type=int, default=200, help="held-out problems per evaluation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="runs at a time")
    parser.add_argument("--arch", choices=("objects", "mlp"), default="objects", help="the policy network")
    parser.add_argument("--out", type=Path, help="write the markdown here (PNG and JSON beside it)")
    args = parser.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_interactive_ppo_") as tmp:
        jobs = [{"method": m, "seed": s, "work": tmp, "timesteps": args.timesteps, "eval_every": args.eval_every,
                 "episodes": args.episodes, "arch": args.arch} for s in args.seeds for m in METHODS]  # fmt: skip
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            pending = [pool.submit(run_one, job) for job in jobs]
            refs = references(args.episodes)  # here, while the workers train
            runs = [p.result() for p in pending]
    wall = time.time() - t0
    results = args.out.parent if args.out else Path(__file__).resolve().parent / "results"
    png, raw = results / "interactive_ppo.png", results / "interactive_ppo.json"
    plot(runs, refs, png, title_of(args))
    atomic_write_text(raw, json.dumps({"args": {**vars(args), "out": str(args.out)}, "wall": wall, "refs": refs,
                                       "runs": runs}, indent=1) + "\n")  # fmt: skip
    command = ".venv/bin/python -m benchmarks.bench_interactive_ppo"
    defaults = {"timesteps": 20_000, "eval_every": 2_500, "episodes": 200, "seeds": [0, 1, 2], "workers": 2,
                "arch": "objects"}  # fmt: skip
    for key, default in defaults.items():
        value = getattr(args, key)
        if value != default:
            command += f" --{key.replace('_', '-')} " + (" ".join(map(str, value)) if isinstance(value, list) else
                                                          str(value))  # fmt: skip
    if args.out:
        command += f" --out {args.out}"
    report(to_markdown(runs, refs, args, command, wall, png), args.out)
    print(f"wrote {png} and {raw}")


if __name__ == "__main__":
    main()
