"""PPO on TVR: wrapper and training throughput against the raw environment, and a learning check.

Run pinned to one core::

    taskset -c 0 .venv/bin/python -m benchmarks.bench_ppo --out benchmarks/results/ppo.md

1. Throughput, in this process's CPU time (other jobs on the shared core do not count): episodes/s of
   the raw ``TVR-Basic-v0`` (reset + step with a canonical answer) are the reference; the SB3 wrappers
   (image and symbolic) and PPO training (symbolic with MlpPolicy, image with CnnPolicy; rollouts plus
   updates, default PPO settings of ``train_ppo``) are ratios to it.
   All at 64x48 on a fixed pool of problems whose renders are cached, so the numbers measure the
   wrapper and PPO, not the renderer.
2. Learning: symbolic PPO on an easy variant of TVR-Basic (one visible object, only its color changes;
   ``generate(..., attributes=["color"], visible=1)``; trained on one set of problems, evaluated on a
   held-out set) and on the full procedural TVR-Basic-v0, greedy answers, against the same network
   before training (``learning_rate=0``) and the random agent.

``--renderers STEPS`` instead times symbolic training on fresh problems with the ``gl`` renderer and with
``none`` (what symbolic runs use now: they read the tables, never the images), in process CPU time.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks import cpu_model, report
from tvr_gym.agents.ppo import train_ppo

SIZE = (64, 48)
TINY = (16, 12)


def _machine() -> str:
    model = cpu_model()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return f"{os.cpu_count()} cores (nproc), pinned to {affinity}; {model}; no GPU; Python {platform.python_version()}"


def _color_dataset(path: Path, seed: int, n: int) -> Path:
    from tvr_gym.core.trance import save_trance
    from tvr_gym.problems.generator import generate

    save_trance((generate("basic", seed, index=i, attributes=["color"], visible=(1, 1)) for i in range(n)), path)
    return path


def _episodes_per_s(cases: dict, n: int, repeats: int = 3) -> dict[str, float]:
    """Best rate of ``n`` episodes (reset + step) per case, over interleaved passes after a warm-up pass."""
    best = dict.fromkeys(cases, float("inf"))
    for rep in range(repeats + 1):
        for name, (env, action) in cases.items():
            t0 = time.process_time()
            for i in range(n):
                env.reset(seed=i)
                env.step(action)
            if rep:  # pass 0 warms the render cache
                best[name] = min(best[name], time.process_time() - t0)
    return {name: n / t for name, t in best.items()}


def throughput(work: Path, n: int) -> list[tuple[str, float]]:
    import gymnasium as gym

    from tvr_gym.core.answer import format_answer
    from tvr_gym.envs.wrappers import make_sb3_env

    source = _color_dataset(work / "pool", 0, 64)
    kw = {"source": source, "render_size": SIZE}
    action = np.array([0, 0])  # decodes to 0.color.gray
    cases = {
        "raw env, text answer (reference)": (gym.make("TVR-Basic-v0", **kw), format_answer([(0, "color", "gray")])),
        "SB3 wrapper, image": (make_sb3_env("TVR-Basic-v0", "image", **kw), action),
        "SB3 wrapper, symbolic": (make_sb3_env("TVR-Basic-v0", "symbolic", **kw), action),
    }
    rows = list(_episodes_per_s(cases, n).items())
    t0 = time.process_time()
    train_ppo("TVR-Basic-v0", n, work / "speed", obs="symbolic", render_size=SIZE, env_kwargs={"source": source},
              checkpoint_every=0, n_steps=256, n_envs=1, arch="mlp")  # fmt: skip
    rows.append(("PPO training, symbolic (MlpPolicy)", n / (time.process_time() - t0)))
    m = max(n // 4, 256)
    t0 = time.process_time()
    train_ppo("TVR-Basic-v0", m, work / "speed_image", obs="image", render_size=SIZE, env_kwargs={"source": source},
              checkpoint_every=0, n_steps=256)  # fmt: skip
    rows.append(("PPO training, image (CnnPolicy)", m / (time.process_time() - t0)))
    return rows


def _score(agent, env_kwargs: dict, episodes: int, seed: int) -> dict[str, float]:
    from tvr_gym.agents.evaluate import evaluate

    result = evaluate(agent, "TVR-Basic-v0", episodes, seed=seed, env_kwargs={**env_kwargs, "render_size": TINY},
                      progress=False)  # fmt: skip
    recs = result.records
    out = {"reward": float(np.mean([r["reward"] for r in recs]))}
    for key in ("obj_acc", "attr_acc", "acc"):
        out[key] = float(np.mean([r["metrics"][key] for r in recs]))
    return out


LEARN_KWARGS = {"learning_rate": 3e-3, "n_steps": 128, "batch_size": 32, "n_epochs": 10, "ent_coef": 0.0}
HELD_OUT_SEED = 10**6
"""Evaluation episode seeds start here (procedural runs train on seeds drawn from the training seed)."""


def learning(work: Path, variant: str, timesteps: int, seed: int, episodes: int) -> dict[str, dict[str, float]]:
    """Held-out scores of the random agent, the untrained network and PPO after ``timesteps`` steps."""
    from tvr_gym.agents import RandomAgent

    if variant == "easy":
        train_kw = {"source": _color_dataset(work / "train", 1, 1024)}
        eval_kw, eval_seed = {"source": _color_dataset(work / "held_out", 2, 256)}, 0
    else:  # the full procedural TVR-Basic-v0
        train_kw, eval_kw, eval_seed = {}, {}, HELD_OUT_SEED
    common = {"obs": "symbolic", "render_size": TINY, "env_kwargs": train_kw, "seed": seed, "n_envs": 1, "arch": "mlp",
              "checkpoint_every": 0, **LEARN_KWARGS}  # fmt: skip
    before = train_ppo("TVR-Basic-v0", 64, work / f"{variant}_before", **{**common, "learning_rate": 0.0})
    t0 = time.process_time()
    after = train_ppo("TVR-Basic-v0", timesteps, work / f"{variant}_after", **common)
    cpu = time.process_time() - t0
    scores = {
        "random agent": _score(RandomAgent(seed=0), eval_kw, episodes, eval_seed),
        "PPO before training": _score(before, eval_kw, episodes, eval_seed),
        f"PPO after {timesteps:,} steps ({cpu:.0f} s CPU)": _score(after, eval_kw, episodes, eval_seed),
    }
    return scores


VARIANTS = {
    "easy": "easy variant of TVR-Basic (one visible object, color only; 1,024 training problems, 256 held out)",
    "full": "the full procedural TVR-Basic-v0 (held-out episode seeds from 10^6)",
}


def to_markdown(rows, learned: dict[str, dict], command: str) -> str:
    ref = rows[0][1]
    lines = [
        "## PPO (Stable-Baselines3) on TVR, one core",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {_machine()}",
        f"- Load average at the end of the run: {os.getloadavg()[0]:.1f} (other jobs share the machine)",
        "",
        f"### Throughput (TVR-Basic-v0, {SIZE[0]}x{SIZE[1]}, cached renders, process CPU time)",
        "",
        "| what | episodes/s | ratio to the raw env |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {rate:,.0f} | {rate / ref:.3f} |" for name, rate in rows]
    lines += [
        "",
        "### Learning: symbolic PPO (MlpPolicy), greedy answers on held-out episodes",
        "",
        f"PPO settings: `{LEARN_KWARGS}`; the same evaluation seeds for every row of a table.",
    ]
    for variant, scores in learned.items():
        rand = scores["random agent"]
        lines += [
            "",
            f"On {VARIANTS[variant]}:",
            "",
            "| agent | mean STAR reward | reward − random | ObjAcc | ObjAcc ÷ random | AttrAcc | Acc |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in scores.items():
            lines.append(
                f"| {name} | {s['reward']:.3f} | {s['reward'] - rand['reward']:+.3f} | {s['obj_acc']:.3f} | "
                f"{s['obj_acc'] / max(rand['obj_acc'], 1e-9):.2f} | {s['attr_acc']:.3f} | {s['acc']:.3f} |"
            )
    lines += [""]
    return "\n".join(lines)


def renderer_cost(work: Path, steps: int, seed: int = 0) -> dict[str, float]:
    """Process CPU seconds of symbolic PPO training (``train_ppo`` defaults, fresh problems) with ``gl`` at 32x24
    (the renderer symbolic runs used before) and with ``none`` (their default now; the tables are what they
    read): the images' share of a symbolic run."""
    cost = {}
    for renderer in ("gl", "none"):
        start = time.process_time()
        train_ppo("TVR-Basic-v0", steps, work / f"renderer-{renderer}", seed=seed, checkpoint_every=0,
                  env_kwargs={"renderer": renderer})  # fmt: skip
        cost[renderer] = time.process_time() - start
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="episodes per throughput case")
    parser.add_argument("--timesteps", type=int, default=20_000, help="PPO steps of each learning run")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--episodes", type=int, default=256, help="held-out evaluation episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the markdown fragment here")
    parser.add_argument("--renderers", type=int, default=0, metavar="STEPS",
                        help="only time STEPS of symbolic training with gl and with none (no other part)")  # fmt: skip
    args = parser.parse_args()
    if args.renderers:
        with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
            cost = renderer_cost(Path(tmp), args.renderers)
        report([
            f"## Symbolic PPO: what the images cost ({args.renderers:,} steps, process CPU seconds)", "",
            f"- Command: `taskset -c 0 .venv/bin/python -m benchmarks.bench_ppo --renderers {args.renderers}`",
            f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {_machine()}", "",
            "| renderer | CPU s | ratio |", "|---|---|---|",
            f"| gl, 32x24 (the earlier default; reference) | {cost['gl']:.1f} | 1.00× |",
            f"| none (the default now) | {cost['none']:.1f} | {cost['gl'] / cost['none']:.2f}× faster |",
        ], args.out)  # fmt: skip
        return
    with tempfile.TemporaryDirectory(prefix="bench_ppo_") as tmp:
        work = Path(tmp)
        rows = throughput(work, args.n)
        learned = {v: learning(work, v, args.timesteps, args.seed, args.episodes) for v in args.variants}
    command = "taskset -c 0 .venv/bin/python -m benchmarks.bench_ppo"
    if args.timesteps != 20_000:
        command += f" --timesteps {args.timesteps}"
    if args.variants != list(VARIANTS):
        command += " --variants " + " ".join(args.variants)
    if args.out:
        command += f" --out {args.out}"
    report(to_markdown(rows, learned, command), args.out)


if __name__ == "__main__":
    main()
