"""``generate`` and ``export --format trance`` on a real local Ray instance (``--engine ray``).

Each command runs as its own process, in a session of its own, so every Ray process it starts (GCS,
raylet, agents, workers) carries that session id and the test can prove none is left behind. The
reference is the same command with ``--engine local``: the Ray dataset must be byte-identical to it.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.trance import DATA_FILE, IMAGE_DIR, image_name
from tvr_gym.data.cluster import index_ranges
from tvr_gym.data.dataset import JOURNAL_FILE
from tvr_gym.data.shards import MANIFEST_DIR

from props import examples


@pytest.fixture(autouse=True)
def ray_installed() -> None:
    """CI installs Ray ([dev] includes [ray]); elsewhere a missing Ray skips, which TVR_GYM_REQUIRE_ALL fails."""
    pytest.importorskip("ray", reason="the [ray] extra is not installed")

LEFTOVER_WAIT_S = 120.0
"""How long a Ray instance's processes may take to go: its agents notice a SIGKILLed driver within a minute."""
GEN = ["--setting", "basic", "--seed", "5", "--renderer", "gl", "--quiet"]


def tvr_gym(*args: str) -> subprocess.Popen:
    """``tvr-gym ARGS`` in a new session (its id is the process id), output captured."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "tvr_gym", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=env,
    )  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def session_processes(sid: int) -> list[str]:
    """``pid name`` of every live process in session ``sid`` (zombies are gone already: they hold nothing)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name} {stat[stat.index('(') + 1 : stat.rindex(')')]}")
    return found


def assert_nothing_left(sid: int) -> None:
    """Every process of the command's session ends (killed at the end if not, so CI is left clean)."""
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        for line in left:
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not left, f"Ray processes left behind: {left}"


def run(*args: str) -> tuple[int, str, str]:
    process = tvr_gym(*args)
    result = finish(process)
    assert_nothing_left(process.pid)
    return result


def same_dataset(a: Path, b: Path) -> None:
    """Byte for byte: data.jsonl, the manifest, and every image."""
    for name in (DATA_FILE, "dataset.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    names = sorted(p.name for p in (a / IMAGE_DIR).iterdir())
    assert names == sorted(p.name for p in (b / IMAGE_DIR).iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a / IMAGE_DIR, b / IMAGE_DIR, names, shallow=False)
    assert not mismatch and not errors and len(match) == len(names)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """30 Basic samples made here (--engine local)."""
    out = tmp_path_factory.mktemp("local") / "data"
    code, _, err = run("generate", *GEN, "--n", "30", "--out", str(out))
    assert code == 0, err
    return out


def test_generate_on_ray_is_byte_identical_to_the_local_run(reference, tmp_path):
    out = tmp_path / "ray"
    code, stdout, err = run("generate", *GEN, "--n", "30", "--out", str(out), "--engine", "ray", "--workers", "2",
                            "--shard-size", "7")  # fmt: skip
    assert code == 0, err
    assert "wrote 30 basic problems" in stdout
    same_dataset(reference, out)
    assert not (out / JOURNAL_FILE).exists()


def test_trance_export_on_ray_is_byte_identical_to_the_local_export(tmp_path):
    common = ["export", "--format", "trance", "--env", "TVR-CrossView-v0", "--n", "8", "--seed", "3", "--quiet"]
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert run(*common, "--out", str(local))[0] == 0
    code, _, err = run(*common, "--out", str(ray), "--engine", "ray", "--shard-size", "3")
    assert code == 0, err
    same_dataset(local, ray)


def ray_workers(sid: int, title: str = "ray::tvr_gym_range") -> list[int]:
    return [int(line.split()[0]) for line in session_processes(sid) if title.startswith(line.split(maxsplit=1)[1])]


def test_a_worker_killed_mid_task_is_retried_and_the_dataset_is_whole(reference, tmp_path):
    out = tmp_path / "ray"
    process = tvr_gym("generate", *GEN, "--n", "30", "--out", str(out), "--engine", "ray", "--shard-size", "30")
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        running = ray_workers(process.pid)  # the worker while it runs the range (idle workers are ray::IDLE)
        if running:
            os.kill(running[0], signal.SIGKILL)
            killed = running[0]
        time.sleep(0.02)
    code, _, err = finish(process)
    assert_nothing_left(process.pid)
    assert killed is not None, "the range finished before its worker could be killed"
    assert code == 0, err
    same_dataset(reference, out)


def wait_for_journal(process: subprocess.Popen, journal: Path, lines: int, timeout: float = 300) -> None:
    """Until the running command has journalled ``lines`` samples (or ended, or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= lines:
            return
        time.sleep(0.05)


def test_a_killed_driver_leaves_finished_ranges_that_the_same_command_resumes(reference, tmp_path):
    out = tmp_path / "ray"
    command = ["generate", *GEN, "--n", "30", "--out", str(out), "--engine", "ray", "--shard-size", "3"]
    process = tvr_gym(*command)
    journal = out / JOURNAL_FILE
    wait_for_journal(process, journal, 3)
    process.kill()  # SIGKILL: no chance to tidy up
    process.wait()
    kept = journal.read_text().count("\n")
    assert 3 <= kept < 30

    code, stdout, err = run(*command)
    assert code == 0, err
    made = int(stdout.split()[1])
    assert made <= 30 - kept, stdout  # the journalled samples were not made again
    same_dataset(reference, out)
    assert_nothing_left(process.pid)  # the killed driver's Ray instance is gone too


def test_a_range_that_fails_every_time_is_named_and_the_rest_is_kept(tmp_path):
    out = tmp_path / "ray"
    assert run("generate", *GEN, "--n", "0", "--out", str(out))[0] == 0  # the dataset, empty
    (out / IMAGE_DIR / image_name(8, "init", "center")).mkdir()  # sample 8's image cannot be written
    code, _, err = run("generate", *GEN, "--n", "12", "--out", str(out), "--engine", "ray", "--shard-size", "4",
                       "--retries", "1")  # fmt: skip
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("tvr-gym generate: error: samples 8..11 failed 2 times; the last: IsADirectoryError")
    assert "rerun the same command to resume" in lines[-1]
    kept = sorted(json.loads(line)["idx"] for line in (out / DATA_FILE).read_text().splitlines())
    assert kept == [0, 1, 2, 3, 4, 5, 6, 7]  # the other ranges, whole
    assert not [p.name for p in out.rglob("*.tmp")]  # nothing half-written
    assert not (out / JOURNAL_FILE).exists()

    (out / IMAGE_DIR / image_name(8, "init", "center")).rmdir()  # the cause gone, either engine completes it
    code, stdout, err = run("generate", *GEN, "--n", "12", "--out", str(out))
    assert code == 0, err
    assert stdout.startswith("wrote 4 basic problems")
    assert len((out / DATA_FILE).read_text().splitlines()) == 12


def test_sigterm_stops_a_ray_job_cleanly_and_keeps_the_finished_ranges(tmp_path):
    out = tmp_path / "ray"
    process = tvr_gym("generate", *GEN, "--n", "60", "--out", str(out), "--engine", "ray", "--shard-size", "2")
    journal = out / JOURNAL_FILE
    wait_for_journal(process, journal, 2)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert_nothing_left(process.pid)
    assert code == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("tvr-gym generate: interrupted (SIGTERM)")
    kept = (out / DATA_FILE).read_text().splitlines()
    assert 2 <= len(kept) < 60
    assert not [p.name for p in out.rglob("*.tmp")]


STOPPING_JOB = """
import json, sys, time
from tvr_gym.data import cluster

fast, slow, cluster.DRAIN_S = (float(x) for x in sys.argv[1:4])

def work(chunk):  # range 0 finishes first; the others take `slow` seconds
    import time
    time.sleep(fast if chunk == [0] else slow)
    return [str(i) for i in chunk]

got = []
def on_range(lines):
    got.append(lines)
    if len(got) == 1:
        raise KeyboardInterrupt  # as Ctrl-C lands while the first range is journalled

options = cluster.RayOptions(workers=2, shard_size=1)
with cluster.ray_session(options) as ray:
    start = time.monotonic()
    try:
        cluster.run_ranges(work, list(range(40)), lambda chunk: chunk, options, on_range)
    except KeyboardInterrupt:
        print(json.dumps({"got": sorted(got), "stop_s": time.monotonic() - start}))
"""
"""``run_ranges`` on a local Ray instance of 2 CPUs (4 ranges in flight), interrupted by its first finished range."""


def stop_a_job(fast: float, slow: float, drain_s: float) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen(
        [sys.executable, "-c", STOPPING_JOB, str(fast), str(slow), str(drain_s)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )  # fmt: skip
    code, out, err = finish(process, timeout=300)
    assert_nothing_left(process.pid)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_stopping_job_lets_its_tasks_in_flight_finish_and_keeps_them():
    """Nothing in flight is cancelled when it can finish: Ray's cancel racing a task's finish crashes the driver."""
    result = stop_a_job(fast=0.5, slow=1.0, drain_s=60.0)
    assert result["got"] == [["0"], ["1"], ["2"], ["3"]]  # the interrupted range and the three in flight, no more


def test_a_stopping_job_cancels_what_is_still_running_after_the_drain():
    result = stop_a_job(fast=0.5, slow=120.0, drain_s=1.0)
    assert result["got"] == [["0"]]
    assert result["stop_s"] < 60.0  # the 120 s tasks were cancelled, not waited for


@pytest.mark.parametrize(
    "args, message",
    [
        (["--address", "auto"], "--address: only with --engine ray"),
        (["--engine", "ray", "--shard-size", "0"], "--shard-size: expected an integer >= 1, got 0"),
        (["--engine", "ray", "--retries", "-1"], "--retries: expected an integer >= 0, got -1"),
        (["--engine", "ray", "--address", "127.0.0.1:9"], "--address: no Ray cluster answers at 127.0.0.1:9"),
        (["--engine", "ray", "--address", "nowhere"], "--address: expected 'auto', HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_a_bad_argument_is_one_line_exit_2_and_creates_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    code, stdout, err = run("generate", *GEN, "--n", "4", "--out", str(out), *args)
    assert code == 2 and not stdout
    assert err.strip().splitlines() == [f"tvr-gym generate: error: {err.split('error: ', 1)[1].strip()}"]
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "trance", "--shard-size", "4"], "--shard-size: only with --engine ray"),
        (["--format", "verl", "--workers", "2"], "--workers: only with --engine ray"),
        (["--format", "verl", "--shard-size", "0"], "--shard-size: expected an integer >= 1, got 0"),
    ],
)
def test_export_refuses_flags_its_engine_does_not_take(tmp_path, args, message):
    code, _, err = run("export", "--n", "2", "--out", str(tmp_path / "x"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


PROBE = """
import os, sys
import ray
from tvr_gym.data.cluster import RayOptions, ray_session, run_ranges
from tvr_gym.render.blender import BLENDER_THREADS_ENV

def probe(payload):  # in the Ray worker: what Blender would be told, and the CPUs Ray gave the task
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return [f"{os.environ.get(BLENDER_THREADS_ENV)} {cpus:g}"]

seen = []
with ray_session(RayOptions(workers=1, cpus_per_task=2, shard_size=1)):
    run_ranges(probe, [0, 1], lambda chunk: chunk, RayOptions(cpus_per_task=2, shard_size=1), seen.extend)
print("|".join(seen))
"""


def test_each_task_holds_the_cpus_that_blender_renders_with(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, env=env)  # fmt: skip
    code, out, err = finish(process)
    assert_nothing_left(process.pid)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "2 2|2 2"  # both ranges: 2 CPUs from Ray, 2 Blender threads


def test_blender_threads_come_from_the_environment_before_the_spec(monkeypatch):
    from tvr_gym.render.base import RENDER
    from tvr_gym.render.blender import BLENDER_THREADS_ENV, blender_threads

    monkeypatch.delenv(BLENDER_THREADS_ENV, raising=False)
    assert blender_threads() == (int(RENDER["blender"]["threads"]) or None)
    monkeypatch.setenv(BLENDER_THREADS_ENV, "3")
    assert blender_threads() == 3
    monkeypatch.setenv(BLENDER_THREADS_ENV, "0")
    assert blender_threads() is None  # Blender's own choice
    monkeypatch.setenv(BLENDER_THREADS_ENV, "two")
    with pytest.raises(ValueError, match=BLENDER_THREADS_ENV):
        blender_threads()


@settings(max_examples=examples(200))
@given(st.sets(st.integers(0, 300), max_size=120), st.integers(1, 40))
def test_index_ranges_cover_the_indices_in_runs_of_consecutive_indices(indices, size):
    todo = sorted(indices)
    ranges = index_ranges(todo, size)
    assert [i for r in ranges for i in r] == todo  # every index once, in order
    for r in ranges:
        assert 1 <= len(r) <= size
        assert r == list(range(r[0], r[0] + len(r)))  # consecutive: one task, one contiguous range
    for a, b in zip(ranges, ranges[1:]):  # a new range only where the last is full or the run breaks
        assert len(a) == size or b[0] != a[-1] + 1


# ---------------------------------------------------------------- table exports as parquet shards

TABLE = ["export", "--format", "verl", "--env", "TVR-CrossView-v0", "--n", "7", "--seed", "2", "--quiet"]


@pytest.fixture(scope="module")
def shards_local(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "local"
    code, _, err = run(*TABLE, "--out", str(out), "--shard-size", "3")
    assert code == 0, err
    return out / "train"


def test_parquet_shards_on_ray_are_byte_identical_and_listed_in_the_manifest(shards_local, tmp_path):
    out = tmp_path / "ray"
    code, _, err = run(*TABLE, "--out", str(out), "--shard-size", "3", "--engine", "ray", "--workers", "2")
    assert code == 0, err
    names = sorted(p.name for p in shards_local.iterdir())
    assert names == [f"shard-0000{k}-of-00003.parquet" for k in range(3)]  # nothing else (EasyR1 reads the type)
    assert names == sorted(p.name for p in (out / "train").iterdir())
    for name in names:
        assert (shards_local / name).read_bytes() == (out / "train" / name).read_bytes(), name
    assert sorted(p.name for p in (out / MANIFEST_DIR).iterdir()) == ["train.json"]
    manifest = json.loads((shards_local.parent / MANIFEST_DIR / "train.json").read_bytes())
    assert manifest == json.loads((out / MANIFEST_DIR / "train.json").read_bytes())
    assert [(s["file"], s["start"], s["rows"]) for s in manifest["shards"]] == [
        ("shard-00000-of-00003.parquet", 0, 3), ("shard-00001-of-00003.parquet", 3, 3),
        ("shard-00002-of-00003.parquet", 6, 1),
    ]  # fmt: skip


def test_parquet_shards_read_as_the_one_file_export(shards_local, tmp_path):
    import numpy as np
    from datasets import Dataset, load_dataset

    whole_dir = tmp_path / "whole"
    assert run(*TABLE, "--out", str(whole_dir))[0] == 0
    sharded = load_dataset("parquet", data_files=str(shards_local / "*.parquet"), split="train")
    whole = Dataset.from_parquet(str(whole_dir / "train.parquet"))
    assert sharded.features == whole.features and len(sharded) == len(whole) == 7
    for entry in os.listdir(shards_local):  # EasyR1 reads a directory as the type of whichever name comes first
        assert os.path.splitext(entry)[1] == ".parquet", entry
    by_dir = load_dataset("parquet", data_dir=str(shards_local), split="train")  # EasyR1's read of a directory
    assert by_dir.features == whole.features and by_dir["extra_info"] == whole["extra_info"]
    by_out = load_dataset("parquet", data_dir=str(shards_local.parent), split="train")  # the manifests are hidden
    assert by_out["extra_info"] == whole["extra_info"]
    for a, b in zip(sharded, whole):
        assert {k: v for k, v in a.items() if k != "images"} == {k: v for k, v in b.items() if k != "images"}
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a["images"], b["images"]))


def test_a_sharded_export_resumes_shard_by_shard_and_refuses_another_export(shards_local, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(shards_local.parent, out)
    kept = out / "train" / "shard-00000-of-00003.parquet"
    before = kept.stat().st_ino, kept.stat().st_mtime_ns
    (out / "train" / "shard-00001-of-00003.parquet").unlink()
    code, _, err = run(*TABLE, "--out", str(out), "--shard-size", "3", "--engine", "ray")
    assert code == 0, err
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == before  # a finished shard is not made again
    name = "shard-00001-of-00003.parquet"
    assert (out / "train" / name).read_bytes() == (shards_local / name).read_bytes()

    code, _, err = run(*TABLE, "--out", str(out), "--shard-size", "2")
    assert code == 2 and "holds another export (rows_per_shard: 3 there, 2 now)" in err


def test_ray_tasks_write_shards_to_a_url_as_they_write_them_locally(shards_local, tmp_path):
    from datasets import load_dataset

    from tvr_gym.data.shards import shard_files

    url = f"file://{tmp_path}/remote"
    code, out, err = run(*TABLE, "--out", url, "--shard-size", "3", "--engine", "ray", "--workers", "2")
    assert code == 0, err
    assert f"to {url}/train" in out
    names = sorted(p.name for p in shards_local.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "remote" / "train").iterdir())
    for name in names:
        assert (shards_local / name).read_bytes() == (tmp_path / "remote" / "train" / name).read_bytes(), name
    files = shard_files(f"{url}/train")
    assert files == [f"{url}/train/shard-0000{k}-of-00003.parquet" for k in range(3)]
    assert len(load_dataset("parquet", data_files=files, split="train")) == 7  # datasets reads the URLs
