"""TVR-Interactive-v0: turns, rewards that telescope, the end of an episode, state, groups and the chat contract."""

from __future__ import annotations

import asyncio
import json
import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import tvr_gym  # noqa: F401 (registers the ids)
from tvr_gym.core.answer import format_answer, format_item, read_turn
from tvr_gym.core.chat import Exchange, ImageBudget, count_images, interactive_messages
from tvr_gym.core.reward import StarWeights, StateWeights
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS, changed_entries, state_distance
from tvr_gym.envs.board import POTENTIALS, TIER_CREDIT
from tvr_gym.envs.frames import frame_size
from tvr_gym.envs.interactive import (
    DEFAULT_COSTS,
    DEFAULT_IDLE_COST,
    DEFAULT_SUCCESS_BONUS,
    AsyncTVRInteractive,
    TVRInteractive,
)  # fmt: skip

from props import examples

FAST = {"renderer": "numpy", "render_size": (32, 24)}


def make(**kwargs) -> TVRInteractive:
    return TVRInteractive(**{**FAST, **kwargs})


def truth(env: TVRInteractive) -> list[str]:
    return [f"<answer>{format_item(t)}</answer>" for t in env.problem.transformations]


def any_step(rng: np.random.Generator) -> str:
    attr, value = PAIRS[int(rng.integers(len(PAIRS)))]
    return format_item((int(rng.integers(SPEC.n_objects)), attr, value))


ACTIONS = st.lists(st.integers(0, 9), min_size=0, max_size=10)
"""Turn recipes: 0-3 the next true step, 4-6 any step, 7 garbage, 8 two steps at once, 9 done."""


def _action(code: int, env: TVRInteractive, rng: np.random.Generator, k: int) -> str:
    steps = truth(env)
    if code <= 3:
        return steps[k % len(steps)]
    if code <= 6:
        return any_step(rng)
    if code == 7:
        return "<answer>nonsense words</answer>"
    if code == 8:
        return f"{any_step(rng)}, {any_step(rng)}"
    return "done"


# -- rewards ------------------------------------------------------------------------------------------


@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), codes=ACTIONS, setting=st.sampled_from(["basic", "event", "crossview"]),
       potential=st.sampled_from(POTENTIALS))  # fmt: skip
def test_turn_rewards_telescope_to_the_change_in_potential(seed, codes, setting, potential):
    env = make(setting=setting, potential=potential)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    start = env.potential()
    progress = rewards = costs = terminal = 0.0
    ended = False
    for k, code in enumerate(codes + [9]):
        before, before_potential = env.current, env.potential()
        _, reward, terminated, truncated, info = env.step(_action(code, env, rng, k))
        progress += info["progress"]
        rewards += reward
        costs += DEFAULT_COSTS.get(info["outcome"], 0.0)
        assert info["progress"] == env.potential() - before_potential
        if potential == "distance":
            assert env.potential() == -state_distance(env.current, env.problem.final)
        if info["outcome"] != "applied":
            assert env.current == before, info["outcome"]  # nothing but an applied step changes the state
        if terminated or truncated:
            terminal = info["terminal"] + info["bonus"]
            won = DEFAULT_SUCCESS_BONUS if terminated and info["interactive"]["success"] else 0.0
            idle = DEFAULT_IDLE_COST if not changed_entries(env.problem.initial, env.current) else 0.0
            assert info["bonus"] == won - idle
            ended = True
            break
    assert ended
    assert progress == pytest.approx(env.potential() - start)
    assert rewards == pytest.approx(env.potential() - start - costs + terminal)


def test_the_true_steps_then_done_score_the_maximum_and_succeed():
    for setting in ("basic", "event", "crossview"):
        env = make(setting=setting, potential="distance", success_bonus=0.0)
        env.reset(seed=11)
        n = len(env.problem.transformations)
        total = 0.0
        for action in truth(env):
            _, reward, terminated, truncated, info = env.step(action)
            assert info["outcome"] == "applied" and not (terminated or truncated)
            total += reward
        assert env.potential() == 0.0 and str(env.potential()) == "0.0"  # never -0.0
        _, reward, terminated, truncated, info = env.step("<think>all done</think><answer>done</answer>")
        total += reward
        assert terminated and not truncated
        best = StateWeights().full * n  # the state reward's maximum; no format term (an episode has no text)
        assert info["terminal"] == pytest.approx(best) and info["terminal_terms"]["format"] == 0.0
        expected = {"success": 1.0, "misplaced": 0.0, "fixed_strict": 1.0, "turns": n + 1, "applied": n}
        assert info["interactive"] == expected
        assert info["metrics"]["acc"] == 1.0
        assert total == pytest.approx(float(state_distance(env.problem.initial, env.problem.final)) + best)


def test_done_at_once_scores_the_empty_answer_and_pays_the_idle_cost():
    env = make()
    env.reset(seed=5)
    _, reward, terminated, _, info = env.step("done")
    assert terminated and info["progress"] == 0.0
    n = len(env.problem.transformations)  # nothing changed: every true step missing, and no format term
    assert info["terminal"] == pytest.approx(-StateWeights().missing * n) and info["terminal_terms"]["format"] == 0.0
    assert info["bonus"] == -DEFAULT_IDLE_COST and reward == pytest.approx(info["terminal"] - DEFAULT_IDLE_COST)
    assert info["interactive"]["success"] == 0.0 and info["interactive"]["misplaced"] == 1.0
    assert info["metrics"]["acc"] == 0.0


TERMINAL_MAXIMUM = {
    "state": lambda n: StateWeights().full * n,
    "star": lambda n: StarWeights().full * n,
    "sparse": lambda n: 1.0,
}
"""The best terminal reward of an n-step episode: every true step right, and no format term."""


@settings(max_examples=examples(40), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), codes=ACTIONS, terminal=st.sampled_from(sorted(TERMINAL_MAXIMUM)),
       setting=st.sampled_from(["basic", "event"]))  # fmt: skip
def test_terminal_rewards_agree_with_success(seed, codes, terminal, setting):
    """The terminal reward judges the state reached, not the path: its maximum exactly when the episode
    succeeds, and the metrics' Acc is the success; misplaced stays a share."""
    env = make(setting=setting, terminal_reward=terminal)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    info, done = {}, False
    for k, code in enumerate([*codes, 9]):
        _, _, terminated, truncated, info = env.step(_action(code, env, rng, k))
        if terminated or truncated:
            done = True
            break
    assert done
    best = TERMINAL_MAXIMUM[terminal](len(env.problem.transformations))
    success = info["interactive"]["success"]
    assert (info["terminal"] == pytest.approx(best)) == (success == 1.0), (info["applied"], info["truth"])
    assert info["terminal"] <= best + 1e-9 and info["metrics"]["acc"] == success
    assert 0.0 <= info["interactive"]["misplaced"] <= 1.0


def test_true_steps_that_cancel_out_are_earned_by_reaching_the_target():
    """Event seed 5667 paints object 4 gray and then red again (its colour at the start): reaching the target
    earns all four true steps, and ``done`` at once already matches the two that cancel out."""
    env = make(setting="event", terminal_reward="star")
    env.reset(seed=5667)
    truth = env.problem.truth_steps
    assert [s[1] for s in truth] == ["position", "color", "color", "position"]
    assert env.problem.initial.objects[4].color == env.problem.final.objects[4].color
    for step in truth:
        env.step(format_item(step))
    _, _, _, _, info = env.step("done")
    assert info["terminal"] == pytest.approx(StarWeights().full * 4) and info["interactive"]["success"] == 1.0
    env.reset(seed=5667)
    _, _, _, _, info = env.step("done")
    w = StarWeights()
    assert info["terminal"] == pytest.approx(2 * w.full - 2 * w.missing)  # the cancelled colour steps, nothing else


def _wrong_value(env: TVRInteractive, attr: str, obj: int) -> str:
    current, target = getattr(env.current.objects[obj], attr), getattr(env.problem.final.objects[obj], attr)
    return next(v for v in SPEC.values[attr] if v not in (current, target))


@pytest.mark.parametrize("terminal", sorted(TERMINAL_MAXIMUM))
def test_a_wrong_step_then_its_fix_ends_as_well_as_the_direct_path(terminal):
    """sparse once scored only the first applied step and star the whole path: a wrong step then its fix
    must end with the same terminal reward as the true steps alone."""
    for seed in range(40):
        env = make(setting="event", terminal_reward=terminal)
        env.reset(seed=seed)
        first = env.problem.transformations[0]
        if first.attr != "position":
            break
    detour = f"{first.obj_idx}.{first.attr}.{_wrong_value(env, first.attr, first.obj_idx)}"
    assert env.step(detour)[4]["outcome"] == "applied"
    for action in truth(env):
        env.step(action)
    *_, info = env.step("done")
    n = len(env.problem.transformations)
    assert info["interactive"]["success"] == 1.0
    assert info["terminal"] == pytest.approx(TERMINAL_MAXIMUM[terminal](n))


def _first_episode(setting: str, wanted, **kwargs) -> TVRInteractive:
    """The first seed's episode whose first true step satisfies ``wanted``."""
    for seed in range(200):
        env = make(setting=setting, **kwargs)
        env.reset(seed=seed)
        if wanted(env.problem.transformations[0], env):
            return env
    raise AssertionError("no such episode in 200 seeds")


def test_graded_progress_ranks_a_turn_by_star_tiers():
    """The true step > the right entry with a wrong value > the right object's other attribute > another object;
    with the distance potential the middle two earned nothing or -1, as a wrong object."""
    env = _first_episode("event", lambda step, env: step.attr != "position", potential="graded")
    step = env.problem.transformations[0]
    other_attr = next(a for a in ("color", "material", "shape") if (step.obj_idx, a) not in env.problem.changed)
    bystander = next(i for i in range(SPEC.n_objects) if i not in {o for o, _ in env.problem.changed})
    turns = {
        "true": f"{step.obj_idx}.{step.attr}.{step.value}",
        "right entry, wrong value": f"{step.obj_idx}.{step.attr}.{_wrong_value(env, step.attr, step.obj_idx)}",
        "right object, other attribute": f"{step.obj_idx}.{other_attr}.{_wrong_value(env, other_attr, step.obj_idx)}",
        "other object": f"{bystander}.color.{_wrong_value(env, 'color', bystander)}",
    }
    earned = {}
    for name, turn in turns.items():
        twin = env.spawn()
        _, _, _, _, info = twin.step(turn)
        assert info["outcome"] == "applied", (name, info)
        earned[name] = info["progress"]
    n_true = sum(obj == step.obj_idx for obj, _ in env.problem.changed)  # object credit per true entry of it
    assert earned["true"] == pytest.approx(1 + (n_true + 1) * TIER_CREDIT)
    assert earned["right entry, wrong value"] == pytest.approx((n_true + 1) * TIER_CREDIT)
    assert earned["right object, other attribute"] == pytest.approx(-1 + n_true * TIER_CREDIT)
    assert earned["other object"] == -1.0
    assert list(earned.values()) == sorted(earned.values(), reverse=True)


def test_graded_progress_pays_a_move_that_lands_closer():
    def two_step_move(step, env):
        return step.attr == "position" and step.value[1] == 2 and env.problem.final.objects[step.obj_idx].visible

    env = _first_episode("event", two_step_move, potential="graded")
    step = env.problem.transformations[0]
    half = f"{step.obj_idx}.position.{step.value[0]}.1"
    n_true = sum(obj == step.obj_idx for obj, _ in env.problem.changed)
    first = env.step(half)[4]
    assert first["outcome"] == "applied" and first["progress"] == pytest.approx(0.5 + (n_true + 1) * TIER_CREDIT)
    second = env.step(half)[4]
    assert second["outcome"] == "applied" and second["progress"] == pytest.approx(0.5)


@settings(max_examples=examples(30), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), codes=ACTIONS, setting=st.sampled_from(["basic", "event"]))
def test_no_episode_returns_more_than_the_true_steps_then_done(seed, codes, setting):
    """Under the default rewards the true steps then ``done`` earn the most; ending by truncation earns less."""
    def run(actions):
        env = make(setting=setting)
        env.reset(seed=seed)
        total, info = 0.0, {}
        for action in actions:
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
            if terminated or truncated:
                return total, info
        return total, info

    probe = make(setting=setting)
    probe.reset(seed=seed)
    best, _ = run([*truth(probe), "done"])
    rng = np.random.default_rng(seed)
    other, _ = run([_action(code, probe, rng, k) for k, code in enumerate(codes)] + ["done"])
    assert other <= best + 1e-9
    stalled, info = run([*truth(probe)] + ["nonsense"] * 20)  # the target reached, never done: truncated
    assert info["outcome"] == "unreadable" and info["bonus"] == 0.0 and stalled < best


def test_the_turn_limit_is_the_same_for_every_episode_of_a_setting():
    """The limit once was the true number of steps plus 4, so "Turn 1 of 8" told the answer's length."""
    for setting, most in (("basic", 1), ("event", 4), ("crossview", 4)):
        limits, lengths = set(), set()
        for seed in range(12):
            env = make(setting=setting)
            obs, info = env.reset(seed=seed)
            limits.add(info["turn_limit"])
            lengths.add(len(env.problem.transformations))
            assert env.step("done")[0]["feedback"].endswith(f"Turn 1 of {most + 1 + 3}.")
        assert limits == {most + 1 + 3}
        assert setting == "basic" or len(lengths) > 1  # the answers differ in length; the limit does not
    env = make(setting="event", steps=(1, 2), slack=0)
    assert env.reset(seed=0)[1]["turn_limit"] == 3  # the most steps these options allow, plus done


def test_an_edit_of_a_hidden_object_is_applied_and_the_feedback_says_it_is_unseen():
    """TVR's equality counts a hidden object's colour: the edit changes the state (and the distance), though
    not the image. A move between two hidden places changes neither: a no-op."""
    env = make(setting="event")
    env.reset(seed=5)
    hidden = next(i for i, o in enumerate(env.current.objects) if not o.visible)
    target = env.problem.final.objects[hidden]
    value = next(v for v in SPEC.values["color"] if v not in (env.current.objects[hidden].color, target.color))
    before = env._observation()["current"]
    obs, reward, _, _, info = env.step(f"{hidden}.color.{value}")
    assert info["outcome"] == "applied" and info["progress"] == -1.0
    assert f"object {hidden} is hidden: the image does not show it" in obs["feedback"]
    assert np.array_equal(obs["current"], before)  # the image indeed does not show it
    assert env.current.objects[hidden].color == value


def test_two_answer_blocks_are_unreadable_like_two_transformations():
    env = make(setting="event")
    env.reset(seed=5)
    steps = truth(env)
    _, reward, _, _, info = env.step(steps[0] + " " + steps[-1])
    assert info["outcome"] == "unreadable" and "2 answer blocks; a turn holds one" in env._feedback
    assert reward == -DEFAULT_COSTS["unreadable"] and info["applied"] == format_answer([])
    thought = "<think>I could write <answer>9.color.red</answer> but</think>" + steps[0]
    assert env.step(thought)[4]["outcome"] == "applied"  # a block inside the thinking is not an answer


def test_feedback_drops_quotes_instead_of_leaving_double_spaces():
    env = make()
    env.reset(seed=5)
    obs, *_ = env.step("<answer>'purple sky' \u201cnope\u201d</answer>")
    assert "unreadable" in obs["feedback"] and "  " not in obs["feedback"]
    assert not set("'\"\u201c\u201d") & set(obs["feedback"])


def test_terminal_reward_and_costs_are_configurable():
    env = make(terminal_reward="none", costs={"unreadable": 0.5})
    env.reset(seed=5)
    _, reward, _, _, info = env.step("gibberish")
    assert info["outcome"] == "unreadable" and reward == -0.5
    _, reward, _, _, info = env.step("done")
    assert reward == -DEFAULT_IDLE_COST and info["terminal"] == 0.0
    env = make(terminal_reward="none", idle_cost=0.0, success_bonus=2.5, potential="distance")
    env.reset(seed=5)
    assert env.step("done")[1] == 0.0
    env.reset(seed=5)
    for action in truth(env):
        env.step(action)
    *_, info = env.step("done")
    assert info["bonus"] == 2.5 and info["progress"] == 0.0
    for bad in ({"success_bonus": -1}, {"idle_cost": float("nan")}, {"success_bonus": True}, {"potential": "dense"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make(**bad)
    with pytest.raises(ValueError, match="costs: unknown"):
        make(costs={"typo": 1.0})
    with pytest.raises(ValueError, match="costs.illegal"):
        make(costs={"illegal": -1})
    with pytest.raises(ValueError, match="terminal_reward"):
        make(terminal_reward="nope")


# -- turns that change nothing ------------------------------------------------------------------------


def _env_with_objects(seed: int = 3) -> TVRInteractive:
    env = make(setting="event")
    env.reset(seed=seed)
    return env


def test_illegal_noop_and_unreadable_turns_change_nothing_and_say_why():
    env = _env_with_objects()
    state = env.current
    objs = list(state.objects)
    lim = SPEC.grid_limit
    edge = next(i for i, o in enumerate(objs) if abs(o.position[0]) >= lim - 15) if any(
        abs(o.position[0]) >= lim - 15 for o in objs
    ) else None
    cases = {
        "unreadable": ("no idea", "unreadable"),
        "several": ("0.color.red, 1.color.blue", "unreadable"),
        "noop": (f"0.color.{objs[0].color}", "no change"),
    }
    if edge is not None:
        direction = "behind" if objs[edge].position[0] > 0 else "front"
        cases["offgrid"] = (f"{edge}.position.{direction}.2", "off the grid")
    for name, (action, words) in cases.items():
        before = env.get_state()
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.current == state, name
        assert info["progress"] == 0.0 and reward < 0, name
        assert words in obs["feedback"], (name, obs["feedback"])
        assert env.get_state() != before  # a turn was used



def test_a_step_into_another_object_is_illegal():
    for seed in range(50):  # the first scene where growing or moving an object hits a neighbour
        env = _env_with_objects(seed)
        for i in range(SPEC.n_objects):
            for attr, value in PAIRS:
                if attr not in ("size", "position"):
                    continue
                trial = env.spawn()
                obs, reward, _, _, info = trial.step(format_item((i, attr, value)))
                if info["outcome"] == "illegal" and "overlap" in obs["feedback"]:
                    assert trial.current == env.current and reward == -DEFAULT_COSTS["illegal"]
                    return
    pytest.fail("no overlapping step found in 50 scenes")


def test_truncated_after_the_turn_limit_with_the_terminal_reward():
    env = make(slack=0)
    env.reset(seed=9)
    limit = env.turn_limit
    assert limit == len(env.problem.transformations) + 1
    for k in range(limit):
        obs, _, terminated, truncated, info = env.step("0.color.gray" if k % 2 else "0.color.red")
        if truncated:
            break
    assert truncated and not terminated and k == limit - 1
    assert "terminal" in info and "interactive" in info and "No turns left" in obs["feedback"]
    with pytest.raises(RuntimeError):
        env.step("done")
    env = make(max_turns=2)
    env.reset(seed=9)
    assert env.turn_limit == 2


def test_truncate_ends_an_episode_with_its_terminal_reward():
    env = make()
    env.reset(seed=4)
    env.step(truth(env)[0])
    reward, info = env.truncate()
    assert info["outcome"] == "truncated" and reward == info["terminal"]
    with pytest.raises(RuntimeError):
        env.step("done")


# -- state, groups, determinism -------------------------------------------------------------------------


@settings(max_examples=examples(15), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), codes=ACTIONS)
def test_set_state_and_spawn_restore_the_episode(seed, codes):
    env = make()
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for k, code in enumerate(codes[:4]):
        if code == 9:
            break
        env.step(_action(code, env, rng, k))
    state = env.get_state()
    twin, copy = make(), env.spawn()
    twin.set_state(state)
    for other in (twin, copy):
        assert other.current == env.current and other.problem == env.problem
        assert other.get_state() == state
        assert np.array_equal(other._observation()["current"], env._observation()["current"])
    if not env.board.done:
        _, r1, *_ = copy.step("done")
        assert env.get_state() == state  # the copy is its own episode
        _, r2, *_ = env.step("done")
        assert r1 == r2


def test_same_seed_same_episode_pixels_and_rewards():
    runs = []
    for _ in range(2):
        env = make(setting="crossview")
        obs, _ = env.reset(seed=77, options={"index": 2})
        steps = [env.step(a) for a in [*truth(env)[:1], "1.position.front.1", "done"]]
        runs.append((obs, [(s[1], s[4]["progress"]) for s in steps], env.get_state()))
    (a, ra, sa), (b, rb, sb) = runs
    assert np.array_equal(a["target"], b["target"]) and np.array_equal(a["current"], b["current"])
    assert ra == rb and sa == sb


def test_the_target_is_the_final_state_from_its_camera_and_current_starts_at_the_initial_state():
    from tvr_gym.render.cache import RenderCache, render_view

    env = make(setting="crossview")
    obs, info = env.reset(seed=3)
    p = env.problem
    cache = RenderCache()
    def seen(state, view):
        return render_view(state, view, p.render_seed, "numpy", (32, 24), cache)

    assert np.array_equal(obs["target"], seen(p.final, info["final_view"]))
    assert np.array_equal(obs["current"], seen(p.initial, "center"))
    obs, *_ = env.step(truth(env)[0])
    assert not np.array_equal(obs["current"], seen(p.initial, "center"))


def test_pickled_mid_episode_it_goes_on_the_same():
    env = make()
    env.reset(seed=21)
    env.step(truth(env)[0])
    clone = pickle.loads(pickle.dumps(env))
    assert clone.step("done")[1] == env.step("done")[1]


def test_the_gymnasium_checker_passes():
    check_env(make(), skip_render_check=True)
    env = gym.make("TVR-Interactive-v0", renderer="numpy", render_size=(32, 24), render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (*frame_size((32, 24))[::-1], 3)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="setting"):
        make(setting="nope")
    with pytest.raises(ValueError, match="slack"):
        make(slack=-1)
    env = make()
    with pytest.raises(RuntimeError, match="reset"):
        env.step("done")
    with pytest.raises(ValueError, match="options"):
        env.reset(seed=0, options={"bogus": 1})


def test_read_turn_reads_one_step_or_done_and_never_raises():
    assert read_turn("<think>x</think><answer>Done.</answer>").kind == "done"
    assert read_turn("2.color.cyan").step == (2, "color", "cyan")
    assert read_turn("2.color.cyan, 3.size.small").kind == "several"
    for junk in (None, b"\xff", 12, "", "<answer></answer>", "x" * 100000):
        assert read_turn(junk).kind in ("unreadable", "several", "step")


# -- the chat contract ---------------------------------------------------------------------------------------



@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda s: "{not json", "not JSON"),
        (lambda s: [1, 2], "expected an object"),
        (lambda s: {**s, "extra": 1}, "unknown field"),
        (lambda s: {k: v for k, v in s.items() if k != "key"}, "state.key"),
        (lambda s: {**s, "key": "index 3"}, "state.key"),
        (lambda s: {**s, "applied": "0.color.red"}, "state.applied: expected a list"),
        (lambda s: {**s, "applied": ["0.color.red", "nonsense words"]}, r"state.applied\[1\]"),
        (lambda s: {**s, "applied": [7]}, r"state.applied\[0\]"),
        (lambda s: {**s, "applied": ["0.color.red, 1.color.blue"]}, r"state.applied\[0\]"),
        (lambda s: {**s, "done": "false"}, "state.done"),
        (lambda s: {**s, "turns": "2"}, "state.turns"),
        (lambda s: {**s, "turns": True}, "state.turns"),
        (lambda s: {**s, "turns": -1}, "state.turns"),
        (lambda s: {**s, "key": {"index": 10**9}}, "names no problem"),
    ],
)
def test_set_state_refuses_a_damaged_state_and_keeps_the_episode(damage, message):
    """A hand-made or damaged state is a ValueError saying what is wrong; the running episode is untouched."""
    env = make(setting="event")
    env.reset(seed=5)
    saved = json.loads(env.get_state())
    with pytest.raises(ValueError, match=message):
        env.set_state(damage(saved))
    assert json.loads(env.get_state()) == saved


def test_set_state_reads_each_field_as_get_state_writes_it():
    env = make(setting="event")
    env.reset(seed=5)
    step = format_item(env.problem.transformations[0])
    env.set_state({"key": json.loads(env.get_state())["key"], "applied": [step.upper()]})
    assert json.loads(env.get_state())["applied"] == [step]  # read as a step, written canonically
    assert env.board.turns == 1 and not env.board.done  # defaults: one turn per applied step, not done
    with pytest.raises(ValueError, match="state.turns: expected an int >= 1"):
        env.set_state({**json.loads(env.get_state()), "turns": 0})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=examples(60), deadline=None)
@given(field=st.sampled_from(["key", "applied", "turns", "done", "other"]), value=JSON)
def test_any_damage_to_one_field_is_a_value_error_or_a_faithful_restore(field, value):
    """Whatever one field holds, set_state restores exactly what it read, or raises ValueError and keeps
    the episode (never a KeyError, TypeError or a silently dropped step)."""
    env = make(setting="event")
    env.reset(seed=5)
    saved = json.loads(env.get_state())
    damaged = {**saved, field: value}
    try:
        env.set_state(json.dumps(damaged))
    except ValueError:
        assert json.loads(env.get_state()) == saved
        return
    restored = json.loads(env.get_state())
    assert len(restored["applied"]) == len(damaged.get("applied", [])) and restored["turns"] == damaged["turns"]
    assert restored["done"] is damaged["done"]

@settings(max_examples=examples(40), deadline=None)
@given(turns=st.integers(0, 9), window=st.integers(0, 12), images=st.booleans())
def test_every_image_block_has_its_image_in_order(turns, window, images):
    pic = (lambda k: np.full((2, 2, 3), k, np.uint8)) if images else (lambda k: None)
    history = [Exchange(f"a{k}", f"f{k}", pic(10 + k)) for k in range(turns)]
    chat, shown = interactive_messages("prompt", pic(1), pic(2), history, window)
    assert count_images(chat) == len(shown)
    if images:
        kept = list(range(max(0, turns - window), turns))
        assert [int(a[0, 0, 0]) for a in shown] == [1, 2, *(10 + k for k in kept)]
        assert len(shown) == ImageBudget().images_after(turns, window)
    roles = [m["role"] for m in chat]
    assert roles == ["user"] + ["assistant", "user"] * turns
    texts = [b["text"] for m in chat[1:] for b in m["content"] if b["type"] == "text"]
    assert texts == [x for k in range(turns) for x in (f"a{k}", f"f{k}")]  # text is never dropped


def test_the_image_budget_counts_what_the_chat_holds():
    budget = ImageBudget(max_images=5, tokens_per_image=99)
    assert [budget.allows(t, 4) for t in range(6)] == [True, True, True, True, False, False]
    assert budget.tokens(2, 4) == 4 * 99
    assert ImageBudget().allows(10**6)


# -- async facade and resources ---------------------------------------------------------------------------


def test_the_async_facade_steps_off_the_event_loop_with_the_same_results():
    async def episode(env):
        obs, _ = await env.reset(seed=13)
        out = [await env.step(a) for a in [truth(env.env)[0], "done"]]
        return obs, [(o[1], o[2]) for o in out]

    sync = make()
    sync.reset(seed=13)
    expected = [sync.step(a)[1:3] for a in [truth(sync)[0], "done"]]

    async def main():
        a, b = AsyncTVRInteractive(**FAST), AsyncTVRInteractive(**FAST)
        return await asyncio.gather(episode(a), episode(b))

    (obs_a, ra), (obs_b, rb) = asyncio.run(main())
    assert ra == rb == [tuple(e) for e in expected]
    assert obs_a["current"].dtype == np.uint8 and np.array_equal(obs_a["current"], obs_b["current"])


# ---------------------------------------------------------------------------- command line


def test_the_evaluator_refuses_a_single_shot_agent_on_the_interactive_id(tmp_path, capsys):
    """A baseline that answers single-shot problems cannot play turns (tests/test_interactive_eval.py runs
    the agents that can)."""
    from tvr_gym.agents import OracleAgent
    from tvr_gym.agents.evaluate import evaluate
    from tvr_gym.apps.cli import main

    argv = ["eval", "--env", "TVR-Interactive-v0", "--agent", "noop", "--episodes", "2", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    assert "answers single-shot problems" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "episodes.jsonl").exists()
    with pytest.raises(ValueError, match="answers single-shot problems"):
        evaluate(OracleAgent(), "TVR-Interactive-v0", 1, progress=False, out=tmp_path / "api")
    assert not (tmp_path / "api").exists()


def test_setting_flag_is_for_the_interactive_id_only(capsys):
    import argparse

    from tvr_gym.apps.cliargs import add_env_options, env_kwargs

    parser = argparse.ArgumentParser()
    parser.add_argument("--env")
    add_env_options(parser)
    args = parser.parse_args(["--env", "TVR-Interactive-v0", "--setting", "basic"])
    assert env_kwargs(args) == {"setting": "basic"}
    assert env_kwargs(parser.parse_args(["--env", "TVR-Interactive-v0"])) == {}  # the env's default (event)
    with pytest.raises(ValueError, match="--setting is for TVR-Interactive-v0"):
        env_kwargs(parser.parse_args(["--env", "TVR-Event-v0", "--setting", "basic"]))


def test_an_image_budget_holds_at_least_the_target_and_the_first_render():
    with pytest.raises(ValueError, match="max_images"):
        ImageBudget(max_images=1)
    with pytest.raises(ValueError, match="tokens_per_image"):
        ImageBudget(max_images=None, tokens_per_image=-1)
    assert ImageBudget(max_images=2).allows(0) and not ImageBudget(max_images=2).allows(1)


@pytest.mark.parametrize("terminal", ["state", "star", "sparse", "none"])
def test_the_end_scores_the_state_reached_without_reading_text_or_simulating(terminal, monkeypatch):
    """The terminal reward and the metrics share one judgement of the net change: no text is written
    and parsed back, and nothing is simulated (the state reached is the simulation)."""
    import tvr_gym.core.metrics
    import tvr_gym.envs.board

    env = gym.make("TVR-Interactive-v0", setting="event", render_size=(32, 24), renderer="numpy",
                   terminal_reward=terminal)  # fmt: skip
    env.reset(seed=4)
    truth = env.unwrapped.problem.transformations
    for step in truth:
        env.step(f"<answer>{format_item(step)}</answer>")
    simulations = []
    real_simulate = tvr_gym.core.metrics.simulate

    def counting(*args, **kwargs):
        simulations.append(args)
        return real_simulate(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the end re-parsed an answer the environment wrote")

    monkeypatch.setattr(tvr_gym.core.metrics, "simulate", counting)
    monkeypatch.setattr(tvr_gym.core.metrics, "parse_answer", refuse)
    monkeypatch.setattr(tvr_gym.envs.board, "read_turn", refuse)
    _, reward, terminated, _, info = env.step("done")
    assert terminated and info["interactive"]["success"] == 1.0 and info["metrics"]["acc"] == 1.0
    assert not simulations
    if terminal == "none":
        assert info["terminal"] == 0.0 and info["terminal_terms"] == {}
    else:
        assert info["terminal"] > 0 and math.isclose(info["terminal"], sum(info["terminal_terms"].values()))
