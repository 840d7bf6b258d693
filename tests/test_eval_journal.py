"""``tvr-gym eval``'s output directory: nothing lost, nothing spoofed.

A rerun continues the evaluation in ``--out`` without losing a journal line; another evaluation there is
refused unless ``--overwrite``; a directory in use is locked (and freed when its process dies, however);
a damaged journal is an error naming ``file:line``; the summary holds exactly the requested episodes;
SIGTERM stops an eval as Ctrl-C does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvr_gym.agents.evaluate import EPISODES_FILE, MANIFEST_FILE, SUMMARY_FILE, EvalDirError, read_journal
from tvr_gym.apps.cli import agent_id, main

EVAL = ["eval", "--env", "TVR-Event-v0", "--size", "32", "24", "--quiet"]
MARK = "<answer>kept from the first run</answer>"
"""An answer no agent gives: a line that still holds it was kept, not run again."""


def _eval(out: Path, *extra: str) -> int:
    return main([*EVAL, "--out", str(out), *extra])


def _lines(out: Path) -> list[str]:
    return (out / EPISODES_FILE).read_text().splitlines()


def _marked(line: str) -> str:
    return json.dumps({**json.loads(line), "answer": MARK})


def _start(out: Path, *extra: str) -> subprocess.Popen:
    """A ``tvr-gym eval`` process far from its end, once it has journaled a few episodes."""
    cmd = [sys.executable, "-m", "tvr_gym", *EVAL, "--episodes", "1000000", "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal, deadline = out / EPISODES_FILE, time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 5:
            return proc
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"the eval journaled no 5 episodes: {proc.communicate()[1]}")


# ---------------------------------------------------------------------------- a rerun continues


def test_rerunning_the_same_command_continues_and_keeps_every_line(tmp_path, capsys):
    out = tmp_path / "e"
    assert _eval(out, "--episodes", "6") == 0
    whole = _lines(out)
    # an interrupted run: three episodes finished, the first one recognisable
    (out / EPISODES_FILE).write_text("\n".join([_marked(whole[0]), *whole[1:3]]) + "\n")
    assert _eval(out, "--episodes", "6") == 0  # the very same command, no --resume
    assert _lines(out) == [_marked(whole[0]), *whole[1:]]
    assert _eval(out, "--episodes", "6", "--resume") == 0  # --resume is the default, spelled out
    assert _lines(out) == [_marked(whole[0]), *whole[1:]]


def test_the_summary_holds_exactly_the_requested_episodes_and_the_journal_keeps_the_rest(tmp_path, capsys):
    out = tmp_path / "e"
    assert _eval(out, "--episodes", "8") == 0
    whole = _lines(out)
    capsys.readouterr()
    assert _eval(out, "--episodes", "3", "--resume") == 0
    assert json.loads((out / SUMMARY_FILE).read_text())["overall"]["n"] == 3
    assert "(3 episodes)" in capsys.readouterr().out
    assert _lines(out) == whole


# ---------------------------------------------------------------------------- another evaluation is refused


@pytest.mark.parametrize(
    "change",
    [["--agent", "oracle"], ["--env", "TVR-Basic-v0"], ["--seed", "5"], ["--size", "40", "30"], ["--max-visible", "3"]],
    ids=["agent", "env", "seed", "env-kwargs", "episode-options"],
)
@pytest.mark.parametrize("resume", [[], ["--resume"]], ids=["rerun", "resume"])
def test_another_evaluation_in_out_is_refused_and_left_as_it_is(tmp_path, capsys, change, resume):
    out = tmp_path / "e"
    assert _eval(out, "--episodes", "4") == 0
    before = {name: (out / name).read_bytes() for name in (EPISODES_FILE, MANIFEST_FILE, SUMMARY_FILE)}
    capsys.readouterr()
    assert _eval(out, "--episodes", "4", *change, *resume) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the 4 episodes of another evaluation" in err and "--overwrite" in err
    assert {name: (out / name).read_bytes() for name in before} == before


def test_overwrite_discards_the_other_evaluation(tmp_path, capsys):
    out = tmp_path / "e"
    assert _eval(out, "--episodes", "4") == 0
    assert _eval(out, "--episodes", "2", "--agent", "oracle", "--overwrite") == 0
    assert json.loads((out / MANIFEST_FILE).read_text())["agent"] == "oracle"
    assert len(_lines(out)) == 2 and all(json.loads(line)["metrics"]["acc"] == 1.0 for line in _lines(out))
    with pytest.raises(SystemExit):  # continue and discard: argparse refuses the pair
        _eval(out, "--episodes", "2", "--resume", "--overwrite")


def test_a_checkpoint_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert agent_id("mllm:runs/a") == f"mllm:{tmp_path.resolve() / 'runs' / 'a'}" != agent_id("mllm:runs/b")
    assert agent_id("ppo:m.zip") == f"ppo:{tmp_path.resolve() / 'm.zip'}"
    assert agent_id("random") == "random" and agent_id("openai:m@http://h/v1") == "openai:m@http://h/v1"


# ---------------------------------------------------------------------------- one process at a time


def test_a_directory_in_use_is_refused_and_freed_when_its_process_is_killed(tmp_path, capsys):
    out = tmp_path / "e"
    proc = _start(out)
    try:
        manifest = (out / MANIFEST_FILE).read_bytes()
        assert _eval(out, "--episodes", "3") == 2
        err = capsys.readouterr().err
        assert f"is in use by another evaluation (process {proc.pid})" in err and err.count("\n") == 1
        assert (out / MANIFEST_FILE).read_bytes() == manifest
    finally:
        proc.kill()
        proc.communicate()
    assert _eval(out, "--episodes", "3") == 0  # kill -9 released the lock
    assert (out / ".eval.lock").is_file()  # kept: removing it would race with the next run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_eval_keeps_its_episodes_and_says_how_to_continue(tmp_path, capsys, signum):
    out = tmp_path / "e"
    proc = _start(out)
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=120)
    finally:  # a child that ignored the signal must not outlive the test (it would run 10^6 episodes)
        proc.kill()
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines() == [
        f"tvr-gym eval: interrupted ({signal.Signals(signum).name}); the finished episodes are kept in "
        f"{out / EPISODES_FILE}: rerun the same command to resume"
    ]
    kept = _lines(out)
    assert len(kept) >= 5 and [json.loads(line)["seed"] for line in kept] == list(range(len(kept)))
    assert _eval(out, "--episodes", str(len(kept) + 2)) == 0
    assert _lines(out)[: len(kept)] == kept and len(_lines(out)) == len(kept) + 2


# ---------------------------------------------------------------------------- a damaged journal


def _record(seed: int) -> dict:
    return {"seed": seed, "n_steps": 1, "final_view": "center", "reward": 0.0, "metrics": {"acc": 0.0}}


@pytest.mark.parametrize(
    "bad",
    ["garbage", '{"n_steps": 1}', json.dumps({**_record(0), "seed": "1"}), json.dumps(_record(0)),
     json.dumps({k: v for k, v in _record(1).items() if k != "metrics"}), "[1, 2]", '{"seed": -1}'],
    ids=["not-json", "no-seed", "seed-not-int", "seed-twice", "no-metrics", "not-an-object", "seed-before-first"],
)  # fmt: skip
def test_a_bad_journal_line_is_an_error_naming_file_and_line(tmp_path, capsys, bad):
    out = tmp_path / "e"
    assert _eval(out, "--episodes", "3") == 0
    lines = _lines(out)
    damaged = "\n".join([lines[0], bad, lines[2]]) + "\n"
    (out / EPISODES_FILE).write_text(damaged)
    capsys.readouterr()
    assert _eval(out, "--episodes", "3") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tvr-gym eval: error: {out / EPISODES_FILE}:2: ") and err.count("\n") == 1
    assert "fix or delete that line" in err
    assert (out / EPISODES_FILE).read_text() == damaged


def test_a_torn_last_line_runs_again_and_a_whole_one_without_newline_is_kept(tmp_path, capsys):
    out = tmp_path / "e"
    assert _eval(out, "--episodes", "5") == 0
    whole = _lines(out)
    journal = out / EPISODES_FILE
    journal.write_text("\n".join(whole[:3]) + "\n" + whole[3][:25])  # a kill cut the fourth line
    assert _eval(out, "--episodes", "5") == 0
    assert _lines(out) == whole
    journal.write_text("\n".join(whole[:3]) + "\n" + _marked(whole[3]))  # whole, but its newline never came
    assert _eval(out, "--episodes", "5") == 0
    assert _lines(out) == [*whole[:3], _marked(whole[3]), whole[4]]
    damaged = "\n".join(whole[:3]) + "\n" + '{"n_steps": 1}'  # whole JSON, so no kill tore it: checked like any line
    journal.write_text(damaged)
    capsys.readouterr()
    assert _eval(out, "--episodes", "5") == 2
    assert capsys.readouterr().err.startswith(f"tvr-gym eval: error: {journal}:4: expected a seed")
    assert journal.read_text() == damaged


@given(seeds=st.lists(st.integers(0, 10**9), unique=True, min_size=1, max_size=6), cut=st.integers(0, 200))
def test_reading_a_journal_keeps_complete_records_and_the_last_only_when_whole(seeds, cut):
    *done, last = seeds
    last_line = json.dumps(_record(last))
    kept = seeds if cut >= len(last_line) else done  # the last line, cut by a kill at any byte
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / EPISODES_FILE
        path.write_text("".join(json.dumps(_record(s)) + "\n" for s in done) + last_line[:cut])
        assert read_journal(path) == {s: _record(s) for s in kept}
        assert path.read_text() == "".join(json.dumps(_record(s)) + "\n" for s in kept)  # the file agrees
        assert read_journal(path) == {s: _record(s) for s in kept}


def test_a_journal_record_before_the_first_seed_is_refused(tmp_path):
    path = tmp_path / EPISODES_FILE
    path.write_text(json.dumps(_record(3)) + "\n")
    with pytest.raises(EvalDirError, match=rf"{EPISODES_FILE}:1: expected a seed, an integer >= 5"):
        read_journal(path, first_seed=5)
    assert read_journal(path, first_seed=3) == {3: _record(3)}
