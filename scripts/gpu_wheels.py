"""Wheels for a GPU machine without network: what ``benchmarks/bench_gpu.py`` needs there, and tvr-gym itself.

    .venv/bin/python scripts/gpu_wheels.py --python-version 3.12 --out .whl [--has NAME ...] [--limit-mib 64]

The GPU machine's Python holds torch, transformers, accelerate and peft. The packages to bring are what the
benchmark needs (:data:`BENCH_NEEDS`, their requirements followed through this venv's metadata) less what
the machine holds: the requirements of :data:`ON_THE_MACHINE`, followed the same way, and of the ``--has``
packages (default :data:`IMAGE_HAS`: large ones that its image carries too, pyarrow and pandas among them,
which alone would not fit the limit). Each is downloaded at the version installed here, so the machine runs
what was tested here: binary wheels for manylinux x86_64 and ``--python-version``, without dependencies. The
tvr-gym wheel is built from the repository's files (it places ``agents/`` and ``scenes/`` inside
``tvr_gym``). Old wheels in ``--out`` are removed first (two versions of one package stop an install). The
script then checks that the wheels stay under ``--limit-mib`` (what a call to the machine may carry) and
prints the line that installs them there; see ``docs/gpu.md``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
BENCH_NEEDS = ("tvr-gym", "moderngl", "trl", "tensorboard")
"""What the benchmark imports: tvr-gym (numpy, pillow, gymnasium, rich), its gl renderer (moderngl), TRL (and
through it datasets) and, for our trainer's logs, TensorBoard; torch and transformers come with them."""
ON_THE_MACHINE = ("torch", "transformers", "accelerate", "peft")
IMAGE_HAS = ("pandas", "pyarrow", "tensorboard", "pillow", "rich", "cloudpickle", "xxhash", "aiohttp")
"""Packages the GPU machine's image holds beyond :data:`ON_THE_MACHINE` (as its provider lists them, 2026-11)."""
PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35, 39)) + (
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
"""pip matches each platform tag exactly: every manylinux level a wheel of these packages is built for."""
OWN = "tvr-gym"


def marker_environment(python_version: str) -> dict[str, str]:
    """The environment markers of a Linux x86_64 CPython ``python_version`` (``3.12``)."""
    env = default_environment()
    env.update(python_version=python_version, python_full_version=f"{python_version}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", implementation_name="cpython",
               platform_python_implementation="CPython", os_name="posix")  # fmt: skip
    return env


def applies(requirement: Requirement, extras: set[str], env: dict[str, str]) -> bool:
    """Whether ``requirement`` holds for a distribution installed with ``extras`` on ``env``."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": extra}) for extra in ("", *sorted(extras)))


def closure(roots: tuple[str, ...], python_version: str, strict: bool = True) -> dict[str, str]:
    """Every distribution ``roots`` need, followed through the installed metadata: {name: installed version}.
    A requirement that is not installed here raises (its version could not be pinned); with ``strict=False`` it
    is kept by name (version ``""``), its own requirements unknown."""
    env = marker_environment(python_version)
    found: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in found and extras <= extras_seen[name]:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            if strict:
                unknown = f"{requirement.name} is needed but not installed here: its version is unknown"
                raise LookupError(unknown) from None
            found[name], extras_seen[name] = "", extras
            continue
        found[name] = dist.version
        extras_seen[name] = extras_seen.get(name, set()) | extras
        for line in dist.requires or []:
            needed = Requirement(line)
            if applies(needed, extras_seen[name], env):
                todo.append(needed)
    return found


def needed_packages(python_version: str, has: tuple[str, ...] = IMAGE_HAS) -> dict[str, str]:
    """{name: version} to bring: what the benchmark needs less what the GPU machine holds (tvr-gym included:
    it is built, not downloaded)."""
    wanted = closure(BENCH_NEEDS, python_version)
    present = closure(ON_THE_MACHINE + tuple(has), python_version, strict=False)
    return {name: wanted[name] for name in sorted(wanted) if name not in present}


def download(packages: dict[str, str], out: Path, python_version: str) -> None:
    """``pip download`` the pinned wheels (binary only, no dependencies) for the GPU machine's platform."""
    platforms = [flag for tag in PLATFORMS for flag in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
               "--python-version", python_version, "--implementation", "cp", *platforms, "--dest", str(out),
               *(f"{name}=={version}" for name, version in packages.items())]  # fmt: skip
    subprocess.run(command, check=True)


def build_own_wheel(out: Path) -> Path:
    """tvr-gym's wheel, built from a copy of the repository's files (tracked and not ignored), so the build leaves
    nothing in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.split("\0")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tvr-gym-src-") as tmp:
        for name in filter(None, listed):
            source = REPO / name
            if source.is_file():
                target = Path(tmp) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out), tmp], check=True)  # fmt: skip
    return next(out.glob("tvr_gym-*.whl"))


def check_size(wheels: list[Path], limit_mib: float) -> float:
    """The wheels' total in MiB; a ``ValueError`` naming the largest ones when it is over ``limit_mib``."""
    sizes = sorted(((w.stat().st_size / 2**20, w.name) for w in wheels), reverse=True)
    total = sum(size for size, _ in sizes)
    if total > limit_mib:
        largest = ", ".join(f"{name} {size:.1f} MiB" for size, name in sizes[:3])
        raise ValueError(f"the wheels take {total:.1f} MiB, over {limit_mib:g} MiB (largest: {largest}); name what "
                         "the GPU machine already holds with --has")  # fmt: skip
    return total


def install_line(out: str, names: list[str]) -> str:
    """The command that installs the wheels on the GPU machine (into /tmp/site: put it first on PYTHONPATH)."""
    return (f"python3 -m pip install -q --no-index --find-links {out} --no-deps --no-compile --no-cache-dir "
            f"--target /tmp/site {' '.join(names)} && export PYTHONPATH=/tmp/site")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-version", required=True, help="the GPU machine's Python, e.g. 3.12")
    parser.add_argument("--out", required=True, help="folder for the wheels (its old wheels are removed)")
    parser.add_argument("--has", nargs="*", default=list(IMAGE_HAS), help="packages the GPU machine already holds")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="the most the wheels may take")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    packages = needed_packages(args.python_version, tuple(args.has))
    packages.pop(OWN, None)
    print("downloading:", ", ".join(f"{name}=={version}" for name, version in packages.items()), flush=True)
    download(packages, out, args.python_version)
    build_own_wheel(out)
    wheels = sorted(out.glob("*.whl"))
    total = check_size(wheels, args.limit_mib)
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:6.2f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MiB (limit {args.limit_mib:g} MiB). On the GPU machine:")
    print(install_line(args.out, [*packages, OWN]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
