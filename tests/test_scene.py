"""Scene logic: objects, geometry, vocabulary, transformations and replay."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.scene import SceneObject, State, is_visible_position, on_grid, overlaps
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import (
    PAIRS,
    STEP_KINDS,
    Transformation,
    apply,
    legal_steps,
    move_type,
    moved,
    out_options,
    pair_index,
    replay,
    simulate,
    state_distance,
    try_apply,
)

from props import examples, random_state


def obj(pos=(0, 0), **kw) -> SceneObject:
    base = dict(color="gray", material="rubber", shape="cube", size="small")
    base.update(kw)
    return SceneObject(position=pos, **base)


def far_state(**first) -> State:
    """Object 0 at the origin (customisable), the other nine parked far apart outside the square."""
    parked = [(-40, -40), (-40, 0), (-40, 40), (0, -40), (0, 40), (40, -40), (40, 0), (40, 40), (-40, 20)]
    return State((obj(**first), *(obj(p) for p in parked)))


def test_vocabulary_has_33_pairs_in_canonical_order():
    assert len(PAIRS) == 33
    attrs = [a for a, _ in PAIRS]
    assert attrs == sorted(attrs)
    assert [v for a, v in PAIRS if a == "position"][:4] == [("front", 1), ("front", 2), ("behind", 1), ("behind", 2)]
    assert PAIRS[pair_index("size", "small")] == ("size", "small")
    with pytest.raises(ValueError):
        pair_index("color", "pink")


def test_direction_convention_is_reverse_of_clevr():
    assert moved((0, 0), ("behind", 1)) == (10, 0)
    assert moved((0, 0), ("front", 2)) == (-20, 0)
    assert moved((0, 0), ("right", 1)) == (0, 10)
    assert moved((0, 0), ("front-left", 1)) == (-10, -10)
    assert moved((0, 0), ("behind-right", 2)) == (20, 20)


def test_radius_in_cells():
    assert [SPEC.radius_cells(s) for s in ("large", "medium", "small")] == [6, 4, 2]


def test_visible_square_is_inclusive():
    assert is_visible_position((20, -20))
    assert not is_visible_position((21, 0))


def test_overlap_uses_minimum_gap():
    # small+small: reach = 2 + 2 + 1 = 5 cells
    assert overlaps(obj((0, 0)), obj((4, 0)))
    assert not overlaps(obj((0, 0)), obj((5, 0)))
    assert overlaps(obj((0, 0)), obj((3, 3)))  # 18 < 25


@pytest.mark.parametrize(
    "field,kwargs",
    [("color", {"color": "pink"}), ("shape", {"shape": "cone"}), ("position", {"pos": (41, 0)})],
)
def test_bad_scene_parameters_name_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        obj(**kwargs)


def test_state_needs_ten_objects():
    with pytest.raises(ValueError, match="10"):
        State((obj(),))


def test_move_types():
    assert move_type((0, 0), (10, 0)) == "inner"
    assert move_type((15, 0), (35, 0)) == "out"
    assert move_type((35, 0), (15, 0)) == "in"
    assert move_type((30, 0), (40, 0)) is None


def test_out_options_are_exactly_the_invisible_landings():
    opts = out_options((15, 0))
    assert ("behind", 1) in opts and ("behind", 2) in opts
    assert ("front", 1) not in opts
    for move in opts:
        end = moved((15, 0), move)
        assert not is_visible_position(end) and max(map(abs, end)) <= 40


def test_apply_and_replay():
    s = far_state()
    t1 = Transformation(0, "color", "cyan")
    t2 = Transformation(0, "position", ("behind", 1), type="inner")
    out = replay(s, [t1, t2])
    assert out[0].color == "cyan" and out[0].position == (10, 0)
    assert s[0].color == "gray"  # inputs are immutable
    with pytest.raises(ValueError, match="position"):
        apply(far_state(pos=(35, 0)), Transformation(0, "position", ("behind", 1)))


def test_simulate_flags_out_and_overlap():
    s = far_state()
    sim = simulate(s, [(1, "position", ("front", 1))])  # (-40, -40) -> (-50, -40): off grid
    assert sim.error_out and not sim.error_overlap and sim.state[1].position == (-40, -40)
    s2 = State((obj((0, 0)), obj((10, 0)), *far_state().objects[2:]))
    sim2 = simulate(s2, [(0, "position", ("behind", 1))])
    assert sim2.error_overlap and sim2.state[0].position == (10, 0)


def test_simulate_flags_a_size_change_that_overlaps_a_neighbour():
    s = State((obj((0, 0)), obj((0, 8)), *far_state().objects[2:]))  # two small objects, 8 cells apart
    grown = simulate(s, [(0, "size", "large")])  # reach 6 + 2 + 1 = 9 > 8
    assert grown.error_overlap and grown.illegal_steps == 1 and grown.state[0].size == "large"
    assert not simulate(s, [(0, "size", "medium")]).error_overlap  # reach 4 + 2 + 1 = 7 < 8
    assert not simulate(s, [(0, "color", "red"), (0, "shape", "sphere")]).error_overlap


GEOMETRIC = ("position", "size")


def _reference_simulation(state: State, steps) -> tuple[State, bool, bool, int]:
    """Step by step, as TVR's evaluator reads it: skip an off-grid move, flag any move or resize that overlaps."""
    error_out = error_overlap = False
    illegal = 0
    for obj_idx, attr, value in steps:
        if attr == "position" and not on_grid(moved(state[obj_idx].position, value)):
            error_out, illegal = True, illegal + 1
            continue
        state = apply(state, Transformation(obj_idx, attr, value))
        if attr in ("position", "size") and state.overlapping(obj_idx):
            error_overlap, illegal = True, illegal + 1
    return state, error_out, error_overlap, illegal


@settings(max_examples=examples(150), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(
        st.tuples(st.integers(0, SPEC.n_objects - 1), st.sampled_from([p for p in PAIRS if p[0] in GEOMETRIC])),
        min_size=1,
        max_size=6,
    ),
)
def test_simulate_agrees_with_a_step_by_step_reference(seed, steps):
    state = _crowded_state(random.Random(seed))
    steps = [(o, a, v) for o, (a, v) in steps]
    sim = simulate(state, steps)
    ref_state, error_out, error_overlap, illegal = _reference_simulation(state, steps)
    assert sim.state == ref_state
    assert (sim.error_out, sim.error_overlap, sim.illegal_steps) == (error_out, error_overlap, illegal)


def _crowded_state(rng: random.Random) -> State:
    """Ten small or medium objects packed into the visible square, so moves and growth often collide."""
    lim = SPEC.visible_limit
    objs: list[SceneObject] = []
    while len(objs) < SPEC.n_objects:
        o = obj((rng.randint(-lim, lim), rng.randint(-lim, lim)), size=rng.choice(["small", "medium"]))
        if not any(overlaps(o, other) for other in objs):
            objs.append(o)
    return State(tuple(objs))


def test_distance_treats_two_invisible_positions_as_equal():
    a = far_state(pos=(30, 0))
    b = far_state(pos=(0, 30))
    assert state_distance(a, b) == 0
    c = far_state(pos=(10, 0))
    assert state_distance(a, c) == 1


@given(st.integers(-40, 40), st.integers(-40, 40))
def test_options_only_for_moves_that_land_on_the_grid(x, y):
    for move in out_options((x, y)):
        end = moved((x, y), move)
        assert -40 <= end[0] <= 40 and -40 <= end[1] <= 40


def test_replay_reproduces_all_fixture_finals(trance_problems):
    assert len(trance_problems) == 100
    for p in trance_problems:
        assert replay(p.initial, p.transformations).same_as(p.final), p.idx


def test_fixture_move_types_and_options_match_our_rules(trance_problems):
    for p in trance_problems:
        state = p.initial
        for t in p.transformations:
            if t.attr == "position":
                start = state[t.obj_idx].position
                assert move_type(start, moved(start, t.value)) == t.type
                expected = set(out_options(start)) if t.type == "out" else {t.value}
                assert set(t.options) == expected, (p.idx, t)
            state = apply(state, t)


@settings(max_examples=examples(100), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), walk=st.integers(0, 4))
def test_legal_steps_is_try_apply_for_every_step_at_once(seed, walk):
    """The array form the action mask uses says of every (object, pair) what :func:`try_apply` says."""
    rng = random.Random(seed)
    state = random_state(rng)
    for _ in range(walk + 1):
        table = legal_steps(state)
        expected = [[try_apply(state, (i, *pair)).legal for pair in PAIRS] for i in range(SPEC.n_objects)]
        assert table.shape == (SPEC.n_objects, len(PAIRS)) and table.dtype == bool
        assert table.tolist() == expected
        legal = [(i, k) for i in range(SPEC.n_objects) for k in range(len(PAIRS)) if expected[i][k]]
        if not legal:
            break
        i, k = rng.choice(legal)
        state = state.with_object(i, try_apply(state, (i, *PAIRS[k])).obj)


@settings(max_examples=examples(200), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), obj_idx=st.integers(0, SPEC.n_objects - 1), pair=st.sampled_from(PAIRS))
def test_try_apply_is_the_one_rule_behind_simulate(seed, obj_idx, pair):
    """Each kind of :func:`try_apply` means what :func:`simulate` and TVR's distance say of the same step."""
    state = random_state(random.Random(seed))
    step = (obj_idx, *pair)
    outcome = try_apply(state, step)
    sim = simulate(state, [step])
    assert outcome.kind in STEP_KINDS and outcome.legal == (outcome.kind == "applied")
    # the rule, restated from the geometry: off the grid, else an overlap with any other object
    old = state.objects[obj_idx]
    if pair[0] == "position":
        end = moved(old.position, pair[1])
        moved_obj = old.changed("position", end) if on_grid(end) else None
    else:
        moved_obj = old.changed(*pair)
    assert outcome.obj == moved_obj
    assert (outcome.kind == "off_grid") == (moved_obj is None)
    others = [o for j, o in enumerate(state.objects) if j != obj_idx]
    expected_overlap = moved_obj is not None and pair[0] in ("position", "size") and any(
        overlaps(moved_obj, o) for o in others
    )  # fmt: skip
    assert (outcome.kind == "overlap") == expected_overlap
    assert sim.error_out == (outcome.kind == "off_grid") and (outcome.obj is None) == sim.error_out
    assert sim.error_overlap == (outcome.kind == "overlap")
    if outcome.kind == "overlap":
        assert outcome.hit != obj_idx and overlaps(outcome.obj, state.objects[outcome.hit])
        assert pair[0] in ("position", "size")
    if outcome.obj is not None:
        assert sim.state.objects[obj_idx] == outcome.obj  # the evaluator applies overlapping steps too
        changed = state_distance(state, sim.state) > 0
        assert (outcome.kind == "noop") == (not changed and outcome.kind != "overlap")
        assert (outcome.kind == "applied") == (changed and not sim.error_overlap)
    else:
        assert sim.state == state
