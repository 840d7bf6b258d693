"""Smoke tests of the ``tvr-gym`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tvr_gym.cli import build_parser, main
from tvr_gym.trance import load_trance


def test_eval_writes_summary_and_episodes(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--agent", "oracle", "--env", "TVR-Event-v0", "--episodes", "5", "--seed", "3",
               "--size", "32", "24", "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 5 and summary["overall"]["Acc"] == 1.0
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["seed"] for line in lines] == [3, 4, 5, 6, 7]
    assert "TVR metrics" in capsys.readouterr().out


def test_eval_bad_agent_is_a_clear_error(tmp_path, capsys):
    rc = main(["eval", "--agent", "genius", "--episodes", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "valid: random, oracle, noop" in capsys.readouterr().err


def test_show_writes_a_png(tmp_path, trance_dir):
    cases = (["--setting", "crossview", "--seed", "2", "--index", "1"], ["--trance", str(trance_dir), "--idx", "5"])
    for args in cases:
        path = tmp_path / f"show{len(args)}.png"
        assert main(["show", *args, "--size", "64", "48", "--out", str(path)]) == 0
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 64


def test_generate_writes_a_loadable_trance_dir(tmp_path):
    out = tmp_path / "data"
    assert main(["generate", "--setting", "crossview", "--n", "3", "--start", "10", "--seed", "1",
                 "--size", "40", "30", "--out", str(out), "--quiet"]) == 0
    problems = list(load_trance(out))
    assert [p.idx for p in problems] == [10, 11, 12]
    for p in problems:
        for phase, views in (("initial", ("center",)), ("final", ("left", "center", "right"))):
            for view in views:
                path = p.image_path(phase, view)
                assert path is not None
                assert np.asarray(Image.open(path)).shape == (30, 40, 3)
    again = tmp_path / "shard"
    assert main(["generate", "--setting", "crossview", "--n", "1", "--start", "11", "--seed", "1",
                 "--size", "40", "30", "--out", str(again), "--quiet"]) == 0
    assert next(iter(load_trance(again))).to_dict() == {**problems[1].to_dict()}


def test_train_lists_the_trainers():
    # A fresh process: the trainers import torch's triton, which must not follow this process's gl context.
    out = subprocess.run([sys.executable, "-m", "tvr_gym.cli", "train"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "grpo" in out.stdout and "ppo" in out.stdout


def test_bench_lists_benchmarks(capsys):
    assert main(["bench", "--list"]) == 0
    assert "bench_env" in capsys.readouterr().out.split()


def test_parser_has_every_command():
    parser = build_parser(with_trainers=False)
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert {"demo", "eval", "show", "generate", "export", "train", "bench"} <= set(commands)
