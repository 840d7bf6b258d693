"""The ``image-table`` observation (tvr_gym.envs.wrappers.ImageTableObservation) and its glimpse policy
(tvr_gym.agents.ppo_objects.ObjectGlimpseExtractor): images plus the initial object table, read per object."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import tvr_gym  # noqa: F401  (registers the ids)
from tvr_gym.agents.evaluate import evaluate
from tvr_gym.agents.ppo import DEFAULT_N_ENVS, DEFAULT_PPO_KWARGS, SETTINGS_FILE, PPOAgent, train_ppo
from tvr_gym.agents.ppo_objects import ObjectGlimpseExtractor
from tvr_gym.core.answer import parse_answer
from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import applied
from tvr_gym.envs.wrappers import (
    FEATURES_PER_OBJECT,
    GLIMPSE_OFFSETS,
    encode_state,
    glimpse_points,
    make_sb3_env,
)
from tvr_gym.problems.occlusion import instance_mask
from tvr_gym.render.rig import camera_rig

from props import examples

SMALL = (64, 48)
N, F, G = SPEC.n_objects, FEATURES_PER_OBJECT, len(GLIMPSE_OFFSETS)
CENTRE = G // 2
PARKED = [(-40, -40), (-40, 0), (-40, 40), (0, -40), (0, 40), (40, -40), (40, 0), (40, 40), (-40, 25)]
"""Nine hidden slots outside the visible square."""


def _lone(obj: SceneObject) -> State:
    return State((obj, *(SceneObject("gray", "rubber", "cube", "small", p) for p in PARKED)))


# ---------------------------------------------------------------------------- the observation


@pytest.mark.parametrize("env_id", ["TVR-Basic-v0", "TVR-Event-v0"])
def test_both_checkers_pass_without_warnings(env_id):
    env = make_sb3_env(env_id, "image-table", render_size=SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught if "different from the unwrapped" not in str(w.message)] == []


def test_crossview_is_refused_because_its_final_camera_differs():
    with pytest.raises(ValueError, match="image-table needs the final image from the center camera"):
        make_sb3_env("TVR-CrossView-v0", "image-table", render_size=SMALL)
    centre_only = make_sb3_env("TVR-CrossView-v0", "image-table", render_size=SMALL, final_views=["center"])
    assert centre_only.reset(seed=0)[0]["images"].shape == (48, 64, 6)


def test_observation_holds_the_images_the_initial_table_and_its_points_but_not_the_final_table():
    env = make_sb3_env("TVR-Event-v0", "image-table", render_size=SMALL)
    base = gym.make("TVR-Event-v0", render_size=SMALL)
    for seed in (0, 1, 2):
        obs, info = env.reset(seed=seed)
        raw, _ = base.reset(seed=seed)
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs["images"][..., :3], raw["initial"])
        np.testing.assert_array_equal(obs["images"][..., 3:], raw["final"])
        initial, final = (State.from_dicts(s["objects"]) for s in info["problem"]["states"])
        np.testing.assert_array_equal(obs["table"], encode_state(initial))
        assert not np.array_equal(obs["table"], encode_state(final))  # the final table is only in the pixels
        np.testing.assert_array_equal(obs["points"], glimpse_points(initial, SMALL).reshape(-1))
        obs["table"][:] = 9.0  # the wrapper hands out copies: the step's observation is still the episode's
        after, *_ = env.step(env.action_space.sample())
        np.testing.assert_array_equal(after["table"], encode_state(initial))
        np.testing.assert_array_equal(after["points"], glimpse_points(initial, SMALL).reshape(-1))


visible = st.integers(-SPEC.visible_limit + 3, SPEC.visible_limit - 3)


@settings(max_examples=examples(40), deadline=None)
@given(
    x=visible, y=visible, shape=st.sampled_from(SPEC.values["shape"]), size=st.sampled_from(SPEC.values["size"])
)
def test_an_objects_centre_point_falls_on_its_silhouette(x, y, shape, size):
    """Checked against the occlusion rule's ray caster (an independent projection)."""
    state = _lone(SceneObject("red", "rubber", shape, size, (x, y)))
    w, h = 320, 240
    mask = instance_mask(state, camera_rig("center"), (w, h))
    px, py = glimpse_points(state, (w, h))[0, CENTRE]
    u, v = int((px + 1) / 2 * w), int((py + 1) / 2 * h)
    assert mask[v, u] == 0


reach = SPEC.grid_limit - max(SPEC.steps) * SPEC.cells_per_step


@settings(max_examples=examples(40), deadline=None)
@given(x=st.integers(-reach, reach), y=st.integers(-reach, reach), size=st.sampled_from(SPEC.values["size"]))
def test_every_place_one_move_away_is_a_glimpse_point(x, y, size):
    """After any position step, the object's centre point is one of its glimpse points before the step."""
    obj = SceneObject("red", "metal", "cylinder", size, (x, y))
    before = glimpse_points(_lone(obj), SMALL)[0]
    hit = set()
    for direction in SPEC.directions:
        for step in SPEC.steps:
            after = glimpse_points(_lone(applied(obj, "position", (direction, step))), SMALL)[0, CENTRE]
            matches = [k for k in range(G) if np.allclose(before[k], after, atol=1e-5)]
            assert len(matches) == 1, (direction, step)
            hit.add(matches[0])
    assert len(hit) == len(SPEC.directions) * len(SPEC.steps) and CENTRE not in hit
    assert GLIMPSE_OFFSETS[CENTRE] == (0, 0)


# ---------------------------------------------------------------------------- the extractor


def _space(h: int = 48, w: int = 64) -> spaces.Dict:
    """The Dict as SB3 hands it to the extractor: images channel-first."""
    return spaces.Dict(
        {
            "images": spaces.Box(0, 255, (6, h, w), np.uint8),
            "table": spaces.Box(-1.0, 1.0, (N * F,), np.float32),
            "points": spaces.Box(-4.0, 4.0, (N * G * 2,), np.float32),
        }
    )


def _net() -> ObjectGlimpseExtractor:
    torch.manual_seed(0)
    return ObjectGlimpseExtractor(_space(), hidden=16, channels=8)


@settings(max_examples=examples(20), deadline=None)
@given(seed=st.integers(0, 2**16), order=st.permutations(range(N)))
def test_the_extractor_treats_every_object_slot_alike(seed, order):
    net = _net()
    rng = np.random.default_rng(seed)
    obs = {
        "images": torch.as_tensor(rng.uniform(0, 1, (1, 6, 48, 64)), dtype=torch.float32),
        "table": torch.as_tensor(rng.uniform(-1, 1, (1, N * F)), dtype=torch.float32),
        "points": torch.as_tensor(rng.uniform(-1, 1, (1, N * G * 2)), dtype=torch.float32),
    }
    order = list(order)
    permuted = {
        "images": obs["images"],
        "table": obs["table"].reshape(1, N, F)[:, order].reshape(1, -1),
        "points": obs["points"].reshape(1, N, G * 2)[:, order].reshape(1, -1),
    }
    with torch.no_grad():
        a, b = net(obs), net(permuted)
    assert a.shape == (1, net.features_dim) == (1, N + 2 * 16)
    torch.testing.assert_close(b[:, :N], a[:, order])
    torch.testing.assert_close(b[:, N:], a[:, N:])


def test_the_extractor_reads_each_object_where_its_points_fall():
    """A bright patch changes the score of the object whose glimpses land on it, and no other."""
    net = _net()
    points = torch.empty(1, N, G, 2)
    points[:, 0] = torch.tensor([-0.5, -0.5])  # object 0 looks at the top-left quarter
    points[:, 1:] = torch.tensor([0.5, 0.5])  # the others at the bottom-right one
    dark = torch.zeros(1, 6, 48, 64)
    lit = dark.clone()
    lit[:, 3:, 6:18, 8:24] = 1.0  # the final image, around (-0.5, -0.5)
    table = torch.zeros(1, N * F)
    with torch.no_grad():
        plain = net({"images": dark, "table": table, "points": points.reshape(1, -1)})[0, :N]
        seen = net({"images": lit, "table": table, "points": points.reshape(1, -1)})[0, :N]
    assert torch.allclose(plain, plain[0]) and seen[0] != plain[0]
    torch.testing.assert_close(seen[1:], plain[1:])


def test_the_extractor_refuses_other_observations():
    with pytest.raises(ValueError, match="image-table"):
        ObjectGlimpseExtractor(spaces.Dict({"images": spaces.Box(0, 255, (3, 48, 64), np.uint8)}))
    bad = _space()
    bad.spaces["points"] = spaces.Box(-4.0, 4.0, (7,), np.float32)
    with pytest.raises(ValueError, match="do not hold"):
        ObjectGlimpseExtractor(bad)


# ---------------------------------------------------------------------------- train, load, evaluate


def test_a_trained_agent_sees_in_evaluation_what_it_saw_in_training(tmp_path):
    out = tmp_path / "run"
    trained = train_ppo(
        "TVR-Basic-v0", 64, out, obs="image-table", render_size=SMALL, n_envs=2, n_steps=32, batch_size=32,
        n_epochs=1, checkpoint_every=0,
    )  # fmt: skip
    saved = json.loads((out / SETTINGS_FILE).read_text())
    assert (saved["obs"], saved["arch"], saved["lr_schedule"]) == ("image-table", "glimpses", "decay")
    assert isinstance(trained.model.policy.features_extractor, ObjectGlimpseExtractor)
    agent = PPOAgent.load(out)
    assert agent.privileged and isinstance(agent.model.policy.features_extractor, ObjectGlimpseExtractor)

    wrapped = make_sb3_env("TVR-Basic-v0", "image-table", render_size=SMALL)
    raw_env = gym.make("TVR-Basic-v0", render_size=SMALL)
    for seed in range(4):
        obs, _ = wrapped.reset(seed=seed)
        raw, info = raw_env.reset(seed=seed)
        agent.observe_privileged(info)
        direct, _ = agent.model.predict({k: v[None] for k, v in obs.items()}, deterministic=True)
        assert agent.act(raw) == agent.encoding.text(direct[0])

    with pytest.raises(RuntimeError, match="observe_privileged"):
        agent.act(raw)
    with pytest.raises(ValueError, match="does not match the settings"):  # a Box model under image-table settings
        PPOAgent(train_ppo("TVR-Basic-v0", 8, tmp_path / "sym", obs="symbolic", render_size=(16, 12), n_envs=1,
                           n_steps=8, batch_size=8, checkpoint_every=0).model, agent.settings)  # fmt: skip
    result = evaluate(agent, "TVR-Basic-v0", 3, env_kwargs={"render_size": SMALL}, progress=False)
    assert len(result.records) == 3 and all(parse_answer(r["answer"]).well_formed for r in result.records)


def test_image_table_runs_have_their_own_defaults(tmp_path):
    agent = train_ppo(
        "TVR-Basic-v0", 16, tmp_path / "d", obs="image-table", render_size=SMALL, n_steps=8, batch_size=16,
        checkpoint_every=0,
    )  # fmt: skip
    saved = json.loads((tmp_path / "d" / SETTINGS_FILE).read_text())
    assert saved["n_envs"] == DEFAULT_N_ENVS["image-table"] == agent.model.n_envs
    assert saved["ppo_kwargs"] == {**DEFAULT_PPO_KWARGS["image-table"], "n_steps": 8, "batch_size": 16}
