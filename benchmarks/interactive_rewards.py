"""Which interactive rewards let MaskablePPO act: each reward option trained with the same budget, then
played greedily on held-out problems beside the solvers (oracle, greedy) and the masked random policy.

A variant is a set of ``TVR-Interactive-v0`` keywords (``potential``, ``success_bonus``, ``idle_cost``,
``terminal_reward``, ``slack``) and PPO settings: ``interactive`` (the 0.2 defaults of ``tvr-gym train
ppo``: one environment, lr 3e-4, entropy 0.01) or ``symbolic`` (the single-shot symbolic recipe: 8
environments, lr 1e-3 decaying, entropy 0.06; the default now).
The table reports held-out success and the turns used: ``turns 1.00`` means the policy says ``done``
at once. Writes ``benchmarks/results/interactive_rewards.md``.

    .venv/bin/python -m benchmarks.interactive_rewards [--setting basic] [--steps 40000] [--variants v0 v5]
    .venv/bin/python -m benchmarks.interactive_rewards --quick   # v3 for 8k steps, 40 episodes: ~2 minutes

``--quick`` writes into ``runs/interactive-rewards-quick`` only, never into ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks import report, run_line

RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT_SEED = 10_000_000
"""Episode ``i`` of the evaluation is ``reset(seed=HELD_OUT_SEED + i)``; training seeds stay far below."""
OLD = {"potential": "distance", "success_bonus": 0.0, "idle_cost": 0.0}
NEW = {"potential": "graded", "success_bonus": 1.0, "idle_cost": 1.0}
SYMBOLIC_PPO = {"n_envs": 8, "lr_schedule": "decay", "learning_rate": 1e-3, "n_steps": 128, "batch_size": 256,
                "ent_coef": 0.06}  # fmt: skip
INTERACTIVE_PPO_0_2 = {"n_envs": 1, "lr_schedule": "constant", "learning_rate": 3e-4, "n_steps": 256, "batch_size": 64,
                       "ent_coef": 0.01}  # fmt: skip
"""The interactive PPO defaults of version 0.2 (``tvr-gym train ppo`` now uses :data:`SYMBOLIC_PPO`'s)."""
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "v0": ("0.2 rewards (distance, no bonus, no idle cost), interactive PPO", OLD, INTERACTIVE_PPO_0_2),
    "v1": ("graded + bonus + idle cost, interactive PPO", NEW, INTERACTIVE_PPO_0_2),
    "v2": ("0.2 rewards, symbolic PPO", OLD, SYMBOLIC_PPO),
    "v3": ("graded + bonus + idle cost, symbolic PPO", NEW, SYMBOLIC_PPO),
    "v4": ("as v3, terminal none", {**NEW, "terminal_reward": "none"}, SYMBOLIC_PPO),
    "v5": ("as v4, slack 0", {**NEW, "terminal_reward": "none", "slack": 0}, SYMBOLIC_PPO),
    "v6": ("as v3, entropy 0.01", NEW, {**SYMBOLIC_PPO, "ent_coef": 0.01}),
    "v7": ("as v3, entropy 0", NEW, {**SYMBOLIC_PPO, "ent_coef": 0.0}),
    "v8": ("as v3, idle cost 3 (done at once below any first step)", {**NEW, "idle_cost": 3.0}, SYMBOLIC_PPO),
    "v9": ("as v3, idle cost 2 (done at once below a step on the right object)", {**NEW, "idle_cost": 2.0},
           SYMBOLIC_PPO),
}


def run_variant(name: str, setting: str, steps: int, episodes: int, seed: int, out: str) -> dict:
    from tvr_gym.agents.ppo import train_ppo
    from tvr_gym.envs.interactive_sb3 import make_interactive_sb3_env

    _, env_kwargs, ppo = VARIANTS[name]
    env_kwargs = {"setting": setting, "renderer": "numpy", **env_kwargs}
    ppo = dict(ppo)
    started = time.perf_counter()
    agent = train_ppo("TVR-Interactive-v0", steps, Path(out) / f"{name}-{setting}-{seed}", seed=seed,
                      env_kwargs=env_kwargs, checkpoint_every=0, n_envs=ppo.pop("n_envs", None),
                      lr_schedule=ppo.pop("lr_schedule", None), **ppo)  # fmt: skip
    seconds = time.perf_counter() - started
    env = make_interactive_sb3_env(**env_kwargs)
    records = [agent.play(env, seed=HELD_OUT_SEED + i) for i in range(episodes)]
    return {
        "variant": name, "seconds": seconds,
        "success": float(np.mean([r["interactive"]["success"] for r in records])),
        "turns": float(np.mean([r["interactive"]["turns"] for r in records])),
    }  # fmt: skip


def references(setting: str, episodes: int) -> dict[str, dict]:
    from tvr_gym.agents.solvers import make_solver
    from tvr_gym.envs.interactive_sb3 import MaskedRandomPolicy, make_interactive_sb3_env, play_episode

    env = make_interactive_sb3_env(setting=setting, renderer="numpy")
    out = {}
    for name, policy in (("oracle", make_solver("oracle", env)), ("greedy", make_solver("greedy", env)),
                         ("random (masked)", MaskedRandomPolicy(0))):  # fmt: skip
        records = [play_episode(env, policy, seed=HELD_OUT_SEED + i) for i in range(episodes)]
        out[name] = {k: float(np.mean([r["interactive"][k] for r in records])) for k in ("success", "turns")}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="basic", choices=("basic", "event", "crossview"))
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/interactive-rewards")
    parser.add_argument("--report", default=None, help="default benchmarks/results/interactive_rewards.md")
    parser.add_argument("--quick", action="store_true", help="v3 for 8k steps on 40 episodes, results in OUT only")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.episodes, args.variants = 8_000, 40, ["v3"]
        args.out = "runs/interactive-rewards-quick"
    default_report = Path(args.out) / "report.md" if args.quick else RESULTS / "interactive_rewards.md"
    args.report = args.report or str(default_report)
    jobs = [(v, args.setting, args.steps, args.episodes, args.seed, args.out) for v in args.variants]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(run_variant, *zip(*jobs)))
    lines = [
        "# Interactive rewards: does MaskablePPO act?",
        "",
        run_line(f"python -m benchmarks.interactive_rewards --setting {args.setting} --steps {args.steps} "
                 f"--variants {' '.join(args.variants)}"),  # fmt: skip
        "",
        f"Interactive {args.setting}, {args.steps:,} steps, seed {args.seed}; {args.episodes} held-out episodes.",
        "",
        "| policy | rewards and PPO | held-out success | turns | train s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {name} | solver reference | {r['success']:.3f} | {r['turns']:.2f} | |"
              for name, r in references(args.setting, args.episodes).items()]  # fmt: skip
    lines += [f"| MaskablePPO {r['variant']} | {VARIANTS[r['variant']][0]} | {r['success']:.3f} | {r['turns']:.2f} | "
              f"{r['seconds']:.0f} |" for r in results]  # fmt: skip
    report(lines, args.report)


if __name__ == "__main__":
    main()
