"""Fresh episodes for trainers with nothing on disk: a ``datasets.IterableDataset`` made on the fly.

    from tvr_gym.data.streaming import episode_stream
    rows = episode_stream("TVR-CrossView-v0", seed=0)           # endless; n=... for a fixed number of rows
    trainer = GRPOTrainer(..., train_dataset=rows, args=GRPOConfig(max_steps=..., ...))

Row ``i`` is the export's row ``i`` (``env.reset(seed=seed, options={"index": i})`` in a format's shape,
:mod:`tvr_gym.data.export`), so a stream and ``tvr-gym export`` with the same seed agree row for row.
Indices are dealt round-robin to ``num_shards`` shards (shard ``s`` holds ``start + s``, ``start + s +
num_shards``, ...), which ``datasets`` shares out as usual: between the workers of a ``DataLoader``, and
between ranks with ``datasets.distributed.split_dataset_by_node`` (whole shards when ``num_shards`` is a
multiple of the world size). Every row is made by exactly one rank and worker, and the same seed makes
the same rows in the same place however the stream is split. ``datasets`` reads a process's shards one
after another, so a reader sees shard 0's rows first (``start``, ``start + num_shards``, ...): an endless
stream never leaves its first shard, which is as fresh as any; each row's ``index`` says which it is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from tvr_gym.core.options import check_choice, check_int
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.envs.registration import INTERACTIVE_ID, check_env_id

__all__ = ["DEFAULT_NUM_SHARDS", "STREAM_FORMATS", "episode_stream"]

STREAM_FORMATS = ("hf", "verl", "easyr1", "skyrl")
DEFAULT_NUM_SHARDS = 64
"""Shards of a stream: a multiple of the usual world sizes (1, 2, 4, 8, 16, 32, 64) and DataLoader workers."""


def episode_stream(
    env_id: str = "TVR-CrossView-v0",
    fmt: str = "hf",
    seed: int = 0,
    start: int = 0,
    n: int | None = None,
    split: str = "train",
    num_shards: int = DEFAULT_NUM_SHARDS,
    **env_kwargs: Any,
):
    """A ``datasets.IterableDataset`` of rows ``start .. start + n - 1`` (or endless) as ``fmt``, dealt to shards.

    The columns and features are the export's (:data:`tvr_gym.data.export.COLUMNS`). Arguments are checked
    and the environment built once here, so a mistake fails at once rather than in a DataLoader worker.
    """
    from datasets import IterableDataset

    from tvr_gym.data.export import _features, _skyrl_kwargs

    check_choice("format", fmt, STREAM_FORMATS)
    check_env_id(env_id)
    for name, value in (("seed", seed), ("start", start)):
        check_int(name, value, 0)
    if n is not None:
        check_int("n", n, 0)
    check_int("num_shards", num_shards, 1)
    if env_id == INTERACTIVE_ID and fmt != "skyrl":
        raise ValueError(f"format: {INTERACTIVE_ID} streams as skyrl rows (its multi-turn env), not {fmt}")
    if fmt == "skyrl":
        env_kwargs = _skyrl_kwargs(env_kwargs)
    config = check_env_kwargs(env_id, **env_kwargs)
    features = _features(fmt, config.obs_mode == "image", env_id == INTERACTIVE_ID)
    return IterableDataset.from_generator(
        _stream_rows,
        features=features,
        gen_kwargs={"shards": list(range(num_shards)), "num_shards": num_shards, "fmt": fmt, "env_id": env_id,
                    "seed": seed, "start": start, "n": n, "split": split, "env_kwargs": env_kwargs},  # fmt: skip
    )


def stream_indices(shards: list[int], num_shards: int, start: int, n: int | None) -> Iterator[int]:
    """The indices of ``shards`` (a worker's share), round-robin: ``start + s + k * num_shards`` for k = 0, 1, ..."""
    for k in itertools.count():
        block = start + k * num_shards
        if n is not None and block >= start + n:
            return
        for s in shards:
            index = block + s
            if n is None or index < start + n:
                yield index


def _stream_rows(
    shards: list[int], num_shards: int, fmt: str, env_id: str, seed: int, start: int, n: int | None, split: str,
    env_kwargs: dict[str, Any],
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows of one worker's shards (``datasets`` hands each worker a sublist of ``shards``)."""
    from tvr_gym.data.export import _easyr1_row, _hf_row, _skyrl_row, _verl_row, export_rows

    shape = {
        "hf": _hf_row, "verl": lambda r: _verl_row(r, split), "easyr1": _easyr1_row,
        "skyrl": lambda r: _skyrl_row(r, split),
    }[fmt]  # fmt: skip
    for row in export_rows(env_id, stream_indices(shards, num_shards, start, n), seed, **env_kwargs):
        yield shape(row)
