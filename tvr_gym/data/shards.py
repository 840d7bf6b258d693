"""Table exports as parquet shards, made here or as Ray tasks: ``export --shard-size R`` / ``--engine ray``.

Rows ``start .. start + n - 1`` are cut into shards of ``rows_per_shard`` consecutive rows, written as
``OUT/SPLIT/SPLIT-00000-of-00004.parquet`` and so on, each whole or not at all (a temporary file renamed
into place). ``OUT/SPLIT/shards.json`` is the manifest: what was exported (format, environment, seed,
rows, keywords) and every shard's file, first row and row count. It is written before the first shard,
so a rerun of the same command skips the shards already there, and a different command is refused.

A shard depends only on its rows, so the files are the same byte for byte whichever engine made them
and in whatever order. They are plain parquet with the ``datasets`` features in their schema, read as they
are by ``datasets.load_dataset("parquet", data_files="OUT/SPLIT/*.parquet")``, by verl's ``RLHFDataset``
(``data.train_files`` = the list of files) and by EasyR1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from tvr_gym.core.atomic import atomic_write_text
from tvr_gym.data.cluster import RayOptions, ray_session
from tvr_gym.data.dataset import DatasetDirError, counting, lock_or_refuse, unlock_dir
from tvr_gym.version import __version__

__all__ = ["DEFAULT_SHARD_ROWS", "SHARDS_FILE", "datasets_quiet", "export_shards", "shard_files"]

SHARDS_FILE = "shards.json"
DEFAULT_SHARD_ROWS = 1000
"""Rows per parquet shard when ``--shard-size`` is not given: files of tens of MB with 320x240 images."""
_STALE = re.compile(r"\..+\.parquet\.[a-z0-9_]+\.tmp")


def shard_name(split: str, k: int, count: int) -> str:
    return f"{split}-{k:05d}-of-{count:05d}.parquet"


def plan(split: str, start: int, n: int, rows_per_shard: int) -> list[dict[str, Any]]:
    """Every shard's file, first row and row count."""
    count = max(1, -(-n // rows_per_shard)) if n else 0
    return [
        {"file": shard_name(split, k, count), "start": start + k * rows_per_shard,
         "rows": min(rows_per_shard, n - k * rows_per_shard)}
        for k in range(count)
    ]  # fmt: skip


def shard_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The parquet files a sharded export's manifest lists, in row order (for verl's ``data.train_files``)."""
    directory = Path(directory)
    manifest = json.loads((directory / SHARDS_FILE).read_text(encoding="utf-8"))
    return [directory / shard["file"] for shard in manifest["shards"]]


def export_shards(
    fmt: str, env_id: str, start: int, n: int, seed: int, split: str, env_kwargs: dict, progress: bool, out: Path,
    make_rows: Callable[..., Iterator[dict]], features: Any, rows_per_shard: int, ray: RayOptions | None,
    solver: str | None = None,
) -> Path:  # fmt: skip
    """Write the shards still missing in ``out/split/``, here or (``ray``) as one Ray task each; the directory.

    ``make_rows(fmt=, env_id=, start=, n=, seed=, split=, env_kwargs=, progress=, solver=)`` makes a shard's
    rows (a module-level function, run where the shard is made) and ``features`` are their ``datasets``
    features: :func:`tvr_gym.data.export.export` passes its own.
    """
    directory = out / split
    shards = plan(split, start, n, rows_per_shard)
    manifest = {
        "kind": "export-shards", "tvr_gym": __version__, "format": fmt, "env": env_id, "seed": seed, "split": split,
        "start": start, "n": n, "rows_per_shard": rows_per_shard, "demonstrations": solver,
        "env_kwargs": json.loads(json.dumps(env_kwargs, default=list)), "shards": shards,
    }  # fmt: skip
    if ray is not None:
        with ray_session(ray):  # a bad address fails before anything is written
            return _export(manifest, directory, (make_rows, features), progress, ray)
    return _export(manifest, directory, (make_rows, features), progress, None)


def _export(manifest: dict, directory: Path, maker: tuple, progress: bool, ray: RayOptions | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lock = lock_or_refuse(directory)
    try:
        _claim(directory, manifest)
        shards = manifest["shards"]
        todo = [k for k, shard in enumerate(shards) if not (directory / shard["file"]).is_file()]
        rows = sum(shards[k]["rows"] for k in todo)
        task = partial(_shard_task, manifest, str(directory), maker)
        label = f"exporting {manifest['env']} ({manifest['format']}, {len(todo)} shards)"
        with counting(rows, label, progress, unit="rows") as advance:
            if ray is None:
                for k in todo:
                    advance(_shard_rows(_write_shard(task([k]))))
            else:
                from tvr_gym.data.cluster import run_ranges

                one_each = replace(ray, shard_size=1)
                run_ranges(_write_shard, todo, task, one_each, lambda lines: advance(_shard_rows(lines)),
                           on_failure=lambda: _remove_stale(directory), name=partial(_shard_label, shards))  # fmt: skip
        return directory
    finally:
        unlock_dir(lock)


def _claim(directory: Path, manifest: dict) -> None:
    """Refuse a directory that holds anything but this export; write the manifest; remove stale temporaries."""
    existing = directory / SHARDS_FILE
    if existing.is_file():
        found = json.loads(existing.read_text(encoding="utf-8"))
        if found != manifest:
            keys = sorted(k for k in {*found, *manifest} if found.get(k) != manifest.get(k))
            diff = "; ".join(f"{k}: {found.get(k)!r} there, {manifest.get(k)!r} now" for k in keys if k != "shards")
            raise DatasetDirError(f"{directory} holds another export ({diff or 'other shards'}); choose another --out")
    elif any(directory.iterdir()):
        raise DatasetDirError(f"{directory} is not empty and holds no {SHARDS_FILE}; choose another --out or --split")
    else:
        atomic_write_text(existing, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _remove_stale(directory)


def _remove_stale(directory: Path) -> None:
    for path in directory.iterdir():
        if _STALE.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def _shard_task(manifest: dict, directory: str, maker: tuple, chunk: list[int]) -> tuple:
    (k,) = chunk
    return manifest, directory, maker, k


def _shard_rows(lines: list[str]) -> int:
    return sum(json.loads(line)["rows"] for line in lines)


def _write_shard(task: tuple[dict, str, tuple, int]) -> list[str]:
    """Make one shard's rows and write them as its parquet file, atomically; one line saying what was written."""
    from datasets import Dataset

    manifest, directory, (make_rows, features), k = task
    shard, fmt = manifest["shards"][k], manifest["format"]
    target = Path(directory) / shard["file"]
    env_kwargs = {key: tuple(v) if isinstance(v, list) else v for key, v in manifest["env_kwargs"].items()}
    with datasets_quiet(), tempfile.TemporaryDirectory(prefix="tvr-gym-shard-") as cache:
        dataset = Dataset.from_generator(
            make_rows,
            features=features,
            gen_kwargs={"fmt": fmt, "env_id": manifest["env"], "start": shard["start"], "n": shard["rows"],
                        "seed": manifest["seed"], "split": manifest["split"], "env_kwargs": env_kwargs,
                        "progress": False, "solver": manifest["demonstrations"]},  # fmt: skip
            cache_dir=cache,
        )
        staged = Path(directory) / f".{target.name}.{secrets.token_hex(4)}.tmp"  # made by pyarrow: the umask's mode
        try:
            dataset.to_parquet(staged)
            with open(staged, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(staged, target)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise
        finally:
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
