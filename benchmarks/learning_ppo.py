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


def _curve_callback(
    settings_box: dict, every: int, episodes: int, render_size: tuple[int, int], curve: dict, env_id: str = ENV_ID
):
    """An SB3 callback that fills ``curve`` (lists per key) at step 0, after the first update past each
    multiple of ``every`` steps, and at the end."""
    from stable_baselines3.common.callbacks import BaseCallback

    from tvr_gym.agents.ppo import PPOAgent, PPOSettings

    class HeldOutCurve(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()
            self.paused = 0.0
            self.next = 0
            self._record()

        def _record(self) -> None:
            wall = time.perf_counter() - self.start - self.paused
            t0 = time.perf_counter()
            settings = PPOSettings.from_file(settings_box["path"])
            scores = held_out(PPOAgent(self.model, settings), episodes, render_size, env_id)
            self.paused += time.perf_counter() - t0
            curve.setdefault("steps", []).append(int(self.num_timesteps))
            curve.setdefault("wall_s", []).append(round(wall, 2))
            for key, value in scores.items():
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


def chance(obs_mode: str, episodes: int, guess: str = "random", task: str = "basic") -> dict[str, float]:
    """A one-item guess (:func:`one_item_guess`) on the same held-out episodes; ``visible`` reads the initial
    table, which the symbolic and image-table observations hold."""
    size = (16, 12) if obs_mode == "symbolic" else IMAGE_SIZE
    return held_out(one_item_guess(guess), episodes, size, TASK_ENVS[task])
