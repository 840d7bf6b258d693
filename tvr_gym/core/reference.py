"""Published reference numbers (``docs/task.md#published-results``) as data, and comparison tables against a summary.

All accuracies are fractions in [0, 1] (STAR-R1's percentages are divided by 100).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tvr_gym.core.metrics import render_tables

__all__ = ["ABLATION_REFERENCE", "REFERENCE", "SETTING_COLUMNS", "ablation_table", "comparison_table"]

REFERENCE: dict[str, dict[str, float]] = {
    "TranceNet": {"basic_acc": 0.974, "event_acc": 0.655, "view_acc": 0.601},
    "human": {"event_acc": 0.83, "view_acc": 0.84},
    "STAR-R1 (Qwen2.5-VL-7B, GRPO)": {"id_acc": 0.763, "ood_acc": 0.539, "tacc": 0.614},
    "SFT (Qwen2.5-VL-7B)": {"id_acc": 0.842, "ood_acc": 0.309},
    "GPT-4o": {"tacc": 0.235},
}
"""Published test-set results, by model. Keys: basic_acc, event_acc, view_acc, id_acc, ood_acc, tacc."""

ABLATION_REFERENCE: dict[str, dict[str, float]] = {
    "full": {"tacc": 0.614, "ndiff": 0.31},
    "no_object_tier": {"tacc": 0.580, "ndiff": 0.37},
    "no_attribute_tier": {"tacc": 0.568, "ndiff": 0.40},
    "no_underprediction_penalty": {"tacc": 0.582, "ndiff": 0.41},
    "no_wrong_penalty": {"tacc": 0.543, "ndiff": 0.44},
    "naive_grpo": {"tacc": 0.545, "ndiff": 0.43},
}
"""STAR-R1's reward ablation (TAcc, NDiff = normalised distance); names match :data:`tvr_gym.core.reward.ABLATIONS`."""

_COLUMNS = (
    ("basic_acc", "Basic Acc"),
    ("event_acc", "Event Acc"),
    ("view_acc", "View Acc"),
    ("id_acc", "ID"),
    ("ood_acc", "OOD"),
    ("tacc", "TAcc"),
)
SETTING_COLUMNS = {"basic": "basic_acc", "event": "event_acc", "crossview": "view_acc"}
"""Which column a run's overall Acc belongs to, by setting."""


def summary_row(summary: Mapping[str, Any], setting: str | None = None) -> dict[str, float | None]:
    """The reference columns filled from a :func:`tvr_gym.core.metrics.summarize` result."""
    if setting is not None and setting not in SETTING_COLUMNS:
        raise ValueError(f"setting: expected one of {', '.join(SETTING_COLUMNS)}, got {setting!r}")
    row: dict[str, float | None] = {key: None for key, _ in _COLUMNS}
    row["basic_acc"] = summary["basic"]["Acc"]
    if setting in ("event", "crossview"):
        row[SETTING_COLUMNS[setting]] = summary["overall"]["Acc"]
    row["id_acc"], row["ood_acc"], row["tacc"] = summary["ID"], summary["OOD"], summary["TAcc"]
    return row


def comparison_table(summary: Mapping[str, Any], setting: str | None = None, name: str = "this run") -> str:
    """A text table of the published references with this summary as the last row (in percent)."""
    rows = [[model, *_percent(values.get(k) for k, _ in _COLUMNS)] for model, values in REFERENCE.items()]
    mine = summary_row(summary, setting)
    rows.append([name, *_percent(mine[k] for k, _ in _COLUMNS)])
    return render_tables([("Accuracy (%) vs published results", ["model", *(h for _, h in _COLUMNS)], rows)], digits=1)


def ablation_table(results: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """STAR-R1's ablation table; ``results`` maps an ablation name to a summary (TAcc, AND) of ours."""
    results = results or {}
    unknown = [k for k in results if k not in ABLATION_REFERENCE]
    if unknown:
        raise ValueError(f"ablation: unknown {unknown[0]!r}; valid: {', '.join(ABLATION_REFERENCE)}")
    rows = []
    for name, ref in ABLATION_REFERENCE.items():
        ours = results.get(name)
        tacc = ours.get("TAcc") if ours else None
        ndiff = ours["overall"]["AND"] if ours else None
        rows.append([name, 100 * ref["tacc"], ref["ndiff"], None if tacc is None else 100 * tacc, ndiff])
    header = ["reward", "paper TAcc (%)", "paper NDiff", "ours TAcc (%)", "ours NDiff"]
    return render_tables([("STAR-R1 reward ablation", header, rows)], digits=2)


def _percent(values: Any) -> list[float | None]:
    return [None if v is None else round(100 * v, 1) for v in values]
