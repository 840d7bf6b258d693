"""Writing TRANCE-format datasets that survive interruption: ``generate`` (resumable, parallel) and ``merge``.

A dataset directory written here holds ``data.jsonl``, ``image/`` and ``dataset.json``, the manifest of
what made it (the setting, seed, image size, renderer and tvr-gym version). Every sample's images are
written atomically before the sample is recorded in ``.progress.jsonl``, an append-only journal, and
``data.jsonl`` is rewritten atomically, sorted by ``idx``, from the journal at the end of a run or on
an interruption. So:

- rerunning the same command skips the finished samples (a torn last journal line is dropped);
- ``data.jsonl`` only ever lists samples whose images are complete, and a directory is only written
  into by a command with the same manifest, so its images never disagree with its samples;
- ``--start/--n`` shards can go to one directory or to several that :func:`merge_datasets` joins.

A run holds an exclusive lock on its directory (so two commands never write into one at once) and, on
opening it, removes the temporary files a killed run left (only tvr-gym's own, only in that directory).
Worker processes die with the process that started them, even when it is killed with SIGKILL. SIGTERM
stops a run like Ctrl-C (:class:`Interrupted`), and a full disk or quota is one :class:`DiskFullError`
naming the path; either way the finished samples are kept and the same command resumes.
"""

from __future__ import annotations

import concurrent.futures as futures
import ctypes
import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no directory locks
    fcntl = None  # type: ignore[assignment]

from tvr_gym.core.atomic import Journal, atomic_open, atomic_write_text, save_png
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, VIEWS, check_choice, check_int, episode_options, is_int
from tvr_gym.core.trance import DATA_FILE, IMAGE_DIR, Problem, TranceFormatError, image_name, parse_line, read_lines
from tvr_gym.data.cluster import ENGINES, RayOptions, ray_session
from tvr_gym.problems.generator import generate
from tvr_gym.render.cache import RenderCache, observed_image, shared_renderer
from tvr_gym.version import __version__

__all__ = [
    "MANIFEST_FILE", "DatasetDirError", "DatasetWriter", "DiskFullError", "Interrupted", "generate_dataset",
    "merge_datasets", "stopping_cleanly", "write_sample",
]  # fmt: skip

MANIFEST_FILE = "dataset.json"
JOURNAL_FILE = ".progress.jsonl"
_IN_FLIGHT_PER_WORKER = 4
"""Samples queued per worker process: enough to keep it busy, bounded so a huge --n costs no memory."""

Images = Mapping[tuple[str, str], np.ndarray]
"""A sample's images by (phase, view): ``("initial", "center")``, ``("final", "left")``, ..."""
RESUMES = "finished samples are kept; rerun the same command to resume"
"""What an interrupted or failed ``generate`` (or ``trance`` export) keeps."""
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
"""The errnos of a full disk and of an exceeded quota."""
_TEMP = r"\.(?:{names})\.[a-z0-9_]{{8}}\.tmp"
"""A temporary file of :func:`tvr_gym.core.atomic.atomic_open` (``mkstemp``: ``.NAME.XXXXXXXX.tmp``)."""
_STALE_IMAGE = re.compile(_TEMP.format(names=r"img_\d+-(?:init|fin)\.\w+\.png"))
_STALE_TOP = re.compile(_TEMP.format(names="|".join(re.escape(n) for n in (DATA_FILE, MANIFEST_FILE))))
_PARENT_POLL_S = 1.0
"""How often a worker checks that its parent lives, where the kernel cannot kill it on the parent's death."""
_PR_SET_PDEATHSIG = 1
_LOCK_RETRY_S = 0.05
"""How often :func:`lock_dir` tries again while another process holds the lock."""
BUSY = "another tvr-gym command is writing into it; wait for it to end or choose another --out"
"""Why a directory that another command holds is refused."""
"""``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent dies."""


class DatasetDirError(ValueError):
    """The output directory holds something this command must not write into."""


class Interrupted(KeyboardInterrupt):
    """A long write stopped by Ctrl-C (SIGINT) or SIGTERM; ``note`` says what was kept and how to go on.

    ``signum`` is the signal where :func:`stopping_cleanly` caught it (SIGTERM), else ``None``.
    """

    def __init__(self, note: str = "", signum: int | None = None) -> None:
        super().__init__(note)
        self.note = note
        self.signum = signum


class DiskFullError(OSError, ValueError):
    """The disk or the quota is full (ENOSPC, EDQUOT) while writing ``filename``; ``note`` says what was kept.

    It is a ``ValueError`` too, so the command line reports it in one line and exits with 2.
    """

    note = ""

    def __str__(self) -> str:
        return f"{self.filename}: {(self.strerror or 'disk full').lower()} (free space; {self.note})"


def _disk_full_cause(exc: BaseException) -> OSError | None:
    """The disk-full ``OSError`` behind ``exc``, also when a library wrapped it (``datasets`` does)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """A disk-full error raised while writing ``path`` names it (a failed ``write`` names no file)."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum=signum)


@contextmanager
def stopping_cleanly(out: Path | str, kept: str) -> Iterator[None]:
    """Make each way a long write into ``out`` stops one clear error that says what was ``kept``.

    SIGTERM (what ``kill`` and schedulers send) stops the block like Ctrl-C; both raise :class:`Interrupted`.
    A full disk or quota, also when a library wrapped the ``OSError``, raises :class:`DiskFullError` naming
    the path. The SIGTERM handler is installed in the main thread only, and only where SIGTERM has its
    default action (a caller that handles it, like the command line, keeps its own); it is removed after.
    """
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL, None,
    )  # fmt: skip
    if ours:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    except KeyboardInterrupt as exc:
        raise Interrupted(getattr(exc, "note", "") or kept, getattr(exc, "signum", None)) from None
    except Exception as exc:
        full = _disk_full_cause(exc)
        if full is None or isinstance(exc, DiskFullError):
            raise
        error = DiskFullError(full.errno, full.strerror or os.strerror(full.errno), str(full.filename or out))
        error.note = kept
        raise error from exc
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def lock_dir(directory: Path, shared: bool = False, wait_s: float = 0.0) -> int | None:
    """Lock ``directory`` (``flock``) and return the descriptor that holds the lock (close it to release).

    The kernel releases the lock when the process dies, however it dies. Raises ``BlockingIOError`` when
    another process still holds a conflicting lock after ``wait_s`` seconds. Returns ``None`` where
    directories cannot be locked (no ``fcntl``, or a filesystem without ``flock``).
    """
    if fcntl is None:
        return None
    fd = os.open(directory, os.O_RDONLY)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise
            time.sleep(_LOCK_RETRY_S)
        except OSError:  # a filesystem without flock
            os.close(fd)
            return None


def share_lock(fd: int | None) -> None:
    """Turn the exclusive lock ``fd`` of :func:`lock_dir` into a shared one."""
    if fd is not None and fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_SH)


def lock_or_refuse(directory: Path) -> int | None:
    """:func:`lock_dir` exclusively, or :class:`DatasetDirError` (:data:`BUSY`) when another command holds it."""
    try:
        return lock_dir(directory)
    except BlockingIOError:
        raise DatasetDirError(f"{directory}: {BUSY}") from None


def unlock_dir(fd: int | None) -> None:
    """Release a lock of :func:`lock_dir`."""
    if fd is not None:
        os.close(fd)


def write_sample(out: Path, problem: Problem, images: Images) -> str:
    """Save ``images`` under ``out/image`` (each file atomically) and return the sample's JSON line naming them."""
    names: dict[str, dict[str, str]] = {"initial": {}, "final": {}}
    for (phase, view), image in images.items():
        name = image_name(problem.idx, "init" if phase == "initial" else "fin", view)
        with _naming(out / IMAGE_DIR / name):
            save_png(image, out / IMAGE_DIR / name)
        names[phase][view] = name
    return json.dumps(replace(problem, images=names, root=out).to_dict(), separators=(",", ":"))


def manifest_diff(found: dict[str, Any], wanted: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """What differs between the manifest in a directory and the one a command would write, for its error:
    ``"seed: 1 there, 2 now; ..."`` (keys in ``skip`` left out)."""
    keys = sorted(k for k in {*found, *wanted} if found.get(k) != wanted.get(k) and k not in skip)
    return "; ".join(f"{k}: {found.get(k)!r} there, {wanted.get(k)!r} now" for k in keys)


@dataclass
class DatasetWriter:
    """Resumable writing into one dataset directory, for one ``manifest``.

    ``done`` holds the ``idx`` of every finished sample. :meth:`record` journals one finished sample;
    :meth:`finish` writes ``data.jsonl`` (:meth:`record_all` does both). Opening refuses a directory that
    holds anything but a dataset with the same manifest, or that another command is writing into, before
    anything is written; then it removes the temporary files a killed run left there. The directory stays
    locked until :meth:`finish` or :meth:`abandon`.
    """

    out: Path
    manifest: dict[str, Any]
    lines: dict[int, str] = field(default_factory=dict)
    _lock: int | None = field(default=None, repr=False)

    @classmethod
    def open(cls, out: str | os.PathLike[str], manifest: Mapping[str, Any]) -> DatasetWriter:
        out = Path(out)
        manifest = json.loads(json.dumps(dict(manifest)))  # the JSON form, as it is compared on disk
        if out.exists() and not out.is_dir():
            raise DatasetDirError(f"{out} is not a directory; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        lock = lock_or_refuse(out)
        try:
            return cls._open_locked(out, manifest, lock)
        except BaseException:
            unlock_dir(lock)
            raise

    @classmethod
    def _open_locked(cls, out: Path, manifest: dict[str, Any], lock: int | None) -> DatasetWriter:
        existing = out / MANIFEST_FILE
        if existing.is_file():
            try:
                found = json.loads(existing.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DatasetDirError(f"{existing}: unreadable manifest ({exc}); choose another --out") from None
            if found != manifest:
                diff = manifest_diff(found, manifest)
                raise DatasetDirError(f"{out} holds a dataset made differently ({diff}); choose another --out")
        elif any(out.iterdir()):
            raise DatasetDirError(
                f"{out} is not empty and holds no {MANIFEST_FILE}: writing into it could mix images of other "
                "samples with these; choose an empty or new --out"
            )
        writer = cls(out, manifest, _lock=lock)
        writer._remove_stale_temporaries()
        writer._load_done()
        (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        if not existing.is_file():
            with _naming(existing):
                atomic_write_text(existing, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return writer

    def _remove_stale_temporaries(self) -> None:
        """Remove the temporary files a killed run left: ours only (by name), in this directory only.

        No other command writes here now (the directory is locked), so every such file is stale.
        """
        for folder, pattern in ((self.out, _STALE_TOP), (self.out / IMAGE_DIR, _STALE_IMAGE)):
            if folder.is_dir():
                for path in folder.iterdir():
                    if pattern.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                        path.unlink(missing_ok=True)

    @property
    def done(self) -> set[int]:
        return set(self.lines)

    def _load_done(self) -> None:
        data = self.out / DATA_FILE
        if data.is_file():
            for lineno, _, text in read_lines(data):
                self.lines[_idx_of(text, f"{data}:{lineno}")] = text.rstrip("\n")
        for lineno, line in enumerate(self._journal.read(), 1):
            self.lines[_idx_of(line, f"{self._journal.path}:{lineno}")] = line

    @property
    def _journal(self) -> Journal:
        return Journal(self.out / JOURNAL_FILE)

    def record(self, line: str) -> None:
        """Journal one finished sample (its images are already complete on disk)."""
        idx = _idx_of(line, "sample")
        with _naming(self._journal.path):  # half a line written to a full disk is dropped when it is read
            self._journal.append([line])
        self.lines[idx] = line

    def record_lines(self, lines: Sequence[str]) -> None:
        """Journal several finished samples at once (one durable append)."""
        indices = [_idx_of(line, "sample") for line in lines]
        with _naming(self._journal.path):
            self._journal.append(lines)
        self.lines.update(zip(indices, lines))

    def record_ranges(
        self, fn: Callable[[Any], list[str]], todo: Sequence[int], payload: Callable[[list[int]], Any],
        options: RayOptions, label: str, progress: bool,
    ) -> tuple[int, int]:  # fmt: skip
        """:meth:`record_all` for a Ray job: ``fn(payload(range))`` per range of ``todo`` (:mod:`tvr_gym.data.cluster`).

        Ray is started (or joined) before this is called; each finished range is journalled at once.
        """
        from tvr_gym.data.cluster import run_ranges

        made = 0

        def record(lines: list[str]) -> None:
            nonlocal made
            self.record_lines(lines)
            made += len(lines)
            advance(len(lines))

        try:
            with counting(len(todo), label, progress) as advance:
                run_ranges(fn, todo, payload, options, record, on_failure=self._remove_stale_temporaries)
        except BaseException:
            self.abandon()
            raise
        return made, self.finish()

    def record_all(self, lines: Iterable[str]) -> tuple[int, int]:
        """Record every line, then :meth:`finish`; returns (lines recorded, samples in the dataset).

        However it stops (Ctrl-C, SIGTERM, a full disk, an error), what was finished is kept (:meth:`abandon`).
        """
        made = 0
        try:
            for line in lines:
                self.record(line)
                made += 1
        except BaseException:
            self.abandon()
            raise
        return made, self.finish()

    def finish(self) -> int:
        """Write ``data.jsonl`` (every finished sample, sorted by idx) atomically; drop the journal; unlock."""
        try:
            with _naming(self.out / DATA_FILE):
                atomic_write_text(self.out / DATA_FILE, (self.lines[k] + "\n" for k in sorted(self.lines)))
            self._journal.clear()
            return len(self.lines)
        finally:
            unlock_dir(self._lock)
            self._lock = None

    def abandon(self) -> None:
        """After a failure: :meth:`finish` if the disk allows it (else the journal keeps the finished samples)."""
        try:
            self.finish()
        except OSError:
            pass


def _idx_of(line: str, where: str) -> int:
    try:
        idx = json.loads(line)["idx"]
    except (ValueError, TypeError, KeyError) as exc:
        raise TranceFormatError(f"{where}: not a sample line ({exc})") from None
    if not is_int(idx):
        raise TranceFormatError(f"{where}: idx {idx!r} is not an integer")
    return int(idx)


# ---------------------------------------------------------------------------- generate


def generation_manifest(setting: str, seed: int, size: tuple[int, int], renderer: str, **options: Any) -> dict:
    """What makes a generated dataset: any difference means different images for the same idx."""

    return {
        "kind": "generate",
        "tvr_gym": __version__,
        "setting": setting,
        "seed": int(seed),
        "size": [int(size[0]), int(size[1])],
        "renderer": renderer,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())},
    }


def _make_generated_range(task: tuple[Path, str, int, list[int], tuple[int, int], str, dict[str, Any]]) -> list[str]:
    """One Ray task of ``generate``: the samples of one index range (:func:`_make_generated` each)."""
    out, setting, seed, indices, size, renderer, options = task
    return [_make_generated((out, setting, seed, i, size, renderer, options)) for i in indices]


def _make_generated(task: tuple[Path, str, int, int, tuple[int, int], str, dict[str, Any]]) -> str:
    """One sample: generate it, render its views, write its images; its JSON line (runs in a worker)."""

    out, setting, seed, index, size, renderer, options = task
    problem = generate(setting, seed, index=index, **options)
    cache = RenderCache()
    centre = VIEWS[0]
    images = {("initial", centre): observed_image(problem, "initial", centre, renderer, size, cache)}
    for view in problem.images["final"]:
        images[("final", view)] = observed_image(problem, "final", view, renderer, size, cache)
    return write_sample(out, problem, images)


def generate_dataset(
    out: str | os.PathLike[str],
    setting: str,
    seed: int,
    n: int,
    start: int = 0,
    size: tuple[int, int] = DEFAULT_RENDER_SIZE,
    renderer: str = "auto",
    workers: int = 1,
    progress: bool = True,
    engine: str = "local",
    ray: RayOptions | None = None,
    **options: Any,
) -> tuple[int, int]:
    """Generate samples ``start .. start + n - 1`` of ``(setting, seed)`` into ``out``; resumable.

    Finished samples are skipped, so the same call after an interruption completes the dataset, and a
    call with another ``start``/``n`` adds those samples to it. ``workers > 1`` generates and renders in
    that many processes. ``engine="ray"`` runs index ranges as Ray tasks instead (``ray``: where and how,
    :class:`~tvr_gym.data.cluster.RayOptions`; by default a local instance of ``workers`` CPUs), with the
    same result byte for byte. ``options`` are generator options (``steps``, ``visible``, ``attributes``,
    ``final_views``). Returns (samples made now, samples in the dataset).
    """

    for name, value, low in (("n", n, 0), ("start", start, 0), ("seed", seed, 0), ("workers", workers, 1)):
        check_int(name, value, low)
    check_choice("engine", engine, ENGINES)
    episode_options(setting, **options)  # every option is checked before anything is written
    resolved = shared_renderer(renderer, size).name  # "auto" is recorded as what it chose
    if engine == "ray":
        ray = ray or RayOptions(workers=workers)
        manifest = generation_manifest(setting, seed, size, resolved, **options)
        with ray_session(ray), stopping_cleanly(Path(out), RESUMES):  # a bad address fails before any write
            writer = DatasetWriter.open(out, manifest)
            todo = [i for i in range(start, start + n) if i not in writer.done]
            payload = partial(_generated_range_task, writer.out, setting, seed, tuple(size), resolved, options)
            return writer.record_ranges(_make_generated_range, todo, payload, ray, f"generating {setting}", progress)
    with stopping_cleanly(Path(out), RESUMES):
        writer = DatasetWriter.open(out, generation_manifest(setting, seed, size, resolved, **options))
        todo = [i for i in range(start, start + n) if i not in writer.done]
        tasks = ((writer.out, setting, seed, i, tuple(size), resolved, options) for i in todo)
        with closing(_run(_make_generated, tasks, workers)) as lines:  # closing it shuts the worker pool down
            return writer.record_all(_progress(lines, len(todo), f"generating {setting}", progress))


def _generated_range_task(
    out: Path, setting: str, seed: int, size: tuple[int, int], renderer: str, options: dict[str, Any],
    indices: list[int],
) -> tuple[Path, str, int, list[int], tuple[int, int], str, dict[str, Any]]:
    return out, setting, seed, indices, size, renderer, options


def _run(fn: Callable[[Any], str], tasks: Iterable[Any], workers: int) -> Generator[str, None, None]:
    """``fn`` over ``tasks`` in this process, or in ``workers`` processes with a bounded queue (any order).

    The workers die with this process (:func:`_die_with_parent`). When this process is interrupted, the
    samples in progress finish and the queued ones are dropped.
    """
    if workers == 1:
        yield from map(fn, tasks)
        return
    context = multiprocessing.get_context("spawn")  # a GL context must not cross a fork
    pool = futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
    )
    pending: set[futures.Future[str]] = set()
    tasks = iter(tasks)
    try:
        while True:
            while len(pending) < workers * _IN_FLIGHT_PER_WORKER:
                task = next(tasks, None)
                if task is None:
                    break
                pending.add(pool.submit(fn, task))
            if not pending:
                return
            finished, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the worker never outlives ``parent``, the process that started the pool.

    On Linux the kernel kills it with SIGKILL the moment the parent dies, however the parent dies
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread checks the parent's pid every
    :data:`_PARENT_POLL_S` seconds and exits. Ctrl-C and SIGTERM are ignored here: they are the parent's
    to handle, which lets the samples in progress finish and shuts the pool down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not _kernel_kills_orphans():
        threading.Thread(target=_exit_when_orphaned, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _kernel_kills_orphans() -> bool:
    """Ask the kernel for SIGKILL when the parent dies; ``False`` where it cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _progress(items: Iterable[Any], total: int, label: str, enabled: bool) -> Iterator[Any]:
    from rich.progress import track

    yield from track(items, total=total, description=label, disable=not enabled, transient=False)


@contextmanager
def counting(total: int, label: str, enabled: bool, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """One progress bar for a whole job, advanced by the returned function; it shows the count and throughput."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]}} {unit}/s"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, disable=not enabled, transient=False) as bar:
        task = bar.add_task(label, total=total, rate="-")
        started = time.monotonic()
        done = 0

        def advance(k: int) -> None:
            nonlocal done
            done += k
            rate = done / max(time.monotonic() - started, 1e-9)
            bar.update(task, advance=k, rate=f"{rate:,.1f}")

        yield advance


# ---------------------------------------------------------------------------- merge


def merge_datasets(
    shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], progress: bool = True
) -> int:
    """Join dataset directories (e.g. ``--start/--n`` shards) into ``out``; returns the number of samples.

    Shards made by ``generate`` must share their manifest, which ``out`` then carries (so it can be
    extended or resumed); plain TRANCE directories without one merge as they are. A sample ``idx``
    found in two shards must be identical in both. Images are hard-linked where possible, else copied.
    """
    roots = [Path(s) for s in shards]
    if not roots:
        raise ValueError("shards: give at least one dataset directory")
    manifests = []
    for root in roots:
        if not (root / DATA_FILE).is_file():
            raise ValueError(f"shard: {root} holds no {DATA_FILE}")
        path = root / MANIFEST_FILE
        manifests.append(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None)
    if any(m != manifests[0] for m in manifests):
        raise DatasetDirError(
            "shards were made differently: " + "; ".join(f"{r}: {m}" for r, m in zip(roots, manifests))
        )
    target = Path(out)
    if (target / DATA_FILE).exists() or (target.exists() and any(target.iterdir())):
        raise DatasetDirError(f"{target} is not empty; merge into a new directory")
    lines: dict[int, tuple[str, Path]] = {}
    for root in roots:
        data = root / DATA_FILE
        for lineno, _, text in read_lines(data):
            where = f"{data}:{lineno}"
            problem = parse_line(text, where, root)
            line = json.dumps(problem.to_dict(), separators=(",", ":"))
            seen = lines.get(problem.idx)
            if seen is not None and seen[0] != line:
                raise DatasetDirError(f"idx {problem.idx} differs between {seen[1]} and {root}")
            lines[problem.idx] = (line, root)
    (target / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for idx in _progress(sorted(lines), len(lines), "merging", progress):
        line, root = lines[idx]
        problem = parse_line(line, f"{root}: idx {idx}", root)
        for phase, views in problem.images.items():
            for view, name in views.items():
                source = problem.image_path(phase, view)  # a link leading out of the shard is refused
                if source is None:
                    raise DatasetDirError(f"{root / IMAGE_DIR / name}: missing image of idx {idx}")
                _link_or_copy(source, target / IMAGE_DIR / name)
    if manifests[0] is not None:
        atomic_write_text(target / MANIFEST_FILE, json.dumps(manifests[0], indent=1, sort_keys=True) + "\n")
    atomic_write_text(target / DATA_FILE, (lines[k][0] + "\n" for k in sorted(lines)))
    return len(lines)


def _link_or_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # another filesystem, or links not allowed: copy
        with atomic_open(target, "wb") as dst, source.open("rb") as src:
            shutil.copyfileobj(src, dst)
        return
    os.replace(tmp, target)
