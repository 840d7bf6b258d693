"""Smoke tests of the ``tvr-gym`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tvr_gym.apps.cli import build_parser, main
from tvr_gym.core.trance import load_trance


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
    assert "valid: random, visible, oracle, noop" in capsys.readouterr().err


def test_show_writes_a_png(tmp_path, trance_dir):
    cases = (["--setting", "crossview", "--seed", "2", "--index", "1"], ["--trance", str(trance_dir), "--index", "5"])
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
    out = subprocess.run([sys.executable, "-m", "tvr_gym", "train"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "grpo" in out.stdout and "ppo" in out.stdout


def test_bench_lists_benchmarks(capsys):
    assert main(["bench", "--list"]) == 0
    assert "bench_env" in capsys.readouterr().out.split()


def test_parser_has_every_command():
    parser = build_parser(with_trainers=False)
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert {"demo", "eval", "show", "generate", "export", "train", "bench"} <= set(commands)


def test_eval_fails_before_running_when_out_is_unwritable(tmp_path, capsys, monkeypatch):
    import tvr_gym.apps.cli as cli

    built = []
    monkeypatch.setattr(cli, "make_agent", lambda *a, **k: built.append(1))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc = main(["eval", "--agent", "random", "--episodes", "50", "--out", str(blocker / "eval"), "--quiet"])
    assert rc == 2 and built == []  # no agent built, no episode run
    assert "--out: cannot write to" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "export"])
def test_an_unknown_env_is_a_clean_error_that_creates_nothing(tmp_path, capsys, command):
    out = tmp_path / "out"
    count = ["--episodes", "1"] if command == "eval" else ["--n", "1"]
    rc = main([command, "--env", "TVR-Nope-v0", *count, "--out", str(out), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "env: unknown id 'TVR-Nope-v0'; valid: TVR-Basic-v0" in err and "Traceback" not in err
    assert not out.exists()


def test_export_resumes_and_refuses_other_data(tmp_path, trance_dir, capsys):
    args = ["export", "--format", "trance", "--env", "TVR-Event-v0", "--seed", "2", "--size", "32", "24",
            "--out", str(tmp_path / "x"), "--quiet"]  # fmt: skip
    assert main([*args, "--n", "3"]) == 0
    first = (tmp_path / "x" / "data.jsonl").read_text()
    assert main([*args, "--n", "5"]) == 0
    lines = (tmp_path / "x" / "data.jsonl").read_text().splitlines()
    assert len(lines) == 5 and "\n".join(lines[:3]) + "\n" == first
    refused = ["export", "--format", "trance", "--env", "TVR-Event-v0", "--n", "1", "--out", str(trance_dir), "--quiet"]
    assert main(refused) == 2
    assert "holds no dataset.json" in capsys.readouterr().err


def test_every_env_config_keyword_is_a_flag_that_reaches_the_environment():
    """A keyword added to EnvConfig (with its flag) reaches eval and export as a flag, and back as itself."""
    import dataclasses

    from tvr_gym.apps.cliargs import env_kwargs
    from tvr_gym.core.options import EnvConfig

    flagged = {f.name: f.metadata["flag"] for f in dataclasses.fields(EnvConfig) if "flag" in f.metadata}
    assert set(flagged) >= {"source", "steps", "attributes", "render_size", "obs_mode", "cache_size"}
    values = {
        "--size": ["32", "24"], "--transformations": ["2"], "--attributes": ["color", "size"],
        "--final-views": ["left"], "--obs-mode": ["text"], "--cache-size": ["7"], "--max-visible": ["5"],
        "--renderer": ["numpy"], "--prompt-layout": ["compact"], "--cache-dir": ["c"], "--source": ["procedural"],
    }  # fmt: skip
    for command in (["eval", "--agent", "random"], ["export", "--n", "1", "--out", "x"]):
        argv = [*command, "--env", "TVR-CrossView-v0"]
        for field, flag in flagged.items():
            if field != "setting":  # the single-shot ids hold their setting
                argv += [flag, *values[flag]]
        kwargs = env_kwargs(build_parser(with_trainers=False).parse_args(argv))
        config, own = EnvConfig.split(kwargs)
        assert own == {} and set(kwargs) == set(flagged) - {"setting"}
        assert (config.render_size, config.steps, tuple(config.attributes)) == ((32, 24), 2, ("color", "size"))
        assert config.cache_size == 7 and config.episode.final_views == ("left",) and config.prompt_layout == "compact"
