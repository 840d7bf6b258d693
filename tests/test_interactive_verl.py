"""The verl agent loop for TVR-Interactive-v0 without verl: a scripted server, a real (tiny) Qwen2.5-VL processor.

Every expectation comes from outside the loop: rewards from stepping the environment directly, token
layouts from the server's own outputs and the processor, images from the environment's renders.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from tvr_gym.answer import format_item
from tvr_gym.integrations import verl_agent
from tvr_gym.integrations.verl_agent import (
    AGENT_NAME,
    EXTRA_KEYS,
    EpisodeSpec,
    TVRInteractiveAgentLoop,
    episode_rows,
    export_parquet,
)

SIZE = [56, 42]
ENV_KWARGS = {"render_size": SIZE, "renderer": "numpy"}
"""In-process tests render with numpy: a gl context works only on the thread that made it, and other
tests of this process may have made it on the main thread (see ``test_gl_renders_on_the_env_thread``)."""
SETTING = "event"
SEED = 5
REPO = Path(__file__).resolve().parents[1]
FEEDBACK_WORDS = (
    "applied illegal moves object off the grid would overlap no change leaves the scene as it looks done "
    "Turn of No turns left unreadable user system assistant"
)


# ---------------------------------------------------------------- fixtures: a processor, a scripted server, rows


@pytest.fixture(scope="module")
def processor():
    if verl_agent.HAVE_VERL:  # the loop then runs on verl's own base class, which needs verl's runtime
        pytest.skip("drives the loop on tvr_gym's stand-in for verl's AgentLoopBase; verl is installed")
    pytest.importorskip("transformers")
    from tvr_gym.agents.mllm.tiny import build_vocab, make_processor, make_tokenizer, prompt_words

    return make_processor(make_tokenizer(build_vocab([" ".join(prompt_words()), FEEDBACK_WORDS])))


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    pytest.importorskip("datasets")
    out = tmp_path_factory.mktemp("verl-interactive")
    export_parquet(out, 6, seed=SEED, setting=SETTING, split="train", **ENV_KWARGS)
    export_parquet(out / "again", 2, seed=SEED, start=3, setting=SETTING, split="train", **ENV_KWARGS)
    return out


def load_rows(path: Path) -> list[dict]:
    """Rows as verl's RLHFDataset hands them to an agent loop (rl_dataset.py:158, 285-362, verl b178a3cd)."""
    import datasets

    frame = datasets.load_dataset("parquet", data_files=str(path))["train"]
    rows = []
    for k in range(len(frame)):
        row = dict(frame[k])
        messages, images = row["prompt"], row.pop("images") or []
        offset = 0
        for message in messages:
            if not images or not isinstance(message["content"], str):
                continue
            content = []
            for segment in (s for s in re.split("(<image>)", message["content"]) if s):
                if segment == "<image>":
                    content.append({"type": "image", "image": images[offset].convert("RGB")})
                    offset += 1
                else:
                    content.append({"type": "text", "text": segment})
            message["content"] = content
        assert offset == len(images)
        row["raw_prompt"] = messages
        extra = row.get("extra_info") or {}
        row["index"] = extra.get("index", 0)
        row["tools_kwargs"] = extra.get("tools_kwargs", {})
        row["interaction_kwargs"] = extra.get("interaction_kwargs", {})
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def rows(parquet_dir):
    return load_rows(parquet_dir / "train.parquet")


@dataclass
class Out:
    token_ids: list[int]
    log_probs: list[float] | None = None
    num_preempted: int | None = None
    routed_experts: object = None


class ScriptedServer:
    """verl's AsyncLLMServerManager.generate signature (agent_loop.py:95-103): a script of texts, each + EOS."""

    def __init__(self, tokenizer, texts, logprob=-0.5):
        self.tokenizer, self.texts, self.logprob = tokenizer, list(texts), logprob
        self.calls: list[dict] = []
        self.outputs: list[list[int]] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None):
        self.calls.append(
            {"request_id": request_id, "prompt_ids": list(prompt_ids), "images": list(image_data or []),
             "params": dict(sampling_params)}
        )  # fmt: skip
        await asyncio.sleep(0)
        text = self.texts[len(self.calls) - 1]
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        ids = ids[: sampling_params["max_tokens"]]
        self.outputs.append(ids)
        return Out(ids, [self.logprob] * len(ids), num_preempted=0)


def make_loop(processor, server, response_length=4096, prompt_length=4096, **kwargs):
    rollout = SimpleNamespace(prompt_length=prompt_length, response_length=response_length)
    trainer_config = SimpleNamespace(config=SimpleNamespace(actor_rollout_ref=SimpleNamespace(rollout=rollout)))
    return TVRInteractiveAgentLoop(
        trainer_config, server, processor.tokenizer, processor,
        dataset_cls=None, dataset_config=SimpleNamespace(config={}), name=AGENT_NAME, **kwargs,
    )  # fmt: skip


def run(loop, row, **params):
    return asyncio.run(loop.run({"temperature": 1.0, **params}, **row))


def reference(row, actions, cut_after=None):
    """Step a fresh environment of the row: rewards, feedbacks, renders (truncated after ``cut_after`` turns).

    Its renders are its own (``cache_size=0``), never the loop's from the process's render cache."""
    spec = row["interaction_kwargs"]
    env = gym.make("TVR-Interactive-v0", setting=spec["setting"], cache_size=0, **json.loads(spec["env_kwargs"]))
    obs, _ = env.reset(seed=spec["seed"], options={"index": spec["index"]})
    first = obs
    rewards, feedbacks, renders = [], [], []
    for k, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        feedbacks.append(obs["feedback"])
        renders.append(obs["current"])
        if terminated or truncated:
            break
        if cut_after is not None and k + 1 == cut_after:
            terminal, info = env.unwrapped.truncate()
            rewards[-1] += terminal
            break
    return first, rewards, feedbacks, renders, info


def truth_actions(row) -> list[str]:
    spec = EpisodeSpec.from_row(row)
    env, _, _ = spec.start()
    return [f"<answer>{format_item(s)}</answer>" for s in env.unwrapped.problem.transformations] + ["done"]


def token_id(processor, token: str) -> int:
    return processor.tokenizer.convert_tokens_to_ids(token)


def image_pads(processor, images) -> int:
    """Image tokens the processor spends on ``images`` (grid cells merged 2 x 2)."""
    grid = processor.image_processor(images=images, return_tensors="np")["image_grid_thw"]
    return int(sum(int(np.prod(g)) for g in grid) // processor.image_processor.merge_size**2)


# ---------------------------------------------------------------- the dataset


def test_rows_carry_the_episode_and_its_first_observation(rows):
    assert len(rows) == 6
    for i, row in enumerate(rows):
        spec = row["interaction_kwargs"]
        assert (spec["setting"], spec["seed"], spec["index"]) == (SETTING, SEED, i)
        assert row["agent_name"] == AGENT_NAME and row["extra_info"]["index"] == i
        env = gym.make("TVR-Interactive-v0", setting=SETTING, cache_size=0, **ENV_KWARGS)
        obs, info = env.reset(seed=SEED, options={"index": i})
        content = row["raw_prompt"][-1]["content"]
        assert [b["type"] for b in content] == ["image", "image", "text"]
        assert content[2]["text"] == obs["prompt"]
        assert np.array_equal(np.asarray(content[0]["image"]), obs["target"])
        assert np.array_equal(np.asarray(content[1]["image"]), obs["current"])
        assert row["extra_info"]["answer"] == info["truth"]
    assert len({r["raw_prompt"][-1]["content"][2]["text"] for r in rows}) > 1


def test_rows_reject_text_observations():
    with pytest.raises(ValueError, match="obs_mode"):
        next(episode_rows(1, obs_mode="text", **ENV_KWARGS))


# ---------------------------------------------------------------- one episode, the true steps then done


def test_true_steps_then_done(processor, rows):
    row = rows[2]
    actions = truth_actions(row)
    server = ScriptedServer(processor.tokenizer, actions)
    out = run(make_loop(processor, server), row)
    first, rewards, feedbacks, renders, info = reference(row, actions)

    # the reward: the sum of the environment's rewards, turn by turn
    assert len(server.calls) == len(actions) == len(rewards)
    assert out.extra_fields["turn_scores"] == pytest.approx(rewards)
    assert out.reward_score == pytest.approx(sum(rewards))
    assert out.extra_fields["reward_extra_info"]["success"] == 1.0
    assert out.extra_fields["reward_extra_info"]["acc"] == info["metrics"]["acc"] == 1.0
    assert tuple(out.extra_fields["reward_extra_info"]) == EXTRA_KEYS

    # the sequence: every call's prompt is a prefix of the final sequence; the model's tokens follow it, mask 1
    full = out.prompt_ids + out.response_ids
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
    n_prompt = len(out.prompt_ids)
    expected_mask = []
    for k, call in enumerate(server.calls):
        start = len(call["prompt_ids"])
        assert call["prompt_ids"] == full[:start]
        assert start - n_prompt == len(expected_mask)
        generated = server.outputs[k]
        assert full[start : start + len(generated)] == generated
        expected_mask += [1] * len(generated)
        reply_end = len(server.calls[k + 1]["prompt_ids"]) if k + 1 < len(server.calls) else len(full)
        expected_mask += [0] * (reply_end - start - len(generated))
        assert out.extra_fields["turn_ends"][k] == start - n_prompt + len(generated)
    assert out.response_mask == expected_mask
    assert sum(out.response_mask) == sum(len(o) for o in server.outputs)
    assert [lp for lp, m in zip(out.response_logprobs, out.response_mask) if m] == [-0.5] * sum(out.response_mask)
    assert all(lp == 0.0 for lp, m in zip(out.response_logprobs, out.response_mask) if not m)

    # each environment reply: a user turn with the new render's image block, then the feedback text
    tok = processor.tokenizer
    for k in range(len(server.calls) - 1):
        start = len(server.calls[k]["prompt_ids"]) + len(server.outputs[k])
        reply = full[start : len(server.calls[k + 1]["prompt_ids"])]
        pads = image_pads(processor, [renders[k]])
        assert tok.decode(reply) == (
            "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * pads + "<|vision_end|>"
            + feedbacks[k] + "<|im_end|>\n<|im_start|>assistant\n"
        )  # fmt: skip
    assert out.num_turns == 1 + len(actions) + (len(actions) - 1)
    assert out.multi_modal_data["images"] == server.calls[-1]["images"]


def test_images_per_turn_match_the_image_blocks(processor, rows):
    row = rows[1]
    actions = ["<answer>0.color.red</answer>", "<answer>1.size.large</answer>", "<answer>9.color.gray</answer>"]
    actions += ["done"]
    server = ScriptedServer(processor.tokenizer, actions)
    out = run(make_loop(processor, server), row)
    first, _, _, renders, _ = reference(row, actions)
    start, pad = token_id(processor, "<|vision_start|>"), token_id(processor, "<|image_pad|>")
    for k, call in enumerate(server.calls):
        ids, images = call["prompt_ids"], call["images"]
        assert len(images) == 2 + k
        assert ids.count(start) == len(images)
        assert ids.count(pad) == image_pads(processor, images)
        assert np.array_equal(np.asarray(images[0]), first["target"])
        assert np.array_equal(np.asarray(images[1]), first["current"])
        for j in range(k):
            assert np.array_equal(np.asarray(images[2 + j]), renders[j])
    final = out.prompt_ids + out.response_ids
    assert final.count(start) == len(out.multi_modal_data["images"]) == 2 + len(actions) - 1
    # the worker reprocesses the whole sequence with all its images (agent_loop.py:656-664): image k's block
    # holds as many pads as the processor gives image k
    runs = [len(list(group)) for token, group in itertools.groupby(final) if token == pad]
    assert runs == [image_pads(processor, [im]) for im in out.multi_modal_data["images"]]


def test_the_chat_follows_the_interactive_contract(processor, rows):
    from tvr_gym.chat import Exchange, interactive_messages

    row = rows[0]
    actions = ["<answer>3.material.metal</answer>", "<answer>3.material.metal</answer>", "done"]
    server = ScriptedServer(processor.tokenizer, actions)
    loop = make_loop(processor, server)
    run(loop, row)
    first, _, feedbacks, renders, _ = reference(row, actions)
    history = [Exchange(a, f, r) for a, f, r in zip(actions[:-1], feedbacks[:-1], renders[:-1])]
    chat, images = interactive_messages(first["prompt"], first["target"], first["current"], history, window=10)

    def shape(messages):
        return [
            (m["role"], [(b["type"], b.get("text")) for b in m["content"]] if isinstance(m["content"], list) else m)
            for m in messages
        ]

    got = loop.messages[:-1]  # the last assistant turn ("done") gets no reply
    assert shape(got) == shape(chat)
    assert loop.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "done"}]}
    assert len(images) == len(server.calls[-1]["images"])


# ---------------------------------------------------------------- limits end the episode before they are exceeded


@pytest.mark.parametrize("max_images", [2, 3, 4])
def test_image_budget_ends_the_episode_before_an_image_would_not_fit(processor, rows, max_images):
    row = rows[3]
    actions = ["<answer>0.color.red</answer>", "<answer>1.color.blue</answer>", "<answer>2.color.green</answer>"]
    actions += ["<answer>4.color.cyan</answer>", "done"]
    server = ScriptedServer(processor.tokenizer, actions)
    out = run(make_loop(processor, server, max_images=max_images), row)
    # the target and the first render, then one image per reply: max_images - 2 replies, one more turn than replies
    turns = max_images - 1
    _, rewards, _, _, info = reference(row, actions, cut_after=turns)
    assert len(server.calls) == turns
    assert [len(c["images"]) for c in server.calls] == list(range(2, max_images + 1))
    assert len(out.multi_modal_data["images"]) == max_images
    assert out.extra_fields["reward_extra_info"]["image_cut"] == 1.0
    assert out.extra_fields["reward_extra_info"]["length_cut"] == 0.0
    assert out.reward_score == pytest.approx(sum(rewards))
    assert out.extra_fields["turn_scores"] == pytest.approx(rewards)
    assert info["interactive"]["turns"] == turns
    state = json.loads(out.extra_fields["tvr_state"])
    assert state["done"] is True and state["turns"] == turns


def test_no_budget_plays_to_the_environment_s_turn_limit(processor, rows):
    row = rows[3]
    actions = ["<answer>0.color.red</answer>"] * 40
    server = ScriptedServer(processor.tokenizer, actions)
    out = run(make_loop(processor, server), row)
    limit = gym.make("TVR-Interactive-v0", setting=SETTING, **ENV_KWARGS)
    limit.reset(seed=SEED, options={"index": 3})
    assert len(server.calls) == limit.unwrapped.turn_limit
    _, rewards, _, _, _ = reference(row, actions)
    assert out.reward_score == pytest.approx(sum(rewards))
    assert out.extra_fields["reward_extra_info"]["image_cut"] == 0.0


def test_response_length_ends_the_episode_before_a_reply_would_not_fit(processor, rows):
    row = rows[4]
    actions = ["<answer>0.color.red</answer>", "<answer>1.color.blue</answer>", "done"]
    probe = ScriptedServer(processor.tokenizer, actions)
    full = run(make_loop(processor, probe), row)
    after_first_reply = len(probe.calls[1]["prompt_ids"]) - len(full.prompt_ids)
    # room for the first turn and its reply, but not for the second reply
    second_end = full.extra_fields["turn_ends"][1]
    limit = second_end + 1
    assert after_first_reply < limit
    server = ScriptedServer(processor.tokenizer, actions)
    out = run(make_loop(processor, server, response_length=limit), row)
    _, rewards, _, _, _ = reference(row, actions, cut_after=2)
    assert len(server.calls) == 2
    assert len(out.response_ids) == second_end <= limit
    assert out.extra_fields["reward_extra_info"]["length_cut"] == 1.0
    assert out.reward_score == pytest.approx(sum(rewards))
    assert server.calls[1]["params"]["max_tokens"] == limit - after_first_reply


@pytest.mark.parametrize("spare", [0, 1])
def test_response_length_boundary(processor, rows, spare):
    """A reply is appended only when a token of room is left after it (tool_agent_loop.py:360: ``>=`` ends)."""
    row = rows[4]
    actions = ["<answer>0.color.red</answer>", "<answer>1.color.blue</answer>", "done"]
    probe = ScriptedServer(processor.tokenizer, actions)
    full = run(make_loop(processor, probe), row)
    n_prompt = len(full.prompt_ids)
    second_end = len(probe.calls[1]["prompt_ids"]) + len(probe.outputs[1]) - n_prompt
    second_reply = len(probe.calls[2]["prompt_ids"]) - n_prompt - second_end
    server = ScriptedServer(processor.tokenizer, actions)
    out = run(make_loop(processor, server, response_length=second_end + second_reply + spare), row)
    if spare == 0:
        assert len(server.calls) == 2 and out.extra_fields["reward_extra_info"]["length_cut"] == 1.0
        assert len(out.response_ids) == second_end
    else:
        assert len(server.calls) == 3 and server.calls[2]["params"]["max_tokens"] == 1
        assert len(out.response_ids) == second_end + second_reply + 1
        assert out.response_mask[-1] == 1


def test_max_turn_tokens_caps_each_turn(processor, rows):
    server = ScriptedServer(processor.tokenizer, ["<answer>0.color.red</answer>", "done"])
    run(make_loop(processor, server, max_turn_tokens=3), rows[0])
    assert [c["params"]["max_tokens"] for c in server.calls] == [3, 3]
    assert all(len(o) <= 3 for o in server.outputs)


def test_sampling_params_are_not_mutated(processor, rows):
    params = {"temperature": 0.7, "top_p": 1.0}
    server = ScriptedServer(processor.tokenizer, ["done"])
    asyncio.run(make_loop(processor, server).run(params, **rows[0]))
    assert params == {"temperature": 0.7, "top_p": 1.0}
    assert server.calls[0]["params"]["temperature"] == 0.7


# ---------------------------------------------------------------- determinism and concurrency


def _summary(out):
    return (
        out.prompt_ids, out.response_ids, out.response_mask, out.reward_score, out.extra_fields["turn_scores"],
        [np.asarray(im).tobytes() for im in out.multi_modal_data["images"]],
    )  # fmt: skip


def test_same_setting_seed_index_gives_the_same_episode(processor, rows, parquet_dir):
    again = load_rows(parquet_dir / "again" / "train.parquet")  # rows 3 and 4, exported on their own
    assert again[0]["interaction_kwargs"] == rows[3]["interaction_kwargs"]
    actions = ["<answer>2.color.red</answer>", "<answer>5.size.small</answer>", "done"]
    outs = [run(make_loop(processor, ScriptedServer(processor.tokenizer, actions)), row) for row in (rows[3], again[0])]
    assert _summary(outs[0]) == _summary(outs[1])
    other = run(make_loop(processor, ScriptedServer(processor.tokenizer, actions)), rows[4])
    assert _summary(other)[0] != _summary(outs[0])[0]


def test_concurrent_episodes_run_the_environment_on_one_thread(processor, rows, monkeypatch):
    from tvr_gym.interactive import TVRInteractive

    threads = set()
    step = TVRInteractive.step

    def recording_step(self, action):
        threads.add(threading.current_thread().name)
        return step(self, action)

    monkeypatch.setattr(TVRInteractive, "step", recording_step)
    actions = ["<answer>0.color.red</answer>", "<answer>1.size.small</answer>", "done"]

    async def both():
        loops = [make_loop(processor, ScriptedServer(processor.tokenizer, actions)) for _ in range(4)]
        return await asyncio.gather(*(lp.run({}, **row) for lp, row in zip(loops, [rows[1], rows[2]] * 2)))

    outs = asyncio.run(both())
    assert len(threads) == 1 and threads.pop().startswith("tvr-env")
    alone = [run(make_loop(processor, ScriptedServer(processor.tokenizer, actions)), row) for row in rows[1:3]]
    assert _summary(outs[0]) == _summary(alone[0]) == _summary(outs[2])
    assert _summary(outs[1]) == _summary(alone[1]) == _summary(outs[3])


GL_BUILDER = """
import json, sys
import numpy as np
import gymnasium as gym
from tvr_gym.render import make_renderer
from tvr_gym.integrations.verl_agent import export_parquet
try:
    make_renderer("gl", size=(8, 8))
except RuntimeError:
    sys.exit(77)
out, actions = sys.argv[1], json.loads(sys.argv[2])
kwargs = {"render_size": [56, 42], "renderer": "gl"}
export_parquet(out, 2, seed=5, setting="event", split="train", **kwargs)
env = gym.make("TVR-Interactive-v0", setting="event", cache_size=0, **kwargs)
obs, _ = env.reset(seed=5, options={"index": 1})
renders, rewards = [obs["target"], obs["current"]], []
for a in actions:
    obs, r, term, trunc, _ = env.step(a)
    rewards.append(r)
    renders.append(obs["current"])
    if term or trunc:
        break
np.savez(out + "/reference.npz", renders=np.stack(renders), rewards=np.array(rewards))
"""

GL_WORKER = """
import asyncio, json, sys, threading
import numpy as np
sys.path.insert(0, sys.argv[3])
import test_interactive_verl as T
from tvr_gym.agents.mllm.tiny import build_vocab, make_processor, make_tokenizer, prompt_words
from tvr_gym.interactive import TVRInteractive
out, actions = sys.argv[1], json.loads(sys.argv[2])
threads = set()
step = TVRInteractive.step
def recording_step(self, action):
    threads.add(threading.current_thread().name)
    return step(self, action)
TVRInteractive.step = recording_step
processor = make_processor(make_tokenizer(build_vocab([" ".join(prompt_words()), T.FEEDBACK_WORDS])))
row = T.load_rows(out + "/train.parquet")[1]
server = T.ScriptedServer(processor.tokenizer, actions)
result = T.run(T.make_loop(processor, server), row)
images = np.stack([np.asarray(im) for im in server.calls[-1]["images"]])
np.savez(out + "/worker.npz", images=images, reward=np.array(result.reward_score), threads=np.array(sorted(threads)))
"""


def test_gl_renders_on_the_env_thread(tmp_path):
    """With gl, a worker process whose main thread never renders: every render is right (equal to a
    main-thread render in another process), and every step runs on the one environment thread."""
    import subprocess
    import sys

    actions = json.dumps(["<answer>0.color.red</answer>", "<answer>3.size.small</answer>", "done"])
    build = subprocess.run([sys.executable, "-c", GL_BUILDER, str(tmp_path), actions], capture_output=True, text=True)
    if build.returncode == 77:
        pytest.skip("gl renderer unavailable")
    assert build.returncode == 0, build.stderr[-3000:]
    work = subprocess.run(
        [sys.executable, "-c", GL_WORKER, str(tmp_path), actions, str(Path(__file__).parent)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert work.returncode == 0, work.stderr[-3000:]
    reference, worker = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "worker.npz")
    # the loop shows the target, the first render and one render per reply (not the last turn's)
    expected = reference["renders"][:-1]
    assert worker["images"].shape == expected.shape
    assert np.array_equal(worker["images"], expected)
    assert float(worker["reward"]) == pytest.approx(float(reference["rewards"].sum()))
    assert len(worker["threads"]) == 1 and str(worker["threads"][0]).startswith("tvr-env")


# ---------------------------------------------------------------- rows the loop refuses


def test_a_row_without_an_episode_is_refused(processor, rows):
    row = {k: v for k, v in rows[0].items() if k != "interaction_kwargs"}
    row["extra_info"] = {k: v for k, v in row["extra_info"].items() if k != "interaction_kwargs"}
    with pytest.raises(ValueError, match="interaction_kwargs"):
        run(make_loop(processor, ScriptedServer(processor.tokenizer, ["done"])), row)


def test_a_row_whose_prompt_is_not_its_episode_is_refused(processor, rows):
    row = dict(rows[0])
    row["interaction_kwargs"] = {**row["interaction_kwargs"], "index": 1}
    with pytest.raises(ValueError, match="prompt"):
        run(make_loop(processor, ScriptedServer(processor.tokenizer, ["done"])), row)


def test_the_episode_is_read_from_extra_info_too(processor, rows):
    row = {k: v for k, v in rows[2].items() if k != "interaction_kwargs"}
    server = ScriptedServer(processor.tokenizer, ["done"])
    out = run(make_loop(processor, server), row)
    _, rewards, _, _, _ = reference(rows[2], ["done"])
    assert out.reward_score == pytest.approx(sum(rewards))


def test_bad_loop_keywords_are_refused(processor):
    with pytest.raises(ValueError, match="max_images"):
        make_loop(processor, None, max_images=1)
    with pytest.raises(ValueError, match="max_turn_tokens"):
        make_loop(processor, None, max_turn_tokens=0)


# ---------------------------------------------------------------- the config


def test_the_agent_loop_config_names_this_loop():
    import importlib

    import yaml

    entries = yaml.safe_load((REPO / "docs/configs/verl_tvr_interactive.agent_loop.yaml").read_text())
    assert [e["name"] for e in entries] == [AGENT_NAME]
    module, _, name = entries[0]["_target_"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls is TVRInteractiveAgentLoop
    import inspect

    params = inspect.signature(TVRInteractiveAgentLoop.__init__).parameters
    assert set(entries[0]) - {"name", "_target_"} <= set(params)
    script = (REPO / "docs/configs/verl_tvr_interactive.sh").read_text()
    assert "verl_tvr_interactive.agent_loop.yaml" in script and f"default_agent_loop={AGENT_NAME}" in script
    limit = [line for line in script.splitlines() if line.strip().startswith("+actor_rollout_ref.rollout.limit_images")]
    assert len(limit) == 1
    limit = limit[0]
    assert f"={entries[0]['max_images']}" in limit


def test_with_verl_the_loop_subclasses_its_base_and_keeps_a_configured_entry(monkeypatch):
    """Under a stand-in verl: the class is an AgentLoopBase, and importing never replaces a configured entry."""
    import importlib.util
    import sys
    import types

    registry: dict = {}

    class Base:
        def __init__(self, trainer_config, server_manager, tokenizer, processor, dataset_cls, dataset_config, **kw):
            self.config = trainer_config.config

    def register(name):  # agent_loop.py:334-342
        def decorator(cls):
            registry[name] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
            return cls

        return decorator

    inner = types.ModuleType("verl.experimental.agent_loop.agent_loop")
    inner.AgentLoopBase, inner.AgentLoopOutput, inner.register = Base, SimpleNamespace, register
    inner._agent_loop_registry = registry
    package = types.ModuleType("verl.experimental.agent_loop")
    package.agent_loop = inner
    for name, module in [
        ("verl", types.ModuleType("verl")),
        ("verl.experimental", types.ModuleType("verl.experimental")),
        ("verl.experimental.agent_loop", package),
        ("verl.experimental.agent_loop.agent_loop", inner),
    ]:
        monkeypatch.setitem(sys.modules, name, module)

    def load():
        spec = importlib.util.spec_from_file_location("verl_agent_under_verl", verl_agent.__file__)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "verl_agent_under_verl", module)
        spec.loader.exec_module(module)
        return module

    configured = {"name": AGENT_NAME, "_target_": "x.Y", "max_images": 8}
    registry[AGENT_NAME] = dict(configured)
    module = load()
    assert module.HAVE_VERL and issubclass(module.TVRInteractiveAgentLoop, Base)
    assert registry == {AGENT_NAME: configured}
    registry.clear()
    module = load()
    assert registry == {AGENT_NAME: {"_target_": "verl_agent_under_verl.TVRInteractiveAgentLoop"}}


def test_imports_without_verl():
    try:
        import verl  # noqa: F401
    except ImportError:
        assert verl_agent.HAVE_VERL is False
    else:
        assert verl_agent.HAVE_VERL is True
