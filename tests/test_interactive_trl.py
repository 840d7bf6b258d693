"""TVR-Interactive-v0 in TRL: the tool environment, the tool-calling chat template, and GRPO with both.

``TVRToolEnv`` is checked against a fresh ``TVRInteractive`` stepped by hand (rewards, feedback, images);
the tiny preset's chat template against the plain template it replaces and against the Qwen2.5
tool-calling template TRL ships; and two GRPO steps of TRL's own trainer, whose logged rewards must be
the totals of replaying the logged tool calls in a fresh environment.
"""

from __future__ import annotations

import inspect
import json
import math
import os

import numpy as np
import pytest

from tvr_gym.core.answer import format_item, parse_answer
from tvr_gym.core.spec import SPEC
from tvr_gym.envs.interactive import TVRInteractive
from tvr_gym.integrations.trl_env import (
    TVRToolEnv,
    chat_texts,
    environment_factory,
    interactive_rows,
    tool_processor,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SIZE = (64, 48)
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The tiny preset's template before it learned tools: without tools the new one must render the same."""


@pytest.fixture(scope="module")
def tool_model_dir(tmp_path_factory):
    """What the docs say to run: ``tvr-gym make-tiny-model DIR --tools``."""
    from tvr_gym.apps.cli import main

    out = tmp_path_factory.mktemp("tiny-tools") / "model"
    assert main(["make-tiny-model", str(out), "--tools"]) == 0
    return out


def test_make_tiny_model_tools_spells_every_tool_chat_text_and_the_plain_one_does_not(tool_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tvr_gym.apps.cli import main

    assert main(["make-tiny-model", str(tmp_path / "plain")]) == 0
    call = chat_texts()[-1]  # a <tool_call> as the template writes it
    for directory, unknown in ((tool_model_dir, False), (tmp_path / "plain", True)):
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        ids = tokenizer(call, add_special_tokens=False)["input_ids"]
        assert (tokenizer.unk_token_id in ids) is unknown
    tokenizer = AutoTokenizer.from_pretrained(tool_model_dir, local_files_only=True)
    for text in chat_texts():
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text[:80]


@pytest.fixture(scope="module")
def processor(tool_model_dir):
    from transformers import AutoProcessor

    return tool_processor(AutoProcessor.from_pretrained(tool_model_dir, local_files_only=True))


def _fresh(row: dict, **kwargs) -> tuple[TVRInteractive, dict, dict]:
    env = TVRInteractive(setting=row["setting"], render_size=SIZE, **kwargs)
    obs, info = env.reset(seed=row["seed"], options={"index": row["index"]})
    return env, obs, info


def _true_call(info: dict) -> dict:
    obj, attr, value = format_item(parse_answer(info["truth"]).steps[0]).split(".", 2)
    return {"object_id": int(obj), "attribute": attr, "value": value}


def _reply(result) -> tuple[str, np.ndarray | None]:
    """A tool result as (text, image array or None)."""
    if isinstance(result, str):
        return result, None
    images = [np.asarray(p["image"]) for p in result if p["type"] == "image"]
    texts = [p["text"] for p in result if p["type"] == "text"]
    assert len(images) == 1 and len(texts) == 1
    return texts[0], images[0]


# ---------------------------------------------------------------- the environment


def test_reset_shows_the_row_episode_as_target_current_and_a_tool_prompt():
    row = interactive_rows(3, setting="crossview", seed=5)[2]
    tool_env = TVRToolEnv(render_size=SIZE)
    content = tool_env.reset(**row, prompt="ignored")  # TRL passes the whole row
    _, obs, info = _fresh(row)
    assert [p["type"] for p in content] == ["image", "image", "text"]
    np.testing.assert_array_equal(np.asarray(content[0]["image"]), obs["target"])
    np.testing.assert_array_equal(np.asarray(content[1]["image"]), obs["current"])
    text = content[2]["text"]
    assert "apply(object_id, attribute, value)" in text and "call finish()" in text
    assert "<answer>" not in text and "Answer format" not in text and "answer done" not in text
    table = obs["prompt"][obs["prompt"].index("Initial objects") :]
    assert text.endswith(table)  # the problem's table, unchanged
    assert tool_env.info["key"] == info["key"] and tool_env.env.setting == "crossview"


def test_tool_turns_are_env_steps_and_get_reward_is_their_total():
    row = {"setting": "event", "seed": 1, "index": 3}
    tool_env = TVRToolEnv(render_size=SIZE)
    tool_env.reset(**row)
    env, _, info = _fresh(row)
    calls = [_true_call(info), {"object_id": 0, "attribute": "position", "value": "front.2"},
             {"object_id": 1, "attribute": "colour", "value": "pink"}]  # fmt: skip
    rewards = []
    for call in calls:
        text, image = _reply(tool_env.apply(**call))
        obs, reward, terminated, truncated, _ = env.step(f"{call['object_id']}.{call['attribute']}.{call['value']}")
        assert not (terminated or truncated)
        assert text == obs["feedback"]
        np.testing.assert_array_equal(image, obs["current"])
        rewards.append(reward)
    obs, reward, terminated, _, final = env.step("done")
    assert tool_env.finish() == obs["feedback"] and terminated
    rewards.append(reward)
    assert tool_env.rewards == pytest.approx(rewards) and len(set(rewards)) > 1
    assert tool_env.get_reward() == pytest.approx(sum(rewards)) and tool_env.ended_by == "finish"
    assert tool_env.info["interactive"] == final["interactive"] and tool_env.info["metrics"] == final["metrics"]
    assert tool_env.actions[-1] == "<answer>done</answer>" and len(tool_env.actions) == 4
    before = list(tool_env.rewards)
    assert "episode is over" in tool_env.apply(**calls[0]) and "episode is over" in tool_env.finish()
    assert tool_env.rewards == before and tool_env.get_reward() == pytest.approx(sum(rewards))  # nothing stepped


def test_a_rollout_that_stops_calling_tools_is_truncated_with_its_terminal_reward():
    row = {"setting": "basic", "seed": 2, "index": 0}
    tool_env = TVRToolEnv(render_size=SIZE)
    tool_env.reset(**row)
    env, _, info = _fresh(row)
    call = _true_call(info)
    tool_env.apply(**call)
    reward = env.step(f"{call['object_id']}.{call['attribute']}.{call['value']}")[1]
    terminal, final = env.truncate()
    assert tool_env.get_reward() == pytest.approx(reward + terminal)
    assert tool_env.get_reward() == pytest.approx(reward + terminal)  # asking twice ends nothing twice
    assert tool_env.ended_by == "rollout_end" and tool_env.info["outcome"] == "truncated"
    assert tool_env.info["metrics"] == final["metrics"]
    tool_env.reset(**row)  # a reused environment starts over
    assert tool_env.rewards == [] and not tool_env.done
    assert tool_env.get_reward() == pytest.approx(_fresh(row)[0].truncate()[0]) != pytest.approx(reward + terminal)


def test_the_image_budget_ends_the_episode_after_the_last_image_that_fits():
    row = {"setting": "event", "seed": 0, "index": 7}
    tool_env = TVRToolEnv(render_size=SIZE, max_images=4)  # target, first render, two replies
    tool_env.reset(**row)
    env, _, _ = _fresh(row)
    steps = ["3.color.red", "3.color.blue", "3.color.green"]
    replies = [tool_env.apply(*s.split(".", 2)) for s in steps]
    assert [isinstance(r, list) for r in replies] == [True, True, False]
    rewards = [env.step(s)[1] for s in steps[:2]]
    obs, reward, terminated, truncated, _ = env.step(steps[2])
    assert not (terminated or truncated)  # the environment would go on; the budget ends it
    assert replies[2].startswith(obs["feedback"]) and "No images left" in replies[2]
    terminal = env.truncate()[0]
    assert tool_env.get_reward() == pytest.approx(sum(rewards) + reward + terminal)
    assert tool_env.ended_by == "image_budget" and tool_env.info["outcome"] == "truncated"
    assert "episode is over" in tool_env.apply(1, "size", "small") and len(tool_env.rewards) == 3
    with pytest.raises(ValueError, match="max_images"):
        TVRToolEnv(max_images=1)


def test_the_turn_limit_ends_the_episode_and_adds_the_terminal_reward():
    row = {"setting": "event", "seed": 0, "index": 1}
    tool_env = TVRToolEnv(render_size=SIZE, max_turns=2)
    tool_env.reset(**row)
    env, _, _ = _fresh(row, max_turns=2)
    first = tool_env.apply(5, "shape", "cube")
    last = tool_env.apply(5, "shape", "sphere")
    assert isinstance(first, list) and isinstance(last, str) and "No turns left" in last
    expected = [env.step("5.shape.cube")[1], env.step("5.shape.sphere")[1]]
    assert tool_env.get_reward() == pytest.approx(sum(expected)) and tool_env.ended_by == "turn_limit"


def test_text_observations_show_tables_instead_of_images():
    row = {"setting": "basic", "seed": 0, "index": 2}
    tool_env = TVRToolEnv(render_size=SIZE, use_images=False)
    prompt = tool_env.reset(**row)
    assert isinstance(prompt, str) and "Target objects" in prompt and "Current objects" in prompt
    reply = tool_env.apply(2, "color", "cyan")
    env, _, _ = _fresh(row, obs_mode="text")
    obs = env.step("2.color.cyan")[0]
    assert reply.startswith(obs["feedback"] + "\n")
    assert reply[len(obs["feedback"]) + 1 :] == obs["prompt"][obs["prompt"].index("Current objects") :]
    with pytest.raises(ValueError, match="use_images"):
        TVRToolEnv(obs_mode="text")


def test_trl_finds_exactly_two_typed_tools_and_the_reward():
    from transformers.utils import get_json_schema

    # as GRPOTrainer lists them: public functions of the class, reset and get_reward apart
    public = {n for n, _ in inspect.getmembers(TVRToolEnv, predicate=inspect.isfunction) if not n.startswith("_")}
    assert public == {"reset", "get_reward", "apply", "finish"}
    schema = get_json_schema(TVRToolEnv(render_size=SIZE).apply)["function"]
    props = schema["parameters"]["properties"]
    assert props["object_id"]["type"] == "integer" and props["value"]["type"] == "string"
    assert props["attribute"]["enum"] == list(SPEC.attributes)
    assert schema["parameters"]["required"] == ["object_id", "attribute", "value"]
    assert get_json_schema(TVRToolEnv.finish)["function"]["parameters"]["properties"] == {}


def test_rows_factories_and_their_checks():
    rows = interactive_rows(4, setting="basic", seed=9, start=10)
    assert rows.column_names == ["setting", "seed", "index"] and rows["index"] == [10, 11, 12, 13]
    assert set(rows["setting"]) == {"basic"} and set(rows["seed"]) == {9}
    for bad in ({"n": 0}, {"n": 2, "setting": "hard"}, {"n": 2, "start": -1}):
        with pytest.raises(ValueError):
            interactive_rows(**bad)
    factory = environment_factory(setting="basic", render_size=SIZE)
    a, b = factory(), factory()
    assert a is not b and a.setting == "basic" and a.env_kwargs["render_size"] == SIZE
    with pytest.raises(ValueError, match="setting"):
        environment_factory(setting="hard")


# ---------------------------------------------------------------- the chat template


def _shapes() -> list[list[dict]]:
    image, text = {"type": "image"}, {"type": "text", "text": "object 2 is cyan"}
    return [
        [{"role": "user", "content": "object"}],
        [{"role": "user", "content": [image, image, text]}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": [image, text]}],
        [{"role": "system", "content": [text]}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
         {"role": "user", "content": [image, text]}, {"role": "assistant", "content": [text]}],
    ]  # fmt: skip


def test_without_tools_the_template_renders_as_before(processor):
    for messages in _shapes():
        for gen in (True, False):
            new = processor.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            old = processor.apply_chat_template(
                messages, add_generation_prompt=gen, tokenize=False, chat_template=PLAIN_TEMPLATE
            )
            assert new == old


def test_with_tools_the_template_renders_as_qwen25_does(processor):
    from trl.chat_template_utils import qwen2_5_chat_template  # Qwen2.5-Instruct's own template, shipped by TRL

    tool_env = TVRToolEnv(render_size=SIZE)
    call = {"type": "function", "function": {"name": "apply", "arguments": {"object_id": 2, "attribute": "color",
                                                                             "value": "cyan"}}}  # fmt: skip
    done = {"type": "function", "function": {"name": "finish", "arguments": {}}}
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Change the scene."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "apply", "content": "applied 2.color.cyan. Turn 1 of 5."},
        {"role": "assistant", "content": "<think>two calls</think>", "tool_calls": [call, done]},
        {"role": "tool", "name": "apply", "content": "no change"},
        {"role": "tool", "name": "finish", "content": "done"},
        {"role": "assistant", "content": "Finished."},
    ]
    tools = [tool_env.apply, tool_env.finish]
    for gen in (True, False):
        ours = processor.apply_chat_template(messages, tools=tools, add_generation_prompt=gen, tokenize=False)
        qwen = processor.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=gen, tokenize=False, chat_template=qwen2_5_chat_template
        )
        assert ours == qwen
    assert '<tool_call>\n{"name": "apply", "arguments": {"object_id": 2, "attribute": "color"' in ours
    assert '"enum": ["color", "material", "position", "shape", "size"]' in ours


def test_trl_accepts_the_template_and_reads_tool_calls_back(processor):
    from trl.chat_template_utils import (
        is_chat_template_prefix_preserving,
        parse_response,
        qwen2_5_vl_chat_template,
        supports_tool_calling,
    )

    assert supports_tool_calling(processor) and is_chat_template_prefix_preserving(processor)
    tok = processor.tokenizer
    calls = [
        {"type": "function", "function": {"name": "apply", "arguments": {"object_id": 7, "attribute": "position",
                                                                          "value": "behind-left.2"}}},
        {"type": "function", "function": {"name": "finish", "arguments": {}}},
    ]  # fmt: skip
    prompt = [{"role": "user", "content": [{"type": "text", "text": "Change the scene."}]}]
    head = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(
        [
            *prompt,
            {"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>"}], "tool_calls": calls},
        ],
        tokenize=False,
    )
    assert full.startswith(head)
    completion = full[len(head) :].rstrip("\n")
    ids, prefix = tok(completion)["input_ids"], tok(head)["input_ids"]
    assert tok.unk_token_id not in ids
    tools = [TVRToolEnv.apply, TVRToolEnv.finish]
    parsed = parse_response(tok, ids, prefix=prefix, tools=tools)
    assert parsed["tool_calls"] == calls and parsed["content"] == "<think>x</think>"
    plain = parse_response(tok, tok("<think>a</think><answer>done</answer><|im_end|>")["input_ids"], prefix=prefix)
    assert plain == {"role": "assistant", "content": "<think>a</think><answer>done</answer>"}

    # the template Qwen2.5-VL ships cannot render tools; tool_processor swaps in ours
    from transformers import AutoProcessor

    other = AutoProcessor.from_pretrained(processor.tokenizer.name_or_path, local_files_only=True)
    other.chat_template = other.tokenizer.chat_template = qwen2_5_vl_chat_template
    assert not supports_tool_calling(other)
    assert supports_tool_calling(tool_processor(other)) and other.tokenizer.response_template is not None


def test_tool_processor_refuses_a_tokenizer_without_qwen_chat_tokens():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")), unk_token="<unk>"
    )
    with pytest.raises(ValueError, match="not a Qwen-style tokenizer"):
        tool_processor(tok)


# ---------------------------------------------------------------- GRPO in TRL


def _call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call><|im_end|>"


FIRST_TURNS = [
    _call("apply", object_id=2, attribute="color", value="cyan"),
    _call("apply", object_id=4, attribute="position", value="front.1"),
    _call("finish"),
    "<think></think><answer>done</answer><|im_end|>",  # no tool call: the rollout ends, get_reward truncates
]
"""Group member g opens with FIRST_TURNS[g]; after a tool reply it calls finish, then it stops."""


def _script(tok):
    """A logits processor that makes the model write the scripted turns (TRL generates with model.generate)."""
    from transformers import LogitsProcessor

    encode = lambda texts: [tok(t, add_special_tokens=False)["input_ids"] for t in texts]  # noqa: E731
    first, later, last = encode(FIRST_TURNS), encode([_call("finish")]), encode(["<|im_end|>"])
    head = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    starts = tok.convert_tokens_to_ids("<|im_start|>")

    class Script(LogitsProcessor):
        def __call__(self, input_ids, scores):
            for b, row in enumerate(input_ids.tolist()):
                at = max(i for i in range(len(row) - len(head) + 1) if row[i : i + len(head)] == head) + len(head)
                turn = (row.count(starts) - 3) // 2  # system, user, assistant; then a tool reply and an assistant
                said = row[at:]
                target = first[b % len(first)] if turn == 0 else later[0] if turn == 1 else last[0]
                assert said[: len(target)] == target[: len(said)], (turn, tok.decode(said))
                scores[b] = -math.inf  # a finished row (generate pads it) gets the end token
                scores[b, target[len(said)] if len(said) < len(target) else tok.eos_token_id] = 0.0
            return scores

    return Script()


def _replay(row: dict, completion: list[dict]) -> tuple[float, int]:
    """Play the logged tool calls in a fresh environment, checking every logged reply; (total reward, images)."""
    env, _, _ = _fresh(row)
    total, over, expected, images = 0.0, False, [], 0
    for message in completion:
        if message["role"] == "assistant":
            for call in message.get("tool_calls") or []:
                fn = call["function"]
                if over:
                    expected.append(None)
                    continue
                args = fn["arguments"]
                text = "done" if fn["name"] == "finish" else f"{args['object_id']}.{args['attribute']}.{args['value']}"
                obs, reward, terminated, truncated, _ = env.step(text)
                total += reward
                over = terminated or truncated
                expected.append((obs["feedback"], None if over else obs["current"]))
        elif message["role"] == "tool":
            text, image = _reply(message["content"])
            want = expected.pop(0)
            if want is None:
                assert "episode is over" in text
                continue
            assert text == want[0]
            if want[1] is None:
                assert image is None
            else:
                np.testing.assert_array_equal(image, want[1])
                images += 1
    assert expected == []
    if not over:
        total += env.truncate()[0]
    return total, images


def test_two_grpo_steps_in_trl_take_their_rewards_from_the_environment(tool_model_dir, processor, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, LogitsProcessorList, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    rows = interactive_rows(2, setting="event", seed=3)
    model = AutoModelForImageTextToText.from_pretrained(tool_model_dir, local_files_only=True)
    script = _script(processor.tokenizer)
    generate = model.generate
    model.generate = lambda *a, **kw: generate(*a, **kw, logits_processor=LogitsProcessorList([script]))
    forwards: list[tuple[bool, int, int]] = []

    def count_images(module, args, kwargs):
        grid = kwargs.get("image_grid_thw")
        forwards.append((torch.is_grad_enabled(), kwargs["input_ids"].shape[0], 0 if grid is None else len(grid)))

    model.register_forward_pre_hook(count_images, with_kwargs=True)
    before = model.lm_head.weight.detach().clone()
    steps: list[dict] = []
    logs: list[dict] = []
    holder: list = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            trainer_logs = holder[0]._logs
            steps.append({
                "prompts": list(trainer_logs["prompt"]), "completions": list(trainer_logs["completion"]),
                "rewards": list(trainer_logs["rewards"]["TVRToolEnv"]),
                "forwards": [f for f in forwards if f[0]],
            })  # fmt: skip
            forwards.clear()

        def on_log(self, args, state, control, logs=None, **kwargs):
            records.append(dict(logs or {}))

    records = logs
    config = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4, max_completion_length=512,
        learning_rate=1e-3, beta=0.0, max_steps=2, logging_steps=1, save_strategy="steps", save_steps=2,
        report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, args=config, train_dataset=rows, processing_class=processor,
        environment_factory=environment_factory(render_size=SIZE), callbacks=[Record()],
    )  # fmt: skip
    holder.append(trainer)
    trainer.train()

    assert trainer.state.global_step == 2 and len(steps) == 2
    seen_rows = set()
    for step in steps:
        assert len(step["completions"]) == len(step["rewards"]) == 4
        totals, shown = [], []
        for prompt, completion in zip(step["prompts"], step["completions"]):
            blocks = prompt[-1]["content"]
            text = " ".join(b["text"] for b in blocks if b["type"] == "text")
            matches = [r for r in rows if _fresh(r)[1]["prompt"].split("Initial objects")[1] in text]
            assert len(matches) == 1
            row = matches[0]
            seen_rows.add(row["index"])
            _, obs, _ = _fresh(row)
            prompt_images = [np.asarray(b["image"]) for b in blocks if b["type"] == "image"]
            assert len(prompt_images) == 2
            np.testing.assert_array_equal(prompt_images[0], obs["target"])
            np.testing.assert_array_equal(prompt_images[1], obs["current"])
            total, images = _replay(row, completion)
            totals.append(total)
            shown.append(2 + images)
        assert step["rewards"] == pytest.approx(totals, abs=1e-6)  # TRL's reward is the replayed episode's total
        assert sum(shown) in [n for _, _, n in step["forwards"]]  # every image reached the training forward
        assert sum(shown) > 8  # some rollouts applied a transformation and saw its render
    assert seen_rows == {0, 1}
    step_logs = [entry for entry in logs if "rewards/TVRToolEnv/mean" in entry]
    assert len(step_logs) == 2
    for entry, step in zip(step_logs, steps):
        assert entry["rewards/TVRToolEnv/mean"] == pytest.approx(np.mean(step["rewards"]), abs=1e-5)
        assert entry["tools/call_frequency"] > 0 and entry["tools/failure_frequency"] == 0
        assert math.isfinite(entry["loss"])
    assert any(entry["reward_std"] > 0 and entry["grad_norm"] > 0 for entry in step_logs)
    assert not torch.equal(before, model.lm_head.weight.detach())  # the policy moved
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").is_file()
