"""verl: a custom reward function, ``custom_reward_function.path=pkg://tvr_gym.integrations.verl``.

verl calls it per sample with keyword arguments; extra keyword arguments come from
``+custom_reward_function.reward_kwargs.<name>=<value>`` (e.g. ``reward=state`` or ``wrong=2.0``).
"""

from __future__ import annotations

from typing import Any

from tvr_gym.core.options import is_number
from tvr_gym.integrations.scoring import Scorer

_SCORERS: dict[tuple[str, tuple[tuple[str, float], ...]], Scorer] = {}


def scorer(reward: str, weights: dict[str, float]) -> Scorer:
    """The (cached) scorer of a reward name and weights."""
    key = (reward, tuple(sorted(weights.items())))
    found = _SCORERS.get(key)
    if found is None:
        found = _SCORERS[key] = Scorer(reward, dict(weights))
    return found


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    reward: str = "star",
    **weights: Any,
) -> dict[str, float]:
    """verl's reward: ``{"score": total, <each reward term>, "acc": TVR Acc}``, the same keys for every sample.

    ``ground_truth`` is the problem as JSON (``reward_model.ground_truth`` of the export). Keyword
    arguments verl adds for other rewards (``reward_router_address``, ...) are ignored; numeric ones
    are reward weights.
    """
    numeric = {k: v for k, v in weights.items() if is_number(v)}
    total, terms, acc = scorer(reward, numeric).score(solution_str, ground_truth)
    return {"score": total, **terms, "acc": float(acc or 0.0)}
