"""Datasets that survive interruption: resumable and parallel ``generate``, ``merge``, and refused directories."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

from tvr_gym.apps.cli import main
from tvr_gym.core.trance import load_trance
from tvr_gym.data.dataset import (
    JOURNAL_FILE,
    MANIFEST_FILE,
    DatasetDirError,
    DatasetWriter,
    generate_dataset,
    merge_datasets,
)

SIZE = ["48", "36"]


def _generate(out: Path, *extra: str) -> int:
    return main(["generate", "--setting", "crossview", "--seed", "4", "--size", *SIZE, "--out", str(out), "--quiet",
                 *extra])  # fmt: skip


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file of a dataset but the manifest, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != MANIFEST_FILE}  # fmt: skip


def _consistent(root: Path) -> None:
    """Every listed image exists and every image file belongs to a listed sample or to a journaled one."""
    listed = set()
    for problem in load_trance(root) if (root / "data.jsonl").exists() else ():
        for phase, views in problem.images.items():
            for view, name in views.items():
                assert problem.image_path(phase, view) is not None, name
                listed.add(name)
    journal = root / JOURNAL_FILE
    journaled = set()
    if journal.is_file():
        for line in journal.read_text().splitlines():
            for state in json.loads(line)["states"]:
                journaled.update(state["images"].values())
    for image in (root / "image").iterdir():
        assert image.name in listed or image.name in journaled or image.name.startswith("."), image.name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "data"
    assert _generate(out, "--n", "12") == 0
    return out


def test_a_killed_run_resumes_to_the_same_dataset(tmp_path):
    out, n = tmp_path / "data", "40"
    cmd = [sys.executable, "-m", "tvr_gym", "generate", "--setting", "crossview", "--seed", "4", "--size", *SIZE,
           "--out", str(out), "--quiet", "--n", n]  # fmt: skip
    proc = subprocess.Popen(cmd)
    journal = out / JOURNAL_FILE
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGKILL)  # no clean-up at all
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL
    _consistent(out)
    with journal.open("a") as fh:
        fh.write('{"idx": 39, "states": [')  # a line torn by the crash
    # the temporary files a kill leaves mid-write (atomic_open's names), and one of the user's
    stale = [out / "image" / ".img_000039-fin.L.png.k3_x9a0q.tmp", out / ".data.jsonl.0abc_def.tmp"]
    for path in stale:
        path.write_bytes(b"")
    theirs = out / "image" / ".notes.png.tmp"
    theirs.write_text("not ours")
    assert _generate(out, "--n", n) == 0
    assert not journal.exists()
    assert not any(path.exists() for path in stale)
    assert theirs.read_text() == "not ours"
    theirs.unlink()
    assert _generate(tmp_path / "uninterrupted", "--n", n) == 0
    assert _snapshot(out) == _snapshot(tmp_path / "uninterrupted")


def test_an_interrupted_run_lists_only_finished_samples_and_resumes(reference, tmp_path, monkeypatch):
    import tvr_gym.data.dataset as dataset

    made = []
    real = dataset._make_generated

    def stop_after_five(task):
        if len(made) == 5:
            raise KeyboardInterrupt
        made.append(task[3])
        return real(task)

    monkeypatch.setattr(dataset, "_make_generated", stop_after_five)
    out = tmp_path / "data"
    assert _generate(out, "--n", "12") == 130
    assert [p.idx for p in load_trance(out)] == made == [0, 1, 2, 3, 4]
    _consistent(out)
    monkeypatch.setattr(dataset, "_make_generated", real)
    assert _generate(out, "--n", "12") == 0
    assert _snapshot(out) == _snapshot(reference)


def test_parallel_workers_and_merged_shards_equal_one_run(reference, tmp_path):
    assert _generate(tmp_path / "parallel", "--n", "12", "--workers", "2") == 0
    assert _snapshot(tmp_path / "parallel") == _snapshot(reference)
    assert _generate(tmp_path / "a", "--n", "5") == 0
    assert _generate(tmp_path / "b", "--n", "8", "--start", "4") == 0  # overlaps a at idx 4: identical there
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert _snapshot(tmp_path / "m") == _snapshot(reference)
    assert json.loads((tmp_path / "m" / MANIFEST_FILE).read_text()) == json.loads(
        (reference / MANIFEST_FILE).read_text()
    )
    assert _generate(tmp_path / "m", "--n", "14") == 0  # a merged dataset can be extended
    assert [p.idx for p in load_trance(tmp_path / "m")] == list(range(14))


def test_a_directory_holding_other_data_is_refused_untouched(trance_dir, tmp_path, capsys):
    other = tmp_path / "official"
    shutil.copytree(trance_dir, other)
    before = _snapshot(other)
    assert _generate(other, "--n", "2") == 2
    assert "holds no dataset.json" in capsys.readouterr().err
    assert _snapshot(other) == before
    made = tmp_path / "made"
    assert _generate(made, "--n", "2") == 0
    before = _snapshot(made)
    assert main(["generate", "--setting", "event", "--seed", "4", "--size", *SIZE, "--out", str(made), "--quiet",
                 "--n", "2"]) == 2  # fmt: skip
    assert "setting: 'crossview' there, 'event' now" in capsys.readouterr().err
    assert _snapshot(made) == before


def test_a_directory_being_written_is_refused_until_its_writer_ends(reference, tmp_path, capsys):
    """Two commands writing one directory would each rewrite data.jsonl without the other's samples."""
    out = tmp_path / "data"
    assert _generate(out, "--n", "2") == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    writer = DatasetWriter.open(out, manifest)
    assert _generate(out, "--n", "4") == 2
    assert "another tvr-gym command is writing into it" in capsys.readouterr().err
    assert [p.idx for p in load_trance(out)] == [0, 1]
    writer.finish()
    assert _generate(out, "--n", "4") == 0
    assert [p.idx for p in load_trance(out)] == [0, 1, 2, 3]


def test_merge_refuses_shards_made_differently_and_differing_samples(tmp_path):
    generate_dataset(tmp_path / "a", "crossview", 4, 2, size=(48, 36), progress=False)
    generate_dataset(tmp_path / "b", "crossview", 5, 2, size=(48, 36), progress=False)
    with pytest.raises(DatasetDirError, match="made differently"):
        merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "m", progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    (tmp_path / "c" / MANIFEST_FILE).unlink()
    shutil.copytree(tmp_path / "b", tmp_path / "d")
    (tmp_path / "d" / MANIFEST_FILE).unlink()
    with pytest.raises(DatasetDirError, match="idx 0 differs"):
        merge_datasets([tmp_path / "c", tmp_path / "d"], tmp_path / "m", progress=False)
    assert not (tmp_path / "m" / "data.jsonl").exists()
    with pytest.raises(DatasetDirError, match="not empty"):
        merge_datasets([tmp_path / "a"], tmp_path / "b", progress=False)


def test_a_generated_dataset_serves_every_problem_back_through_the_env(reference):
    """CrossView datasets hold centre, left and right final views; the env's default keeps all of them."""
    env = gym.make("tvr_gym:TVR-CrossView-v0", source=str(reference), render_size=(48, 36))
    assert len(env.unwrapped.source) == 12
    problems = list(load_trance(reference))
    assert {p.final_view for p in problems} == {"left", "center", "right"}
    for k, problem in enumerate(problems):
        _, info = env.reset(seed=0, options={"index": k})
        assert info["final_view"] == problem.final_view


def test_bad_arguments_write_nothing(tmp_path, capsys):
    for extra, match in ((["--n", "-1"], "n: expected an integer"), (["--n", "2", "--workers", "0"], "workers")):
        assert _generate(tmp_path / "x", *extra) == 2
        assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
