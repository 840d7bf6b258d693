"""Content-addressed render cache and the per-process renderer pool.

An image is keyed by the hash of everything that determines its pixels: the renderer, the image
size, the state (rotations included), the camera and the lamp jitter seed. Entries live in an
in-memory LRU (shared by every environment of a process by default) and, optionally, in a
directory where each entry is written atomically (temp file + ``os.replace``). G copies of one
episode therefore render once.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from tvr_gym.core.atomic import atomic_open
from tvr_gym.core.scene import State
from tvr_gym.core.trance import Problem, TranceFormatError
from tvr_gym.render import make_renderer
from tvr_gym.render.rig import camera_rig, lamp_rig

DEFAULT_MEMORY_ENTRIES = 256
"""Images kept by the shared in-memory LRU (a 320x240 image is 230 kB)."""


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A small least-recently-used mapping (render images, prepared episodes, problems)."""

    def __init__(self, maxsize: int) -> None:
        if not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"cache_size: expected an integer >= 0, got {maxsize!r}")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.maxsize == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def resize(self, maxsize: int) -> None:
        """Change the capacity (dropping the oldest entries when shrinking)."""
        if not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"cache_size: expected an integer >= 0, got {maxsize!r}")
        self.maxsize = maxsize
        while len(self._data) > maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


_SHARED_LRU: LRU[str, np.ndarray] = LRU(DEFAULT_MEMORY_ENTRIES)


def shared_lru() -> LRU:
    """The process-wide in-memory LRU used by environments that do not set ``cache_size``."""
    return _SHARED_LRU


def _digest(payload: Any) -> str:
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_key(renderer: str, size: tuple[int, int], state: State, camera, lamp_seed: int | None) -> str:
    """The content hash of one render."""
    return _digest(
        {
            "renderer": renderer,
            "size": list(size),
            "state": state.to_dicts(with_rotation=True),
            "camera": [list(camera.location), list(camera.target), camera.focal_length_mm, camera.sensor_width_mm],
            "lamp_seed": lamp_seed,
        }
    )


def file_key(path: Path, size: tuple[int, int]) -> str:
    """The key of a dataset image resized to ``size`` (changes when the file changes)."""
    st = path.stat()
    return _digest({"file": str(path.resolve()), "mtime": st.st_mtime_ns, "bytes": st.st_size, "size": list(size)})


class RenderCache:
    """In-memory LRU plus an optional on-disk store of ``.npy`` entries.

    Stored arrays are read-only; callers hand out copies. The disk store is a cache, never a source of
    truth: an entry that cannot be read, or holds an array of the wrong shape or dtype, is rendered
    again and overwritten; a directory that cannot be created or written (read-only, full) leaves the
    images in memory only. Each kind of trouble is reported by one warning per cache.
    """

    def __init__(self, memory: LRU | None = None, directory: str | os.PathLike[str] | None = None) -> None:
        self.memory = memory if memory is not None else LRU(0)
        self.directory = Path(directory) if directory is not None else None
        self.hits = 0
        self.misses = 0
        self._warned: set[str] = set()
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._warn("create", f"render cache: cannot create {self.directory} ({exc}); caching in memory only")
                self.directory = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["memory"] = LRU(self.memory.maxsize)  # content is rebuildable; never ship images
        return state

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npy"

    def _load(self, key: str, shape: tuple[int, ...] | None) -> np.ndarray | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            image = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - empty, truncated, foreign or unreadable: render again
            self._warn("read", f"render cache: unreadable entry {path} ({type(exc).__name__}); rendering again")
            return None
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or (shape is not None and image.shape != shape):
            found = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            self._warn("read", f"render cache: entry {path} holds {found}, expected uint8 {shape}; rendering again")
            return None
        return image

    def _store(self, key: str, image: np.ndarray) -> None:
        if self.directory is None:
            return
        try:
            with atomic_open(self._path(key), "wb") as fh:
                np.save(fh, image, allow_pickle=False)
        except OSError as exc:
            self._warn("write", f"render cache: cannot write to {self.directory} ({exc}); caching in memory only")

    def get_or_make(
        self, key: str, make: Callable[[], np.ndarray], shape: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """The cached image for ``key``, calling ``make()`` only on a miss; ``shape`` is what a disk entry must hold."""
        image = self.memory.get(key)
        if image is not None:
            self.hits += 1
            return image
        image = self._load(key, shape)
        if image is None:
            self.misses += 1
            image = np.ascontiguousarray(make(), dtype=np.uint8)
            self._store(key, image)
        else:
            self.hits += 1
        image.flags.writeable = False
        self.memory.put(key, image)
        return image


_RENDERERS: dict[tuple[str, tuple[int, int]], Any] = {}
_RENDERERS_PID = os.getpid()


def shared_renderer(name: str, size: tuple[int, int]):
    """The process's renderer for (name, size), created on first use and reused.

    After a fork the parent's renderers (and their GL contexts) are dropped, never reused.
    """
    global _RENDERERS_PID
    if os.getpid() != _RENDERERS_PID:
        _RENDERERS.clear()
        _RENDERERS_PID = os.getpid()
    key = (name, (int(size[0]), int(size[1])))
    renderer = _RENDERERS.get(key)
    if renderer is None:

        renderer = _RENDERERS[key] = make_renderer(name, size=key[1])
    return renderer


def release_renderers() -> None:
    """Close this process's shared renderers and free the GL context; the next render makes new ones."""
    for renderer in _RENDERERS.values():
        renderer.close()
    _RENDERERS.clear()
    import sys

    gl = sys.modules.get("tvr_gym.render.gl")
    if gl is not None:
        gl.release_shared_context()


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
