"""The Stable-Baselines3 wrappers (tvr_gym.envs.wrappers) and the PPO agent (tvr_gym.agents.ppo)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import tvr_gym  # noqa: F401  (registers the ids)
from tvr_gym.agents import make_agent
from tvr_gym.agents.evaluate import evaluate
from tvr_gym.agents.ppo import MODEL_FILE, SETTINGS_FILE, PPOAgent, train_from_config, train_ppo
from tvr_gym.core.answer import parse_answer
from tvr_gym.core.reward import star_reward
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem, save_trance
from tvr_gym.core.transform import PAIRS
from tvr_gym.envs.wrappers import (
    FEATURES_PER_OBJECT,
    AnswerEncoding,
    DiscreteAnswer,
    SymbolicObservation,
    make_sb3_env,
    wrap_for_sb3,
)
from tvr_gym.problems.generator import generate

from props import examples

SMALL = (64, 48)  # the smallest convenient size NatureCNN (CnnPolicy) accepts is 36x36
TINY = (16, 12)  # symbolic runs ignore pixels


def _checker_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings other than gymnasium's note that a wrapped env is checked (which is the point here)."""
    return [str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)]


# ---------------------------------------------------------------------------- wrapper: checkers and spaces


@pytest.mark.parametrize("env_id", ["TVR-Basic-v0", "TVR-Event-v0"])
@pytest.mark.parametrize("obs", ["image", "symbolic"])
def test_both_checkers_pass_without_warnings(env_id, obs):
    env = make_sb3_env(env_id, obs, render_size=SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    assert _checker_warnings(caught) == []


def test_spaces_follow_the_documented_encoding():
    basic = make_sb3_env("TVR-Basic-v0", "image", render_size=SMALL)
    assert basic.action_space == gym.spaces.MultiDiscrete([10, 33])
    assert basic.observation_space == gym.spaces.Box(0, 255, (48, 64, 6), np.uint8)
    event = make_sb3_env("TVR-CrossView-v0", "symbolic", render_size=SMALL)
    assert event.action_space == gym.spaces.MultiDiscrete([5] + [10, 33] * 4)
    assert event.observation_space.shape == (2 * 10 * FEATURES_PER_OBJECT,)
    assert FEATURES_PER_OBJECT == 8 + 3 + 3 + 3 + 3  # color, material, shape, size one-hot; x, y, visible
    two = make_sb3_env("TVR-Event-v0", "image", max_items=2, render_size=SMALL)
    assert two.action_space == gym.spaces.MultiDiscrete([3, 10, 33, 10, 33])


def test_image_observation_stacks_the_env_images_and_reward_is_the_envs():
    env = make_sb3_env("TVR-Event-v0", "image", render_size=SMALL)
    base = gym.make("TVR-Event-v0", render_size=SMALL)
    obs, info = env.reset(seed=7)
    raw, raw_info = base.reset(seed=7)
    assert obs.dtype == np.uint8 and obs.shape == (48, 64, 6)
    np.testing.assert_array_equal(obs[..., :3], raw["initial"])
    np.testing.assert_array_equal(obs[..., 3:], raw["final"])
    action = np.array([2, 3, 0, 7, 12, 0, 0, 0, 0])  # 2 items: 3.color.gray, 7.position.<PAIRS[12]>
    _, reward, terminated, truncated, step_info = env.step(action)
    attr, value = PAIRS[12]
    assert parse_answer(step_info["answer"]).steps == [(3, "color", "gray"), (7, attr, value)]
    problem = Problem.from_dict(raw_info["problem"])
    assert reward == pytest.approx(star_reward(step_info["answer"], problem).total)
    assert terminated and not truncated


def _decode_table(vector: np.ndarray) -> list[dict]:
    """Independent inverse of the symbolic encoding: TRANCE object dicts from one table."""
    rows = vector.reshape(SPEC.n_objects, FEATURES_PER_OBJECT)
    objects = []
    for row in rows:
        obj, k = {}, 0
        for attr in ("color", "material", "shape", "size"):
            n = len(SPEC.values[attr])
            assert row[k : k + n].sum() == 1.0  # exactly one-hot
            obj[attr] = SPEC.values[attr][int(np.argmax(row[k : k + n]))]
            k += n
        obj["position"] = [round(float(row[k]) * SPEC.grid_limit), round(float(row[k + 1]) * SPEC.grid_limit)]
        obj["visible"] = bool(row[k + 2])
        objects.append(obj)
    return objects


@pytest.mark.parametrize("env_id", ["TVR-Basic-v0", "TVR-CrossView-v0"])
def test_symbolic_observation_holds_both_object_tables(env_id):
    env = make_sb3_env(env_id, "symbolic", render_size=TINY)
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed)
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        half = obs.size // 2
        for vector, state in zip((obs[:half], obs[half:]), info["problem"]["states"]):
            decoded = _decode_table(vector)
            for got, want in zip(decoded, state["objects"]):
                assert {k: got[k] for k in ("color", "material", "shape", "size")} == {
                    k: want[k] for k in ("color", "material", "shape", "size")
                }
                assert got["position"] == list(want["position"])
                lim = SPEC.visible_limit
                assert got["visible"] == all(-lim <= v <= lim for v in want["position"])


# ---------------------------------------------------------------------------- the action encoding


@st.composite
def actions(draw, max_items: int):
    enc = AnswerEncoding(max_items)
    return np.array([draw(st.integers(0, int(n) - 1)) for n in enc.nvec], dtype=np.int64)


@pytest.mark.parametrize("max_items", [1, 4])
@settings(max_examples=examples(150), deadline=None)
@given(data=st.data())
def test_every_action_decodes_to_text_the_parser_reads_back(max_items, data):
    enc = AnswerEncoding(max_items)
    action = data.draw(actions(max_items))
    count, items = (int(action[0]), action[1:]) if max_items > 1 else (1, action)
    expected = [(int(items[2 * k]), *PAIRS[int(items[2 * k + 1])]) for k in range(count)]
    text = enc.text(action)
    parsed = parse_answer(text)
    assert parsed.well_formed and parsed.errors == [] and parsed.n_unreadable == 0
    assert parsed.steps == expected
    used = 1 + 2 * count if max_items > 1 else 2
    assert enc.encode(parsed.steps)[:used].tolist() == action[:used].tolist()


def test_action_space_samples_score_in_the_env():
    env = make_sb3_env("TVR-Event-v0", "symbolic", render_size=TINY)
    env.action_space.seed(3)
    for seed in range(5):
        env.reset(seed=seed)
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and np.isfinite(reward)
        assert parse_answer(info["answer"]).well_formed


@pytest.mark.parametrize(
    "action",
    [np.array([10, 0]), np.array([0, 33]), np.array([-1, 0]), np.array([1, 2, 3]), np.array([0.5, 1.0]), "1.color.red"],
)
def test_bad_actions_get_a_clear_error(action):
    env = make_sb3_env("TVR-Basic-v0", "symbolic", render_size=TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_bad_wrapper_arguments_get_a_clear_error():
    base = gym.make("TVR-Basic-v0", render_size=TINY)
    with pytest.raises(ValueError, match="obs: unknown value 'pixels'; valid: image, symbolic"):
        wrap_for_sb3(base, "pixels")
    for bad in (0, 17, 1.5, True):
        with pytest.raises(ValueError, match="max_items"):
            DiscreteAnswer(base, bad)
    with pytest.raises(ValueError, match="TVRGym"):
        SymbolicObservation(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="env: unknown id"):
        make_sb3_env("TVR-Nope-v0")
    with pytest.raises(ValueError, match="steps"):
        AnswerEncoding(1).encode([])


# ---------------------------------------------------------------------------- PPO: train, save, load, act


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, PPOAgent]:
    out = tmp_path_factory.mktemp("ppo_image")
    agent = train_ppo(
        "TVR-Basic-v0", 64, out, seed=0, obs="image", render_size=SMALL,
        n_steps=32, batch_size=32, n_epochs=1, checkpoint_every=32,
    )  # fmt: skip
    return out, agent


def test_training_writes_model_settings_checkpoints_and_tensorboard(image_run):
    out, agent = image_run
    assert (out / MODEL_FILE).is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("*.zip")) == ["ppo_32_steps.zip", "ppo_64_steps.zip"]
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert list((out / "monitor").glob("*.monitor.csv"))
    settings_json = json.loads((out / SETTINGS_FILE).read_text())
    assert settings_json["obs"] == "image" and settings_json["render_size"] == list(SMALL)
    assert settings_json["max_items"] == 1 and settings_json["env_id"] == "TVR-Basic-v0"
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_reloaded_agent_answers_like_the_trained_one(image_run):
    out, agent = image_run
    loaded = make_agent(f"ppo:{out}")
    assert isinstance(loaded, PPOAgent) and not loaded.privileged
    env = gym.make("TVR-Basic-v0", render_size=SMALL)
    observations = [env.reset(seed=s)[0] for s in range(4)]
    answers = loaded.act_batch(observations)
    assert answers == agent.act_batch(observations)
    assert answers == [loaded.act(o) for o in observations]
    for answer in answers:
        parsed = parse_answer(answer)
        assert parsed.well_formed and len(parsed.steps) == 1
    checkpoint = PPOAgent.load(out / "checkpoints" / "ppo_32_steps.zip")
    assert all(parse_answer(a).well_formed for a in checkpoint.act_batch(observations))


def test_image_agent_resizes_other_render_sizes_and_runs_in_the_evaluator(image_run):
    out, _ = image_run
    agent = PPOAgent.load(out)
    big = gym.make("TVR-Basic-v0", render_size=(96, 72))
    assert parse_answer(agent.act(big.reset(seed=1)[0])).well_formed
    result = evaluate(agent, "TVR-Basic-v0", 3, env_kwargs={"render_size": SMALL}, progress=False)
    assert len(result.records) == 3 and all(parse_answer(r["answer"]).well_formed for r in result.records)
    with pytest.raises(ValueError, match="observation"):
        agent.act({"initial": np.zeros((48, 64, 3), np.uint8)})


def test_load_errors_are_clear(tmp_path, image_run):
    with pytest.raises(FileNotFoundError, match="no model"):
        PPOAgent.load(tmp_path / "missing")
    out, _ = image_run
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FILE).write_bytes((out / MODEL_FILE).read_bytes())
    with pytest.raises(FileNotFoundError, match=SETTINGS_FILE):
        PPOAgent.load(broken)
    (broken / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid PPO settings file"):
        PPOAgent.load(broken)
    settings_json = json.loads((out / SETTINGS_FILE).read_text())
    (broken / SETTINGS_FILE).write_text(json.dumps({**settings_json, "obs": "symbolic"}))
    with pytest.raises(ValueError, match="'cnn' is not a symbolic policy"):
        PPOAgent.load(broken)
    (broken / SETTINGS_FILE).write_text(json.dumps({**settings_json, "obs": "symbolic", "arch": None}))
    with pytest.raises(ValueError, match="observation shape"):
        PPOAgent.load(broken)
    (broken / SETTINGS_FILE).write_text(json.dumps({**settings_json, "max_items": 4}))
    with pytest.raises(ValueError, match="action space"):
        PPOAgent.load(broken)
    (broken / SETTINGS_FILE).write_text(json.dumps(settings_json))
    (broken / MODEL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable SB3 PPO model"):
        PPOAgent.load(broken)


def test_train_ppo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="obs: unknown value"):
        train_ppo("TVR-Basic-v0", 10, tmp_path, obs="pixels")
    with pytest.raises(ValueError, match="env: unknown id"):
        train_ppo("TVR-Nope-v0", 10, tmp_path)
    with pytest.raises(ValueError, match="timesteps"):
        train_ppo("TVR-Basic-v0", 0, tmp_path)
    with pytest.raises(ValueError, match="vec_env"):
        train_ppo("TVR-Basic-v0", 10, tmp_path, vec_env="ray")
    with pytest.raises(ValueError, match="max_visible"):
        train_ppo("TVR-Basic-v0", 10, tmp_path, env_kwargs={"max_visible": 99})
    assert not (tmp_path / MODEL_FILE).exists()


def test_cli_trains_a_symbolic_agent_the_evaluator_can_run(tmp_path):
    from tvr_gym.apps.cli import main

    out = tmp_path / "run"
    argv = [
        "train", "ppo", "--env", "TVR-Event-v0", "--timesteps", "32", "--out", str(out), "--obs-mode", "symbolic",
        "--n-steps", "32", "--batch-size", "32", "--size", "16", "12", "--quiet", "--checkpoint-every", "0",
        "--seed", "3",
    ]  # fmt: skip
    assert main(argv) == 0
    assert (out / MODEL_FILE).is_file() and not (out / "checkpoints").exists()
    agent = make_agent(f"ppo:{out}")
    assert agent.privileged and agent.encoding.max_items == 4
    with pytest.raises(RuntimeError, match="observe_privileged"):
        agent.act({})
    result = evaluate(agent, "TVR-Event-v0", 4, env_kwargs={"render_size": TINY}, progress=False, batch_size=2)
    assert [parse_answer(r["answer"]).well_formed for r in result.records] == [True] * 4


# ---------------------------------------------------------------------------- PPO learns


def _color_dataset(path: Path, seed: int, n: int) -> Path:
    """Basic problems with one visible object whose color changes: an easy, perception-free variant."""
    save_trance((generate("basic", seed, index=i, attributes=["color"], visible=(1, 1)) for i in range(n)), path)
    return path


def _held_out_scores(agent: PPOAgent, source: Path) -> tuple[float, float]:
    """Mean STAR reward and AttrAcc of greedy answers on 128 fixed episodes of ``source``."""
    result = evaluate(agent, "TVR-Basic-v0", 128, seed=0, env_kwargs={"source": source, "render_size": TINY},
                      progress=False)  # fmt: skip
    rewards = [r["reward"] for r in result.records]
    return float(np.mean(rewards)), float(np.mean([r["metrics"]["attr_acc"] for r in result.records]))


def test_ppo_learns_the_easy_symbolic_variant_on_held_out_problems(tmp_path):
    train = _color_dataset(tmp_path / "train", seed=1, n=256)
    held_out = _color_dataset(tmp_path / "held_out", seed=2, n=64)
    common = {"obs": "symbolic", "render_size": TINY, "env_kwargs": {"source": train}, "seed": 0, "n_envs": 1,
              "checkpoint_every": 0, "n_steps": 128, "batch_size": 32, "n_epochs": 10, "ent_coef": 0.0}  # fmt: skip
    # learning_rate=0 keeps the initial weights of the same seed: the policy before training
    before = train_ppo("TVR-Basic-v0", 64, tmp_path / "before", learning_rate=0.0, **common)
    after = train_ppo("TVR-Basic-v0", 6144, tmp_path / "after", learning_rate=1e-3, **common)
    r_before, attr_before = _held_out_scores(before, held_out)
    r_after, attr_after = _held_out_scores(after, held_out)
    # measured with the default per-object network (seeds 0-2): trained 3.07-3.43 reward, AttrAcc 1.0 (the flat
    # MlpPolicy reached 0.42-0.50 and 0.95-1.0 in half the steps at 3e-3, and the per-object network is unstable
    # there). Numerics differ between machines, so both gains are checked with a margin of a third or more.
    assert r_after > r_before + 1.0, (r_before, r_after)
    assert attr_after > attr_before + 0.4, (attr_before, attr_after)  # it learned the changed attribute


# ---------------------------------------------------------------------------- the per-object extractor


def _extractor(extra: int = 0, hidden: int = 16):
    import torch
    from gymnasium import spaces

    from tvr_gym.agents.ppo_objects import ObjectTableExtractor

    torch.manual_seed(0)
    size = 2 * SPEC.n_objects * FEATURES_PER_OBJECT + extra
    return ObjectTableExtractor(spaces.Box(-1.0, 1.0, (size,), np.float32), hidden=hidden)


@pytest.mark.parametrize("extra", [0, 1])
@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**16), order=st.permutations(range(SPEC.n_objects)))
def test_the_extractor_treats_every_object_slot_alike(extra, seed, order):
    """Shared weights: reordering the objects (the same way in both tables) reorders the scores and leaves
    the pooled features as they are, so no slot is learned separately."""
    import torch

    net = _extractor(extra)
    n, f = SPEC.n_objects, FEATURES_PER_OBJECT
    obs = torch.as_tensor(np.random.default_rng(seed).uniform(-1, 1, (1, net.table_size + extra)), dtype=torch.float32)
    tables = obs[:, : net.table_size].reshape(1, 2, n, f)
    permuted = torch.cat([tables[:, :, list(order)].reshape(1, -1), obs[:, net.table_size :]], dim=1)
    with torch.no_grad():
        a, b = net(obs), net(permuted)
    assert a.shape == (1, net.features_dim) == (1, n + 2 * 16 + extra)
    torch.testing.assert_close(b[:, :n], a[:, list(order)])  # the scores follow their objects
    torch.testing.assert_close(b[:, n:], a[:, n:])  # pooled, max and the trailing numbers do not move


def test_the_extractor_sees_the_change_between_the_tables():
    """An object whose two rows differ is read differently from one whose rows are equal."""
    import torch

    net = _extractor()
    same = torch.zeros(1, net.table_size)
    changed = same.clone()
    changed[0, net.table_size // 2 + 3] = 1.0  # object 0, feature 3 of the second table
    with torch.no_grad():
        scores_same, scores_changed = net(same)[0, : SPEC.n_objects], net(changed)[0, : SPEC.n_objects]
    assert torch.allclose(scores_same, scores_same[0])  # equal objects, equal scores
    assert scores_changed[0] != scores_same[0] and torch.allclose(scores_changed[1:], scores_same[1:])


def test_the_extractor_refuses_an_observation_without_two_tables():
    from gymnasium import spaces

    from tvr_gym.agents.ppo_objects import ObjectTableExtractor

    with pytest.raises(ValueError, match="fewer than two object tables"):
        ObjectTableExtractor(spaces.Box(-1.0, 1.0, (10,), np.float32))


def test_symbolic_runs_default_to_the_extractor_and_record_it(tmp_path):
    from tvr_gym.agents.ppo_objects import ObjectTableExtractor

    common = {
        "obs": "symbolic",
        "render_size": TINY,
        "checkpoint_every": 0,
        "n_steps": 32,
        "batch_size": 32,
        "n_envs": 1,
    }
    agent = train_ppo("TVR-Basic-v0", 32, tmp_path / "objects", **common)
    assert isinstance(agent.model.policy.features_extractor, ObjectTableExtractor)
    assert json.loads((tmp_path / "objects" / SETTINGS_FILE).read_text())["arch"] == "objects"
    loaded = PPOAgent.load(tmp_path / "objects")
    assert isinstance(loaded.model.policy.features_extractor, ObjectTableExtractor)
    flat = train_ppo("TVR-Basic-v0", 32, tmp_path / "mlp", arch="mlp", **common)
    assert not isinstance(flat.model.policy.features_extractor, ObjectTableExtractor)
    with pytest.raises(ValueError, match="arch"):
        train_ppo("TVR-Basic-v0", 32, tmp_path / "bad", arch="cnn", **common)
    with pytest.raises(ValueError, match="policy_kwargs"):
        train_ppo("TVR-Basic-v0", 32, tmp_path / "bad", policy_kwargs={}, **common)


def test_train_ppo_defaults_are_the_symbolic_recipe_and_each_kind_keeps_its_own(tmp_path):
    """`tvr-gym train ppo` with no options trains the measured symbolic recipe (docs/ppo.md)."""
    from tvr_gym.agents.ppo import DEFAULT_N_ENVS, DEFAULT_PPO_KWARGS, DEFAULT_TIMESTEPS, PPOConfig, run_kind

    cfg = PPOConfig(out=str(tmp_path / "default"), checkpoint_every=0, quiet=True, env_kwargs={"max_visible": 2})
    assert cfg.timesteps is None and run_kind(cfg.env, cfg.obs_mode) == "symbolic"
    assert DEFAULT_TIMESTEPS["symbolic"] >= 150_000  # the learning curves reach Acc 0.9 after about 120k steps
    assert DEFAULT_TIMESTEPS["interactive"] >= 400_000  # interactive Basic reaches Success 0.9 at 240k-300k steps
    cfg.timesteps = 16
    agent = train_from_config(cfg)
    saved = json.loads((tmp_path / "default" / SETTINGS_FILE).read_text())
    assert (saved["obs"], saved["arch"], saved["n_envs"]) == ("symbolic", "objects", DEFAULT_N_ENVS["symbolic"])
    assert saved["ppo_kwargs"] == DEFAULT_PPO_KWARGS["symbolic"] and agent.model.ent_coef > 0
    assert agent.model.n_envs == 8 and saved["lr_schedule"] == "decay"
    lr = DEFAULT_PPO_KWARGS["symbolic"]["learning_rate"]  # held for the first half, then linearly to 0
    schedule = agent.model.lr_schedule
    assert [schedule(r) for r in (1.0, 0.6, 0.5, 0.25, 0.0)] == pytest.approx([lr, lr, lr, lr / 2, 0.0])
    reloaded = PPOAgent.load(tmp_path / "default")  # the schedule object survives SB3's save and load
    assert reloaded.model.lr_schedule(0.25) == pytest.approx(lr / 2)
    image = PPOConfig(out=str(tmp_path / "image"), obs_mode="image", size=[36, 36], timesteps=8, n_steps=8,
                      batch_size=8, checkpoint_every=0, quiet=True)  # fmt: skip
    train_from_config(image)
    saved = json.loads((tmp_path / "image" / SETTINGS_FILE).read_text())
    assert saved["n_envs"] == DEFAULT_N_ENVS["image"] and saved["arch"] == "cnn" and saved["lr_schedule"] == "constant"
    assert saved["ppo_kwargs"] == {**DEFAULT_PPO_KWARGS["image"], "n_steps": 8, "batch_size": 8}


def test_symbolic_runs_skip_the_images_and_learn_exactly_as_with_them(tmp_path, torch_one_thread):
    """A symbolic run draws no pixels (``renderer="none"`` unless it names one), and the pixels it skips
    change nothing it learns: the same seed gives the same weights as a run that renders with ``numpy``."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    class Renderers(BaseCallback):
        def _on_training_start(self) -> None:
            self.names = {env.unwrapped.renderer_name for env in self.training_env.envs}

        def _on_step(self) -> bool:
            return True

    def weights(env_kwargs, name, renderer):
        seen = Renderers()
        agent = train_ppo("TVR-Basic-v0", 128, tmp_path / name, obs="symbolic", env_kwargs=env_kwargs,
                          checkpoint_every=0, n_steps=16, batch_size=64, callbacks=[seen])  # fmt: skip
        assert seen.names == {renderer}
        assert agent.settings.env_kwargs == env_kwargs  # the default renderer is not written into the settings
        return torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()])

    assert torch.equal(weights({}, "blank", "none"), weights({"renderer": "numpy"}, "numpy", "numpy"))
