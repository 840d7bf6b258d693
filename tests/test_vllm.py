"""vLLM's CPU build serving the tiny Qwen2.5-VL preset as a real OpenAI-compatible server, evaluated by tvr-gym.

vLLM pins its own torch and transformers, so the server runs from its own venv: ``bash scripts/vllm_env.sh``
builds ``.venv-vllm`` (``$TVR_GYM_VLLM_PYTHON`` names another python). The checkpoint is built here by the main
venv's :func:`make_tiny_model`, so these tests also show that the preset is one vLLM can serve. ``--max-tokens``
is checked both on the served agent (the server's own counts) and on a local ``mllm:`` agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import pytest
from PIL import Image

from tvr_gym.apps.cli import main
from tvr_gym.core import chat

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("TVR_GYM_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
MODEL = "tiny"
ENV_ID = "TVR-CrossView-v0"
INTERACTIVE_ID = "TVR-Interactive-v0"
SIZE = (160, 120)
"""Real renders, small: the tiny processor gives each a few vision tokens whatever the size."""
CAP = 5
"""A ``--max-tokens`` that is also a bucket bound of vLLM's generation-token histogram."""
START_TIMEOUT_S = 600.0
"""vLLM's start-up takes 40 to 95 s on two cores; the bound only stops a hung server from hanging the run."""

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@dataclass(frozen=True)
class Server:
    url: str
    """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
    model_dir: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def _stop(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """End the server and every process it started (engine core, workers share its process group):
    SIGTERM for a clean shutdown, SIGKILL for whatever is left after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so that only live processes keep the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory) -> Server:
    """``python -m vllm.entrypoints.openai.api_server`` serving a fresh tiny checkpoint on 127.0.0.1."""
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"no vLLM venv at {VLLM_PYTHON}: `bash scripts/vllm_env.sh` builds it (or set TVR_GYM_VLLM_PYTHON)")
    from tvr_gym.agents.mllm.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("vllm")
    model_dir = make_tiny_model(root / "model", seed=0)
    port, log = _free_port(), root / "server.log"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")},
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default takes a large share of the machine's memory
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # pinning threads to cores fails in containers and under xdist
        "VLLM_NO_USAGE_STATS": "1",
    }
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode} while starting; log tail:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server was not ready within {START_TIMEOUT_S:.0f} s; log tail:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(1.0)
        yield Server(f"http://127.0.0.1:{port}/v1", model_dir, log)
    finally:
        _stop(proc)


def _hf_prompt_tokens(processor, obs, use_images: bool) -> tuple[int, str]:
    """What the checkpoint's own HF processor makes of the agent's message: token count and rendered text."""
    images = [Image.fromarray(a) for a in chat.images_of(obs, use_images)]
    text = processor.apply_chat_template(chat.messages(obs["prompt"], len(images)), add_generation_prompt=True)
    ids = processor(text=[text], images=images or None, return_tensors="pt")["input_ids"]
    return int(ids.shape[-1]), text


def _metrics(server: Server) -> dict[str, float]:
    """vLLM's Prometheus counters, by sample name and labels (what the server itself counted)."""
    with urllib.request.urlopen(server.url.removesuffix("/v1") + "/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    found = {}
    for line in lines:
        if line.startswith("vllm:"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def _metric(found: dict[str, float], name: str, le: str | None = None) -> float:
    """The one sample of ``name`` (the ``le`` bucket of a histogram), whatever its other labels."""
    hits = [v for k, v in found.items() if k.split("{")[0] == name and (le is None or f'le="{le}"' in k)]
    assert len(hits) == 1, (name, le, hits)
    return hits[0]


def test_a_served_model_is_evaluated_with_images_as_text_and_under_a_token_cap(vllm_server, tmp_path):
    """One test, so `pytest -n 2` starts one server (xdist's loadgroup does not group under pytest 9.2)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(vllm_server.model_dir, local_files_only=True)
    _images_reach_the_model_as_the_hf_processor_counts_them(vllm_server, processor)
    _text_observations_are_served_without_image_tokens(vllm_server, processor)
    _eval_max_tokens_reaches_the_server(vllm_server, tmp_path / "eval")
    _interactive_episodes_ask_one_request_per_turn_with_the_chat_so_far(vllm_server, processor)
    _interactive_eval_journals_every_turn(vllm_server, tmp_path / "interactive")


def _images_reach_the_model_as_the_hf_processor_counts_them(server: Server, processor) -> None:
    from tvr_gym.agents.evaluate import evaluate
    from tvr_gym.agents.openai_agent import OpenAIAgent

    agent = OpenAIAgent(MODEL, server.url)
    result = evaluate(agent, ENV_ID, 3, seed=0, env_kwargs={"render_size": SIZE}, progress=False, max_tokens=CAP)
    assert result.summary["overall"]["n"] == 3 and all(isinstance(r["answer"], str) for r in result.records)
    assert agent.max_tokens == 1024  # the cap held for the run only
    env = gym.make(ENV_ID, render_size=SIZE)
    assert len(agent.usage) == 3  # one episode at a time: the replies in seed order
    for seed, used in enumerate(agent.usage):
        obs, _ = env.reset(seed=seed)
        assert [image.shape for image in chat.images_of(obs)] == [(SIZE[1], SIZE[0], 3)] * 2
        with_images, _ = _hf_prompt_tokens(processor, obs, use_images=True)
        without, _ = _hf_prompt_tokens(processor, obs, use_images=False)
        assert used["prompt_tokens"] == with_images > without  # both images arrived and were tokenized as HF does
        assert 1 <= used["completion_tokens"] <= CAP


def _text_observations_are_served_without_image_tokens(server: Server, processor) -> None:
    from tvr_gym.agents.evaluate import evaluate
    from tvr_gym.agents.openai_agent import OpenAIAgent

    agent = OpenAIAgent(MODEL, server.url, use_images=False)
    result = evaluate(agent, ENV_ID, 2, seed=7, env_kwargs={"render_size": SIZE}, progress=False, max_tokens=CAP)
    assert result.summary["overall"]["n"] == 2
    env = gym.make(ENV_ID, render_size=SIZE, obs_mode="text")  # what evaluate made of the agent's obs_mode
    assert len(agent.usage) == 2
    for seed, used in zip((7, 8), agent.usage):
        obs, _ = env.reset(seed=seed)
        assert [part["type"] for part in agent.messages(obs)[0]["content"]] == ["text"]
        count, text = _hf_prompt_tokens(processor, obs, use_images=False)
        assert "<|image_pad|>" not in text and "<|vision_start|>" not in text
        assert used["prompt_tokens"] == count
        assert 1 <= used["completion_tokens"] <= CAP


def _eval_max_tokens_reaches_the_server(server: Server, out: Path) -> None:
    before = _metrics(server)
    assert main(["eval", "--agent", f"openai:{MODEL}@{server.url}", "--env", ENV_ID, "--episodes", "2",
                 "--batch-size", "2", "--size", *map(str, SIZE), "--max-tokens", str(CAP), "--quiet",
                 "--out", str(out)]) == 0  # fmt: skip
    after = _metrics(server)

    def delta(name: str, le: str | None = None) -> float:
        return _metric(after, name, le) - _metric(before, name, le)

    assert delta("vllm:request_params_max_tokens_count") == 2
    assert delta("vllm:request_params_max_tokens_sum") == 2 * CAP  # the requests asked for CAP tokens
    assert delta("vllm:request_generation_tokens_bucket", le=f"{CAP:.1f}") == 2  # and got at most that
    assert json.loads((out / "eval.json").read_text())["max_tokens"] == CAP
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 2


def test_eval_max_tokens_caps_a_local_mllm_agent(tiny_dir, tmp_path):
    from tvr_gym.agents.mllm import MLLMAgent

    out = tmp_path / "eval"
    assert main(["eval", "--agent", f"mllm:{tiny_dir}", "--obs-mode", "image", "--env", ENV_ID, "--episodes", "3",
                 "--size", "64", "48", "--max-tokens", "2", "--quiet", "--out", str(out)]) == 0  # fmt: skip
    answers = [json.loads(line)["answer"] for line in (out / "episodes.jsonl").read_text().splitlines()]
    agent = MLLMAgent.from_pretrained(tiny_dir, device="cpu", obs_mode="image")
    env = gym.make(ENV_ID, render_size=(64, 48))
    observations = [env.reset(seed=seed)[0] for seed in range(3)]
    assert answers == agent.act_batch(observations, max_new_tokens=2)  # greedy: the same two tokens each
    assert answers != agent.act_batch(observations, max_new_tokens=12)  # and the cap cut them short


def test_bad_max_tokens_are_clear_errors(tmp_path, capsys):
    from tvr_gym.agents import RandomAgent
    from tvr_gym.agents.evaluate import evaluate

    for bad in ("0", "-3"):
        assert main(["eval", "--episodes", "1", "--max-tokens", bad, "--quiet", "--out", str(tmp_path / "e")]) == 2
        assert f"--max-tokens: expected an integer >= 1, got {bad}" in capsys.readouterr().err
    assert main(["eval", "--agent", "random", "--episodes", "1", "--max-tokens", "8", "--quiet",
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    assert "generates no tokens; the cap is for mllm: and openai: agents" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_tokens: expected an integer >= 1, got 2.5"):
        evaluate(RandomAgent(), ENV_ID, 1, progress=False, max_tokens=2.5)
    with pytest.raises(SystemExit):  # argparse: not an integer
        main(["eval", "--max-tokens", "many"])
    assert "argument --max-tokens: invalid int value: 'many'" in capsys.readouterr().err


def _interactive_episodes_ask_one_request_per_turn_with_the_chat_so_far(server: Server, processor) -> None:
    """Each turn of a served model's episode is one request holding the whole chat so far, with every
    image of the window: the server's prompt tokens equal the HF processor's count of that chat."""
    from tvr_gym.agents.interactive import play_chats
    from tvr_gym.agents.openai_agent import OpenAIAgent

    agent = OpenAIAgent(MODEL, server.url, max_tokens=CAP)
    kwargs = {"render_size": SIZE, "setting": "basic", "renderer": "numpy"}
    (record,) = play_chats(agent, [gym.make(INTERACTIVE_ID, **kwargs)], [11])
    assert len(agent.usage) == sum(t["action"] is not None for t in record["turns"]) >= 2
    env = gym.make(INTERACTIVE_ID, **kwargs)
    obs, _ = env.reset(seed=11)
    prompt, target, first, history = obs["prompt"], obs["target"], obs["current"], []
    for turn, used in zip(record["turns"], agent.usage):
        messages, images = chat.interactive_messages(prompt, target, first, history)
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        ids = processor(text=[text], images=[Image.fromarray(a) for a in images], return_tensors="pt")["input_ids"]
        assert used["prompt_tokens"] == int(ids.shape[-1])
        obs, *_ = env.step(turn["action"])
        assert obs["feedback"] == turn["feedback"]
        history.append(chat.Exchange(turn["action"], obs["feedback"], obs["current"]))


def _interactive_eval_journals_every_turn(server: Server, out: Path) -> None:
    before = _metrics(server)
    assert main(["eval", "--agent", f"openai:{MODEL}@{server.url}", "--env", INTERACTIVE_ID, "--episodes", "2",
                 "--batch-size", "2", "--size", *map(str, SIZE), "--max-tokens", str(CAP), "--setting", "basic",
                 "--renderer", "numpy", "--quiet", "--out", str(out)]) == 0  # fmt: skip
    requests = _metric(_metrics(server), "vllm:request_params_max_tokens_count") - _metric(
        before, "vllm:request_params_max_tokens_count"
    )
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [0, 1]
    assert requests == sum(t["action"] is not None for r in records for t in r["turns"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["interactive"]) >= {"success", "misplaced", "fixed_strict", "turns", "return"}
