"""The content-addressed render store: an in-memory LRU and an optional directory of checked entries.

An image is keyed by the hash of everything that determines its pixels: the renderer, the image
size, the state (rotations included), the camera and the lamp jitter seed. Entries live in an
in-memory LRU (shared by every environment of a process by default) and, optionally, in a
directory where each entry is written atomically (temp file + ``os.replace``) with a checksum of its
content, so a damaged entry is rendered again rather than served. G copies of one episode render once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from tvr_gym.core.atomic import atomic_open
from tvr_gym.core.scene import State

DEFAULT_MEMORY_ENTRIES = 256
"""Images kept by the shared in-memory LRU (a 320x240 image is 230 kB)."""
ENTRY_MAGIC = b"TVRIMG1\n"
"""The first bytes of a disk entry: then the SHA-256 of the rest, then the image as ``.npy`` bytes."""


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


def encode_entry(image: np.ndarray) -> bytes:
    """A disk entry: :data:`ENTRY_MAGIC`, the SHA-256 of the ``.npy`` bytes, then those bytes."""
    buffer = io.BytesIO()
    np.save(buffer, image, allow_pickle=False)
    payload = buffer.getvalue()
    return ENTRY_MAGIC + hashlib.sha256(payload).digest() + payload


def decode_entry(data: bytes) -> np.ndarray:
    """The image of a disk entry; ``ValueError`` when its header, checksum or array is not intact."""
    head = len(ENTRY_MAGIC)
    if data[:head] != ENTRY_MAGIC:
        raise ValueError("not a tvr-gym render cache entry")
    digest, payload = data[head : head + 32], data[head + 32 :]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch: the entry was damaged")
    return np.load(io.BytesIO(payload), allow_pickle=False)


class RenderCache:
    """In-memory LRU plus an optional on-disk store of checked entries.

    Stored arrays are read-only; callers hand out copies. The disk store is a cache, never a source of
    truth: each entry carries a SHA-256 of its content, and an entry that cannot be read, fails its
    checksum, or holds an array of the wrong shape or dtype is rendered again and overwritten (a folder
    in an entry's place is removed). A directory that cannot be created leaves the cache in memory only;
    an entry that cannot be written (read-only, full) stays in memory. Each kind of trouble is reported
    by one warning per cache.
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
        return self.directory / key[:2] / f"{key}.img"

    def _load(self, key: str, shape: tuple[int, ...] | None) -> np.ndarray | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            image = decode_entry(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - empty, truncated, damaged, foreign or unreadable: render again
            self._warn("read", f"render cache: unreadable entry {path} ({exc}); rendering again")
            return None
        if image.dtype != np.uint8 or (shape is not None and image.shape != shape):
            self._warn("read", f"render cache: entry {path} holds {image.dtype} {image.shape}, expected uint8 {shape}")
            return None
        return image

    def _store(self, key: str, image: np.ndarray) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        try:
            if path.is_dir() and not path.is_symlink():  # a folder where an entry belongs: the store is ours
                self._warn("repair", f"render cache: a folder stood at entry {path}; replaced by the entry")
                shutil.rmtree(path)
            with atomic_open(path, "wb") as fh:
                fh.write(encode_entry(image))
        except OSError as exc:
            self._warn("write", f"render cache: cannot write {path} ({exc}); this image stays in memory only")

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


