"""PPO learning curves for ``benchmarks.learning``: SB3 PPO on TVR-Basic, symbolic, image and image-table observations.

Each run trains with :func:`tvr_gym.agents.ppo.train_ppo` (the ``tvr-gym train ppo`` recipe for its
observation kind unless a setting overrides it) and, every ``eval_every`` steps, answers the same
held-out episodes greedily (reset seeds from :data:`HELD_OUT_SEED`, never used for training: the training
environments are seeded from ``seed`` upwards). The time spent evaluating is not counted in ``wall_s``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tvr_gym.agents.mllm.grpo import EVAL_SEED_BASE

HELD_OUT_SEED = EVAL_SEED_BASE
"""The first held-out reset seed (the same base as the GRPO runs'); training envs use seeds ``seed + i``."""
ENV_ID = "TVR-Basic-v0"
TASK_ENVS = {"basic": "TVR-Basic-v0", "event": "TVR-Event-v0"}
"""The single-shot environment of each ``task`` a PPO run learns."""
IMAGE_SIZE = (64, 48)
"""Image runs render at 64x48: 2.7x faster per step than TRANCE's 160x120, and the objects stay visible."""


def held_out(agent: Any, episodes: int, render_size: tuple[int, int], env_id: str = ENV_ID) -> dict[str, float]:
    """Greedy answers of ``agent`` on the held-out episodes: TVR Acc, Basic Obj/Attr/ValAcc, STAR reward (the
    STAR reward whatever reward the run trained with, so arms compare)."""
    from tvr_gym.agents.evaluate import evaluate

    result = evaluate(agent, env_id, episodes, seed=HELD_OUT_SEED, env_kwargs={"render_size": render_size},
                      progress=False, batch_size=50)  # fmt: skip
    return summary_scores(result.summary)


def summary_scores(summary: dict[str, Any]) -> dict[str, float]:
    """The curve keys of ``learning.json`` from an evaluator summary (:func:`tvr_gym.core.metrics.summarize`)."""
    overall, basic = summary["overall"], summary["basic"]
    return {
        "acc": overall["Acc"], "obj_acc": basic["ObjAcc"], "attr_acc": basic["AttrAcc"], "val_acc": basic["ValAcc"],
        "star": overall["reward"],
    }  # fmt: skip


def held_out_interactive(agent: Any, episodes: int, setting: str) -> dict[str, float]:
    """Greedy episodes of an :class:`~tvr_gym.agents.ppo.InteractivePPOAgent` on the held-out problems of
    ``setting``: Success, the return, the turns, % Misplaced, % Fixed-Strict, and TVR Acc and Basic
    Obj/Attr/ValAcc of the net changes (as a single-shot answer's, so they compare)."""
    from tvr_gym.core.metrics import summarize

    result = agent.evaluate(episodes, seed=HELD_OUT_SEED, setting=setting)
    means, tables = result["summary"], summarize([r["metrics"] for r in result["records"]])
    overall, basic = tables["overall"], tables["basic"]
    return {
        "success": means["success"], "return": means["reward"], "turns": means["turns"],
        "misplaced": means["misplaced"], "fixed_strict": means["fixed_strict"], "acc": overall["Acc"],
        "obj_acc": basic["ObjAcc"], "attr_acc": basic["AttrAcc"], "val_acc": basic["ValAcc"],
    }  # fmt: skip


def _curve_callback(
    settings_box: dict, every: int, episodes: int, render_size: tuple[int, int], curve: dict, env_id: str = ENV_ID
):
    """An SB3 callback that fills ``curve`` (lists per key) at step 0, after the first update past each
    multiple of ``every`` steps, and at the end. On ``TVR-Interactive-v0`` (``env_id``) the agent plays the
    held-out episodes of its setting (:func:`held_out_interactive`)."""
    from stable_baselines3.common.callbacks import BaseCallback

    from tvr_gym.agents.ppo import InteractivePPOAgent, PPOAgent, PPOSettings
    from tvr_gym.envs.registration import INTERACTIVE_ID

    def scores(model: Any, settings: PPOSettings) -> dict[str, float]:
        if env_id == INTERACTIVE_ID:
            return held_out_interactive(InteractivePPOAgent(model, settings), episodes, settings.env_kwargs["setting"])
        return held_out(PPOAgent(model, settings), episodes, render_size, env_id)

    class HeldOutCurve(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()
            self.paused = 0.0
            self.next = 0
            self._record()

        def _record(self) -> None:
            wall = time.perf_counter() - self.start - self.paused
            t0 = time.perf_counter()
            found = scores(self.model, PPOSettings.from_file(settings_box["path"]))
            self.paused += time.perf_counter() - t0
            curve.setdefault("steps", []).append(int(self.num_timesteps))
            curve.setdefault("wall_s", []).append(round(wall, 2))
            for key, value in found.items():
                curve.setdefault(key, []).append(value)
            self.next += every

        def _on_rollout_start(self) -> None:  # after each update: the policy of these steps
            if self.num_timesteps >= self.next:
                self._record()

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            if curve["steps"][-1] != self.num_timesteps:
                self._record()

    return HeldOutCurve()


def run(job: dict[str, Any]) -> dict[str, Any]:
    """One PPO run (a ``job`` from :func:`jobs`), returned as a ``learning.json`` record."""
    from tvr_gym.agents.ppo import SETTINGS_FILE, train_ppo

    out = Path(job["out"])
    render_size = tuple(job["render_size"])
    curve: dict[str, list] = {}
    task, reward = job.get("task", "basic"), job.get("reward", "star")
    env_id = TASK_ENVS[task]
    callback = _curve_callback({"path": out / SETTINGS_FILE}, job["eval_every"], job["episodes"], render_size, curve,
                               env_id)  # fmt: skip
    t0 = time.perf_counter()
    train_ppo(env_id, job["timesteps"], out, seed=job["seed"], obs=job["obs_mode"], render_size=render_size,
              checkpoint_every=0, callbacks=[callback], env_kwargs={"reward": reward}, **job["ppo_kwargs"])  # fmt: skip
    return {
        "algo": "ppo", "task": task, "start": "scratch", "obs_mode": job["obs_mode"], "reward": reward,
        "seed": job["seed"], **curve, "settings": job["ppo_kwargs"], "variant": job.get("variant", ""),
        "total_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def run_interactive(job: dict[str, Any]) -> dict[str, Any]:
    """One MaskablePPO run on ``TVR-Interactive-v0`` with ``tvr-gym train ppo``'s defaults (the job's ``task``
    is the setting), returned as a ``learning.json`` record with ``"env": "interactive"``: the curves of
    :func:`held_out_interactive`; ``reward`` names the terminal reward."""
    from tvr_gym.agents.ppo import SETTINGS_FILE, train_ppo
    from tvr_gym.envs.registration import INTERACTIVE_ID

    out = Path(job["out"])
    curve: dict[str, list] = {}
    callback = _curve_callback({"path": out / SETTINGS_FILE}, job["eval_every"], job["episodes"], (0, 0), curve,
                               INTERACTIVE_ID)  # fmt: skip
    t0 = time.perf_counter()
    agent = train_ppo(INTERACTIVE_ID, job["timesteps"], out, seed=job["seed"], checkpoint_every=0, callbacks=[callback],
                      env_kwargs={"setting": job["task"]}, **job["ppo_kwargs"])  # fmt: skip
    env = agent.make_env()
    terminal = env.unwrapped.terminal_name
    env.close()
    return {
        "algo": "ppo", "env": "interactive", "task": job["task"], "start": "scratch", "obs_mode": "symbolic",
        "reward": terminal, "seed": job["seed"], **curve,
        "settings": job["ppo_kwargs"], "variant": job.get("variant", ""), "total_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def interactive_jobs(
    out: Path, seeds: list[int], timesteps: int, episodes: int, task: str, overrides: dict[str, Any] | None = None
) -> list[dict]:
    """The runs of the interactive PPO part: one per seed on interactive ``task``, ten curve points each."""
    return [{
        "interactive": True, "task": task, "seed": seed, "timesteps": timesteps, "eval_every": max(timesteps // 10, 1),
        "episodes": episodes, "out": str(out / f"ppo-interactive-{task}-{seed}"), "ppo_kwargs": dict(overrides or {}),
    } for seed in seeds]  # fmt: skip


def jobs(
    out: Path,
    obs_modes: list[str],
    seeds: list[int],
    timesteps: dict[str, int],
    episodes: int,
    overrides: dict[str, Any] | None = None,
    rewards: tuple[str, ...] = ("star",),
    task: str = "basic",
) -> list[dict]:
    """The runs of the PPO part: the ``seeds`` per observation kind and training reward, ten curve points each;
    ``overrides`` change ``train_ppo``'s defaults (none in the full run). ``task`` ``event`` learns
    TVR-Event-v0 (run directories and stored runs say so)."""
    from tvr_gym.agents.ppo import DEFAULT_RENDER_SIZE

    made = []
    for obs_mode in obs_modes:
        size = DEFAULT_RENDER_SIZE[obs_mode] if obs_mode == "symbolic" else IMAGE_SIZE
        steps = timesteps[obs_mode]
        for reward in rewards:
            name = f"ppo-{obs_mode}" + ("" if reward == "star" else f"-{reward}")
            name += "" if task == "basic" else f"-{task}"
            for seed in seeds:
                made.append({
                    "obs_mode": obs_mode, "seed": seed, "timesteps": steps, "eval_every": max(steps // 10, 1),
                    "episodes": episodes, "render_size": list(size), "out": str(out / f"{name}-{seed}"),
                    "ppo_kwargs": dict(overrides or {}), "reward": reward, "task": task,
                })  # fmt: skip
    return made


GUESSES = ("random", "visible")
"""The yardsticks: one random item on any object, or on an object the initial table shows."""


def one_item_guess(guess: str) -> Any:
    """The agent of a :data:`GUESSES` yardstick: ``RandomAgent`` or ``VisibleGuessAgent``, one item, seed 0."""
    from tvr_gym.agents.baselines import RandomAgent, VisibleGuessAgent

    return {"random": RandomAgent, "visible": VisibleGuessAgent}[guess](seed=0, max_items=1)


def interactive_chance(episodes: int, task: str) -> dict[str, float]:
    """The masked random policy (a uniform legal step or ``done`` each turn) on the held-out interactive episodes."""
    from tvr_gym.envs.interactive_sb3 import MaskedRandomPolicy, make_interactive_sb3_env, play_episode

    env = make_interactive_sb3_env(setting=task)
    policy = MaskedRandomPolicy(0)
    try:
        records = [play_episode(env, policy, seed=HELD_OUT_SEED + i) for i in range(episodes)]
    finally:
        env.close()
    return {
        "success": float(sum(r["interactive"]["success"] for r in records) / episodes),
        "return": float(sum(r["reward"] for r in records) / episodes),
        "turns": float(sum(r["interactive"]["turns"] for r in records) / episodes),
    }


def chance(obs_mode: str, episodes: int, guess: str = "random", task: str = "basic") -> dict[str, float]:
    """A one-item guess (:func:`one_item_guess`) on the same held-out episodes; ``visible`` reads the initial
    table, which the symbolic and image-table observations hold."""
    size = (16, 12) if obs_mode == "symbolic" else IMAGE_SIZE
    return held_out(one_item_guess(guess), episodes, size, TASK_ENVS[task])
