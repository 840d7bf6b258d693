"""GRPO and SFT learning curves for ``benchmarks.learning``: the tiny Qwen2.5-VL on TVR-Basic.

Two starts, each built once and shared by every arm that begins from it:

- ``sft``: SFT on the true answers of training episodes (``warmup.supervised_finetune``);
- ``format``: the format warm-up (random well-formed answers, never the truth; ``warmup.warmup_format``).

From a start, every arm gets the same training time (``minutes``; evaluations and checkpoints are not
counted) on the same machine: GRPO with one reward (``star``, ``sparse``, ``state`` or a STAR ablation),
or ``sft``, continued SFT on the same training episodes (the control). Checkpoints are scored afterwards
on held-out episodes (reset seeds from :data:`~tvr_gym.agents.mllm.grpo.EVAL_SEED_BASE`; training seeds
lie below it), greedily, with one yardstick whatever the arm trained on; the final policy is also
scored on TVR-Event (1-4 steps) to see what transfers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

ENV_ID = "TVR-Basic-v0"
TRANSFER_ENV_ID = "TVR-Event-v0"
TEXT_ENV = {"obs_mode": "text", "render_size": (32, 24), "prompt_layout": "compact"}
"""Text observations: both states in the compact layout (one line per object, each value as
``initial > final``), and thumbnails for the (unread) images."""
IMAGE_ENV = {"obs_mode": "image", "render_size": (160, 120), "prompt_layout": "tables"}


def env_kwargs(obs_mode: str, layout: str | None = None) -> dict[str, Any]:
    """The environment keywords of a run: :data:`TEXT_ENV` or :data:`IMAGE_ENV`, with another layout if given."""
    found = dict(TEXT_ENV if obs_mode == "text" else IMAGE_ENV)
    return found if layout is None else {**found, "prompt_layout": layout}


def layout_only(obs_mode: str, layout: str | None = None) -> dict[str, Any]:
    """The environment keywords beyond ``obs_mode`` and ``render_size`` (which the trainers take themselves)."""
    return {"prompt_layout": env_kwargs(obs_mode, layout)["prompt_layout"]}


def held_out(
    model_dir: Path,
    obs_mode: str,
    episodes: int,
    env_id: str = ENV_ID,
    layout: str | None = None,
    no_change: bool = False,
) -> dict[str, float]:
    """Greedy answers of the checkpoint on the held-out episodes, scored with the STAR reward
    (``no_change``: under the :class:`NoChangeShown` ablation)."""
    from tvr_gym.agents.mllm.grpo import EVAL_SEED_BASE
    from tvr_gym.agents.mllm.policy import MLLMAgent

    agent = MLLMAgent.from_pretrained(model_dir, device="cpu", use_images=obs_mode == "image", max_new_tokens=48)
    return scores(NoChangeShown(agent) if no_change else agent, obs_mode, episodes, env_id, EVAL_SEED_BASE, layout)


class NoChangeShown:
    """The image ablation: ``agent`` answers with the final image replaced by the initial one, so the
    images show the scene but not the change. A policy that reads the change drops to what the table
    alone gives; one that does not keeps its scores."""

    privileged = False

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def act_batch(self, observations: list[dict[str, Any]]) -> list[str]:
        return self.agent.act_batch([{**obs, "final": obs["initial"]} for obs in observations])

    def act(self, obs: dict[str, Any]) -> str:
        return self.act_batch([obs])[0]


def no_change_shown(model_dir: Path, episodes: int) -> dict[str, float]:
    """:func:`held_out` of an image checkpoint under the :class:`NoChangeShown` ablation."""
    return held_out(model_dir, "image", episodes, no_change=True)


def scores(
    agent: Any, obs_mode: str, episodes: int, env_id: str, seed: int, layout: str | None = None
) -> dict[str, float]:
    """TVR Acc, Basic Obj/Attr/ValAcc, the STAR reward and the well-formed share of ``agent``'s answers."""
    from benchmarks.learning_ppo import summary_scores
    from tvr_gym.agents.evaluate import evaluate
    from tvr_gym.core.answer import parse_answer

    result = evaluate(agent, env_id, episodes, seed=seed, env_kwargs={**env_kwargs(obs_mode, layout), "reward": "star"},
                      progress=False, batch_size=25)  # fmt: skip
    parsed = [parse_answer(r["answer"]) for r in result.records]
    formats = [float(p.well_formed and bool(p.steps)) for p in parsed]
    return {**summary_scores(result.summary), "format": sum(formats) / max(len(formats), 1)}


def chance(obs_mode: str, episodes: int, guess: str = "random") -> dict[str, float]:
    """A one-item guess (:func:`benchmarks.learning_ppo.one_item_guess`: ``random``, or ``visible``, which
    reads the prompt's initial table) on the same held-out episodes."""
    from benchmarks.learning_ppo import one_item_guess
    from tvr_gym.agents.mllm.grpo import EVAL_SEED_BASE

    return scores(one_item_guess(guess), obs_mode, episodes, ENV_ID, EVAL_SEED_BASE)


def model_name(model: dict[str, int]) -> str:
    """``WIDTHxLAYERS``, with ``-Ntok`` when the model caps its vision tokens per image."""
    tokens = model.get("image_tokens")
    return f"{model['hidden_size']}x{model['layers']}" + (f"-{tokens}tok" if tokens else "")


def build_start(
    out: Path,
    start: str,
    obs_mode: str,
    model: dict[str, int],
    budget: dict[str, Any],
    layout: str | None = None,
    save_every: int = 0,
) -> Path:
    """The shared start of one kind (``sft`` or ``format``), built once: ``OUT/start-KIND-MODE-LAYOUT-MODEL``
    (``save_every``: SFT checkpoints along the way, for :func:`start_curve`)."""
    import torch

    from tvr_gym.agents.mllm.tiny import make_tiny_model
    from tvr_gym.agents.mllm.warmup import WARMUP_FILE, supervised_finetune, warmup_format

    shown = env_kwargs(obs_mode, layout)["prompt_layout"]
    target = out / f"start-{start}-{obs_mode}-{shown}-{model_name(model)}"
    if (target / WARMUP_FILE).is_file():
        return target
    torch.set_num_threads(1)  # the other core runs the PPO jobs meanwhile
    raw = raw_dir(out, model)
    if not (raw / "config.json").is_file():
        make_tiny_model(raw, seed=0, **model)
    common = {"obs_mode": obs_mode, "render_size": env_kwargs(obs_mode)["render_size"], "seed": 0, "progress": True,
              "env_kwargs": layout_only(obs_mode, layout)}  # fmt: skip
    if start == "format":
        return warmup_format(raw, target, ENV_ID, steps=budget["format_steps"], **common)
    sft = budget["sft"]
    return supervised_finetune(raw, target, ENV_ID, steps=10**9, batch_size=sft["batch_size"], lr=sft["lr"],
                               episodes=sft["episodes"], max_seconds=budget["sft_minutes"] * 60,
                               lr_warmup=sft.get("lr_warmup", 0), save_every=save_every, **common)  # fmt: skip


def raw_dir(out: Path, model: dict[str, int]) -> Path:
    """The random-weight checkpoint the starts of ``model`` are trained from."""
    return out / f"raw-base-{model_name(model)}"


def start_curve(out: Path, start_dir: Path, obs_mode: str, model: dict[str, int], episodes: int) -> dict[str, Any]:
    """The SFT start's own learning curve, as a ``learning.json`` record: the random-weight model
    (``acc[0]``), each checkpoint written while the start trained, and the start itself."""
    from tvr_gym.agents.mllm.warmup import WARMUP_FILE

    final = json.loads((start_dir / WARMUP_FILE).read_text())
    points = [(0, 0.0, raw_dir(out, model)), (final["done"], final["seconds"], start_dir)]
    for path in start_dir.glob("checkpoint-*"):
        record = json.loads((path / WARMUP_FILE).read_text())
        points.append((record["done"], record["seconds"], path))
    curve: dict[str, list] = {"wall_s": [], "steps": []}
    for step, wall, path in sorted(points):
        curve["wall_s"].append(round(wall, 1))
        curve["steps"].append(step)
        for key, value in held_out(path, obs_mode, episodes).items():
            curve.setdefault(key, []).append(value)
    ablation = {"no_change_shown": no_change_shown(start_dir, episodes)} if obs_mode == "image" else {}
    return {
        "algo": "sft", "task": "basic", "start": "scratch", "obs_mode": obs_mode, "reward": "sft", "seed": 0,
        **ablation, **curve, "minutes": round(final["seconds"] / 60, 1), "model": model, "variant": "",
        "settings": {k: final[k] for k in ("lr", "batch_size", "episodes")},
        "layout": env_kwargs(obs_mode)["prompt_layout"],
    }  # fmt: skip


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    """Train one arm for ``job["minutes"]`` of training time (or ``job["steps"]`` GRPO steps), then score its
    checkpoints."""
    import torch

    torch.set_num_threads(1)
    out, start = Path(job["out"]), Path(job["start_dir"])
    minutes, obs_mode, seed, layout = job["minutes"], job["obs_mode"], job["seed"], job.get("layout")
    t0 = time.perf_counter()
    if job["reward"] == "sft":
        points = _continued_sft(start, out, job)
    else:
        points = _grpo(start, out, job)
    train_s = time.perf_counter() - t0
    curve: dict[str, list] = {"wall_s": [0.0], "steps": [0]}
    for key, value in job["start_scores"].items():
        curve[key] = [value]
    for step, wall, path in points:
        curve["wall_s"].append(round(wall, 1))
        curve["steps"].append(step)
        for key, value in held_out(path, obs_mode, job["episodes"], layout=layout).items():
            curve[key].append(value)
    final = points[-1][2]
    event = held_out(final, obs_mode, job["episodes"], TRANSFER_ENV_ID, layout)
    ablation = {"no_change_shown": no_change_shown(final, job["episodes"])} if obs_mode == "image" else {}
    return {
        "algo": "sft" if job["reward"] == "sft" else "grpo", "task": "basic", "start": job["start"],
        "obs_mode": obs_mode, "reward": job["reward"], "seed": seed, **curve, "minutes": minutes,
        "event": {"acc": event["acc"], "star": event["star"]}, "train_total_s": round(train_s, 1),
        "settings": job["settings"], "variant": job.get("variant", ""),
        "layout": env_kwargs(obs_mode, layout)["prompt_layout"], **ablation,
    }  # fmt: skip


def _grpo(start: Path, out: Path, job: dict[str, Any]) -> list[tuple[int, float, Path]]:
    """GRPO from ``start``; returns (step, training seconds, checkpoint) of every checkpoint."""
    from tvr_gym.agents.mllm.grpo import GRPOConfig, train

    size = list(env_kwargs(job["obs_mode"])["render_size"])
    steps, minutes = (job["steps"], 0.0) if job.get("steps") else (10**9, job["minutes"])
    cfg = GRPOConfig(model=str(start), env=ENV_ID, out=str(out), steps=steps, max_minutes=minutes,
                     reward=job["reward"], seed=job["seed"], save_every=job["save_every"], eval_every=0,
                     device="cpu", quiet=True, obs_mode=job["obs_mode"], size=size,
                     env_kwargs=layout_only(job["obs_mode"], job.get("layout")), **job["settings"])  # fmt: skip
    history = train(cfg) if not (out / "final").is_dir() else _history(out)
    elapsed, wall = 0.0, {}
    for record in history:
        elapsed += record["step_time"]
        wall[record["step"]] = elapsed
    found = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*"))
    return [(step, wall[step], path) for step, path in found]


def _history(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]


def _continued_sft(start: Path, out: Path, job: dict[str, Any]) -> list[tuple[int, float, Path]]:
    """Continued SFT from ``start`` on the start's training episodes; returns its checkpoints and the end."""
    from tvr_gym.agents.mllm.warmup import WARMUP_FILE, finetune

    if not (out / WARMUP_FILE).is_file():
        sft = job["settings"]
        finetune(start, out, "truth", ENV_ID, steps=10**9, batch_size=sft["batch_size"], lr=sft["lr"],
                 obs_mode=job["obs_mode"], episodes=sft["episodes"], seed=0, shuffle_seed=1000 + job["seed"],
                 render_size=env_kwargs(job["obs_mode"])["render_size"], max_seconds=job["minutes"] * 60,
                 save_every=job["save_every"], env_kwargs=layout_only(job["obs_mode"]))  # fmt: skip
    points = []
    for path in [*out.glob("checkpoint-*"), out]:
        record = json.loads((path / WARMUP_FILE).read_text())
        points.append((record["done"], record["seconds"], path))
    return sorted(points)
