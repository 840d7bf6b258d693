"""Run any agent on any single-shot TVR environment for N seeded episodes (episode i uses seed + i).

With ``out``, every finished episode is appended to ``out/episodes.jsonl`` as it ends (a crash, Ctrl-C,
SIGTERM or ``kill -9`` loses at most the batch in flight), and running the same evaluation into the same
directory again continues it: an eval of a large model that takes hours can be stopped and continued,
and its finished episodes are never run again or lost. ``out`` is locked while an evaluation runs in
it, and one holding another evaluation is refused unless it is overwritten explicitly (:class:`EvalDir`).
``max_tokens`` caps the tokens a model agent generates per answer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import tvr_gym  # noqa: F401  (registers the environment ids)
from tvr_gym.agents.base import act_batch
from tvr_gym.agents.interactive import INTERACTIVE_KEYS, interactive_means, play_chats, play_tables
from tvr_gym.core.atomic import Journal, atomic_write_text, check_writable
from tvr_gym.core.chat import DEFAULT_WINDOW, ImageBudget
from tvr_gym.core.metrics import summarize
from tvr_gym.core.options import check_int, is_int
from tvr_gym.envs.base import check_env_kwargs, tvr_env_class
from tvr_gym.envs.registration import ENV_IDS, INTERACTIVE_ID, check_env_id

EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "eval.json"
LOCK_FILE = ".eval.lock"
"""Held (``flock``) by the process evaluating into the directory; it holds that process's id."""
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


class EvalDirError(ValueError):
    """``out`` cannot take this evaluation: in use, another evaluation's, or holding a damaged journal."""


def _answers_like_tvr(env_id: str) -> bool:
    """Whether another registered environment (a user's TVR variant) has the single-shot TVR interface."""
    try:
        env = gym.make(env_id)
    except Exception:  # noqa: BLE001 - an environment that cannot be built cannot be evaluated
        return False
    try:
        obs, action = env.observation_space, env.action_space
        keys = set(obs.spaces) if isinstance(obs, gym.spaces.Dict) else set()
        return {"initial", "final", "prompt"} <= keys and isinstance(action, gym.spaces.Text)
    finally:
        env.close()


_NAMES = "|".join(re.escape(name) for name in (MANIFEST_FILE, EPISODES_FILE, SUMMARY_FILE))
_STALE = re.compile(rf"\.(?:{_NAMES})\.\w{{8}}\.tmp")
"""The temporaries an atomic write of this directory's files makes (``.NAME.XXXXXXXX.tmp``)."""


def _remove_stale_temporaries(path: Path) -> None:
    for entry in path.iterdir():
        if _STALE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def check_eval_env(env_id: object) -> str:
    """``env_id`` when :func:`evaluate` can run it (a single-shot TVR environment, or ``TVR-Interactive-v0``),
    else ``ValueError``."""
    check_env_id(env_id)
    if env_id not in ENV_IDS and env_id != INTERACTIVE_ID and not _answers_like_tvr(env_id):
        raise ValueError(
            f"env: {env_id!r} is not a single-shot TVR environment (observations with initial, final and prompt, "
            f"a text action); the registered ones: {', '.join(ENV_IDS)}, and {INTERACTIVE_ID}"
        )
    return str(env_id)


JOURNAL_HINT = "fix or delete that line (its episode then runs again), or add --overwrite to start over"
_RECORD_FIELDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("n_steps", (int,)), ("final_view", (str, type(None))), ("reward", (int, float)), ("metrics", (dict,)),
)  # fmt: skip
"""What :func:`summary_records` reads from a journal record besides its ``seed``, and the JSON types it takes."""


def _check_record(where: str, record: Any, first_seed: int, interactive: bool = False) -> dict[str, Any]:
    """``record`` (a decoded journal line) when it is an episode record; :class:`EvalDirError` naming ``where``."""
    if not isinstance(record, dict):
        raise EvalDirError(f"{where}: expected a JSON object, got {type(record).__name__}")
    seed = record.get("seed")
    if not is_int(seed) or seed < first_seed:
        raise EvalDirError(f"{where}: expected a seed, an integer >= {first_seed} (the evaluation's), got {seed!r}")
    for key, types in _RECORD_FIELDS:
        value = record.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise EvalDirError(f"{where}: {key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if interactive:  # what interactive_means reads
        scores = record.get("interactive")
        bad = not isinstance(scores, dict) or any(
            not isinstance(scores.get(k), (int, float)) or isinstance(scores.get(k), bool) for k in INTERACTIVE_KEYS
        )
        if bad:
            raise EvalDirError(f"{where}: interactive: expected numbers {', '.join(INTERACTIVE_KEYS)}, got {scores!r}")
    return record


def read_journal(
    path: str | os.PathLike[str], first_seed: int = 0, interactive: bool = False
) -> dict[int, dict[str, Any]]:
    """The records of an ``episodes.jsonl`` by seed; :class:`EvalDirError` naming ``file:line`` for a bad line.
    ``interactive``: the records of a ``TVR-Interactive-v0`` evaluation, which also hold their ``interactive`` scores.

    Every line must be a record with a ``seed >= first_seed`` (each seed once); blank lines are skipped. A
    last line without its newline is a write cut short by a kill: when it is not JSON (torn) it is cut off
    the file and its episode runs again; when it is whole, it is checked like any line and its newline added.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    *lines, tail = raw.split(b"\n")
    records: dict[int, dict[str, Any]] = {}
    where_seed: dict[int, int] = {}

    def add(number: int, value: Any) -> None:
        where = f"{path}:{number}"
        try:
            record = _check_record(where, value, first_seed, interactive)
            seed = int(record["seed"])
            if seed in where_seed:
                raise EvalDirError(f"{where}: seed {seed} is also on line {where_seed[seed]}")
        except EvalDirError as exc:
            raise EvalDirError(f"{exc}; {JOURNAL_HINT}") from None
        records[seed], where_seed[seed] = record, number

    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                value = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise EvalDirError(f"{path}:{number}: not a JSON record ({exc}); {JOURNAL_HINT}") from None
            add(number, value)
    if tail.strip():
        try:
            value = json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):  # torn by a kill: cut it off, its episode runs again
            with path.open("r+b") as fh:
                fh.truncate(len(raw) - len(tail))
        else:
            add(len(lines) + 1, value)
            with path.open("ab") as fh:
                fh.write(b"\n")
    return records


def _lock(out: Path) -> int:
    """An open descriptor of ``out``'s lock file, exclusively ``flock``-ed (the kernel releases it when the
    process ends, however it ends); :class:`EvalDirError` when another process holds it."""
    import fcntl

    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "?"
        os.close(fd)
        raise EvalDirError(
            f"--out: {out} is in use by another evaluation (process {holder}); wait for it to end, or use another --out"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise EvalDirError(f"--out: cannot lock {out / LOCK_FILE} ({exc.strerror or exc})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _held_episodes(journal: Path) -> int:
    """Complete lines of a journal, counted without reading them as records."""
    return journal.read_bytes().count(b"\n") if journal.is_file() else 0


class EvalDir:
    """The ``out`` directory of one evaluation, held under its lock: ``eval.json`` (what is evaluated),
    ``episodes.jsonl`` (the journal of finished episodes) and, at the end, ``summary.json``.

    :meth:`open` decides what happens to what ``out`` holds: the journal of the same evaluation is
    continued; that of another evaluation is refused unless ``overwrite``; a directory without either
    starts one.
    """

    def __init__(self, path: Path, records: dict[int, dict[str, Any]]) -> None:
        self.path = path
        self.records = records
        """Every record of the journal, by seed (those of this run are added as they finish)."""
        self.journal = Journal(path / EPISODES_FILE)

    @classmethod
    @contextmanager
    def open(
        cls, out: str | os.PathLike[str], manifest: Mapping[str, Any], overwrite: bool = False
    ) -> Iterator[EvalDir]:
        """``out`` locked for this evaluation (``manifest``: what is evaluated) until the block ends."""
        path = check_writable(out)
        fd = _lock(path)
        try:
            yield cls(path, cls._take(path, dict(manifest), overwrite))
        finally:
            os.close(fd)  # releases the lock; the lock file stays (removing it would race with the next run)

    @staticmethod
    def _take(path: Path, manifest: dict[str, Any], overwrite: bool) -> dict[int, dict[str, Any]]:
        """The records already there for ``manifest``, after refusing or (``overwrite``) discarding another's."""
        described, journal = path / MANIFEST_FILE, path / EPISODES_FILE
        _remove_stale_temporaries(path)  # a killed run's half-written files (the lock is ours: none is live)
        if overwrite:  # the journal goes first: a kill in between never leaves old episodes under a new manifest
            journal.unlink(missing_ok=True)
            (path / SUMMARY_FILE).unlink(missing_ok=True)
        found = None
        if described.is_file():
            try:
                found = json.loads(described.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                found = f"unreadable ({exc})"
        if found == manifest:
            return read_journal(journal, int(manifest["seed"]), manifest.get("env") == INTERACTIVE_ID)
        held = _held_episodes(journal)
        if held:
            if isinstance(found, dict):
                keys = sorted(k for k in {*found, *manifest} if found.get(k) != manifest.get(k))
                what = "; ".join(f"{k}: {found.get(k)!r} there, {manifest.get(k)!r} now" for k in keys)
            else:
                what = f"{MANIFEST_FILE} is {found or 'missing'}"
            raise EvalDirError(
                f"--out: {path} holds the {held} episodes of another evaluation ({what}); "
                "use another --out, or add --overwrite to discard them"
            )
        journal.unlink(missing_ok=True)  # nothing finished there (at most a torn line): this evaluation takes it
        (path / SUMMARY_FILE).unlink(missing_ok=True)  # another evaluation's summary must not sit beside this one
        atomic_write_text(described, json.dumps(manifest, indent=1) + "\n")
        return {}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Journal finished ``records`` durably."""
        records = list(records)
        self.journal.append(json.dumps(r, default=_jsonable) for r in records)
        self.records.update((int(r["seed"]), r) for r in records)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Rewrite the journal sorted by seed (every record it holds) and write ``summary``, both atomically."""
        lines = (json.dumps(self.records[s], default=_jsonable) + "\n" for s in sorted(self.records))
        atomic_write_text(self.path / EPISODES_FILE, lines)
        atomic_write_text(self.path / SUMMARY_FILE, json.dumps(summary, indent=2, default=_jsonable) + "\n")


def evaluate(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    batch_size: int = 1,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_tokens: int | None = None,
    name: str | None = None,
    window: int = DEFAULT_WINDOW,
    max_images: int | None = None,
) -> EvalResult:
    """Evaluate ``agent`` on ``episodes`` episodes of ``env_id``; episode ``i`` is ``reset(seed=seed + i)``.

    ``batch_size`` episodes are reset together and answered with one ``act_batch`` call. Agents
    with ``privileged = True`` receive each reset ``info`` through ``observe_privileged`` first. An
    agent with an ``obs_mode`` or ``prompt_layout`` attribute (e.g. a trained MLLM policy) sets the
    environment's observation mode or prompt layout unless ``env_kwargs`` does. ``max_tokens`` caps the
    generated tokens per answer for this run (:func:`token_cap`; ``None``: the agent's own cap). A served
    model left uncapped can write its whole default budget (1,024 tokens for ``openai:``) on every episode.

    With ``out`` (:class:`EvalDir`), episodes stream to ``out/episodes.jsonl`` as they finish, and a
    directory already holding this evaluation (same ``name``, environment, seed, keywords and cap, as
    recorded in ``out/eval.json``) is continued: its episodes are not run again and never lost. One
    holding another evaluation is refused unless ``overwrite``, and one in use by another process is
    refused. ``name`` identifies the agent in ``eval.json`` (default: its ``name`` attribute or class):
    give one that tells its weights apart, e.g. the checkpoint path. The result and ``out/summary.json``
    hold exactly the requested episodes, while the journal keeps every episode it holds.

    On ``TVR-Interactive-v0`` an episode is played to its end (:func:`check_interactive_agent`): agents that
    read the object tables (``random``, ``oracle``, ``greedy``, MaskablePPO) one episode at a time through the
    SB3 view, chat policies (``mllm:``, ``openai:``) ``batch_size`` episodes in lock step. A record holds
    every turn and ``interactive`` (success, misplaced, fixed_strict, turns, applied), ``reward`` is the
    return, and the summary adds their means (``interactive``) to TVR's tables of the net changes. A chat
    shows the images of the last ``window`` replies, and an episode whose next turn would hold more than
    ``max_images`` images (a served model's per-request limit) is truncated there (:class:`ImageBudget`).
    """
    check_int("episodes", episodes, 0)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_eval_env(env_id)
    interactive = env_id == INTERACTIVE_ID
    check_interactive_agent(agent, interactive)
    budget = ImageBudget(max_images)  # checks max_images
    check_int("window", window, 0)
    if max_tokens is not None:
        _cap_attribute(agent, max_tokens)  # a bad cap fails before any environment is built
    env_kwargs = agent_env_kwargs(agent, env_kwargs)
    if tvr_env_class(env_id) is not None:  # another TVR-shaped env checks its keywords when built
        check_env_kwargs(env_id, **env_kwargs)  # a bad keyword or source fails before out is created
    name = str(name if name is not None else getattr(agent, "name", type(agent).__name__))
    with ExitStack() as stack:
        run = None
        if out is not None:
            kwargs = json.loads(json.dumps(env_kwargs, default=list))
            manifest = {"agent": name, "env": env_id, "seed": seed, "env_kwargs": kwargs}
            if max_tokens is not None:  # another cap gives other answers: continuing under it would mix them
                manifest["max_tokens"] = max_tokens
            if interactive and hasattr(agent, "act_chats"):  # what a chat policy is shown
                manifest.update(window=window, max_images=max_images)
            run = stack.enter_context(EvalDir.open(out, manifest, overwrite))
        records = run.records if run is not None else {}
        todo = [i for i in range(episodes) if seed + i not in records]
        bar = progress_bar(progress, episodes, f"{name} on {env_id}", episodes - len(todo))
        envs = make_envs(agent, env_id, env_kwargs, min(batch_size, max(len(todo), 1)))
        try:
            with token_cap(agent, max_tokens):
                for start in range(0, len(todo), len(envs)):
                    seeds = [seed + i for i in todo[start : start + len(envs)]]
                    finished = play_batch(agent, envs, seeds, interactive, window, budget)
                    if run is not None:
                        run.append(finished)
                    else:
                        records.update((r["seed"], r) for r in finished)
                    if bar is not None:
                        bar[0].advance(bar[1], len(finished))
        finally:
            if bar is not None:
                bar[0].stop()
            for env in envs:
                env.close()
        ordered = [records[seed + i] for i in range(episodes)]
        result = EvalResult(ordered, summarize(summary_records(ordered)))
        if interactive:
            result.summary["interactive"] = interactive_means(ordered)
        if run is not None:
            run.finish(result.summary)
    return result


def check_interactive_agent(agent: Any, interactive: bool) -> None:
    """``ValueError`` unless ``agent`` plays the kind of environment evaluated: on ``TVR-Interactive-v0`` one
    that reads object tables (``table_policy``: ``random``, ``oracle``, ``greedy``, MaskablePPO trained on it)
    or a chat policy (``act_chats``: ``mllm:``, ``openai:``); elsewhere one that answers single-shot problems."""
    name = getattr(agent, "name", type(agent).__name__)
    if interactive and not (hasattr(agent, "table_policy") or hasattr(agent, "act_chats")):
        raise ValueError(
            f"agent: {name} answers single-shot problems; on {INTERACTIVE_ID} use random, oracle, greedy, "
            "ppo:PATH (trained on it), mllm:PATH or openai:MODEL@URL"
        )
    if not interactive and getattr(agent, "interactive", False):
        raise ValueError(f"agent: {name} plays {INTERACTIVE_ID} episodes; evaluate it with --env {INTERACTIVE_ID}")


def agent_env_kwargs(agent: Any, env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``env_kwargs`` with the ``obs_mode`` and ``prompt_layout`` the agent was trained to read, where the caller
    gives none (e.g. a trained MLLM policy's)."""
    env_kwargs = dict(env_kwargs or {})
    for key in ("obs_mode", "prompt_layout"):
        if key not in env_kwargs and getattr(agent, key, None) is not None:
            env_kwargs[key] = getattr(agent, key)
    return env_kwargs


def make_envs(agent: Any, env_id: str, env_kwargs: Mapping[str, Any], n: int) -> list[Any]:
    """The environments a batch runs in: one SB3 view for an agent that reads object tables (it plays one
    episode at a time), else ``n`` environments."""
    if env_id == INTERACTIVE_ID and hasattr(agent, "table_policy"):
        return [agent.make_env(**env_kwargs)]
    return [gym.make(env_id, **env_kwargs) for _ in range(n)]


def play_batch(
    agent: Any, envs: list[Any], seeds: list[int], interactive: bool, window: int = DEFAULT_WINDOW,
    budget: ImageBudget = ImageBudget(),  # noqa: B008 - frozen
) -> list[dict[str, Any]]:  # fmt: skip
    """The records of the episodes ``seeds``, played to their ends in ``envs`` (of :func:`make_envs`): single-shot
    ones reset together and answered by one ``act_batch`` call, interactive ones as :func:`evaluate` says."""
    if interactive:
        return _run_interactive_batch(agent, envs, seeds, window, budget)
    return _run_batch(agent, envs, seeds)


def _run_interactive_batch(
    agent: Any, envs: list[Any], seeds: list[int], window: int, budget: ImageBudget
) -> list[dict[str, Any]]:
    """The records (:func:`~tvr_gym.agents.interactive.episode_record`) of one batch of interactive episodes."""
    if hasattr(agent, "table_policy"):
        return play_tables(agent, envs[0], seeds)
    return play_chats(agent, envs[: len(seeds)], seeds, window, budget)


def _run_batch(agent: Any, envs: list[Any], seeds: list[int]) -> list[dict[str, Any]]:
    """The records of one batch: each env reset with its seed, all answered by one ``act_batch`` call."""
    observations, infos = [], []
    for env, episode_seed in zip(envs, seeds):
        obs, info = env.reset(seed=episode_seed)
        observations.append(obs)
        infos.append(info)
        if getattr(agent, "privileged", False):
            agent.observe_privileged(info)
    answers = act_batch(agent, observations)
    finished = []
    for env, episode_seed, answer, info in zip(envs, seeds, answers, infos):
        _, reward, _, _, step_info = env.step(answer)
        finished.append(answer_record(episode_seed, info, answer, reward, step_info))
    return finished


def answer_record(
    seed: int, reset_info: Mapping[str, Any], answer: Any, reward: float, step_info: Mapping[str, Any]
) -> dict[str, Any]:
    """One finished single-shot episode as an evaluation journals it: what :func:`summary_records` reads
    (``n_steps``, ``final_view``, ``reward``, ``metrics``), the ``answer``, the ``truth`` and the reward terms.
    ``reset_info`` and ``step_info`` are the ``info`` of the episode's ``reset`` and ``step``."""
    return {
        "seed": int(seed),
        "n_steps": len(reset_info["problem"]["transformations"]),
        "final_view": reset_info["final_view"],
        "answer": answer if isinstance(answer, str) else repr(answer),
        "truth": reset_info["truth"],
        "reward": float(reward),
        "reward_terms": step_info["reward_terms"],
        "metrics": step_info["metrics"],
    }


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


def progress_bar(enabled: bool, total: int, label: str, completed: int = 0):
    """A started rich progress bar and its task id, or ``None``."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task(label, total=total, completed=completed)
    bar.start()
    return bar, task
