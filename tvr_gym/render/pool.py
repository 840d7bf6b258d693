"""The process's renderer pool: one renderer per (name, size), shared by every environment of the process.

An environment *holds* the renderer it draws with (:func:`hold`) and lets go of it in ``close()``. When
the last holder of a renderer lets go, the pool closes that renderer and frees what it owns (for ``gl``,
its framebuffers). The process's GL context stays: Mesa's llvmpipe cannot make a new context in a process
forked after the parent freed its own (``gym.make_vec(..., vectorization_mode="async")`` forks), while
workers forked from a live context inherit it and render. :func:`release_renderers` frees everything,
the context too, for a process that will not fork again.

Renderers used without a hold (``generate``, ``export``, ``show`` through :mod:`tvr_gym.render.cache`) stay
until the process ends or :func:`release_renderers`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from typing import Any

from tvr_gym.render import make_renderer

PoolKey = tuple[str, tuple[int, int]]

_RENDERERS: dict[PoolKey, Any] = {}
_HOLDERS: Counter[PoolKey] = Counter()
_PID = os.getpid()
_LOCK = threading.RLock()


def _key(name: str, size: tuple[int, int]) -> PoolKey:
    return name, (int(size[0]), int(size[1]))


def _forget_a_parents_pool() -> None:
    """After a fork the parent's renderers (and their GL objects) are dropped, never reused or closed."""
    global _PID
    if os.getpid() != _PID:
        _RENDERERS.clear()
        _HOLDERS.clear()
        _PID = os.getpid()


def shared_renderer(name: str, size: tuple[int, int]):
    """The process's renderer for (name, size), created on first use and reused."""
    key = _key(name, size)
    with _LOCK:
        _forget_a_parents_pool()
        renderer = _RENDERERS.get(key)
        if renderer is None:
            renderer = _RENDERERS[key] = make_renderer(name, size=key[1])
        return renderer


class RendererHold:
    """One environment's claim on the pool's renderer for (name, size); :meth:`release` lets go once.

    Pickling a hold (an environment sent to a worker) makes a new hold in the receiving process.
    """

    def __init__(self, name: str, size: tuple[int, int]) -> None:
        self.key = _key(name, size)
        self.released = False
        with _LOCK:
            _forget_a_parents_pool()
            _HOLDERS[self.key] += 1

    def release(self) -> None:
        """Let go; the last holder to let go closes the renderer (a second call does nothing)."""
        with _LOCK:
            if self.released:
                return
            self.released = True
            _forget_a_parents_pool()
            if _HOLDERS[self.key] > 1:
                _HOLDERS[self.key] -= 1
                return
            _HOLDERS.pop(self.key, None)
            renderer = _RENDERERS.pop(self.key, None)
        if renderer is not None:
            renderer.close()

    def __reduce__(self):
        return RendererHold, self.key


def hold(name: str, size: tuple[int, int]) -> RendererHold:
    """Claim the pool's renderer for (name, size) (made on its first render, not here)."""
    return RendererHold(name, size)


def holders(name: str, size: tuple[int, int]) -> int:
    """How many open holds the renderer for (name, size) has in this process."""
    with _LOCK:
        _forget_a_parents_pool()
        return _HOLDERS[_key(name, size)]


def is_open(name: str, size: tuple[int, int]) -> bool:
    """Whether the pool holds a renderer for (name, size) now."""
    with _LOCK:
        _forget_a_parents_pool()
        return _key(name, size) in _RENDERERS


def release_renderers() -> None:
    """Close every renderer of this process and free the GL context; the next render makes new ones.

    Open environments keep working (their next render makes a new renderer). Do not fork with ``gl``
    after this: see the module's note.
    """
    with _LOCK:
        renderers = list(_RENDERERS.values())
        _RENDERERS.clear()
    for renderer in renderers:
        renderer.close()
    gl = sys.modules.get("tvr_gym.render.gl")
    if gl is not None:
        gl.release_shared_context()


__all__ = ["RendererHold", "hold", "holders", "is_open", "release_renderers", "shared_renderer"]
