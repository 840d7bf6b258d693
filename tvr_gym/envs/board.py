"""The rules of one interactive TVR episode, without rendering or Gymnasium.

A :class:`Board` holds a problem, the current state, the steps applied so far and the turns taken. It
plays one turn at a time under TVR's legality rule (:func:`tvr_gym.core.transform.try_apply`) and scores
the end with the one scorer (:func:`tvr_gym.core.reward.score_answer`). :class:`TVRInteractive
<tvr_gym.envs.interactive.TVRInteractive>` adds the observation, the rewards per turn and the renders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tvr_gym.core.answer import DONE, Turn, format_answer, format_item, read_turn
from tvr_gym.core.metrics import net_change
from tvr_gym.core.reward import score_answer
from tvr_gym.core.scene import State, is_visible_position
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem
from tvr_gym.core.transform import changed_entries, state_distance, try_apply

POTENTIALS = ("graded", "distance")
"""The potentials a turn's progress can follow (:meth:`Board.potential`)."""
TIER_CREDIT = 0.25
"""``graded``: what touching an object the truth changes earns, and again touching one of its true entries."""
MOVE_REACH = SPEC.cells_per_step * max(SPEC.steps)
"""Cells the longest move covers: ``graded`` scores a wrong position by its distance in such moves (at most 1)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one turn did: its kind (``applied``, ``done``, ``illegal``, ``noop``, ``unreadable``) and the feedback."""

    kind: str
    feedback: str
    step: tuple | None = None


@dataclass
class Board:
    """One episode's state: the problem (and its source key), the current state, the applied steps, the turns."""

    key: dict
    problem: Problem
    current: State = field(init=False)
    applied: list[tuple] = field(default_factory=list, init=False)
    turns: int = 0
    done: bool = False
    touched: set[tuple[int, str]] = field(default_factory=set, init=False)
    """The (object, attribute) entries the applied steps changed: the path's history ``graded`` reads."""

    def __post_init__(self) -> None:
        self.key = dict(self.key)
        self.current = self.problem.initial

    @classmethod
    def replayed(cls, key: dict, problem: Problem, steps: Sequence[tuple], turns: int, done: bool = False) -> Board:
        """A board after ``steps``, each of which must apply (a saved episode); ``ValueError`` says which cannot."""
        board = cls(key, problem, turns)
        for step in steps:
            outcome = board.apply(step)
            if outcome.kind != "applied":
                raise ValueError(f"state: step {format_item(step)} cannot be replayed ({outcome.feedback})")
        board.done = done
        return board

    def potential(self, kind: str = "distance") -> float:
        """Φ of the episode so far, which a turn's progress differences (so the progress terms telescope).

        ``distance``: minus the TVR distance from the current state to the target. ``graded``: STAR's tiers
        one level down: minus the distance with a wrong position counted by how far it is (in longest
        moves, at most 1), plus :data:`TIER_CREDIT` per true entry whose object the path has touched and
        again per true entry it has touched. Both are at their highest exactly on the target reached by a
        path that touched every true entry, as the true steps do.
        """
        if kind == "distance":
            return 0.0 - state_distance(self.current, self.problem.final)
        return graded_potential(self.problem, self.current, self.touched)

    def play(self, turn: Turn) -> Outcome:
        """One turn: ``done``, an unreadable turn (nothing changes), or a step (:meth:`apply`). Counts the turn."""
        self.turns += 1
        if turn.kind == DONE:
            return Outcome(DONE, "done")
        if turn.kind != "step":
            return Outcome("unreadable", "unreadable: " + "; ".join(turn.errors))
        return self.apply(turn.step)

    def apply(self, step: tuple) -> Outcome:
        """Apply ``step`` where TVR's rule allows it; an illegal or no-op step changes nothing."""
        text = format_item(step)
        result = try_apply(self.current, step)
        if result.kind == "off_grid":
            return Outcome("illegal", f"illegal: {text} moves object {step[0]} off the grid", step)
        if result.kind == "overlap":
            return Outcome("illegal", f"illegal: {text} would overlap object {result.hit}", step)
        if result.kind == "noop":
            return Outcome("noop", f"no change: {text} leaves the scene as it looks", step)
        before, self.current = self.current.objects[step[0]], self.current.with_object(step[0], result.obj)
        self.applied.append(step)
        self.touched.add((step[0], step[1]))
        if not (before.visible or result.obj.visible):
            return Outcome("applied", f"applied {text} (object {step[0]} is hidden: the image does not show it)", step)
        return Outcome("applied", f"applied {text}", step)

    def answer(self) -> str:
        """The applied steps as an answer."""
        return format_answer(self.applied)

    def saved(self) -> dict[str, Any]:
        """The episode as plain data (:meth:`replayed` restores it)."""
        applied = [format_item(s) for s in self.applied]
        return {"key": self.key, "applied": applied, "turns": self.turns, "done": self.done}

    def end(self, terminal_fn: Callable | None) -> dict[str, Any]:
        """The last turn's additions: the terminal reward of the net change from the initial state to the current
        one (:func:`tvr_gym.core.metrics.net_change`: the path taken to it does not count), its terms, TVR's
        metrics of it, and the interactive metrics. Nothing is re-read as text."""
        problem, current = self.problem, self.current
        scored = score_answer(net_change(problem, current), problem, terminal_fn)
        wrong_start = wrong_objects(problem.initial, problem.final)
        wrong_end = wrong_objects(current, problem.final)
        fixed = len(wrong_start - wrong_end) / len(wrong_start) if wrong_start else 1.0
        return {
            "terminal": scored.total,
            "terminal_terms": scored.terms,
            "metrics": scored.metrics,
            "interactive": {
                "success": float(not wrong_end),
                "misplaced": min(1.0, len(wrong_end) / max(len(wrong_start), 1)),
                "fixed_strict": 0.0 if wrong_end - wrong_start else fixed,
                "turns": self.turns,
                "applied": len(self.applied),
            },
        }


def graded_potential(problem: Problem, state: State, touched: set[tuple[int, str]]) -> float:
    """The ``graded`` potential (:meth:`Board.potential`) of ``state`` reached by a path that touched ``touched``."""
    value = 0.0
    for now, goal in zip(state.objects, problem.final.objects, strict=True):
        value -= (now.color != goal.color) + (now.material != goal.material) + (now.shape != goal.shape)
        value -= now.size != goal.size
        if now.position != goal.position and (is_visible_position(now.position) or is_visible_position(goal.position)):
            gap = max(abs(now.position[0] - goal.position[0]), abs(now.position[1] - goal.position[1]))
            value -= min(1.0, gap / MOVE_REACH)
    objects = {obj for obj, _ in touched}
    for obj, attr in problem.changed:
        value += TIER_CREDIT * ((obj in objects) + ((obj, attr) in touched))
    return value


SAVED_FIELDS = ("key", "applied", "turns", "done")
"""The fields of a saved episode (:meth:`Board.saved`)."""


def read_saved(state: str | bytes | Mapping[str, Any]) -> tuple[dict, list[tuple], int, bool]:
    """A saved episode's (key, steps, turns, done), checked: ``ValueError`` says what is wrong with it.

    ``key`` is required; ``applied`` (default none) is a list of transformations, each read as one step;
    ``turns`` (default: one per applied step) is an int no smaller than the applied steps; ``done``
    (default false) is a bool. Any other field is refused.
    """
    if isinstance(state, (str, bytes, bytearray)):
        try:
            data = json.loads(state)
        except ValueError as exc:
            raise ValueError(f"state: not JSON ({exc})") from None
    else:
        data = state
    if not isinstance(data, Mapping):
        raise ValueError(f"state: expected an object with {', '.join(SAVED_FIELDS)}, got {type(data).__name__}")
    unknown = sorted(map(str, set(data) - set(SAVED_FIELDS)))
    if unknown:
        raise ValueError(f"state: unknown field(s) {', '.join(unknown)}; valid: {', '.join(SAVED_FIELDS)}")
    if not isinstance(data.get("key"), Mapping):
        raise ValueError(f"state.key: expected the problem's key (an object), got {data.get('key')!r:.80}")
    applied = data.get("applied", [])
    if not isinstance(applied, list):
        raise ValueError(f"state.applied: expected a list of transformations, got {type(applied).__name__}")
    steps = []
    for i, item in enumerate(applied):
        turn = read_turn(item) if isinstance(item, str) else Turn("unreadable", None, ("not a string",))
        if turn.kind != "step":
            raise ValueError(f"state.applied[{i}]: {item!r:.80} is not one transformation ({'; '.join(turn.errors)})")
        steps.append(turn.step)
    turns = data.get("turns", len(steps))
    if isinstance(turns, bool) or not isinstance(turns, int) or turns < len(steps):
        raise ValueError(f"state.turns: expected an int >= {len(steps)} (one turn per applied step), got {turns!r}")
    done = data.get("done", False)
    if not isinstance(done, bool):
        raise ValueError(f"state.done: expected true or false, got {done!r}")
    return dict(data["key"]), steps, turns, done


def wrong_objects(state: State, target: State) -> frozenset[int]:
    """Objects whose entries differ from the target's (TVR's equality)."""
    return frozenset(i for i, _ in changed_entries(state, target))


__all__ = [
    "MOVE_REACH", "POTENTIALS", "SAVED_FIELDS", "TIER_CREDIT",
    "Board", "Outcome", "graded_potential", "read_saved", "wrong_objects",
]  # fmt: skip
