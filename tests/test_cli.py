"""Smoke tests of the ``tvr-gym`` command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

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


# ---------------------------------------------------------------------------- bad input: one line, exit 2, nothing made

HUGE = "99999999999999999999"
BAD_INPUT = {
    "eval-seed": ["eval", "--seed", "-1", "--episodes", "1", "--out", "OUT"],
    "eval-gym-env": ["eval", "--env", "CartPole-v1", "--episodes", "1", "--out", "OUT"],
    "eval-interactive-baseline": ["eval", "--agent", "visible", "--env", "TVR-Interactive-v0", "--episodes", "1",
                                  "--out", "OUT"],  # fmt: skip
    "eval-agent": ["eval", "--agent", "nope", "--episodes", "1", "--out", "OUT"],
    "eval-mllm-missing": ["eval", "--agent", "mllm:/missing", "--episodes", "1", "--out", "OUT"],
    "eval-ppo-missing": ["eval", "--agent", "ppo:/missing", "--episodes", "1", "--out", "OUT"],
    "eval-episodes": ["eval", "--episodes", "-1", "--out", "OUT"],
    "eval-batch-size": ["eval", "--episodes", "1", "--batch-size", "0", "--out", "OUT"],
    "eval-source": ["eval", "--episodes", "1", "--source", "/missing", "--out", "OUT"],
    "eval-cache-dir-proc": ["eval", "--episodes", "1", "--cache-dir", "/proc/nope", "--out", "OUT"],
    "eval-cache-dir-file": ["eval", "--episodes", "1", "--cache-dir", "FILE/cache", "--out", "OUT"],
    "eval-out-file": ["eval", "--episodes", "1", "--out", "FILE/eval"],
    "export-cache-dir": ["export", "--n", "1", "--cache-dir", "/proc/nope", "--out", "OUT"],
    "demo-size": ["demo", "--size", "0", "0", "--episodes", "1", "--out", "OUT"],
    "show-suffix": ["show", "--out", "OUT.txt"],
    "show-no-suffix": ["show", "--out", "OUT"],
    "export-gym-env": ["export", "--env", "CartPole-v1", "--n", "1", "--out", "OUT"],
    **{
        f"export-interactive-{fmt}": ["export", "--format", fmt, "--env", "TVR-Interactive-v0", "--n", "1", "--out",
                                      "OUT"]
        for fmt in ("hf", "trance", "easyr1")
    },  # fmt: skip
}
"""Each case's argv; ``OUT`` and ``FILE`` (an existing plain file) lie in the test's empty working directory."""


@pytest.mark.parametrize("argv", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_on_stderr_exit_2_and_creates_nothing(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    rc = main([*argv, *(["--quiet"] if argv[0] not in ("show",) else [])])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"tvr-gym {argv[0]}: error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def _memory_cap() -> None:
    import resource

    cap = 1 << 30  # a command that grows without bound meets MemoryError here, not the machine's limit
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@pytest.mark.parametrize("command", ["generate", "export"])
def test_a_count_beyond_the_bound_is_refused_before_anything_is_made(tmp_path, command):
    argv = [sys.executable, "-m", "tvr_gym", command, "--n", HUGE, "--out", "OUT", "--quiet"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, preexec_fn=_memory_cap)
    assert done.returncode == 2
    assert done.stderr == f"tvr-gym {command}: error: --n: expected an integer in 0..1000000, got {HUGE}\n"
    assert list(tmp_path.iterdir()) == []


def test_export_of_the_interactive_env_writes_verl_rows(tmp_path, capsys):
    import pyarrow.parquet as pq

    assert main(["export", "--format", "verl", "--env", "TVR-Interactive-v0", "--n", "2", "--size", "32", "24",
                 "--out", str(tmp_path / "v"), "--quiet"]) == 0  # fmt: skip
    assert pq.read_table(tmp_path / "v" / "train.parquet").num_rows == 2


def test_an_openai_agent_without_the_api_extra_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openai", None)  # what `import openai` meets without the [api] extra
    out = tmp_path / "e"
    assert main(["eval", "--agent", "openai:m@http://127.0.0.1:9/v1", "--episodes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[api]'" in err and "Traceback" not in err
    assert not out.exists()


def test_a_cache_dir_that_can_be_made_is_accepted(tmp_path, capsys):
    cache = tmp_path / "deep" / "cache"
    assert main(["eval", "--episodes", "1", "--size", "32", "24", "--cache-dir", str(cache), "--out",
                 str(tmp_path / "e"), "--quiet"]) == 0  # fmt: skip
    assert (tmp_path / "e" / "summary.json").is_file()


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".bmp"])
def test_show_writes_the_format_its_suffix_names(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    assert main(["show", "--size", "32", "24", "--out", str(path)]) == 0
    with Image.open(path) as im:
        assert im.format == Image.registered_extensions()[suffix]


@pytest.mark.parametrize(
    ("trainer", "device", "message"),
    [("grpo", "tpu", "unknown device 'tpu'; valid: auto, cpu, cuda, mps"),
     ("ppo", "tpu", "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N, mps"),
     ("grpo", "cuda:1", "CUDA_VISIBLE_DEVICES=1"),
     ("ppo", "cuda:99", "cuda:99: this machine has")],
)  # fmt: skip
def test_train_refuses_a_device_it_cannot_use_before_anything_is_made(tmp_path, trainer, device, message):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    extra = ["--model", "tiny", "--steps", "1"] if trainer == "grpo" else ["--timesteps", "64"]
    # a fresh process: the trainers import torch's triton, which must not follow this process's gl context
    done = subprocess.run([sys.executable, "-m", "tvr_gym", "train", trainer, "--device", device, *extra,
                           "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "tvr-gym train: error: --device: " in done.stderr
    assert message in done.stderr
    assert not out.exists()


def test_generate_stopped_by_sigterm_keeps_its_samples_and_says_how_to_continue(tmp_path):
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "tvr_gym", "generate", "--n", "100000", "--size", "16", "12", "--out", str(out),
           "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((out / "image").glob("*-init.*"))) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.startswith("tvr-gym generate: interrupted (SIGTERM); ") and "Traceback" not in err
    assert "rerun the same command to resume" in err
    assert len(list(load_trance(out))) >= 1  # data.jsonl lists the finished samples
