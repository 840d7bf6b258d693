"""EasyR1: a batch reward function, ``worker.reward.reward_function=<this file>:compute_score``.

EasyR1 loads this file by its path (print it with
``python -c "import tvr_gym.integrations.easyr1 as m; print(m.__file__)"``) and reads
the module constants below. Weights come from ``worker.reward.reward_function_kwargs``
(e.g. ``{reward: state}`` or ``{wrong: 2.0}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tvr_gym.integrations.verl import scorer

REWARD_NAME = "tvr"
REWARD_TYPE = "batch"


def compute_score(reward_inputs: Sequence[Mapping[str, Any]], reward: str = "star", **weights: float) -> list[dict]:
    """One dict per input: ``overall`` (the reward), each reward term, and ``accuracy`` (TVR Acc).

    Each input holds ``response`` and ``ground_truth``, the problem as JSON (the ``answer`` column of
    ``tvr-gym export --format easyr1``).
    """
    score = scorer(reward, dict(weights))
    out = []
    for item in reward_inputs:
        total, terms, acc = score.score(item["response"], item["ground_truth"])
        out.append({"overall": total, **terms, "accuracy": float(acc or 0.0)})
    return out
