"""Command-line flags generated from config dataclasses, so a config and its CLI cannot drift apart.

The flag of a field is built by ``transformers.HfArgumentParser`` (``--field_name`` and
``--field-name``, ``--no-...`` for true booleans, ``nargs`` for lists, choices for ``Literal``), and
added to any ``argparse`` parser, e.g. a ``tvr-gym`` subcommand.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from tvr_gym.core.atomic import is_url
from tvr_gym.core.options import EnvConfig, check_int
from tvr_gym.core.reward import REWARD_NAMES
from tvr_gym.envs.board import POTENTIALS
from tvr_gym.envs.interactive import DEFAULT_IDLE_COST, DEFAULT_POTENTIAL, DEFAULT_SLACK, DEFAULT_SUCCESS_BONUS
from tvr_gym.envs.registration import INTERACTIVE_ID

T = TypeVar("T")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    dtype: type,
    title: str | None = None,
    aliases: dict[str, list[str]] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Add one flag per init field of the dataclass ``dtype`` to ``parser`` (in a group titled ``title``).

    ``aliases`` gives fields extra flags, e.g. ``{"output_dir": ["--out"]}`` so a foreign config speaks
    tvr-gym's vocabulary too; fields in ``skip`` get none (e.g. a dict filled from other flags).
    """
    from transformers import HfArgumentParser

    group = parser.add_argument_group(title) if title else parser
    hints = get_type_hints(dtype)
    for field in dataclasses.fields(dtype):
        if field.init and field.name not in skip:
            field = copy.copy(field)  # HfArgumentParser writes the resolved type onto the field it is given
            field.type = hints[field.name]
            extra = (aliases or {}).get(field.name)
            if extra:
                field.metadata = {**field.metadata, "aliases": [*field.metadata.get("aliases", []), *extra]}
            HfArgumentParser._parse_dataclass_field(group, field)


def dataclass_from_args(dtype: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build ``dtype`` from the parsed flags of its fields (``overrides`` win).

    Only values that differ from a field's default are passed, so the dataclass's own defaults and
    ``__post_init__`` decide the rest (and deprecated fields left alone stay silent).
    """
    values = {}
    for f in dataclasses.fields(dtype):
        if not f.init or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is dataclasses.MISSING or value != default:
            values[f.name] = value
    values.update(overrides)
    return dtype(**values)


# ---------------------------------------------------------------------------- one vocabulary

VOCABULARY: dict[str, str] = {
    "out": "--out",
    "output_dir": "--out",
    "size": "--size",
    "obs_mode": "--obs-mode",
    "quiet": "--quiet",
    "disable_tqdm": "--quiet",
    "index": "--index",
    "seed": "--seed",
    "setting": "--setting",
    "env": "--env",
    "reward": "--reward",
    "renderer": "--renderer",
    "source": "--source",
    "transformations": "--transformations",
    "max_visible": "--max-visible",
    "final_views": "--final-views",
    "steps": "--steps",
    "max_steps": "--steps",
    "lr": "--lr",
    "learning_rate": "--lr",
    "resume": "--resume",
    "overwrite": "--overwrite",
}
"""The one flag of each concept, by the ``dest`` it fills: every subcommand spells a concept this way."""

TRL_ALIASES = {
    "output_dir": ["--out"], "max_steps": ["--steps"], "learning_rate": ["--lr"], "disable_tqdm": ["--quiet"],
}  # fmt: skip
"""tvr-gym's spellings added to the TRL config fields of the same concepts."""


ENV_FLAGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    f.metadata["dest"] or f.name: (f.name, f.metadata["flag"], dict(f.metadata["argparse"]))
    for f in dataclasses.fields(EnvConfig)
    if "flag" in f.metadata
}
"""By parsed name: each :class:`~tvr_gym.core.options.EnvConfig` keyword, its flag and its argparse options, read from
the field: a keyword added there is a flag of every subcommand that takes environment options."""
ENV_FLAGS["reward"] = ("reward", "--reward", {"choices": REWARD_NAMES, "help": "default star"})  # single-shot envs
ENV_FLAGS.update({  # TVR-Interactive-v0's reward options (docs/interactive.md)
    "potential": ("potential", "--potential", {
        "choices": POTENTIALS, "help": f"{INTERACTIVE_ID}: the per-turn potential (default {DEFAULT_POTENTIAL})"}),
    "success_bonus": ("success_bonus", "--success-bonus", {
        "type": float, "help": f"{INTERACTIVE_ID}: added when done ends a success (default {DEFAULT_SUCCESS_BONUS})"}),
    "idle_cost": ("idle_cost", "--idle-cost", {
        "type": float, "help": f"{INTERACTIVE_ID}: taken when it ends as it began (default {DEFAULT_IDLE_COST})"}),
    "slack": ("slack", "--slack", {
        "type": int, "help": f"{INTERACTIVE_ID}: turns beyond the most steps plus done (default {DEFAULT_SLACK})"}),
})  # fmt: skip


def add_env_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The environment's keywords as flags (``env_kwargs`` turns them back), except those in ``exclude``.

    Only flags given on the command line become keywords, so the environment's defaults apply otherwise.
    """
    group = parser.add_argument_group("environment")
    added = [dest for dest in ENV_FLAGS if dest not in exclude]
    for dest in added:
        _, flag, kwargs = ENV_FLAGS[dest]
        group.add_argument(flag, dest=dest, default=None, **kwargs)
    parser.set_defaults(env_options=added)  # what env_kwargs reads back, and nothing else


def check_creatable(path: str | os.PathLike[str], flag: str) -> Path:
    """``path`` when it is a directory, or could be made one, that this process can write in; nothing is created.

    A temporary directory is made and removed in the nearest existing ancestor, which proves what
    permission bits cannot (read-only mounts, ``/proc``, root). ``ValueError`` naming ``flag`` otherwise, so a
    command refuses a bad directory before it builds, loads or creates anything.
    """
    if is_url(path):
        raise ValueError(f"{flag}: {path} is a URL; only export's table formats write to one (parquet shards, "
                         "docs/cluster.md); use a local or shared path")  # fmt: skip
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag}: cannot write to {path} ({probe} is not a directory)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tvr-gym-write-test-", dir=probe))
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write to {path} ({exc.strerror or exc})") from None
    return path


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The environment keywords of the flags :func:`add_env_options` added and the user gave.

    A ``--cache-dir`` that cannot be made or written is refused here (:func:`check_creatable`), before any work.
    """
    out: dict[str, Any] = {}
    if getattr(args, "setting", None) is not None and getattr(args, "env", None) != INTERACTIVE_ID:
        raise ValueError(f"--setting is for {INTERACTIVE_ID}; {args.env} has its setting in its id")
    for dest in getattr(args, "env_options", ()):
        value = getattr(args, dest, None)
        if value is not None:
            out[ENV_FLAGS[dest][0]] = tuple(value) if isinstance(value, list) else value
    if out.get("cache_dir") is not None:
        check_creatable(out["cache_dir"], ENV_FLAGS["cache_dir"][1])
    return out


RAY_FLAGS = ("address", "shard_size", "cpus_per_task", "retries")
"""The flags of :func:`add_engine_options` that only ``--engine ray`` takes."""


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray flags of ``generate`` and ``export`` (:mod:`tvr_gym.data.cluster`)."""
    from tvr_gym.data.cluster import DEFAULT_RETRIES, DEFAULT_SHARD_SIZE, ENGINES

    group = parser.add_argument_group("engine", "where the samples are made: here, or on a Ray cluster")
    group.add_argument(
        "--engine", default="local", choices=ENGINES,
        help="local: --workers processes here; ray: index ranges as Ray tasks (pip install -e '.[ray]')",
    )  # fmt: skip
    group.add_argument(
        "--address", help="ray: 'auto' (the cluster `ray start` made here), HOST:PORT or ray://HOST:PORT; "
        "default: a local Ray instance of --workers CPUs, for this command only",
    )  # fmt: skip
    group.add_argument(
        "--shard-size", type=int, help=f"ray: samples per task (default {DEFAULT_SHARD_SIZE}); table exports "
        "(either engine): rows per parquet shard, OUT/SPLIT/shard-00000-of-0000K.parquet (default 1000)",
    )  # fmt: skip
    group.add_argument(
        "--cpus-per-task", type=int, help="ray: CPUs each task asks for; Blender renders with that many threads "
        "(default 1)",
    )  # fmt: skip
    group.add_argument(
        "--retries", type=int, help=f"ray: attempts after a task fails or its worker dies (default {DEFAULT_RETRIES})"
    )


def ray_options(args: argparse.Namespace, rows_per_shard: bool = False) -> Any:
    """The :class:`~tvr_gym.data.cluster.RayOptions` of the flags, or ``None`` for ``--engine local``.

    A Ray flag given with ``--engine local`` is refused rather than ignored. With ``rows_per_shard`` (a table
    export), ``--shard-size`` is the rows of each parquet shard, for either engine, and not Ray's.
    """
    from tvr_gym.data.cluster import RayOptions

    if rows_per_shard and args.shard_size is not None:
        check_int("--shard-size", args.shard_size, 1)
    flags = [name for name in RAY_FLAGS if not (rows_per_shard and name == "shard_size")]
    given = [name for name in flags if getattr(args, name, None) is not None]
    if args.engine != "ray":
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')}: only with --engine ray")
        return None
    values = {name: getattr(args, name) for name in given}
    for name, low in (("shard_size", 1), ("cpus_per_task", 1), ("retries", 0), ("workers", 1)):
        if name in values or (name == "workers" and hasattr(args, name)):
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), low)
    return RayOptions(workers=args.workers, **values) if hasattr(args, "workers") else RayOptions(**values)
