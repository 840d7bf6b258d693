"""Run any agent on any registered TVR environment for N seeded episodes (episode i uses seed + i).

With ``out``, every finished episode is appended to ``out/episodes.jsonl`` as it ends (a crash or Ctrl-C
loses at most the batch in flight), and ``resume=True`` skips the episodes already there, so an eval of
a large model that takes hours can be interrupted and continued; the summary is always rebuilt from
the records of the file. ``max_tokens`` caps the tokens a model agent generates per answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import tvr_gym  # noqa: F401  (registers the environment ids)
from tvr_gym.agents.base import act_batch
from tvr_gym.core.atomic import Journal, atomic_write_text, check_writable
from tvr_gym.core.metrics import summarize
from tvr_gym.core.options import check_int
from tvr_gym.envs.registration import INTERACTIVE_ID, check_env_id

EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "eval.json"
TOKEN_CAPS = ("max_tokens", "max_new_tokens")
"""The attribute that caps a model agent's answer length: ``openai:`` agents' ``max_tokens`` (the request's),
``mllm:`` agents' ``max_new_tokens`` (``generate``'s)."""


@dataclass
class EvalResult:
    """Per-episode ``records`` (sorted by seed) and their ``summary`` (:func:`tvr_gym.core.metrics.summarize`)."""

    records: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``summary.json`` and ``episodes.jsonl`` into ``out_dir`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = atomic_write_text(out / SUMMARY_FILE, json.dumps(self.summary, indent=2, default=_jsonable) + "\n")
        lines = (json.dumps(r, default=_jsonable) + "\n" for r in self.records)
        episodes = atomic_write_text(out / EPISODES_FILE, lines)
        return summary, episodes


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def summary_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records in the form :func:`tvr_gym.core.metrics.summarize` reads: metrics plus n_steps, final_view, reward."""
    return [
        {**r["metrics"], "n_steps": r["n_steps"], "final_view": r["final_view"], "reward": r["reward"]}
        for r in records
    ]


def _open_log(out: Path, manifest: dict[str, Any], resume: bool) -> tuple[Journal, dict[int, dict[str, Any]]]:
    """The episode log of ``out`` and, with ``resume``, the records already in it (by seed)."""
    check_writable(out)
    journal = Journal(out / EPISODES_FILE)
    described = out / MANIFEST_FILE
    if not resume:
        journal.clear()
        atomic_write_text(described, json.dumps(manifest, indent=1) + "\n")
        return journal, {}
    if described.is_file():
        found = json.loads(described.read_text(encoding="utf-8"))
        if found != manifest:
            keys = sorted(k for k in {*found, *manifest} if found.get(k) != manifest.get(k))
            diff = "; ".join(f"{k}: {found.get(k)!r} there, {manifest.get(k)!r} now" for k in keys)
            raise ValueError(f"resume: {out} holds another evaluation ({diff}); use another --out")
    else:
        atomic_write_text(described, json.dumps(manifest, indent=1) + "\n")
    done = {}
    for line in journal.read():
        record = json.loads(line)
        done[int(record["seed"])] = record
    return journal, done


def evaluate(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    batch_size: int = 1,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    max_tokens: int | None = None,
) -> EvalResult:
    """Evaluate ``agent`` on ``episodes`` episodes of ``env_id``; episode ``i`` is ``reset(seed=seed + i)``.

    ``batch_size`` episodes are reset together and answered with one ``act_batch`` call. Agents
    with ``privileged = True`` receive each reset ``info`` through ``observe_privileged`` first. An
    agent with an ``obs_mode`` or ``prompt_layout`` attribute (e.g. a trained MLLM policy) sets the
    environment's observation mode or prompt layout unless ``env_kwargs`` does. With ``out``, episodes stream to
    ``out/episodes.jsonl`` and the summary is written to ``out/summary.json``; ``resume`` continues
    an interrupted run of the same agent, environment and seed. ``max_tokens`` caps the generated tokens
    per answer for this run (:func:`token_cap`; ``None``: the agent's own cap). A served model left
    uncapped can write its whole default budget (1,024 tokens for ``openai:``) on every episode.
    """
    check_int("episodes", episodes, 0)
    check_int("batch_size", batch_size, 1)
    check_env_id(env_id)
    if max_tokens is not None:
        _cap_attribute(agent, max_tokens)  # a bad cap fails before any environment is built
    if env_id == INTERACTIVE_ID:
        raise ValueError(
            f"{env_id} is multi-turn, and this evaluator answers single-shot problems: evaluate chat policies with "
            "tvr_gym.agents.interactive.evaluate_interactive, MaskablePPO with InteractivePPOAgent.evaluate"
        )
    env_kwargs = dict(env_kwargs or {})
    for key in ("obs_mode", "prompt_layout"):  # what the agent was trained to read, unless the caller says
        if key not in env_kwargs and getattr(agent, key, None) is not None:
            env_kwargs[key] = getattr(agent, key)
    name = str(getattr(agent, "name", type(agent).__name__))
    journal, done = None, {}
    if out is not None:
        kwargs = json.loads(json.dumps(env_kwargs, default=list))
        manifest = {"agent": name, "env": env_id, "seed": seed, "env_kwargs": kwargs}
        if max_tokens is not None:  # another cap gives other answers: resuming under it would mix them
            manifest["max_tokens"] = max_tokens
        journal, done = _open_log(Path(out), manifest, resume)
    todo = [i for i in range(episodes) if seed + i not in done]
    envs = [gym.make(env_id, **env_kwargs) for _ in range(min(batch_size, max(len(todo), 1)))]
    privileged = bool(getattr(agent, "privileged", False))
    records = dict(done)  # a resumed file keeps every record it holds
    bar = _progress(progress, episodes, f"{name} on {env_id}", len(records))
    try:
        with token_cap(agent, max_tokens):
            for start in range(0, len(todo), len(envs)):
                batch = todo[start : start + len(envs)]
                observations, infos = [], []
                for env, i in zip(envs, batch):
                    obs, info = env.reset(seed=seed + i)
                    observations.append(obs)
                    infos.append(info)
                    if privileged:
                        agent.observe_privileged(info)
                answers = act_batch(agent, observations)
                finished = []
                for env, i, answer, info in zip(envs, batch, answers, infos):
                    _, reward, _, _, step_info = env.step(answer)
                    finished.append(
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
                if journal is not None:
                    journal.append(json.dumps(r, default=_jsonable) for r in finished)
                records.update((r["seed"], r) for r in finished)
                if bar is not None:
                    bar[0].advance(bar[1], len(batch))
    finally:
        if bar is not None:
            bar[0].stop()
        for env in envs:
            env.close()
    ordered = [records[s] for s in sorted(records)]
    result = EvalResult(ordered, summarize(summary_records(ordered)))
    if out is not None:
        result.save(out)  # sorted by seed, and the summary of every record in the file
    return result


def _cap_attribute(agent: Any, max_tokens: int) -> str:
    """The :data:`TOKEN_CAPS` attribute of ``agent``, once ``max_tokens`` is checked."""
    check_int("max_tokens", max_tokens, 1)
    attr = next((a for a in TOKEN_CAPS if hasattr(agent, a)), None)
    if attr is None:
        name = getattr(agent, "name", type(agent).__name__)
        raise ValueError(f"max_tokens: {name} generates no tokens; the cap is for mllm: and openai: agents")
    return attr


@contextmanager
def token_cap(agent: Any, max_tokens: int | None) -> Iterator[Any]:
    """``agent`` generating at most ``max_tokens`` tokens per answer inside the block, its own cap after.

    ``None`` leaves the agent as it is. An agent without a cap (:data:`TOKEN_CAPS`), e.g. a baseline,
    is an error rather than silently uncapped.
    """
    if max_tokens is None:
        yield agent
        return
    attr = _cap_attribute(agent, max_tokens)
    before = getattr(agent, attr)
    setattr(agent, attr, int(max_tokens))
    try:
        yield agent
    finally:
        setattr(agent, attr, before)


def _progress(enabled: bool, total: int, label: str, completed: int = 0):
    """A started rich progress bar and its task id, or ``None``."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task(label, total=total, completed=completed)
    bar.start()
    return bar, task
