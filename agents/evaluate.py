"""Run any agent on any registered TVR environment for N seeded episodes (episode i uses seed + i)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import tvr_gym  # noqa: F401  (registers the environment ids)
from agents.base import act_batch
from tvr_gym.atomic import atomic_write_text
from tvr_gym.registration import check_env_id


@dataclass
class EvalResult:
    """Per-episode ``records`` and their ``summary`` (:func:`tvr_gym.metrics.summarize`)."""

    records: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``summary.json`` and ``episodes.jsonl`` into ``out_dir`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = atomic_write_text(out / "summary.json", json.dumps(self.summary, indent=2, default=_jsonable) + "\n")
        lines = (json.dumps(r, default=_jsonable) + "\n" for r in self.records)
        episodes = atomic_write_text(out / "episodes.jsonl", lines)
        return summary, episodes


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def summary_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records in the form :func:`tvr_gym.metrics.summarize` reads: metrics plus n_steps, final_view, reward."""
    return [
        {**r["metrics"], "n_steps": r["n_steps"], "final_view": r["final_view"], "reward": r["reward"]}
        for r in records
    ]


def evaluate(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    batch_size: int = 1,
) -> EvalResult:
    """Evaluate ``agent`` on ``episodes`` episodes of ``env_id``; episode ``i`` is ``reset(seed=seed + i)``.

    ``batch_size`` episodes are reset together and answered with one ``act_batch`` call. Agents
    with ``privileged = True`` receive each reset ``info`` through ``observe_privileged`` first.
    """
    from tvr_gym.metrics import summarize

    if not isinstance(episodes, int) or episodes < 0:
        raise ValueError(f"episodes: expected an integer >= 0, got {episodes!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    check_env_id(env_id)
    envs = [gym.make(env_id, **dict(env_kwargs or {})) for _ in range(min(batch_size, max(episodes, 1)))]
    privileged = bool(getattr(agent, "privileged", False))
    records: list[dict[str, Any]] = []
    bar = _progress(progress, episodes, f"{getattr(agent, 'name', type(agent).__name__)} on {env_id}")
    try:
        for start in range(0, episodes, len(envs)):
            batch = list(range(start, min(start + len(envs), episodes)))
            observations, infos = [], []
            for env, i in zip(envs, batch):
                obs, info = env.reset(seed=seed + i)
                observations.append(obs)
                infos.append(info)
                if privileged:
                    agent.observe_privileged(info)
            answers = act_batch(agent, observations)
            for env, i, answer, info in zip(envs, batch, answers, infos):
                _, reward, _, _, step_info = env.step(answer)
                records.append(
                    {
                        "seed": seed + i,
                        "n_steps": len(info["problem"]["transformations"]),
                        "final_view": info["final_view"],
                        "answer": answer if isinstance(answer, str) else repr(answer),
                        "truth": info["truth"],
                        "reward": float(reward),
                        "reward_terms": step_info["reward_terms"],
                        "metrics": step_info["metrics"],
                    }
                )
            if bar is not None:
                bar[0].advance(bar[1], len(batch))
    finally:
        if bar is not None:
            bar[0].stop()
        for env in envs:
            env.close()
    return EvalResult(records, summarize(summary_records(records)))


def _progress(enabled: bool, total: int, label: str):
    """A started rich progress bar and its task id, or ``None``."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task(label, total=total)
    bar.start()
    return bar, task
