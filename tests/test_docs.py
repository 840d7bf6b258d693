"""The commands in the README and docs are real: every tvr-gym, accelerate and torchrun flag they show parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tvr_gym.data.export import COLUMNS

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _commands(path: Path) -> list[list[str]]:
    """Shell commands of the file's code blocks (continuation lines joined, comments dropped)."""
    commands, blocks, current, language = [], [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh"):
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if "tvr-gym " in line or "-m tvr_gym " in line:
                words = shlex.split(line)
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words.pop(0)  # VAR=value prefixes
                commands.append(words)
    return commands


def _tvr_args(words: list[str]) -> list[str]:
    if "tvr_gym" in words:
        return words[words.index("tvr_gym") + 1 :]
    return words[words.index("tvr-gym") + 1 :]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_shown_parses(doc, monkeypatch):
    from tvr_gym.apps.cli import build_parser

    parser = build_parser(with_trainers=True)
    seen = 0
    for words in _commands(doc):
        args = [a.strip("[]") for a in _tvr_args(words) if not a.startswith("$")]  # usage lines: [--opt V]
        args = [a for a in args if a]
        if not args or args[0] in ("...",) or "..." in args:
            continue
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"{doc.name}: `tvr-gym {' '.join(args)}` does not parse (exit {exc.code})")
        if words[0] == "accelerate":
            from accelerate.commands.launch import launch_command_parser

            launcher = words[2 : words.index("-m")]
            launch_command_parser().parse_args([*launcher, "x.py"])
        seen += 1
    assert seen or doc.name != "README.md"


def test_the_documented_columns_are_the_exported_ones():
    text = (REPO / "docs" / "integrations.md").read_text()
    for fmt in ("hf", "verl", "easyr1", "skyrl", "hf-demonstrations", "verl-demonstrations"):
        section = text.split(f"**`{fmt}`**", 1)[1].split("**`", 1)[0].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
        assert documented == set(COLUMNS[fmt]), fmt
