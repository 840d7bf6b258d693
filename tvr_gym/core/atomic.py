"""Atomic file writes: a file is either absent or complete, never half-written."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(where: object) -> bool:
    """Whether ``where`` is a URL (``s3://bucket/x``, ``file:///tmp/x``) rather than a local path."""
    return isinstance(where, str) and _URL.match(where) is not None


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
"""Read once at import: os.umask can only be read by setting it, which is not thread-safe."""


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it onto ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the completed directory ``tmp`` onto ``target``, replacing any old one.

    The old directory is first renamed aside, so ``target`` always holds either the old or the new
    complete contents; the old one is removed afterwards.
    """
    tmp, target = Path(tmp), Path(target)
    old = target.with_name(f".old-{target.name}")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str | Iterable[str]) -> Path:
    """Write ``text`` (a string or an iterable of chunks) as UTF-8 so that ``path`` is absent or complete."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        if isinstance(text, str):
            fh.write(text)
        else:
            fh.writelines(text)
    return Path(path)


PNG_COMPRESS_LEVEL = 1
"""zlib level of every PNG we write (datasets, exports, data URLs). PIL's default, 6, spends about 37 ms on a
320x240 render, two thirds of ``generate``'s time per sample; level 1 takes about 9 ms for files about 18%
larger (``benchmarks/bench_png.py``). The pixels are the same at every level."""


def encode_png(image: Any, level: int | None = None) -> bytes:
    """An RGB uint8 image as PNG bytes, at zlib ``level`` (default :data:`PNG_COMPRESS_LEVEL`)."""
    buffer = io.BytesIO()
    level = PNG_COMPRESS_LEVEL if level is None else level
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def save_png(image: Any, path: str | os.PathLike[str]) -> Path:
    """Write an RGB uint8 image as PNG so that ``path`` is absent or complete."""
    data = encode_png(image)
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def check_writable(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and prove a file can be written there; ``ValueError`` saying why not.

    Long runs call this before they start, so an unwritable ``--out`` fails in a second, not after hours.
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValueError(f"--out: cannot write to {path} ({exc.strerror or exc})") from None
    return path


class Journal:
    """An append-only JSON-lines file that survives a crash: finished records are never lost.

    :meth:`append` writes whole lines and fsyncs them; :meth:`read` returns the complete lines and cuts
    off a last line torn by a crash (its record is simply made again).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> list[str]:
        """The complete lines (without their newline), after dropping a torn tail from the file."""
        if not self.path.is_file():
            return []
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            with self.path.open("r+b") as fh:
                fh.truncate(len(complete))
        return [line for line in complete.decode("utf-8", errors="replace").splitlines() if line.strip()]

    def append(self, lines: Iterable[str]) -> None:
        """Append ``lines`` (each one JSON record) durably."""
        text = "".join(line + "\n" for line in lines)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
