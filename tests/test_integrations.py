"""Exports for TRL, verl and EasyR1, and rewards in their call conventions: equal to env.step, row by row."""

from __future__ import annotations

import json
import random

import gymnasium as gym
import numpy as np
import pytest

from tvr_gym.core.answer import format_item, parse_answer
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS
from tvr_gym.data.export import COLUMNS, export
from tvr_gym.integrations import compute_score, easyr1_compute_score, problem_from_json, trl_reward

SIZE = (48, 36)
ENV = "TVR-CrossView-v0"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    for fmt in ("hf", "verl", "easyr1"):
        export(fmt, ENV, 12, out / fmt, seed=4, render_size=SIZE, progress=False)
    export("hf", "TVR-Basic-v0", 4, out / "hf-text", seed=3, obs_mode="text", render_size=SIZE, progress=False)
    return out


def perturbed(truth: str, rng: random.Random) -> str:
    """A nearby wrong (or sometimes right) answer: drop, swap, re-value, add, reorder, corrupt or unwrap."""
    steps = parse_answer(truth).steps
    items = [format_item(s) for s in steps]
    kind = rng.randrange(8)
    if kind == 0 and items:
        items.pop(rng.randrange(len(items)))
    elif kind == 1 and items:
        obj, attr, value = steps[k := rng.randrange(len(steps))]
        items[k] = format_item((rng.randrange(SPEC.n_objects), attr, value))
    elif kind == 2 and items:
        attr, value = rng.choice(PAIRS)
        items[rng.randrange(len(items))] = format_item((steps[0][0], attr, value))
    elif kind == 3:
        attr, value = rng.choice(PAIRS)
        items.insert(rng.randrange(len(items) + 1), format_item((rng.randrange(SPEC.n_objects), attr, value)))
    elif kind == 4:
        rng.shuffle(items)
        items = items + items[:1]
    elif kind == 5:
        return truth[: rng.randrange(len(truth))]
    elif kind == 6:
        return ", ".join(items)  # no tags: format 0, same items
    else:
        items = [i.replace(".", " . ") for i in items] + ["12.colour.pink"]
    return "<think>hm</think><answer>" + ", ".join(items) + "</answer>"


def _env_reward(env, seed: int, index: int, text: str) -> tuple[float, dict, dict]:
    env.reset(seed=seed, options={"index": index})
    _, reward, _, _, info = env.step(text)
    return reward, info["reward_terms"], info["metrics"]


@pytest.mark.parametrize("reward", ["star", "state", "sparse", "no_wrong_penalty"])
def test_the_hf_export_loads_and_trl_reward_equals_env_step(exports, reward):
    from datasets import load_from_disk

    rows = load_from_disk(str(exports / "hf"))["train"]
    assert set(rows.column_names) == set(COLUMNS["hf"])
    env = gym.make(ENV, render_size=SIZE, reward=reward)
    score = trl_reward(reward)
    logged: dict[str, list[float]] = {}
    rng = random.Random(0)
    checked = 0
    for row in rows:
        texts = [row["answer"], *(perturbed(row["answer"], rng) for _ in range(17))]
        conversational = [[{"role": "assistant", "content": t}] for t in texts]
        got = score(conversational, [row["problem"]] * len(texts),
                    log_metric=lambda k, v: logged.setdefault(k, []).append(v))  # fmt: skip
        assert got == score(texts, [row["problem"]] * len(texts))  # plain and conversational completions agree
        for text, value in zip(texts, got):
            assert value == _env_reward(env, row["seed"], row["index"], text)[0], text
            checked += 1
    assert checked >= 200
    expected = {"star": {"format", "pos", "pun_wrong", "pun_missing"}, "sparse": {"acc"}}.get(reward)
    assert {"tvr/acc"} | {f"tvr/{t}" for t in (expected or ())} <= set(logged)


def test_rows_are_the_episodes_of_env_reset(exports):
    from datasets import load_from_disk

    rows = load_from_disk(str(exports / "hf" / "train"))
    env = gym.make(ENV, render_size=SIZE)
    for row in rows.select(range(4)):
        obs, info = env.reset(seed=row["seed"], options={"index": row["index"]})
        assert json.loads(row["problem"]) == info["problem"] and row["answer"] == info["truth"]
        assert row["final_view"] == info["final_view"] and row["prompt"][0]["content"] == obs["prompt"]
        np.testing.assert_array_equal(np.asarray(row["images"][0]), obs["initial"])
        np.testing.assert_array_equal(np.asarray(row["images"][1]), obs["final"])
    assert {r["final_view"] for r in rows} == {"left", "center", "right"}
    assert [r["index"] for r in rows] == list(range(12))


def test_the_verl_parquet_reads_back_and_compute_score_equals_env_step(exports):
    import pandas as pd
    from datasets import load_dataset

    frame = pd.read_parquet(exports / "verl" / "train.parquet")
    assert set(frame.columns) == set(COLUMNS["verl"])
    loaded = load_dataset("parquet", data_files=str(exports / "verl" / "train.parquet"))["train"]
    env = gym.make(ENV, render_size=SIZE)
    rng = random.Random(1)
    for i, row in frame.iterrows():
        assert row["data_source"] == "tvr/crossview" and row["reward_model"]["style"] == "rule"
        content = row["prompt"][0]["content"]
        assert content.count("<image>") == len(row["images"]) == len(loaded[i]["images"]) == 2  # verl's assert
        assert content.startswith("<image><image>A scene holds")
        truth = row["extra_info"]["answer"]
        for text in [truth, *(perturbed(truth, rng) for _ in range(9))]:
            got = compute_score(row["data_source"], text, row["reward_model"]["ground_truth"], dict(row["extra_info"]))
            reward, terms, metrics = _env_reward(env, row["extra_info"]["seed"], row["extra_info"]["index"], text)
            assert got == {"score": reward, **terms, "acc": metrics["acc"]}
    state = compute_score("tvr/crossview", truth, row["reward_model"]["ground_truth"], reward="state", wrong=2.0)
    assert set(state) == {"score", "format", "correct", "wrong_change", "missing", "illegal", "unreadable", "acc"}


def test_the_easyr1_batch_scorer_equals_env_step(exports):
    import pandas as pd

    frame = pd.read_parquet(exports / "easyr1" / "train.parquet")
    assert set(frame.columns) == set(COLUMNS["easyr1"])
    env = gym.make(ENV, render_size=SIZE)
    rng = random.Random(2)
    inputs, expected = [], []
    for i, row in frame.iterrows():
        assert row["problem"].count("<image>") == len(row["images"]) == 2
        problem = problem_from_json(row["answer"])
        truth = "<think></think><answer>" + ", ".join(format_item(t) for t in problem.transformations) + "</answer>"
        for text in (truth, perturbed(truth, rng)):
            inputs.append({"response": text, "response_length": len(text), "ground_truth": row["answer"]})
            reward, terms, metrics = _env_reward(env, 4, i, text)
            expected.append({"overall": reward, **terms, "accuracy": metrics["acc"]})
    assert easyr1_compute_score(inputs) == expected
    import tvr_gym.integrations.easyr1 as module

    assert module.REWARD_TYPE == "batch"


def test_text_observations_export_no_images(exports):
    from datasets import load_from_disk

    rows = load_from_disk(str(exports / "hf-text" / "train"))
    assert "images" not in rows.column_names
    assert "Final objects" in rows[0]["prompt"][0]["content"]


def test_bad_export_arguments_write_nothing(tmp_path):
    for kwargs, match in (
        ({"fmt": "csv"}, "format: unknown value 'csv'; valid: hf, verl, easyr1, trance"),
        ({"env_id": "TVR-Nope-v0"}, "env: unknown id"),
        ({"n": -1}, "n: expected an integer >= 0"),
        ({"split": "../x"}, "split"),
        ({"render_size": (0, 0)}, "render_size"),
    ):
        args = {"fmt": "hf", "env_id": ENV, "n": 1, "out": tmp_path / "x", "progress": False, **kwargs}
        with pytest.raises(ValueError, match=match):
            export(args.pop("fmt"), args.pop("env_id"), args.pop("n"), args.pop("out"), **args)
    assert not (tmp_path / "x").exists()


def test_a_ground_truth_that_is_not_a_problem_is_a_clear_error():
    with pytest.raises(ValueError, match="not a TVR problem as JSON"):
        compute_score("tvr/basic", "0.color.red", "{not json")


@pytest.mark.parametrize("fmt", ["hf", "easyr1", "trance"])
def test_the_interactive_env_exports_only_as_its_loop_s_rows(fmt, tmp_path):
    with pytest.raises(ValueError, match="TVR-Interactive-v0 exports as verl"):
        export(fmt, "TVR-Interactive-v0", 2, tmp_path / fmt, render_size=SIZE, progress=False)
    assert not (tmp_path / fmt).exists()
