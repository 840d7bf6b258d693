"""TRL: a reward function in ``GRPOTrainer``'s signature."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from tvr_gym.integrations.scoring import Scorer


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a plain string, or conversational messages (their text joined)."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion or ():
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
    return "".join(parts)


def trl_reward(name: str = "star", log_acc: bool = True, **weights: float) -> Callable[..., list[float]]:
    """A TRL reward function scoring completions against the ``problem`` column of ``tvr-gym export``.

    ``name`` is ``star``, ``state``, ``sparse`` or a STAR ablation; ``weights`` override its constants.
    The function is ``f(completions, problem, **kwargs) -> list[float]``; when TRL passes ``log_metric``
    it logs the mean of every reward term (``tvr/<term>``) and, with ``log_acc``, TVR's Acc (``tvr/acc``).
    Rewards equal ``env.step``'s for the same text and problem.
    """
    scorer = Scorer(name, dict(weights))

    def reward(completions: Sequence[Any], problem: Sequence[str], **kwargs: Any) -> list[float]:
        if len(completions) != len(problem):
            raise ValueError(f"trl_reward: {len(completions)} completions but {len(problem)} problems")
        totals: list[float] = []
        sums: dict[str, float] = defaultdict(float)
        accs = 0.0
        for completion, truth in zip(completions, problem):
            total, terms, acc = scorer.score(completion_text(completion), truth, with_acc=log_acc)
            totals.append(total)
            for key, value in terms.items():
                sums[key] += value
            accs += acc or 0.0
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and totals:
            for key, value in sums.items():
                log_metric(f"tvr/{key}", value / len(totals))
            if log_acc:
                log_metric("tvr/acc", accs / len(totals))
        return totals

    reward.__name__ = f"tvr_{name}"
    return reward
