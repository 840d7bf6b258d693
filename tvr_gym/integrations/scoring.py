"""Scoring one completion against a problem given as JSON: the shared core of every trainer adapter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tvr_gym.core.reward import RewardFn, get_reward, score_answer
from tvr_gym.core.trance import Problem, strict_json
from tvr_gym.render.cache import LRU

PROBLEM_CACHE = 65_536
"""Parsed problems kept per process: a training run sees each ground truth G times in a row."""

_PROBLEMS: LRU[str, Problem] = LRU(PROBLEM_CACHE)


def problem_from_json(ground_truth: str | Mapping[str, Any]) -> Problem:
    """The :class:`Problem` of a ground truth: its JSON text (cached) or its dict (the TRANCE sample form)."""
    if isinstance(ground_truth, Mapping):
        return Problem.from_dict(ground_truth)
    problem = _PROBLEMS.get(ground_truth)
    if problem is None:
        try:
            problem = Problem.from_dict(strict_json(ground_truth))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ground truth: not a TVR problem as JSON ({exc}); export rows hold one") from None
        _PROBLEMS.put(ground_truth, problem)
    return problem


@dataclass
class Scorer:
    """A reward by name (``star``, ``state``, ``sparse`` or a STAR ablation) with optional weight overrides.

    ``score(text, ground_truth)`` gives (total, terms, acc): the reward, each of its terms, and TVR's
    Acc of the answer (1.0 or 0.0); ``acc`` is computed only when ``with_acc`` is set.
    """

    reward: str = "star"
    weights: dict[str, float] = field(default_factory=dict)
    fn: RewardFn = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.fn = get_reward(self.reward, **self.weights)

    def score(
        self, text: Any, ground_truth: str | Mapping[str, Any], with_acc: bool = True
    ) -> tuple[float, dict[str, float], float | None]:
        scored = score_answer(text, problem_from_json(ground_truth), self.fn)
        return scored.total, scored.terms, scored.acc if with_acc else None
