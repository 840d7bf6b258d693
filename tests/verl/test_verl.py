"""verl 0.9.x reads tvr-gym's exports, composes the documented configs and loads tvr-gym's reward.

Runs in the verl venv (``make verl-env``; marker ``verl``). Every config in ``docs/configs/*.sh`` is
composed with verl's own Hydra config and validated as ``main_ppo`` validates it; the reward a config
names is loaded by verl's ``RewardLoopWorker`` (the path ``main_ppo`` takes) and must equal ``env.step``.
"""

from __future__ import annotations

import asyncio
import random
import shlex

import gymnasium as gym
import numpy as np
import pytest

verl = pytest.importorskip("verl", reason="the verl tests run in the verl venv: make verl-env (docs/integrations.md)")

from tvr_gym.core.answer import format_item, parse_answer  # noqa: E402
from tvr_gym.core.spec import SPEC  # noqa: E402
from tvr_gym.data.export import export  # noqa: E402

from verl_support import CONFIGS, compose, dataset  # noqa: E402

SIZE = (48, 36)
ENV = "TVR-CrossView-v0"
N = 8
SCRIPTS = sorted(CONFIGS.glob("verl_*.sh"))
ADDED_KEYS = {
    # free-form dicts that verl passes on as they are
    "+actor_rollout_ref.rollout.engine_kwargs.vllm.disable_mm_preprocessor_cache",
    "+reward.custom_reward_function.reward_kwargs.reward",  # get_custom_reward_fn's reward_kwargs
    "+actor_rollout_ref.rollout.limit_images",  # a RolloutConfig field that rollout.yaml does not list
}
"""Keys the documented configs add with "+" (new to verl's config), each with where verl reads it."""


def main_ppo_overrides(script, **variables: str) -> list[str]:
    """The Hydra overrides a documented script passes to ``verl.trainer.main_ppo`` (its shell variables set)."""
    text = script.read_text()
    command = text[text.index("python3 -m verl.trainer.main_ppo") :]
    command = command.replace('"$@"', "").replace("\\\n", " ")
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    words = shlex.split(command)[3:]
    assert words and all("=" in w for w in words), words
    assert not [w for w in words if "$" in w], "a shell variable left unset"
    return words


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl-exports")
    export("verl", ENV, N, out / "image", seed=4, render_size=SIZE, progress=False)
    export("verl", ENV, N, out / "text", seed=4, render_size=SIZE, obs_mode="text", progress=False)
    return out


def composed(script, model_dir, data_dir, extra=()):
    variables = {"DATA": str(data_dir), "HERE": str(CONFIGS)}
    overrides = main_ppo_overrides(script, **variables)
    overrides = [o for o in overrides if not o.startswith("actor_rollout_ref.model.path=")]
    return compose([*overrides, f"actor_rollout_ref.model.path={model_dir}", *extra])


# ---------------------------------------------------------------- the documented configs


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_documented_configs_compose_with_verl_s_config_and_validate(script, tmp_path):
    """Every override key exists in verl's config (Hydra refuses unknown keys) and main_ppo's checks pass."""
    from verl.trainer.main_ppo import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    overrides = main_ppo_overrides(script, DATA=str(tmp_path), HERE=str(CONFIGS))
    config = compose(overrides)  # Hydra refuses a key that verl's config lacks, unless it is added with "+"
    added = {o.partition("=")[0] for o in overrides if o.startswith("+")}
    assert added <= ADDED_KEYS, added - ADDED_KEYS
    if "+actor_rollout_ref.rollout.limit_images" in added:
        from dataclasses import fields

        from verl.workers.config import RolloutConfig

        assert "limit_images" in {f.name for f in fields(RolloutConfig)}
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    assert config.actor_rollout_ref.actor.clip_ratio_low == config.actor_rollout_ref.actor.clip_ratio_high == 0.2
    assert config.algorithm.adv_estimator == "grpo"


def test_the_crossview_config_names_our_reward_where_main_ppo_reads_it(tmp_path):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from tvr_gym.integrations.verl import compute_score

    config = compose(main_ppo_overrides(CONFIGS / "verl_tvr_crossview.sh", DATA=str(tmp_path), HERE=str(CONFIGS)))
    assert config.custom_reward_function.path is None  # the legacy top-level key, which main_ppo ignores
    fn = get_custom_reward_fn(config)
    assert fn is not None and fn.func.__name__ == "_call_with_kwargs" and fn.args[0] is compute_score
    assert fn.args[1] == {"reward": "star"}


# ---------------------------------------------------------------- verl's dataset reads our exports


@pytest.mark.parametrize("mode", ["image", "text"])
def test_rlhf_dataset_keeps_every_exported_row(exports, model_dir, mode):
    config = composed(CONFIGS / "verl_tvr_crossview.sh", model_dir, exports / mode)
    from verl.utils.tokenizer import hf_processor, hf_tokenizer

    tokenizer, processor = hf_tokenizer(str(model_dir)), hf_processor(str(model_dir))
    rows = dataset(config, [exports / mode / "train.parquet"], tokenizer, processor)
    assert len(rows) == N
    env = gym.make(ENV, render_size=SIZE, obs_mode=mode)
    for i in range(N):
        row = rows[i]
        obs, info = env.reset(seed=4, options={"index": i})
        content = row["raw_prompt"][-1]["content"]
        if mode == "image":
            assert [b["type"] for b in content] == ["image", "image", "text"]
            assert np.array_equal(np.asarray(content[0]["image"]), obs["initial"])
            assert np.array_equal(np.asarray(content[1]["image"]), obs["final"])
            assert content[2]["text"] == obs["prompt"]
        else:
            assert content == obs["prompt"] and "<image>" not in content
            assert "given as tables below." in content and "images show" not in content  # no image claimed
        assert row["extra_info"]["answer"] == info["truth"] and row["index"] == i


def test_rlhf_dataset_reads_the_parquet_shards_as_the_whole_export(exports, model_dir, tmp_path):
    """``export --shard-size``: verl's dataset takes the shards' file list and gets the one-file export's rows."""
    from verl.utils.tokenizer import hf_processor, hf_tokenizer

    from tvr_gym.data.shards import shard_files

    export("verl", ENV, N, tmp_path, seed=4, render_size=SIZE, progress=False, shard_size=2)
    files = shard_files(tmp_path / "train")
    assert len(files) == -(-N // 2) and all(f.suffix == ".parquet" for f in files)
    config = composed(CONFIGS / "verl_tvr_crossview.sh", model_dir, exports / "image")
    tokenizer, processor = hf_tokenizer(str(model_dir)), hf_processor(str(model_dir))
    sharded = dataset(config, files, tokenizer, processor)
    whole = dataset(config, [exports / "image" / "train.parquet"], tokenizer, processor)
    assert len(sharded) == len(whole) == N
    for i in range(N):
        a, b = sharded[i], whole[i]
        assert a["index"] == b["index"] == i and a["extra_info"] == b["extra_info"]
        blocks_a, blocks_b = a["raw_prompt"][-1]["content"], b["raw_prompt"][-1]["content"]
        assert blocks_a[2]["text"] == blocks_b[2]["text"]
        for k in (0, 1):
            assert np.array_equal(np.asarray(blocks_a[k]["image"]), np.asarray(blocks_b[k]["image"]))


# ---------------------------------------------------------------- verl loads our reward, which equals env.step


def answers(truth: str, rng: random.Random) -> list[str]:
    items = [format_item(s) for s in parse_answer(truth).steps]
    obj, attr, value = parse_answer(truth).steps[0]
    other = next(v for v in SPEC.values["color"] if v != value) if attr == "color" else "red"
    return [
        truth,
        "<think>hm</think><answer>" + ", ".join(reversed(items)) + "</answer>",
        f"<think></think><answer>{(obj + 1) % SPEC.n_objects}.color.{other}</answer>",
        "<answer></answer>",
        ", ".join(items),
        "the cube turned cyan",
        "<think>a</think><answer>" + ", ".join(items + items) + "</answer>",
        "<think></think><answer>" + ", ".join(rng.sample(items, len(items))) + ", 3.size.small</answer>",
    ]


@pytest.mark.parametrize("reward", ["star", "state", "sparse"])
def test_verl_s_reward_worker_scores_like_env_step(exports, model_dir, reward):
    import torch
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    extra = [] if reward == "star" else [f"+reward.custom_reward_function.reward_kwargs.reward={reward}"]
    extra.append(f"data.train_files={exports / 'image' / 'train.parquet'}")
    script = CONFIGS / "verl_tvr_crossview.sh"
    overrides = main_ppo_overrides(script, DATA=str(exports / "image"), HERE=str(CONFIGS))
    if reward != "star":  # the documented value, replaced as a user would on the command line
        overrides = [o for o in overrides if not o.startswith("+reward.custom_reward_function.reward_kwargs.reward")]
    config = compose([*overrides, f"actor_rollout_ref.model.path={model_dir}", *extra])
    from verl.utils.tokenizer import hf_processor, hf_tokenizer

    tokenizer = hf_tokenizer(str(model_dir))
    rows = dataset(config, [exports / "image" / "train.parquet"], tokenizer, hf_processor(str(model_dir)))
    rng = random.Random(0)
    ROW_FIELDS = ("data_source", "reward_model", "extra_info")  # noqa: N806
    cases = []  # (row index, answer text, the batch verl's reward worker scores)
    for i in range(N):
        row = rows[i]
        for text in answers(row["extra_info"]["answer"], rng):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if tokenizer.decode(ids, skip_special_tokens=True) != text:
                continue  # the tiny tokenizer cannot spell it; verl would score what it decodes
            padded = (ids or [tokenizer.pad_token_id]) + [tokenizer.pad_token_id] * 2
            data = DataProto.from_dict(
                tensors={
                    "prompts": torch.tensor([[1, 2]]),
                    "responses": torch.tensor([padded]),
                    "attention_mask": torch.tensor([[1, 1] + [1] * len(ids) + [0] * (len(padded) - len(ids))]),
                },
                non_tensors={k: np.array([row[k]], dtype=object) for k in ROW_FIELDS},
            )
            cases.append((i, text, data))

    async def score_all():  # the worker binds the event loop it is made in, as in its Ray actor
        worker = RewardLoopWorker(config)
        return [(await worker.compute_score_batch(data))[0] for _, _, data in cases]

    results = asyncio.run(score_all())
    env = gym.make(ENV, render_size=SIZE, reward=reward)
    for (i, text, _), result in zip(cases, results):
        env.reset(seed=4, options={"index": i})
        _, expected, _, _, info = env.step(text)
        assert result["reward_score"] == pytest.approx(expected), (reward, text)
        assert result["reward_extra_info"]["acc"] == info["metrics"]["acc"]
    assert len(cases) >= N * 6

