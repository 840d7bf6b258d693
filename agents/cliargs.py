"""Command-line flags generated from config dataclasses, so a config and its CLI cannot drift apart.

The flag of a field is built by ``transformers.HfArgumentParser`` (``--field_name`` and
``--field-name``, ``--no-...`` for true booleans, ``nargs`` for lists, choices for ``Literal``), and
added to any ``argparse`` parser, e.g. a ``tvr-gym`` subcommand.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    dtype: type,
    title: str | None = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one flag per init field of the dataclass ``dtype`` to ``parser`` (in a group titled ``title``).

    ``aliases`` gives fields extra flags, e.g. ``{"output_dir": ["--out"]}`` so a foreign config speaks
    tvr-gym's vocabulary too.
    """
    from transformers import HfArgumentParser

    group = parser.add_argument_group(title) if title else parser
    hints = get_type_hints(dtype)
    for field in dataclasses.fields(dtype):
        if field.init:
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
