"""The MLLM policy and the tiny Qwen2.5-VL preset: loading, tokenizer round-trip, generation, sampling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tvr_gym  # noqa: F401  (registers the environments)
from tvr_gym.agents.mllm.policy import MLLMAgent, vision_token_ids
from tvr_gym.agents.mllm.sampling import sample, token_logprobs
from tvr_gym.agents.mllm.tiny import VISION_TOKENS
from tvr_gym.core.answer import format_answer, parse_answer
from tvr_gym.core.prompt import build_prompt
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS, Transformation

from props import examples

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def agent(tiny_dir):
    return MLLMAgent.from_pretrained(tiny_dir, device="cpu", max_new_tokens=12)


def _obs(rng: np.random.Generator, prompt: str = "Name the transformations.") -> dict:
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    return {"initial": image, "final": image[::-1].copy(), "prompt": prompt}


def test_tiny_checkpoint_reloads_through_auto_classes_and_generates(tiny_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True, trust_remote_code=False)
    processor = AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert (tiny_dir / "model.safetensors").is_file()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "object"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.count("<|image_pad|>") == 1 and text.endswith("<|im_start|>assistant\n")
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    # images become only a few vision tokens
    assert 1 <= int((inputs["input_ids"] == processor.image_token_id).sum()) <= 16
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


@settings(max_examples=examples(60), deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, SPEC.n_objects - 1), st.sampled_from(PAIRS)), min_size=0, max_size=4))
def test_canonical_answers_round_trip_through_the_tokenizer(agent, steps):
    transformations = [Transformation(obj, attr, value) for obj, (attr, value) in steps]
    text = format_answer(transformations, think="object 2 moved")
    ids = agent.tokenizer(text)["input_ids"]
    assert agent.tokenizer.unk_token_id not in ids
    decoded = agent.tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == text
    parsed = parse_answer(decoded)
    assert [tuple(s) for s in parsed.steps] == [(t.obj_idx, t.attr, t.value) for t in transformations]


def test_every_fixture_prompt_is_known_words(agent, trance_problems):
    tok = agent.tokenizer
    for problem in trance_problems[:40]:
        for mode, layout in (("image", "tables"), ("text", "tables"), ("text", "compact")):
            prompt = build_prompt(problem, mode, layout)
            ids = tok(prompt)["input_ids"]
            assert tok.unk_token_id not in ids, prompt
            assert tok.decode(ids) == prompt


def test_vision_token_ids_cover_every_vision_special_token(agent):
    ids = set(vision_token_ids(agent.processor))
    expected = {agent.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    assert expected <= ids
    assert agent.processor.image_token_id in ids


def test_sampling_never_emits_vision_tokens_even_when_the_model_prefers_them(agent):
    vision = torch.tensor(agent.suppressed_ids)

    def prefer_vision(module, args, output):
        output[..., vision] += 50.0  # the raw model now puts almost all mass on vision tokens
        return output

    handle = agent.model.lm_head.register_forward_hook(prefer_vision)
    try:
        rng = np.random.default_rng(0)
        inputs = agent.encode([_obs(rng)])
        torch.manual_seed(0)  # the check must not depend on which tests ran before
        raw = agent.model.generate(**inputs, max_new_tokens=6, do_sample=True, pad_token_id=agent.pad_id)
        assert torch.isin(raw[:, inputs["input_ids"].shape[1] :], vision).any()  # the hazard is real
        torch.manual_seed(0)
        samples = sample(agent, [_obs(rng), _obs(rng)], G=4, temperature=1.5, max_new_tokens=8)
        assert not torch.isin(samples.completion_ids, vision).any()
        assert torch.isfinite(samples.logprobs).all()
    finally:
        handle.remove()


def test_sample_shapes_logprobs_and_masks(agent):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    samples = sample(agent, [_obs(rng), _obs(rng, "object red")], G=3, temperature=1.0, max_new_tokens=10)
    assert samples.completion_ids.shape[0] == 6 and samples.completion_ids.shape[1] <= 10
    assert len(samples.texts) == 6 and all(isinstance(t, str) for t in samples.texts)
    assert (samples.logprobs <= 0).all()
    assert (samples.logprobs[samples.completion_mask == 0] == 0).all()
    # log-probs under the sampling policy equal a fresh scoring pass of the same tokens
    again = token_logprobs(agent, samples.inputs, samples.completion_ids, samples.completion_mask)
    torch.testing.assert_close(again, samples.logprobs, atol=1e-5, rtol=0)
    # a group of G rows shares its prompt
    ids = samples.inputs["input_ids"]
    assert torch.equal(ids[0], ids[1]) and torch.equal(ids[0], ids[2]) and not torch.equal(ids[2], ids[3])


def test_completion_mask_stops_after_the_first_end_of_turn(agent):
    e, x = agent.eos_id, agent.eos_id + 1
    ids = torch.tensor([[x, x, e, x, e], [x, x, x, x, x], [e, x, x, x, x]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert torch.equal(agent.completion_mask(ids), expected)


def test_batched_greedy_answers_equal_one_by_one_answers(agent):
    rng = np.random.default_rng(2)
    observations = [_obs(rng, "object"), _obs(rng, "Name the transformations of every object, in order.")]
    batched = agent.act_batch(observations)
    assert batched == [agent.act(o) for o in observations]


def test_agent_acts_in_the_real_environment(agent, trance_dir):
    for mode in ("image", "text"):
        env = gym.make("TVR-Event-v0", obs_mode=mode, render_size=(160, 120), source=str(trance_dir))
        obs, info = env.reset(seed=0)
        agent.use_images = mode == "image"
        try:
            answer = agent.act(obs)
        finally:
            agent.use_images = True
        assert isinstance(answer, str)
        _, reward, terminated, _, info = env.step(answer)
        assert terminated and np.isfinite(reward) and "acc" in info["metrics"]


def test_text_only_inputs_hold_no_image_tokens(agent):
    rng = np.random.default_rng(3)
    agent.use_images = False
    try:
        inputs = agent.encode([_obs(rng)])
    finally:
        agent.use_images = True
    assert "pixel_values" not in inputs
    assert not (inputs["input_ids"] == agent.processor.image_token_id).any()
    assert int((agent.encode([_obs(rng)])["input_ids"] == agent.processor.image_token_id).sum()) > 0


def test_bad_inputs_get_clear_errors(agent, tmp_path):
    with pytest.raises(ValueError, match="path"):
        MLLMAgent.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"):
        MLLMAgent.from_pretrained(tmp_path, dtype="float8")
    with pytest.raises(ValueError, match="G"):
        sample(agent, [_obs(np.random.default_rng(0))], G=0)
    with pytest.raises(ValueError, match="obs image"):
        agent.act({"initial": np.zeros((4, 4), np.float32), "final": np.zeros((4, 4, 3), np.uint8), "prompt": "x"})


# ---------------------------------------------------------------- tokenizer length and the format warm-up
ONE_TOKEN_PER_SPACE = r"[A-Za-z]+(?:-[A-Za-z]+)*|\d+|\s|[^\w\s]"
"""The former split (every space its own token): the yardstick for the prompt length."""


def test_prompts_take_about_half_the_tokens_of_a_split_with_space_tokens(agent, trance_problems):
    import re

    for problem in trance_problems[:10]:
        prompt = build_prompt(problem, "text")
        ids = agent.tokenizer(prompt)["input_ids"]
        assert len(ids) <= 0.6 * len(re.findall(ONE_TOKEN_PER_SPACE, prompt))
        assert agent.tokenizer.decode(ids) == prompt


@pytest.mark.parametrize(
    "text",
    [
        "<think>x</think><answer>2.color.cyan, 4.position.front-left.1</answer>",
        "<think>a random guess</think><answer>9.position.behind.2, 0.size.large</answer>",
        " <think>\nobject 2 at 0 -14</think>  <answer>3.shape.cube</answer>\n",
    ],
)
def test_answers_round_trip_and_read_back(agent, text):
    ids = agent.tokenizer(text)["input_ids"]
    assert agent.tokenizer.unk_token_id not in ids
    decoded = agent.tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == text
    assert parse_answer(decoded).steps == parse_answer(text).steps != []
    assert parse_answer(decoded).well_formed


@pytest.fixture(scope="module")
def warm_dir(tiny_dir, tmp_path_factory):
    from tvr_gym.agents.mllm.warmup import warmup_format

    return warmup_format(
        tiny_dir,
        tmp_path_factory.mktemp("warm") / "model",
        "TVR-Basic-v0",
        steps=60,
        batch_size=8,
        lr=6e-3,
        episodes=16,
    )


def _held_out(n: int) -> tuple[gym.Env, list[int]]:
    env = gym.make("TVR-Basic-v0", obs_mode="text", render_size=(32, 24), reward="star")
    return env, [2**31 + i for i in range(n)]


def _readable(text: str) -> bool:
    parsed = parse_answer(text)
    return parsed.well_formed and len(parsed.steps) >= 1


def test_warmup_teaches_the_answer_format_but_not_the_task(warm_dir):
    """Greedy and sampled answers are well formed with a readable item; Acc is the random agent's."""
    from tvr_gym.agents.baselines import RandomAgent

    warm = MLLMAgent.from_pretrained(warm_dir, device="cpu", max_new_tokens=16)
    assert warm.use_images is False
    env, seeds = _held_out(24)
    observations = [env.reset(seed=s)[0] for s in seeds]
    greedy = warm.act_batch(observations)
    torch.manual_seed(0)
    sampled = sample(warm, observations, G=2, max_new_tokens=16, with_logprobs=False).texts
    assert np.mean([_readable(t) for t in greedy]) >= 0.75
    assert np.mean([_readable(t) for t in sampled]) > 0.5
    # the targets were random items: accuracy stays at the random agent's (chance) level
    guesser = RandomAgent(seed=0, max_items=1)
    accs = {"warm": [], "random": []}
    for seed, obs, answer in zip(seeds, observations, greedy):
        for name, text in (("warm", answer), ("random", guesser.act(obs))):
            env.reset(seed=seed)
            accs[name].append(env.step(text)[4]["metrics"]["acc"])
    assert sum(accs["warm"]) <= sum(accs["random"]) + 2


def test_the_untrained_tiny_model_does_not_write_the_format(agent):
    env, seeds = _held_out(8)
    agent.use_images = False
    try:
        answers = agent.act_batch([env.reset(seed=s)[0] for s in seeds], max_new_tokens=16)
    finally:
        agent.use_images = True
    assert not any(_readable(t) for t in answers)


def test_warmup_bad_inputs_get_clear_errors(tiny_dir, tmp_path):
    from tvr_gym.agents.mllm.warmup import warmup_format

    with pytest.raises(ValueError, match="steps"):
        warmup_format(tiny_dir, tmp_path / "w", steps=0)
    with pytest.raises(ValueError, match="env: unknown id 'TVR-Nope-v0'; valid: .*TVR-Basic-v0"):
        warmup_format(tiny_dir, tmp_path / "w", env_id="TVR-Nope-v0", steps=1)
    with pytest.raises(ValueError, match="obs_mode"):
        warmup_format(tiny_dir, tmp_path / "w", obs_mode="audio", steps=1)
    assert not (tmp_path / "w").exists()


def test_image_tokens_sets_how_many_vision_tokens_an_image_gets(tmp_path):
    """A 160x120 render keeps its full 168x112 grid (24 tokens) under ``image_tokens=24``, as Qwen's resize
    arithmetic (:func:`tvr_gym.core.chat.image_tokens`) says; too few tokens is refused before anything is written."""
    from transformers import AutoProcessor

    from tvr_gym.agents.mllm.tiny import make_tiny_model
    from tvr_gym.core.chat import image_tokens

    processor = AutoProcessor.from_pretrained(make_tiny_model(tmp_path / "m", image_tokens=24), local_files_only=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "object"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[np.zeros((120, 160, 3), dtype=np.uint8)], return_tensors="pt")
    found = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert found == image_tokens((160, 120), min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 24) == 24
    with pytest.raises(ValueError, match="image_tokens"):
        make_tiny_model(tmp_path / "few", image_tokens=1)
    assert not (tmp_path / "few").exists()


def test_make_tiny_model_cli_runs_the_warmup(tmp_path):
    import json

    from tvr_gym.apps.cli import main

    assert main(["make-tiny-model", str(tmp_path / "m"), "--warmup-steps", "3", "--warmup-batch-size", "2"]) == 0
    record = json.loads((tmp_path / "m" / "tvr_warmup.json").read_text())
    assert record["steps"] == 3 and record["env"] == "TVR-Basic-v0" and len(record["loss"]) == 3
    assert MLLMAgent.from_pretrained(tmp_path / "m", device="cpu").use_images is False
    assert main(["make-tiny-model", str(tmp_path / "n"), "--image-tokens", "24"]) == 0
    assert not (tmp_path / "n" / "tvr_warmup.json").exists()
    size = json.loads((tmp_path / "n" / "processor_config.json").read_text())["image_processor"]["size"]
    assert size["longest_edge"] == 24 * 28 * 28  # the flag reaches the processor's pixel cap


def test_supervised_finetuning_learns_the_true_answers_of_its_episodes(tiny_dir, tmp_path):
    """SFT's targets are the truths: two training episodes are answered exactly after a short fit."""
    import json

    from tvr_gym.agents.mllm.warmup import sample_episodes, supervised_finetune

    out = supervised_finetune(tiny_dir, tmp_path / "sft", steps=120, batch_size=2, lr=6e-3, episodes=2, save_every=50,
                              env_kwargs={"prompt_layout": "compact"})  # fmt: skip
    record = json.loads((out / "tvr_warmup.json").read_text())
    assert record["done"] == 120 and record["targets"] == "the true answers of the training episodes"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-50"]
    assert json.loads((out / "checkpoint-50" / "tvr_warmup.json").read_text())["done"] == 50
    pairs = sample_episodes("TVR-Basic-v0", 2, render_size=(32, 24), prompt_layout="compact")
    sft = MLLMAgent.from_pretrained(out, device="cpu", max_new_tokens=16)
    assert sft.act_batch([obs for obs, _ in pairs]) == [truth for _, truth in pairs]
    assert sft.prompt_layout == "compact"  # recorded with the checkpoint, for the evaluator


def test_finetuning_stops_at_its_time_budget_and_checks_its_options(tiny_dir, tmp_path):
    import json

    from tvr_gym.agents.mllm.warmup import finetune

    out = finetune(tiny_dir, tmp_path / "t", "truth", steps=10**6, batch_size=1, episodes=1, max_seconds=0.5)
    record = json.loads((out / "tvr_warmup.json").read_text())
    assert 0 < record["done"] < 10**6 and record["seconds"] >= 0.5
    for bad in ({"targets": "labels"}, {"max_seconds": 0}, {"save_every": -1}, {"lr_warmup": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            finetune(tiny_dir, tmp_path / "bad", **{"targets": "truth", "steps": 1, **bad})
    assert not (tmp_path / "bad").exists()


def test_the_learning_rate_warmup_scales_the_first_steps(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    from tvr_gym.agents.mllm.warmup import finetune

    base = load_file(tiny_dir / "model.safetensors")

    def moved(**options) -> float:
        out = finetune(tiny_dir, tmp_path / str(len(options)), "truth", steps=1, batch_size=2, episodes=2, **options)
        after = load_file(out / "model.safetensors")
        return max(float((after[k] - base[k]).abs().max()) for k in base)

    # Adam's first step moves each weight by about the learning rate: 1/1000 of it during a 1000-step warm-up
    assert 0 < moved(lr_warmup=1000) < moved() / 100
