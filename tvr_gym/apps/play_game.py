"""The game behind ``tvr-gym play`` (``docs/play.md``), without the web page: episodes, sessions and records.

A :class:`PlayGame` serves the episodes of one run, ``seed + i`` for ``i < episodes`` as ``tvr-gym eval`` plays
them, to browser sessions. Each session (one tab, kept across reloads by an id the browser holds) plays one
episode at a time in its own environment (``gym.make``), so every score is the environment's. An episode index
is claimed by one session only, and a finished episode is journalled once, in ``eval``'s record format
(:func:`~tvr_gym.agents.evaluate.answer_record`, :func:`~tvr_gym.agents.interactive.episode_record`) plus the
player's marks (:data:`PLAYER_KEY`, :data:`TEST_KEY`). What a page may show is a :class:`View`: the truth
enters it only once the episode is over.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

import tvr_gym  # noqa: F401  (registers the environment ids)
from tvr_gym.agents.evaluate import EvalDir, answer_record, summary_records
from tvr_gym.agents.interactive import episode_record
from tvr_gym.core.metrics import INTERACTIVE_COLUMNS, summarize
from tvr_gym.envs.registration import INTERACTIVE_ID

HUMAN = "human"
"""The player of a record made by a person (``"player": "human"``): the only records a human row reads."""
TEST_PLAYER = "test"
"""The player of scripted test data (``"player": "test", "test": true``), e.g. the browser tests' records."""
PLAYER_KEY, TEST_KEY = "player", "test"
SESSION_ID = re.compile(r"[0-9a-f]{32}")
"""A session id as the page makes it: 128 random bits in hex."""
SHOWN_CHARS = 2000
"""The most characters of a player's text a view repeats (the record keeps all of it)."""


@dataclass(frozen=True)
class PlaySetup:
    """What a run plays: ``episodes`` episodes of ``env_id`` (episode ``i`` is ``reset(seed=seed + i)``), and who."""

    env_id: str
    env_kwargs: Mapping[str, Any]
    seed: int = 0
    episodes: int = 20
    test_data: bool = False
    """Scripted players (tests): every record is marked as test data and never reported as human."""

    @property
    def interactive(self) -> bool:
        return self.env_id == INTERACTIVE_ID

    @property
    def player(self) -> str:
        return TEST_PLAYER if self.test_data else HUMAN

    def manifest(self) -> dict[str, Any]:
        """``eval.json``: eval's manifest with the player as the agent, so one directory never mixes people and
        scripts (:class:`~tvr_gym.agents.evaluate.EvalDir` refuses a directory of another run)."""
        return {"agent": self.player, "env": self.env_id, "seed": self.seed, "env_kwargs": dict(self.env_kwargs),
                PLAYER_KEY: self.player}  # fmt: skip

    def marks(self) -> dict[str, Any]:
        """The keys a record gets besides eval's."""
        return {PLAYER_KEY: self.player, **({TEST_KEY: True} if self.test_data else {})}


@dataclass
class View:
    """What a page shows of a session. Everything here may reach the browser: ``truth`` is empty until the
    episode is over. ``header`` and ``scores`` are Markdown made here from numbers and fixed words only;
    text a player typed appears only in the plain-text fields (``answer``, ``notes``, ``turns``)."""

    header: str
    token: str = ""
    """The episode and turn the page shows (``seed:turn``); an action sent from an older view is ignored."""
    images: tuple[np.ndarray, np.ndarray] | None = None
    prompt: str = ""
    feedback: str = ""
    turns: list[list[Any]] = field(default_factory=list)
    """Interactive: one row per turn (turn, action, outcome, reward, feedback)."""
    finished: bool = False
    scores: str = ""
    truth: str = ""
    answer: str = ""
    """What was scored: the single-shot answer, or the interactive episode's net change."""
    notes: str = ""
    """How the answer was read (the parser's complaints), or why an action was not taken."""


@dataclass
class Seat:
    """One browser session: its environment and the episode it plays."""

    id: str
    env: gym.Env | None = None
    index: int | None = None
    """The claimed episode index (``None``: none, e.g. every episode is taken)."""
    started: float = 0.0
    obs: dict[str, Any] | None = None
    info: dict[str, Any] | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)
    total: float = 0.0
    record: dict[str, Any] | None = None
    """The finished episode's record (as journalled)."""
    note: str = ""


class PlayGame:
    """The episodes of one run, served to browser sessions (:class:`Seat`), journalled into ``run``.

    Every call holds one lock: sessions take turns (renders take turns anyway), claims are atomic, and a
    record is written once. ``claims`` maps an episode index to the session playing it; an index with a
    record in the journal, or claimed, is never handed out again.
    """

    def __init__(self, run: EvalDir, setup: PlaySetup) -> None:
        self.run, self.setup = run, setup
        self.seats: dict[str, Seat] = {}
        self.claims: dict[int, str] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ what a page calls

    def open(self, session_id: str) -> View:
        """The session's view (a reload shows the same episode and turn); a new session claims an episode."""
        with self._lock:
            seat = self._seat(session_id)
            if seat.index is None and seat.record is None:
                self._start(seat)
            return self._view(seat)

    def answer(self, session_id: str, token: str, text: str) -> View:
        """Single-shot: score ``text`` (any string) on the session's episode and journal it."""
        with self._lock:
            seat = self._seat(session_id)
            if self._current(seat, token) and not self.setup.interactive:
                env, info = seat.env, seat.info
                assert env is not None and info is not None and seat.index is not None
                _, reward, _, _, step_info = env.step(text)
                record = answer_record(self.setup.seed + seat.index, info, text, reward, step_info)
                self._finish(seat, record, "\n".join(step_info["parsed"]["errors"]))
            return self._view(seat)

    def turn(self, session_id: str, token: str, text: str) -> View:
        """Interactive: play ``text`` (one transformation, ``done`` or any string) as the session's next turn."""
        with self._lock:
            seat = self._seat(session_id)
            if self._current(seat, token) and self.setup.interactive:
                env = seat.env
                assert env is not None and seat.index is not None
                obs, reward, terminated, truncated, info = env.step(text)
                seat.obs, seat.info, seat.total = obs, info, seat.total + float(reward)
                seat.turns.append({"action": text, "feedback": obs["feedback"], "outcome": info["outcome"],
                                   "reward": float(reward)})  # fmt: skip
                if terminated or truncated:
                    problem = env.unwrapped.problem
                    self._finish(seat, episode_record(self.setup.seed + seat.index, problem, seat.total, info,
                                                      seat.turns))  # fmt: skip
            return self._view(seat)

    def next(self, session_id: str, token: str) -> View:
        """After a finished episode: claim and start the next one."""
        with self._lock:
            seat = self._seat(session_id)
            if seat.record is not None and token == self._token(seat):
                seat.record, seat.index = None, None
                self._start(seat)
            return self._view(seat)

    def close(self) -> None:
        with self._lock:
            for seat in self.seats.values():
                if seat.env is not None:
                    seat.env.close()
                    seat.env = None

    # ------------------------------------------------------------------ claims and records

    def claim(self, session_id: str) -> int | None:
        """The lowest episode index neither journalled nor claimed, now claimed by ``session_id`` (``None``: none)."""
        with self._lock:
            for index in range(self.setup.episodes):
                if self.setup.seed + index not in self.run.records and index not in self.claims:
                    self.claims[index] = session_id
                    return index
            return None

    def record(self, index: int, record: dict[str, Any]) -> bool:
        """Journal ``record`` of episode ``index`` unless the journal holds that episode already; whether it did."""
        with self._lock:
            self.claims.pop(index, None)
            if int(record["seed"]) in self.run.records:
                return False
            self.run.append([record])
            return True

    @property
    def finished(self) -> int:
        """Episodes of this run in the journal."""
        seeds = range(self.setup.seed, self.setup.seed + self.setup.episodes)
        return sum(seed in self.run.records for seed in seeds)

    # ------------------------------------------------------------------ internals

    def _seat(self, session_id: str) -> Seat:
        if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise ValueError("this page has no valid session id; open the page again")
        if session_id not in self.seats:
            self.seats[session_id] = Seat(session_id)
        return self.seats[session_id]

    def _start(self, seat: Seat) -> None:
        seat.index = self.claim(seat.id)
        seat.turns, seat.total, seat.record, seat.note = [], 0.0, None, ""
        if seat.index is None:
            seat.obs = seat.info = None
            return
        if seat.env is None:
            seat.env = gym.make(self.setup.env_id, **self.setup.env_kwargs)
        seat.obs, seat.info = seat.env.reset(seed=self.setup.seed + seat.index)
        seat.started = time.monotonic()

    def _current(self, seat: Seat, token: str) -> bool:
        """Whether an action sent from a view with ``token`` is for the session's running episode and turn."""
        if seat.index is None or seat.record is not None:
            return False
        if token != self._token(seat):
            seat.note = "That action came from an older view of this session (another tab?); it was not taken."
            return False
        seat.note = ""
        return True

    def _finish(self, seat: Seat, record: dict[str, Any], notes: str = "") -> None:
        """Journal the session's finished episode (with the player's marks and the seconds it took)."""
        assert seat.index is not None
        record = {**record, **self.setup.marks(), "seconds": round(time.monotonic() - seat.started, 1)}
        recorded = self.record(seat.index, record)
        seat.note = notes[:SHOWN_CHARS] if recorded else "This episode was in the journal already: not recorded again."
        seat.record = record

    def _token(self, seat: Seat) -> str:
        if seat.index is None:
            return ""
        return f"{self.setup.seed + seat.index}:{len(seat.turns)}"

    def _header(self, seat: Seat) -> str:
        done, total = self.finished, self.setup.episodes
        progress = f"{done} of {total} episodes finished"
        if seat.index is None:
            why = "Thank you!" if done == total else "The others are being played in other tabs."
            return (f"**{self.setup.env_id}** · {progress}. {why} Restart `tvr-gym play` with more `--episodes` "
                    "to play on.")  # fmt: skip
        state = "finished" if seat.record is not None else "playing"
        episode = f"episode {seat.index + 1} (seed {self.setup.seed + seat.index})"
        return f"**{self.setup.env_id}** · {episode}, {state} · {progress}"

    def _view(self, seat: Seat) -> View:
        view = View(self._header(seat), token=self._token(seat), notes=seat.note)
        if seat.index is None or seat.obs is None:
            return view
        obs = seat.obs
        view.images = (obs["target"], obs["current"]) if self.setup.interactive else (obs["initial"], obs["final"])
        view.prompt = obs["prompt"]
        if self.setup.interactive:
            info = seat.info or {}
            view.feedback = obs["feedback"] or f"Turn 0 of {info.get('turn_limit', '?')}: your move."
            over = seat.record is not None  # a turn's reward tells whether it helped: an agent is not told
            view.turns = [[k + 1, _shown(t["action"]), t["outcome"], round(t["reward"], 3) if over else "",
                           t["feedback"]] for k, t in enumerate(seat.turns)]  # fmt: skip
        if seat.record is not None:
            view.finished = True
            view.scores = scores_markdown(seat.record, self.setup.env_kwargs.get("reward", "star"))
            view.truth = _answer_text(seat.record["truth"])
            view.answer = _answer_text(seat.record["applied"]) if self.setup.interactive else _shown(
                seat.record["answer"]
            )
        return view


def _shown(text: str) -> str:
    """A player's text as a view repeats it: at most :data:`SHOWN_CHARS` characters, and how many there were."""
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text):,} characters in all)"


def _answer_text(answer: str) -> str:
    """``2.color.cyan, 4.position.front-left.1`` of ``<think></think><answer>...</answer>``."""
    inner = answer.split("<answer>", 1)[-1].split("</answer>", 1)[0]
    return inner or "(no transformation)"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _table(heads: list[str], values: list[Any]) -> list[str]:
    return [f"| {' | '.join(heads)} |", "|" + " --- |" * len(heads), f"| {' | '.join(map(_number, values))} |", ""]


BASIC_HEADS = ("ObjAcc", "AttrAcc", "ValAcc", "Acc")
OVERALL_HEADS = ("AD", "AND", "LAcc", "Acc")


def scores_markdown(record: Mapping[str, Any], reward_name: str = "star") -> str:
    """One finished episode's scores as Markdown made of numbers and fixed words: a verdict, an interactive
    episode's own scores, and eval's tables of one episode (:func:`~tvr_gym.core.metrics.summarize`)."""
    summary = summarize(summary_records([record]))
    overall, basic = summary["overall"], summary["basic"]
    if "interactive" in record:
        verdict = ("**Success**: the scene matched the target." if record["interactive"]["success"] == 1
                   else "**No success**: the scene did not match the target when the episode ended.")  # fmt: skip
        columns = [(key, head) for key, head in INTERACTIVE_COLUMNS if key in record["interactive"]]
        lines = [verdict, "", *_table([h for _, h in columns], [record["interactive"][k] for k, _ in columns])]
        heads, values = ["return"], [record["reward"]]
    else:
        verdict = ("**Right**: your answer turns the initial state into the final one." if record["metrics"]["acc"]
                   else "**Not right**: your answer does not turn the initial state into the final one.")  # fmt: skip
        lines, heads, values = [verdict, ""], [f"reward ({reward_name})"], [record["reward"]]
    heads += OVERALL_HEADS
    values += [overall[h] for h in OVERALL_HEADS]
    if basic["n"]:  # a one-step problem: TVR's Basic scores
        heads += [f"Basic {h}" for h in BASIC_HEADS]
        values += [basic[h] for h in BASIC_HEADS]
    return "\n".join(lines + _table(heads, values)).rstrip()


__all__ = ["HUMAN", "PLAYER_KEY", "TEST_KEY", "TEST_PLAYER", "PlayGame", "PlaySetup", "Seat", "View"]
