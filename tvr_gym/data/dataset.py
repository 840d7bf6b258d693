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
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tvr_gym.core.atomic import Journal, atomic_open, atomic_write_text, save_png
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, VIEWS, check_int, episode_options, is_int
from tvr_gym.core.trance import DATA_FILE, IMAGE_DIR, Problem, TranceFormatError, image_name, parse_line, read_lines
from tvr_gym.problems.generator import generate
from tvr_gym.render.cache import RenderCache, observed_image, shared_renderer
from tvr_gym.version import __version__

__all__ = ["MANIFEST_FILE", "DatasetDirError", "DatasetWriter", "generate_dataset", "merge_datasets", "write_sample"]

MANIFEST_FILE = "dataset.json"
JOURNAL_FILE = ".progress.jsonl"
_IN_FLIGHT_PER_WORKER = 4
"""Samples queued per worker process: enough to keep it busy, bounded so a huge --n costs no memory."""

Images = Mapping[tuple[str, str], np.ndarray]
"""A sample's images by (phase, view): ``("initial", "center")``, ``("final", "left")``, ..."""


class DatasetDirError(ValueError):
    """The output directory holds something this command must not write into."""


def write_sample(out: Path, problem: Problem, images: Images) -> str:
    """Save ``images`` under ``out/image`` (each file atomically) and return the sample's JSON line naming them."""
    names: dict[str, dict[str, str]] = {"initial": {}, "final": {}}
    for (phase, view), image in images.items():
        name = image_name(problem.idx, "init" if phase == "initial" else "fin", view)
        save_png(image, out / IMAGE_DIR / name)
        names[phase][view] = name
    return json.dumps(replace(problem, images=names, root=out).to_dict(), separators=(",", ":"))


@dataclass
class DatasetWriter:
    """Resumable writing into one dataset directory, for one ``manifest``.

    ``done`` holds the ``idx`` of every finished sample. :meth:`record` journals one finished sample;
    :meth:`finish` writes ``data.jsonl``. Opening refuses a directory that holds anything but a dataset
    with the same manifest, before anything is written.
    """

    out: Path
    manifest: dict[str, Any]
    lines: dict[int, str] = field(default_factory=dict)

    @classmethod
    def open(cls, out: str | os.PathLike[str], manifest: Mapping[str, Any]) -> DatasetWriter:
        out = Path(out)
        manifest = json.loads(json.dumps(dict(manifest)))  # the JSON form, as it is compared on disk
        existing = out / MANIFEST_FILE
        if existing.is_file():
            try:
                found = json.loads(existing.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DatasetDirError(f"{existing}: unreadable manifest ({exc}); choose another --out") from None
            if found != manifest:
                keys = sorted(k for k in {*found, *manifest} if found.get(k) != manifest.get(k))
                diff = "; ".join(f"{k}: {found.get(k)!r} there, {manifest.get(k)!r} now" for k in keys)
                raise DatasetDirError(f"{out} holds a dataset made differently ({diff}); choose another --out")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DatasetDirError(
                f"{out} is not empty and holds no {MANIFEST_FILE}: writing into it could mix images of other "
                "samples with these; choose an empty or new --out"
            )
        writer = cls(out, manifest)
        writer._load_done()
        (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        if not existing.is_file():
            atomic_write_text(existing, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return writer

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
        self._journal.append([line])
        self.lines[idx] = line

    def finish(self) -> int:
        """Write ``data.jsonl`` (every finished sample, sorted by idx) atomically; drop the journal."""
        atomic_write_text(self.out / DATA_FILE, (self.lines[k] + "\n" for k in sorted(self.lines)))
        self._journal.clear()
        return len(self.lines)


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
    **options: Any,
) -> tuple[int, int]:
    """Generate samples ``start .. start + n - 1`` of ``(setting, seed)`` into ``out``; resumable.

    Finished samples are skipped, so the same call after an interruption completes the dataset, and a
    call with another ``start``/``n`` adds those samples to it. ``workers > 1`` generates and renders in
    that many processes. ``options`` are generator options (``steps``, ``visible``, ``attributes``,
    ``final_views``). Returns (samples made now, samples in the dataset).
    """

    for name, value, low in (("n", n, 0), ("start", start, 0), ("seed", seed, 0), ("workers", workers, 1)):
        check_int(name, value, low)
    episode_options(setting, **options)  # every option is checked before anything is written
    resolved = shared_renderer(renderer, size).name  # "auto" is recorded as what it chose
    writer = DatasetWriter.open(out, generation_manifest(setting, seed, size, resolved, **options))
    todo = [i for i in range(start, start + n) if i not in writer.done]
    tasks = ((writer.out, setting, seed, i, tuple(size), resolved, options) for i in todo)
    made = 0
    try:
        for line in _progress(_run(_make_generated, tasks, workers), len(todo), f"generating {setting}", progress):
            writer.record(line)
            made += 1
    finally:
        total = writer.finish()
    return made, total


def _run(fn: Callable[[Any], str], tasks: Iterable[Any], workers: int) -> Iterator[str]:
    """``fn`` over ``tasks`` in this process, or in ``workers`` processes with a bounded queue (any order)."""
    if workers == 1:
        yield from map(fn, tasks)
        return
    context = multiprocessing.get_context("spawn")  # a GL context must not cross a fork
    pool = futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
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


def _progress(items: Iterable[Any], total: int, label: str, enabled: bool) -> Iterator[Any]:
    from rich.progress import track

    yield from track(items, total=total, description=label, disable=not enabled, transient=False)


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
