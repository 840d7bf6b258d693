"""Shared pieces of the property suites: the example budget and strategies that draw only legal problems.

``TVR_GYM_EXAMPLES_SCALE=20`` multiplies every suite's example count (the pre-release exploration run);
``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) makes every run derandomized, see ``conftest.py``.
"""

from __future__ import annotations

import os
import random

from hypothesis import strategies as st

from tvr_gym.core.scene import SceneObject, State, on_grid, overlaps
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem
from tvr_gym.core.transform import (
    PAIRS,
    Transformation,
    move_type,
    moved,
    out_options,
    replay,
    simulate,
    state_distance,
)

EXAMPLES_SCALE = int(os.environ.get("TVR_GYM_EXAMPLES_SCALE", "1"))
CATEGORICAL = [a for a in SPEC.attributes if a in SPEC.values]


def examples(n: int) -> int:
    """A suite's example count, scaled by ``TVR_GYM_EXAMPLES_SCALE``."""
    return n * EXAMPLES_SCALE


def random_state(rng: random.Random) -> State:
    """Ten objects anywhere on the grid, none overlapping, at least one in view (a scene shows something)."""
    lim = SPEC.grid_limit
    objs: list[SceneObject] = []
    while len(objs) < SPEC.n_objects:
        obj = SceneObject(
            *(rng.choice(SPEC.values[a]) for a in CATEGORICAL),
            position=(rng.randint(-lim, lim), rng.randint(-lim, lim)),
        )
        in_view_still_possible = any(o.visible for o in objs) or obj.visible or len(objs) < SPEC.n_objects - 1
        if in_view_still_possible and not any(overlaps(obj, o) for o in objs):
            objs.append(obj)
    return State(tuple(objs))


def random_step(rng: random.Random, state: State) -> Transformation | None:
    """A feasible step on ``state`` (value changes, on grid, no overlap, never invisible to invisible), or None."""
    obj_idx = rng.randrange(SPEC.n_objects)
    attr, value = rng.choice(PAIRS)
    obj = state[obj_idx]
    if attr == "position":
        end = moved(obj.position, value)
        kind = move_type(obj.position, end)
        if not on_grid(end) or kind is None:
            return None
        options = out_options(obj.position) if kind == "out" else (value,)
        step = Transformation(obj_idx, attr, value, options, kind)
    else:
        if getattr(obj, attr) == value:
            return None
        step = Transformation(obj_idx, attr, value)
    sim = simulate(state, [(obj_idx, attr, value)])
    return None if sim.error_out or sim.error_overlap else step


def random_problem(rng: random.Random, n_steps: int) -> Problem:
    """A problem the rules allow: feasible steps whose whole sequence changes the scene (no no-op)."""
    initial = random_state(rng)
    while True:
        state, steps = initial, []
        while len(steps) < n_steps:
            step = random_step(rng, state)
            if step is not None:
                steps.append(step)
                state = replay(state, [step])
        if state_distance(initial, state):
            return Problem(idx=0, initial=initial, final=state, transformations=steps)


@st.composite
def problems(draw, max_steps: int = 4) -> Problem:
    """A random problem obeying TRANCE's feasibility rules, never one whose final state equals the initial."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    return random_problem(rng, draw(st.integers(1, max_steps)))
