"""Rewards for TVR answers (``docs/rewards.md``): STAR-R1's fine-grained reward, a state reward and a sparse one.

Each reward is a pure function of (answer, problem) returning :class:`RewardResult`. The answer may be
any string (or bytes/None) or an already :class:`~tvr_gym.core.answer.Parsed` answer. They never raise on the
answer and always return a finite total equal to the sum of the terms.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from functools import partial
from operator import itemgetter
from types import MappingProxyType
from typing import Any, ClassVar

from tvr_gym.core.answer import MAX_ANSWER_CHARS, Parsed, Step
from tvr_gym.core.metrics import Judged, basic_scores, episode_metrics, judge
from tvr_gym.core.options import is_number
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import MAX_STEPS, Problem

__all__ = [
    "ABLATIONS",
    "MAX_ITEMS",
    "REWARD_LIMIT",
    "REWARD_NAMES",
    "REWARDS",
    "RewardResult",
    "Score",
    "StarWeights",
    "StateWeights",
    "get_reward",
    "score_answer",
    "sparse_reward",
    "star_reward",
    "state_reward",
]


@dataclass(frozen=True, slots=True)
class RewardResult:
    """``total`` is the sum of ``terms``."""

    total: float
    terms: dict[str, float]


MAX_ITEMS = MAX_ANSWER_CHARS
"""The most items (steps and unreadable items) an answer can hold: each takes at least one character of
the answer region, which the parser cuts to ``MAX_ANSWER_CHARS``."""
MAX_ENTRIES = SPEC.n_objects * len(SPEC.attributes)
"""The (object, attribute) entries of a state: the most the state reward can count right, wrong or missed."""
REWARD_LIMIT = sys.float_info.max / 2
"""The most a weights' bound (:meth:`_Weights.bound`) may be: half the largest float, so that no reward,
term or intermediate value can overflow, whatever the rounding along the way."""


class _Weights:
    """What the weights classes share: their checks and the bound they put on a reward.

    ``COUNTS[key]`` is the most times the reward can count weight ``key`` in any term or intermediate
    value of its formulas, for any answer text and any problem (at most ``MAX_STEPS`` true steps, at most
    :data:`MAX_ITEMS` items, :data:`MAX_ENTRIES` entries); so sum(weight x count), :meth:`bound`, is
    at least the magnitude of every reward, term and intermediate value.
    """

    __slots__ = ()
    NAME: ClassVar[str]
    COUNTS: ClassVar[Mapping[str, int]]

    def __post_init__(self) -> None:
        """Every weight is a finite number >= 0 and :meth:`bound` is at most :data:`REWARD_LIMIT`."""
        for key in self._keys():
            value = getattr(self, key)
            if not is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.NAME} weights: {key} must be a finite number >= 0, got {value!r}")
        bound = self.bound()
        if bound <= REWARD_LIMIT:
            return
        key = max(self.COUNTS, key=lambda k: getattr(self, k) * self.COUNTS[k])
        n = self.COUNTS[key]
        raise ValueError(
            f"{self.NAME} weights: {key}={getattr(self, key)!r} is too large: a reward can count it {n} "
            f"time{'s' if n != 1 else ''}, and sum(weight x count) = {bound:.4g} is over {REWARD_LIMIT:.4g}, "
            "where a reward could overflow"
        )

    def bound(self) -> float:
        """sum(weight x ``COUNTS``): no reward, term or intermediate value of the kind exceeds it in magnitude."""
        return sum(getattr(self, key) * self.COUNTS[key] for key in self._keys())

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StarWeights(_Weights):
    """STAR-R1's constants (the paper's values by default).

    A prediction matched to a true step scores ``full`` when object, attribute and value match (value in
    the step's options), else the best applicable partial tier: ``attribute`` (object and attribute) or
    ``object`` (object only). Setting a tier to 0 removes it: an object+attribute match then falls to the
    object tier. ``wrong`` is charged per prediction that is not fully correct (unreadable items
    included); ``missing`` per true step beyond the number of predictions.

    Each weight is a finite number >= 0, and :meth:`~_Weights.bound` at most :data:`REWARD_LIMIT`, else
    ``ValueError`` names the weight that contributes most to the bound.
    """

    format: float = 1.0
    full: float = 5.0
    attribute: float = 1.5
    object: float = 0.5
    wrong: float = 1.0
    missing: float = 1.0

    NAME: ClassVar[str] = "star"
    COUNTS: ClassVar[Mapping[str, int]] = MappingProxyType({
        "format": 1, "full": MAX_STEPS, "attribute": MAX_STEPS, "object": MAX_STEPS,
        "wrong": MAX_ITEMS + MAX_STEPS, "missing": MAX_STEPS,
    })  # fmt: skip
    """The most times :func:`star_reward` counts each weight: a tier once per true step, ``wrong`` once per
    item and once more per true step in the matching's gain (full + wrong), ``missing`` once per true step."""


ABLATIONS: dict[str, StarWeights] = {
    "full": StarWeights(),
    "no_object_tier": StarWeights(object=0.0),
    "no_attribute_tier": StarWeights(attribute=0.0),
    "no_underprediction_penalty": StarWeights(missing=0.0),
    "no_wrong_penalty": StarWeights(wrong=0.0),
}
"""STAR-R1's reported reward ablations (naive GRPO is :func:`sparse_reward`)."""


@dataclass(frozen=True, slots=True)
class StateWeights(_Weights):
    """Constants of the state reward.

    ``full`` per true step is shared among the (object, attribute) entries that the truth changes: each
    entry the prediction gets right earns ``full * n_steps / n_changed`` (all right = ``full * n_steps``,
    the same maximum as the STAR reward). Each entry changed to a wrong value costs ``wrong``, each
    changed entry left untouched costs ``missing``, each illegal step (off-grid or overlap) ``illegal``
    and each unreadable item ``unreadable``.

    Each weight is a finite number >= 0, and :meth:`~_Weights.bound` at most :data:`REWARD_LIMIT`, else
    ``ValueError`` names the weight that contributes most to the bound.
    """

    format: float = 1.0
    full: float = 5.0
    wrong: float = 1.0
    missing: float = 1.0
    illegal: float = 1.0
    unreadable: float = 1.0

    NAME: ClassVar[str] = "state"
    COUNTS: ClassVar[Mapping[str, int]] = MappingProxyType({
        "format": 1, "full": MAX_STEPS * MAX_ENTRIES, "wrong": MAX_ENTRIES, "missing": MAX_ENTRIES,
        "illegal": MAX_ITEMS, "unreadable": MAX_ITEMS,
    })  # fmt: skip
    """The most times :func:`state_reward` counts each weight: ``full`` x n_steps x right (the ``correct``
    term's product before its division by the changed entries), ``wrong`` and ``missing`` once per entry,
    ``illegal`` and ``unreadable`` once per item."""



def _result(terms: dict[str, float]) -> RewardResult:
    return RewardResult(float(sum(terms.values())), terms)


def _matchable(steps: list[Step], problem: Problem) -> list[Step]:
    """The predictions that may take part in the matching.

    Copies of one triplet are interchangeable, so a triplet written k times takes part at most
    max(1, m) times, m being the number of true steps it fully equals: a truth that repeats a step
    (metal, glass, metal) is matched by the same repetition, while repeating a triplet beyond that
    can never raise the reward. The other copies score 0 and count as wrong.
    """
    if len(steps) < 2 or len(set(steps)) == len(steps):
        return steps
    kept: list[Step] = []
    seen: dict[Step, int] = {}
    for step in steps:
        copies = seen.get(step, 0)
        if copies == 0 or copies < _full_matches(step, problem):
            kept.append(step)
        seen[step] = copies + 1
    return kept


def _full_matches(step: Step, problem: Problem) -> int:
    obj, attr, value = step
    return sum(t.obj_idx == obj and t.attr == attr and value in t.options for t in problem.transformations)


def _star_rows(steps: Iterable[Step], problem: Problem, w: StarWeights) -> list[list[tuple[int, float, float, int]]]:
    """Per prediction that can score, its (truth index, gain, score, is_full) entries with a positive gain.

    The gain of matching is the score plus the ``wrong`` penalty it avoids when fully correct, so the
    best total reward is the best total gain over one-to-one matchings.
    """
    by_obj: dict[int, list[tuple[int, str, tuple]]] = {}
    for j, t in enumerate(problem.transformations):
        entry = (j, t.attr, t.options)
        found = by_obj.get(t.obj_idx)
        if found is None:
            by_obj[t.obj_idx] = [entry]
        else:
            found.append(entry)
    full = (w.full + w.wrong, w.full, 1)
    partial = max(w.attribute, w.object)
    attr_tier = (partial, partial, 0)
    obj_tier = (w.object, w.object, 0)
    rows = []
    for obj, attr, value in steps:
        truths = by_obj.get(obj)
        if truths is None:
            continue
        row = []
        for j, t_attr, options in truths:
            gain, score, is_full = full if t_attr == attr and value in options else (
                attr_tier if t_attr == attr else obj_tier
            )
            if gain > 0:
                row.append((j, gain, score, is_full))
        if row:
            rows.append(row)
    return rows


def _best_matching(rows: list[list[tuple[int, float, float, int]]]) -> tuple[float, int]:
    """(R_pos, number of fully correct matches) of the one-to-one matching with the largest total gain.

    When no two predictions compete for a truth each takes its best entry; otherwise an exact dynamic
    programme over subsets of the (few) true steps.
    """
    pos = 0.0
    n_full = 0
    seen = 0
    for row in rows:
        best = row[0]
        for e in row:
            bit = 1 << e[0]
            if seen & bit:
                return _best_matching_dp(rows)
            seen |= bit
            if e[1] > best[1]:
                best = e
        pos += best[2]
        n_full += best[3]
    return pos, n_full


def _best_matching_dp(rows: list[list[tuple[int, float, float, int]]]) -> tuple[float, int]:
    states: dict[int, tuple[float, float, int]] = {0: (0.0, 0.0, 0)}  # used truths -> (gain, pos, n_full)
    for row in rows:
        nxt = dict(states)
        for mask, (gain, pos, n_full) in states.items():
            for j, g, score, full in row:
                bit = 1 << j
                if mask & bit:
                    continue
                cand = (gain + g, pos + score, n_full + full)
                cur = nxt.get(mask | bit)
                if cur is None or cand[0] > cur[0]:
                    nxt[mask | bit] = cand
        states = nxt
    _, pos, n_full = max(states.values(), key=_by_gain_first)
    return pos, n_full


_by_gain_first = itemgetter(0)


def star_reward(text: Any, problem: Problem, weights: StarWeights = StarWeights()) -> RewardResult:  # noqa: B008
    """STAR-R1's fine-grained reward with the reward-maximising one-to-one matching.

    Terms: ``format``, ``pos`` (R_pos), ``pun_wrong`` (−wrong per prediction not fully correct, unreadable
    items included), ``pun_missing`` (−missing × (n_gt − n_pred) when under-predicting). Matching is the
    one-to-one assignment that maximises the reward, with the copies of a triplet taking part at most as
    often as the truth holds it (at least once; see :func:`_matchable` and ``docs/rewards.md``).
    """
    parsed = judge(text, problem).parsed
    w = weights
    n_pred = len(parsed.steps) + parsed.n_unreadable
    n_gt = len(problem.transformations)
    steps = _matchable(parsed.steps, problem)
    pos, n_full = _best_matching(_star_rows(steps, problem, w)) if steps else (0.0, 0)
    return _result(
        {
            "format": w.format if parsed.well_formed else 0.0,
            "pos": pos,
            "pun_wrong": 0.0 - w.wrong * (n_pred - n_full),
            "pun_missing": 0.0 - w.missing * max(0, n_gt - n_pred),
        }
    )


def state_reward(text: Any, problem: Problem, weights: StateWeights = StateWeights()) -> RewardResult:  # noqa: B008
    """Simulate the readable steps and compare states (the state reward of ``docs/rewards.md``).

    Terms: ``format``, ``correct`` (full × n_gt × right / changed; full × n_gt when the truth changes no
    entry and the prediction changes none wrongly), ``wrong_change``, ``missing``, ``illegal``,
    ``unreadable`` (the last four ≤ 0). The maximum, format + full × n_gt, goes to every sequence that
    reaches the true final state legally: the truth, a reordering, ``front 1`` twice for ``front 2``…
    """
    judged = judge(text, problem)
    parsed, sim, counts = judged.parsed, judged.sim, judged.counts
    w = weights
    full = w.full * len(problem.transformations)
    if counts.changed:
        correct = full * counts.right / counts.changed
    else:
        correct = full if counts.wrong == 0 else 0.0
    return _result(
        {
            "format": w.format if parsed.well_formed else 0.0,
            "correct": correct,
            "wrong_change": 0.0 - w.wrong * counts.wrong,
            "missing": 0.0 - w.missing * counts.missed,
            "illegal": 0.0 - w.illegal * sim.illegal_steps,
            "unreadable": 0.0 - w.unreadable * parsed.n_unreadable,
        }
    )


def sparse_reward(text: Any, problem: Problem) -> RewardResult:
    """1.0 when fully correct, else 0.0 (term ``acc``).

    Fully correct is TVR ``Acc`` (state distance 0, no off-grid or overlap error); for 1-step problems
    it is the Basic ``Acc`` of the first predicted step (right object, (attribute, value) in options).
    """
    judged = judge(text, problem)
    if len(problem.transformations) == 1:
        acc = basic_scores(judged.parsed.steps, problem)["basic_acc"]
    else:
        acc = judged.acc
    return _result({"acc": acc})


RewardFn = Callable[[Any, Problem], RewardResult]

REWARDS: dict[str, RewardFn] = {"star": star_reward, "state": state_reward, "sparse": sparse_reward}
REWARD_NAMES: tuple[str, ...] = (*REWARDS, *(a for a in ABLATIONS if a not in REWARDS))
"""Every name :func:`get_reward` (and the environment's ``reward=``) accepts: the rewards, then the STAR ablations."""


def get_reward(name: str, **weights: float) -> RewardFn:
    """The reward function called ``name``; keyword weights override its defaults (star/state only).

    ``get_reward("star", missing=0.0)`` is the no-under-prediction-penalty ablation; a name in
    :data:`ABLATIONS` (e.g. ``"no_wrong_penalty"``) gives that STAR ablation. The result is a plain
    function, or a ``functools.partial`` of one (picklable either way).
    """
    if name in ABLATIONS and name not in REWARDS:
        base, fn, defaults = "star", star_reward, ABLATIONS[name]
    elif name in REWARDS:
        base, fn = name, REWARDS[name]
        defaults = {"star": StarWeights(), "state": StateWeights()}.get(name)
    else:
        raise ValueError(f"reward: unknown name {name!r}; valid: {', '.join(REWARD_NAMES)}")
    if not weights and name in REWARDS:
        return fn
    if defaults is None:
        raise ValueError(f"reward {base!r} has no weights; got {', '.join(weights)}")
    valid_fields = defaults.__dataclass_fields__
    unknown = [k for k in weights if k not in valid_fields]
    if unknown:
        raise ValueError(f"{base} weights: unknown {unknown[0]!r}; valid: {', '.join(valid_fields)}")
    return partial(fn, weights=replace(defaults, **weights))


@dataclass(frozen=True, slots=True)
class Score:
    """An answer scored on a problem: the reward (``total``, ``terms``) and what it was judged on.

    ``metrics`` (TVR's :func:`~tvr_gym.core.metrics.episode_metrics`) and ``acc`` are read from the same
    judgement, so the answer is parsed once and simulated at most once whatever is asked.
    """

    total: float
    terms: dict[str, float]
    judged: Judged

    @property
    def parsed(self) -> Parsed:
        return self.judged.parsed

    @property
    def metrics(self) -> dict[str, Any]:
        return episode_metrics(self.judged, self.judged.problem)

    @property
    def acc(self) -> float:
        """TVR's Acc, simulated only when it must be (:attr:`~tvr_gym.core.metrics.Judged.acc`)."""
        return self.judged.acc


def score_answer(text: Any, problem: Problem, reward: RewardFn | None = star_reward) -> Score:
    """The one scorer: any answer (text, :class:`Parsed` or :class:`Judged`) on ``problem`` with ``reward``.

    The environments' steps, the interactive terminal and the trainer-facing reward functions all score
    through it. ``reward=None`` gives a zero total with no terms (an interactive episode without a
    terminal reward still gets its metrics).
    """
    judged = judge(text, problem)
    if reward is None:
        return Score(0.0, {}, judged)
    result = reward(judged, problem)
    return Score(float(result.total), {k: float(v) for k, v in result.terms.items()}, judged)
