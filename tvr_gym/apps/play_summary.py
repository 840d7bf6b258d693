"""The human row of ``tvr-gym play``: eval's metrics over the records of real people, with n and 95% intervals.

``tvr-gym play --summary OUT`` reads ``OUT`` as eval's own code does (``eval.json``, then
:func:`~tvr_gym.agents.evaluate.read_journal`, :func:`~tvr_gym.agents.evaluate.summary_records` and
:func:`~tvr_gym.core.metrics.summarize`), keeps only records marked ``"player": "human"`` and not
``"test": true``, and refuses a directory without any. Intervals (95%, ``docs/play.md``):

- proportions (Acc, LAcc, the Basic scores, ID, OOD, by-step and by-view Acc, Success): Wilson score intervals;
- TAcc ``= (ID + 2 OOD) / 3``: MOVER (Zou and Donner 2008), which combines the Wilson limits of ID and OOD;
- other means (AD, AND, the reward or return, Misplaced, Fixed-Strict, turns, applied): the mean plus or minus
  1.96 standard errors (sample standard deviation; none for n = 1).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tvr_gym.agents.evaluate import EPISODES_FILE, MANIFEST_FILE, read_journal, summary_records
from tvr_gym.agents.interactive import INTERACTIVE_KEYS, interactive_means
from tvr_gym.apps.play_game import HUMAN, PLAYER_KEY, TEST_KEY
from tvr_gym.core.atomic import atomic_write_text
from tvr_gym.core.metrics import format_table, interactive_table, render_tables, summarize
from tvr_gym.core.reference import comparison_table
from tvr_gym.envs.registration import ENV_IDS, INTERACTIVE_ID

Z95 = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""
HUMAN_FILE = "human.json"
"""Where ``--summary`` writes the human row, beside eval's files."""
PROPORTIONS = ("LAcc", "Acc")
MEANS = {"AD": "dist", "AND": "norm_dist", "reward": "reward"}
"""The overall means of eval's table that are not proportions, and the record key each averages."""
BASIC = ("ObjAcc", "AttrAcc", "ValAcc", "Acc")
METHOD = ("95% intervals: Wilson score for proportions (Acc, LAcc, Basic, ID, OOD, Success), MOVER of the "
          "Wilson limits for TAcc, mean ± 1.96 standard errors for the other means")  # fmt: skip

Interval = tuple[float, float]


def wilson(successes: float, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval of ``successes`` out of ``n`` (``None`` for ``n = 0``)."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_interval(p: float | None, n: int) -> Interval | None:
    """:func:`wilson` of a mean of 0/1 scores ``p`` over ``n`` episodes."""
    return None if p is None else wilson(round(p * n), n)


def mean_interval(values: Sequence[float], z: float = Z95) -> Interval | None:
    """The mean of ``values`` plus or minus ``z`` standard errors (``None`` for fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean - z * sd / math.sqrt(n), mean + z * sd / math.sqrt(n)


def tacc_interval(id_acc: float | None, n_id: int, ood_acc: float | None, n_ood: int) -> Interval | None:
    """MOVER interval of ``TAcc = (ID + 2 OOD) / 3`` from the Wilson limits of ID and OOD."""
    id_ci, ood_ci = proportion_interval(id_acc, n_id), proportion_interval(ood_acc, n_ood)
    if id_ci is None or ood_ci is None or id_acc is None or ood_acc is None:
        return None
    weights = ((1 / 3, id_acc, id_ci), (2 / 3, ood_acc, ood_ci))
    tacc = sum(w * p for w, p, _ in weights)
    low = math.sqrt(sum((w * (p - ci[0])) ** 2 for w, p, ci in weights))
    high = math.sqrt(sum((w * (ci[1] - p)) ** 2 for w, p, ci in weights))
    return max(0.0, tacc - low), min(1.0, tacc + high)


def is_human(record: Mapping[str, Any]) -> bool:
    """A record of a real person: ``"player": "human"`` and not test data."""
    return record.get(PLAYER_KEY) == HUMAN and not record.get(TEST_KEY)


def read_run(out: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(``eval.json``, the journal's records by seed) of a play or eval directory, read as eval reads them.

    The journal is read from a copy, so a page still playing into ``out`` is left alone."""
    path = Path(out)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ValueError(f"--summary: {path} holds no {MANIFEST_FILE} (not a tvr-gym play or eval directory)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        seed, env_id = int(manifest["seed"]), str(manifest["env"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--summary: {manifest_path} is not an eval manifest ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="tvr-gym-summary-") as scratch:
        copy = Path(scratch) / EPISODES_FILE
        if (path / EPISODES_FILE).is_file():
            shutil.copyfile(path / EPISODES_FILE, copy)
        records = read_journal(copy, seed, env_id == INTERACTIVE_ID)
    return manifest, [records[s] for s in sorted(records)]


def human_row(records: Sequence[Mapping[str, Any]], env_id: str) -> dict[str, Any]:
    """Eval's summary (and an interactive run's means) of the human ``records``, with n and 95% intervals.

    ``ValueError`` when none of ``records`` is a real person's (:func:`is_human`)."""
    people = [r for r in records if is_human(r)]
    if not people:
        tests = sum(bool(r.get(TEST_KEY)) for r in records)
        raise ValueError(
            f"no records of real people ({len(records)} records, {tests} of them test data): a human row needs "
            "episodes played on `tvr-gym play` without --test-data"
        )
    rows = summary_records(people)
    summary = summarize(rows)
    overall, basic = summary["overall"], summary["basic"]
    n = overall["n"]
    intervals: dict[str, Any] = {
        "overall": {
            **{name: proportion_interval(overall[name], n) for name in PROPORTIONS},
            **{name: mean_interval([float(r[key]) for r in rows]) for name, key in MEANS.items()},
        },
        "basic": {name: proportion_interval(basic[name], basic["n"]) for name in BASIC},
        "by_steps": {k: {"Acc": proportion_interval(g["Acc"], g["n"])} for k, g in summary["by_steps"].items()},
        "by_view": {k: {"Acc": proportion_interval(g["Acc"], g["n"])} for k, g in summary["by_view"].items()},
    }
    views = summary["by_view"]
    n_ood = sum(views[v]["n"] for v in views if v != "center")
    intervals["ID"] = proportion_interval(summary["ID"], views["center"]["n"])
    intervals["OOD"] = proportion_interval(summary["OOD"], n_ood)
    intervals["TAcc"] = tacc_interval(summary["ID"], views["center"]["n"], summary["OOD"], n_ood)
    row: dict[str, Any] = {"player": HUMAN, "env": env_id, "n": n, "ignored": len(records) - n,
                           "summary": summary, "intervals": intervals, "method": METHOD}  # fmt: skip
    if env_id == INTERACTIVE_ID:
        row["interactive"] = interactive_means(people)
        intervals["interactive"] = {
            key: (proportion_interval(row["interactive"][key], n) if key == "success"
                  else mean_interval([float(r["interactive"][key]) for r in people]))
            for key in INTERACTIVE_KEYS
        }  # fmt: skip
        intervals["interactive"]["return"] = mean_interval([float(r["reward"]) for r in people])
    return row


def human_summary(out: str | os.PathLike[str], write: bool = True) -> dict[str, Any]:
    """:func:`human_row` of the records in ``out``; with ``write``, also saved as ``out/human.json``."""
    manifest, records = read_run(out)
    row = human_row(records, str(manifest["env"]))
    row["seed"], row["env_kwargs"] = manifest["seed"], manifest.get("env_kwargs", {})
    if write:
        try:
            atomic_write_text(Path(out) / HUMAN_FILE, json.dumps(row, indent=2) + "\n")
        except OSError as exc:
            raise ValueError(f"--summary: cannot write {Path(out) / HUMAN_FILE} ({exc.strerror or exc})") from None
    return row


def _cell(value: float | None, interval: Interval | None) -> list[Any]:
    return [value, *(interval if interval is not None else (None, None))]


def format_human_row(row: Mapping[str, Any]) -> str:
    """Text tables of :func:`human_row`: each metric with its interval, then eval's own tables."""
    summary, ci = row["summary"], row["intervals"]
    overall, basic = summary["overall"], summary["basic"]
    lines = [["Acc", overall["n"], *_cell(overall["Acc"], ci["overall"]["Acc"])],
             ["LAcc", overall["n"], *_cell(overall["LAcc"], ci["overall"]["LAcc"])]]  # fmt: skip
    lines += [[name, overall["n"], *_cell(overall[name], ci["overall"][name])] for name in MEANS]
    if basic["n"]:
        lines += [[f"Basic {name}", basic["n"], *_cell(basic[name], ci["basic"][name])] for name in BASIC]
    views = summary["by_view"]
    if any(views[v]["n"] for v in views if v != "center") and views["center"]["n"]:
        n_ood = sum(views[v]["n"] for v in views if v != "center")
        lines += [["ID", views["center"]["n"], *_cell(summary["ID"], ci["ID"])],
                  ["OOD", n_ood, *_cell(summary["OOD"], ci["OOD"])],
                  ["TAcc", overall["n"], *_cell(summary["TAcc"], ci["TAcc"])]]  # fmt: skip
    means = row.get("interactive")
    if means:
        names = (*INTERACTIVE_KEYS, "return")
        lines += [[name, overall["n"], *_cell(means[name], ci["interactive"][name])] for name in names]
    text = f"Human row of {row['env']}: n = {row['n']} ({row['ignored']} other records ignored)\n"
    text += render_tables([("", ["metric", "n", "value", "95% low", "95% high"], lines)])
    text += row["method"] + "\n\n" + format_table(summary)
    if row.get("interactive"):
        return text + interactive_table(row["interactive"])
    return text + comparison_table(summary, ENV_IDS.get(row["env"]), name=f"human, this page (n={row['n']})")


__all__ = [
    "HUMAN_FILE", "format_human_row", "human_row", "human_summary", "is_human", "mean_interval", "proportion_interval",
    "read_run", "tacc_interval", "wilson",
]  # fmt: skip
