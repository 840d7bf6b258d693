"""Solver demonstrations of ``TVR-Interactive-v0`` as multi-turn SFT data: hf chats for TRL, verl rows for its
multi-turn SFT dataset (tests/verl/test_demonstrations_verl.py loads those with verl itself)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk

from tvr_gym.apps.cli import main
from tvr_gym.core.answer import format_item, parse_answer
from tvr_gym.core.chat import count_images
from tvr_gym.data.demonstrations import demonstrations, turn_rows, turn_text
from tvr_gym.data.export import COLUMNS, export
from tvr_gym.envs.registration import INTERACTIVE_ID

KWARGS = {"setting": "event", "render_size": (64, 48), "renderer": "numpy"}


def _texts(message: dict) -> str:
    return "".join(block["text"] or "" for block in message["content"] if block["type"] == "text")


@pytest.fixture(scope="module")
def oracle_hf(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "hf"
    export("hf", INTERACTIVE_ID, 4, out, seed=2, progress=False, demonstrations="oracle", **KWARGS)
    return load_from_disk(str(out))["train"]


def test_oracle_demonstrations_say_the_true_steps_then_done(oracle_hf):
    assert set(oracle_hf.column_names) == set(COLUMNS["hf-demonstrations"])
    assert [r["index"] for r in oracle_hf] == [0, 1, 2, 3]
    for row in oracle_hf:
        truth = [format_item(step) for step in parse_answer(row["answer"]).steps]
        assistant = [_texts(m) for m in row["messages"] if m["role"] == "assistant"]
        assert assistant == [turn_text(s) for s in [*truth, "done"]]
        assert row["success"] and row["solver"] == "oracle" and row["n_steps"] == len(truth)
        assert row["messages"][-1]["role"] == "assistant"
        assert count_images(row["messages"]) == len(row["images"]) == 2 + len(truth)


def test_each_image_is_the_render_the_environment_showed_at_that_turn(oracle_hf):
    env = gym.make(INTERACTIVE_ID, **KWARGS)
    for row in oracle_hf:
        obs, _ = env.reset(seed=2, options={"index": row["index"]})
        shown, feedback = [obs["target"], obs["current"]], []
        replies = [m for m in row["messages"] if m["role"] == "user"][1:]
        for message in [m for m in row["messages"] if m["role"] == "assistant"][:-1]:
            obs, *_ = env.step(_texts(message))
            shown.append(obs["current"])
            feedback.append(obs["feedback"])
        assert [_texts(m) for m in replies] == feedback
        for image, expected in zip(row["images"], shown, strict=True):
            np.testing.assert_array_equal(np.asarray(image), expected)


def test_greedy_demonstrations_record_what_the_solver_did():
    demos = list(demonstrations(range(6), seed=4, solver="greedy", **KWARGS))
    env = gym.make(INTERACTIVE_ID, **KWARGS)
    for demo in demos:
        obs, _ = env.reset(seed=4, options={"index": demo.index})
        total = 0.0
        for message in [m for m in demo.messages if m["role"] == "assistant"]:
            obs, reward, terminated, truncated, info = env.step(message["content"][0]["text"])
            total += reward
        assert terminated or truncated
        assert demo.success == bool(info["interactive"]["success"])
        assert demo.episode_return == pytest.approx(total)
    assert sum(d.success for d in demos) >= 5  # greedy solves almost every Event problem


def test_turn_rows_ask_each_turn_with_the_chat_before_it_and_its_images(oracle_hf):
    row = oracle_hf[0]
    turns = turn_rows(row["messages"], row["images"])
    assistant = [m for m in row["messages"] if m["role"] == "assistant"]
    assert [t["completion"] for t in turns] == [[m] for m in assistant]
    for k, turn in enumerate(turns):
        assert turn["prompt"][-1]["role"] == "user" and len(turn["prompt"]) == 2 * k + 1
        assert len(turn["images"]) == count_images(turn["prompt"]) == 2 + k


def test_text_demonstrations_show_the_current_table_in_each_reply(tmp_path):
    out = tmp_path / "verl"
    export("verl", INTERACTIVE_ID, 2, out, progress=False, demonstrations="oracle", obs_mode="text", **KWARGS)
    frame = pd.read_parquet(out / "train.parquet")
    assert "images" not in frame.columns
    for messages in frame["messages"]:
        assert all("<image>" not in m["content"] for m in messages)
        replies = [m["content"] for m in messages if m["role"] == "user"][1:]
        assert replies and all("Current objects" in r for r in replies)
        assert "Target objects" in messages[0]["content"]


def test_verl_demonstrations_hold_one_placeholder_per_image(tmp_path):
    out = tmp_path / "verl"
    assert main(["export", "--format", "verl", "--env", INTERACTIVE_ID, "--demonstrations", "greedy", "--n", "2",
                 "--setting", "event", "--size", "64", "48", "--renderer", "numpy", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    frame = pd.read_parquet(out / "train.parquet")
    assert set(frame.columns) == set(COLUMNS["verl-demonstrations"])
    for messages, images, extra in zip(frame["messages"], frame["images"], frame["extra_info"]):
        assert sum(m["content"].count("<image>") for m in messages) == len(images)
        assert extra["solver"] == "greedy" and extra["env_id"] == INTERACTIVE_ID


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "hf", "--env", "TVR-Basic-v0", "--demonstrations", "oracle"], "demonstrations: solver"),
        (["--format", "skyrl", "--env", INTERACTIVE_ID, "--demonstrations", "oracle"], "demonstrations: solver"),
        (["--format", "hf", "--env", INTERACTIVE_ID], "--demonstrations oracle"),
    ],
)
def test_demonstrations_of_the_wrong_kind_are_one_line_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["export", *argv, "--n", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_trl_sft_on_demonstrations_trains_the_turns_and_the_model_plays(tiny_dir, tmp_path, torch_one_thread):
    """``tvr-gym train sft`` on an hf demonstration export: one row per turn, the images reach the model, and
    the result evaluates on the interactive env."""
    demos = tmp_path / "demos"
    assert main(["export", "--format", "hf", "--env", INTERACTIVE_ID, "--demonstrations", "oracle", "--n", "3",
                 "--setting", "basic", "--size", "64", "48", "--renderer", "numpy", "--out", str(demos),
                 "--quiet"]) == 0  # fmt: skip
    from tvr_gym.agents.mllm.trl_train import sft_rows

    rows = sft_rows(load_from_disk(str(demos))["train"])
    assert len(rows) == sum(1 for r in load_from_disk(str(demos))["train"] for m in r["messages"]
                            if m["role"] == "assistant")  # fmt: skip
    assert set(rows.column_names) == {"prompt", "completion", "images"}
    _trl_sft_sees_the_images_and_learns_only_the_turns(tiny_dir, rows, tmp_path / "api")
    run = tmp_path / "sft"
    assert main(["train", "sft", "--model", str(tiny_dir), "--env", INTERACTIVE_ID, "--dataset", str(demos),
                 "--out", str(run), "--max_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none",
                 "--save_strategy", "no", "--disable_tqdm", "true", "--learning_rate", "1e-3", "--seed", "0"]) == 0
    assert json.loads((run / "final" / "tvr_policy.json").read_text())["use_images"] is True
    assert main(["eval", "--agent", f"mllm:{run / 'final'}", "--env", INTERACTIVE_ID, "--episodes", "2",
                 "--setting", "basic", "--size", "64", "48", "--renderer", "numpy", "--max-tokens", "8", "--quiet",
                 "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["overall"]["n"] == 2 and "success" in summary["interactive"]


def _trl_sft_sees_the_images_and_learns_only_the_turns(tiny_dir, rows, out) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    seen: list[tuple[int, int]] = []  # (images in the batch, trained tokens)

    def record(module, args, kwargs):
        grid = kwargs.get("image_grid_thw")
        seen.append((0 if grid is None else len(grid), int((kwargs["labels"] != -100).sum())))

    model.register_forward_pre_hook(record, with_kwargs=True)
    config = SFTConfig(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, report_to="none",
                       save_strategy="no", disable_tqdm=True, use_cpu=True, bf16=False, seed=0, shuffle_dataset=False)
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    first_two = rows.select(range(2))
    assert len(batch["image_grid_thw"]) == sum(len(r["images"]) for r in first_two)  # every prompt image
    completion_tokens = sum(
        len(processor.tokenizer(r["completion"][0]["content"][0]["text"], add_special_tokens=False)["input_ids"])
        for r in first_two
    )
    trained = int((batch["labels"] != -100).sum())
    assert completion_tokens <= trained <= completion_tokens + 2 * 2  # the turns (and their end tokens) only
    trainer.train()
    assert seen and seen[0][0] == len(batch["image_grid_thw"])
