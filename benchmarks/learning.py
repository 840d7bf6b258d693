"""Agents that learn TVR: every learning experiment of issue 13, as one command.

Parts (``--parts``, comma-separated; default all):

- ``ppo-symbolic``, ``ppo-image``, ``ppo-image-table``: SB3 PPO from scratch on TVR-Basic, symbolic
  (per-object network), image (``CnnPolicy``) and image-table observations (the images with the
  initial object table, per-object glimpse network), ``--seeds`` seeds each (:mod:`benchmarks.learning_ppo`);
- ``grpo-sft``: the SFT-then-RL comparison on text TVR-Basic: one SFT start, then GRPO with ``star``,
  ``sparse``, ``state`` and two STAR ablations, and continued SFT, each for the same training time
  (:mod:`benchmarks.learning_grpo`);
- ``grpo-format``: RL from a format-only start (random answers, never the truth) with ``star``,
  ``sparse`` and ``state``;
- ``grpo-image``: image TVR-Basic: SFT from random weights on the true answers (a tiny Qwen2.5-VL
  whose processor keeps a 160x120 render at 24 vision tokens; its checkpoints make the SFT curve),
  then GRPO ``star`` from it;
- ``adam``: why the sparse reward loses the answer format: the setting of the earlier 300-step
  experiment (the 64-wide, 2-layer tiny model, the ``tables`` layout, lr 2e-3) with ``sparse`` under
  AdamW as is, and with ``skip_flat`` (no optimizer step when every advantage is zero, so Adam's
  moments cannot keep moving the weights after a rare signal).

Every run lands in ``learning.json`` as ``{"algo", "task", "start", "obs_mode", "reward", "seed",
"wall_s": [...], "steps": [...], "acc": [...], "obj_acc": [...], "star": [...], ...}`` with ``acc[0]``
the start, beside the random agent's scores on the same held-out episodes (``chance``). Runs of the
same key are replaced, so parts can be run (and re-run) separately. Plots are redrawn from the file.

    .venv/bin/python -m benchmarks.learning                      # everything: hours on 2 cores
    .venv/bin/python -m benchmarks.learning --parts ppo-symbolic # one part
    .venv/bin/python -m benchmarks.learning --parts grpo-format --arms star --first-seed 1 --seeds 2  # some runs
    .venv/bin/python -m benchmarks.learning --parts grpo-sft --arms star --ablation no_kl  # an ablation
    .venv/bin/python -m benchmarks.learning --quick              # < 5 minutes, shows the direction
    .venv/bin/python -m benchmarks.learning --replot             # plots and tables from learning.json

``--ablation NAME`` runs the chosen parts' arms with one lever of the protocol taken out (the parts'
``ablations`` in :data:`FULL`: ``no_kl`` for ``grpo-sft``, ``constant-lr`` for ``ppo-symbolic``); its runs
are stored with ``variant`` NAME beside the protocol's and drawn dashed.

``--quick`` shrinks every budget and writes into ``runs/learning-quick`` only, never into
``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from tvr_gym.agents.ppo import DEFAULT_TIMESTEPS
from tvr_gym.core.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
INTERACTIVE_STEPS = {"basic": DEFAULT_TIMESTEPS["interactive"], "event": 3 * DEFAULT_TIMESTEPS["interactive"]}
"""Steps of an interactive PPO run (``ppo-interactive``) per task, within the 60 minutes on one core of issue 25's
goal: Basic ``tvr-gym train ppo``'s default (about 18 minutes on the reference machine), Event three times it (about
50; ``wall_s`` in the stored runs)."""
PPO_MODES = ("symbolic", "image", "image-table")
PARTS = (*(f"ppo-{mode}" for mode in PPO_MODES), "ppo-interactive", "grpo-sft", "grpo-format", "grpo-image", "adam")
GRPO_PARTS = {"grpo-sft": ("sft", "text"), "grpo-format": ("format", "text"), "grpo-image": ("sft", "image")}
"""Each GRPO part's start kind and observation mode."""
SFT_ARMS = ("star", "sparse", "state", "no_object_tier", "no_attribute_tier", "sft")
FORMAT_ARMS = ("star", "sparse", "state")
PPO_REWARDS = ("star", "sparse", "state", "no_object_tier", "no_attribute_tier")
"""The training rewards a PPO run may take (``--ppo-rewards``): STAR, its two baselines and its two tier ablations."""
KEY = ("algo", "task", "start", "obs_mode", "reward", "variant", "env", "seed")
"""The fields that name a run: a new run replaces the stored run with the same values."""

FULL: dict[str, Any] = {
    "ppo": {
        "timesteps": {"symbolic": 200_000, "image": 50_000, "image-table": 100_000, "interactive": INTERACTIVE_STEPS},
        "episodes": 300,
    },
    "model": {"hidden_size": 64, "layers": 2, "heads": 4},
    "sft": {"lr": 3e-3, "batch_size": 32, "episodes": 8192, "lr_warmup": 100},
    "sft_minutes": 30,
    "grpo": {"batch_size": 4, "group_size": 8, "lr": 1e-3, "max_new_tokens": 24},
    "grpo_by_part": {"grpo-sft": {"beta": 0.04}},
    "ablations": {"grpo-sft": {"no_kl": {"beta": 0.0}}, "ppo-symbolic": {"constant-lr": {"lr_schedule": "constant"}}},
    "format_steps": 300,
    "minutes": {"grpo-sft": 30, "grpo-format": 60, "grpo-image": 60},
    "image_model": {"hidden_size": 64, "layers": 2, "heads": 4, "image_tokens": 24},
    "start_save_every": 500,
    "parts": PARTS,
    "arms": {"grpo-sft": SFT_ARMS, "grpo-format": FORMAT_ARMS, "grpo-image": ("star",)},
    "save_every": 100,
    "episodes": 200,
    "adam": {
        "model": {"hidden_size": 64, "layers": 2, "heads": 4}, "layout": "tables", "format_steps": 300, "steps": 100,
        "save_every": 10, "episodes": 64, "grpo": {"batch_size": 4, "group_size": 8, "lr": 2e-3, "max_new_tokens": 16},
        "variants": {"adamw": {}, "skip_flat": {"skip_flat": True}},
    },
}  # fmt: skip
"""The budgets of a full run (``--minutes`` overrides the per-arm training time)."""
QUICK: dict[str, Any] = {
    **FULL,
    "ppo": {
        "timesteps": {"symbolic": 32_768, "image": 2_048, "image-table": 2_048,
                      "interactive": {"basic": 65_536, "event": 65_536}},
        "episodes": 100,
        "overrides": {"lr_schedule": "constant"},
    },
    "parts": ("ppo-symbolic", "adam"),
    "arms": {"grpo-sft": ("star", "sparse", "sft"), "grpo-format": FORMAT_ARMS, "grpo-image": ("star",)},
    "sft": {**FULL["sft"], "episodes": 1024},
    "sft_minutes": 0.5,
    "format_steps": 60,
    "minutes": {"grpo-sft": 0.25, "grpo-format": 0.25, "grpo-image": 0.25},
    "save_every": 10,
    "start_save_every": 20,
    "episodes": 40,
    "adam": {**FULL["adam"], "format_steps": 60, "steps": 20, "episodes": 24},
}
"""``--quick``: one seed of symbolic PPO long enough to leave chance (32k steps at a constant lr, which
learns faster early than the decay), and the format-loss check. ``--quick --parts grpo-sft`` runs the
SFT arms for seconds from a seconds-old start: it shows that they run, not what they learn."""


# ---------------------------------------------------------------------------- the store


def load(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": [], "chance": {}}


def key_of(run: dict[str, Any]) -> tuple:
    return tuple(run.get(k, "") for k in KEY)


def merge(store: dict[str, Any], runs: list[dict[str, Any]], chance: dict[str, Any]) -> dict[str, Any]:
    """``store`` with ``runs`` replacing any stored run of the same :data:`KEY`, and ``chance`` added."""
    new_keys = {key_of(r) for r in runs}
    kept = [r for r in store["runs"] if key_of(r) not in new_keys]
    order = sorted(kept + runs, key=lambda r: tuple(str(v) for v in key_of(r)))
    return {"runs": order, "chance": {**store.get("chance", {}), **chance}}


def save(path: Path, runs: list[dict[str, Any]], chance: dict[str, Any]) -> None:
    """Merge ``runs`` into the file at ``path`` under a lock, so that two commands running parts side by side
    never lose each other's runs; the file is replaced atomically."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        atomic_write_text(path, json.dumps(merge(load(path), runs, chance), indent=1) + "\n")


# ---------------------------------------------------------------------------- running


def _run(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    if job["kind"] == "ppo":
        from benchmarks.learning_ppo import run, run_interactive

        run = run_interactive if job.get("interactive") else run
    else:
        from benchmarks.learning_grpo import run_arm as run
    return run(job)


def ppo_jobs(
    out: Path, parts: list[str], budget: dict[str, Any], seeds: list[int], rewards: tuple[str, ...] = ("star",),
    task: str = "basic",
) -> list[dict[str, Any]]:
    from benchmarks.learning_ppo import interactive_jobs, jobs

    timesteps = budget["ppo"]["timesteps"]
    modes = [m for m in PPO_MODES if f"ppo-{m}" in parts]
    made = jobs(out, modes, seeds, timesteps, budget["ppo"]["episodes"], budget["ppo"].get("overrides"), rewards,
                task)  # fmt: skip
    if "ppo-interactive" in parts:  # the tvr-gym train ppo defaults: no overrides, the terminal reward's default
        made += interactive_jobs(out, seeds, timesteps["interactive"][task], budget["ppo"]["episodes"], task)
    return [{"kind": "ppo", **j} for j in made]


def grpo_jobs(
    out: Path, part: str, budget: dict[str, Any], seeds: list[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build the part's start (in this process, 1 thread), score it, and list its arms; for images, also the
    start's own SFT curve (returned as a finished run)."""
    from benchmarks.learning_grpo import build_start, held_out, start_curve

    start, obs_mode = GRPO_PARTS[part]
    model = budget["image_model"] if obs_mode == "image" else budget["model"]
    save_every = budget["start_save_every"] if obs_mode == "image" else 0
    t0 = time.perf_counter()
    start_dir = build_start(out, start, obs_mode, model, budget, save_every=save_every)
    print(f"{part}: start {start_dir} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    start_scores = held_out(start_dir, obs_mode, budget["episodes"])
    print(f"{part}: start scores {start_scores}", flush=True)
    finished = [start_curve(out, start_dir, obs_mode, model, budget["episodes"])] if save_every else []
    made = []
    for seed in seeds:
        for reward in budget["arms"][part]:
            made.append({
                "kind": "grpo", "start": start, "start_dir": str(start_dir), "start_scores": start_scores,
                "obs_mode": obs_mode, "reward": reward, "seed": seed, "minutes": budget["minutes"][part],
                "save_every": budget["save_every"], "episodes": budget["episodes"],
                "settings": budget["sft"] if reward == "sft" else grpo_settings(budget, part),
                "out": str(out / f"{part}-{reward}-{seed}"),
            })  # fmt: skip
    return made, finished


def grpo_settings(budget: dict[str, Any], part: str) -> dict[str, Any]:
    """The GRPO settings of a part's arms: the shared ones, with the part's own on top (goal 1's arms keep a
    KL to their SFT start, which keeps their groups from going flat)."""
    return {**budget["grpo"], **budget.get("grpo_by_part", {}).get(part, {})}


def ablated(job: dict[str, Any], part: str, name: str) -> dict[str, Any]:
    """``job`` with the ablation ``name`` of ``part`` (:data:`FULL` ``["ablations"]``): its settings changed,
    stored as ``variant`` ``name``, in a directory of its own (``<part>-<arm>-<name>-<seed>``)."""
    options = FULL["ablations"][part][name]
    settings = "ppo_kwargs" if job["kind"] == "ppo" else "settings"
    folder = Path(job["out"])
    stem, seed = folder.name.rsplit("-", 1)
    out = folder.with_name(f"{stem}-{name}-{seed}")
    return {**job, settings: {**job[settings], **options}, "variant": name, "out": str(out)}


def with_ablation(jobs: list[dict[str, Any]], name: str | None, part: str | None = None) -> list[dict[str, Any]]:
    """``jobs`` under the ablation ``name`` (all of them when it is None); continued SFT has no GRPO lever to
    take out and is left out. PPO jobs name their part by their observation kind."""
    if not name:
        return jobs
    return [ablated(job, part or f"ppo-{job['obs_mode']}", name) for job in jobs if job.get("reward") != "sft"]


def is_ablation(run: dict[str, Any]) -> bool:
    """Whether a run is one of the protocol's ablations (drawn dashed beside the protocol's arms); the
    ``adam`` experiment's variants are that experiment's own arms, not ablations."""
    return any(run.get("variant") in names for names in FULL["ablations"].values())


def adam_jobs(out: Path, budget: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """The format-loss question: sparse GRPO from the small format start, AdamW with and without skip_flat."""
    from benchmarks.learning_grpo import build_start, held_out

    adam = budget["adam"]
    start_dir = build_start(out, "format", "text", adam["model"], adam, adam["layout"])
    start_scores = held_out(start_dir, "text", adam["episodes"], layout=adam["layout"])
    print(f"adam: start scores {start_scores}", flush=True)
    return [
        {
            "kind": "grpo", "start": "format", "start_dir": str(start_dir), "start_scores": start_scores,
            "obs_mode": "text", "layout": adam["layout"], "reward": "sparse", "variant": variant, "seed": seed,
            "minutes": 0.0, "steps": adam["steps"], "save_every": adam["save_every"], "episodes": adam["episodes"],
            "settings": {**adam["grpo"], **options}, "out": str(out / f"adam-{variant}-{seed}"),
        }
        for seed in seeds
        for variant, options in adam["variants"].items()
    ]  # fmt: skip


def chances(parts: list[str], budget: dict[str, Any], task: str = "basic") -> dict[str, Any]:
    from benchmarks import learning_grpo, learning_ppo

    found = {}
    for mode in PPO_MODES:
        if f"ppo-{mode}" in parts:
            name = f"ppo/{mode}" + ("" if task == "basic" else f"/{task}")
            found[name] = learning_ppo.chance(mode, budget["ppo"]["episodes"], task=task)
            if mode != "image":  # the image observation holds no table to read
                found[f"{name}/visible"] = learning_ppo.chance(mode, budget["ppo"]["episodes"], "visible", task)
    if "ppo-interactive" in parts:
        found[f"ppo/interactive/{task}"] = learning_ppo.interactive_chance(budget["ppo"]["episodes"], task)
    for obs_mode in sorted({GRPO_PARTS[p][1] for p in parts if p in GRPO_PARTS}):
        found[f"grpo/{obs_mode}"] = learning_grpo.chance(obs_mode, budget["episodes"])
        found[f"grpo/{obs_mode}/visible"] = learning_grpo.chance(obs_mode, budget["episodes"], "visible")
    if "adam" in parts:
        found["adam/text"] = learning_grpo.chance("text", budget["adam"]["episodes"])
        found["adam/text/visible"] = learning_grpo.chance("text", budget["adam"]["episodes"], "visible")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=None, help=f"comma-separated: {', '.join(PARTS)} (default: all; "
                        "with --quick ppo-symbolic, adam)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 3; 1 with --quick)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (run seeds 1 and 2 of an arm "
                        "later with --first-seed 1 --seeds 2; the store merges them)")  # fmt: skip
    parser.add_argument("--arms", default=None, help="comma-separated rewards of the GRPO parts to run (default: "
                        "each part's arms; e.g. star,sft)")  # fmt: skip
    parser.add_argument("--ppo-rewards", default="star", help="comma-separated training rewards of the PPO parts "
                        f"(STAR's claim, issue 25: star,sparse,state,no_object_tier,no_attribute_tier); valid: "
                        f"{', '.join(PPO_REWARDS)}")  # fmt: skip
    parser.add_argument("--ppo-task", default="basic", choices=("basic", "event"), help="the PPO parts' task")
    ablations = sorted({name for names in FULL["ablations"].values() for name in names})
    parser.add_argument("--ablation", default=None, choices=ablations, help="run the arms with this lever of the "
                        "protocol taken out (default parts: those that have it); stored as its variant")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=None, help="training minutes per GRPO/SFT arm")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, < 5 minutes, results in OUT only")
    parser.add_argument("--out", default=None, help="work directory (default runs/learning or runs/learning-quick)")
    parser.add_argument("--json", default=None, help="results file (default benchmarks/results/learning.json)")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots and tables from the file")
    args = parser.parse_args()
    budget = {**(QUICK if args.quick else FULL)}
    having = [part for part in PARTS if args.ablation in FULL["ablations"].get(part, {})]
    default_parts = having if args.ablation else list(budget["parts"])
    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else default_parts
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; valid: {', '.join(PARTS)}")
    lacking = sorted(set(parts) - set(having))
    if args.ablation and lacking:
        parser.error(f"--ablation {args.ablation}: only for {', '.join(having)}, not {', '.join(lacking)}")
    if args.arms:
        wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
        known = {arm for part in GRPO_PARTS for arm in budget["arms"][part]}
        if set(wanted) - known:
            parser.error(f"--arms: unknown {', '.join(sorted(set(wanted) - known))}; valid: {', '.join(sorted(known))}")
        budget["arms"] = {part: tuple(a for a in arms if a in wanted) for part, arms in budget["arms"].items()}
    ppo_rewards = tuple(r.strip() for r in args.ppo_rewards.split(",") if r.strip())
    if not ppo_rewards or set(ppo_rewards) - set(PPO_REWARDS):
        parser.error(f"--ppo-rewards: expected some of {', '.join(PPO_REWARDS)}, got {args.ppo_rewards!r}")
    if args.minutes is not None:
        budget["minutes"] = {part: args.minutes for part in budget["minutes"]}
    count = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if count < 1 or args.first_seed < 0:
        parser.error("--seeds must be at least 1 and --first-seed at least 0")
    seeds = list(range(args.first_seed, args.first_seed + count))
    out = Path(args.out or ("runs/learning-quick" if args.quick else "runs/learning")).resolve()
    store_path = Path(args.json) if args.json else (out / "learning.json" if args.quick else RESULTS / "learning.json")
    figures = out if args.quick else RESULTS
    if args.replot:
        store = load(store_path)
        plot_all(store, figures)
        report(store)
        return

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    chance = chances(parts, budget, args.ppo_task)
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        # PPO runs start at once; the GRPO starts are built meanwhile (in this process), then their arms queue up
        made = ppo_jobs(out, parts, budget, seeds, ppo_rewards, args.ppo_task)
        futures = [pool.submit(_run, job) for job in with_ablation(made, args.ablation)]
        if "adam" in parts:
            futures += [pool.submit(_run, job) for job in adam_jobs(out, budget, seeds)]
        for part in GRPO_PARTS:
            if part in parts:
                made, finished = grpo_jobs(out, part, budget, seeds)
                for run in finished:
                    print(_line(run), flush=True)
                    save(store_path, [{**run, "quick": args.quick, "date": time.strftime("%Y-%m-%d")}], chance)
                futures += [pool.submit(_run, job) for job in with_ablation(made, args.ablation, part)]
        print(f"{len(futures)} runs, {args.workers} at a time", flush=True)
        for future in as_completed(futures):
            run = {**future.result(), "quick": args.quick, "date": time.strftime("%Y-%m-%d")}
            print(_line(run), flush=True)
            save(store_path, [run], chance)  # after every run: nothing finished is lost
    store = load(store_path)
    plot_all(store, figures)
    report(store)
    print(f"wall time {time.perf_counter() - t0:.0f} s; results {store_path}; plots in {figures}")


# ---------------------------------------------------------------------------- reading the results


def _line(run: dict[str, Any]) -> str:
    if run.get("env") == "interactive":
        return (
            f"{run['algo']} interactive {run['task']} {run['reward']} seed {run['seed']}: Success "
            f"{run['success'][0]:.3f} -> {run['success'][-1]:.3f}, return {run['return'][0]:.2f} -> "
            f"{run['return'][-1]:.2f}, turns {run['turns'][-1]:.2f} ({run['wall_s'][-1]:.0f} s of training)"
        )
    return (
        f"{run['algo']} {run['start']} {run['obs_mode']} {run['reward']} {run.get('variant', '')} seed {run['seed']}: "
        f"Acc {run['acc'][0]:.3f} -> {run['acc'][-1]:.3f}, ObjAcc {run['obj_acc'][0]:.3f} -> {run['obj_acc'][-1]:.3f}, "
        f"STAR {run['star'][0]:.2f} -> {run['star'][-1]:.2f} ({run['wall_s'][-1]:.0f} s of training)"
    )


def guess_of(chance_name: str) -> str:
    """The yardstick a ``chance`` entry holds: names ending in ``/visible`` are the visible-object guess."""
    return "visible-object guess" if chance_name.endswith("/visible") else "random agent"


def groups(store: dict[str, Any]) -> dict[tuple, list[dict[str, Any]]]:
    """Runs grouped by everything but the seed."""
    found: dict[tuple, list[dict[str, Any]]] = {}
    for run in store["runs"]:
        found.setdefault(key_of(run)[:-1], []).append(run)
    return found


def report(store: dict[str, Any]) -> None:
    """A Markdown table: start and final held-out scores per arm, mean and per seed."""
    head = ("algo", "start", "obs", "reward", "seeds", "Acc start", "Acc final (per seed)", "ObjAcc final",
            "STAR final", "Event Acc")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---:|---:|---|---:|---:|---:|")
    interactive = {}
    for (algo, task, start, obs, reward, variant, env), runs in sorted(groups(store).items()):
        if env == "interactive":
            interactive[(task, reward, variant)] = runs
            continue
        reward = f"{reward} ({variant})" if variant else reward
        reward += f" [{task}]" if task != "basic" else ""
        finals = [r["acc"][-1] for r in runs]
        event = [r["event"]["acc"] for r in runs if "event" in r]
        event_text = f"{np.mean(event):.3f}" if event else "–"
        print(
            f"| {algo} | {start} | {obs} | {reward} | {len(runs)} | {np.mean([r['acc'][0] for r in runs]):.3f} | "
            f"{np.mean(finals):.3f} ({', '.join(f'{v:.3f}' for v in finals)}) | "
            f"{np.mean([r['obj_acc'][-1] for r in runs]):.3f} | {np.mean([r['star'][-1] for r in runs]):.2f} | "
            f"{event_text} |"
        )
    if interactive:
        print()
        print("| interactive MaskablePPO | terminal | seeds | Success final (per seed) | steps to Success 0.9 | "
              "minutes | return | turns |")  # fmt: skip
        print("|---|---|---:|---|---|---:|---:|---:|")
    for (task, reward, variant), runs in sorted(interactive.items()):
        finals = [r["success"][-1] for r in runs]
        reached = [next((s for s, v in zip(r["steps"], r["success"]) if v >= 0.9), None) for r in runs]
        print(
            f"| {task}{f' ({variant})' if variant else ''} | {reward} | {len(runs)} | {np.mean(finals):.3f} "
            f"({', '.join(f'{v:.3f}' for v in finals)}) | {', '.join('–' if s is None else f'{s:,}' for s in reached)} "
            f"| {np.mean([r['wall_s'][-1] for r in runs]) / 60:.1f} | {np.mean([r['return'][-1] for r in runs]):.2f} "
            f"| {np.mean([r['turns'][-1] for r in runs]):.2f} |"
        )
    for name, values in sorted(store.get("chance", {}).items()):
        print(f"{guess_of(name)} ({name}): " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))


FIGURES = {
    "ppo": ("PPO from scratch on TVR-Basic", "steps", "environment steps", ("acc", "obj_acc", "star")),
    "sft": ("tiny Qwen2.5-VL from the SFT start, text TVR-Basic", "wall_s", "training minutes",
            ("acc", "obj_acc", "star")),
    "format": ("tiny Qwen2.5-VL from the format start, text TVR-Basic", "wall_s", "training minutes",
               ("acc", "obj_acc", "star")),
    "image": ("tiny Qwen2.5-VL on image TVR-Basic: SFT from random weights, then GRPO", "wall_s",
              "training minutes (SFT, then GRPO from its end)", ("acc", "obj_acc", "star")),
    "adam": ("sparse GRPO from the small format start: AdamW with and without skip_flat", "steps", "GRPO steps",
             ("star", "format", "obj_acc")),
    "ppo_rewards": ("symbolic PPO from scratch on TVR-Basic, one arm per training reward (STAR's claim)", "steps",
                    "environment steps", ("acc", "obj_acc", "star")),
    "ppo_rewards_event": ("symbolic PPO from scratch on TVR-Event, one arm per training reward (STAR's claim)",
                          "steps", "environment steps", ("acc", "obj_acc", "star")),
    "ppo_rewards_image_table": ("image-table PPO from scratch on TVR-Basic, one arm per training reward (STAR's "
                                "claim)", "steps", "environment steps", ("acc", "obj_acc", "star")),
    "ppo_interactive": ("MaskablePPO from scratch on TVR-Interactive-v0 (tvr-gym train ppo defaults)", "steps",
                        "environment steps (turns)", ("success", "return", "turns")),
}  # fmt: skip
"""Each figure: title, x axis (key, label) and the three held-out metrics drawn."""
TITLES = {"acc": "held-out TVR Acc", "obj_acc": "held-out ObjAcc", "star": "held-out STAR reward",
          "format": "held-out well-formed share", "success": "held-out Success", "return": "held-out return",
          "turns": "turns used"}  # fmt: skip
CHANCE = {"ppo": "ppo/", "sft": "grpo/text", "format": "grpo/text", "image": "grpo/image", "adam": "adam/",
          "ppo_rewards": "ppo/symbolic", "ppo_rewards_event": "ppo/symbolic/event",
          "ppo_rewards_image_table": "ppo/image-table", "ppo_interactive": "ppo/interactive"}  # fmt: skip
"""The chance levels a figure draws: those whose name starts with the value; a reward figure's exactly its own."""
REWARD_FIGURES = {("basic", "symbolic"): "ppo_rewards", ("event", "symbolic"): "ppo_rewards_event",
                  ("basic", "image-table"): "ppo_rewards_image_table"}  # fmt: skip
"""The figure of STAR's claim for each task and observation: its reward arms, and its ``star`` runs."""


def shows_chance(name: str, chance_name: str) -> bool:
    """Whether figure ``name`` draws the chance level stored as ``chance_name``."""
    if name in REWARD_FIGURES.values():
        return chance_name.removesuffix("/visible") == CHANCE[name]
    return chance_name.startswith(CHANCE[name])


def is_reward_arm(run: dict[str, Any]) -> bool:
    """A PPO run of STAR's claim: trained with another reward than ``star``, or on another task than Basic."""
    single_shot = run["algo"] == "ppo" and run.get("env") != "interactive"
    return single_shot and (run["reward"] != "star" or run.get("task", "basic") != "basic")


def reward_figure(run: dict[str, Any]) -> str | None:
    """The figure of STAR's claim for the run's task and observation, if there is one."""
    return REWARD_FIGURES.get((run.get("task", "basic"), run["obs_mode"]))


def in_figure(run: dict[str, Any], name: str) -> bool:
    """Whether ``run`` is drawn in figure ``name``: each run in one figure, except that the ``star`` runs of PPO
    on Basic (symbolic, image-table) are also the reference of their reward figure."""
    if name in REWARD_FIGURES.values():
        return figure_of(run) in ("ppo", name) and reward_figure(run) == name and not is_ablation(run)
    return figure_of(run) == name


def figure_of(run: dict[str, Any]) -> str:
    """Which figure of :data:`FIGURES` a run belongs to."""
    if run.get("env") == "interactive":
        return "ppo_interactive"
    if run["algo"] == "ppo":
        return (reward_figure(run) or "ppo") if is_reward_arm(run) else "ppo"
    if run["obs_mode"] == "image":
        return "image"
    return "adam" if run.get("variant") in FULL["adam"]["variants"] else run["start"]


def plot_all(store: dict[str, Any], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    for name in FIGURES:
        if any(figure_of(r) == name for r in store["runs"]):
            _plot(store, name, folder / f"learning_{name}.png")


def hues(chosen: dict[tuple, list[dict[str, Any]]]) -> dict[tuple, int]:
    """A color number for each group of runs (:func:`groups`): an ablation takes its arm's color (it is
    told apart by a dashed line), every other group has one of its own."""
    at = KEY.index("variant")
    arm_of = {key: (key[:at] + key[at + 1 :], "" if is_ablation(runs[0]) else key[at]) for key, runs in chosen.items()}
    arms = sorted(set(arm_of.values()))
    return {key: arms.index(arm) for key, arm in arm_of.items()}


def _plot(store: dict[str, Any], name: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    title, x_key, x_label, metrics = FIGURES[name]
    chosen = {k: v for k, v in groups(store).items() if in_figure(v[0], name)}
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.4))
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    # in the image figure the SFT start's own curve comes first, and the arms from it continue where it ends
    sft_end = max((r["wall_s"][-1] for r in store["runs"] if figure_of(r) == name and r["start"] == "scratch"),
                  default=0.0) if name == "image" else 0.0  # fmt: skip
    hue = hues(chosen)
    for group, runs in sorted(chosen.items()):
        algo, task, start, obs, reward, variant, _env = group
        n = hue[group]
        label = f"{obs} obs" if algo == "ppo" else ("continued SFT" if reward == "sft" else f"GRPO {reward}")
        label = f"{task}, reward {reward}" if name in REWARD_FIGURES.values() else label
        label = f"interactive {task}, terminal {reward}" if name == "ppo_interactive" else label
        label = "SFT from random weights" if start == "scratch" and algo == "sft" else label
        label += (f" ({variant})" if variant else "") + (f" ({len(runs)} seeds)" if len(runs) > 1 else " (1 seed)")
        offset = sft_end if start == "sft" else 0.0
        style = "--" if is_ablation(runs[0]) else "-"  # an ablation, drawn thin beside the protocol
        for ax, key in zip(axes, metrics):
            for i, run in enumerate(runs):
                x = (np.array(run[x_key], dtype=float) + offset) / (60.0 if x_key == "wall_s" else 1.0)
                ax.plot(x, run[key], color=colors[n % len(colors)], alpha=0.85, marker="o", markersize=3,
                        linestyle=style, linewidth=0.8 if style == "--" else 1.5,
                        label=label if i == 0 else None)  # fmt: skip
    for ax, key in zip(axes, metrics):
        lines: dict[tuple[str, float], list[str]] = {}  # one line per guess and value, naming every source
        for chance_name, values in sorted(store.get("chance", {}).items()):
            if shows_chance(name, chance_name) and key in values:
                source = chance_name.removesuffix("/visible")
                lines.setdefault((guess_of(chance_name), round(values[key], 6)), []).append(source)
        for (guess, value), sources in lines.items():
            ax.axhline(value, color="black", linestyle=":" if guess != "random agent" else "--", linewidth=1,
                       label=f"{guess} ({', '.join(sources)})")  # fmt: skip
        ax.set(title=TITLES[key], xlabel=x_label)
        ax.grid(alpha=0.3)
        if key == "star" and name == "image":  # the random-weight model's unreadable answers sit far below
            low = min(v for r in store["runs"] if figure_of(r) == name for v in r[key])
            ax.set_ylim(bottom=-1.0)
            ax.set_title(f"{TITLES[key]} (random weights: {low:.1f}, off the axis)")
    handles, labels = axes[0].get_legend_handles_labels()
    rows = -(-len(labels) // 4)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{title}: held-out episodes, greedy answers (one line per seed)")
    fig.tight_layout(rect=(0, 0.035 * rows + 0.02, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
