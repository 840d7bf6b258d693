"""Seed a new virtual environment with hard links to the torch stack another one already holds.

    python scripts/seed_venv.py SOURCE_VENV TARGET_VENV [--pins REQUIREMENTS]

`make test` builds three venvs (.venv, .venv-vllm, .venv-verl), and each would unpack its own copy of
torch's CUDA build: about 5 GB apiece, 19 GB in all, which is more than some CI machines have free.
Most of that is the same files: .venv-verl resolves the very torch, torchvision, triton and NVIDIA
libraries that .venv holds, and .venv-vllm's lock pins most of the same NVIDIA libraries.

This script links those distributions (torch, torchvision, triton, nvidia-*, cuda-*) file by file from
SOURCE into TARGET before pip runs there; pip then finds them installed and, where a requirement asks for
the same version, keeps them. With --pins, only distributions pinned to the same version (`name==version`)
in that requirements file are seeded. A seeded distribution whose version TARGET's requirements reject is
uninstalled by pip as usual: unlinking a hard link leaves SOURCE's copy alone, and pip never rewrites an
installed file in place, so the two venvs stay independent.

Console scripts get TARGET's interpreter in their `#!` line. Files are linked first and each
distribution's metadata last, so an interrupted seed leaves no distribution that pip would believe
installed. Where SOURCE is missing, is another Python version, or lies on another file system (no hard
links there: files are copied instead), the script says so and seeding does what it can; it never fails
a build that would have worked without it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

STACK = re.compile(r"^(torch|torchvision|triton|nvidia-.+|cuda-.+)$")
PIN = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*==\s*([^\s;#]+)")

_PATHS = (
    "import json, sys, sysconfig; "
    "print(json.dumps({'prefix': sys.prefix, 'site': sysconfig.get_paths()['purelib'], "
    "'version': list(sys.version_info[:2])}))"
)
_DISTS = (
    "import importlib.metadata as md, json, sys; "
    "print(json.dumps([[d.metadata['Name'], d.version, str(d._path)] for d in md.distributions(path=[sys.argv[1]])]))"
)


def canonical(name: str) -> str:
    """PEP 503 normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def venv_paths(venv: Path) -> dict:
    """The prefix, site-packages and Python version of a venv, asked of its own interpreter."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", _PATHS], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def installed(venv: Path, site: str) -> list[tuple[str, str, Path]]:
    """(name, version, dist-info path) of every distribution in a venv's site-packages."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _DISTS, site], check=True, capture_output=True, text=True
    )
    return [(name, version, Path(path)) for name, version, path in json.loads(out.stdout)]


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def record_files(dist_info: Path) -> list[Path]:
    """The files a distribution's RECORD lists, relative to its site-packages (may climb out with ..)."""
    record = dist_info / "RECORD"
    if not record.is_file():
        return []
    return [Path(line.split(",")[0]) for line in record.read_text().splitlines() if line.strip()]


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link src to dst (a copy where links cannot be made); True when linked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


def write_script(src: Path, dst: Path, source_prefix: str, target_python: str) -> None:
    """Copy a console script, pointing its #! line at the target venv's interpreter."""
    data = src.read_bytes()
    if data.startswith(b"#!"):
        first, _, rest = data.partition(b"\n")
        if source_prefix.encode() in first:
            data = b"#!" + target_python.encode() + b"\n" + rest
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".seed-tmp")
    tmp.write_bytes(data)
    tmp.chmod(src.stat().st_mode & 0o777)
    os.replace(tmp, dst)


def seed_one(dist_info: Path, source: dict, target: dict) -> tuple[int, int]:
    """Link one distribution's files into the target venv; (files linked, files copied)."""
    source_site, target_site = Path(source["site"]), Path(target["site"])
    source_prefix, target_prefix = Path(source["prefix"]).resolve(), Path(target["prefix"])
    target_python = str(target_prefix / "bin" / "python")
    metadata, linked, copied = [], 0, 0
    for relative in record_files(dist_info):
        src = (source_site / relative).resolve()
        if not src.is_file():
            continue
        try:
            inside_site = src.relative_to(source_site.resolve())
            dst = target_site / inside_site
        except ValueError:
            try:
                dst = target_prefix / src.relative_to(source_prefix)
            except ValueError:
                continue  # a file outside the venv: not ours to seed
        if dist_info.resolve() in src.parents:
            metadata.append((src, dst))
            continue
        if src.parent == source_prefix / "bin":
            write_script(src, dst, str(source_prefix), target_python)
            copied += 1
        elif link_or_copy(src, dst):
            linked += 1
        else:
            copied += 1
    # metadata last, METADATA the very last: only a complete seed is an installed distribution
    for src, dst in sorted(metadata, key=lambda pair: pair[0].name == "METADATA"):
        if link_or_copy(src, dst):
            linked += 1
        else:
            copied += 1
    return linked, copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the venv that holds the torch stack")
    parser.add_argument("target", type=Path, help="the new venv to seed (created, pip not yet run)")
    parser.add_argument("--pins", type=Path, help="seed only distributions pinned to the same version here")
    args = parser.parse_args(argv)

    if not (args.source / "bin" / "python").exists():
        print(f"seed_venv: {args.source} has no bin/python; nothing seeded")
        return 0
    if not (args.target / "bin" / "python").exists():
        print(f"seed_venv: {args.target} is not a venv (no bin/python)", file=sys.stderr)
        return 2
    source, target = venv_paths(args.source), venv_paths(args.target)
    if source["version"] != target["version"]:
        versions = f"{args.source} is Python {source['version']}, {args.target} {target['version']}"
        print(f"seed_venv: {versions}; nothing seeded")
        return 0
    pins = read_pins(args.pins) if args.pins else None
    present = {canonical(name) for name, _, _ in installed(args.target, target["site"])}

    seeded, linked, copied = [], 0, 0
    for name, version, dist_info in installed(args.source, source["site"]):
        key = canonical(name)
        if not STACK.match(key) or key in present:
            continue
        if pins is not None and pins.get(key) != version:
            continue
        done_linked, done_copied = seed_one(dist_info, source, target)
        linked, copied = linked + done_linked, copied + done_copied
        seeded.append(f"{name}=={version}")
    how = f"{linked} files linked" + (f", {copied} copied" if copied else "")
    print(f"seed_venv: {len(seeded)} distributions from {args.source} ({how}): {' '.join(sorted(seeded)) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
