"""The scale path: TRL's trainers on exports, served models through OpenAI-compatible endpoints, resumable evals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tvr_gym.apps.cli import main

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TRL_FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
            "--disable_tqdm", "true", "--learning_rate", "1e-3", "--seed", "0"]  # fmt: skip


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


# ---------------------------------------------------------------- TRL GRPO and SFT


def test_trl_grpo_trains_two_steps_with_images_on_an_export_and_logs_the_reward_terms(tiny_dir, tmp_path):
    from datasets import load_from_disk
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tvr_gym.agents.mllm.trl_train import TVRArguments, model_dir, train_rows
    from tvr_gym.data.export import export
    from tvr_gym.integrations import trl_reward

    export("hf", "TVR-CrossView-v0", 8, tmp_path / "data", seed=1, render_size=(64, 48), progress=False)
    assert "images" in load_from_disk(str(tmp_path / "data" / "train")).column_names
    tvr = TVRArguments(model=str(tiny_dir), env="TVR-CrossView-v0", dataset=str(tmp_path / "data"))
    rows = train_rows(tvr, tmp_path / "out")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir(tvr, tmp_path / "out"), local_files_only=True)
    seen_pixels = []
    model.register_forward_pre_hook(lambda m, a, kw: seen_pixels.append("pixel_values" in kw), with_kwargs=True)
    logs: list[dict] = []

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kwargs):
            logs.append(dict(kwargs.get("logs") or logs_ or {}))

    config = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        learning_rate=1e-3, beta=0.0, max_steps=2, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=trl_reward("star"), args=config, train_dataset=rows,
        processing_class=AutoProcessor.from_pretrained(tiny_dir, local_files_only=True), callbacks=[Logs()],
    )  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(seen_pixels)  # the images reached the model
    step_logs = [entry for entry in logs if "reward" in entry]
    assert len(step_logs) == 2
    for entry in step_logs:
        assert {"tvr/format", "tvr/pos", "tvr/pun_wrong", "tvr/pun_missing", "tvr/acc"} <= set(entry)
        terms = sum(entry[f"tvr/{t}"] for t in ("format", "pos", "pun_wrong", "pun_missing"))
        assert terms == pytest.approx(entry["reward"], abs=1e-5)  # the logged terms add up to TRL's reward


def test_the_trl_commands_train_and_their_models_evaluate(tmp_path, capsys):
    out = tmp_path / "grpo"
    assert main(["train", "trl-grpo", "--model", "tiny", "--env", "TVR-Basic-v0", "--obs_mode", "text", "--n", "8",
                 "--out", str(out), "--num_generations", "4", "--max_completion_length", "8",
                 *TRL_FAST]) == 0  # fmt: skip
    assert json.loads((out / "final" / "tvr_policy.json").read_text()) == {"use_images": False, "max_new_tokens": 8}
    sft = tmp_path / "sft"
    assert main(["train", "sft", "--model", str(out / "base"), "--dataset", str(out / "data"), "--obs_mode", "text",
                 "--out", str(sft), *TRL_FAST]) == 0  # fmt: skip
    for trained in (out / "final", sft / "final"):
        assert main(["eval", "--agent", f"mllm:{trained}", "--env", "TVR-Basic-v0", "--episodes", "2", "--quiet",
                     "--size", "32", "24", "--out", str(trained / "eval")]) == 0  # fmt: skip
        record = json.loads((trained / "eval" / "episodes.jsonl").read_text().splitlines()[0])
        assert isinstance(record["answer"], str)
        assert json.loads((trained / "eval" / "eval.json").read_text())["env_kwargs"]["obs_mode"] == "text"


def test_a_checkpoint_trained_elsewhere_needs_its_observation_mode(tiny_dir, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_dir, foreign)
    assert not (foreign / "tvr_policy.json").exists()
    args = ["eval", "--agent", f"mllm:{foreign}", "--env", "TVR-Basic-v0", "--episodes", "2", "--quiet",
            "--size", "32", "24", "--out", str(tmp_path / "e")]  # fmt: skip
    assert main(args) == 2
    assert "no tvr_policy.json" in capsys.readouterr().err
    assert main([*args, "--obs-mode", "text"]) == 0
    (foreign / "tvr_policy.json").write_text(json.dumps({"use_images": False, "max_new_tokens": 8}))
    assert main([*args, "--obs-mode", "image"]) == 2
    assert "trained on text observations, not image" in capsys.readouterr().err


# ---------------------------------------------------------------- resumable evaluation


def test_an_eval_killed_halfway_resumes_to_the_summary_of_an_uninterrupted_run(tmp_path):
    cmd = [sys.executable, "-m", "tvr_gym", "eval", "--agent", "random", "--env", "TVR-Event-v0",
           "--episodes", "60", "--size", "32", "24", "--quiet"]  # fmt: skip
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.DEVNULL)
    episodes = out / "episodes.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if episodes.is_file() and len(episodes.read_text().splitlines()) >= 10:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait() == -signal.SIGKILL
    done = len(episodes.read_text().splitlines())
    assert 10 <= done < 60 and not (out / "summary.json").exists()
    with episodes.open("a") as fh:
        fh.write('{"seed": 59, "n_st')  # torn by the kill
    assert main([*cmd[3:], "--out", str(out), "--resume"]) == 0
    assert subprocess.run([*cmd, "--out", str(tmp_path / "whole")], stdout=subprocess.DEVNULL).returncode == 0
    assert _summary(out) == _summary(tmp_path / "whole")
    assert episodes.read_text() == (tmp_path / "whole" / "episodes.jsonl").read_text()
    assert main([*cmd[3:], "--out", str(out), "--resume", "--seed", "5"]) == 2  # another evaluation: refused


# ---------------------------------------------------------------- OpenAI-compatible endpoints


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_tiny(tiny_dir):
    """``transformers serve`` running the tiny checkpoint on 127.0.0.1 (a real server, offline, on CPU)."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen(
        [str(exe), "serve", str(tiny_dir), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield f"{tiny_dir}@{url}/v1"
    proc.terminate()
    proc.wait(timeout=30)


def test_the_openai_agent_evaluates_a_served_model_with_both_images(served_tiny, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--agent", f"openai:{served_tiny}", "--env", "TVR-CrossView-v0", "--episodes", "4",
                 "--batch-size", "2", "--size", "64", "48", "--quiet", "--out", str(out)]) == 0  # fmt: skip
    assert _summary(out)["overall"]["n"] == 4
    from tvr_gym.agents.openai_agent import OpenAIAgent

    agent = OpenAIAgent.from_spec(served_tiny, max_tokens=4)
    import gymnasium as gym

    obs, _ = gym.make("TVR-CrossView-v0", render_size=(64, 48)).reset(seed=0)
    parts = agent.messages(obs)[0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    reply = agent.client.chat.completions.create(model=agent.model, messages=agent.messages(obs), max_tokens=4)
    text_only = OpenAIAgent.from_spec(served_tiny, use_images=False)
    alone = text_only.client.chat.completions.create(model=agent.model, messages=text_only.messages(obs), max_tokens=4)
    assert reply.usage.prompt_tokens > alone.usage.prompt_tokens  # the server read the two images
    answers = agent.act_batch([obs, obs, obs])
    assert len(answers) == 3 and len(set(answers)) == 1  # concurrent, greedy: the same answer


def test_an_unreachable_or_silent_server_is_a_clear_error(tmp_path, capsys):
    port = _free_port()
    rc = main(["eval", "--agent", f"openai:m@http://127.0.0.1:{port}/v1", "--episodes", "2", "--quiet",
               "--out", str(tmp_path / "e")])  # fmt: skip
    assert rc == 2
    assert "cannot reach the server" in capsys.readouterr().err
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    threading.Thread(target=lambda: [silent.accept() for _ in range(8)], daemon=True).start()
    from tvr_gym.agents.openai_agent import OpenAIAgent

    with pytest.raises(ConnectionError, match="cannot reach the server"):  # the timeout ends the wait
        OpenAIAgent("m", f"http://127.0.0.1:{silent.getsockname()[1]}/v1", timeout=0.5, max_retries=1)
    silent.close()


# ---------------------------------------------------------------- our trainer on two processes (gloo)


LAUNCHERS = {
    # accelerate starts several CPU processes through torch.distributed.run only with --multi_gpu: its --cpu
    # flag alone keeps one process unless an MPI hostfile is given
    "accelerate": lambda port: [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu",
                                "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                                "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "tvr_gym"],
    "torchrun": lambda port: [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2",
                              "--master_port", str(port), "-m", "tvr_gym"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_process_training_resumes_to_the_same_next_step(trance_dir, tmp_path, launcher):
    def run(out: Path, steps: int, *extra: str) -> list[dict]:
        cmd = [*LAUNCHERS[launcher](_free_port()), "train", "grpo", "--model", "tiny", "--env", "TVR-Basic-v0",
               "--source", str(trance_dir), "--steps", str(steps), "--batch-size", "1", "--group-size", "2",
               "--max-new-tokens", "4", "--mu", "2", "--beta", "0.04", "--out", str(out), "--device", "cpu",
               "--quiet", "--save-every", "0", "--eval-every", "0", *extra]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]

    full = run(tmp_path / "full", 3)
    part = run(tmp_path / "part", 2)
    state = tmp_path / "part" / "checkpoint-2" / "accelerate_state"
    assert sorted(p.name for p in state.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    resumed = run(tmp_path / "part", 3, "--resume")
    assert [h["step"] for h in resumed] == [1, 2, 3] and part[:2] == resumed[:2]
    for key in ("loss", "reward", "kl", "completion_len"):
        assert resumed[2][key] == pytest.approx(full[2][key], abs=1e-6), key
