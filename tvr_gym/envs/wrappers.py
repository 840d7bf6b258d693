"""Gymnasium wrappers that give :class:`~tvr_gym.envs.single_shot.TVRGym` the Box/MultiDiscrete spaces
Stable-Baselines3 needs.

* :class:`DiscreteAnswer` turns the Text action into ``MultiDiscrete``: with ``max_items == 1`` (TVR-Basic)
  the action is ``[object, pair]``; otherwise it is ``[count, object_1, pair_1, ..., object_K, pair_K]`` with
  ``count`` in ``0..K`` and only the first ``count`` items used. ``object`` is ``0..9`` and ``pair`` indexes
  :data:`tvr_gym.core.transform.PAIRS` (33 pairs). Every action decodes to a canonical answer
  (:func:`tvr_gym.core.answer.format_answer`); the reward is the environment's own.
* :class:`StackedImages` turns the Dict observation into one ``uint8`` image ``Box(H, W, 6)``: the initial
  image's RGB, then the final image's RGB (channel-last, as SB3's ``CnnPolicy`` expects).
* :class:`SymbolicObservation` replaces the pixels with the object tables of the current problem (a
  perception-free ablation): per state and object, one-hot color, material, shape and size, the grid
  position scaled to ``[-1, 1]`` and a visible flag.
* :class:`ImageTableObservation` gives what the task's prompt gives beside the pixels: the stacked images,
  the initial object table (never the final one) and, per object, where to look (:func:`glimpse_points`:
  the image points of its initial centre and of every position one move away, through the nominal
  centre camera). Basic and Event only: their final image is taken from the centre camera too.

:func:`wrap_for_sb3` applies both; :func:`make_sb3_env` builds a registered id and wraps it. See ``docs/ppo.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tvr_gym.core.answer import Step, format_answer
from tvr_gym.core.options import VIEWS, check_choice, check_int, is_int
from tvr_gym.core.scene import ATTRIBUTES, State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS, pair_index
from tvr_gym.envs.registration import check_env_id
from tvr_gym.envs.single_shot import TVRGym
from tvr_gym.render.rig import camera_rig, object_center

__all__ = [
    "OBS_KINDS",
    "AnswerEncoding",
    "DiscreteAnswer",
    "GLIMPSE_OFFSETS",
    "ImageTableObservation",
    "StackedImages",
    "SymbolicObservation",
    "encode_state",
    "encode_states",
    "glimpse_points",
    "image_table_observation",
    "stack_images",
    "make_sb3_env",
    "symbolic_size",
    "wrap_for_sb3",
]

OBS_KINDS = ("image", "symbolic", "image-table")
"""Observation encodings of :func:`wrap_for_sb3`."""

MAX_ITEMS_LIMIT = 16
"""Largest ``max_items`` accepted (the settings need at most 4)."""

_N_OBJECTS = SPEC.n_objects
_N_PAIRS = len(PAIRS)
_ONE_HOT_OFFSETS: dict[str, int] = {}
_offset = 0
for _attr in ATTRIBUTES:
    _ONE_HOT_OFFSETS[_attr] = _offset
    _offset += len(SPEC.values[_attr])
_POSITION_OFFSET = _offset
FEATURES_PER_OBJECT = _offset + 3
"""One-hot color, material, shape and size, then x, y (scaled to [-1, 1]) and the visible flag."""
_VALUE_INDEX = {attr: {v: i for i, v in enumerate(SPEC.values[attr])} for attr in ATTRIBUTES}
_REACH = max(SPEC.steps)
GLIMPSE_OFFSETS = tuple(
    (dx * SPEC.cells_per_step, dy * SPEC.cells_per_step)
    for dx in range(-_REACH, _REACH + 1)
    for dy in range(-_REACH, _REACH + 1)
)
"""Grid-cell offsets of an object's glimpse points: every whole number of moves up to the longest step
along both axes, so the 16 places a position step can reach and the object's own place (index
``len // 2``) are among them (25 points)."""
_GLIMPSE_LIMIT = 4.0
"""Glimpse points far outside the image are clipped to this many half-widths (still outside it)."""


def _unwrapped_tvr(env: gym.Env) -> Any:

    base = env.unwrapped
    if not isinstance(base, TVRGym):
        raise ValueError(f"env: expected a TVRGym env (TVR-Basic/Event/CrossView-v0), not {type(base).__name__}")
    return base


# ---------------------------------------------------------------------------- actions


class AnswerEncoding:
    """The discrete answer encoding for answers of at most ``max_items`` items (see the module docstring)."""

    def __init__(self, max_items: int) -> None:
        self.max_items = check_int("max_items", max_items, 1, MAX_ITEMS_LIMIT)
        self.has_count = self.max_items > 1
        item = [_N_OBJECTS, _N_PAIRS]
        self.nvec = np.array(([self.max_items + 1] if self.has_count else []) + item * self.max_items, dtype=np.int64)

    @property
    def space(self) -> spaces.MultiDiscrete:
        return spaces.MultiDiscrete(self.nvec)

    def _check(self, action: Any) -> np.ndarray:
        try:
            arr = np.asarray(action)
        except Exception as exc:  # noqa: BLE001 - any unconvertible object is a bad action
            raise ValueError(f"action: cannot read {type(action).__name__} as integers ({exc})") from None
        if arr.shape != self.nvec.shape or not np.issubdtype(arr.dtype, np.integer):
            bounds = self.nvec.tolist()
            raise ValueError(f"action: expected {len(bounds)} integers with upper bounds {bounds}, got {action!r}")
        if (arr < 0).any() or (arr >= self.nvec).any():
            bounds = self.nvec.tolist()
            raise ValueError(f"action: {arr.tolist()} out of range; entry k must satisfy 0 <= a[k] < {bounds}[k]")
        return arr.astype(np.int64)

    def decode(self, action: Any) -> list[Step]:
        """The (object, attribute, value) steps an action stands for."""
        arr = self._check(action)
        count, items = (int(arr[0]), arr[1:]) if self.has_count else (1, arr)
        steps: list[Step] = []
        for k in range(count):
            obj, pair = int(items[2 * k]), int(items[2 * k + 1])
            attr, value = PAIRS[pair]
            steps.append((obj, attr, value))
        return steps

    def text(self, action: Any) -> str:
        """The canonical completion of an action (empty think block)."""
        return format_answer(self.decode(action))

    def encode(self, steps: Sequence[Sequence[Any]]) -> np.ndarray:
        """The action of a list of (object, attribute, value) steps; unused slots are 0."""
        steps = list(steps)
        lo = 0 if self.has_count else 1
        if not lo <= len(steps) <= self.max_items:
            raise ValueError(f"steps: this encoding holds {lo}..{self.max_items} steps, got {len(steps)}")
        items = np.zeros(2 * self.max_items, dtype=np.int64)
        for k, (obj, attr, value) in enumerate(steps):
            if not is_int(obj) or not 0 <= obj < _N_OBJECTS:
                raise ValueError(f"steps[{k}]: object {obj!r} out of range 0..{_N_OBJECTS - 1}")
            items[2 * k] = int(obj)
            items[2 * k + 1] = pair_index(attr, tuple(value) if isinstance(value, list) else value)
        return np.concatenate([[len(steps)], items]) if self.has_count else items


class DiscreteAnswer(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """``MultiDiscrete`` actions decoded to canonical answer text (``info["answer"]`` holds the text).

    ``max_items`` defaults to the environment's largest step count (1 for TVR-Basic, 4 otherwise).
    """

    def __init__(self, env: gym.Env, max_items: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, max_items=max_items)
        gym.ActionWrapper.__init__(self, env)
        base = _unwrapped_tvr(env)
        self.encoding = AnswerEncoding(base.options.steps[1] if max_items is None else max_items)
        self.action_space = self.encoding.space

    def action(self, action: Any) -> str:
        return self.encoding.text(action)

    def step(self, action: Any):
        text = self.action(action)
        obs, reward, terminated, truncated, info = self.env.step(text)
        info["answer"] = text
        return obs, reward, terminated, truncated, info


# ---------------------------------------------------------------------------- observations


class StackedImages(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The initial and final images stacked channel-wise: ``uint8 Box(H, W, 6)``."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        h, w = env.observation_space["initial"].shape[:2]
        self.observation_space = spaces.Box(0, 255, shape=(h, w, 6), dtype=np.uint8)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        return stack_images(observation)


def stack_images(observation: dict[str, Any]) -> np.ndarray:
    """``initial`` and ``final`` (H, W, 3) uint8 images of an env observation as one (H, W, 6) array."""
    for key in ("initial", "final"):
        if key not in observation:
            raise ValueError(f"observation: missing {key!r}; expected keys initial, final")
    return np.concatenate([np.asarray(observation["initial"]), np.asarray(observation["final"])], axis=-1)


def symbolic_size() -> int:
    """Length of the symbolic observation vector (initial then final table)."""
    return 2 * _N_OBJECTS * FEATURES_PER_OBJECT


def encode_state(state: State) -> np.ndarray:
    """One state's object table as a float32 vector of ``10 * FEATURES_PER_OBJECT`` entries."""
    out = np.zeros((_N_OBJECTS, FEATURES_PER_OBJECT), dtype=np.float32)
    lim = float(SPEC.grid_limit)
    for i, obj in enumerate(state.objects):
        for attr in ATTRIBUTES:
            out[i, _ONE_HOT_OFFSETS[attr] + _VALUE_INDEX[attr][getattr(obj, attr)]] = 1.0
        out[i, _POSITION_OFFSET] = obj.position[0] / lim
        out[i, _POSITION_OFFSET + 1] = obj.position[1] / lim
        out[i, _POSITION_OFFSET + 2] = 1.0 if obj.visible else 0.0
    return out.reshape(-1)


def encode_states(initial: State, final: State) -> np.ndarray:
    """The symbolic observation: the initial then the final object table."""
    return np.concatenate([encode_state(initial), encode_state(final)])


class SymbolicObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The current problem's initial and final object tables instead of pixels (``float32 Box``).

    Read from the environment's current problem (never from its transformations); an ablation
    without perception. Directions stay in the world frame, so the final camera plays no role.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self._base = _unwrapped_tvr(env)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(symbolic_size(),), dtype=np.float32)
        self._cached: tuple[Any, np.ndarray] | None = None  # (problem, its vector): reset and step share it

    def observation(self, observation: Any) -> np.ndarray:
        problem = self._base.problem
        if problem is None:
            raise RuntimeError("SymbolicObservation: the environment has no problem; call reset() first")
        if self._cached is None or self._cached[0] is not problem:
            self._cached = (problem, encode_states(problem.initial, problem.final))
        return self._cached[1].copy()


def glimpse_points(state: State, size: tuple[int, int]) -> np.ndarray:
    """Where each object's glimpses fall in an image of ``size = (W, H)``: ``(10, 25, 2)`` float32.

    Point ``(i, k)`` is the nominal centre camera's projection of object ``i``'s centre moved by
    :data:`GLIMPSE_OFFSETS` ``[k]``, as ``(x, y)`` in ``[-1, 1]`` across the image (``torch``'s
    ``grid_sample`` convention with ``align_corners=False``: -1 and 1 are the outer pixel edges).
    A function of the initial table alone; the episode's camera jitter is not used.
    """
    w, h = size
    camera = camera_rig(VIEWS[0])
    centres = np.stack([object_center(obj) for obj in state.objects])  # (N, 3)
    shift = np.asarray(GLIMPSE_OFFSETS, dtype=np.float64) * SPEC.cell  # (G, 2)
    points = np.repeat(centres[:, None, :], len(GLIMPSE_OFFSETS), axis=1)
    points[..., :2] += shift[None]
    u, v = camera.project(points, (w, h))
    xy = np.stack([2.0 * u / w - 1.0, 2.0 * v / h - 1.0], axis=-1)
    return np.clip(xy, -_GLIMPSE_LIMIT, _GLIMPSE_LIMIT).astype(np.float32)


def image_table_observation(
    observation: dict[str, Any], initial: State, table_and_points: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The ``image-table`` observation of an env observation and the episode's initial state.

    ``table_and_points`` are :func:`table_and_points_of` of ``initial`` when the caller already has them.
    """
    images = stack_images(observation)
    h, w = images.shape[:2]
    table, points = table_and_points if table_and_points is not None else table_and_points_of(initial, (w, h))
    return {"images": images, "table": table.copy(), "points": points.copy()}


def table_and_points_of(initial: State, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the ``image-table`` observation that depend on the episode alone: the initial table and
    the flattened glimpse points for images of ``size = (W, H)``."""
    return encode_state(initial), glimpse_points(initial, size).reshape(-1)


class ImageTableObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """The stacked images with what the prompt tells beside them: ``Dict(images, table, points)``.

    ``images`` is :class:`StackedImages`' ``uint8 (H, W, 6)``; ``table`` the initial object table
    (:func:`encode_state`; the final one is only in the pixels); ``points`` the glimpse points of
    :func:`glimpse_points`, computed from that table and flattened (a vector, so SB3 does not take it
    for an image; reshape to ``(10, 25, 2)``). TVR-Basic and TVR-Event only: CrossView's final
    camera differs, so its points would be wrong.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        self._base = _unwrapped_tvr(env)
        if any(view != VIEWS[0] for view in self._base.final_views):
            raise ValueError(
                f"obs: image-table needs the final image from the {VIEWS[0]} camera (TVR-Basic or TVR-Event); "
                f"this env shows it from {', '.join(self._base.final_views)}"
            )
        h, w = env.observation_space["initial"].shape[:2]
        self._size = (w, h)
        self._cached: tuple[Any, tuple[np.ndarray, np.ndarray]] | None = None  # (problem, its table and points)
        self.observation_space = spaces.Dict(
            {
                "images": spaces.Box(0, 255, shape=(h, w, 6), dtype=np.uint8),
                "table": spaces.Box(-1.0, 1.0, shape=(_N_OBJECTS * FEATURES_PER_OBJECT,), dtype=np.float32),
                "points": spaces.Box(
                    -_GLIMPSE_LIMIT, _GLIMPSE_LIMIT, shape=(_N_OBJECTS * len(GLIMPSE_OFFSETS) * 2,), dtype=np.float32
                ),
            }
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        problem = self._base.problem
        if problem is None:
            raise RuntimeError("ImageTableObservation: the environment has no problem; call reset() first")
        if self._cached is None or self._cached[0] is not problem:  # reset and step share them
            self._cached = (problem, table_and_points_of(problem.initial, self._size))
        return image_table_observation(observation, problem.initial, self._cached[1])


# ---------------------------------------------------------------------------- helpers


def wrap_for_sb3(env: gym.Env, obs: str = "image", max_items: int | None = None) -> gym.Env:
    """``env`` with a ``MultiDiscrete`` answer action and an :data:`OBS_KINDS` observation."""
    check_choice("obs", obs, OBS_KINDS)
    env = DiscreteAnswer(env, max_items)
    wrapper = {"image": StackedImages, "symbolic": SymbolicObservation, "image-table": ImageTableObservation}[obs]
    return wrapper(env)


def make_sb3_env(env_id: str, obs: str = "image", max_items: int | None = None, **env_kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` wrapped by :func:`wrap_for_sb3`."""

    check_env_id(env_id)
    return wrap_for_sb3(gym.make(env_id, **env_kwargs), obs, max_items)
