"""The verl agent loop for TVR-Interactive-v0 on the real verl: its worker, its dataset, its token builder.

Runs in the verl venv (``make verl-env``; marker ``verl``). Every expectation comes from outside the
loop: rewards from stepping the environment directly, token layouts from the processor's chat template
and from verl's own continuous-token builder rendering the same messages, images from the renders.
The one test double is the LLM server, which returns fixed token ids (as in verl's own tests).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="the verl tests run in the verl venv: make verl-env (docs/integrations.md)")

from tvr_gym.core.answer import format_item  # noqa: E402
from tvr_gym.data.export import export  # noqa: E402
from tvr_gym.integrations import verl_agent  # noqa: E402
from tvr_gym.integrations.verl_agent import (  # noqa: E402
    AGENT_NAME,
    EXTRA_KEYS,
    EpisodeSpec,  # noqa: E402
    TVRInteractiveAgentLoop,
)

from verl_support import REPO, ScriptedServer, dataset, loop_config, make_loop, worker_for  # noqa: E402

SIZE = [56, 42]
ENV_KWARGS = {"render_size": SIZE, "renderer": "numpy"}
"""In-process tests render with numpy: a gl context works only on the thread that made it, and other
tests of this process may have made it on the main thread (see ``test_gl_renders_on_the_env_thread``)."""
SETTING = "event"
ENV_ID = "TVR-Interactive-v0"
SEED = 5
N_ROWS = 6


# ---------------------------------------------------------------- fixtures: a tiny checkpoint, verl's worker, rows


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl-interactive")
    export("verl", ENV_ID, N_ROWS, out, seed=SEED, setting=SETTING, progress=False, **ENV_KWARGS)
    export("verl", ENV_ID, 2, out / "again", seed=SEED, start=3, setting=SETTING, progress=False, **ENV_KWARGS)
    return out


@pytest.fixture(scope="module")
def worker(model_dir, parquet_dir):
    return worker_for(loop_config(model_dir, parquet_dir / "train.parquet"))


@pytest.fixture(scope="module")
def rows(worker, parquet_dir):
    """The rows as verl's RLHFDataset hands them to an agent loop."""
    data = dataset(worker.config, [parquet_dir / "train.parquet"], worker.tokenizer, worker.processor)
    return [data[i] for i in range(len(data))]


def run(worker, server, row, params=None, **entry):
    """One episode; the loop is made inside the event loop that runs it, as verl's worker makes it."""

    async def episode():
        loop = make_loop(worker, server, **entry)
        return await loop.run({"temperature": 1.0} if params is None else params, **row), loop

    return asyncio.run(episode())


def reference(row, actions, cut_after=None):
    """Step a fresh environment of the row: rewards, feedbacks, renders (truncated after ``cut_after`` turns).

    Its renders are its own (``cache_size=0``), never the loop's from the process's render cache."""
    spec = row["interaction_kwargs"]
    env = gym.make("TVR-Interactive-v0", setting=spec["setting"], cache_size=0, **json.loads(spec["env_kwargs"]))
    obs, _ = env.reset(seed=spec["seed"], options={"index": spec["index"]})
    first = obs
    rewards, feedbacks, renders = [], [], []
    info = {}
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


def token_id(worker, token: str) -> int:
    return worker.tokenizer.convert_tokens_to_ids(token)


def image_pads(worker, images) -> int:
    """Image tokens the processor spends on ``images`` (grid cells merged 2 x 2)."""
    processor = worker.processor
    grid = processor.image_processor(images=images, return_tensors="np")["image_grid_thw"]
    return int(sum(int(np.prod(g)) for g in grid) // processor.image_processor.merge_size**2)


def resized(worker, image):
    """An image as verl's dataset preprocessing (qwen_vl_utils) gives it to the processor."""
    from PIL import Image
    from qwen_vl_utils import fetch_image

    patch = worker.processor.image_processor.patch_size
    return fetch_image({"image": Image.fromarray(np.asarray(image))}, image_patch_size=patch)


# ---------------------------------------------------------------- the dataset, read by verl's RLHFDataset


def test_rlhf_dataset_keeps_every_row_and_its_first_observation(rows):
    assert len(rows) == N_ROWS
    for i, row in enumerate(rows):
        spec = row["interaction_kwargs"]
        assert (spec["setting"], spec["seed"], spec["index"]) == (SETTING, SEED, i)
        assert row["agent_name"] == AGENT_NAME and row["index"] == i
        env = gym.make("TVR-Interactive-v0", setting=SETTING, cache_size=0, **ENV_KWARGS)
        obs, info = env.reset(seed=SEED, options={"index": i})
        content = row["raw_prompt"][-1]["content"]
        assert [b["type"] for b in content] == ["image", "image", "text"]
        assert content[2]["text"] == obs["prompt"]
        assert np.array_equal(np.asarray(content[0]["image"]), obs["target"])
        assert np.array_equal(np.asarray(content[1]["image"]), obs["current"])
        assert row["extra_info"]["answer"] == info["truth"]
    assert len({r["raw_prompt"][-1]["content"][2]["text"] for r in rows}) > 1


def test_rows_reject_text_observations(tmp_path):
    with pytest.raises(ValueError, match="obs_mode"):
        export("verl", ENV_ID, 1, tmp_path / "text", obs_mode="text", progress=False, **ENV_KWARGS)
    assert not (tmp_path / "text").exists()


# ---------------------------------------------------------------- one episode, the true steps then done


def test_true_steps_then_done(worker, rows):
    row = rows[2]
    actions = truth_actions(row)
    server = ScriptedServer(worker.tokenizer, actions)
    out, _ = run(worker, server, row)
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

    # each environment reply: the turn separator after <|im_end|>, then a user turn with the new render's
    # image block and the feedback, then the next assistant header
    tok = worker.tokenizer
    for k in range(len(server.calls) - 1):
        start = len(server.calls[k]["prompt_ids"]) + len(server.outputs[k])
        assert full[start - 1] == token_id(worker, "<|im_end|>")
        reply = full[start : len(server.calls[k + 1]["prompt_ids"])]
        pads = image_pads(worker, [resized(worker, renders[k])])
        assert tok.decode(reply) == (
            "\n<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * pads + "<|vision_end|>"
            + feedbacks[k] + "<|im_end|>\n<|im_start|>assistant\n"
        )  # fmt: skip
    assert out.num_turns == 1 + len(actions) + (len(actions) - 1)
    assert out.multi_modal_data["images"] == server.calls[-1]["images"]


def test_tokens_equal_the_chat_template_and_verl_s_builder_on_the_same_messages(worker, rows):
    """Token by token: every call's prompt is what verl's own continuous-token builder renders from scratch
    for the chat so far, and the final sequence is the processor's chat template over the whole chat."""
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    row = rows[1]
    # each action opens with a tag: the tiny word-level tokenizer would fuse the template's "\n" with a leading
    # word ("\ndone" is one of its tokens), which a real Qwen tokenizer does not do
    actions = ["<answer>0.color.red</answer>", "<answer>1.size.large</answer>", "<answer>done</answer>"]
    server = ScriptedServer(worker.tokenizer, actions)
    out, loop = run(worker, server, row)
    assert out.extra_fields["reward_extra_info"]["turns"] == 3 and len(server.calls) == 3
    builder = create_continuous_token_builder(
        worker.tokenizer, hf_model_type="qwen2_5_vl", processor=worker.processor, chat_template_kwargs={},
        mm_processor_kwargs={},
    )  # fmt: skip
    messages = loop.messages
    # call k sees the row's prompt and k (assistant, user) pairs
    for k, call in enumerate(server.calls):
        chat = messages[: 1 + 2 * k]
        images = call["images"]
        assert builder.build_initial_tokens(chat, images=images) == call["prompt_ids"]
    full = out.prompt_ids + out.response_ids
    whole = builder.render_tokens_with_mm(messages, out.multi_modal_data["images"], add_generation_prompt=False)
    assert whole[-1] == worker.tokenizer.encode("\n", add_special_tokens=False)[0]  # the template's last "\n"
    assert full == whole[:-1]  # generation stops at <|im_end|>, before the template's "\n"


def test_images_per_turn_match_the_image_blocks(worker, rows):
    row = rows[1]
    actions = ["<answer>0.color.red</answer>", "<answer>1.size.large</answer>", "<answer>9.color.gray</answer>"]
    actions += ["done"]
    server = ScriptedServer(worker.tokenizer, actions)
    out, _ = run(worker, server, row)
    first, _, _, renders, _ = reference(row, actions)
    start, pad = token_id(worker, "<|vision_start|>"), token_id(worker, "<|image_pad|>")
    for k, call in enumerate(server.calls):
        ids, images = call["prompt_ids"], call["images"]
        assert len(images) == 2 + k
        assert ids.count(start) == len(images)
        assert ids.count(pad) == image_pads(worker, images)
        assert np.array_equal(np.asarray(images[0]), np.asarray(resized(worker, first["target"])))
        assert np.array_equal(np.asarray(images[1]), np.asarray(resized(worker, first["current"])))
        for j in range(k):
            assert np.array_equal(np.asarray(images[2 + j]), np.asarray(resized(worker, renders[j])))
    final = out.prompt_ids + out.response_ids
    assert final.count(start) == len(out.multi_modal_data["images"]) == 2 + len(actions) - 1
    # verl's worker reprocesses the whole sequence with all its images: image k's block holds as many pads
    # as the processor gives image k
    runs = [len(list(group)) for token, group in itertools.groupby(final) if token == pad]
    assert runs == [image_pads(worker, [im]) for im in out.multi_modal_data["images"]]


def test_the_chat_follows_the_interactive_contract(worker, rows):
    from tvr_gym.core.chat import Exchange, interactive_messages

    row = rows[0]
    actions = ["<answer>3.material.metal</answer>", "<answer>3.material.metal</answer>", "done"]
    server = ScriptedServer(worker.tokenizer, actions)
    _, loop = run(worker, server, row)
    first, _, feedbacks, renders, _ = reference(row, actions)
    history = [Exchange(a, f, r) for a, f, r in zip(actions[:-1], feedbacks[:-1], renders[:-1])]
    chat, images = interactive_messages(first["prompt"], first["target"], first["current"], history, window=10)

    def shape(messages):
        out = []
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            out.append((m["role"], [(b["type"], b.get("text")) for b in content]))
        return out

    got = loop.messages[:-1]  # the last assistant turn ("done") gets no reply
    assert shape(got) == shape(chat)
    assert loop.messages[-1] == {"role": "assistant", "content": "done"}
    assert len(images) == len(server.calls[-1]["images"])


# ---------------------------------------------------------------- a whole batch through verl's worker


def test_a_batch_runs_through_verl_s_worker_postprocessing(worker, rows):
    """``AgentLoopWorker.generate_sequences``: the loop from the YAML registry, verl's ``_agent_loop_postprocess``
    (padding, multimodal inputs, M-RoPE positions) and ``_postprocess`` (rm_scores, extra fields)."""
    from verl import DataProto
    from verl.utils.dataset.rl_dataset import collate_fn

    chosen = [rows[0], rows[2], rows[4]]
    scripts = [truth_actions(chosen[0]), ["<answer>0.color.red</answer>", "done"], ["done"]]
    # one server for the batch; each request gets the script of the row whose prompt (its object tables) it holds
    tables = [row["raw_prompt"][-1]["content"][-1]["text"][-300:] for row in chosen]
    texts = {}

    class BatchServer(ScriptedServer):
        def script(self, request_id, prompt_ids):
            if request_id not in texts:
                prompt = self.tokenizer.decode(prompt_ids)
                (k,) = [k for k, table in enumerate(tables) if table in prompt]
                texts[request_id] = scripts[k]
            return texts[request_id]

    server = BatchServer(worker.tokenizer, [])
    worker.llm_client = server
    try:
        batch = DataProto.from_single_dict(collate_fn(chosen))
        out = asyncio.run(worker.generate_sequences(batch))
    finally:
        worker.llm_client = None
    config = worker.config.actor_rollout_ref.rollout
    assert out.batch["prompts"].shape == (3, config.prompt_length)
    assert out.batch["responses"].shape == (3, config.response_length)
    assert out.batch["position_ids"].shape == (3, 4, config.prompt_length + config.response_length)
    for k, (row, script) in enumerate(zip(chosen, scripts)):
        _, rewards, _, _, info = reference(row, script)
        assert out.batch["rm_scores"][k].sum().item() == pytest.approx(sum(rewards))
        assert list(out.non_tensor_batch["turn_scores"][k]) == pytest.approx(rewards)
        assert out.non_tensor_batch["acc"][k] == info["metrics"]["acc"]
        n_images = 2 + len(script) - 1
        assert out.non_tensor_batch["multi_modal_inputs"][k]["image_grid_thw"].shape[0] == n_images
        # the score sits on the last response token
        length = int(out.batch["attention_mask"][k, config.prompt_length :].sum())
        assert out.batch["rm_scores"][k, length - 1].item() == pytest.approx(sum(rewards))
        assert int(out.batch["response_mask"][k].sum()) == sum(
            len(worker.tokenizer.encode(t, add_special_tokens=False)) + 1 for t in script
        )
    assert out.non_tensor_batch["success"].tolist() == [1.0, 0.0, 0.0]
    assert set(EXTRA_KEYS) <= set(out.meta_info["reward_extra_keys"])


# ---------------------------------------------------------------- limits end the episode before they are exceeded


@pytest.mark.parametrize("max_images", [2, 3, 4])
def test_image_budget_ends_the_episode_before_an_image_would_not_fit(worker, rows, max_images):
    row = rows[3]
    actions = ["<answer>0.color.red</answer>", "<answer>1.color.blue</answer>", "<answer>2.color.green</answer>"]
    actions += ["<answer>4.color.cyan</answer>", "done"]
    server = ScriptedServer(worker.tokenizer, actions)
    out, _ = run(worker, server, row, max_images=max_images)
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


def test_no_budget_plays_to_the_environment_s_turn_limit(worker, rows):
    row = rows[3]
    actions = ["<answer>0.color.red</answer>"] * 40
    server = ScriptedServer(worker.tokenizer, actions)
    out, _ = run(worker, server, row, max_images=None)
    limit = gym.make("TVR-Interactive-v0", setting=SETTING, **ENV_KWARGS)
    limit.reset(seed=SEED, options={"index": 3})
    assert len(server.calls) == limit.unwrapped.turn_limit
    _, rewards, _, _, _ = reference(row, actions)
    assert out.reward_score == pytest.approx(sum(rewards))
    assert out.extra_fields["reward_extra_info"]["image_cut"] == 0.0


def _with_response_length(model_dir, parquet_dir, response_length):
    return worker_for(loop_config(model_dir, parquet_dir / "train.parquet", response_length=response_length))


def test_response_length_ends_the_episode_before_a_reply_would_not_fit(worker, rows, model_dir, parquet_dir):
    row = rows[4]
    actions = ["<answer>0.color.red</answer>", "<answer>1.color.blue</answer>", "done"]
    probe = ScriptedServer(worker.tokenizer, actions)
    full, _ = run(worker, probe, row)
    after_first_reply = len(probe.calls[1]["prompt_ids"]) - len(full.prompt_ids)
    # room for the first turn and its reply, but not for the second reply
    second_end = full.extra_fields["turn_ends"][1]
    limit = second_end + 1
    assert after_first_reply < limit
    short = _with_response_length(model_dir, parquet_dir, limit)
    server = ScriptedServer(worker.tokenizer, actions)
    out, _ = run(short, server, row)
    _, rewards, _, _, _ = reference(row, actions, cut_after=2)
    assert len(server.calls) == 2
    assert len(out.response_ids) == second_end <= limit
    assert out.extra_fields["reward_extra_info"]["length_cut"] == 1.0
    assert out.reward_score == pytest.approx(sum(rewards))
    assert server.calls[1]["params"]["max_tokens"] == limit - after_first_reply


@pytest.mark.parametrize("spare", [0, 1])
def test_response_length_boundary(worker, rows, model_dir, parquet_dir, spare):
    """A reply is appended only when a token of room is left after it (``ToolAgentLoop``: ``>=`` ends)."""
    row = rows[4]
    actions = ["<answer>0.color.red</answer>", "<answer>1.color.blue</answer>", "done"]
    probe = ScriptedServer(worker.tokenizer, actions)
    full, _ = run(worker, probe, row)
    n_prompt = len(full.prompt_ids)
    second_end = len(probe.calls[1]["prompt_ids"]) + len(probe.outputs[1]) - n_prompt
    second_reply = len(probe.calls[2]["prompt_ids"]) - n_prompt - second_end
    short = _with_response_length(model_dir, parquet_dir, second_end + second_reply + spare)
    server = ScriptedServer(worker.tokenizer, actions)
    out, _ = run(short, server, row)
    if spare == 0:
        assert len(server.calls) == 2 and out.extra_fields["reward_extra_info"]["length_cut"] == 1.0
        assert len(out.response_ids) == second_end
    else:
        assert len(server.calls) == 3 and server.calls[2]["params"]["max_tokens"] == 1
        assert len(out.response_ids) == second_end + second_reply + 1
        assert out.response_mask[-1] == 1


def test_max_turn_tokens_caps_each_turn(worker, rows):
    server = ScriptedServer(worker.tokenizer, ["<answer>0.color.red</answer>", "done"])
    run(worker, server, rows[0], max_turn_tokens=3)
    assert [c["params"]["max_tokens"] for c in server.calls] == [3, 3]
    assert all(len(o) <= 3 for o in server.outputs)


def test_sampling_params_are_not_mutated(worker, rows):
    params = {"temperature": 0.7, "top_p": 1.0}
    server = ScriptedServer(worker.tokenizer, ["done"])
    run(worker, server, rows[0], params=params)
    assert params == {"temperature": 0.7, "top_p": 1.0}
    assert server.calls[0]["params"]["temperature"] == 0.7


# ---------------------------------------------------------------- determinism and concurrency


def _summary(out):
    return (
        out.prompt_ids, out.response_ids, out.response_mask, out.reward_score, out.extra_fields["turn_scores"],
        [np.asarray(im).tobytes() for im in out.multi_modal_data["images"]],
    )  # fmt: skip


def test_same_setting_seed_index_gives_the_same_episode(worker, rows, parquet_dir):
    again = dataset(worker.config, [parquet_dir / "again" / "train.parquet"], worker.tokenizer, worker.processor)
    again = [again[i] for i in range(len(again))]  # rows 3 and 4, exported on their own
    assert again[0]["interaction_kwargs"] == rows[3]["interaction_kwargs"]
    actions = ["<answer>2.color.red</answer>", "<answer>5.size.small</answer>", "done"]
    outs = [run(worker, ScriptedServer(worker.tokenizer, actions), row)[0] for row in (rows[3], again[0])]
    assert _summary(outs[0]) == _summary(outs[1])
    other, _ = run(worker, ScriptedServer(worker.tokenizer, actions), rows[4])
    assert _summary(other)[0] != _summary(outs[0])[0]


def test_concurrent_episodes_run_the_environment_on_one_thread(worker, rows, monkeypatch):
    from tvr_gym.envs.interactive import TVRInteractive

    threads = set()
    step = TVRInteractive.step

    def recording_step(self, action):
        threads.add(threading.current_thread().name)
        return step(self, action)

    monkeypatch.setattr(TVRInteractive, "step", recording_step)
    actions = ["<answer>0.color.red</answer>", "<answer>1.size.small</answer>", "done"]

    async def both():
        loops = [make_loop(worker, ScriptedServer(worker.tokenizer, actions)) for _ in range(4)]
        return await asyncio.gather(*(lp.run({}, **row) for lp, row in zip(loops, [rows[1], rows[2]] * 2)))

    outs = asyncio.run(both())
    assert len(threads) == 1 and threads.pop().startswith("tvr-env")
    alone = [run(worker, ScriptedServer(worker.tokenizer, actions), row)[0] for row in rows[1:3]]
    assert _summary(outs[0]) == _summary(alone[0]) == _summary(outs[2])
    assert _summary(outs[1]) == _summary(alone[1]) == _summary(outs[3])


GL_BUILDER = """
import json, sys
import numpy as np
import gymnasium as gym
from tvr_gym.render import make_renderer
from tvr_gym.data.export import export
try:
    make_renderer("gl", size=(8, 8))
except RuntimeError:
    sys.exit(77)
out, actions = sys.argv[1], json.loads(sys.argv[2])
kwargs = {"render_size": [56, 42], "renderer": "gl"}
export("verl", "TVR-Interactive-v0", 2, out, seed=5, setting="event", progress=False, **kwargs)
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
sys.path.insert(0, sys.argv[4])
import verl_support as S
from tvr_gym.envs.interactive import TVRInteractive
out, actions, model = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
threads = set()
step = TVRInteractive.step
def recording_step(self, action):
    threads.add(threading.current_thread().name)
    return step(self, action)
TVRInteractive.step = recording_step
worker = S.worker_for(S.loop_config(model, out + "/train.parquet"))
data = S.dataset(worker.config, [out + "/train.parquet"], worker.tokenizer, worker.processor)
server = S.ScriptedServer(worker.tokenizer, actions)
async def episode():
    return await S.make_loop(worker, server).run({}, **data[1])
result = asyncio.run(episode())
np.savez(out + "/worker.npz", n_images=np.array(len(server.calls[-1]["images"])),
         reward=np.array(result.reward_score), threads=np.array(sorted(threads)))
"""


def test_gl_renders_on_the_env_thread(tmp_path, model_dir):
    """With gl, a worker process whose main thread never renders: every step runs on the one environment
    thread, and the episode's rewards equal a main-thread run in another process."""
    import subprocess
    import sys

    actions = json.dumps(["<answer>0.color.red</answer>", "<answer>3.size.small</answer>", "done"])
    build = subprocess.run([sys.executable, "-c", GL_BUILDER, str(tmp_path), actions], capture_output=True, text=True)
    if build.returncode == 77:
        pytest.skip("gl renderer unavailable (Mesa EGL: libegl1 libegl-mesa0 libgl1-mesa-dri)")
    assert build.returncode == 0, build.stderr[-3000:]
    work = subprocess.run(
        [sys.executable, "-c", GL_WORKER, str(tmp_path), actions, str(model_dir), str(Path(__file__).parent)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert work.returncode == 0, work.stderr[-3000:]
    reference, worker = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "worker.npz")
    # the loop shows the target, the first render and one render per reply (not the last turn's)
    assert int(worker["n_images"]) == len(reference["renders"]) - 1
    assert float(worker["reward"]) == pytest.approx(float(reference["rewards"].sum()))
    assert len(worker["threads"]) == 1 and str(worker["threads"][0]).startswith("tvr-env")


# ---------------------------------------------------------------- rows the loop refuses


def test_a_row_without_an_episode_is_refused(worker, rows):
    row = {k: v for k, v in rows[0].items() if k != "interaction_kwargs"}
    row["extra_info"] = {k: v for k, v in row["extra_info"].items() if k != "interaction_kwargs"}
    with pytest.raises(ValueError, match="interaction_kwargs"):
        run(worker, ScriptedServer(worker.tokenizer, ["done"]), row)


def test_a_row_whose_prompt_is_not_its_episode_is_refused(worker, rows):
    row = dict(rows[0])
    row["interaction_kwargs"] = {**row["interaction_kwargs"], "index": 1}
    with pytest.raises(ValueError, match="prompt"):
        run(worker, ScriptedServer(worker.tokenizer, ["done"]), row)


def test_the_episode_is_read_from_extra_info_too(worker, rows):
    row = {k: v for k, v in rows[2].items() if k != "interaction_kwargs"}
    server = ScriptedServer(worker.tokenizer, ["done"])
    out, _ = run(worker, server, row)
    _, rewards, _, _, _ = reference(rows[2], ["done"])
    assert out.reward_score == pytest.approx(sum(rewards))


def test_bad_loop_keywords_are_refused(worker):
    from hydra.errors import InstantiationException

    # verl builds the loop with hydra.utils.instantiate, which wraps the loop's ValueError
    with pytest.raises(InstantiationException, match="max_images: expected an integer >= 2, got 1"):
        make_loop(worker, None, max_images=1)
    with pytest.raises(InstantiationException, match="max_turn_tokens"):
        make_loop(worker, None, max_turn_tokens=0)


# ---------------------------------------------------------------- the config and the registry


def test_the_agent_loop_config_names_this_loop():
    import importlib
    import inspect

    import yaml

    entries = yaml.safe_load((REPO / "docs/configs/verl_tvr_interactive.agent_loop.yaml").read_text())
    assert [e["name"] for e in entries] == [AGENT_NAME]
    module, _, name = entries[0]["_target_"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls is TVRInteractiveAgentLoop and issubclass(cls, verl.experimental.agent_loop.AgentLoopBase)
    params = inspect.signature(TVRInteractiveAgentLoop.__init__).parameters
    assert set(entries[0]) - {"name", "_target_"} <= set(params)
    script = (REPO / "docs/configs/verl_tvr_interactive.sh").read_text()
    assert "verl_tvr_interactive.agent_loop.yaml" in script and f"default_agent_loop={AGENT_NAME}" in script
    limit = [line for line in script.splitlines() if "actor_rollout_ref.rollout.limit_images" in line]
    assert len(limit) == 1 and f"={entries[0]['max_images']}" in limit[0]


def test_importing_never_replaces_a_configured_entry(monkeypatch):
    """verl's ``register`` writes a bare ``{_target_}``: the module registers its name only when no entry holds it."""
    import importlib.util
    import sys

    from verl.experimental.agent_loop import agent_loop

    registry: dict = {}
    monkeypatch.setattr(agent_loop, "_agent_loop_registry", registry)

    def load():
        spec = importlib.util.spec_from_file_location("verl_agent_again", verl_agent.__file__)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "verl_agent_again", module)
        spec.loader.exec_module(module)
        return module

    configured = {"name": AGENT_NAME, "_target_": "x.Y", "max_images": 8}
    registry[AGENT_NAME] = dict(configured)
    load()
    assert registry == {AGENT_NAME: configured}
    registry.clear()
    load()
    assert registry == {AGENT_NAME: {"_target_": "verl_agent_again.TVRInteractiveAgentLoop"}}
