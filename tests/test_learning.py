"""The learning results file (benchmarks/results/learning.json) and the store that writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.learning import (
    FULL,
    GRPO_PARTS,
    KEY,
    figure_of,
    groups,
    grpo_settings,
    hues,
    is_ablation,
    key_of,
    main,
    merge,
    with_ablation,
)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "learning.json"
CURVES = ("wall_s", "steps", "acc", "obj_acc", "star")
INTERACTIVE_CURVES = ("wall_s", "steps", "acc", "obj_acc", "success", "return", "turns")


def _run(reward: str, seed: int, acc: float) -> dict:
    curves = {"wall_s": [0.0, 1.0], "steps": [0, 5], "acc": [0.1, acc], "obj_acc": [0.5, 0.6], "star": [1.0, 2.0]}
    return {
        "algo": "grpo",
        "task": "basic",
        "start": "sft",
        "obs_mode": "text",
        "reward": reward,
        "seed": seed,
        **curves,
    }


def test_a_new_run_replaces_the_stored_run_of_its_key_and_keeps_the_others():
    store = {"runs": [_run("star", 0, 0.2), _run("star", 1, 0.3), _run("sparse", 0, 0.1)], "chance": {"a": {}}}
    merged = merge(store, [_run("star", 1, 0.9), _run("state", 0, 0.4)], {"b": {}})
    by_key = {(r["reward"], r["seed"]): r["acc"][-1] for r in merged["runs"]}
    assert by_key == {("star", 0): 0.2, ("star", 1): 0.9, ("sparse", 0): 0.1, ("state", 0): 0.4}
    assert set(merged["chance"]) == {"a", "b"}
    assert len({key_of(r) for r in merged["runs"]}) == len(merged["runs"])
    # a variant is part of the key: the same reward and seed under another variant is another run
    variant = {**_run("sparse", 0, 0.0), "variant": "skip_flat"}
    assert len(merge(merged, [variant], {})["runs"]) == len(merged["runs"]) + 1


def test_the_committed_results_rebuild_every_curve_from_its_start():
    store = json.loads(RESULTS.read_text())
    assert store["runs"], "benchmarks/results/learning.json holds no run"
    for run in store["runs"]:
        name = " ".join(str(run.get(k, "")) for k in KEY)
        curves = INTERACTIVE_CURVES if run.get("env") == "interactive" else CURVES
        assert {"task", "start", "obs_mode", "reward", "seed", *curves} <= set(run), name
        lengths = {len(run[k]) for k in curves}
        assert len(lengths) == 1 and lengths.pop() >= 2, name  # the start and at least one point after it
        assert run["steps"][0] == 0 and run["wall_s"][0] == 0, name  # acc[0] is the start
        assert run["steps"] == sorted(run["steps"]) and run["wall_s"] == sorted(run["wall_s"]), name
        assert all(0.0 <= v <= 1.0 for k in ("acc", "obj_acc") for v in run[k] if v is not None), name
        if run.get("env") == "interactive":  # the net change's Acc is the episode's success
            assert run["success"] == run["acc"] and all(t >= 1 for t in run["turns"]), name
        assert not run.get("quick"), f"{name}: a --quick run does not belong in the results"
    starts: dict[tuple, set] = {}
    for run in store["runs"]:
        if run["algo"] != "ppo":  # every arm of one start begins from the same checkpoint, so from the same scores
            starts.setdefault((run["start"], run["obs_mode"], run.get("layout")), set()).add(run["acc"][0])
    assert all(len(values) == 1 for values in starts.values()), starts
    assert groups(store)


def test_only_goal_1_arms_keep_a_kl_to_their_start():
    assert grpo_settings(FULL, "grpo-sft") == {**FULL["grpo"], "beta": 0.04}
    assert "beta" not in grpo_settings(FULL, "grpo-format")
    assert "beta" not in grpo_settings(FULL, "grpo-image")


def test_an_ablation_takes_one_lever_out_of_the_arms_and_is_stored_apart():
    star = {"kind": "grpo", "reward": "star", "settings": grpo_settings(FULL, "grpo-sft"), "out": "/r/grpo-sft-star-0"}
    sft = {"kind": "grpo", "reward": "sft", "settings": FULL["sft"], "out": "/r/grpo-sft-sft-0"}
    assert with_ablation([star, sft], None, "grpo-sft") == [star, sft]  # the protocol itself
    (no_kl,) = with_ablation([star, sft], "no_kl", "grpo-sft")  # continued SFT has no KL to take out
    assert no_kl["settings"] == {**star["settings"], "beta": 0.0}
    assert no_kl["variant"] == "no_kl" and no_kl["out"] == "/r/grpo-sft-star-no_kl-0"  # beside, not over, the arm
    ppo = {"kind": "ppo", "obs_mode": "symbolic", "seed": 0, "ppo_kwargs": {}, "out": "/r/ppo-symbolic-0"}
    (constant,) = with_ablation([ppo], "constant-lr")
    assert constant["ppo_kwargs"] == {"lr_schedule": "constant"} and constant["out"] == "/r/ppo-symbolic-constant-lr-0"


def test_every_stored_variant_is_an_ablation_or_an_adam_arm_the_harness_can_run_again():
    parts = {(start, obs): part for part, (start, obs) in GRPO_PARTS.items()}
    for run in json.loads(RESULTS.read_text())["runs"]:
        variant = run.get("variant")
        if not variant or variant in FULL["adam"]["variants"]:
            continue
        part = f"ppo-{run['obs_mode']}" if run["algo"] == "ppo" else parts[(run["start"], run["obs_mode"])]
        assert variant in FULL["ablations"].get(part, {}), f"{part} {run['reward']} {variant}: no --ablation runs it"


def test_ablations_are_drawn_dashed_and_the_adam_experiments_variants_are_not():
    assert is_ablation({"variant": "no_kl"}) and is_ablation({"variant": "constant-lr"})
    assert not any(is_ablation({"variant": v}) for v in ("", "adamw", "skip_flat"))
    assert not is_ablation({})


def test_an_ablation_is_drawn_in_its_arms_color_and_every_other_group_in_its_own():
    runs = [_run(r, 0, 0.1) for r in ("star", "sparse", "sft")]
    runs += [{**_run(r, 0, 0.1), "variant": "no_kl"} for r in ("star", "sparse")]
    runs += [{**_run("sparse", 0, 0.1), "start": "format", "variant": v} for v in ("adamw", "skip_flat")]
    hue = hues(groups({"runs": runs}))
    by = {(key[2], key[4], key[5]): n for key, n in hue.items()}
    assert by[("sft", "star", "no_kl")] == by[("sft", "star", "")]
    assert by[("sft", "sparse", "no_kl")] == by[("sft", "sparse", "")]
    arms = [n for (start, reward, variant), n in by.items() if variant != "no_kl"]
    assert sorted(arms) == list(range(5))  # star, sparse, sft and both adam variants: five colors, none shared


@pytest.mark.parametrize("argv", [["--ablation", "no_kl", "--parts", "grpo-format"], ["--ablation", "no_such"]])
def test_an_ablation_a_part_does_not_have_is_refused(argv, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["learning", *argv])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2 and "--ablation" in capsys.readouterr().err


def test_each_run_is_drawn_in_the_figure_of_its_start_and_observation():
    assert figure_of({**_run("star", 0, 0.1), "algo": "ppo"}) == "ppo"
    assert figure_of(_run("star", 0, 0.1)) == "sft"
    assert figure_of({**_run("star", 0, 0.1), "start": "format"}) == "format"
    assert figure_of({**_run("sparse", 0, 0.1), "variant": "skip_flat"}) == "adam"
    assert figure_of({**_run("star", 0, 0.1), "variant": "no_kl"}) == "sft"  # an ablation stays with its arms
    # image runs, the SFT start's own curve (start "scratch") and GRPO from it, share the image figure
    assert figure_of({**_run("star", 0, 0.1), "obs_mode": "image"}) == "image"
    assert figure_of({**_run("sft", 0, 0.1), "algo": "sft", "start": "scratch", "obs_mode": "image"}) == "image"


def test_the_image_ablation_shows_the_initial_image_twice_and_nothing_else_changes():
    import numpy as np

    from benchmarks.learning_grpo import NoChangeShown

    seen = []

    class Recorder:
        def act_batch(self, observations):
            seen.extend(observations)
            return ["<think></think><answer>1.color.red</answer>"] * len(observations)

    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    wrapped = NoChangeShown(Recorder())
    assert wrapped.act({"initial": a, "final": b, "prompt": "p"}) == "<think></think><answer>1.color.red</answer>"
    assert seen[0]["final"] is a and seen[0]["initial"] is a and seen[0]["prompt"] == "p"
    assert not wrapped.privileged


def test_ppo_reward_arms_train_with_their_reward_and_are_stored_and_drawn_apart(tmp_path):
    """STAR's claim with learners that learn: one PPO run per training reward and task, each its own key."""
    from benchmarks.learning import in_figure, ppo_jobs, shows_chance

    made = ppo_jobs(tmp_path, ["ppo-symbolic"], FULL, [0, 1], ("star", "sparse"), "event")
    assert [(j["reward"], j["task"], j["seed"]) for j in made] == [
        ("star", "event", 0), ("star", "event", 1), ("sparse", "event", 0), ("sparse", "event", 1),
    ]  # fmt: skip
    assert len({j["out"] for j in made}) == 4 and all(j["timesteps"] == 200_000 for j in made)
    star = {**_run("star", 0, 0.9), "algo": "ppo", "obs_mode": "symbolic"}
    sparse = {**star, "reward": "sparse"}
    event = {**star, "task": "event"}
    table = {**star, "obs_mode": "image-table"}
    table_sparse = {**table, "reward": "sparse"}
    assert [figure_of(r) for r in (star, sparse, event, table, table_sparse)] == [
        "ppo", "ppo_rewards", "ppo_rewards_event", "ppo", "ppo_rewards_image_table"]  # fmt: skip
    assert in_figure(star, "ppo_rewards") and in_figure(sparse, "ppo_rewards")  # star on Basic is the reference
    assert not in_figure(event, "ppo_rewards") and in_figure(event, "ppo_rewards_event")
    assert in_figure(table, "ppo_rewards_image_table") and not in_figure(table, "ppo_rewards")
    assert len({key_of(r) for r in (star, sparse, event)}) == 3
    assert [c for c in ("ppo/symbolic", "ppo/symbolic/visible", "ppo/symbolic/event", "ppo/image-table")
            if shows_chance("ppo_rewards", c)] == ["ppo/symbolic", "ppo/symbolic/visible"]  # fmt: skip


def test_an_unknown_ppo_reward_is_refused(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["learning", "--parts", "ppo-symbolic", "--ppo-rewards", "star,nope"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2 and "--ppo-rewards" in capsys.readouterr().err


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
)
def test_every_benchmark_module_imports(module):
    """A benchmark that no longer imports (a helper moved) fails here, not on the day its numbers are needed."""
    import importlib

    loaded = importlib.import_module(f"benchmarks.{module}")
    if f"-m benchmarks.{module}" in (loaded.__doc__ or ""):  # a documented command has an entry point
        assert callable(getattr(loaded, "main", None))


def test_interactive_ppo_runs_are_stored_apart_and_drawn_in_their_own_figure(tmp_path):
    """Issue 25's interactive runs: the tvr-gym defaults (no overrides), keyed by ``env`` so that a run on
    interactive Basic with the ``state`` terminal never replaces the single-shot ``state`` arm."""
    from benchmarks.learning import in_figure, ppo_jobs

    made = ppo_jobs(tmp_path, ["ppo-interactive"], FULL, [0, 1], ("star",), "event")
    assert [(j["task"], j["seed"], j["ppo_kwargs"]) for j in made] == [("event", 0, {}), ("event", 1, {})]
    assert all(j["interactive"] and j["timesteps"] == FULL["ppo"]["timesteps"]["interactive"]["event"] for j in made)
    single = {**_run("state", 0, 0.2), "algo": "ppo", "obs_mode": "symbolic"}
    interactive = {**single, "env": "interactive", "success": [0.0, 0.5], "return": [-4.0, 1.0], "turns": [1, 2]}
    assert key_of(single) != key_of(interactive)
    assert len(merge({"runs": [single]}, [interactive], {})["runs"]) == 2
    assert figure_of(interactive) == "ppo_interactive" and figure_of(single) == "ppo_rewards"
    assert not in_figure(interactive, "ppo_rewards")


def test_an_interactive_run_records_held_out_success_from_its_first_step(tmp_path):
    from benchmarks.learning_ppo import interactive_jobs, run_interactive

    (job,) = interactive_jobs(tmp_path, [0], 256, 4, "basic", {"n_steps": 32, "batch_size": 32})
    run = run_interactive(job)
    assert run["env"] == "interactive" and run["task"] == "basic" and run["reward"] == "state"
    assert run["steps"][0] == 0 and run["steps"][-1] == 256
    lengths = {len(run[k]) for k in ("steps", "wall_s", "success", "return", "turns", "acc", "obj_acc")}
    assert lengths == {len(run["steps"])}
    assert all(0.0 <= v <= 1.0 for v in run["success"]) and run["success"] == run["acc"]  # Acc of the net change
    assert all(1 <= t for t in run["turns"])


def test_interactive_grpo_report_draws_seeds_that_stopped_at_different_steps(tmp_path, monkeypatch):
    """A time budget stops each seed at its own step (a 50-minute run once crashed in the plot for it); the table
    gives each run's last evaluation, and the start is every run's step 0."""
    import benchmarks.learning_interactive as li

    monkeypatch.setattr(li, "RESULTS", tmp_path)
    point = {"success": 0.0, "return": -4.0, "acc": 0.0, "turns": 1.0}
    runs = [
        {"arm": "grpo", "seed": s, "eval": [{**point, "step": k * 30, "return": -3.5 - s} for k in range(n)],
         "train": [{"step": k + 1, "reward": -3.0} for k in range(n * 30)]}
        for s, n in ((0, 4), (1, 2))
    ]  # fmt: skip
    sft_end = {**point, "step": 1, "success": 0.25}
    runs.append({"arm": "sft", "seed": 0, "train": [], "eval": [{**point, "step": 0}, sft_end]})
    args = {"start": "sft", "steps": 120, "minutes": 6.0, "eval_every": 30, "eval_episodes": 48, "batch_size": 4,
            "group_size": 6, "sft_minutes": 12.0, "seeds": 2, "obs_mode": "text"}  # fmt: skip
    li.write_report({"args": args, "wall": 1.0, "chance": point, "runs": runs})
    table = (tmp_path / "learning_interactive_sft.md").read_text()
    assert "| seed 0, GRPO, step 90 | 0.000 | -3.500 |" in table
    assert "| seed 1, GRPO, step 30 | 0.000 | -4.500 |" in table
    assert "| seed 0, continued SFT, end | 0.250 |" in table
    assert (tmp_path / "learning_interactive_sft.png").stat().st_size > 0
