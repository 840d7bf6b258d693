"""Chaos: ``generate --workers 2`` and ``export`` stopped at seeded random points (SIGKILL, SIGTERM, Ctrl-C) and
by a full disk leave no orphan process, no stray temporary file after a successful rerun, and a rerun gives the
bytes of an uninterrupted run.

Orphans are found by process group: each command starts a new session, so its workers and the multiprocessing
resource tracker share its process group, and they are looked up in ``/proc`` (zombies do not count: they run
nothing, and only the reaper that adopted them can remove them).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from tvr_gym.apps.cli import main
from tvr_gym.data.dataset import JOURNAL_FILE, RESUMES
from tvr_gym.data.export import STAGING_PREFIX, STARTS_OVER

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="finding orphan processes needs Linux /proc"
)

FAST = ["--size", "48", "36", "--renderer", "numpy", "--quiet"]
GENERATE = ["generate", "--setting", "crossview", "--seed", "4", *FAST]
EXPORT_HF = ["export", "--format", "hf", "--env", "TVR-CrossView-v0", "--seed", "3", *FAST]
N_GENERATE, N_EXPORT = 32, 60
"""Enough samples and rows that each run is still going at its kill."""
GONE_WITHIN_S = 20.0
"""Bound on how long the killed command's processes may take to end (the resource tracker exits on EOF)."""


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _strays(root: Path) -> list[str]:
    """Temporary files and staging directories anywhere under ``root``."""
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(STAGING_PREFIX))


def _group(pgid: int) -> list[str]:
    """The live processes (not zombies) of process group ``pgid``, as ``pid state command`` lines."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended while we looked
            continue
        state, _ppid, pgrp = text[text.rfind(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            found.append(f"{stat.parent.name} {state} {cmdline[:160]}")
    return found


def _left_behind(pgid: int) -> list[str]:
    """The processes of group ``pgid`` still alive after :data:`GONE_WITHIN_S`; they are killed afterwards."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while (alive := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)  # do not leave them to the next test
        except ProcessLookupError:
            pass
    return alive


def _start(args: list[str], out: Path, stderr: Path) -> subprocess.Popen:
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tvr_gym", *args, "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip


def _finished(out: Path) -> int:
    """Samples finished so far: those of ``data.jsonl`` and of the journal (a torn last line aside)."""
    idx = set()
    for name in ("data.jsonl", JOURNAL_FILE):
        path = out / name
        for line in path.read_text().splitlines() if path.is_file() else ():
            try:
                idx.add(json.loads(line)["idx"])
            except ValueError:
                pass
    return len(idx)


def _stop(proc: subprocess.Popen, signum: int, group: bool) -> int:
    """Send ``signum`` to the command (or to its whole group, as a terminal's Ctrl-C does); its exit status."""
    if proc.poll() is None:
        (os.killpg if group else os.kill)(proc.pid, signum)
    return proc.wait(timeout=120)


def _check_stopped(rc: int, signum: int, stderr: Path, resumable: bool) -> None:
    """SIGKILL kills; SIGTERM and Ctrl-C are handled: one line, never a traceback (also from a worker), which
    speaks of resuming only where the rerun resumes."""
    err = stderr.read_text()
    if signum == signal.SIGKILL:
        assert rc in (-signal.SIGKILL, 0), err  # 0: it had ended before the kill
        return
    assert rc >= 0, f"killed by {signal.Signals(-rc).name}, not handled: {err}"
    assert "Traceback" not in err, err
    if rc:
        assert "interrupted" in err, err
        if resumable:
            assert "kept" in err, err
        else:
            assert "resume" not in err and "continue" not in err, err


# (signal, to the whole process group?): SIGKILL of the command alone is what leaves orphans; Ctrl-C reaches
# every process of the terminal's foreground group; SIGTERM comes from `kill PID` or from a scheduler (group)
KILLS = [(signal.SIGKILL, False), (signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGTERM, True),
         (signal.SIGINT, True)]  # fmt: skip


def test_generate_killed_at_random_points_leaves_no_orphan_and_resumes_to_the_same_bytes(tmp_path):
    rng = random.Random(20240607)
    reference = tmp_path / "reference"
    command = [*GENERATE, "--n", str(N_GENERATE), "--workers", "2"]
    assert main([*GENERATE, "--n", str(N_GENERATE), "--out", str(reference)]) == 0
    out, stderr = tmp_path / "out", tmp_path / "stderr"
    stopped = 0
    for signum, group in rng.sample(KILLS, k=len(KILLS)):
        target = _finished(out) + rng.randint(1, 3)  # the seeded random point: after this many samples
        proc = _start(command, out, stderr)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _finished(out) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        rc = _stop(proc, signum, group)
        left = _left_behind(proc.pid)
        assert not left, f"orphans after {signal.Signals(signum).name}: {left}"
        _check_stopped(rc, signum, stderr, resumable=True)
        stopped += rc != 0
    assert stopped == len(KILLS), "a run ended before its kill"
    proc = _start(command, out, stderr)
    assert proc.wait(timeout=120) == 0, stderr.read_text()
    assert not _left_behind(proc.pid)
    assert _strays(out) == []
    assert _files(out) == _files(reference)


def test_export_killed_at_random_points_leaves_nothing_behind_and_a_rerun_gives_the_same_bytes(tmp_path):
    rng = random.Random(99)
    reference = tmp_path / "reference"
    command = [*EXPORT_HF, "--n", str(N_EXPORT)]
    assert main([*command, "--out", str(reference)]) == 0
    out, stderr = tmp_path / "out", tmp_path / "stderr"
    for signum, group in rng.sample(KILLS[1:], k=len(KILLS) - 1):
        left_before = set(out.glob(STAGING_PREFIX + "*"))  # by a SIGKILL: the run removes them as it starts
        proc = _start(command, out, stderr)
        deadline = time.monotonic() + 60
        while proc.poll() is None and not set(out.glob(STAGING_PREFIX + "*")) - left_before:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.5))  # the seeded random point: this far into the export
        rc = _stop(proc, signum, group)
        assert not _left_behind(proc.pid)
        _check_stopped(rc, signum, stderr, resumable=False)
        if signum != signal.SIGKILL:
            assert _strays(out) == [], f"{signal.Signals(signum).name} left {_strays(out)}"
    proc = _start(command, out, stderr)
    assert proc.wait(timeout=120) == 0, stderr.read_text()
    assert _strays(out) == []
    assert _files(out) == _files(reference)


_SIGTERM_ITSELF = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    import tvr_gym.data.dataset as dataset
    import tvr_gym.data.export as export

    command, out = sys.argv[1], Path(sys.argv[2])
    module, name = (dataset, "_make_generated") if command == "generate" else (export, "_hf_row")
    real, calls = getattr(module, name), []

    def third_sends_sigterm(arg):
        calls.append(arg)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would
        return real(arg)

    setattr(module, name, third_sends_sigterm)
    try:
        if command == "generate":
            dataset.generate_dataset(out, "crossview", 4, 8, size=(48, 36), renderer="numpy", progress=False)
        else:
            export.export("hf", "TVR-CrossView-v0", 8, out, render_size=(48, 36), renderer="numpy", progress=False)
    except dataset.Interrupted as exc:
        print(json.dumps({"note": exc.note, "signum": exc.signum, "default_again":
                          signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}))
    """
)


@pytest.mark.parametrize("command", ["generate", "hf"])
def test_sigterm_stops_like_ctrl_c_and_says_only_what_is_true(command, tmp_path):
    """Called from Python (no command line to catch it), SIGTERM is an :class:`Interrupted` saying what was kept."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _SIGTERM_ITSELF, command, str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    stopped = json.loads(done.stdout)
    assert stopped == {"note": RESUMES if command == "generate" else STARTS_OVER, "signum": signal.SIGTERM,
                       "default_again": True}  # fmt: skip
    assert _strays(out) == []
    if command == "generate":
        assert _finished(out) == 2  # kept, to resume from
    else:
        assert list(out.iterdir()) == []  # nothing half-exported


def _disk_full_after(calls: int):
    """``os.fsync`` (the last step of every write), failing with ENOSPC from its ``calls``-th use on."""
    real, count = os.fsync, [0]

    def fail(fd: int) -> None:
        count[0] += 1
        if count[0] >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    return fail


def test_a_full_disk_during_generate_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    args = [*GENERATE, "--n", "6"]
    reference = tmp_path / "reference"
    assert main([*args, "--out", str(reference)]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    # every fsync from the 13th on (the manifest's, then per sample four images' and the journal's): the disk
    # fills up at sample 2's second image, and stays full while the run lists what it finished
    monkeypatch.setattr(os, "fsync", _disk_full_after(13))
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f": error: {out / 'image' / 'img_000002-'}" in err and "no space left on device" in err, err
    assert "rerun the same command" in err, err
    assert _strays(out) == []
    for image in (out / "image").iterdir():  # what is there is whole
        Image.open(image).load()
    monkeypatch.undo()
    assert main([*args, "--out", str(out)]) == 0
    assert "wrote 4 " in capsys.readouterr().out  # samples 0 and 1 were kept
    assert _files(out) == _files(reference)


def test_a_full_disk_during_an_hf_export_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    from datasets.arrow_writer import ArrowWriter

    out = tmp_path / "out"
    args = [*EXPORT_HF, "--n", "4", "--out", str(out)]
    assert main(args) == 0
    before = _files(out)
    # a kill between the two renames of the last export left its old split aside, and a staging directory
    os.replace(out / "train", out / ".old-train")
    (out / f"{STAGING_PREFIX}killed" / "cache").mkdir(parents=True)
    capsys.readouterr()

    def full(self, *args, **kwargs):  # pyarrow's own error when the disk is full: an errno, no file name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ArrowWriter, "write_table", full)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f": error: {out}: no space left on device" in err and STARTS_OVER in err, err
    assert _strays(out) == []
    assert _files(out) == before  # the old split is back where it was


def test_only_stale_staging_directories_are_removed_and_a_busy_out_is_refused(tmp_path, monkeypatch, capsys):
    """Exports of other splits may run into the same OUT: their live staging directory is never removed."""
    import tvr_gym.data.export as export
    from tvr_gym.data.dataset import DatasetWriter, lock_dir, unlock_dir

    out = tmp_path / "out"
    args = [*EXPORT_HF, "--n", "2", "--out", str(out)]
    live = out / f"{STAGING_PREFIX}live"
    live.mkdir(parents=True)
    running = lock_dir(out, shared=True)  # what another export holds while it builds `live`
    assert main([*args, "--split", "test"]) == 0
    assert live.is_dir()
    unlock_dir(running)  # it was killed: `live` is now stale
    assert main([*args, "--split", "train"]) == 0
    assert _strays(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["dataset_dict.json", "test", "train"]

    trance = DatasetWriter.open(tmp_path / "other", {"kind": "test"})  # a command holds OUT whole
    monkeypatch.setattr(export, "CLAIM_WAIT_S", 0.0)
    capsys.readouterr()
    assert main([*EXPORT_HF, "--n", "2", "--out", str(trance.out)]) == 2
    assert "another tvr-gym command is writing into it" in capsys.readouterr().err
    trance.finish()
