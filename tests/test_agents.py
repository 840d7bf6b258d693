"""Baseline agents, the agent factory and the evaluator."""

from __future__ import annotations

import json

import pytest

from tvr_gym.agents import Agent, NoOpAgent, OracleAgent, RandomAgent, VisibleGuessAgent, make_agent
from tvr_gym.agents.evaluate import EvalResult, evaluate
from tvr_gym.core.answer import parse_answer
from tvr_gym.core.scene import is_visible_position
from tvr_gym.core.spec import SPEC

KW = {"render_size": (32, 24)}


def test_random_agent_gives_plausible_seeded_guesses():
    a, b = RandomAgent(seed=3), RandomAgent(seed=3)
    observations = [{"prompt": f"episode {k}"} for k in range(40)]
    answers = [a.act(obs) for obs in observations]
    assert answers == [b.act(obs) for obs in reversed(observations)][::-1]  # order does not matter
    assert answers != [RandomAgent(seed=4).act(obs) for obs in observations]
    counts = set()
    for text in answers:
        parsed = parse_answer(text)
        assert parsed.well_formed and not parsed.errors
        assert 1 <= len(parsed.steps) <= 4
        counts.add(len(parsed.steps))
        assert all(0 <= obj < SPEC.n_objects for obj, _, _ in parsed.steps)
    assert counts == {1, 2, 3, 4}
    assert len(set(answers)) > 30


def test_visible_guess_names_only_objects_the_initial_table_shows_and_beats_the_blind_guess():
    import gymnasium as gym

    env = gym.make("TVR-Basic-v0", obs_mode="image", **KW)
    agent, named = VisibleGuessAgent(seed=0), set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        objects = info["problem"]["states"][0]["objects"]
        visible = {i for i, o in enumerate(objects) if is_visible_position(tuple(o["position"]))}
        parsed = parse_answer(agent.act(obs))
        assert parsed.well_formed and {obj for obj, _, _ in parsed.steps} <= visible
        named |= {obj for obj, _, _ in parsed.steps}
    assert len(named) > 3
    # no table in the prompt: every object may be named, as by RandomAgent
    blind = {obj for k in range(60) for obj, _, _ in parse_answer(agent.act({"prompt": f"episode {k}"})).steps}
    assert blind == set(range(SPEC.n_objects))
    assert isinstance(make_agent("visible"), VisibleGuessAgent)
    # the yardstick it exists for: reading the table alone triples the blind guess's ObjAcc
    kwargs = {**KW, "obs_mode": "text"}
    guess = evaluate(VisibleGuessAgent(seed=0, max_items=1), "TVR-Basic-v0", 60, seed=7, env_kwargs=kwargs,
                     progress=False).summary["basic"]["ObjAcc"]  # fmt: skip
    blind = evaluate(RandomAgent(seed=0, max_items=1), "TVR-Basic-v0", 60, seed=7, env_kwargs=kwargs,
                     progress=False).summary["basic"]["ObjAcc"]  # fmt: skip
    assert guess > 2 * blind


def test_oracle_needs_the_privileged_hook():
    oracle = OracleAgent()
    assert oracle.privileged and not RandomAgent().privileged and not NoOpAgent().privileged
    with pytest.raises(RuntimeError, match="observe_privileged"):
        oracle.act({})
    oracle.observe_privileged({"truth": "T1"})
    oracle.observe_privileged({"truth": "T2"})
    assert oracle.act_batch([{}, {}]) == ["T1", "T2"]


@pytest.mark.parametrize("env_id", ["TVR-Basic-v0", "TVR-Event-v0", "TVR-CrossView-v0"])
def test_oracle_is_always_right_and_noop_scores_minus_n_gt(env_id):
    oracle = evaluate(OracleAgent(), env_id, 12, seed=40, env_kwargs=KW, progress=False, batch_size=5)
    assert all(r["metrics"]["acc"] == 1.0 and r["answer"] == r["truth"] for r in oracle.records)
    assert all(r["reward"] == 1.0 + 5.0 * r["n_steps"] for r in oracle.records)  # the STAR maximum, always
    assert oracle.summary["overall"]["Acc"] == 1.0
    noop = evaluate(NoOpAgent(), env_id, 12, seed=40, env_kwargs=KW, progress=False)
    for r in noop.records:
        assert r["reward"] == -r["n_steps"] + r["reward_terms"]["format"]
        assert r["reward_terms"]["format"] == 1.0 and r["reward_terms"]["pos"] == 0.0


def test_evaluate_records_and_batching_agree():
    one = evaluate(RandomAgent(seed=1), "TVR-Event-v0", 7, seed=100, env_kwargs=KW, progress=False)
    many = evaluate(RandomAgent(seed=1), "TVR-Event-v0", 7, seed=100, env_kwargs=KW, progress=False, batch_size=3)
    assert [r["seed"] for r in one.records] == list(range(100, 107))
    assert one.records == many.records
    assert set(one.records[0]) == {
        "seed", "n_steps", "final_view", "answer", "truth", "reward", "reward_terms", "metrics"
    }
    assert one.summary["overall"]["n"] == 7


def test_evaluate_accepts_duck_typed_agents_and_rejects_bad_input():
    class Echo:
        def act(self, obs):
            return obs["prompt"][:20]

    result = evaluate(Echo(), "TVR-Basic-v0", 2, env_kwargs=KW, progress=False)
    assert len(result.records) == 2
    with pytest.raises(ValueError, match="valid: TVR-"):
        evaluate(Echo(), "TVR-Nope-v0", 1)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(Echo(), "TVR-Basic-v0", 1, batch_size=0)


def test_eval_result_save_is_valid_json(tmp_path):
    result = evaluate(RandomAgent(seed=2), "TVR-CrossView-v0", 4, env_kwargs=KW, progress=False)
    summary_path, episodes_path = result.save(tmp_path)
    assert json.loads(summary_path.read_text())["overall"]["n"] == 4
    lines = episodes_path.read_text().splitlines()
    assert [json.loads(line)["seed"] for line in lines] == [0, 1, 2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert isinstance(result, EvalResult)


def test_make_agent():
    assert isinstance(make_agent("random"), RandomAgent)
    assert isinstance(make_agent("oracle"), OracleAgent)
    assert isinstance(make_agent("noop"), NoOpAgent)
    assert isinstance(make_agent("noop"), Agent)
    for bad in ("gpt", "mllm", "random:x", "", 3):
        with pytest.raises(ValueError, match="valid: random, visible, oracle, noop"):
            make_agent(bad)


def test_evaluate_serves_the_observation_mode_and_prompt_layout_an_agent_was_trained_on():
    class TextReader:
        obs_mode, prompt_layout = "text", "compact"

        def __init__(self) -> None:
            self.prompts: list[str] = []

        def act(self, obs) -> str:
            self.prompts.append(obs["prompt"])
            return ""

    reader = TextReader()
    evaluate(reader, "TVR-Basic-v0", 2, env_kwargs={"render_size": (32, 24)}, progress=False)
    assert len(reader.prompts) == 2 and all(">" in p.splitlines()[1] for p in reader.prompts)  # paired rows
    told = TextReader()  # the caller's keywords win
    evaluate(told, "TVR-Basic-v0", 1, env_kwargs={"render_size": (32, 24), "prompt_layout": "tables"}, progress=False)
    assert "Initial objects" in told.prompts[0] and "Final objects" in told.prompts[0]
