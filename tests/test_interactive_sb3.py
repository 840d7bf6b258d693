"""The SB3 adapter of TVR-Interactive-v0 (tvr_gym.envs.interactive_sb3) and MaskablePPO on it (tvr_gym.agents.ppo)."""

from __future__ import annotations

import dataclasses
import json
import random
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import tvr_gym  # noqa: F401  (registers the ids)
from tvr_gym.agents import make_agent
from tvr_gym.agents.ppo import MODEL_FILE, SETTINGS_FILE, InteractivePPOAgent, PPOAgent, train_ppo
from tvr_gym.core.answer import read_turn
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import save_trance
from tvr_gym.core.transform import PAIRS, simulate, state_distance
from tvr_gym.envs.interactive_sb3 import (
    DONE_ACTION,
    N_ACTIONS,
    InteractiveSB3,
    MaskedRandomPolicy,
    action_of,
    action_text,
    legal_mask,
    make_interactive_sb3_env,
    play_episode,
    step_of,
)
from tvr_gym.envs.wrappers import FEATURES_PER_OBJECT, encode_state

from props import examples, problems, random_problem

TABLE = SPEC.n_objects * FEATURES_PER_OBJECT


def _checker_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings other than gymnasium's note that a wrapped env is checked (which is the point here)."""
    return [str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)]


def _needs_sb3_contrib():
    return pytest.importorskip("sb3_contrib", reason="MaskablePPO needs sb3-contrib (pip install -e '.[train]')")


# ---------------------------------------------------------------------------- spaces and checkers


@pytest.mark.parametrize("setting", ["basic", "event", "crossview"])
def test_both_checkers_pass_without_warnings(setting):
    env = make_interactive_sb3_env(setting=setting)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    assert _checker_warnings(caught) == []
    assert env.action_space == gym.spaces.Discrete(331)
    assert env.observation_space == gym.spaces.Box(-1.0, 1.0, (2 * TABLE + 1,), np.float32)


def test_actions_name_object_times_pair_then_done():
    # the documented layout: a = 33 * object + pair, PAIRS in the order of docs/ppo.md, 330 = done
    assert N_ACTIONS == 331 and DONE_ACTION == 330
    assert action_text(0) == "0.color.gray"
    assert action_text(2 * 33 + 6) == "2.color.cyan"
    assert action_text(4 * 33 + 19) == "4.position.front-left.1"
    assert action_text(np.int64(9 * 33 + 32)) == "9.size.small"
    assert action_text(np.array(330)) == "done"
    assert step_of(330) is None and action_of("done") == action_of(None) == 330
    for a in range(N_ACTIONS - 1):
        turn = read_turn(action_text(a))  # the environment's own reader gives back the step
        assert turn.kind == "step" and turn.step == step_of(a) and action_of(turn.step) == a
        assert turn.step[0] == a // 33 and (turn.step[1], turn.step[2]) == PAIRS[a % 33]
    for bad in (-1, 331, 2.0, [1, 2], "3"):
        with pytest.raises(ValueError, match="action"):
            action_text(bad)
    with pytest.raises(ValueError, match="object"):
        action_of((10, "color", "red"))
    with pytest.raises(ValueError, match="pair"):
        action_of((1, "color", "pink"))


def test_observation_holds_current_and_target_tables_and_the_turn_fraction():
    env = make_interactive_sb3_env(setting="event")
    base = env.unwrapped
    obs, info = env.reset(seed=4)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:TABLE], encode_state(base.problem.initial))
    np.testing.assert_array_equal(obs[TABLE : 2 * TABLE], encode_state(base.problem.final))
    assert obs[-1] == 0.0
    action = int(np.flatnonzero(env.action_masks()[:-1])[0])
    obj, attr, value = step_of(action)
    obs, _, _, _, info = env.step(action)
    assert info["outcome"] == "applied" and info["action_text"] == action_text(action)
    assert getattr(base.current.objects[obj], attr) != getattr(base.problem.initial.objects[obj], attr)
    np.testing.assert_array_equal(obs[:TABLE], encode_state(base.current))
    np.testing.assert_array_equal(obs[TABLE : 2 * TABLE], encode_state(base.problem.final))
    assert obs[-1] == pytest.approx(1 / info["turn_limit"])


def test_the_wrapper_needs_the_interactive_env_and_a_reset():
    with pytest.raises(ValueError, match="TVRInteractive"):
        InteractiveSB3(gym.make("TVR-Event-v0", render_size=(16, 12)))
    env = make_interactive_sb3_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.action_masks()


# ---------------------------------------------------------------------------- masks


def _oracle(state: State, a: int) -> bool:
    """Independent judgement of one step: simulated without off-grid or overlap errors, and the scene changes."""
    sim = simulate(state, [step_of(a)])
    return not sim.error_out and not sim.error_overlap and state_distance(state, sim.state) > 0


@settings(max_examples=examples(40), deadline=None)
@given(problem=problems(), seed=st.integers(0, 2**32 - 1), length=st.integers(0, 6))
def test_masks_allow_exactly_the_legal_state_changing_steps_and_always_done(problem, seed, length):
    rng = random.Random(seed)
    state = problem.initial
    for _ in range(length + 1):
        mask = legal_mask(state)
        assert mask.shape == (N_ACTIONS,) and mask.dtype == bool and mask[DONE_ACTION]
        assert [bool(m) for m in mask[:-1]] == [_oracle(state, a) for a in range(N_ACTIONS - 1)]
        legal = np.flatnonzero(mask[:-1])
        if not len(legal):
            break
        state = simulate(state, [step_of(int(rng.choice(legal)))]).state  # a random legal sequence


@pytest.fixture(scope="module")
def problem_dir(tmp_path_factory):
    """A TRANCE directory of problems drawn by the property helpers (objects anywhere on the grid)."""
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("interactive_problems")
    save_trance((dataclasses.replace(random_problem(rng, rng.randint(1, 4)), idx=i) for i in range(48)), path)
    return path


@settings(max_examples=examples(40), deadline=None)
@given(data=st.data())
def test_every_masked_in_action_is_applied_and_every_masked_out_one_refused(problem_dir, data):
    env = make_interactive_sb3_env(source=problem_dir)
    base = env.unwrapped
    index = data.draw(st.integers(0, len(base.source) - 1), label="index")
    env.reset(seed=0, options={"index": index})
    twin = base.spawn()
    done = False
    while not done:
        mask = env.action_masks()
        assert mask[DONE_ACTION]
        allowed, refused = np.flatnonzero(mask[:-1]), np.flatnonzero(~mask[:-1])
        for a in data.draw(st.lists(st.sampled_from(list(refused)), max_size=3), label="refused"):
            twin.set_state(base.get_state())  # a copy: the episode itself is not stepped
            assert twin.step(action_text(a))[4]["outcome"] in ("illegal", "noop")
        if not len(allowed):
            break
        for a in data.draw(st.lists(st.sampled_from(list(allowed)), max_size=3), label="allowed"):
            twin.set_state(base.get_state())
            assert twin.step(action_text(a))[4]["outcome"] == "applied"
        action = data.draw(st.sampled_from(list(allowed)), label="action")
        _, _, terminated, truncated, info = env.step(action)
        assert info["outcome"] == "applied"
        done = terminated or truncated


def test_the_mask_agrees_with_the_env_on_every_action():
    env = make_interactive_sb3_env(setting="event")
    base = env.unwrapped
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        env.reset(seed=seed)
        twin = base.spawn()
        for _ in range(3):
            mask = env.action_masks()
            outcomes = []
            for a in range(N_ACTIONS):
                twin.set_state(base.get_state())
                outcomes.append(twin.step(action_text(a))[4]["outcome"])
            assert [o == "applied" for o in outcomes[:-1]] == [bool(m) for m in mask[:-1]]
            assert {"illegal", "noop"} <= set(outcomes[:-1])  # the mask removes both kinds
            assert outcomes[-1] == "done" and mask[-1]
            env.step(int(rng.choice(np.flatnonzero(mask[:-1]))))


def test_a_random_masked_policy_plays_an_episode_of_applied_steps():
    env = make_interactive_sb3_env(setting="event")
    record = play_episode(env, MaskedRandomPolicy(seed=3), seed=11)
    turns = record["interactive"]["turns"]
    assert len(record["actions"]) == turns and turns <= env.unwrapped.turn_limit
    steps = [a for a in record["actions"] if a != "done"]
    assert record["interactive"]["applied"] == len(steps)  # no turn was refused
    assert record["terminated"] == (record["actions"][-1] == "done")


def test_sb3_never_bootstraps_a_value_past_the_turn_limit():
    """At the turn limit the SB3 view ends the episode as terminated (and truncated), so SB3's vector env
    marks no ``TimeLimit.truncated`` and PPO adds no ``gamma * V`` of a state it never trained on; an
    episode ended by ``done`` is terminated only."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    vec = DummyVecEnv([lambda: make_interactive_sb3_env(setting="basic")])
    vec.seed(4)
    vec.reset()
    base = vec.envs[0].unwrapped
    for turn in range(1, base.turn_limit + 1):
        legal = np.flatnonzero(vec.env_method("action_masks")[0][:-1])
        _, _, dones, infos = vec.step(np.array([legal[0]]))  # never done: the limit ends it
        assert bool(dones[0]) == (turn == base.turn_limit)
    assert infos[0]["outcome"] == "applied" and infos[0]["TimeLimit.truncated"] is False
    assert "terminal_observation" in infos[0] and infos[0]["interactive"]["turns"] == base.turn_limit
    env = make_interactive_sb3_env(setting="basic")
    env.reset(seed=4)
    *_, terminated, truncated, _ = env.step(DONE_ACTION)
    assert terminated and not truncated
    record = play_episode(env, MaskedRandomPolicy(seed=0), seed=4)
    assert record["terminated"] == (record["actions"][-1] == "done")


# ---------------------------------------------------------------------------- MaskablePPO


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, torch_one_thread):
    """A short MaskablePPO run through ``tvr-gym train ppo --env TVR-Interactive-v0``."""
    _needs_sb3_contrib()
    from tvr_gym.apps.cli import main

    out = tmp_path_factory.mktemp("interactive_ppo") / "run"
    argv = [
        "train", "ppo", "--env", "TVR-Interactive-v0", "--timesteps", "256", "--out", str(out), "--n-steps", "64",
        "--n-envs", "2", "--batch-size", "32", "--checkpoint-every", "128", "--quiet", "--seed", "1",
        "--reward", "sparse",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_cli_trains_maskable_ppo_on_the_symbolic_interactive_env(cli_run):
    settings_json = json.loads((cli_run / SETTINGS_FILE).read_text())
    assert settings_json["algo"] == "maskable_ppo" and settings_json["obs"] == "symbolic"
    assert settings_json["env_id"] == "TVR-Interactive-v0"
    assert settings_json["env_kwargs"] == {"terminal_reward": "sparse"}  # --reward names the terminal reward
    assert (cli_run / MODEL_FILE).is_file()
    assert sorted(p.name for p in (cli_run / "checkpoints").iterdir()) == ["ppo_128_steps.zip", "ppo_256_steps.zip"]
    assert list((cli_run / "tensorboard").glob("MaskablePPO_*"))


def test_the_monitor_records_every_interactive_episode(cli_run):
    """SB3's Monitor sees the episodes (its CSVs feed ``rollout/ep_rew_mean``): each row's return and length
    are those of a real episode, at most the turn limit long."""
    import csv

    rows = []
    for path in sorted((cli_run / "monitor").glob("*.monitor.csv")):
        lines = path.read_text().splitlines()[1:]  # the first line is Monitor's JSON header
        rows += list(csv.DictReader(lines))
    limit = make_interactive_sb3_env(setting="event").unwrapped.turn_limit
    assert len(rows) >= 256 // limit  # 256 steps hold at least this many finished episodes
    assert all(1 <= int(r["l"]) <= limit for r in rows)
    assert sum(int(r["l"]) for r in rows) <= 256


def test_the_saved_model_loads_and_plays_an_episode_of_legal_turns(cli_run):
    from sb3_contrib import MaskablePPO

    agent = make_agent(f"ppo:{cli_run}")
    assert isinstance(agent, InteractivePPOAgent) and isinstance(agent.model, MaskablePPO)
    assert isinstance(PPOAgent.load(cli_run / "checkpoints" / "ppo_128_steps.zip"), InteractivePPOAgent)
    env = agent.make_env()
    assert env.unwrapped.terminal_name == "sparse"
    record = agent.play(env, seed=5)
    turns = record["interactive"]["turns"]
    assert 1 <= turns <= env.unwrapped.turn_limit and len(record["actions"]) == turns
    assert record["interactive"]["applied"] == sum(a != "done" for a in record["actions"])  # masks held
    assert record == agent.play(env, seed=5)  # greedy: the same episode again
    env.reset(seed=5)
    base = env.unwrapped
    text = agent.act_state(base.current, base.problem.final, 0, base.turn_limit)
    assert text == record["actions"][0]
    result = agent.evaluate(3, seed=100, setting="basic")
    assert len(result["records"]) == 3 and 0.0 <= result["summary"]["success"] <= 1.0
    with pytest.raises(RuntimeError, match="play"):
        agent.act({})


def test_interactive_agents_reject_other_models(cli_run, tmp_path):
    with pytest.raises(ValueError, match="not a TVR-Interactive-v0"):
        InteractivePPOAgent.load(_single_shot_run(tmp_path))
    settings_json = json.loads((cli_run / SETTINGS_FILE).read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FILE).write_bytes((cli_run / MODEL_FILE).read_bytes())
    (broken / SETTINGS_FILE).write_text(json.dumps({**settings_json, "algo": "dqn"}))
    with pytest.raises(ValueError, match="algo"):
        PPOAgent.load(broken)


def _single_shot_run(tmp_path):
    out = tmp_path / "single"
    train_ppo("TVR-Basic-v0", 32, out, obs="symbolic", render_size=(16, 12), checkpoint_every=0, n_steps=32,
              batch_size=32)  # fmt: skip
    return out


def test_train_ppo_keeps_interactive_runs_symbolic(tmp_path):
    with pytest.raises(ValueError, match="symbolic"):
        train_ppo("TVR-Interactive-v0", 10, tmp_path, obs="image")
    with pytest.raises(ValueError, match="max_items"):
        train_ppo("TVR-Interactive-v0", 10, tmp_path, max_items=4)
    with pytest.raises(ValueError, match="setting"):
        train_ppo("TVR-Interactive-v0", 10, tmp_path, env_kwargs={"setting": "nope"})
    assert not (tmp_path / MODEL_FILE).exists()


def test_the_interactive_policy_scores_each_objects_steps_with_one_shared_head():
    """Swapping two objects in both tables swaps their blocks of step logits and leaves the others': what
    the policy learns of one object holds for every object."""
    import torch
    from sb3_contrib import MaskablePPO

    from tvr_gym.agents.ppo_objects import OBJECT_ACTION_POLICY_KWARGS, ObjectActionPolicy
    from tvr_gym.core.transform import PAIRS
    from tvr_gym.envs.wrappers import FEATURES_PER_OBJECT

    env = make_interactive_sb3_env(setting="event", renderer="numpy")
    model = MaskablePPO(ObjectActionPolicy, env, policy_kwargs=dict(OBJECT_ACTION_POLICY_KWARGS), seed=0)
    obs, _ = env.reset(seed=3)
    n, f, p = SPEC.n_objects, FEATURES_PER_OBJECT, len(PAIRS)
    swapped = obs.copy()
    tables = swapped[: 2 * n * f].reshape(2, n, f)
    tables[:, [1, 6]] = tables[:, [6, 1]]
    policy = model.policy
    with torch.no_grad():  # the raw action logits (before the distribution normalises them)
        logits = [policy.action_net(policy.extract_features(policy.obs_to_tensor(o)[0]))[0] for o in (obs, swapped)]
    blocks = [lg[:-1].reshape(n, p) for lg in logits]
    assert torch.allclose(blocks[0][1], blocks[1][6], atol=1e-5)
    assert torch.allclose(blocks[0][6], blocks[1][1], atol=1e-5)
    assert torch.allclose(blocks[0][0], blocks[1][0], atol=1e-5) and not torch.allclose(blocks[0][1], blocks[0][6])
