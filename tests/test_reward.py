"""Rewards: STAR-R1 matching reward, state reward, sparse reward; properties on random and official problems."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import sys

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from tvr_gym.core.answer import format_answer, format_item, parse_answer
from tvr_gym.core.metrics import episode_metrics
from tvr_gym.core.reward import (
    ABLATIONS,
    MAX_ITEMS,
    REWARD_LIMIT,
    REWARDS,
    StarWeights,
    StateWeights,
    get_reward,
    sparse_reward,
    star_reward,
    state_reward,
)
from tvr_gym.core.scene import SceneObject, State, on_grid, overlaps
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import MAX_STEPS, Problem
from tvr_gym.core.transform import PAIRS, Transformation, moved, replay, simulate, state_distance

from props import examples, problems, random_state


def _truth(problem: Problem) -> list[tuple]:
    return [(t.obj_idx, t.attr, t.value) for t in problem.transformations]


def _max(problem: Problem) -> float:
    return 1.0 + 5.0 * problem.n_steps


def _legal(problem: Problem, steps: list[tuple]) -> bool:
    sim = simulate(problem.initial, steps)
    return not sim.error_out and not sim.error_overlap and state_distance(sim.state, problem.final) == 0


pred_steps = st.lists(
    st.tuples(st.integers(0, SPEC.n_objects - 1), st.sampled_from(PAIRS)).map(lambda t: (t[0], *t[1])),
    max_size=7,
)


# ---------------------------------------------------------------- true answers get the maximum

def test_official_true_answers_get_the_maximum(trance_problems):
    for problem in trance_problems:
        text = format_answer(problem.transformations, think="t")
        assert star_reward(text, problem).total == _max(problem)
        assert state_reward(text, problem).total == _max(problem)
        assert sparse_reward(text, problem).total == 1.0


@settings(max_examples=examples(60), deadline=None)
@given(problem=problems(), preds=pred_steps)
def test_true_answer_is_the_maximum(problem, preds):
    truth = format_answer(problem.transformations)
    other = format_answer(preds)
    for fn in (star_reward, state_reward):
        best = fn(truth, problem).total
        assert best == _max(problem)
        assert fn(other, problem).total <= best


@settings(max_examples=examples(60), deadline=None)
@given(problem=problems(), data=st.data())
def test_equivalent_reordering_gets_full_state_reward(problem, data):
    order = data.draw(st.permutations(_truth(problem)))
    assume(_legal(problem, list(order)))
    assert state_reward(format_answer(order), problem).total == _max(problem)


def _split_double_moves(steps: list[tuple]) -> list[tuple]:
    out = []
    for obj, attr, value in steps:
        if attr == "position" and value[1] == 2:
            out += [(obj, attr, (value[0], 1))] * 2
        else:
            out.append((obj, attr, value))
    return out


def test_equivalent_sequences_on_official_problems(trance_problems):
    """Another order, ``front 1`` twice for ``front 2`` and dropped redundant steps all get the maximum."""
    checked = 0
    for problem in trance_problems:
        truth = _truth(problem)
        variants = [list(p) for p in itertools.permutations(truth)][1:6]
        variants.append(_split_double_moves(truth))
        variants.append([s for i, s in enumerate(truth) if (s[0], s[1]) not in {(t[0], t[1]) for t in truth[i + 1 :]}])
        for steps in variants:
            if steps != truth and _legal(problem, steps):
                assert state_reward(format_answer(steps), problem).total == _max(problem), (problem.idx, steps)
                checked += 1
    assert checked > 50


def test_dropped_redundant_step_gets_full_state_reward():
    rng = random.Random(3)
    initial = random_state(rng)
    color = initial[0].color
    others = [c for c in SPEC.values["color"] if c != color]
    steps = [Transformation(0, "color", others[0]), Transformation(0, "color", others[1])]
    problem = Problem(0, initial, replay(initial, steps), steps)
    short = format_answer([steps[1]])
    assert state_reward(short, problem).total == _max(problem)
    assert star_reward(short, problem).total < _max(problem)


# ---------------------------------------------------------------- STAR reward properties

@settings(max_examples=examples(80), deadline=None)
@given(problem=problems(), preds=pred_steps.filter(bool), data=st.data())
def test_repeating_a_triplet_never_raises_star(problem, preds, data):
    """Once a triplet is written as often as the truth holds it (at least once), another copy cannot pay."""
    extra = data.draw(st.sampled_from(preds))
    assume(preds.count(extra) >= max(1, _full_matches(extra, problem)))
    before = star_reward(format_answer(preds), problem).total
    after = star_reward(format_answer([*preds, extra]), problem).total
    assert after <= before


def _full_matches(step: tuple, problem: Problem) -> int:
    obj, attr, value = step
    return sum(t.obj_idx == obj and t.attr == attr and value in t.options for t in problem.transformations)


def _repeating_problem() -> tuple[Problem, list[str]]:
    """Object 3 becomes metal, glass, metal: the truth repeats a step."""
    initial = random_state(random.Random(5))
    objs = list(initial.objects)
    objs[3] = SceneObject(objs[3].color, "rubber", objs[3].shape, objs[3].size, objs[3].position)
    initial = State(tuple(objs))
    steps = [Transformation(3, "material", m) for m in ("metal", "glass", "metal")]
    return Problem(0, initial, replay(initial, steps), steps), ["3.material.metal", "3.material.glass"]


def test_a_truth_that_repeats_a_step_is_matched_by_the_same_repetition():
    problem, (metal, glass) = _repeating_problem()
    wrap = "<think></think><answer>{}</answer>".format
    assert star_reward(format_answer(problem.transformations), problem).total == _max(problem) == 16.0
    assert star_reward(wrap(f"{metal}, {glass}, {metal}"), problem).terms == {
        "format": 1.0, "pos": 15.0, "pun_wrong": 0.0, "pun_missing": 0.0,
    }
    # the repetition counts only as often as the truth holds it: a third metal is wrong
    spam = star_reward(wrap(f"{metal}, {glass}, {metal}, {metal}"), problem)
    assert spam.terms == {"format": 1.0, "pos": 15.0, "pun_wrong": -1.0, "pun_missing": 0.0}
    two_metals = star_reward(wrap(f"{metal}, {metal}"), problem)
    assert two_metals.terms == {"format": 1.0, "pos": 10.0, "pun_wrong": 0.0, "pun_missing": -1.0}
    # a correct triplet repeated beyond the truth cannot collect a partial tier from another true step
    glass_twice = star_reward(wrap(f"{glass}, {glass}"), problem)
    assert glass_twice.total == star_reward(wrap(glass), problem).total == 1.0 + 5.0 - 2.0


@pytest.mark.parametrize("seed,maximum", [(746, 16.0), (814, 21.0)])
def test_true_answers_of_event_episodes_with_repeated_steps_score_the_maximum(seed, maximum):
    import gymnasium as gym

    env = gym.make("tvr_gym:TVR-Event-v0", render_size=(32, 24), renderer="numpy")
    _, info = env.reset(seed=seed)
    items = parse_answer(info["truth"]).steps
    assert len(set(items)) < len(items)  # the truth repeats a step
    _, reward, _, _, step_info = env.step(info["truth"])
    assert reward == maximum == 1.0 + 5.0 * len(items)
    assert step_info["reward_terms"]["pun_wrong"] == 0.0


@settings(max_examples=examples(80), deadline=None)
@given(problem=problems(), preds=pred_steps, data=st.data())
def test_adding_a_wrong_triplet_lowers_star(problem, preds, data):
    """A triplet on an object no true step touches costs exactly ``wrong`` once predictions cover the truth."""
    touched = {t.obj_idx for t in problem.transformations}
    free = [o for o in range(SPEC.n_objects) if o not in touched]
    obj = data.draw(st.sampled_from(free))
    attr, value = data.draw(st.sampled_from(PAIRS))
    assume(len(preds) >= problem.n_steps)
    before = star_reward(format_answer(preds), problem).total
    after = star_reward(format_answer([*preds, (obj, attr, value)]), problem).total
    assert after == before - 1.0


@settings(max_examples=examples(60), deadline=None)
@given(problem=problems(), data=st.data())
def test_true_answer_plus_any_wrong_triplet_loses_one(problem, data):
    obj = data.draw(st.integers(0, SPEC.n_objects - 1))
    attr, value = data.draw(st.sampled_from(PAIRS))
    assume(not any(t.obj_idx == obj and t.attr == attr and value in t.options for t in problem.transformations))
    text = format_answer([*_truth(problem), (obj, attr, value)])
    assert star_reward(text, problem).total == _max(problem) - 1.0


@settings(max_examples=examples(40), deadline=None)
@given(problem=problems())
def test_empty_answer_scores_minus_n_gt(problem):
    assert star_reward("", problem).total == -problem.n_steps
    assert star_reward("<think></think><answer></answer>", problem).total == 1.0 - problem.n_steps
    assert state_reward("", problem).total < 0
    assert sparse_reward("", problem).total == 0.0


def _brute_force_star(steps: list[tuple], n_unreadable: int, problem: Problem, w: StarWeights) -> float:
    """Reference: the best total over every one-to-one partial matching (small inputs only), in which the
    copies of one triplet are matched at most max(1, number of true steps it fully equals) times."""
    gts = problem.transformations
    n_pred = len(steps) + n_unreadable
    best = -math.inf
    slots = list(range(len(gts))) + [None] * len(steps)
    for assign in set(itertools.permutations(slots, len(steps))):
        matched = [s for s, j in zip(steps, assign) if j is not None]
        if any(matched.count(s) > max(1, _full_matches(s, problem)) for s in matched):
            continue
        pos, n_full = 0.0, 0
        for (obj, attr, value), j in zip(steps, assign):
            if j is None or gts[j].obj_idx != obj:
                continue
            t = gts[j]
            if t.attr == attr and value in t.options:
                pos, n_full = pos + w.full, n_full + 1
            elif t.attr == attr:
                pos += max(w.attribute, w.object)
            else:
                pos += w.object
        best = max(best, pos - w.wrong * (n_pred - n_full))
    return best - w.missing * max(0, len(gts) - n_pred)


@settings(max_examples=examples(120), deadline=None)
@given(
    problem=problems(),
    data=st.data(),
    weights=st.sampled_from(list(ABLATIONS.values())),
    n_unreadable=st.integers(0, 2),
)
def test_star_matching_is_the_exact_optimum(problem, data, weights, n_unreadable):
    touched = sorted({t.obj_idx for t in problem.transformations})
    near = st.tuples(st.sampled_from(touched), st.sampled_from(PAIRS)).map(lambda t: (t[0], *t[1]))
    preds = data.draw(st.lists(st.one_of(near, st.sampled_from(_truth(problem))), max_size=5))
    text = ", ".join([*(format_item(s) for s in preds), *["12.color.red"] * n_unreadable])
    got = star_reward(text, problem, weights)
    assert got.total == pytest.approx(_brute_force_star(preds, n_unreadable, problem, weights))
    assert got.total == pytest.approx(sum(got.terms.values()))


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data(), weights=st.sampled_from(list(ABLATIONS.values())))
def test_star_matching_is_the_exact_optimum_when_the_truth_repeats_a_step(data, weights):
    problem, _ = _repeating_problem()
    near = st.tuples(st.just(3), st.sampled_from(PAIRS)).map(lambda t: (t[0], *t[1]))
    preds = data.draw(st.lists(st.one_of(near, st.sampled_from(_truth(problem))), max_size=5))
    got = star_reward(", ".join(format_item(s) for s in preds), problem, weights)
    assert got.total == pytest.approx(_brute_force_star(preds, 0, problem, weights))


def _one_step_problem() -> Problem:
    initial = random_state(random.Random(7))
    old = initial[2].color
    new = next(c for c in SPEC.values["color"] if c != old)
    steps = [Transformation(2, "color", new)]
    return Problem(0, initial, replay(initial, steps), steps)


def test_star_tiers_and_terms_by_hand():
    problem = _one_step_problem()
    new = problem.transformations[0].value
    other = next(c for c in SPEC.values["color"] if c not in (new, problem.initial[2].color))
    wrap = "<think></think><answer>{}</answer>"
    full = star_reward(wrap.format(f"2.color.{new}"), problem)
    assert full.terms == {"format": 1.0, "pos": 5.0, "pun_wrong": 0.0, "pun_missing": 0.0}
    attr_tier = star_reward(wrap.format(f"2.color.{other}"), problem)
    assert attr_tier.terms == {"format": 1.0, "pos": 1.5, "pun_wrong": -1.0, "pun_missing": 0.0}
    obj_tier = star_reward(f"2.shape.{SPEC.values['shape'][0]}", problem)
    assert obj_tier.total == 0.5 - 1.0
    miss = star_reward(f"3.color.{new}", problem)
    assert miss.total == -1.0
    garbage = star_reward("2.color.pink, 2.color." + new, problem)
    assert garbage.terms == {"format": 0.0, "pos": 5.0, "pun_wrong": -1.0, "pun_missing": 0.0}
    duplicate = star_reward(f"2.color.{new}, 2.color.{new}", problem)
    assert duplicate.terms == {"format": 0.0, "pos": 5.0, "pun_wrong": -1.0, "pun_missing": 0.0}


def test_duplicate_partial_guess_is_not_matched_twice():
    """Two true color changes of object 2: a repeated wrong color must not collect the attribute tier twice."""
    problem = _one_step_problem()
    colors = [c for c in SPEC.values["color"] if c != problem.initial[2].color]
    steps = [Transformation(2, "color", colors[0]), Transformation(2, "color", colors[1])]
    problem = Problem(0, problem.initial, replay(problem.initial, steps), steps)
    once = star_reward(f"2.color.{colors[2]}", problem)
    assert once.terms == {"format": 0.0, "pos": 1.5, "pun_wrong": -1.0, "pun_missing": -1.0}
    twice = star_reward(f"2.color.{colors[2]}, 2.color.{colors[2]}", problem)
    assert twice.terms == {"format": 0.0, "pos": 1.5, "pun_wrong": -2.0, "pun_missing": 0.0}
    assert twice.total <= once.total


def test_star_ablations_are_one_argument_each():
    problem = _one_step_problem()
    new = problem.transformations[0].value
    other = next(c for c in SPEC.values["color"] if c not in (new, problem.initial[2].color))
    attr_answer, obj_answer = f"2.color.{other}", f"2.size.{SPEC.values['size'][0]}"
    assert star_reward(obj_answer, problem, StarWeights(object=0.0)).total == -1.0
    assert star_reward(attr_answer, problem, StarWeights(attribute=0.0)).total == 0.5 - 1.0  # falls to object tier
    assert star_reward(attr_answer, problem, StarWeights(attribute=0.0, object=0.0)).total == -1.0
    assert star_reward("", problem, StarWeights(missing=0.0)).total == 0.0
    assert star_reward(attr_answer, problem, StarWeights(wrong=0.0)).total == 1.5
    assert get_reward("no_wrong_penalty")(attr_answer, problem).total == 1.5
    assert get_reward("star", wrong=0.0)(attr_answer, problem).total == 1.5


def test_out_move_options_count_as_full_match(trance_problems):
    checked = 0
    for problem in trance_problems:
        for i, t in enumerate(problem.transformations):
            for alt in t.options:
                if alt == t.value:
                    continue
                steps = _truth(problem)
                steps[i] = (t.obj_idx, t.attr, alt)
                assert star_reward(format_answer(steps), problem).total == _max(problem)
                checked += 1
    assert checked > 10


# ---------------------------------------------------------------- state and sparse by hand

def test_state_reward_terms_by_hand():
    problem = _one_step_problem()
    new = problem.transformations[0].value
    other = next(c for c in SPEC.values["color"] if c not in (new, problem.initial[2].color))
    shape = next(s for s in SPEC.values["shape"] if s != problem.initial[5].shape)
    got = state_reward(f"<think></think><answer>2.color.{other}, 5.shape.{shape}, 12.color.red</answer>", problem)
    assert got.terms == {
        "format": 1.0, "correct": 0.0, "wrong_change": -2.0, "missing": 0.0, "illegal": 0.0, "unreadable": -1.0,
    }
    half = Problem(0, problem.initial, replay(problem.initial, [*problem.transformations, _shape_step(problem)]),
                   [*problem.transformations, _shape_step(problem)])
    got = state_reward(f"2.color.{new}", half)
    assert got.terms["correct"] == 5.0 and got.terms["missing"] == -1.0 and got.total == 4.0
    weights = StateWeights(full=2.0, missing=0.5)
    assert state_reward(f"2.color.{new}", half, weights).total == 2.0 - 0.5


def _shape_step(problem: Problem) -> Transformation:
    shape = next(s for s in SPEC.values["shape"] if s != problem.initial[5].shape)
    return Transformation(5, "shape", shape)


def test_state_reward_charges_illegal_steps():
    initial = random_state(random.Random(11))
    lim = SPEC.grid_limit
    objs = list(initial.objects)
    objs[0] = SceneObject(objs[0].color, objs[0].material, objs[0].shape, objs[0].size, (lim, 0))
    objs[1] = SceneObject(objs[1].color, objs[1].material, objs[1].shape, objs[1].size, (-lim, -lim))
    initial = State(tuple(objs))
    assume_ok = [o for o in range(2, 10) if not overlaps(objs[0], objs[o]) and not overlaps(objs[1], objs[o])]
    assert len(assume_ok) == 8
    color = next(c for c in SPEC.values["color"] if c != initial[3].color)
    steps = [Transformation(3, "color", color)]
    problem = Problem(0, initial, replay(initial, steps), steps)
    off_grid = f"3.color.{color}, 0.position.behind.1"
    got = state_reward(off_grid, problem)
    assert got.terms["illegal"] == -1.0 and got.terms["correct"] == 5.0 and got.total == 4.0
    assert sparse_reward(off_grid, problem).total == 1.0  # 1-step: Basic Acc of the first step


def test_sparse_reward():
    problem = _one_step_problem()
    new = problem.transformations[0].value
    assert sparse_reward(f"2.color.{new}", problem).terms == {"acc": 1.0}
    assert sparse_reward(f"3.color.{new}", problem).total == 0.0
    assert sparse_reward("", problem).total == 0.0


def _two_colour_problem(initial: State) -> Problem:
    steps = [Transformation(o, "color", next(c for c in SPEC.values["color"] if c != initial[o].color)) for o in (0, 1)]
    return Problem(0, initial, replay(initial, steps), steps)


def test_sparse_reward_multi_step_needs_a_legal_sequence():
    """Reaching the true final state is not enough: an off-grid move or an overlap on the way scores 0."""
    lim = SPEC.grid_limit
    parked = [(-lim, -lim), (-lim, 0), (-lim, lim), (0, -lim), (0, lim), (lim, -lim), (lim, 0), (lim, lim)]
    objs = [SceneObject("gray", "rubber", "cube", "small", pos) for pos in [(0, 0), (0, 20), *parked]]
    problem = _two_colour_problem(State(tuple(objs)))
    truth = ", ".join(format_item((t.obj_idx, t.attr, t.value)) for t in problem.transformations)
    assert sparse_reward(truth, problem).total == 1.0
    off_grid = f"{truth}, 2.position.front.1"  # object 2 sits at x = -40: the move is skipped, flagged
    assert episode_metrics(off_grid, problem)["dist"] == 0
    assert sparse_reward(off_grid, problem).total == 0.0
    detour = f"{truth}, 1.position.front.2, 1.position.behind.2"  # (0, 20) -> (-20, 20) -> back: legal
    assert sparse_reward(detour, problem).total == 1.0
    overlap = f"{truth}, 1.position.left.2, 1.position.right.2"  # (0, 20) -> (0, 0): onto object 0, then back
    assert episode_metrics(overlap, problem)["dist"] == 0 and episode_metrics(overlap, problem)["error_overlap"]
    assert sparse_reward(overlap, problem).total == 0.0


def test_state_reward_of_a_truth_that_changes_nothing():
    """Red, blue, red: not generated (rule 9), but a user's or an official problem may hold one."""
    initial = random_state(random.Random(13))
    colours = [c for c in SPEC.values["color"] if c != initial[0].color]
    steps = [Transformation(0, "color", colours[0]), Transformation(0, "color", initial[0].color)]
    problem = Problem(0, initial, replay(initial, steps), steps)
    assert state_distance(problem.initial, problem.final) == 0
    assert state_reward("<think></think><answer></answer>", problem).terms["correct"] == 10.0
    assert state_reward(format_answer(steps), problem).total == _max(problem)
    wrong = state_reward(f"0.color.{colours[1]}", problem)
    assert wrong.terms["correct"] == 0.0 and wrong.terms["wrong_change"] == -1.0


def test_sparse_reward_multi_step(trance_problems):
    problem = next(p for p in trance_problems if p.n_steps == 3)
    truth = _truth(problem)
    assert sparse_reward(format_answer(truth), problem).total == 1.0
    assert sparse_reward(format_answer(truth[:-1]), problem).total == 0.0


# ---------------------------------------------------------------- robustness and formatting invariance

def _variants(steps: list[tuple]) -> list[str]:
    def item(s, sep=".", dash="-"):
        return format_item(s).replace(".", sep).replace("-", dash)

    def tup(s):
        obj, attr, value = s
        parts = [str(obj), attr, *(map(str, value) if isinstance(value, tuple) else [value])]
        return "(" + ", ".join(parts) + ")"

    return [
        ", ".join(item(s) for s in steps).upper(),
        "; ".join(item(s) for s in steps),
        "\n".join(item(s) for s in steps),
        ", ".join(tup(s) for s in steps),
        ", ".join(item(s, " . ", " - ") for s in steps),
        "\n".join("object " + item(s, " ", "_").replace(" ", " : ", 1) for s in steps),
    ]


@settings(max_examples=examples(50), deadline=None)
@given(problem=problems(), preds=pred_steps)
def test_rewards_invariant_to_formatting_variants(problem, preds):
    canonical = ", ".join(format_item(s) for s in preds)
    for fn in REWARDS.values():
        expected = fn(f"<think>a</think><answer>{canonical}</answer>", problem)
        for variant in _variants(preds):
            got = fn(f"<think>a</think><answer>{variant}</answer>", problem)
            assert got == expected, variant


@settings(max_examples=examples(100), deadline=None)
@given(problem=problems(max_steps=2), text=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_input_gives_a_finite_reward(problem, text):
    for fn in REWARDS.values():
        result = fn(text, problem)
        assert math.isfinite(result.total)
        assert result.total == pytest.approx(sum(result.terms.values()))
        assert all(math.isfinite(v) for v in result.terms.values())


def test_huge_and_odd_inputs(trance_problems):
    problem = trance_problems[0]
    for text in ["x" * 3_000_000, None, b"\xff\xfe" * 10_000, "\x00" * 10_000, "<answer>" * 100_000]:
        for fn in REWARDS.values():
            assert math.isfinite(fn(text, problem).total)


def test_parsed_input_is_accepted(trance_problems):
    problem = trance_problems[5]
    text = format_answer(problem.transformations)
    parsed = parse_answer(text)
    for fn in REWARDS.values():
        assert fn(parsed, problem) == fn(text, problem)


def test_registry_and_errors():
    assert set(REWARDS) == {"star", "state", "sparse"}
    assert get_reward("state") is state_reward
    with pytest.raises(ValueError, match="valid: star, state, sparse"):
        get_reward("dense")
    with pytest.raises(ValueError, match="unknown 'bonus'; valid: format, full"):
        get_reward("star", bonus=1.0)
    with pytest.raises(ValueError, match="no weights"):
        get_reward("sparse", full=1.0)
    for bad in (float("inf"), float("nan"), -1.0, "2", None, True):
        with pytest.raises(ValueError, match="wrong must be a finite number >= 0"):
            get_reward("star", wrong=bad)
        with pytest.raises(ValueError, match="wrong must be a finite number >= 0"):
            StarWeights(wrong=bad)
        with pytest.raises(ValueError, match="illegal must be a finite number >= 0"):
            StateWeights(illegal=bad)


# ---------------------------------------------------------------- weights keep every reward finite

_FLOAT_MAX = sys.float_info.max
_WEIGHTS = {"star": (StarWeights, star_reward), "state": (StateWeights, state_reward)}


def _adversarial_answers(problem: Problem) -> list[str]:
    """Answers that make each weight count about as often as it can: the truth, nothing, the most items,
    partial tiers on every true step, every entry changed wrongly, and the most off-grid moves."""
    truth = _truth(problem)
    items = MAX_ITEMS // 2  # "1," per item: the most items the capped answer region can hold
    near_value, near_attr = [], []
    for t in problem.transformations:
        values = SPEC.moves if t.attr == "position" else SPEC.values[t.attr]
        near_value.append((t.obj_idx, t.attr, next(v for v in values if v not in t.options)))
        other = next(a for a in SPEC.values if a != t.attr)
        near_attr.append((t.obj_idx, other, SPEC.values[other][0]))
    wrong_entries = [
        (k, attr, next(v for v in SPEC.values[attr] if v not in (obj.get(attr), problem.final[k].get(attr))))
        for k, obj in enumerate(problem.initial) for attr in SPEC.values
        if len({obj.get(attr), problem.final[k].get(attr)}) < len(SPEC.values[attr])
    ]  # fmt: skip
    off_grid = next(
        (k, "position", m)
        for k, obj in enumerate(problem.initial) for m in SPEC.moves if not on_grid(moved(obj.position, m))
    )  # fmt: skip
    return [
        format_answer(truth, think="t"),
        "",
        "1," * items,
        format_answer(near_value),
        format_answer(near_attr),
        format_answer(wrong_entries),
        format_answer([off_grid] * (MAX_ITEMS // (len(format_item(off_grid)) + 2))),
        format_answer(truth) + ", 1" * ((MAX_ITEMS - len(format_answer(truth))) // 3),
    ]


@pytest.fixture(scope="module")
def longest_answers(trance_problems) -> list[tuple[Problem, list[str]]]:
    return [(p, _adversarial_answers(p)) for p in trance_problems if p.n_steps == MAX_STEPS and any(
        not on_grid(moved(o.position, m)) for o in p.initial for m in SPEC.moves
    )][:5]  # fmt: skip


def _draw_weights(data: st.DataObject, cls: type) -> dict[str, float]:
    """Finite weights >= 0 of every magnitude: small or powers of ten up to 1e300, and perhaps one of any
    size up to the largest float, or at (or just past) the limit over its count."""
    names = [f.name for f in dataclasses.fields(cls)]
    usual = st.one_of(st.floats(0, 10), st.integers(-10, 300).map(lambda e: 10.0**e))
    values = {name: data.draw(usual, label=name) for name in names}
    big = data.draw(st.none() | st.sampled_from(names), label="big weight")
    if big is not None:
        edge = REWARD_LIMIT / cls.COUNTS[big]
        values[big] = data.draw(
            st.one_of(st.floats(0, _FLOAT_MAX), st.sampled_from([edge, math.nextafter(edge, math.inf)])), label=big
        )
    return values


@settings(max_examples=examples(100), deadline=None)
@given(kind=st.sampled_from(sorted(_WEIGHTS)), data=st.data())
def test_accepted_weights_keep_every_reward_finite(longest_answers, kind, data):
    """Any finite weights >= 0: refused exactly when sum(weight x count) passes REWARD_LIMIT, and when
    accepted every reward, term and total stays finite and within that bound."""
    cls, fn = _WEIGHTS[kind]
    values = _draw_weights(data, cls)
    over = sum(v * cls.COUNTS[k] for k, v in values.items()) > REWARD_LIMIT
    event("refused" if over else "accepted")
    if over:
        with pytest.raises(ValueError, match=rf"{kind} weights: \w+=.* is too large"):
            cls(**values)
        return
    weights = cls(**values)
    problem, answers = data.draw(st.sampled_from(longest_answers), label="problem")
    for answer in answers:
        result = fn(answer, problem, weights)
        assert all(math.isfinite(v) and abs(v) <= weights.bound() for v in result.terms.values())
        assert math.isfinite(result.total) and abs(result.total) <= weights.bound()


@pytest.fixture(scope="module")
def counted_weights(longest_answers) -> list[tuple[str, str, float]]:
    """(reward kind, weight, m) for every weight that an adversarial answer counts m >= 2 times in a term
    (found with that weight 1 and the others 0); a weight counted once cannot overflow on its own."""
    found = []
    for kind, (cls, fn) in sorted(_WEIGHTS.items()):
        zero = dict.fromkeys((f.name for f in dataclasses.fields(cls)), 0.0)
        for key in zero:
            unit = cls(**{**zero, key: 1.0})
            m = max(
                abs(v) for p, answers in longest_answers for a in answers for v in fn(a, p, unit).terms.values()
            )
            if m >= 2:
                found.append((kind, key, m))
    assert {key for _, key, _ in found} >= {"full", "wrong", "missing", "illegal", "unreadable", "attribute", "object"}
    return found


@settings(max_examples=examples(100), deadline=None)
@given(data=st.data())
def test_weights_that_overflow_a_reward_are_refused(counted_weights, data):
    """A weight that some answer counts m times overflows that reward once weight x m does (the others 0,
    the reward is exactly the weight times its unit-weight terms): such weights are refused, by name."""
    kind, key, m = data.draw(st.sampled_from(counted_weights), label="weight")
    cls = _WEIGHTS[kind][0]
    value = data.draw(st.floats(_FLOAT_MAX / m, _FLOAT_MAX), label="value")
    assume(math.isinf(value * m))
    zero = dict.fromkeys((f.name for f in dataclasses.fields(cls)), 0.0)
    with pytest.raises(ValueError, match=rf"^{kind} weights: {key}=.* is too large: a reward can count it"):
        cls(**{**zero, key: value})


def test_an_overflowing_weight_is_refused_by_name_everywhere(trance_problems):
    """``reward_weights={"full": 1e308}`` used to give an infinite reward; large weights that keep it finite pass."""
    import gymnasium as gym

    problem = next(p for p in trance_problems if p.n_steps == MAX_STEPS)
    with pytest.raises(ValueError, match=r"^star weights: full=1e\+308 is too large"):
        StarWeights(full=1e308)
    with pytest.raises(ValueError, match=rf"^star weights: wrong=1e\+305 is too large: .* it {MAX_ITEMS + MAX_STEPS} "):
        get_reward("star", wrong=1e305)
    with pytest.raises(ValueError, match=r"^state weights: full=1e\+306 is too large"):
        StateWeights(full=1e306)
    with pytest.raises(ValueError, match=r"^reward_weights: star weights: full=1e\+308"):
        gym.make("tvr_gym:TVR-Basic-v0", reward_weights={"full": 1e308})
    with pytest.raises(ValueError, match=r"^reward_weights: state weights: unreadable=1e\+305"):
        gym.make("tvr_gym:TVR-Interactive-v0", reward_weights={"unreadable": 1e305})
    big = star_reward(format_answer(problem.transformations), problem, StarWeights(full=1e307))
    assert big.total == 1.0 + MAX_STEPS * 1e307
