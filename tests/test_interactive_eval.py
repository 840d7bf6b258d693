"""``tvr-gym eval --env TVR-Interactive-v0``: every agent kind plays whole episodes, journaled per episode and turn,
continued on a rerun, with the interactive means in the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvr_gym.agents import make_agent
from tvr_gym.agents.evaluate import EPISODES_FILE, SUMMARY_FILE, EvalDirError, evaluate
from tvr_gym.agents.interactive import INTERACTIVE_KEYS, evaluate_interactive
from tvr_gym.apps.cli import main
from tvr_gym.core.answer import parse_answer
from tvr_gym.core.chat import Exchange, count_images, interactive_messages, openai_chat
from tvr_gym.envs.registration import INTERACTIVE_ID

ARGS = ["--env", INTERACTIVE_ID, "--renderer", "numpy", "--quiet"]


def _eval(tmp_path, agent: str, episodes: int, *extra: str) -> tuple[list[dict], dict]:
    out = tmp_path / agent.replace(":", "_").replace("/", "_")
    assert main(["eval", "--agent", agent, "--episodes", str(episodes), "--out", str(out), *ARGS, *extra]) == 0
    records = [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines()]
    return records, json.loads((out / SUMMARY_FILE).read_text())


def test_the_oracle_solves_every_episode_with_the_true_steps_then_done(tmp_path):
    records, summary = _eval(tmp_path, "oracle", 12, "--setting", "event")
    assert [r["seed"] for r in records] == list(range(12))
    for r in records:
        actions = [t["action"] for t in r["turns"]]
        assert actions[-1] == "done" and r["turns"][-1]["outcome"] == "done"
        assert list(parse_answer(r["truth"]).steps) == list(parse_answer(", ".join(actions[:-1])).steps)
        assert r["interactive"]["success"] == 1.0 and r["interactive"]["turns"] == r["n_steps"] + 1
        assert r["metrics"]["acc"] == 1.0
        assert r["reward"] == pytest.approx(sum(t["reward"] for t in r["turns"]))
    assert summary["interactive"]["success"] == 1.0 and summary["overall"]["Acc"] == 1.0
    assert summary["interactive"]["return"] == pytest.approx(np.mean([r["reward"] for r in records]))
    assert summary["overall"]["n"] == 12


def test_greedy_solves_most_and_random_none_of_the_same_episodes(tmp_path):
    greedy, g = _eval(tmp_path, "greedy", 20, "--setting", "event")
    random_, r = _eval(tmp_path, "random", 20, "--setting", "event")
    assert [e["truth"] for e in greedy] == [e["truth"] for e in random_]  # the same problems
    assert g["interactive"]["success"] >= 0.9 > r["interactive"]["success"]
    assert g["interactive"]["misplaced"] < r["interactive"]["misplaced"]
    assert set(g["interactive"]) == {*INTERACTIVE_KEYS, "return"}


def test_a_cut_off_interactive_eval_continues_to_the_bytes_of_an_uninterrupted_one(tmp_path):
    """The random agent draws each episode from its own seed: the episodes a rerun plays are those an
    uninterrupted run plays, whatever ran before them."""
    whole = tmp_path / "whole"
    cut = tmp_path / "cut"
    argv = ["eval", "--agent", "random", "--episodes", "6", "--seed", "3", *ARGS]
    assert main([*argv, "--out", str(whole)]) == 0
    assert main([*argv[:4], "4", *argv[5:], "--out", str(cut)]) == 0
    lines = (cut / EPISODES_FILE).read_text().splitlines(keepends=True)
    (cut / EPISODES_FILE).write_text("".join(lines[:2]) + lines[2][:25])  # a kill tore the third episode's line
    assert main([*argv, "--out", str(cut)]) == 0
    assert (cut / EPISODES_FILE).read_bytes() == (whole / EPISODES_FILE).read_bytes()
    assert (cut / SUMMARY_FILE).read_bytes() == (whole / SUMMARY_FILE).read_bytes()


def test_a_journal_line_without_interactive_scores_is_named(tmp_path):
    out = tmp_path / "run"
    argv = ["eval", "--agent", "oracle", "--episodes", "3", "--out", str(out), *ARGS]
    assert main(argv) == 0
    lines = (out / EPISODES_FILE).read_text().splitlines()
    record = json.loads(lines[1])
    record["interactive"].pop("fixed_strict")
    (out / EPISODES_FILE).write_text("\n".join([lines[0], json.dumps(record), lines[2]]) + "\n")
    with pytest.raises(EvalDirError, match=rf"{EPISODES_FILE}:2: interactive: .*fixed_strict"):
        evaluate(make_agent("oracle", env_id=INTERACTIVE_ID), INTERACTIVE_ID, 3, env_kwargs={"renderer": "numpy"},
                 progress=False, out=out)  # fmt: skip


@pytest.mark.parametrize(
    ("agent", "env", "message"),
    [
        ("visible", INTERACTIVE_ID, "answers single-shot problems"),
        ("noop", INTERACTIVE_ID, "answers single-shot problems"),
        ("greedy", "TVR-Basic-v0", "greedy plays TVR-Interactive-v0"),
    ],
)
def test_agents_of_the_other_kind_of_environment_are_one_line_errors(tmp_path, capsys, agent, env, message):
    out = tmp_path / "out"
    assert main(["eval", "--agent", agent, "--env", env, "--episodes", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (out / EPISODES_FILE).exists()


@pytest.fixture(scope="module")
def interactive_ppo(tmp_path_factory, torch_one_thread):
    out = tmp_path_factory.mktemp("ppo") / "run"
    argv = [
        "train", "ppo", "--env", "TVR-Interactive-v0", "--timesteps", "256", "--out", str(out), "--n-steps", "64",
        "--n-envs", "2", "--batch-size", "32", "--checkpoint-every", "0", "--quiet", "--seed", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_a_trained_maskable_ppo_is_evaluated_as_it_plays(interactive_ppo, tmp_path):
    from tvr_gym.agents.ppo import InteractivePPOAgent

    records, summary = _eval(tmp_path, f"ppo:{interactive_ppo}", 5)
    played = InteractivePPOAgent.load(interactive_ppo).evaluate(5, renderer="numpy")["records"]
    assert [r["turns"] for r in records] == [p["turns"] for p in played]
    assert [r["interactive"] for r in records] == [{k: p["interactive"][k] for k in INTERACTIVE_KEYS} for p in played]
    assert summary["interactive"]["turns"] == pytest.approx(np.mean([p["interactive"]["turns"] for p in played]))


def test_a_single_shot_ppo_model_is_refused_on_the_interactive_env_and_back(interactive_ppo, tmp_path, capsys):
    assert main(["eval", "--agent", f"ppo:{interactive_ppo}", "--env", "TVR-Basic-v0", "--episodes", "1",
                 "--out", str(tmp_path / "a"), "--quiet"]) == 2  # fmt: skip
    assert "evaluate it with --env TVR-Interactive-v0" in capsys.readouterr().err


def test_an_mllm_policy_plays_chats_in_lock_step_as_the_trainer_evaluates_it(tiny_dir, tmp_path, torch_one_thread):
    from tvr_gym.agents.mllm import MLLMAgent

    agent = MLLMAgent.from_pretrained(tiny_dir, obs_mode="image")
    agent.max_new_tokens = 8
    kwargs = {"renderer": "numpy", "render_size": (56, 56), "setting": "basic"}
    result = evaluate(agent, INTERACTIVE_ID, 3, seed=5, env_kwargs=kwargs, progress=False, batch_size=2,
                      out=tmp_path / "mllm")  # fmt: skip
    in_memory = evaluate_interactive(agent, INTERACTIVE_ID, 3, seed=5, env_kwargs={**kwargs, "obs_mode": "image"})
    assert result.summary["interactive"] == pytest.approx(in_memory["interactive"])
    for r in result.records:
        assert len(r["turns"]) == r["interactive"]["turns"] or r["turns"][-1]["outcome"] == "truncated"
        assert all(isinstance(t["feedback"], str) for t in r["turns"] if t["action"] is not None)
    assert json.loads((tmp_path / "mllm" / "eval.json").read_text())["env"] == INTERACTIVE_ID


def test_openai_chat_puts_each_image_where_its_block_is():
    images = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)]
    history = [Exchange("1.color.red", "Applied. Turn 1 of 5.", images[2])]
    messages, ordered = interactive_messages("prompt", images[0], images[1], history)
    converted = openai_chat(messages, ordered)
    urls = [p["image_url"]["url"] for m in converted if isinstance(m["content"], list) for p in m["content"]
            if p["type"] == "image_url"]  # fmt: skip
    from tvr_gym.core.chat import png_data_url

    assert urls == [png_data_url(a) for a in images]
    assert converted[1] == {"role": "assistant", "content": "1.color.red"}
    assert count_images(messages) == 3
    with pytest.raises(ValueError, match="3 image blocks, got 2"):
        openai_chat(messages, ordered[:2])


def test_an_image_budget_truncates_a_chat_agents_episodes_before_the_turn_that_would_pass_it(tiny_dir, tmp_path):
    out = tmp_path / "budget"
    argv = ["eval", "--agent", f"mllm:{tiny_dir}", "--obs-mode", "image", "--episodes", "3", "--size", "56", "56",
            "--setting", "event", "--max-tokens", "4", "--max-images", "3", "--out", str(out), *ARGS]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / EPISODES_FILE).read_text().splitlines()]
    for r in records:  # target + first render + one reply: one model turn, then the budget ends the episode
        assert [t["action"] is not None for t in r["turns"]] == [True, False]
        assert r["turns"][-1]["outcome"] == "truncated"
    manifest = json.loads((out / "eval.json").read_text())
    assert manifest["max_images"] == 3 and manifest["window"] == 4


@pytest.mark.parametrize(("flag", "value"), [("--max-images", "1"), ("--window", "-1")])
def test_bad_chat_budgets_are_one_line_errors(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    assert main(["eval", "--agent", "oracle", "--episodes", "1", flag, value, "--out", str(out), *ARGS]) == 2
    assert flag in capsys.readouterr().err and not out.exists()
