"""SkyRL-gym: ``tvr`` and ``tvr_interactive`` built by the real ``skyrl_gym.make`` from rows of ``--format skyrl``.

Every expected reward, reply and metric comes from the gymnasium environments themselves.
"""

from __future__ import annotations

import dataclasses
import json
import random
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.answer import format_answer, format_item, parse_answer
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS
from tvr_gym.data.export import COLUMNS, export

from props import examples

skyrl_gym = pytest.importorskip(
    "skyrl_gym", reason="the SkyRL tests need skyrl-gym: the verl venv has it (make verl-env; docs/integrations.md)"
)

from skyrl_gym.envs.registration import deregister  # noqa: E402

from tvr_gym.integrations.skyrl import (  # noqa: E402
    ENV_ID,
    INTERACTIVE_ENV_ID,
    TVRSkyRLEnv,
    TVRSkyRLInteractiveEnv,
    register_env,
    register_envs,
)

KW = {"render_size": (16, 12), "renderer": "numpy"}
SINGLE = "TVR-CrossView-v0"
INTERACTIVE = "TVR-Interactive-v0"
SEED = 5


def _rows(path) -> list[dict]:
    """The rows as SkyRL's PromptDataset reads them: ``datasets``' parquet loader, one dict per row."""
    from datasets import load_dataset

    return list(load_dataset("parquet", data_files=str(path), keep_in_memory=True)["train"])


def _split(row: dict) -> tuple[list, str, dict]:
    """(prompt, env_class, extras), as SkyRL's PromptDataset and generator hand them to the environment."""
    extras = {k: v for k, v in row.items() if k not in ("prompt", "env_class")}
    return row["prompt"], row["env_class"], extras


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("skyrl")
    kw = {"seed": SEED, "progress": False, **KW}
    single = export("skyrl", SINGLE, 10, out / "single", **kw)
    interactive = export("skyrl", INTERACTIVE, 8, out / "interactive", setting="crossview", **kw)
    return {"single": _rows(single), "interactive": _rows(interactive)}


def _text_env(env_id: str, **kwargs):
    extra = {"setting": "crossview"} if env_id == INTERACTIVE else {}
    return gym.make(env_id, obs_mode="text", **KW, **extra, **kwargs)


def _env_reward(env, row: dict, text) -> tuple[float, dict]:
    info = row["extra_info"]
    env.reset(seed=info["seed"], options={"index": info["index"]})
    _, reward, terminated, _, step_info = env.step(text)
    assert terminated
    return reward, step_info


def _wrong_answers(truth: str, rng: random.Random) -> list[str]:
    steps = [format_item(s) for s in parse_answer(truth).steps]
    obj, attr, value = rng.randrange(SPEC.n_objects), *rng.choice(PAIRS)
    other = format_item((obj, attr, value))
    return [
        "",
        "done",
        "<think>no idea</think><answer></answer>",
        f"<think>x</think><answer>{other}</answer>",
        f"<answer>{', '.join([*steps, other])}</answer>",
        f"<answer>{', '.join(steps[::-1])}</answer>",
        ", ".join(steps),  # no tags: format 0
        truth[: len(truth) // 2],
        "\x00\xff garbage ✓ <answer>12.colour.pink, 3..</answer>" * 3,
        "a" * 20_000,
    ]


# ------------------------------------------------------------------------------------------- registration


def test_import_registers_both_ids_and_make_builds_skyrl_envs(rows):
    assert ENV_ID in skyrl_gym.registry and INTERACTIVE_ENV_ID in skyrl_gym.registry
    assert register_envs() == (ENV_ID, INTERACTIVE_ENV_ID)  # again: nothing changes
    for kind, cls in (("single", TVRSkyRLEnv), ("interactive", TVRSkyRLInteractiveEnv)):
        prompt, env_class, extras = _split(rows[kind][0])
        env = skyrl_gym.make(env_class, env_config={}, extras=extras)
        assert isinstance(env, cls) and isinstance(env, skyrl_gym.Env)
        assert env.init(prompt)[0] == prompt
        env.close()
    with pytest.raises(ValueError, match="already registered"):
        register_env(ENV_ID, reward="state")
    with pytest.raises(ValueError, match="already registered"):
        register_env(INTERACTIVE_ENV_ID)  # the interactive id names the other class


def test_an_id_registered_with_defaults_scores_with_them(rows):
    row = rows["single"][1]
    try:
        assert register_env("tvr_test_state", reward="state") == "tvr_test_state"
        assert register_env("tvr_test_state", reward="state") == "tvr_test_state"  # idempotent
        env = skyrl_gym.make("tvr_test_state", env_config={}, extras=_split(row)[2])
        text = _wrong_answers(row["extra_info"]["answer"], random.Random(0))[4]
        assert env.step(text)["reward"] == _env_reward(_text_env(SINGLE, reward="state"), row, text)[0]
        # env_config (SkyRL's environment.skyrl_gym.<env_class>) wins over the registered defaults
        env = skyrl_gym.make("tvr_test_state", env_config={"reward": "sparse"}, extras=_split(row)[2])
        assert env.step(text)["reward"] == _env_reward(_text_env(SINGLE, reward="sparse"), row, text)[0]
    finally:
        deregister("tvr_test_state")


# ------------------------------------------------------------------------------------------- the dataset


def test_skyrl_rows_are_the_episodes_of_env_reset(rows):
    for kind, env_id in (("single", SINGLE), ("interactive", INTERACTIVE)):
        assert set(rows[kind][0]) == set(COLUMNS["skyrl"])
        env = _text_env(env_id)
        for row in rows[kind]:
            info = row["extra_info"]
            obs, reset_info = env.reset(seed=SEED, options={"index": info["index"]})
            problem = env.unwrapped.problem.to_dict()
            assert row["prompt"] == [{"role": "user", "content": obs["prompt"]}]
            assert row["reward_spec"] == {"method": "rule", "ground_truth": json.dumps(problem, separators=(",", ":"))}
            assert info["answer"] == reset_info["truth"] == format_answer(env.unwrapped.problem.transformations)
            assert (info["env_id"], info["seed"], info["split"]) == (env_id, SEED, "train")
            assert info["n_steps"] == len(problem["transformations"]) and info["final_view"] == reset_info["final_view"]
        assert [r["extra_info"]["index"] for r in rows[kind]] == list(range(len(rows[kind])))
    assert {r["env_class"] for r in rows["single"]} == {"tvr"}
    assert {r["data_source"] for r in rows["single"]} == {"tvr/crossview"}
    assert {r["env_class"] for r in rows["interactive"]} == {"tvr_interactive"}
    assert {r["data_source"] for r in rows["interactive"]} == {"tvr-interactive/crossview"}
    assert "<image>" not in rows["single"][0]["prompt"][0]["content"]


def test_the_skyrl_format_is_text_only(tmp_path):
    with pytest.raises(ValueError, match="text only"):
        export("skyrl", SINGLE, 2, tmp_path / "x", obs_mode="image", progress=False, **KW)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- single-shot


@pytest.mark.parametrize(
    "config",
    [{}, {"reward": "state"}, {"reward": "sparse"}, {"reward": "no_wrong_penalty"}, {"reward_weights": {"wrong": 2.0}}],
)
def test_single_shot_reward_equals_env_step(rows, config):
    env = _text_env(SINGLE, **config)
    rng = random.Random(len(config))
    checked = 0
    for row in rows["single"]:
        truth = row["extra_info"]["answer"]
        for text in [truth, *_wrong_answers(truth, rng)]:
            prompt, env_class, extras = _split(row)
            sky = skyrl_gym.make(env_class, env_config=config, extras=extras)
            sky.init(prompt)
            out = sky.step(text)
            expected, info = _env_reward(env, row, text)
            assert out["reward"] == expected, text[:80]
            assert out["done"] is True and out["observations"] == []
            assert out["metadata"]["reward_terms"] == info["reward_terms"]
            assert out["metadata"]["acc"] == info["metrics"]["acc"]
            metrics = sky.get_metrics()
            assert metrics["tvr/reward"] == expected and metrics["tvr/acc"] == info["metrics"]["acc"]
            assert {f"tvr/{k}" for k in info["reward_terms"]} <= set(metrics)
            checked += 1
    assert checked == 110


steps_st = st.lists(
    st.tuples(st.integers(0, SPEC.n_objects - 1), st.sampled_from(PAIRS)).map(lambda t: (t[0], *t[1])), max_size=6
)


@settings(max_examples=examples(60), deadline=None)
@given(data=st.data(), steps=steps_st, wrap=st.sampled_from(["full", "answer", "bare"]))
def test_any_answer_of_the_grammar_scores_as_env_step(rows, data, steps, wrap):
    row = data.draw(st.sampled_from(rows["single"]))
    if data.draw(st.booleans()):  # mix in true steps, so full and partial matches happen
        true = parse_answer(row["extra_info"]["answer"]).steps
        steps = [*data.draw(st.permutations(true))[: data.draw(st.integers(0, len(true)))], *steps]
    items = ", ".join(format_item(s) for s in steps)
    text = {"full": format_answer(steps, think="t"), "answer": f"<answer>{items}</answer>", "bare": items}[wrap]
    reward = data.draw(st.sampled_from(["star", "state", "sparse"]))
    sky = skyrl_gym.make(ENV_ID, env_config={"reward": reward}, extras=_split(row)[2])
    assert sky.step(text)["reward"] == _env_reward(_text_env(SINGLE, reward=reward), row, text)[0]


# ------------------------------------------------------------------------------------------- interactive


def _play(row: dict, actions: list[str], config: dict | None = None, max_turns: int | None = 10):
    """Play ``actions`` in the SkyRL env (until done) and in TVR-Interactive-v0: (skyrl outputs, env steps)."""
    prompt, env_class, extras = _split(row)
    if max_turns is not None:
        extras["max_turns"] = max_turns  # what SkyRL's generator sets from generator.max_turns
    sky = skyrl_gym.make(env_class, env_config=config or {}, extras=extras)
    sky.init(prompt)
    env = _text_env(INTERACTIVE, **(config or {}))
    env.reset(seed=row["extra_info"]["seed"], options={"index": row["extra_info"]["index"]})
    outs, steps = [], []
    for action in actions:
        outs.append(sky.step(action))
        steps.append(env.step(action))
        if outs[-1]["done"]:
            break
    return sky, outs, steps


def _reply(obs: dict) -> str:
    """What the environment shows after a turn in text mode: the feedback and the current table."""
    return obs["feedback"] + "\n" + obs["prompt"][obs["prompt"].index("Current objects") :]


def test_the_true_steps_then_done_succeed_with_the_env_rewards(rows):
    for row in rows["interactive"]:
        truth = parse_answer(row["extra_info"]["answer"]).steps
        actions = [f"<think>t</think><answer>{format_item(s)}</answer>" for s in truth] + ["<answer>done</answer>"]
        sky, outs, steps = _play(row, actions)
        assert len(outs) == len(actions) and [o["done"] for o in outs] == [False] * len(truth) + [True]
        assert [o["reward"] for o in outs] == [s[1] for s in steps]
        assert steps[-1][2] is True  # terminated by done
        for out, (obs, *_rest) in zip(outs[:-1], steps[:-1]):
            assert out["observations"] == [{"role": "user", "content": _reply(obs)}]
        final = steps[-1][4]
        assert final["interactive"]["success"] == 1.0 and outs[-1]["metadata"]["interactive"] == final["interactive"]
        metrics = sky.get_metrics()
        assert metrics["tvr_interactive/success"] == 1.0 and metrics["tvr_interactive/ended"] == 1.0
        assert metrics["tvr_interactive/return"] == pytest.approx(sum(s[1] for s in steps))
        assert metrics["tvr_interactive/acc"] == final["metrics"]["acc"] == 1.0


@settings(max_examples=examples(25), deadline=None)
@given(data=st.data())
def test_any_play_gets_the_env_rewards_and_ends_when_it_does(rows, data):
    row = data.draw(st.sampled_from(rows["interactive"]))
    truth = [format_item(s) for s in parse_answer(row["extra_info"]["answer"]).steps]
    pool = [*truth, *(format_item((i, *p)) for i in range(3) for p in PAIRS[::4]), "hello", "0.color.red, 1.size.small"]
    actions = data.draw(st.lists(st.sampled_from(pool), max_size=10)) + ["done"] * data.draw(st.integers(0, 1))
    config = data.draw(st.sampled_from([{}, {"terminal_reward": "star"}, {"slack": 0}, {"costs": {"noop": 1.0}}]))
    sky, outs, steps = _play(row, actions, config, max_turns=None)
    assert [o["reward"] for o in outs] == [s[1] for s in steps]
    assert [o["done"] for o in outs] == [s[2] or s[3] for s in steps]
    for out, (obs, *_rest) in zip(outs, steps):
        assert out["observations"] == ([] if out["done"] else [{"role": "user", "content": _reply(obs)}])


def test_skyrl_max_turns_caps_the_episode_as_the_env_max_turns_does(rows):
    row = rows["interactive"][0]
    truth = [format_item(s) for s in parse_answer(row["extra_info"]["answer"]).steps]
    actions = [*truth, "done"]
    sky, outs, _ = _play(row, actions, max_turns=1)
    _, _, steps = _play(row, actions, {"max_turns": 1})  # the env's own limit of one turn
    assert len(outs) == 1 and outs[0]["done"] and steps[0][3]  # truncated
    assert outs[0]["reward"] == steps[0][1] and sky.max_turns == 1


def test_an_episode_skyrl_stops_early_is_truncated_for_its_metrics(rows):
    row = rows["interactive"][1]
    prompt, env_class, extras = _split(row)
    sky = skyrl_gym.make(env_class, env_config={}, extras=extras)
    sky.init(prompt)
    first = format_item(parse_answer(row["extra_info"]["answer"]).steps[0])
    sky.step(first)
    env = _text_env(INTERACTIVE)
    env.reset(seed=SEED, options={"index": row["extra_info"]["index"]})
    env.step(first)
    _, info = env.unwrapped.truncate()
    metrics = sky.get_metrics()  # SkyRL stopped (e.g. its length limit): no more steps come
    assert metrics["tvr_interactive/ended"] == 0.0
    assert metrics["tvr_interactive/success"] == info["interactive"]["success"]
    assert metrics["tvr_interactive/acc"] == info["metrics"]["acc"]
    with pytest.raises(RuntimeError, match="ended"):
        sky.step("done")


def test_interactive_envs_on_threads_play_as_alone(rows):
    def play(row):
        truth = [format_item(s) for s in parse_answer(row["extra_info"]["answer"]).steps]
        return [o["reward"] for o in _play(row, [truth[-1], *truth, "0.color.red", "done"])[1]]

    alone = [play(r) for r in rows["interactive"]]
    with ThreadPoolExecutor(max_workers=4) as pool:  # SkyRL steps environments on a thread pool
        assert list(pool.map(play, rows["interactive"] * 2)) == alone * 2


# ------------------------------------------------------------------------------------------- errors


@dataclasses.dataclass
class _Config:
    reward: str = "sparse"


def test_env_config_may_be_a_dataclass_or_an_omegaconf_dict(rows):
    from omegaconf import OmegaConf

    row = rows["single"][2]
    truth = row["extra_info"]["answer"]
    sparse = skyrl_gym.make(ENV_ID, env_config=_Config(), extras=_split(row)[2])
    assert sparse.step(truth)["reward"] == 1.0
    config = OmegaConf.create({"reward": "star", "reward_weights": {"full": 4.0}})
    weighted = skyrl_gym.make(ENV_ID, env_config=config, extras=_split(row)[2])
    expected = _env_reward(_text_env(SINGLE, reward_weights={"full": 4.0}), row, truth)[0]
    assert weighted.step(truth)["reward"] == expected


@pytest.mark.parametrize(
    ("env_id", "env_config", "match"),
    [
        (ENV_ID, {"rewrad": "star"}, r"unknown key\(s\) rewrad; valid: reward, reward_weights"),
        (ENV_ID, {"reward": "nope"}, "reward: .*valid: .*star"),
        (ENV_ID, {"reward_weights": {"nope": 1.0}}, "reward_weights: .*unknown 'nope'"),
        (ENV_ID, {"reward": "sparse", "reward_weights": {"wrong": 1.0}}, "reward_weights: .*no weights"),
        (ENV_ID, {"terminal_reward": "star"}, "unknown key.*terminal_reward"),
        (ENV_ID, ["star"], "env_config: expected a mapping or a dataclass"),
        (INTERACTIVE_ENV_ID, {"reward": "star"}, "unknown key.*reward; valid: terminal_reward"),
        (INTERACTIVE_ENV_ID, {"terminal_reward": "nope"}, "terminal_reward: .*valid"),
        (INTERACTIVE_ENV_ID, {"costs": {"nope": 1}}, "costs: unknown key"),
        (INTERACTIVE_ENV_ID, {"slack": -1}, "slack"),
    ],
)
def test_bad_env_config_is_a_clear_error(rows, env_id, env_config, match):
    row = rows["interactive" if env_id == INTERACTIVE_ENV_ID else "single"][0]
    with pytest.raises(ValueError, match=match):
        skyrl_gym.make(env_id, env_config=env_config, extras=_split(row)[2])


@pytest.mark.parametrize("env_id", [ENV_ID, INTERACTIVE_ENV_ID])
def test_bad_extras_are_a_clear_error(env_id):
    for extras in ({}, {"reward_spec": {"method": "rule"}}, {"reward_model": {"ground_truth": "{}"}}):
        with pytest.raises(ValueError, match=r"reward_spec.ground_truth.*--format skyrl"):
            skyrl_gym.make(env_id, env_config={}, extras=extras)
    with pytest.raises(ValueError, match="not a TVR problem as JSON"):
        skyrl_gym.make(env_id, env_config={}, extras={"reward_spec": {"ground_truth": "not json"}})


def test_the_turn_limit_is_the_settings_whatever_the_answer_length(rows):
    """The limit never tells how many steps the answer has: every crossview row gets the env's own limit."""
    limits, lengths = set(), set()
    for row in rows["interactive"]:
        _, _, extras = _split(row)
        sky = skyrl_gym.make(INTERACTIVE_ENV_ID, env_config={}, extras={**extras, "max_turns": 50})
        limits.add(sky.max_turns)
        lengths.add(row["extra_info"]["n_steps"])
    assert len(lengths) > 1 and limits == {_text_env(INTERACTIVE).unwrapped.turn_limit}


def test_a_single_shot_row_is_refused_by_the_interactive_env(rows):
    _, _, extras = _split(rows["single"][0])
    with pytest.raises(ValueError, match=r"extras.data_source: expected tvr-interactive/<setting>.*--format skyrl"):
        skyrl_gym.make(INTERACTIVE_ENV_ID, env_config={}, extras=extras)
    prompt, _, extras = _split(rows["interactive"][0])
    env = skyrl_gym.make(INTERACTIVE_ENV_ID, env_config={}, extras=extras)
    with pytest.raises(ValueError, match="not this episode's interactive prompt"):
        env.init(_split(rows["interactive"][1])[0])  # another row's prompt
    env = skyrl_gym.make(INTERACTIVE_ENV_ID, env_config={}, extras=extras)
    system = [{"role": "system", "content": "You are careful."}]
    assert env.init(system + prompt)[0] == system + prompt  # a system message may precede it
    with pytest.raises(ValueError, match=r"extras.max_turns \(generator.max_turns\)"):
        skyrl_gym.make(INTERACTIVE_ENV_ID, env_config={}, extras={**extras, "max_turns": 0})


def test_bad_registration_defaults_fail_at_registration():
    with pytest.raises(ValueError, match="reward: "):
        register_env("tvr_test_bad", reward="nope")
    with pytest.raises(ValueError, match="unknown key"):
        register_env("tvr_test_bad", interactive=True, reward="star")
    with pytest.raises(ValueError, match="costs"):
        register_env("tvr_test_bad", interactive=True, costs={"nope": 1})
    assert "tvr_test_bad" not in skyrl_gym.registry
