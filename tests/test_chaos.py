"""Chaos: ``generate --workers 2``, ``export``, ``eval`` and ``train grpo`` stopped at seeded random points
(SIGKILL, SIGTERM, Ctrl-C) and by a full disk leave no orphan process, no stray temporary file after a successful
rerun, and a rerun gives the bytes of an uninterrupted run (a GRPO rerun resumes from its last exact checkpoint).

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

from tvr_gym.agents.evaluate import EPISODES_FILE, LOCK_FILE, MANIFEST_FILE, SUMMARY_FILE
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
    """Temporary files (``.NAME.XXXXXXXX.tmp``) and directories (export's staging, GRPO's ``.tmp-checkpoint-N``)
    anywhere under ``root``."""
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-"))


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


_KILLED_AT_RENAME = textwrap.dedent(
    """
    import os, signal, sys

    from tvr_gym.apps.cli import main

    target, rename = os.path.realpath(sys.argv[1]), os.replace

    def killed_at_target(src, dst, *args, **kwargs):  # what target's temporary holds is complete, not yet in place
        if os.path.realpath(dst) == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return rename(src, dst, *args, **kwargs)

    os.replace = killed_at_target
    sys.exit(main(sys.argv[2:]))
    """
)
"""``tvr-gym ARGS`` killed (SIGKILL) as it is about to rename a finished temporary onto the path ``argv[1]``."""
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(
    args: list[str], out: Path, stderr: Path, kill_at: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``tvr-gym ARGS --out OUT`` in a session of its own; with ``kill_at``, killed where it writes that file."""
    command = ["-m", "tvr_gym"] if kill_at is None else ["-c", _KILLED_AT_RENAME, str(kill_at)]
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, *command, *args, "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, env=env,
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


def _kill_after_random_progress(command, out: Path, stderr: Path, rng: random.Random, progress, most: int) -> None:
    """Run ``command`` once per :data:`KILLS` entry (in a seeded order) and stop it with that signal once
    ``progress(out)`` has grown by a seeded 1..``most``; each stop must leave no orphan and say only what is
    true of a resumable command, and every run must still be going when its signal comes."""
    stopped = 0
    for signum, group in rng.sample(KILLS, k=len(KILLS)):
        target = progress(out) + rng.randint(1, most)  # the seeded random point
        proc = _start(command, out, stderr)
        deadline = time.monotonic() + 60
        while proc.poll() is None and progress(out) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        rc = _stop(proc, signum, group)
        left = _left_behind(proc.pid)
        assert not left, f"orphans after {signal.Signals(signum).name}: {left}"
        _check_stopped(rc, signum, stderr, resumable=True)
        stopped += rc != 0
    assert stopped == len(KILLS), "a run ended before its kill"


def test_generate_killed_at_random_points_leaves_no_orphan_and_resumes_to_the_same_bytes(tmp_path):
    rng = random.Random(20240607)
    reference = tmp_path / "reference"
    command = [*GENERATE, "--n", str(N_GENERATE), "--workers", "2"]
    assert main([*GENERATE, "--n", str(N_GENERATE), "--out", str(reference)]) == 0
    out, stderr = tmp_path / "out", tmp_path / "stderr"
    _kill_after_random_progress(command, out, stderr, rng, _finished, most=3)  # samples finished
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


# ---------------------------------------------------------------------------- eval


EVAL = ["eval", "--agent", "random", "--env", "TVR-CrossView-v0", *FAST]
N_EVAL = 150
"""Enough episodes that each run is still going at its kill (every kill comes within 75 of them)."""


def _journaled(out: Path) -> int:
    """Episodes the eval journaled so far (whole lines of ``episodes.jsonl``)."""
    journal = out / EPISODES_FILE
    return journal.read_bytes().count(b"\n") if journal.is_file() else 0


def _eval_files(out: Path) -> dict[str, bytes]:
    """What an eval leaves in OUT but its lock file, which stays (removing it would race with the next run)
    and holds the process id."""
    return {name: data for name, data in _files(out).items() if name != LOCK_FILE}


def test_eval_killed_at_random_points_leaves_no_orphan_and_resumes_to_the_same_bytes(tmp_path, capsys):
    rng = random.Random(31)
    reference, out, stderr = tmp_path / "reference", tmp_path / "out", tmp_path / "stderr"
    command = [*EVAL, "--episodes", str(N_EVAL)]
    assert main([*command, "--out", str(reference)]) == 0
    _kill_after_random_progress(command, out, stderr, rng, _journaled, most=15)  # episodes journaled
    proc = _start(command, out, stderr)  # the very same command continues the journal
    assert proc.wait(timeout=120) == 0, stderr.read_text()
    assert not _left_behind(proc.pid)
    assert _strays(out) == []
    assert _eval_files(out) == _eval_files(reference)  # eval.json, the journal sorted by seed, summary.json


def test_eval_killed_while_it_writes_a_result_leaves_no_temporary_after_the_rerun(tmp_path):
    rng = random.Random(8)
    reference, out, stderr = tmp_path / "reference", tmp_path / "out", tmp_path / "stderr"
    command = [*EVAL, "--episodes", "6"]
    assert main([*command, "--out", str(reference)]) == 0
    written = rng.choice([MANIFEST_FILE, EPISODES_FILE, SUMMARY_FILE])  # the first or one of the last two writes
    proc = _start(command, out, stderr, kill_at=out / written)
    assert proc.wait(timeout=120) == -signal.SIGKILL, stderr.read_text()
    assert not _left_behind(proc.pid)
    proc = _start(command, out, stderr)
    assert proc.wait(timeout=120) == 0, stderr.read_text()
    assert _strays(out) == []
    assert _eval_files(out) == _eval_files(reference)


# ---------------------------------------------------------------------------- train grpo


GRPO_STEPS = 4


def _grpo_command(model: Path) -> list[str]:
    """A tiny GRPO run on CPU that saves every step (a few seconds)."""
    return ["train", "grpo", "--model", str(model), "--env", "TVR-Basic-v0", "--renderer",
            "numpy", "--size", "32", "24", "--steps", str(GRPO_STEPS), "--batch-size", "2", "--group-size", "4",
            "--max-new-tokens", "8", "--lr", "0.01", "--save-every", "1", "--eval-every", "0", "--device", "cpu",
            "--quiet"]  # fmt: skip


TIMES = ("step_time", "wall_time", "generation_time")
"""What a log record measures rather than computes: the only values a resume may change."""


def _untimed(records) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records]


def _grpo_result(out: Path) -> dict[str, object]:
    """Every file of each checkpoint and of ``final/``, and the log; their times aside, and what names the run in
    its trainer state (the config: OUT, --resume). The manifests follow from the files (and hold the times' digest).

    ``final/tokenizer.json`` is compared without ``padding``: a rerun that only finishes a run (its last checkpoint
    was there) saves the tokenizer before it has padded a batch, which records no padding state there; the
    processor sets padding on every call, so both load and encode alike."""
    result: dict[str, object] = {}
    for folder in sorted([*out.glob("checkpoint-*"), out / "final"]):
        for name, data in _files(folder).items():
            key = f"{folder.name}/{name}"
            if name == "trainer_state.json":
                state = json.loads(data)
                result[key] = [state["step"], state["seed_stream"], state["skipped"], _untimed(state["history"])]
            elif folder.name == "final" and name == "tokenizer.json":
                result[key] = {k: v for k, v in json.loads(data).items() if k != "padding"}
            elif name != "manifest.json":
                result[key] = data
    result["log.jsonl"] = _untimed(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines())
    return result


def test_grpo_killed_at_random_points_resumes_to_the_same_weights_and_log(tiny_dir, tmp_path):
    """Killed where it renames a finished write into place (its temporary left whole, the worst moment for strays):
    first as it writes config.json (no checkpoint yet: the rerun starts over), then at a seeded random checkpoint,
    then at a seeded one of the two writes after the last checkpoint (final/, log.jsonl), where the run's steps
    are all done: ``--resume`` finishes the run rather than refusing it for having reached ``--steps``."""
    from tvr_gym.agents.mllm.grpo import latest_checkpoint

    rng = random.Random(11)
    command = _grpo_command(tiny_dir)
    reference, out, stderr = tmp_path / "reference", tmp_path / "out", tmp_path / "stderr"
    proc = _start(command, reference, stderr, env=ONE_THREAD)
    assert proc.wait(timeout=300) == 0, stderr.read_text()[-3000:]
    kills = ["config.json", f"checkpoint-{rng.randint(1, GRPO_STEPS - 1)}", rng.choice(["final", "log.jsonl"])]
    for written in [*kills, None]:
        resume = ["--resume"] if latest_checkpoint(out) else []  # from scratch while no exact checkpoint exists
        proc = _start([*command, *resume], out, stderr, kill_at=written and out / written, env=ONE_THREAD)
        rc = proc.wait(timeout=300)
        assert rc == (0 if written is None else -signal.SIGKILL), f"at {written}: {stderr.read_text()[-3000:]}"
        left = _left_behind(proc.pid)
        assert not left, f"orphans after the kill at {written}: {left}"
    assert _strays(out) == []
    result, expected = _grpo_result(out), _grpo_result(reference)
    assert "final/model.safetensors" in expected  # the weights are among the files compared, byte for byte
    differing = sorted(k for k in result.keys() | expected.keys() if result.get(k) != expected.get(k))
    assert not differing, {k: (repr(result.get(k))[:400], repr(expected.get(k))[:400]) for k in differing}
