"""Check tvr-gym's EasyR1 export and batch reward against EasyR1's own loaders, at a named commit.

Run by ``scripts/easyr1_check.sh EASYR1_SRC`` in a venv holding EasyR1 (transformers 4.x) and tvr-gym;
not part of pytest (CI has no copy of EasyR1's source). Nothing here needs the network. In order:

1. **config**: ``docs/configs/easyr1_tvr_crossview.yaml`` merged into EasyR1's ``PPOConfig`` the way its
   ``verl.trainer.main`` does (``OmegaConf.structured`` + ``merge`` + the documented command-line
   override of ``worker.reward.reward_function``, then ``to_object`` and ``deep_post_init``): an unknown
   key or a wrong type fails here. Its data keys must name the export's columns.
2. **dataset**, for ``--obs-mode image`` and ``text``: ``tvr_gym.data.export.export("easyr1", ...)`` writes a
   train and a val split; EasyR1's ``create_dataloader`` builds its ``RLHFDataset`` from them with the
   merged config's data settings (``filter_overlong_prompts`` included). Every row must be kept; each
   row's messages, prompt text, token ids, images (count and pixels, also after EasyR1's
   ``process_image`` with the config's ``min_pixels``/``max_pixels``, which its rollout and actor apply)
   and ground truth must equal what ``env.reset(seed, options={"index": i})`` gives and what tvr-gym's
   own policy builds from that observation; EasyR1's ``collate_fn`` must batch them.
3. **reward**: EasyR1's ``AutoRewardManager`` loads ``tvr_gym/integrations/easyr1.py`` by path (its
   ``REWARD_TYPE`` must be ``batch``) and scores token-level responses (``compute_reward`` on a
   ``DataProto``, as the trainer calls it, also through a Ray actor as ``verl.trainer.main`` builds it)
   for true, wrong, partly right, over- and under-enumerating, empty, garbage, untagged and
   multiple-answer texts under several rewards and weights; each score and term must equal
   ``env.step(text)``'s reward and ``info["reward_terms"]`` on the same episode.

The tokenizer and processor are tvr-gym's tiny Qwen2.5-VL ones (its vocabulary and Qwen chat template)
built here as transformers-4.x classes (``Qwen2TokenizerFast`` + ``Qwen2_5_VLProcessor``) and loaded
back through EasyR1's ``get_tokenizer``/``get_processor``; the image processor keeps Qwen2.5-VL's own
pixel limits. No model weights are needed: the dataset and the reward manager never run the model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub at run time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TESTED_COMMIT = "b44b311b669bf1fd1aa2fc36f2251482ba33cb16"
"""The EasyR1 commit this check was last run against (another commit is checked too, with a note)."""
DEFAULT_CONFIG = REPO / "docs" / "configs" / "easyr1_tvr_crossview.yaml"
QWEN_PIXELS = (56 * 56, 28 * 28 * 16384)
"""Qwen2.5-VL's own image processor limits (min_pixels, max_pixels), so images resize as for the real model."""


# ------------------------------------------------------------------------------------------- reporting


@dataclass
class Report:
    """Named checks, each passed or failed with its first few mismatches."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, mismatches: list[str], detail: str = "") -> bool:
        ok = not mismatches
        shown = "; ".join(mismatches[:5]) + (f" (+{len(mismatches) - 5} more)" if len(mismatches) > 5 else "")
        self.results.append((name, ok, detail if ok else shown))
        said = (f": {detail}" if detail else "") if ok else f": {shown}"
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}{said}")
        return ok

    def error(self, name: str, exc: BaseException) -> None:
        self.check(name, [f"{type(exc).__name__}: {exc}"])

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.results if not ok]


# ------------------------------------------------------------------------------------------- EasyR1 import


def easyr1_commit(src: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return commit + ("+local-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git work tree)"


def import_easyr1_config():
    """EasyR1's ``PPOConfig``. Its package ``verl.workers.rollout`` imports vllm in ``__init__`` (for
    ``vLLMRollout``); without vllm, that package is entered without its ``__init__`` so that its own
    ``config`` module, the only part the config needs, loads from EasyR1's file."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        import importlib

        import verl.workers

        name = "verl.workers.rollout"
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(Path(verl.workers.__file__).parent / "rollout")]
            package.__package__ = name
            sys.modules[name] = package
            package.RolloutConfig = importlib.import_module(f"{name}.config").RolloutConfig
    from verl.trainer.config import PPOConfig

    return PPOConfig


def load_config(config_path: Path, overrides: list[str]):
    """EasyR1's ``verl.trainer.main`` config loading: defaults <- file <- command line, then post-init."""
    from omegaconf import OmegaConf

    PPOConfig = import_easyr1_config()
    default = OmegaConf.structured(PPOConfig())
    merged = OmegaConf.merge(default, OmegaConf.load(config_path), OmegaConf.from_dotlist(overrides))
    config = OmegaConf.to_object(merged)
    config.deep_post_init()
    return config


# ------------------------------------------------------------------------------------------- tokenizer


def build_tokenizer_processor(out: Path) -> Path:
    """tvr-gym's tiny tokenizer and processor as transformers-4.x classes, saved to ``out``.

    ``tvr_gym.agents.mllm.tiny.make_tiny_model`` targets transformers 5: under 4.x its processor refuses
    a tokenizer that is not a ``Qwen2Tokenizer(Fast)``, and a checkpoint saved by 5.x does not load (its
    tokenizer class ``TokenizersBackend`` is unknown to 4.x). The same vocabulary, pre-tokenizer and chat
    template are wrapped here in a ``Qwen2TokenizerFast``.
    """
    from transformers import Qwen2TokenizerFast

    from tvr_gym.agents.mllm import tiny

    # the chat template's role names join the vocabulary: tiny's own has "assistant" but not "system" or
    # "user", which it encodes as <unk>, and the prompt must decode back to the exact templated text
    base = tiny.make_tokenizer(tiny.build_vocab([" ".join(tiny.prompt_words()), "system user assistant"]))
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        unk_token=tiny.UNK,
        pad_token=tiny.PAD,
        eos_token=tiny.IM_END,
        bos_token=None,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        additional_special_tokens=list(tiny.SPECIAL_TOKENS),
    )
    tokenizer.chat_template = tiny.CHAT_TEMPLATE
    processor = tiny.make_processor(tokenizer, QWEN_PIXELS)
    processor.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------- answers


def _answer_items(text: str) -> list[str]:
    inner = text.split("<answer>", 1)[1].split("</answer>", 1)[0]
    return [item.strip() for item in inner.split(",") if item.strip()]


def _random_item(rng: random.Random) -> str:
    from tvr_gym.core.spec import SPEC

    obj = rng.randrange(SPEC.n_objects)
    attr = rng.choice(SPEC.attributes)
    if attr in SPEC.values:
        return f"{obj}.{attr}.{rng.choice(SPEC.values[attr])}"
    return f"{obj}.{attr}.{rng.choice(list(SPEC.directions))}.{rng.choice(SPEC.steps)}"


def _changed(item: str, rng: random.Random) -> str:
    """The same object and attribute with another value (or direction)."""
    from tvr_gym.core.spec import SPEC

    obj, attr, *value = item.split(".")
    if attr in SPEC.values:
        return f"{obj}.{attr}.{rng.choice([v for v in SPEC.values[attr] if v != value[0]])}"
    direction = rng.choice([d for d in SPEC.directions if d != value[0]])
    return f"{obj}.{attr}.{direction}.{value[1]}"


def answers_for(truth: str, seed: int) -> dict[str, str]:
    """Answers to score for one episode, by kind."""
    rng = random.Random(seed)
    items = _answer_items(truth)
    wrong = [_changed(item, rng) for item in items]
    extra = [_random_item(rng) for _ in range(3)]

    def tagged(parts: list[str], think: str = "") -> str:
        return f"<think>{think}</think><answer>{', '.join(parts)}</answer>"

    return {
        "true": truth,
        "true, with reasoning": tagged(items, "object 2 turned cyan and object 4 moved"),
        "wrong values": tagged(wrong),
        "partly right": tagged([items[0], *wrong[1:]] if len(items) > 1 else [items[0], extra[0]]),
        "too few": tagged(items[:1]) if len(items) > 1 else tagged([]),
        "too many": tagged([*items, *extra]),
        "random guess": tagged(extra[:2]),
        "empty": "",
        "empty tags": tagged([]),
        "garbage": "}} 3 .. -12 <answer answer> ,, {{ color",
        "no tags": ", ".join(items),
        "unclosed tags": "<think>the cube<answer>" + ", ".join(items),
        "two answers": tagged(wrong) + "<answer>" + ", ".join(items) + "</answer>",
    }


REWARD_VARIANTS: list[tuple[str, dict[str, Any] | None]] = [
    ("config's kwargs", None),  # worker.reward.reward_function_kwargs from the yaml
    ("no kwargs (star)", {}),
    ("state", {"reward": "state"}),
    ("sparse", {"reward": "sparse"}),
    ("star, wrong=2.0", {"reward": "star", "wrong": 2.0}),
    ("no_wrong_penalty", {"reward": "no_wrong_penalty"}),
]


# ------------------------------------------------------------------------------------------- checks


def check_config(report: Report, config) -> None:
    from tvr_gym.data.export import COLUMNS

    data = config.data
    columns = set(COLUMNS["easyr1"])
    keys = {"prompt_key": data.prompt_key, "answer_key": data.answer_key, "image_key": data.image_key}
    report.check(
        "config: data keys name the export's columns",
        [f"data.{k}={v!r} is no easyr1 column" for k, v in keys.items() if v not in columns],
        ", ".join(f"{k}={v}" for k, v in keys.items()),
    )
    reward = config.worker.reward
    got = (reward.reward_function, reward.reward_function_name)
    expected = (str((REPO / "tvr_gym" / "integrations" / "easyr1.py").resolve()), "compute_score")
    report.check(
        "config: reward function resolves to tvr-gym's file",
        [] if got == expected else [f"got {got[0]}:{got[1]}"],
        f"{got[0]}:{got[1]}, kwargs {dict(reward.reward_function_kwargs)}",
    )
    report.check(
        "config: rollout.limit_images allows both images",
        [] if config.worker.rollout.limit_images >= 2 else [f"limit_images={config.worker.rollout.limit_images}"],
        f"limit_images={config.worker.rollout.limit_images}",
    )


def _pil_equal(image, expected) -> list[str]:
    import numpy as np

    got = np.asarray(image.convert("RGB"))
    if got.shape != expected.shape:
        return [f"size {got.shape[1]}x{got.shape[0]} != {expected.shape[1]}x{expected.shape[0]}"]
    if not np.array_equal(got, expected):
        return [f"{int((got != expected).any(-1).sum())} pixels differ"]
    return []


def check_dataset(report: Report, config, mode: str, args, work: Path, tokenizer, processor) -> list[dict]:
    """Export, load through EasyR1's create_dataloader, compare with the environment. Returns the items."""
    import gymnasium as gym
    import torch
    from PIL import Image
    from verl.trainer.data_loader import create_dataloader
    from verl.utils.dataset import collate_fn, process_image

    from tvr_gym.core import chat
    from tvr_gym.data.export import export

    env_kwargs = {"obs_mode": mode, "renderer": args.renderer}
    out = work / f"export-{mode}"
    t0 = time.perf_counter()
    sharding = {"shard_size": args.shard_size} if args.shard_size else {}  # train_files: a directory of shards
    train = export("easyr1", args.env, args.n, out, seed=args.seed, split="train", progress=False, **sharding,
                   **env_kwargs)  # fmt: skip
    val = export("easyr1", args.env, args.n_val, out, seed=args.seed + 1, split="val", progress=False, **sharding,
                 **env_kwargs)  # fmt: skip
    t_export = time.perf_counter() - t0

    data = replace(config.data, train_files=str(train), val_files=str(val), rollout_batch_size=args.n)
    t0 = time.perf_counter()
    train_loader, val_loader = create_dataloader(data, tokenizer, processor)
    t_load = time.perf_counter() - t0
    name = f"dataset ({mode})"
    sizes = [("train", len(train_loader.dataset), args.n), ("val", len(val_loader.dataset), args.n_val)]
    report.check(
        f"{name}: every row kept (filter_overlong_prompts={data.filter_overlong_prompts}, "
        f"max_prompt_length={data.max_prompt_length})",
        [f"{split}: {got} of {n} rows" for split, got, n in sizes if got != n],
        f"train {sizes[0][1]}/{args.n}, val {sizes[1][1]}/{args.n_val} (export {t_export:.1f} s, "
        f"EasyR1 load {t_load:.1f} s)",
    )

    dataset = train_loader.dataset
    env = gym.make(args.env, **env_kwargs)
    use_images = mode == "image"
    n_images = 2 if use_images else 0
    bad: dict[str, list[str]] = {k: [] for k in ("messages", "prompt", "ids", "images", "pixels", "truth")}
    items, lengths = [], []
    for i in range(len(dataset)):
        obs, info = env.reset(seed=args.seed, options={"index": i})
        row = dataset.dataset[i]
        item = dataset[i]
        items.append(item)
        prompt = obs["prompt"]
        # the messages EasyR1 builds from the row, against tvr-gym's policy messages for the observation
        ours = chat.messages(prompt, n_images) if use_images else chat.string_messages(prompt)
        if dataset._build_messages(row) != ours:
            bad["messages"].append(f"row {i}")
        # the prompt text: the templated string whose ids EasyR1 hands vLLM
        template = processor if use_images else tokenizer
        text = template.apply_chat_template(ours, add_generation_prompt=True, tokenize=False)
        decoded = tokenizer.decode(item["raw_prompt_ids"])
        if decoded != text or decoded.count(prompt) != 1:
            bad["prompt"].append(f"row {i}")
        # the token ids the actor trains on, against the processor applied to the env's own images
        if use_images:
            expected = processor(
                images=[Image.fromarray(obs["initial"]), Image.fromarray(obs["final"])], text=[text],
                add_special_tokens=False, return_tensors="pt",
            )  # fmt: skip
        else:
            expected = tokenizer([text], add_special_tokens=False, return_tensors="pt")
        got_ids = item["input_ids"][item["attention_mask"].bool()]
        lengths.append(len(got_ids))
        if not torch.equal(got_ids, expected["input_ids"][0]):
            bad["ids"].append(f"row {i}: {len(got_ids)} vs {expected['input_ids'].shape[-1]} tokens")
        # the images: the row's, and what the rollout and actor make of them (process_image, config limits)
        images = item.get("multi_modal_data", {}).get("images", [])
        if len(images) != n_images:
            bad["images"].append(f"row {i}: {len(images)} images, expected {n_images}")
        for key, image in zip(chat.IMAGE_KEYS, images):
            processed = process_image(image, data.min_pixels, data.max_pixels)
            for label, shown in (("row", image), ("process_image", processed)):
                bad["pixels"] += [f"row {i} {key} ({label}): {m}" for m in _pil_equal(shown, obs[key])]
        if json.loads(item["ground_truth"]) != json.loads(json.dumps(info["problem"])):
            bad["truth"].append(f"row {i}")
    env.close()

    report.check(f"{name}: messages equal tvr-gym's chat.messages", bad["messages"])
    report.check(f"{name}: prompt text equals the env's (templated, raw_prompt_ids decoded)", bad["prompt"])
    report.check(
        f"{name}: token ids equal the processor on the env's observation",
        bad["ids"],
        f"{min(lengths)}-{max(lengths)} prompt tokens with this tokenizer",
    )
    report.check(f"{name}: image count", bad["images"], f"{n_images} per row")
    if use_images:
        h, w = obs["initial"].shape[:2]
        report.check(
            f"{name}: pixels equal the env's renders (row and process_image with min_pixels={data.min_pixels}, "
            f"max_pixels={data.max_pixels})",
            bad["pixels"],
            f"{w}x{h}",
        )
    report.check(f"{name}: ground_truth is the env's problem", bad["truth"])
    try:
        batch = collate_fn(items)
        shapes = [f"{k} {tuple(v.shape)}" for k, v in batch.items() if isinstance(v, torch.Tensor)]
        report.check(f"{name}: collate_fn batches the rows", [], ", ".join(shapes))
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        report.error(f"{name}: collate_fn batches the rows", exc)
    return items


def _data_proto(tokenizer, texts: list[str], ground_truths: list[str]):
    """The batch EasyR1's trainer hands its reward manager: right-padded response ids ending in EOS."""
    import numpy as np
    import torch
    from verl.protocol import DataProto

    ids = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, ids))
    responses = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return DataProto.from_dict(
        tensors={"responses": responses, "response_mask": mask},
        non_tensors={"ground_truth": np.array(ground_truths, dtype=object)},
    ), [len(row) for row in ids]


def check_reward(report: Report, config, args, items: list[dict], tokenizer) -> None:
    import gymnasium as gym
    from verl.workers.reward import AutoRewardManager

    base = config.worker.reward
    manager = AutoRewardManager(base, tokenizer)
    report.check(
        "reward: AutoRewardManager loads tvr-gym's file as a batch reward",
        [] if manager.reward_type == "batch" else [f"reward type {manager.reward_type!r}"],
        f"REWARD_TYPE={manager.reward_type}",
    )

    cases: list[tuple[int, str, str]] = []  # (row, kind, text)
    for i, item in enumerate(items):
        truth = json.loads(item["ground_truth"])
        env = gym.make(args.env, obs_mode="image", renderer=args.renderer)  # the rows' own environment
        _, info = env.reset(seed=args.seed, options={"index": i})
        env.close()
        if json.loads(json.dumps(info["problem"])) != truth:
            report.check("reward: rows are the env's episodes", [f"row {i}"])
            return
        cases += [(i, kind, text) for kind, text in answers_for(info["truth"], args.seed * 10_000 + i).items()]
    texts = [text for _, _, text in cases]
    truths = [items[i]["ground_truth"] for i, _, _ in cases]
    data, lengths = _data_proto(tokenizer, texts, truths)
    decoded = [tokenizer.decode(data.batch["responses"][k][: lengths[k]], skip_special_tokens=True)
               for k in range(len(cases))]  # fmt: skip
    report.check(
        "reward: response texts survive EasyR1's decode (skip_special_tokens)",
        [f"row {i} {kind!r}: {d!r}" for (i, kind, _), d, t in zip(cases, decoded, texts) if d != t],
        f"{len(cases)} responses, {len(items)} rows x {len(cases) // max(1, len(items))} kinds",
    )

    if args.ray:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        remote = ray.remote(AutoRewardManager).options(num_cpus=1)  # as verl.trainer.main builds it
        print(f"  (Ray started in {time.perf_counter() - t0:.1f} s)")

    try:
        for label, variant in REWARD_VARIANTS:
            reward_config = base
            if variant is not None:
                reward_config = replace(base, reward_function_kwargs=variant)
                reward_config.reward_function_name = base.reward_function_name  # an init=False field
            weights = dict(reward_config.reward_function_kwargs)
            name = weights.pop("reward", "star")
            env = gym.make(
                args.env, obs_mode="image", renderer=args.renderer, reward=name, reward_weights=weights or None
            )
            expected = []
            for (i, _, _), text in zip(cases, decoded):
                env.reset(seed=args.seed, options={"index": i})
                _, reward, _, _, info = env.step(text)
                expected.append((float(reward), dict(info["reward_terms"]), float(info["metrics"]["acc"] or 0.0)))
            env.close()

            managers = [("local", manager if variant is None else AutoRewardManager(reward_config, tokenizer))]
            if args.ray:
                managers.append(("ray", remote.remote(reward_config, tokenizer)))
            for where, m in managers:
                if where == "ray":
                    tensor, metrics = ray.get(m.compute_reward.remote(data))
                else:
                    tensor, metrics = m.compute_reward(data)
                bad = []
                for k, ((i, kind, _), (reward, terms, acc)) in enumerate(zip(cases, expected)):
                    got = float(metrics["overall"][k])
                    placed = float(tensor[k, lengths[k] - 1])
                    others = float(tensor[k].abs().sum()) - abs(placed)
                    got_terms = {t: float(metrics[t][k]) for t in terms}
                    if got != reward or placed != float(tensor.new_tensor(reward)) or others != 0.0:
                        bad.append(f"row {i} {kind!r}: EasyR1 {got} (token {placed}) vs env.step {reward}")
                    elif got_terms != terms or float(metrics["accuracy"][k]) != acc:
                        bad.append(f"row {i} {kind!r}: terms {got_terms} vs {terms}")
                values = sorted({r for r, _, _ in expected})
                report.check(
                    f"reward ({label}, {where}): scores equal env.step's",
                    bad,
                    f"{len(cases)} responses, {len(values)} distinct rewards from {values[0]} to {values[-1]}",
                )
    finally:
        if args.ray:
            import ray

            ray.shutdown()


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--easyr1", type=Path, required=True, help="EasyR1 source (a git work tree)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="EasyR1 config to check")
    parser.add_argument("--env", default="TVR-CrossView-v0")
    parser.add_argument("--n", type=int, default=8, help="train rows per observation mode")
    parser.add_argument("--n-val", type=int, default=4, help="val rows per observation mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renderer", default="numpy", help="tvr-gym renderer (export and env alike)")
    parser.add_argument("--shard-size", type=int, default=None, help="export parquet shards of this many rows, "
                        "so EasyR1 reads each split as a directory (default: one file per split)")  # fmt: skip
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray-actor reward check")
    parser.add_argument("--workdir", type=Path, help="keep exports and the tokenizer here (default: a temp dir)")
    args = parser.parse_args(argv)
    import tvr_gym  # noqa: F401 - registers the environments

    started = time.perf_counter()
    src = args.easyr1.resolve()
    commit = easyr1_commit(src)
    import torch
    import transformers
    import verl

    print(f"EasyR1 {commit} at {src}")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
    report = Report()
    where = Path(verl.__file__).resolve()
    if not where.is_relative_to(src):
        report.check("EasyR1 imported from EASYR1_SRC", [f"verl is {where}, not under {src}"])
    if not commit.startswith(TESTED_COMMIT):
        print(f"note: this check was last run against EasyR1 {TESTED_COMMIT}")

    with tempfile.TemporaryDirectory(prefix="easyr1-check-") as tmp:
        work = args.workdir.resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets-cache"))
        config = None
        print(f"config [{time.perf_counter() - started:.0f} s]")
        try:
            tokenizer_dir = build_tokenizer_processor(work / "tokenizer")
            reward_file = REPO / "tvr_gym" / "integrations" / "easyr1.py"
            overrides = [  # the command of the config's header, with the tokenizer built above as the model
                f"worker.reward.reward_function={reward_file}:compute_score",
                f"worker.actor.model.model_path={tokenizer_dir}",
            ]
            config = load_config(args.config, overrides)
            report.check(f"config: {args.config.name} loads into EasyR1's PPOConfig", [], "keys and types valid")
            check_config(report, config)
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            report.error(f"config: {args.config.name} loads into EasyR1's PPOConfig", exc)

        if config is not None:
            from verl.utils.tokenizer import get_processor, get_tokenizer

            model = config.worker.actor.model  # as verl.trainer.main's Runner loads them
            kwargs = {"override_chat_template": config.data.override_chat_template, "use_fast": True}
            tokenizer = get_tokenizer(model.model_path, trust_remote_code=model.trust_remote_code, **kwargs)
            processor = get_processor(model.model_path, trust_remote_code=model.trust_remote_code, **kwargs)
            items = {}
            for mode in ("image", "text"):
                print(f"dataset ({mode}) [{time.perf_counter() - started:.0f} s]")
                try:
                    items[mode] = check_dataset(report, config, mode, args, work, tokenizer, processor)
                except Exception as exc:  # noqa: BLE001 - reported as a failed check
                    report.error(f"dataset ({mode})", exc)
            print(f"reward [{time.perf_counter() - started:.0f} s]")
            if "image" in items:
                try:
                    check_reward(report, config, args, items["image"], tokenizer)
                except Exception as exc:  # noqa: BLE001 - reported as a failed check
                    report.error("reward", exc)
            else:
                report.check("reward", ["no dataset rows to score"])

    elapsed = time.perf_counter() - started
    failed = report.failed
    print()
    print(f"EasyR1 {commit}: {len(report.results) - len(failed)} passed, {len(failed)} failed ({elapsed:.0f} s)")
    for name in failed:
        print(f"  FAILED {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
