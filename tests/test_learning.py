"""The learning results file (benchmarks/results/learning.json) and the store that writes it."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.learning import FULL, KEY, figure_of, groups, grpo_settings, key_of, merge

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "learning.json"
CURVES = ("wall_s", "steps", "acc", "obj_acc", "star")


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
        assert {"task", "start", "obs_mode", "reward", "seed", *CURVES} <= set(run), name
        lengths = {len(run[k]) for k in CURVES}
        assert len(lengths) == 1 and lengths.pop() >= 2, name  # the start and at least one point after it
        assert run["steps"][0] == 0 and run["wall_s"][0] == 0, name  # acc[0] is the start
        assert run["steps"] == sorted(run["steps"]) and run["wall_s"] == sorted(run["wall_s"]), name
        assert all(0.0 <= v <= 1.0 for k in ("acc", "obj_acc") for v in run[k] if v is not None), name
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
