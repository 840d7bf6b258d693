"""The task prompt: a pure function of the problem, built from the scene spec (``docs/environments.md#the-prompt``).

The prompt states the task, the vocabulary, the world-frame direction convention, the answer
format with one example, and the table of the 10 initial objects. TRANCE's initial state is fully
known, so every object is listed with its attributes and grid position, and marked ``visible`` or
``hidden`` (outside the visible square, not in the image). Hidden objects must be listed: an ``in``
move brings one into view, and the answer has to name it by index.

The word set is small and regular so that a word-level tokenizer (:func:`prompt_vocabulary`)
covers every prompt and every canonical answer.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from tvr_gym.core.options import OBS_MODES, PROMPT_LAYOUTS, check_choice, check_layout  # noqa: F401 (their old home)
from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem

PROMPT_CHARSET = string.ascii_letters + string.digits + " \n.,:;()<>/-_"
"""Every character a prompt may contain."""

PROMPT_MAX_LENGTH = 8192
"""Upper bound on a prompt's length (the longest text-mode prompt is far shorter)."""

TOKEN_PATTERN = re.compile(r"[A-Za-z]+|\d+|\S")
"""Word-level split used by :func:`prompt_vocabulary`: words, digit runs, single punctuation marks."""

_AXIS_WORDS = {
    (1, 0): "toward the camera, down in the initial image",
    (-1, 0): "away from the camera, up in the initial image",
    (0, 1): "to the right in the initial image",
    (0, -1): "to the left in the initial image",
}


def _join(words) -> str:
    return ", ".join(str(w) for w in words)


def _vocabulary_lines() -> list[str]:
    """The attributes and values, the direction convention and the visible square."""
    lim = SPEC.visible_limit
    axis_lines = [f"{name} is {_AXIS_WORDS[vec]}" for name, vec in SPEC.directions.items() if vec in _AXIS_WORDS]
    attr_lines = [
        f"{attr}: {_join(SPEC.values[attr])}" if attr != "position" else
        f"position: direction.step, with direction one of {_join(SPEC.directions)} and step "
        f"{' or '.join(str(s) for s in SPEC.steps)}"
        for attr in SPEC.attributes
    ]
    return [
        "Attributes and values:",
        *attr_lines,
        "Directions are named in the frame of the initial image, whatever camera shows the final image: "
        + "; ".join(axis_lines)
        + ". A diagonal such as front-left combines two directions.",
        f"Positions are grid cells x y. One step moves an object {SPEC.cells_per_step} cells. "
        f"The camera sees only the square from -{lim} to {lim} in x and y; objects outside it are hidden.",
    ]


@lru_cache(maxsize=2)
def _header(obs_mode: str) -> str:
    n = SPEC.n_objects
    shown = (
        "The first image shows the initial state and the second image shows the final state."
        if obs_mode == "image"
        else "The initial state and the final state are given as tables below."
    )
    example = (
        "<think>object 2 turned cyan and object 4 moved</think><answer>2.color.cyan, 4.position.front-left.1</answer>"
    )
    lines = [
        f"A scene holds {n} objects, numbered 0 to {n - 1}. {shown}",
        "Name the transformations that turn the initial state into the final state, in order.",
        "Each transformation is obj.attr.value: the object number, the attribute and its new value.",
        *_vocabulary_lines(),
        "Answer format: <think>your reasoning</think><answer>transformations separated by commas</answer>",
        f"Example: {example}",
    ]
    return "\n".join(lines)


@lru_cache(maxsize=2)
def _interactive_header(obs_mode: str) -> str:
    n = SPEC.n_objects
    shown = (
        "The first image shows the target state (from the final camera, which may differ) and the second "
        "image the current state (from the initial camera); after each turn a new image of the current "
        "state follows."
        if obs_mode == "image"
        else "The target state and the current state are given as tables below."
    )
    lines = [
        f"A scene holds {n} objects, numbered 0 to {n - 1}. It starts in the initial state. {shown}",
        "Change the current state into the target state, one transformation per turn.",
        "Each transformation is obj.attr.value: the object number, the attribute and its new value. "
        "When the current state matches the target, answer done.",
        *_vocabulary_lines(),
        "Answer format: <think>your reasoning</think><answer>one transformation, or done</answer>",
        "Example: <think>object 2 is cyan in the target</think><answer>2.color.cyan</answer>",
    ]
    return "\n".join(lines)


def object_row(i: int, obj: SceneObject) -> str:
    """One table row, e.g. ``2: yellow glass cube small at 0 -14 visible``."""
    x, y = obj.position
    seen = "visible" if obj.visible else "hidden"
    return f"{i}: {obj.color} {obj.material} {obj.shape} {obj.size} at {x} {y} {seen}"


def state_table(state: State, title: str) -> str:
    """A titled table of all objects of ``state`` by index."""
    rows = [f"{title} (number: color material shape size at x y, visible or hidden):"]
    rows += [object_row(i, o) for i, o in enumerate(state.objects)]
    return "\n".join(rows)


_COMPACT_ATTRIBUTES = tuple(attr for attr in SPEC.attributes if attr != "position")
"""The attributes shown as words; the position follows as ``x`` and ``y``."""


def _compact_header() -> str:
    n = SPEC.n_objects
    return (
        f"Name the transformations obj.attr.value that turn the initial state into the final state. "
        f"Objects 0 to {n - 1}, each as number: {' '.join(_COMPACT_ATTRIBUTES)} x y visibility, as initial > final:"
    )


def paired_row(i: int, initial: SceneObject, final: SceneObject) -> str:
    """One compact row, e.g. ``2: yellow > yellow glass > rubber cube > cube small > small x 0 > 0 y -14 > -14
    visible > visible``. The spaces around ``>`` give both values of a pair the same token."""
    pairs = [f"{getattr(initial, attr)} > {getattr(final, attr)}" for attr in _COMPACT_ATTRIBUTES]
    (x0, y0), (x1, y1) = initial.position, final.position
    seen = ("visible" if o.visible else "hidden" for o in (initial, final))
    return f"{i}: " + " ".join([*pairs, f"x {x0} > {x1}", f"y {y0} > {y1}", " > ".join(seen)])


def compact_prompt(problem: Problem) -> str:
    """The ``compact`` layout of :data:`PROMPT_LAYOUTS` (text mode)."""
    rows = (paired_row(i, a, b) for i, (a, b) in enumerate(zip(problem.initial.objects, problem.final.objects)))
    return "\n".join([_compact_header(), *rows])


def build_prompt(problem: Problem, obs_mode: str = "image", layout: str = "tables") -> str:
    """The prompt of ``problem``; ``obs_mode="text"`` adds the final state (see :data:`PROMPT_LAYOUTS`)."""
    check_choice("obs_mode", obs_mode, OBS_MODES)
    check_layout(layout, obs_mode)
    if layout == "compact":
        return compact_prompt(problem)
    parts = [_header(obs_mode), state_table(problem.initial, "Initial objects")]
    if obs_mode == "text":
        parts.append(state_table(problem.final, "Final objects"))
    return "\n".join(parts)




def interactive_prompt(problem: Problem, obs_mode: str = "image") -> str:
    """The prompt of an interactive episode (``tvr_gym.envs.interactive``); ``obs_mode="text"`` adds the
    target's table (the environment adds the current state's)."""
    check_choice("obs_mode", obs_mode, OBS_MODES)
    parts = [_interactive_header(obs_mode), state_table(problem.initial, "Initial objects")]
    if obs_mode == "text":
        parts.append(state_table(problem.final, "Target objects"))
    return "\n".join(parts)


_ROW_VISIBILITY = re.compile(r"^(\d+): .*?\b(visible|hidden)\b", re.MULTILINE)
"""An object row (:func:`object_row` or :func:`paired_row`) and the first visibility word on it."""


def initial_visible(prompt: str) -> list[int]:
    """The objects the prompt's initial table marks visible, sorted (empty when the prompt has no table).

    In every layout the initial state's row of an object comes before any other row of it, and its
    visibility is the first ``visible``/``hidden`` on the row (``compact``: ``visible > hidden``)."""
    seen: dict[int, bool] = {}
    for match in _ROW_VISIBILITY.finditer(prompt):
        seen.setdefault(int(match.group(1)), match.group(2) == "visible")
    return sorted(i for i, shown in seen.items() if shown and 0 <= i < SPEC.n_objects)


def prompt_vocabulary() -> list[str]:
    """Every token (per :data:`TOKEN_PATTERN`) of any prompt or canonical answer, sorted."""
    tokens: set[str] = set()
    for mode in OBS_MODES:
        tokens.update(TOKEN_PATTERN.findall(_header(mode)))
        tokens.update(TOKEN_PATTERN.findall(_interactive_header(mode)))
    tokens.update(TOKEN_PATTERN.findall(state_table(_any_state(), "Initial objects Final objects Target Current")))
    tokens.update(TOKEN_PATTERN.findall(_compact_header()))
    for attr in SPEC.attributes:
        for value in SPEC.directions if attr == "position" else SPEC.values[attr]:
            tokens.update(TOKEN_PATTERN.findall(value))
    tokens.update(str(k) for k in range(SPEC.grid_limit + 1))
    tokens.update(("visible", "hidden", "-", ".", ",", "<", ">", "/"))
    return sorted(tokens)


def _any_state() -> State:
    v = SPEC.values
    obj = SceneObject(v["color"][0], v["material"][0], v["shape"][0], v["size"][0], (0, 0))
    return State(tuple(obj for _ in range(SPEC.n_objects)))
