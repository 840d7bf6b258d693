"""TVR metrics on hand-made cases, summaries on hand-made records, and the reference tables."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.metrics import episode_metrics, format_table, summarize
from tvr_gym.core.reference import ABLATION_REFERENCE, REFERENCE, ablation_table, comparison_table
from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.trance import Problem
from tvr_gym.core.transform import Transformation, out_options, replay

from props import examples, problems


def _obj(color: str, pos: tuple[int, int], size: str = "small") -> SceneObject:
    return SceneObject(color, "rubber", "cube", size, pos)


# Objects 0-2 are visible, 3-9 sit outside the visible square; no two overlap.
INITIAL = State(
    (
        _obj("red", (0, 0)),
        _obj("blue", (0, 10)),
        _obj("gray", (10, -10), "large"),
        _obj("green", (35, -35)),
        _obj("green", (35, 0)),
        _obj("green", (35, 35)),
        _obj("green", (-35, -35)),
        _obj("green", (-35, 0)),
        _obj("green", (-35, 35)),
        _obj("green", (0, -35)),
    )
)


def _problem(steps: list[Transformation]) -> Problem:
    return Problem(idx=0, initial=INITIAL, final=replay(INITIAL, steps), transformations=steps)


COLOR = _problem([Transformation(0, "color", "cyan")])
OUT = _problem([Transformation(1, "position", ("right", 2), out_options((0, 10)), "out")])
TWO = _problem([Transformation(1, "position", ("right", 1), type="inner"),
                Transformation(0, "position", ("right", 1), type="inner")])

BASIC_PERFECT = {"obj_acc": 1.0, "attr_acc": 1.0, "val_acc": 1.0, "basic_acc": 1.0}


@pytest.mark.parametrize(
    ("name", "problem", "answer", "expected"),
    [
        ("perfect", COLOR, "0.color.cyan",
         {"dist": 0, "norm_dist": 0.0, "loose_acc": 1.0, "acc": 1.0, "error_overlap": False, "error_out": False,
          **BASIC_PERFECT}),
        ("one wrong attribute value", COLOR, "0.color.green",
         {"dist": 1, "norm_dist": 1.0, "loose_acc": 0.0, "acc": 0.0, "error_overlap": False, "error_out": False,
          "obj_acc": 1.0, "attr_acc": 1.0, "val_acc": 0.0, "basic_acc": 0.0}),
        ("wrong object", COLOR, "1.color.cyan",
         {"dist": 2, "norm_dist": 2.0, "loose_acc": 0.0, "acc": 0.0, "error_overlap": False, "error_out": False,
          "obj_acc": 0.0, "attr_acc": 1.0, "val_acc": 1.0, "basic_acc": 0.0}),
        ("wrong attribute", COLOR, "0.shape.sphere",
         {"dist": 2, "norm_dist": 2.0, "loose_acc": 0.0, "acc": 0.0, "error_overlap": False, "error_out": False,
          "obj_acc": 1.0, "attr_acc": 0.0, "val_acc": 0.0, "basic_acc": 0.0}),
        ("out-move to another invisible cell", OUT, "1.position.behind-right.2",
         {"dist": 0, "norm_dist": 0.0, "loose_acc": 1.0, "acc": 1.0, "error_overlap": False, "error_out": False,
          **BASIC_PERFECT}),
        ("out-move to a visible cell", OUT, "1.position.right.1",
         {"dist": 1, "norm_dist": 1.0, "loose_acc": 0.0, "acc": 0.0, "error_overlap": False, "error_out": False,
          "obj_acc": 1.0, "attr_acc": 1.0, "val_acc": 0.0, "basic_acc": 0.0}),
        ("overlap on the way, right final state", TWO, "0.position.right.1, 1.position.right.1",
         {"dist": 0, "norm_dist": 0.0, "loose_acc": 1.0, "acc": 0.0, "error_overlap": True, "error_out": False}),
        ("overlapping final state", COLOR, "0.color.cyan, 1.position.left.1",
         {"dist": 1, "norm_dist": 1.0, "loose_acc": 0.0, "acc": 0.0, "error_overlap": True, "error_out": False,
          **BASIC_PERFECT}),
        ("off-grid move", COLOR, "0.color.cyan, 4.position.behind.1",
         {"dist": 0, "norm_dist": 0.0, "loose_acc": 1.0, "acc": 0.0, "error_overlap": False, "error_out": True,
          **BASIC_PERFECT}),
        ("two steps, half right", TWO, "1.position.right.1",
         {"dist": 1, "norm_dist": 0.5, "loose_acc": 0.0, "acc": 0.0, "error_overlap": False, "error_out": False}),
        ("no readable step", COLOR, "I don't know",
         {"dist": 1, "norm_dist": 1.0, "loose_acc": 0.0, "acc": 0.0, "error_overlap": False, "error_out": False,
          "obj_acc": 0.0, "attr_acc": 0.0, "val_acc": 0.0, "basic_acc": 0.0}),
    ],
)
def test_episode_metrics_by_hand(name, problem, answer, expected):
    got = episode_metrics(f"<think></think><answer>{answer}</answer>", problem)
    assert {k: got[k] for k in expected} == expected, name
    assert got["n_steps"] == problem.n_steps
    if problem.n_steps != 1:
        assert "obj_acc" not in got
    assert json.loads(json.dumps(got)) == got


def test_fixture_has_the_hand_made_geometry():
    """The cases above rely on: (0,30) and (20,30) invisible, (0,20) visible, and the overlap of 0 and 1."""
    assert ("behind-right", 2) in OUT.transformations[0].options
    assert ("right", 1) not in OUT.transformations[0].options


def test_official_fixture_metrics(trance_problems):
    from tvr_gym.core.answer import format_answer

    for problem in trance_problems[:20]:
        got = episode_metrics(format_answer(problem.transformations), problem)
        assert got["acc"] == 1.0 and got["dist"] == 0
        empty = episode_metrics("", problem)
        assert empty["dist"] >= 1 and empty["acc"] == 0.0


def _record(n_steps, dist, acc, loose, view=None, reward=None, basic=None):
    r = {"n_steps": n_steps, "dist": dist, "norm_dist": dist / n_steps, "loose_acc": loose, "acc": acc,
         "error_overlap": False, "error_out": False}
    if basic is not None:
        r.update(zip(("obj_acc", "attr_acc", "val_acc", "basic_acc"), basic))
    if view is not None:
        r["final_view"] = view
    if reward is not None:
        r["reward"] = reward
    return r


RECORDS = [
    _record(1, 0, 1.0, 1.0, "center", 6.0, (1.0, 1.0, 1.0, 1.0)),
    _record(1, 1, 0.0, 0.0, "left", 1.5, (1.0, 1.0, 0.0, 0.0)),
    _record(2, 2, 0.0, 0.0, "right", -1.0),
    _record(2, 0, 1.0, 1.0, "left", 11.0),
]


def test_summarize_by_hand():
    s = summarize(RECORDS)
    assert json.loads(json.dumps(s)) == s
    assert s["overall"] == {"n": 4, "AD": 0.75, "AND": 0.5, "LAcc": 0.5, "Acc": 0.5, "reward": 4.375}
    assert s["basic"] == {"n": 2, "ObjAcc": 1.0, "AttrAcc": 1.0, "ValAcc": 0.5, "Acc": 0.5}
    assert s["by_steps"]["1"] == {"n": 2, "AD": 0.5, "AND": 0.5, "LAcc": 0.5, "Acc": 0.5, "reward": 3.75}
    assert s["by_steps"]["2"] == {"n": 2, "AD": 1.0, "AND": 0.5, "LAcc": 0.5, "Acc": 0.5, "reward": 5.0}
    assert s["by_steps"]["3"] == {"n": 0, "AD": None, "AND": None, "LAcc": None, "Acc": None, "reward": None}
    assert set(s["by_steps"]) == {"1", "2", "3", "4"}
    assert s["by_view"]["center"]["Acc"] == 1.0
    assert s["by_view"]["left"]["Acc"] == 0.5
    assert s["by_view"]["right"]["Acc"] == 0.0
    assert s["ID"] == 1.0
    assert s["OOD"] == pytest.approx(1 / 3)
    assert s["TAcc"] == pytest.approx(5 / 9)


def test_summarize_without_views_or_records():
    s = summarize([{k: v for k, v in r.items() if k != "final_view"} for r in RECORDS])
    assert s["ID"] is None and s["OOD"] is None and s["TAcc"] is None
    assert s["by_view"]["center"]["n"] == 0
    empty = summarize([])
    assert empty["overall"]["n"] == 0 and empty["overall"]["Acc"] is None and empty["basic"]["Acc"] is None


def test_summarize_from_episode_metrics():
    records = [
        {**episode_metrics("0.color.cyan", COLOR), "final_view": "center"},
        {**episode_metrics("0.color.green", COLOR), "final_view": "right"},
        {**episode_metrics("1.position.behind-right.2", OUT), "final_view": "left"},
    ]
    s = summarize(records)
    assert s["overall"]["Acc"] == pytest.approx(2 / 3)
    assert s["overall"]["AD"] == pytest.approx(1 / 3)
    assert s["basic"]["ValAcc"] == pytest.approx(2 / 3)
    assert s["TAcc"] == pytest.approx((1.0 + 2 * 0.5) / 3)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"dist": 0}], r"records\[0\]: missing key 'n_steps'"),
        ([RECORDS[0], {**RECORDS[1], "final_view": "top"}], r"records\[1\].final_view: expected one of center"),
        ([{**RECORDS[0], "acc": "yes"}], r"records\[0\].acc: expected a finite number"),
        ([{**RECORDS[0], "dist": float("nan")}], r"records\[0\].dist"),
        (["x"], r"records\[0\]: expected a dict"),
    ],
)
def test_summarize_rejects_bad_records(records, message):
    with pytest.raises(ValueError, match=message):
        summarize(records)


def test_format_table_shows_the_numbers():
    text = format_table(summarize(RECORDS))
    for fragment in ("TVR metrics", "By final view", "STAR-R1", "Basic", "0.750", "4.375", "0.556", "center"):
        assert fragment in text


def test_reference_data_and_tables():
    assert REFERENCE["TranceNet"]["event_acc"] == 0.655 and REFERENCE["human"]["view_acc"] == 0.84
    assert REFERENCE["STAR-R1 (Qwen2.5-VL-7B, GRPO)"]["tacc"] == 0.614
    assert ABLATION_REFERENCE["no_wrong_penalty"] == {"tacc": 0.543, "ndiff": 0.44}
    text = comparison_table(summarize(RECORDS), setting="crossview")
    for fragment in ("TranceNet", "65.5", "97.4", "this run", "61.4", "55.6", "23.5"):
        assert fragment in text
    with pytest.raises(ValueError, match="setting: expected one of basic, event, crossview"):
        comparison_table(summarize(RECORDS), setting="view")
    table = ablation_table({"full": summarize(RECORDS)})
    assert "no_attribute_tier" in table and "55.56" in table and "0.31" in table
    with pytest.raises(ValueError, match="ablation: unknown 'best'"):
        ablation_table({"best": summarize(RECORDS)})


def test_dist_agrees_with_the_core_state_distance(trance_problems):
    """``dist`` is the core's TVR distance of the simulated state, for true, partial and wrong answers."""
    from tvr_gym.core.answer import format_answer
    from tvr_gym.core.transform import PAIRS, simulate, state_distance

    checked = 0
    for k, problem in enumerate(trance_problems):
        truth = [(t.obj_idx, t.attr, t.value) for t in problem.transformations]
        attr, value = PAIRS[(7 * k) % len(PAIRS)]
        answers = [truth, truth[:-1], truth[::-1], [*truth[1:], ((k + 3) % 10, attr, value)]]
        for steps in answers:
            got = episode_metrics(format_answer(steps), problem)
            sim = simulate(problem.initial, steps)
            expected = state_distance(sim.state, problem.final)
            assert got["dist"] == expected, (problem.idx, steps)
            assert got["error_out"] == sim.error_out and got["error_overlap"] == sim.error_overlap
            assert got["acc"] == float(expected == 0 and not sim.error_out and not sim.error_overlap)
            checked += expected > 0
    assert checked > 100


@settings(max_examples=examples(200), deadline=None)
@given(problem=problems(), data=st.data())
def test_the_quick_acc_equals_the_evaluator_acc(problem, data):
    """``tvr_acc`` (rejecting answers that leave a changed entry untouched) is ``episode_metrics``'s Acc,
    and the counts with the truth's changed objects equal the counts that compare every object."""
    from tvr_gym.core.answer import format_answer
    from tvr_gym.core.metrics import changed_objects, entry_counts, tvr_acc
    from tvr_gym.core.transform import PAIRS, simulate

    truth = [(t.obj_idx, t.attr, t.value) for t in problem.transformations]
    near = st.tuples(st.sampled_from(sorted({t.obj_idx for t in problem.transformations})), st.sampled_from(PAIRS))
    steps = data.draw(st.one_of(st.permutations(truth), st.lists(st.one_of(st.sampled_from(truth),
                      near.map(lambda t: (t[0], *t[1]))), max_size=6)))  # fmt: skip
    text = format_answer(steps)
    assert tvr_acc(text, problem) == episode_metrics(text, problem)["acc"]
    sim = simulate(problem.initial, steps)
    fast = entry_counts(problem.initial, problem.final, sim.state, changed_objects(problem))
    assert fast == entry_counts(problem.initial, problem.final, sim.state)
