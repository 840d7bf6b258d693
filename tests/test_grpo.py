"""GRPO: the math, one update, learning, checkpoints/resume, interruption, logging and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

import tvr_gym  # noqa: F401  (registers the environments)
from tvr_gym.agents.mllm.grpo import (
    EVAL_SEED_BASE,
    MANIFEST,
    GRPOConfig,
    aggregate,
    file_digests,
    group_advantages,
    grpo_loss,
    k3_kl,
    latest_checkpoint,
    train,
    verify_checkpoint,
)
from tvr_gym.agents.mllm.policy import MLLMAgent
from tvr_gym.agents.mllm.sampling import sample, token_logprobs

from props import examples

FAVOURED = "red"


class FavourTokenEnv(gym.Env):
    """A stand-in task whose reward counts the word ``red`` in the answer (dense enough to learn fast).

    Scored answers are counted per ``run`` across every instance (a trainer makes one environment per
    episode of a step): ``nan_at`` makes the n-th scored answer of the run return NaN, ``interrupt_at``
    sends SIGINT at the n-th one, and ``signals`` maps answer numbers to the signal sent there.
    """

    scored: dict[str, int] = {}
    instances: list[FavourTokenEnv] = []

    def __init__(
        self, obs_mode="text", render_size=(32, 24), reward="star", nan_at=None, interrupt_at=None, signals=None,
        run="default", signal_until=None,
    ):  # fmt: skip
        w, h = render_size
        image = spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.observation_space = spaces.Dict({"initial": image, "final": image, "prompt": spaces.Text(64)})
        self.action_space = spaces.Text(4096)
        self.size = (h, w, 3)
        self.run = run
        self.nan_at = nan_at
        self.signal_until = signal_until  # answers after this one all score 0: flat groups
        self.signals = dict(signals or {}) | ({interrupt_at: signal.SIGINT} if interrupt_at else {})
        self.seeds: list[int] = []
        FavourTokenEnv.instances.append(self)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.seeds.append(seed)
        shade = int(self.np_random.integers(0, 256))
        image = np.full(self.size, shade, np.uint8)
        info = {"truth": "", "problem": {"transformations": [{}, {}]}, "final_view": "center"}
        return {"initial": image, "final": image, "prompt": "object color"}, info

    def score(self, text):
        calls = FavourTokenEnv.scored[self.run] = FavourTokenEnv.scored.get(self.run, 0) + 1
        if calls in self.signals:
            os.kill(os.getpid(), self.signals[calls])
        reward = float("nan") if calls == self.nan_at else float(text.count(FAVOURED))
        if self.signal_until is not None:
            reward = float(calls) if calls <= self.signal_until else 0.0
        acc = float(reward > 0)
        metrics = {"dist": 1 - acc, "norm_dist": 1 - acc, "loose_acc": acc, "acc": acc, "n_steps": 2}
        return reward, {"reward_terms": {"count": reward}, "metrics": metrics, "final_view": "center"}

    def step(self, text):
        reward, info = self.score(text)
        return self.reset()[0], reward, True, False, info


gym.register("TVRTest-FavourToken-v0", entry_point=FavourTokenEnv, disable_env_checker=True)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def small_config(tiny_dir, out, **overrides) -> GRPOConfig:
    options = dict(
        model=str(tiny_dir),
        out=str(out),
        env="TVRTest-FavourToken-v0",
        steps=2,
        batch_size=2,
        group_size=4,
        max_new_tokens=8,
        lr=1e-2,
        save_every=0,
        eval_every=0,
        device="cpu",
        quiet=True,
    )
    options.update(overrides)
    return GRPOConfig(**options)


def state_dict_copy(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- the math


@settings(max_examples=examples(50), deadline=None)
@given(groups=st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=6), G=st.integers(1, 8))
def test_advantages_are_zero_when_a_group_is_constant(groups, G):
    rewards = torch.tensor([v for v in groups for _ in range(G)], dtype=torch.float32)
    for scale in (True, False):
        assert torch.equal(group_advantages(rewards, G, scale), torch.zeros_like(rewards))


@settings(max_examples=examples(50), deadline=None)
@given(rewards=st.lists(st.floats(-10, 10, allow_nan=False), min_size=8, max_size=8))
def test_advantages_are_centred_per_group_and_scaled_by_the_std(rewards):
    r = torch.tensor(rewards, dtype=torch.float64)
    plain = group_advantages(r, 4, scale_std=False).view(2, 4)
    torch.testing.assert_close(plain, r.view(2, 4) - r.view(2, 4).mean(1, keepdim=True))
    scaled = group_advantages(r, 4, scale_std=True).view(2, 4)
    for g in range(2):
        std = float(r.view(2, 4)[g].std())
        expected = plain[g] / (std + 1e-4) if float(r.view(2, 4)[g].max() - r.view(2, 4)[g].min()) > 0 else plain[g] * 0
        torch.testing.assert_close(scaled[g], expected)


@settings(max_examples=examples(50), deadline=None)
@given(values=st.lists(st.floats(-20, 0, allow_nan=False), min_size=1, max_size=16))
def test_k3_kl_is_zero_against_an_identical_reference_and_positive_otherwise(values):
    logp = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(k3_kl(logp, logp.clone()), torch.zeros_like(logp))
    shifted = k3_kl(logp, logp - 0.5)
    assert (shifted > 0).all()
    torch.testing.assert_close(shifted, torch.exp(torch.tensor(-0.5, dtype=torch.float64)) + 0.5 - 1 + 0 * logp)


def test_loss_aggregation_modes_differ_as_defined():
    per_token = torch.tensor([[1.0, 1.0, 0.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # grpo: per-sequence means 1 and 3, then their mean
    assert float(aggregate(per_token, mask, "grpo", max_len=4)) == pytest.approx(2.0)
    # dr_grpo: masked sum 5 over the constant batch * max_len = 2 * 4
    assert float(aggregate(per_token, mask, "dr_grpo", max_len=4)) == pytest.approx(5 / 8)
    # dapo: masked sum 5 over the 3 real tokens
    assert float(aggregate(per_token, mask, "dapo", max_len=4)) == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="loss"):
        aggregate(per_token, mask, "ppo", max_len=4)


def test_clipped_surrogate_stops_gradients_outside_the_trust_region():
    old = torch.zeros(2, 1)
    logp = torch.tensor([[0.5], [0.05]], requires_grad=True)  # ratios e^0.5 (clipped) and e^0.05 (inside)
    loss, stats = grpo_loss(logp, old, torch.tensor([1.0, 1.0]), torch.ones(2, 1), clip=0.2, mode="dapo")
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[1, 0] < 0
    assert stats["clip_frac"] == pytest.approx(0.5)
    # at ratio 1 and no KL, the loss is minus the mean advantage
    adv = torch.tensor([2.0, -1.0])
    loss, stats = grpo_loss(old, old, adv, torch.ones(2, 1), mode="grpo")
    assert float(loss) == pytest.approx(-0.5) and stats["kl"] == 0


def test_config_rejects_bad_options_naming_the_field():
    bad = (("loss", "ppo"), ("reward", "dense"), ("obs_mode", "audio"), ("group_size", 0), ("max_images", 1),
           ("max_minutes", -1.0), ("max_minutes", float("inf")), ("max_minutes", "10"))  # fmt: skip
    for field, value in bad:
        with pytest.raises(ValueError, match=field):
            GRPOConfig(**{field: value})
    with pytest.raises(ValueError, match="grad_accum"):
        GRPOConfig(batch_size=3, grad_accum=2)
    assert GRPOConfig(loss="dr_grpo").scale_std is False and GRPOConfig().scale_std is True
    assert GRPOConfig(model="tiny").lr > GRPOConfig(model="/some/checkpoint").lr


def test_a_time_budget_stops_after_the_step_that_spends_it_with_an_exact_checkpoint(tiny_dir, tmp_path):
    cfg = small_config(tiny_dir, tmp_path / "run", steps=10**6, max_minutes=0.02)
    history = train(cfg)
    spent = [h["step_time"] for h in history]
    assert 0 < len(history) < 10**6
    assert sum(spent) >= 0.02 * 60 > sum(spent[:-1])  # stopped after the first step past the budget
    assert (tmp_path / "run" / f"checkpoint-{len(history)}").is_dir() and (tmp_path / "run" / "final").is_dir()


@pytest.mark.parametrize(
    "optimizer,skip_flat,still", [("adamw", False, False), ("adamw", True, True), ("sgd", False, True)]
)
def test_flat_steps_move_adam_weights_unless_skipped(tiny_dir, tmp_path, optimizer, skip_flat, still):
    """One step with a signal, then flat groups (zero gradient): Adam's momentum keeps changing the weights;
    skip_flat, or plain SGD, leaves them where the signal put them."""
    from safetensors.torch import load_file

    run = f"flat-{optimizer}-{skip_flat}"
    FavourTokenEnv.scored.pop(run, None)
    cfg = small_config(tiny_dir, tmp_path / run, steps=3, save_every=1, skip_flat=skip_flat, optimizer=optimizer,
                       env_kwargs={"run": run, "signal_until": 8})  # fmt: skip
    history = train(cfg)
    assert [h["flat"] for h in history] == [0.0, 1.0, 1.0]
    weights = [load_file(tmp_path / run / f"checkpoint-{k}" / "model.safetensors") for k in (1, 3)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0]) is still
    with pytest.raises(ValueError, match="optimizer: unknown value 'adam'; valid: adamw, sgd"):
        GRPOConfig(optimizer="adam")


def test_unknown_env_id_is_rejected_with_the_valid_ids(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="env: unknown id 'TVR-Nope-v0'.*TVR-Basic-v0"):
        train(small_config(tiny_dir, tmp_path / "run", env="TVR-Nope-v0"))


# ---------------------------------------------------------------- one update, learning


def test_one_grpo_step_changes_the_weights_and_lowers_the_loss_on_a_fixed_batch(tiny_dir, trance_dir):
    agent = MLLMAgent.from_pretrained(tiny_dir, device="cpu", max_new_tokens=8)
    env = gym.make("TVR-Basic-v0", obs_mode="text", render_size=(160, 120), source=str(trance_dir))
    agent.use_images = False
    obs = [env.reset(seed=s)[0] for s in range(2)]
    torch.manual_seed(0)
    samples = sample(agent, obs, G=4)
    rewards = torch.tensor([0.0, 1.0, 2.0, 0.5, 3.0, 0.0, 1.0, 1.0])
    adv = group_advantages(rewards, 4)
    optimizer = torch.optim.AdamW(agent.model.parameters(), lr=1e-2)
    before = state_dict_copy(agent.model)

    def loss_now():
        logp = token_logprobs(agent, samples.inputs, samples.completion_ids, samples.completion_mask)
        return grpo_loss(logp, samples.logprobs, adv, samples.completion_mask, clip=10.0)[0]

    agent.model.train()
    loss0 = loss_now()
    loss0.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        loss1 = loss_now()
    assert float(loss1) < float(loss0.detach())
    assert any(not torch.equal(before[k], v) for k, v in agent.model.state_dict().items())


def test_a_reward_that_favours_one_token_is_learned(tiny_dir, tmp_path):
    cfg = small_config(tiny_dir, tmp_path / "run", steps=30, batch_size=2, group_size=8, lr=2e-2, max_new_tokens=6)
    history = train(cfg)
    rewards = [h["reward"] for h in history]
    assert len(rewards) == 30
    assert np.mean(rewards[-5:]) > 2 * np.mean(rewards[:5]) + 0.5


# ---------------------------------------------------------------- checkpoints, resume, interruption


def test_resume_gives_the_same_next_step_loss_as_an_uninterrupted_run(tiny_dir, trance_dir, tmp_path):
    extra = dict(
        env="TVR-Basic-v0",
        env_kwargs={"source": str(trance_dir)},
        steps=3,
        mu=2,
        beta=0.04,
        batch_size=1,
        max_new_tokens=6,
    )
    full = train(small_config(tiny_dir, tmp_path / "full", **extra))
    train(small_config(tiny_dir, tmp_path / "part", **{**extra, "steps": 2}))  # the last step is always saved
    ckpt = tmp_path / "part" / "checkpoint-2"
    assert latest_checkpoint(tmp_path / "part") == ckpt
    assert not list((tmp_path / "part").glob(".tmp-*"))
    resumed = train(small_config(tiny_dir, tmp_path / "part", **extra, resume=True))
    assert [h["step"] for h in resumed] == [1, 2, 3]
    for key in ("loss", "reward", "kl", "completion_len"):
        assert resumed[2][key] == pytest.approx(full[2][key], abs=1e-6), key
    a = MLLMAgent.from_pretrained(tmp_path / "full" / "final", device="cpu").model.state_dict()
    b = MLLMAgent.from_pretrained(tmp_path / "part" / "final", device="cpu").model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_ctrl_c_saves_a_checkpoint_that_resumes(tiny_dir, tmp_path):
    cfg = small_config(tiny_dir, tmp_path / "run", steps=5, env_kwargs={"interrupt_at": 9, "run": str(tmp_path)})
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoint-2"
    history = train(small_config(tiny_dir, tmp_path / "run", steps=3, resume=True))
    assert [h["step"] for h in history] == [1, 2, 3]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_and_saves_an_exact_checkpoint(tiny_dir, tmp_path, signum):
    """Schedulers send SIGTERM: it saves like Ctrl-C."""
    with pytest.raises(KeyboardInterrupt):
        kwargs = {"signals": {9: signum}, "run": str(tmp_path)}  # the first answer scored in step 2
        train(small_config(tiny_dir, tmp_path / "run", steps=5, env_kwargs=kwargs))
    assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoint-2"
    assert not (tmp_path / "run" / "final").exists()


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_a_second_signal_never_overwrites_an_exact_checkpoint(tiny_dir, tmp_path):
    reference = tmp_path / "reference"
    train(small_config(tiny_dir, reference, steps=1))
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # SIGINT twice while step 2 is scored: abort mid-step
        twice = {"signals": {9: signal.SIGINT, 10: signal.SIGINT}, "run": str(tmp_path)}  # both in step 2
        train(small_config(tiny_dir, run, steps=5, save_every=1, env_kwargs=twice))
    assert latest_checkpoint(run) == run / "checkpoint-1"
    exact, ref = _weights(run / "checkpoint-1"), _weights(reference / "checkpoint-1")
    assert all(torch.equal(exact[k], ref[k]) for k in ref)  # still the weights after step 1
    assert (run / "partial-1" / "model.safetensors").is_file()
    assert not (run / "partial-1" / "trainer_state.json").exists()
    assert _logged_steps(run) == [1]  # the finished steps' log is kept
    history = train(small_config(tiny_dir, run, steps=2, resume=True))
    assert [h["step"] for h in history] == [1, 2]


def _logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


SIGNAL_DURING_A_SAVE = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_grpo  # registers TVRTest-FavourToken-v0
from tvr_gym.agents.mllm import grpo

real_replace_dir = grpo.replace_dir

def replace_dir(tmp, target):  # {save} is written, not yet renamed into place: the signal lands mid-save
    if Path(target).name == {save!r}:
        os.kill(os.getpid(), {signum})
    return real_replace_dir(tmp, target)

grpo.replace_dir = replace_dir
try:
    grpo.train(test_grpo.small_config({tiny!r}, {out!r}, **{overrides!r}))
except KeyboardInterrupt as exc:
    sys.exit(128 + exc.signum)  # what `tvr-gym train grpo` returns: 128 + the first signal
"""


def run_with_a_signal_during_a_save(tiny_dir, run: Path, save: str, signum: int, **overrides):
    """Train in a subprocess (a default SIGTERM would end pytest itself) that receives ``signum`` while
    OUT/``save`` is being written; the env's ``signals`` send the earlier ones. Returns the process."""
    overrides["env_kwargs"] = {"signals": overrides.pop("signals", {}), "run": str(run)}
    script = SIGNAL_DURING_A_SAVE.format(tests=str(Path(__file__).parent), save=save, signum=int(signum),
                                         tiny=str(tiny_dir), out=str(run), overrides=overrides)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(
    "save_every,signum",
    [(0, signal.SIGINT), (0, signal.SIGTERM), (1, signal.SIGINT)],
    ids=["final-SIGINT", "final-SIGTERM", "periodic-SIGINT"],
)
def test_a_second_signal_during_a_checkpoint_waits_for_it(tiny_dir, tmp_path, save_every, signum):
    """A signal stops the run after step 2; a second one while checkpoint-2 is written (after the loop, or
    during a periodic save) no longer loses it: the save and the log finish, then the run exits 130."""
    run = tmp_path / "run"
    done = run_with_a_signal_during_a_save(tiny_dir, run, "checkpoint-2", signum, steps=5, save_every=save_every,
                                           signals={9: int(signal.SIGINT)})  # fmt: skip
    assert done.returncode == 130, done.stderr[-2000:]
    assert latest_checkpoint(run) == run / "checkpoint-2"
    verify_checkpoint(run / "checkpoint-2")
    assert _logged_steps(run) == [1, 2]
    assert not list(run.glob("partial-*")) and not list(run.glob(".tmp-*")) and not (run / "final").exists()
    said = [line for line in done.stderr.splitlines() if line.startswith("interrupted:")]
    assert said == [f"interrupted: kept {run / 'checkpoint-2'} and log.jsonl; a signal during the save waited for it; "
                    "continue with --resume"]  # fmt: skip
    history = train(small_config(tiny_dir, run, steps=3, resume=True))
    assert [h["step"] for h in history] == [1, 2, 3]


def test_a_signal_during_the_final_save_of_a_finished_run_waits_for_it(tiny_dir, tmp_path):
    run = tmp_path / "run"
    done = run_with_a_signal_during_a_save(tiny_dir, run, "final", signal.SIGTERM, steps=2)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]  # the first signal was SIGTERM
    verify_checkpoint(run / "checkpoint-2")
    assert (run / "final" / MANIFEST).is_file() and _logged_steps(run) == [1, 2]
    assert f"interrupted after the last step: kept {run / 'checkpoint-2'}, {run / 'final'} and log.jsonl" in done.stderr


def test_a_third_signal_during_the_partial_save_waits_for_it(tiny_dir, tmp_path):
    run = tmp_path / "run"
    twice = {9: int(signal.SIGINT), 10: int(signal.SIGINT)}  # both in step 2: abort it
    done = run_with_a_signal_during_a_save(tiny_dir, run, "partial-1", signal.SIGTERM, steps=5, save_every=1,
                                           signals=twice)  # fmt: skip
    assert done.returncode == 130, done.stderr[-2000:]
    assert (run / "partial-1" / "model.safetensors").is_file() and latest_checkpoint(run) == run / "checkpoint-1"
    assert _logged_steps(run) == [1]
    assert (f"aborted: weights in {run / 'partial-1'} (not resumable), log.jsonl up to step 1; "
            f"--resume continues from {run / 'checkpoint-1'}") in done.stderr  # fmt: skip


def _flip_a_byte(path: Path) -> bytes:
    good = path.read_bytes()
    middle = len(good) // 2
    path.write_bytes(good[:middle] + bytes([good[middle] ^ 1]) + good[middle + 1 :])
    return good


def test_a_damaged_or_missing_checkpoint_file_is_refused_and_nothing_is_written(tiny_dir, tmp_path, capsys):
    """A damaged RNG state used to be swallowed by accelerate (exit 0, and the next steps differ from an
    exact resume): every file is now checked against the checkpoint's manifest before anything is built."""
    from tvr_gym.apps.cli import main

    run = tmp_path / "run"
    train(small_config(tiny_dir, run, steps=2, save_every=1))
    ckpt = run / "checkpoint-2"
    rng = ckpt / "accelerate_state" / "random_states_0.pkl"
    good = _flip_a_byte(rng)
    damaged = file_digests(run)
    with pytest.raises(ValueError, match=f"resume: {rng}: damaged .*nothing was changed; move checkpoint-2 aside"):
        train(small_config(tiny_dir, run, steps=3, resume=True))
    cli = ["train", "grpo", "--model", str(tiny_dir), "--env", "TVRTest-FavourToken-v0", "--out", str(run),
           "--steps", "3", "--resume", "--device", "cpu", "--quiet"]  # fmt: skip
    capsys.readouterr()
    assert main(cli) == 2
    assert f"{rng}: damaged" in capsys.readouterr().err
    assert file_digests(run) == damaged  # nothing written or overwritten
    rng.write_bytes(good)

    for name in ("trainer_state.json", MANIFEST, "accelerate_state/optimizer.bin"):
        (ckpt / name).rename(tmp_path / "aside")  # checkpoint-1 is intact, but never silently resumed from
        with pytest.raises(ValueError, match=f"resume: {ckpt / name}: missing"):
            train(small_config(tiny_dir, run, steps=3, resume=True))
        (tmp_path / "aside").rename(ckpt / name)
    (ckpt / "extra.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="extra.bin: not listed in manifest.json"):
        train(small_config(tiny_dir, run, steps=3, resume=True))
    (ckpt / "extra.bin").unlink()
    history = train(small_config(tiny_dir, run, steps=3, resume=True))
    assert [h["step"] for h in history] == [1, 2, 3]


def _reseal(checkpoint: Path) -> None:
    """Rewrite a checkpoint's manifest to match its files, as one whose files were changed together with it."""
    (checkpoint / MANIFEST).write_text(json.dumps({"sha256": file_digests(checkpoint)}))


def test_rng_states_accelerate_could_not_restore_are_refused(tiny_dir, tmp_path):
    """accelerate.load_state swallows a failed RNG restore; even with a matching manifest the resume refuses."""
    run = tmp_path / "run"
    train(small_config(tiny_dir, run, steps=2))
    rng = run / "checkpoint-2" / "accelerate_state" / "random_states_0.pkl"
    torch.save({"step": 2}, rng)  # a readable file that holds no RNG state
    _reseal(run / "checkpoint-2")
    before = file_digests(run)
    with pytest.raises(ValueError, match=f"resume: {rng}: the RNG states were not restored .*KeyError"):
        train(small_config(tiny_dir, run, steps=3, resume=True))
    assert file_digests(run) == before


def test_resume_needs_a_checkpoint_and_bad_arguments_build_nothing(tiny_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="holds no exact checkpoint-STEP to resume from"):
        train(small_config(tiny_dir, out, resume=True))
    with pytest.raises(ValueError, match="reward_weights"):
        train(small_config(tiny_dir, out, env="TVR-Basic-v0", env_kwargs={"reward_weights": {"wrong": -1.0}}))
    with pytest.raises(ValueError, match="neither 'tiny' nor a checkpoint directory"):
        train(small_config(tmp_path, out))
    with pytest.raises(ValueError, match="env: unknown id"):
        train(small_config(tiny_dir, out, env="TVR-Nope-v0"))
    assert not out.exists()
    train(small_config(tiny_dir, out, steps=1))
    with pytest.raises(ValueError, match="already reached step 1; raise --steps"):
        train(small_config(tiny_dir, out, steps=1, resume=True))


def test_a_crash_while_building_the_tiny_base_leaves_nothing_half_built(tmp_path, monkeypatch):
    import tvr_gym.agents.mllm.tiny as tiny

    real = tiny.make_tiny_model

    def crash(out_dir, **kwargs):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")  # half written when the crash comes
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "make_tiny_model", crash)
    with pytest.raises(KeyboardInterrupt):
        train(small_config("tiny", tmp_path / "run", model="tiny"))
    assert not (tmp_path / "run" / "base").exists()
    monkeypatch.setattr(tiny, "make_tiny_model", real)
    train(small_config("tiny", tmp_path / "run", model="tiny", steps=1))
    assert MLLMAgent.from_pretrained(tmp_path / "run" / "base", device="cpu") is not None


def test_checkpoints_load_without_pickle_and_a_crafted_pickle_runs_nothing(tiny_dir, tmp_path):
    run = tmp_path / "run"
    train(small_config(tiny_dir, run, steps=1))
    state = run / "checkpoint-1" / "accelerate_state"
    binaries = [f for f in state.iterdir() if f.suffix in (".bin", ".pkl", ".pt")]
    assert binaries
    from accelerate.utils import load as accelerate_load

    for f in binaries:
        accelerate_load(f, weights_only=True)  # what accelerate.load_state does: no pickle of code
    json.loads((run / "checkpoint-1" / "trainer_state.json").read_text())

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    for f in binaries:
        f.write_bytes(pickle.dumps({"python": Exploit()}, protocol=2))
    with pytest.raises(ValueError, match="optimizer.bin: damaged"):  # the manifest sees the change first
        train(small_config(tiny_dir, run, steps=2, resume=True))
    _reseal(run / "checkpoint-1")  # changed together with its manifest: torch.load(weights_only=True) refuses it
    with pytest.raises(ValueError, match="refused by torch.load.weights_only=True.: Weights only load failed"):
        train(small_config(tiny_dir, run, steps=2, resume=True))
    assert not marker.exists()


def test_non_finite_losses_are_skipped_and_counted(tiny_dir, tmp_path):
    history = train(small_config(tiny_dir, tmp_path / "run", steps=2, env_kwargs={"nan_at": 3, "run": str(tmp_path)}))
    assert history[0]["skipped"] == 1 and history[1]["skipped"] == 1
    weights = MLLMAgent.from_pretrained(tmp_path / "run" / "final", device="cpu").model.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values())


# ---------------------------------------------------------------- logging, evaluation, LoRA, CLI


def test_real_env_run_logs_tensorboard_and_writes_held_out_evaluations(tiny_dir, trance_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = small_config(
        tiny_dir, out, env="TVR-Event-v0", env_kwargs={"source": str(trance_dir)}, eval_every=2, eval_episodes=3
    )
    train(cfg)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/reward", "train/acc", "train/kl", "train/clip_frac", "train/completion_len", "eval/acc"):
        assert tag in tags
    assert any(t.startswith("reward_terms/") for t in tags)
    result = json.loads((out / "eval-2.json").read_text())
    assert result["episodes"] == 3 and result["summary"]["overall"]["n"] == 3
    assert "Acc" in (out / "eval-2.txt").read_text()


def test_held_out_seeds_never_meet_training_seeds(tiny_dir, tmp_path):
    FavourTokenEnv.instances.clear()
    train(small_config(tiny_dir, tmp_path / "run", steps=3, eval_every=1, eval_episodes=3))
    trained = {s for env in FavourTokenEnv.instances[:2] for s in env.seeds}  # one training env per episode
    held_out = {s for env in FavourTokenEnv.instances[2:] for s in env.seeds}  # the evaluator's
    assert len(trained) == 3 * 2 and held_out == {EVAL_SEED_BASE + i for i in range(3)}
    assert max(trained) < EVAL_SEED_BASE


def test_lora_run_saves_an_adapter_that_loads_as_an_agent(tiny_dir, tmp_path):
    out = tmp_path / "run"
    train(small_config(tiny_dir, out, lora=True, lora_r=4, beta=0.04, steps=1))
    assert (out / "final" / "adapter_config.json").is_file()
    agent = MLLMAgent.from_pretrained(out / "final", device="cpu", max_new_tokens=4)
    assert isinstance(
        agent.act(
            {"initial": np.zeros((24, 32, 3), np.uint8), "final": np.zeros((24, 32, 3), np.uint8), "prompt": "object"}
        ),
        str,
    )


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_reaches_the_model_and_each_step_logs_its_sampling_time(tiny_dir, tmp_path, lora):
    from tvr_gym.agents.mllm.grpo import build_policy, make_accelerator

    def checkpointed(model) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())

    for on in (False, True):
        cfg = small_config(tiny_dir, tmp_path / f"policy-{on}", lora=lora, lora_r=4, gradient_checkpointing=on)
        policy = build_policy(cfg, tiny_dir, make_accelerator(cfg))
        assert checkpointed(policy.model) is on
    history = train(small_config(tiny_dir, tmp_path / "run", lora=lora, lora_r=4, gradient_checkpointing=True))
    assert all(np.isfinite(h["loss"]) for h in history)
    assert all(0 < h["generation_time"] <= h["step_time"] for h in history)


def test_cli_builds_the_tiny_model_and_trains(tmp_path, capsys):
    from tvr_gym.apps.cli import main

    assert main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
    args = [
        "train",
        "grpo",
        "--model",
        "tiny",
        "--env",
        "TVRTest-FavourToken-v0",
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--quiet",
        "--loss",
        "dr_grpo",
    ]
    assert main(args) == 0
    assert (tmp_path / "run" / "base" / "config.json").is_file()
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["scale_std"] is False
    with pytest.raises(SystemExit):
        main(["train", "grpo", "--out", str(tmp_path / "x"), "--loss", "ppo"])
    assert main(["train", "grpo", "--out", str(tmp_path / "x"), "--reward", "no_wrong_penalty", "--steps", "0"]) == 2
    assert "steps: expected an integer >= 1" in capsys.readouterr().err  # an ablation is a valid --reward


def test_trained_policy_plugs_into_the_evaluator_as_an_agent(tiny_dir, trance_dir, tmp_path):
    from tvr_gym.agents import make_agent
    from tvr_gym.agents.evaluate import evaluate

    out = tmp_path / "run"
    env_kwargs = {"source": str(trance_dir), "obs_mode": "text", "render_size": (160, 120)}
    train(small_config(tiny_dir, out, env="TVR-Event-v0", env_kwargs={"source": str(trance_dir)}, steps=1))
    agent = make_agent(f"mllm:{out / 'final'}")
    assert agent.use_images is False and agent.max_new_tokens == 8  # read back from tvr_policy.json
    result = evaluate(agent, "TVR-Event-v0", episodes=4, env_kwargs=env_kwargs, progress=False, batch_size=2)
    assert len(result.records) == 4 and all(isinstance(r["answer"], str) for r in result.records)
    assert result.summary["overall"]["n"] == 4


# ---------------------------------------------------------------- interactive episodes (multi-turn)


def test_interactive_run_trains_on_model_turns_with_episode_advantages(tiny_dir, tmp_path):
    from tvr_gym.agents.mllm.grpo import TurnSamples, batch_rows, interactive_rollouts

    cfg = small_config(
        tiny_dir, tmp_path / "run", env="TVR-Interactive-v0", obs_mode="image", size=[32, 24], group_size=2,
        eval_every=2, eval_episodes=2, max_images=5, env_kwargs={"renderer": "numpy"},
    )  # fmt: skip
    history = train(cfg)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["interactive/turns"] <= 3  # 5 images: the target, the first render and 3 replies
    result = json.loads((tmp_path / "run" / "eval-2.json").read_text())
    assert set(result["interactive"]) >= {"success", "misplaced", "fixed_strict", "turns", "return"}

    # every turn is one sample: the chat the model saw and its own completion, nothing else
    agent = MLLMAgent.from_pretrained(tiny_dir, use_images=True, max_new_tokens=8)
    envs = [gym.make("TVR-Interactive-v0", **cfg.env_options()) for _ in range(2)]
    episodes, batch = interactive_rollouts(cfg, agent, envs, [3, 4])
    assert isinstance(batch, TurnSamples) and len(batch) == sum(len(e.chats) for e in episodes)
    starts = [e.env.problem for e in episodes]
    assert starts[0] == starts[1] and starts[2] == starts[3] and starts[0] != starts[2]  # groups share a scene
    _, ids, mask = batch_rows(batch, slice(0, len(batch)), agent)
    for k, completion in enumerate(batch.completions):
        assert mask[k].sum() == len(completion) and torch.equal(ids[k, : len(completion)].cpu(), completion)
    for e in episodes:  # a turn's chat holds every earlier turn's completion as the model's own message
        for k, (chat, _) in enumerate(e.chats):
            said = [b["text"] for m in chat if m["role"] == "assistant" for b in m["content"]]
            assert said == [x.action for x in e.history[:k]]


class TwoRankAccelerator:
    """The main process of a two-process run, with rank 1 made as slow as accelerate allows.

    ``save_state`` writes rank 0's files at once and leaves rank 1's RNG state pending; like a real
    collective, ``wait_for_everyone`` returns only once every rank has caught up, so the pending write
    lands there (``os.makedirs`` as a late rank would: recreating the directory if it was moved away).
    """

    is_main_process = True

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.pending: list[Path] = []

    def get_state_dict(self, model):
        return model.state_dict()

    def unwrap_model(self, model):
        return model

    def save_state(self, folder: str, safe_serialization: bool = True) -> None:
        os.makedirs(folder, exist_ok=True)
        (Path(folder) / "random_states_0.pkl").write_bytes(b"rank 0")
        self.pending.append(Path(folder))

    def wait_for_everyone(self) -> None:
        for folder in self.pending:
            os.makedirs(folder, exist_ok=True)
            (folder / "random_states_1.pkl").write_bytes(b"rank 1")
        self.pending.clear()


def test_a_checkpoint_holds_every_ranks_state_even_when_a_rank_is_late(tmp_path):
    """The rename into place waits for every rank's accelerate state (a lost random_states_1.pkl made
    two-process resumes fail under load)."""
    from tvr_gym.agents.mllm.grpo import ACCELERATE_STATE, save_checkpoint

    class Weights(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def save_pretrained(self, folder, state_dict, safe_serialization):
            torch.save(state_dict, Path(folder) / "weights.pt")

    class Processor:
        def save_pretrained(self, folder):
            (Path(folder) / "processor.json").write_text("{}")

    model = Weights()
    target = tmp_path / "checkpoint-2"
    save_checkpoint(TwoRankAccelerator(model), model, Processor(), target, {"obs_mode": "text"}, {"step": 2})
    assert sorted(p.name for p in (target / ACCELERATE_STATE).iterdir()) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    assert (target / "weights.pt").is_file() and (target / "processor.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]  # no temporary left behind
