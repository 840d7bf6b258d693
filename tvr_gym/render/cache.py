"""The one way from a problem or a state to its pixels, through the render store and the renderer pool.

:func:`observed_image` is what an agent sees of a problem (the dataset's image file, or a render);
:func:`render_view` renders a state from a camera. Both go through a
:class:`~tvr_gym.render.store.RenderCache`, and renders come from the process's renderer pool
(:mod:`tvr_gym.render.pool`). The store's and the pool's names are importable from here too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tvr_gym.core.scene import State
from tvr_gym.core.trance import Problem, TranceFormatError
from tvr_gym.render.pool import release_renderers, shared_renderer
from tvr_gym.render.rig import camera_rig, lamp_rig
from tvr_gym.render.store import LRU, RenderCache, file_key, render_key, shared_lru

__all__ = [
    "LRU",
    "RenderCache",
    "load_image",
    "observed_image",
    "release_renderers",
    "render_view",
    "shared_lru",
    "shared_renderer",
]


def render_view(
    state: State, view: str, jitter_seed: int | None, renderer: str, size: tuple[int, int], cache: RenderCache
) -> np.ndarray:
    """``state`` seen from the ``view`` camera (camera and lamps jittered by ``jitter_seed``), through ``cache``.

    The returned array is the cached, read-only one; copy it before handing it out.
    """

    r = shared_renderer(renderer, size)
    camera = camera_rig(view, jitter_seed)
    key = render_key(getattr(r, "name", renderer), size, state, camera, jitter_seed)
    return cache.get_or_make(key, lambda: r.render(state, camera, lamp_rig(jitter_seed)), (size[1], size[0], 3))


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A dataset image as uint8 (H, W, 3), resized to ``size`` = (width, height) when needed.

    A file that is not a readable image (truncated, empty, another format) raises
    :class:`~tvr_gym.core.trance.TranceFormatError` naming it.
    """
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != tuple(size):
                im = im.resize(tuple(size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise TranceFormatError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def observed_image(
    problem: Problem, phase: str, view: str, renderer: str, size: tuple[int, int], cache: RenderCache
) -> np.ndarray:
    """What an agent sees of ``problem``: the dataset's own image file when it has one (resized to
    ``size``), else the state rendered from ``view`` with the episode's jitter. Through ``cache``.

    The one way from a problem to its images, shared by the environment, exports, ``generate`` and
    ``tvr-gym show``. The returned array is the cached, read-only one; copy it before handing it out.
    """
    path = problem.image_path(phase, view)
    if path is not None:
        shape = (size[1], size[0], 3)
        return cache.get_or_make(file_key(path, size), lambda: load_image(path, size), shape)
    state = problem.initial if phase == "initial" else problem.final
    return render_view(state, view, problem.render_seed, renderer, size, cache)
