"""What the TVR environments share: their config, source, render cache, image spaces, ``render()`` and ``close()``.

:class:`TVREnvBase` is the base of :class:`tvr_gym.envs.single_shot.TVRGym` (single-shot) and
:class:`tvr_gym.envs.interactive.TVRInteractive` (multi-turn); each keeps only its own keywords
(:attr:`TVREnvBase.OWN_KEYWORDS`) and its step logic. Keywords are checked once, by
:class:`~tvr_gym.core.options.EnvConfig` and :meth:`TVREnvBase.check_own`, so an export or a trainer can
check an environment's keywords without building one (:func:`check_env_kwargs`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tvr_gym.core.options import RENDER_MODES, VIEWS, EnvConfig, EpisodeOptions
from tvr_gym.core.prompt import PROMPT_CHARSET
from tvr_gym.envs.frames import PANEL_GAP, Caption, draw_frame
from tvr_gym.problems.sources import ProceduralSource, TranceSource
from tvr_gym.render.pool import hold
from tvr_gym.render.store import LRU, RenderCache, shared_lru

__all__ = [
    "ACTION_CHARSET", "ACTION_MAX_LENGTH", "CENTRE", "TVREnvBase", "action_as_text", "action_display",
    "check_env_kwargs", "tvr_env_class", "weights_dict",
]

ACTION_CHARSET = "".join(sorted(set(PROMPT_CHARSET)))
"""Characters of the action space: letters, digits, space, newline and ``.,:;()<>/-_``."""
ACTION_MAX_LENGTH = 4096
CENTRE = VIEWS[0]
"""The camera of the initial image (and of the interactive current state)."""
RENDER_GAP = PANEL_GAP
"""Pixels between the two images of ``render()``."""


class TVREnvBase(gym.Env):
    """The shared part of the TVR environments (not an environment itself: subclasses add spaces and steps).

    It owns the :class:`~tvr_gym.core.options.EnvConfig` (``env_config``), the problem ``source``, the render
    ``cache``, the image part of the observation space, ``render()`` (the two images, labelled, over a caption
    of the last step: :mod:`tvr_gym.envs.frames`), the ``reset`` options and ``close()``.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 1}
    OWN_KEYWORDS: tuple[str, ...] = ()
    """The keywords a subclass takes besides :data:`~tvr_gym.core.options.ENV_CONFIG_KEYS`."""
    CONFIG_DEFAULTS: dict[str, Any] = {}
    """Config defaults a subclass changes (the interactive environment's setting)."""

    @classmethod
    def check_own(cls, **own: Any) -> dict[str, Any]:
        """The subclass's own keywords, checked (and normalised); a ``ValueError`` names a bad one."""
        return own

    @classmethod
    def check_kwargs(cls, **kwargs: Any) -> tuple[EnvConfig, dict[str, Any]]:
        """(config, own keywords) of ``kwargs``, checked as the constructor checks them, without building."""
        config, own = EnvConfig.split(kwargs, cls.OWN_KEYWORDS, cls.CONFIG_DEFAULTS)
        return config, cls.check_own(**own)

    def __init__(self, config: EnvConfig) -> None:
        self.env_config = config
        self.setting = config.setting
        self.renderer_name = config.renderer
        self.obs_mode = config.obs_mode
        self.prompt_layout = config.prompt_layout
        self.render_mode = config.render_mode
        self.render_size = config.render_size
        self.options: EpisodeOptions = config.episode
        self.final_views = self.options.final_views
        lru = shared_lru() if config.cache_size is None else LRU(config.cache_size)
        self.cache = RenderCache(lru, config.cache_dir)
        self.source_name = str(config.source)
        self.source = make_source(config.source, self.options)
        self._renderer_hold = hold(config.renderer, config.render_size)
        self._caption = Caption()
        self._frames: list[np.ndarray] = []

    def image_space(self) -> spaces.Box:
        """``Box(0, 255, (H, W, 3), uint8)`` of ``render_size = (W, H)``."""
        w, h = self.render_size
        return spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)

    def render(self):
        """``rgb_array``: the frame of this moment (``None`` without a render mode); ``rgb_array_list``: the
        frames of the episode since the last ``render()``, one per ``reset`` and step (gymnasium's meaning).

        A frame shows the two images, labelled, and below them the last step's action, feedback and reward,
        and at the end of an episode the truth and the metrics (:func:`tvr_gym.envs.frames.draw_frame`). Every
        frame of an environment has one size, :func:`tvr_gym.envs.frames.frame_size` of ``render_size``.
        """
        if self.render_mode is None:
            gym.logger.warn("render() needs render_mode='rgb_array'")
            return None
        if self.render_mode == "rgb_array_list":
            frames, self._frames = self._frames, []
            return frames
        return self._frame()

    @property
    def caption(self) -> Caption:
        """What the caption of ``render()``'s frame says now (:class:`tvr_gym.envs.frames.Caption`)."""
        return self._caption

    def _frame(self) -> np.ndarray:
        return draw_frame(self._render_pair(), self._panel_labels(), self._caption, self.render_size)

    def _show(self, caption: Caption, new_episode: bool = False) -> None:
        """Say ``caption`` from now on; in ``rgb_array_list`` mode also keep this moment's frame (a new episode
        first drops the frames of the last one, as gymnasium's ``RenderCollection`` does)."""
        self._caption = caption
        if self.render_mode == "rgb_array_list":
            if new_episode:
                self._frames = []
            self._frames.append(self._frame())

    def close(self) -> None:
        """Let go of this environment's renderer; the last environment of the process to let go of a renderer
        closes it (:mod:`tvr_gym.render.pool`). Calling it again does nothing.

        Renderers are shared by the environments of a process, so closing one environment never slows
        another. The process's GL context stays, so ``gym.make_vec(..., vectorization_mode="async")`` can
        fork after an environment was closed; :func:`tvr_gym.render.pool.release_renderers` frees it too.
        """
        self._renderer_hold.release()

    def _render_pair(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The two images ``render()`` shows, or ``None`` before the first reset."""
        raise NotImplementedError

    def _panel_labels(self) -> tuple[str, str]:
        """The labels of the two images ``render()`` shows."""
        raise NotImplementedError


def action_as_text(action: Any) -> str:
    """The text of an action as the environments read it: a str itself, bytes decoded, anything else empty
    (the step info then names its type among the parse errors)."""
    if isinstance(action, str):
        return action
    if isinstance(action, (bytes, bytearray, memoryview)):
        return bytes(action).decode("utf-8", errors="replace")
    return ""


def action_display(action: Any) -> str:
    """An action as a frame shows it: its text (:func:`action_as_text`), or for a value that is no text its repr."""
    return action_as_text(action) if isinstance(action, (str, bytes, bytearray, memoryview)) else repr(action)


def reset_index(options: Mapping[str, Any] | None) -> Any:
    """The ``index`` of ``reset(options=...)`` (``None`` when absent); any other key is an error."""
    options = dict(options or {})
    bad = sorted(set(options) - {"index"})
    if bad:
        raise ValueError(f"options: unknown key(s) {', '.join(bad)}; valid: index")
    return options.get("index")


def make_source(source: str | os.PathLike[str], options: EpisodeOptions) -> ProceduralSource | TranceSource:
    """The problems of ``source``: generated (``"procedural"``) or read from a TRANCE directory."""
    if isinstance(source, str) and source == "procedural":
        return ProceduralSource(options)
    return TranceSource(source, options)


def weights_dict(weights: Any) -> dict[str, float]:
    """``reward_weights`` (None, a dict or a weights dataclass) as keyword overrides."""
    if weights is None:
        return {}
    if dataclasses.is_dataclass(weights) and not isinstance(weights, type):
        return dataclasses.asdict(weights)
    if not isinstance(weights, Mapping):
        raise ValueError(f"reward_weights: expected a dict or a weights dataclass, got {type(weights).__name__}")
    return dict(weights)


def tvr_env_class(env_id: str) -> type[TVREnvBase] | None:
    """The TVR environment class ``env_id`` builds (a :class:`TVREnvBase`), or ``None`` for any other
    registered environment; an unknown id is a ``ValueError``."""
    from gymnasium.envs.registration import load_env_creator, registry

    from tvr_gym.envs.registration import check_env_id

    entry = registry[check_env_id(env_id)].entry_point
    cls = load_env_creator(entry) if isinstance(entry, str) else entry
    return cls if isinstance(cls, type) and issubclass(cls, TVREnvBase) else None


def check_env_kwargs(env_id: str, **kwargs: Any) -> EnvConfig:
    """The config of ``gym.make(env_id, **kwargs)``, every keyword checked as the environment checks it,
    without building the environment (exports and trainers check their arguments before any work). A
    TRANCE directory ``source`` is read, so a damaged one fails here too."""
    from gymnasium.envs.registration import registry

    cls = tvr_env_class(env_id)
    if cls is None:
        raise ValueError(f"env: {env_id} is not a TVR environment")
    config, _ = cls.check_kwargs(**{**registry[env_id].kwargs, **kwargs})
    if config.source != "procedural":
        make_source(config.source, config.episode)
    return config
