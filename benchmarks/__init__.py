"""Benchmarks for tvr-gym; each reports a ratio against a reference measured in the same run."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from tvr_gym.core.atomic import atomic_write_text


def cpu_model() -> str:
    """The CPU model name as ``lscpu`` reports it (``platform.processor()`` where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    return model or platform.processor() or "unknown"


def run_line(command: str) -> str:
    """The line a results file opens with: the command, the date and the machine it ran on."""
    return (
        f"`{command}`, {datetime.now(timezone.utc):%Y-%m-%d}, {platform.node()}: {cpu_model()}, "
        f"{os.cpu_count()} cores (pinned to {len(os.sched_getaffinity(0))})."
    )


def report(text: str | list[str], out: str | Path | None) -> None:
    """Print a markdown report and, with ``out``, write it there atomically."""
    if isinstance(text, list):
        text = "\n".join(text) + "\n"
    print(text)
    if out:
        atomic_write_text(out, text)
