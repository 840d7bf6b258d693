"""TVR's evaluator metrics per episode, and summaries into its tables (``docs/rewards.md#metrics``)."""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from tvr_gym.core.answer import Parsed, Step, parse_answer
from tvr_gym.core.options import VIEWS
from tvr_gym.core.scene import State, is_visible_position
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem
from tvr_gym.core.transform import PAIRS, Simulation, moved, simulate

__all__ = [
    "INTERACTIVE_COLUMNS",
    "STATE_KEYS",
    "BASIC_KEYS",
    "VIEWS",
    "EntryCounts",
    "Judged",
    "as_parsed",
    "basic_scores",
    "entry_counts",
    "episode_line",
    "episode_metrics",
    "format_table",
    "interactive_table",
    "judge",
    "summarize",
    "tvr_acc",
]

STATE_KEYS = ("dist", "norm_dist", "loose_acc", "acc", "error_overlap", "error_out")
"""Keys present in every :func:`episode_metrics` result (plus ``n_steps``, ``n_pred``, ``n_unreadable``)."""
BASIC_KEYS = ("obj_acc", "attr_acc", "val_acc", "basic_acc")
"""Extra keys for 1-step problems (TVR's Basic metrics)."""
ID_VIEWS = (VIEWS[0],)
OOD_VIEWS = VIEWS[1:]
_ENTRY_ATTRS = tuple(a for a in SPEC.attributes if a in SPEC.values)


def as_parsed(text: Any) -> Parsed:
    """``text`` itself when it is already a :class:`Parsed`, else :func:`parse_answer` of it."""
    return text if isinstance(text, Parsed) else parse_answer(text)


def _position_equal(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a == b or (not is_visible_position(a) and not is_visible_position(b))


class EntryCounts(tuple):
    """(right, wrong, missed, changed): counts over the (object, attribute) entries (TVR's equality).

    ``changed`` entries differ between the true initial and final states; ``right`` of them are equal in
    the prediction; ``missed`` of them were left at the initial value; ``wrong`` entries were changed by
    the prediction to a value that is not the true final one. ``dist = wrong + missed``.
    """

    __slots__ = ()

    def __new__(cls, right: int, wrong: int, missed: int, changed: int) -> EntryCounts:
        return super().__new__(cls, (right, wrong, missed, changed))

    right = property(lambda self: self[0])
    wrong = property(lambda self: self[1])
    missed = property(lambda self: self[2])
    changed = property(lambda self: self[3])


def entry_counts(
    initial: State, final: State, predicted: State, changed_objects: Collection[int] | None = None
) -> EntryCounts:
    """Compare the predicted final state with the true one, entry by entry.

    ``changed_objects`` (the objects the truth changes, e.g. from :attr:`Problem.changed`) lets objects
    that neither the truth nor the prediction touched be skipped without comparing them.
    """
    right = wrong = missed = changed = 0
    for i, (a, b, p) in enumerate(zip(initial.objects, final.objects, predicted.objects, strict=True)):
        if changed_objects is not None:
            if p is a and i not in changed_objects:
                continue
        elif p == b and a == b:  # untouched by truth and prediction: nothing to count
            continue
        pairs = [(getattr(a, k), getattr(b, k), getattr(p, k)) for k in _ENTRY_ATTRS]
        for init, true, pred in pairs:
            if init != true:
                changed += 1
                if pred == true:
                    right += 1
                elif pred == init:
                    missed += 1
                else:
                    wrong += 1
            elif pred != true:
                wrong += 1
        ia, ta, pa = a.position, b.position, p.position
        if not _position_equal(ia, ta):
            changed += 1
            if _position_equal(pa, ta):
                right += 1
            elif _position_equal(pa, ia):
                missed += 1
            else:
                wrong += 1
        elif not _position_equal(pa, ta):
            wrong += 1
    return EntryCounts(right, wrong, missed, changed)


def basic_scores(steps: Sequence[Step], problem: Problem) -> dict[str, float]:
    """TVR's Basic metrics for the FIRST predicted step against the first true step (all 0 without a step)."""
    if not steps or not problem.transformations:
        return dict.fromkeys(BASIC_KEYS, 0.0)
    obj, attr, value = steps[0]
    truth = problem.transformations[0]
    obj_ok = obj == truth.obj_idx
    val_ok = attr == truth.attr and value in truth.options
    return {
        "obj_acc": float(obj_ok),
        "attr_acc": float(attr == truth.attr),
        "val_acc": float(val_ok),
        "basic_acc": float(obj_ok and val_ok),
    }


def changed_objects(problem: Problem) -> frozenset[int]:
    """The objects whose entries the problem changes."""
    return frozenset(i for i, _ in problem.changed)


class Judged:
    """One answer on one problem, simulated at most once: what every reward term and metric reads.

    Rewards (:mod:`tvr_gym.core.reward`) and :func:`episode_metrics` accept a :class:`Judged` wherever they
    accept an answer, so scoring an answer with a reward and its metrics (:func:`tvr_gym.core.reward.score_answer`)
    parses it once and simulates it at most once.
    """

    __slots__ = ("_counts", "_sim", "parsed", "problem")

    def __init__(self, parsed: Parsed, problem: Problem) -> None:
        self.parsed, self.problem = parsed, problem
        self._sim: Simulation | None = None
        self._counts: EntryCounts | None = None

    @property
    def sim(self) -> Simulation:
        """The readable steps simulated on the problem's initial state (TVR's evaluator)."""
        if self._sim is None:
            self._sim = simulate(self.problem.initial, self.parsed.steps)
        return self._sim

    @property
    def counts(self) -> EntryCounts:
        """The simulated state's :func:`entry_counts` against the true final state."""
        if self._counts is None:
            p = self.problem
            self._counts = entry_counts(p.initial, p.final, self.sim.state, changed_objects(p))
        return self._counts

    @property
    def acc(self) -> float:
        """TVR's Acc (``episode_metrics(...)["acc"]``), simulating only when it must.

        The true sequence itself gets the problem's own (once simulated) Acc; an answer that leaves an
        entry the truth changes untouched keeps its initial value there, so it is at distance >= 1
        without being simulated; any other answer is simulated.
        """
        steps, problem = self.parsed.steps, self.problem
        if self._counts is None:
            if len(steps) == problem.n_steps and tuple(steps) == problem.truth_steps:
                return problem.truth_acc  # the true sequence itself: simulated once per problem
            if not problem.changed <= {(obj, attr) for obj, attr, _ in steps}:
                return 0.0
        sim, counts = self.sim, self.counts
        return float(counts.wrong + counts.missed == 0 and not sim.error_out and not sim.error_overlap)


def net_change(problem: Problem, state: State) -> Judged:
    """The change from ``problem``'s initial state to ``state`` (reached legally), judged as an answer: what
    an interactive episode's end is scored on, whatever path led there.

    An (object, attribute) entry equal to the target's (TVR's equality) is the truth's own steps on it (a
    position reached by two moves still earns the true move, and an entry the truth changes and changes
    back earns those steps while it is as it began: reaching the target earns every true step). Any other
    entry that differs from the initial state is a wrong step on that object and attribute: its new value, or for a
    position the move that lands there, else a move outside the truth's options (an entry no single move
    reaches, such as one moved twice, still earns the object and attribute tiers; in the rare case that
    every move is among the options it is an unreadable item). Wrong steps come first,
    so a one-step problem's Basic scores judge the first step only when it is the right one. The answer
    is not well formed (no format term: an episode has no answer text) and simulates to ``state``.
    """
    initial, final = problem.initial, problem.final
    right: list[Step] = []
    wrong: list[Step] = []
    unjudged = 0  # a wrong position every move would call right: counted as an unreadable item
    for i, (start, now, goal) in enumerate(zip(initial.objects, state.objects, final.objects, strict=True)):
        for attr in SPEC.attributes:
            if attr == "position":
                if _position_equal(now.position, goal.position):
                    right.extend(_true_steps(problem, i, attr))
                elif _position_equal(start.position, now.position):
                    continue
                elif (move := _move_to(problem, i, start.position, now.position)) is not None:
                    wrong.append((i, attr, move))
                else:
                    unjudged += 1
            elif getattr(now, attr) == getattr(goal, attr):
                right.extend(_true_steps(problem, i, attr))
            elif getattr(start, attr) != getattr(now, attr):
                wrong.append((i, attr, getattr(now, attr)))
    judged = Judged(Parsed(steps=[*wrong, *right], n_unreadable=unjudged), problem)
    judged._sim = Simulation(state, False, False, 0)
    return judged


def _true_steps(problem: Problem, obj: int, attr: str) -> list[Step]:
    """The truth's steps on (obj, attr): none when it leaves the entry alone."""
    return [step for step in problem.truth_steps if step[0] == obj and step[1] == attr]


def _move_to(problem: Problem, obj: int, start: tuple[int, int], end: tuple[int, int]) -> tuple[str, int] | None:
    """The move from ``start`` to ``end`` (off the target, so outside the truth's options), or when no single
    move gets there, the first move outside the options of the truth's position steps on ``obj`` (``None``
    when every move is among them)."""
    moves = [value for attr, value in PAIRS if attr == "position"]
    for move in moves:
        if moved(start, move) == end:
            return move
    true_moves = [t for t in problem.transformations if (t.obj_idx, t.attr) == (obj, "position")]
    taken = {option for t in true_moves for option in t.options}
    return next((move for move in moves if move not in taken), None)


def judge(text: Any, problem: Problem) -> Judged:
    """``text`` as a :class:`Judged` answer on ``problem``: itself when it is one (of this problem), else
    its parse (any string, or a :class:`Parsed`)."""
    if isinstance(text, Judged) and text.problem is problem:
        return text
    return Judged(as_parsed(text.parsed if isinstance(text, Judged) else text), problem)


def tvr_acc(text: Any, problem: Problem) -> float:
    """TVR's Acc of one answer (``episode_metrics(...)["acc"]``; see :attr:`Judged.acc`)."""
    return judge(text, problem).acc


def episode_metrics(text: Any, problem: Problem) -> dict[str, Any]:
    """TVR metrics of one answer (any string, a :class:`Parsed` or a :class:`Judged`) on one problem.

    Always: ``dist`` (int), ``norm_dist`` (dist / true length, or dist for an empty truth),
    ``loose_acc`` and ``acc`` (0.0/1.0), ``error_overlap``, ``error_out`` (bool), ``n_steps`` (true
    length), ``n_pred`` (readable steps), ``n_unreadable``. For 1-step problems also ``obj_acc``,
    ``attr_acc``, ``val_acc`` and ``basic_acc`` (Basic Acc = ObjAcc and ValAcc, first predicted step).
    Unreadable items do not change the state; they only show in ``n_unreadable``.
    """
    judged = judge(text, problem)
    parsed, sim, counts = judged.parsed, judged.sim, judged.counts
    dist = counts.wrong + counts.missed
    n_gt = problem.n_steps
    out: dict[str, Any] = {
        "dist": dist,
        "norm_dist": dist / n_gt if n_gt else float(dist),
        "loose_acc": float(dist == 0),
        "acc": judged.acc,  # its counts are known here, so this reads them
        "error_overlap": sim.error_overlap,
        "error_out": sim.error_out,
        "n_steps": n_gt,
        "n_pred": len(parsed.steps),
        "n_unreadable": parsed.n_unreadable,
    }
    if n_gt == 1:
        out.update(basic_scores(parsed.steps, problem))
    return out


# ---------------------------------------------------------------- summaries

_OVERALL = (("AD", "dist"), ("AND", "norm_dist"), ("LAcc", "loose_acc"), ("Acc", "acc"))
_BASIC = (("ObjAcc", "obj_acc"), ("AttrAcc", "attr_acc"), ("ValAcc", "val_acc"), ("Acc", "basic_acc"))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _number(record: Mapping[str, Any], key: str, index: int) -> float:
    if key not in record:
        raise ValueError(f"records[{index}]: missing key {key!r}")
    value = record[key]
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"records[{index}].{key}: expected a finite number, got {value!r}")
    return float(value)


def _group(records: list[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(records)}
    for name, key in _OVERALL:
        out[name] = _mean([_number(r, key, i) for i, r in records])
    rewards = [_number(r, "reward", i) for i, r in records if "reward" in r]
    out["reward"] = _mean(rewards)
    return out


def _basic(records: list[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    one = [(i, r) for i, r in records if _number(r, "n_steps", i) == 1]
    out: dict[str, Any] = {"n": len(one)}
    for name, key in _BASIC:
        if key == "basic_acc":
            vals = [
                r["basic_acc"] if "basic_acc" in r else _number(r, "obj_acc", i) * _number(r, "val_acc", i)
                for i, r in one
            ]
            out[name] = _mean([float(v) for v in vals])
        else:
            out[name] = _mean([_number(r, key, i) for i, r in one])
    return out


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """TVR's tables (``docs/rewards.md#metrics``) from per-episode records (JSON-able; ``None`` where a group is empty).

    Each record holds the :func:`episode_metrics` keys and ``n_steps``; optional ``final_view``
    (``center|left|right``) and ``reward``. Returns ``overall`` (n, AD, AND, LAcc, Acc, reward),
    ``basic`` (over 1-step records), ``by_steps`` ("1".."4"), ``by_view`` and, with views,
    STAR-R1's ``ID`` (centre Acc), ``OOD`` (left+right Acc) and ``TAcc = (ID + 2·OOD) / 3``.
    """
    indexed: list[tuple[int, Mapping[str, Any]]] = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"records[{i}]: expected a dict, got {type(r).__name__}")
        view = r.get("final_view")
        if view is not None and view not in VIEWS:
            raise ValueError(f"records[{i}].final_view: expected one of {', '.join(VIEWS)}, got {view!r}")
        _number(r, "n_steps", i)
        indexed.append((i, r))
    lo, hi = SPEC.steps_per_setting["event"]
    step_counts = sorted({*range(lo, hi + 1), *(int(_number(r, "n_steps", i)) for i, r in indexed)})
    by_steps = {str(k): _group([(i, r) for i, r in indexed if int(r["n_steps"]) == k]) for k in step_counts}
    by_view = {v: _group([(i, r) for i, r in indexed if r.get("final_view") == v]) for v in VIEWS}
    ood_records = [(i, r) for i, r in indexed if r.get("final_view") in OOD_VIEWS]
    id_acc = by_view[ID_VIEWS[0]]["Acc"]
    ood_acc = _group(ood_records)["Acc"] if ood_records else None
    tacc = (id_acc + 2 * ood_acc) / 3 if id_acc is not None and ood_acc is not None else None
    return {
        "overall": _group(indexed),
        "basic": _basic(indexed),
        "by_steps": by_steps,
        "by_view": by_view,
        "ID": id_acc,
        "OOD": ood_acc,
        "TAcc": tacc,
    }


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_tables(
    tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[Any]]]], width: int = 100, digits: int = 3
) -> str:
    """Render (title, header, rows) tables to plain text with ``rich``."""
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    for title, header, rows in tables:
        table = Table(title=title, title_justify="left")
        for h in header:
            table.add_column(h, justify="right" if h != header[0] else "left")
        for row in rows:
            table.add_row(*(_cell(c, digits) for c in row))
        console.print(table)
    return buf.getvalue()


INTERACTIVE_COLUMNS = (
    ("success", "Success"), ("misplaced", "Misplaced"), ("fixed_strict", "Fixed-Strict"), ("turns", "turns"),
    ("applied", "applied"), ("return", "return"),
)  # fmt: skip
"""The interactive means an evaluation reports (``docs/interactive.md``), with their headings."""


def interactive_table(means: Mapping[str, Any]) -> str:
    """A text table of an interactive evaluation's means (:data:`INTERACTIVE_COLUMNS`)."""
    header = [h for _, h in INTERACTIVE_COLUMNS]
    return render_tables([("Interactive episodes", header, [[means.get(k) for k, _ in INTERACTIVE_COLUMNS]])])


_LINE_ORDER = ("acc", "loose_acc", "dist", "norm_dist", "obj_acc", "attr_acc", "val_acc")


def _short_number(value: Any) -> str:
    """``1``, ``0.5``, ``0.33``: a score as briefly as it reads (booleans as 0/1)."""
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def episode_line(metrics: Mapping[str, Any], interactive: Mapping[str, Any] | None = None) -> str:
    """One episode's scores on one line, under the tables' headings: ``Acc 1 · LAcc 1 · AD 0 · AND 0`` (and the
    Basic scores of a 1-step problem); an interactive episode's ``Success``, ``Misplaced``, ... first."""
    pairs = [(name, interactive[key]) for key, name in INTERACTIVE_COLUMNS if key in (interactive or {})]
    headings = {key: name for name, key in (*_OVERALL, *_BASIC[:3])}  # Basic Acc is left out: its heading is Acc
    pairs += [(headings[key], metrics[key]) for key in _LINE_ORDER if key in metrics]
    return " · ".join(f"{name} {_short_number(value)}" for name, value in pairs)


def format_table(summary: Mapping[str, Any]) -> str:
    """Human-readable text tables of a :func:`summarize` result."""
    cols = ["n", *(name for name, _ in _OVERALL), "reward"]
    groups = [("all", summary["overall"])]
    groups += [(f"{k} step{'s' if k != '1' else ''}", g) for k, g in summary["by_steps"].items()]
    tables: list[tuple[str, Sequence[str], Sequence[Sequence[Any]]]] = [
        ("TVR metrics", ["group", *cols], [[name, *(g[c] for c in cols)] for name, g in groups])
    ]
    if any(g["n"] for g in summary["by_view"].values()):
        rows = [[v, *(g[c] for c in cols)] for v, g in summary["by_view"].items()]
        tables.append(("By final view", ["view", *cols], rows))
        tables.append(("STAR-R1", ["", "ID", "OOD", "TAcc"], [["Acc", summary["ID"], summary["OOD"], summary["TAcc"]]]))
    basic = summary["basic"]
    if basic["n"]:
        names = [name for name, _ in _BASIC]
        tables.append(("Basic (1-step)", ["n", *names], [[basic["n"], *(basic[k] for k in names)]]))
    return render_tables(tables)
