"""Table exports as parquet shards, made here or as Ray tasks: ``export --shard-size R`` / ``--engine ray``.

Rows ``start .. start + n - 1`` are cut into shards of ``rows_per_shard`` consecutive rows, written as
``OUT/SPLIT/shard-00000-of-00004.parquet`` and so on, each whole or not at all. ``OUT/SPLIT/`` holds nothing
else, ever: EasyR1 takes a directory's file type from the first name ``os.listdir`` gives, so a manifest or a
temporary file there would break it. The manifest is ``OUT/.tvr-gym-shards/SPLIT.json``: what was exported
(format, environment, seed, rows, keywords) and every shard's file, first row and row count. It is written
before the first shard, so a rerun of the same command skips the shards already there, and a different
command is refused. Shards are staged in ``OUT/.tvr-gym-shards/`` too (``datasets`` skips hidden names).

``OUT`` is a local (or shared) directory, or a URL of a file system ``fsspec`` knows: ``s3://bucket/x``
(with ``s3fs``), ``gs://`` (``gcsfs``), ``file:///abs/path``. A local shard is staged on the same file system
and renamed onto its name; a remote one is uploaded under a temporary name and moved onto its name, which
object stores do as one copy, so a reader never sees half a shard. Object stores have no locks: two exports
into the same URL at once are not detected (a local directory is locked).

A shard depends only on its rows, so the files are the same byte for byte whichever engine made them
and in whatever order. They are plain parquet with the ``datasets`` features in their schema, read as they
are by ``datasets.load_dataset("parquet", data_files="OUT/SPLIT/*.parquet")``, by verl's ``RLHFDataset``
(``data.train_files`` = the list of files) and by EasyR1 (``data.train_files=OUT/SPLIT``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from tvr_gym.core.atomic import atomic_open, is_url
from tvr_gym.data.cluster import RayOptions, ray_session
from tvr_gym.data.dataset import DatasetDirError, counting, lock_or_refuse, manifest_diff, unlock_dir
from tvr_gym.version import __version__

__all__ = ["DEFAULT_SHARD_ROWS", "MANIFEST_DIR", "check_url", "datasets_quiet", "export_shards", "manifest_of",
           "shard_files"]  # fmt: skip

MANIFEST_DIR = ".tvr-gym-shards"
"""Beside the split directories: each split's manifest ``SPLIT.json``, and the shards being written."""
DEFAULT_SHARD_ROWS = 1000
"""Rows per parquet shard when ``--shard-size`` is not given: files of tens of MB with 320x240 images."""


def _temporaries(split: str) -> re.Pattern[str]:
    """The names of ``split``'s temporaries in :data:`MANIFEST_DIR`: staged shards and manifests."""
    return re.compile(rf"\.{re.escape(split)}(\.shard-\d+-of-\d+\.parquet|\.json)\.[A-Za-z0-9_]+\.tmp")


def _staged_name(split: str, name: str) -> str:
    """A fresh temporary name for ``split``'s file ``name``, matched by :func:`_temporaries`."""
    return f".{split}.{name}.{secrets.token_hex(4)}.tmp"


def check_url(url: str) -> str:
    """``url`` when ``fsspec`` has a file system for its protocol, installed; ``ValueError`` saying what is missing."""
    from fsspec.registry import get_filesystem_class

    protocol = url.split("://", 1)[0]
    try:
        get_filesystem_class(protocol)
    except ValueError:
        raise ValueError(f"--out: {url}: fsspec knows no file system {protocol!r}") from None
    except ImportError as exc:
        raise ValueError(f"--out: {url}: the {protocol!r} file system needs a package: {exc}") from None
    return url


def _filesystem(where: str) -> tuple[Any, str]:
    """The ``fsspec`` file system of a path or URL, and the path on it (no trailing slash)."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(where)
    return fs, root.rstrip("/") or root


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _join(where: str, name: str) -> str:
    return f"{where.rstrip('/')}/{name}"


def _names(fs: Any, root: str) -> set[str]:
    """The names in ``root`` (none when it does not exist), read afresh (remote listings are cached)."""
    fs.invalidate_cache(root)
    try:
        return {PurePosixPath(path.rstrip("/")).name for path in fs.ls(root, detail=False)}
    except FileNotFoundError:
        return set()


def _publish(fs: Any, target: str, data: bytes | Path, staged: str) -> None:
    """Put ``data`` (bytes, or a finished local file) at ``target`` whole or not at all.

    Locally a file staged on the same file system is renamed onto ``target`` (bytes are staged beside it by
    :func:`~tvr_gym.core.atomic.atomic_open`); remotely the data is uploaded to ``staged`` and moved onto
    ``target``.
    """
    if _is_local(fs):
        if isinstance(data, bytes):
            with atomic_open(target, "wb") as fh:
                fh.write(data)
        else:
            with open(data, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(data, target)
        return
    try:
        if isinstance(data, bytes):
            fs.pipe_file(staged, data)
        else:
            fs.put_file(str(data), staged)
        fs.mv(staged, target)
    except BaseException:
        with suppress(Exception):
            fs.rm(staged)
        raise


def shard_name(k: int, count: int) -> str:
    """``shard-00003-of-00010.parquet``: no split in the name, so ``datasets`` reads any split's directory as
    its ``train`` split, which EasyR1 asks for (a ``val-...`` name would make it ``validation``)."""
    return f"shard-{k:05d}-of-{count:05d}.parquet"


def plan(start: int, n: int, rows_per_shard: int) -> list[dict[str, Any]]:
    """Every shard's file, first row and row count."""
    count = max(1, -(-n // rows_per_shard)) if n else 0
    return [
        {"file": shard_name(k, count), "start": start + k * rows_per_shard,
         "rows": min(rows_per_shard, n - k * rows_per_shard)}
        for k in range(count)
    ]  # fmt: skip


def _locate(directory: str | os.PathLike[str]) -> tuple[str, str]:
    """(OUT, SPLIT) of a split directory, as a URL or an absolute path."""
    if is_url(directory):
        out, _, split = str(directory).rstrip("/").rpartition("/")
        return out, split
    path = Path(directory).resolve()
    return str(path.parent), path.name


def manifest_of(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the sharded split in ``directory`` (``OUT/SPLIT``, a path or a URL)."""
    out, split = _locate(directory)
    fs, root = _filesystem(out)
    return json.loads(fs.cat_file(f"{root}/{MANIFEST_DIR}/{split}.json"))


def shard_files(directory: str | os.PathLike[str]) -> list[Path] | list[str]:
    """The parquet files of the sharded split in ``directory``, in row order (for verl's ``data.train_files``):
    paths for a local directory, URLs for a URL."""
    shards = manifest_of(directory)["shards"]
    if is_url(directory):
        return [_join(str(directory), shard["file"]) for shard in shards]
    return [Path(directory) / shard["file"] for shard in shards]


def export_shards(
    fmt: str, env_id: str, start: int, n: int, seed: int, split: str, env_kwargs: dict, progress: bool,
    out: str | os.PathLike[str], make_rows: Callable[..., Iterator[dict]], features: Any, rows_per_shard: int,
    ray: RayOptions | None, solver: str | None = None,
) -> Path | str:  # fmt: skip
    """Write the shards still missing in ``out/split/``, here or (``ray``) as one Ray task each; the directory
    (a path, or the URL when ``out`` is one).

    ``make_rows(fmt=, env_id=, start=, n=, seed=, split=, env_kwargs=, progress=, solver=)`` makes a shard's
    rows (a module-level function, run where the shard is made) and ``features`` are their ``datasets``
    features: :func:`tvr_gym.data.export.export` passes its own.
    """
    where = check_url(str(out)).rstrip("/") if is_url(out) else str(Path(out).resolve())
    shards = plan(start, n, rows_per_shard)
    manifest = {
        "kind": "export-shards", "tvr_gym": __version__, "format": fmt, "env": env_id, "seed": seed, "split": split,
        "start": start, "n": n, "rows_per_shard": rows_per_shard, "demonstrations": solver,
        "env_kwargs": json.loads(json.dumps(env_kwargs, default=list)), "shards": shards,
    }  # fmt: skip
    if ray is not None:
        with ray_session(ray):  # a bad address fails before anything is written
            _export(manifest, where, (make_rows, features), progress, ray)
    else:
        _export(manifest, where, (make_rows, features), progress, None)
    return _join(where, split) if is_url(out) else Path(where) / split


def _export(manifest: dict, where: str, maker: tuple, progress: bool, ray: RayOptions | None) -> None:
    fs, root = _filesystem(where)
    split = manifest["split"]
    for name in (split, MANIFEST_DIR):
        fs.makedirs(f"{root}/{name}", exist_ok=True)
    lock = lock_or_refuse(Path(root) / split) if _is_local(fs) else None
    try:
        names = _claim(fs, root, _join(where, split), manifest)
        shards = manifest["shards"]
        todo = [k for k, shard in enumerate(shards) if shard["file"] not in names]
        rows = sum(shards[k]["rows"] for k in todo)
        task = partial(_shard_task, manifest, where, maker)
        label = f"exporting {manifest['env']} ({manifest['format']}, {len(todo)} shards)"
        with counting(rows, label, progress, unit="rows") as advance:
            if ray is None:
                for k in todo:
                    advance(_shard_rows(_write_shard(task([k]))))
            else:
                from tvr_gym.data.cluster import run_ranges

                one_each = replace(ray, shard_size=1)
                cleanup = partial(_remove_stale, fs, root, split)
                run_ranges(_write_shard, todo, task, one_each, lambda lines: advance(_shard_rows(lines)),
                           on_failure=cleanup, name=partial(_shard_label, shards))  # fmt: skip
    finally:
        unlock_dir(lock)


def _claim(fs: Any, root: str, where: str, manifest: dict) -> set[str]:
    """Refuse a split that holds anything but this export; write the manifest; remove stale temporaries.
    The names the split directory holds."""
    split = manifest["split"]
    names = _names(fs, f"{root}/{split}")
    meta = f"{root}/{MANIFEST_DIR}"
    if f"{split}.json" in _names(fs, meta):
        found = json.loads(fs.cat_file(f"{meta}/{split}.json"))
        if found != manifest:
            diff = manifest_diff(found, manifest, skip=("shards",))
            raise DatasetDirError(f"{where} holds another export ({diff or 'other shards'}); choose another --out")
    elif names:
        raise DatasetDirError(f"{where} is not empty and is no sharded export (no {MANIFEST_DIR}/{split}.json "
                              "beside it); choose another --out or --split")  # fmt: skip
    else:
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        _publish(fs, f"{meta}/{split}.json", text.encode(), f"{meta}/{_staged_name(split, 'json')}")
    _remove_stale(fs, root, split)
    return names


def _remove_stale(fs: Any, root: str, split: str) -> None:
    """Remove the temporary files a killed export of ``split`` left."""
    meta = f"{root}/{MANIFEST_DIR}"
    stale = _temporaries(split)
    for name in _names(fs, meta):
        if stale.fullmatch(name):
            path = f"{meta}/{name}"
            if not _is_local(fs):
                fs.rm(path)
            elif Path(path).is_file() and not Path(path).is_symlink():
                Path(path).unlink(missing_ok=True)


def _shard_task(manifest: dict, directory: str, maker: tuple, chunk: list[int]) -> tuple:
    (k,) = chunk
    return manifest, directory, maker, k


def _shard_rows(lines: list[str]) -> int:
    return sum(json.loads(line)["rows"] for line in lines)


def _write_shard(task: tuple[dict, str, tuple, int]) -> list[str]:
    """Make one shard's rows and write them as its parquet file, atomically; one line saying what was written."""
    from datasets import Dataset

    manifest, where, (make_rows, features), k = task
    shard, fmt, split = manifest["shards"][k], manifest["format"], manifest["split"]
    fs, root = _filesystem(where)
    meta = f"{root}/{MANIFEST_DIR}"
    env_kwargs = {key: tuple(v) if isinstance(v, list) else v for key, v in manifest["env_kwargs"].items()}
    with datasets_quiet(), tempfile.TemporaryDirectory(prefix="tvr-gym-shard-") as cache:
        dataset = Dataset.from_generator(
            make_rows,
            features=features,
            gen_kwargs={"fmt": fmt, "env_id": manifest["env"], "start": shard["start"], "n": shard["rows"],
                        "seed": manifest["seed"], "split": split, "env_kwargs": env_kwargs,
                        "progress": False, "solver": manifest["demonstrations"]},  # fmt: skip
            cache_dir=cache,
        )
        # pyarrow writes the file (the umask's mode): beside the split locally, in the cache for an upload
        name = _staged_name(split, shard["file"])
        staged = Path(meta if _is_local(fs) else cache) / name
        try:
            dataset.to_parquet(staged)
            _publish(fs, f"{root}/{split}/{shard['file']}", staged, f"{meta}/{name}")
        finally:
            staged.unlink(missing_ok=True)
            del dataset
    return [json.dumps({"file": shard["file"], "rows": shard["rows"]})]


def _shard_label(shards: list[dict], chunk: list[int]) -> str:
    """``shard 3 (rows 3000..3999)``: what a failed Ray task was making."""
    shard = shards[chunk[0]]
    return f"shard {chunk[0]} ({shard['file']}, rows {shard['start']}..{shard['start'] + shard['rows'] - 1})"


@contextmanager
def datasets_quiet() -> Iterator[None]:
    """``datasets``' own progress bars off (the export's bar says it all), restored afterwards."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_quiet:
            enable_progress_bars()
