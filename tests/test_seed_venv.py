"""scripts/seed_venv.py: a new venv gets hard links to another venv's torch stack, and real pip agrees.

The distributions are installed into the source venv by pip itself, from wheels built here, so RECORD,
metadata and console scripts are exactly what pip writes for torch or an NVIDIA library.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "scripts" / "seed_venv.py"


def build_wheel(folder: Path, name: str, version: str, script: str | None = None) -> Path:
    """A pure-Python wheel with one module (and optionally a console script)."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n\ndef hello():\n    print('hello from {name}')\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if script:
        files[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{script} = {module}:hello\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    """The test runner's pip, acting on another venv's interpreter."""
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]
    env = {"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1"}  # no machine pip settings
    return subprocess.run(command, capture_output=True, text=True, env=env)


def make_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A venv holding a stack distribution (with a console script) and one outside the stack."""
    folder = tmp_path_factory.mktemp("wheels")
    venv = make_venv(tmp_path_factory.mktemp("source") / "venv")
    wheels = [
        build_wheel(folder, "nvidia-tvrtest", "1.0", script="tvrtest-hello"),
        build_wheel(folder, "tvrtest-other", "2.0"),
    ]
    result = pip(venv, "install", "--no-index", "--no-deps", *map(str, wheels))
    assert result.returncode == 0, result.stderr
    return venv


def seed(source: Path, target: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SEED), str(source), str(target), *extra], capture_output=True, text=True)


def installed(venv: Path) -> dict[str, str]:
    result = pip(venv, "list", "--format=freeze")
    assert result.returncode == 0, result.stderr
    return dict(line.split("==") for line in result.stdout.split())


def test_a_seeded_distribution_is_installed_for_pip_and_shares_the_source_files(source, tmp_path):
    target = make_venv(tmp_path / "target")
    result = seed(source, target)
    assert result.returncode == 0, result.stderr
    assert installed(target) == {"nvidia-tvrtest": "1.0"}  # the stack only: tvrtest-other stays out

    module = site_packages(target) / "nvidia_tvrtest" / "__init__.py"
    assert module.stat().st_ino == (site_packages(source) / "nvidia_tvrtest" / "__init__.py").stat().st_ino
    # pip finds the requirement satisfied: with no index to install from, anything else would fail
    satisfied = pip(target, "install", "--no-index", "nvidia-tvrtest==1.0")
    assert satisfied.returncode == 0 and "already satisfied" in satisfied.stdout, satisfied.stdout + satisfied.stderr


def test_console_scripts_run_on_the_target_interpreter(source, tmp_path):
    target = make_venv(tmp_path / "target")
    assert seed(source, target).returncode == 0
    script = target / "bin" / "tvrtest-hello"
    assert script.read_text().splitlines()[0] == f"#!{target / 'bin' / 'python'}"
    assert script.stat().st_ino != (source / "bin" / "tvrtest-hello").stat().st_ino
    run = subprocess.run([str(script)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "hello from nvidia-tvrtest", run.stderr


def test_uninstalling_in_the_target_leaves_the_source_whole(source, tmp_path):
    target = make_venv(tmp_path / "target")
    assert seed(source, target).returncode == 0
    removed = pip(target, "uninstall", "-y", "nvidia-tvrtest")
    assert removed.returncode == 0, removed.stderr
    assert "nvidia-tvrtest" not in installed(target)
    assert installed(source) == {"nvidia-tvrtest": "1.0", "tvrtest-other": "2.0"}
    check = subprocess.run(
        [str(source / "bin" / "python"), "-c", "import nvidia_tvrtest; print(nvidia_tvrtest.VERSION)"],
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "1.0", check.stderr


def test_pins_seed_only_the_versions_they_name(source, tmp_path):
    other_version = tmp_path / "other.lock"
    other_version.write_text("nvidia-tvrtest==1.1\n")
    target = make_venv(tmp_path / "target")
    assert seed(source, target, "--pins", str(other_version)).returncode == 0
    assert installed(target) == {}

    same_version = tmp_path / "same.lock"
    same_version.write_text("# a lock\nNVIDIA_tvrtest == 1.0  # normalized names match\ntvrtest-other==2.0\n")
    assert seed(source, target, "--pins", str(same_version)).returncode == 0
    assert installed(target) == {"nvidia-tvrtest": "1.0"}


def test_a_missing_source_seeds_nothing_and_does_not_fail_the_build(tmp_path):
    target = make_venv(tmp_path / "target")
    result = seed(tmp_path / "absent", target)
    assert result.returncode == 0 and "nothing seeded" in result.stdout
    assert installed(target) == {}
    not_a_venv = seed(target, tmp_path / "nowhere")
    assert not_a_venv.returncode == 2 and "not a venv" in not_a_venv.stderr
