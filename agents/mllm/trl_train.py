"""The scale path: TRL's ``GRPOTrainer`` and ``SFTTrainer`` on tvr-gym data and rewards.

``tvr-gym train trl-grpo`` and ``tvr-gym train sft`` take two sets of flags: :class:`TVRArguments`
(the model, the environment and its data, the reward) and every field of TRL's own ``GRPOConfig`` or
``SFTConfig`` (``--max_steps``, ``--num_generations``, ``--use_vllm``, ``--deepspeed``, ...), so
whatever TRL offers is one flag away. They run on CPU with ``--model tiny`` and under
``accelerate launch`` on GPUs; see ``docs/integrations.md``.

The data is a ``tvr-gym export --format hf`` dataset (``--dataset DIR``), or ``--rows`` rows exported on
the fly to ``OUT/data``; the reward is :func:`tvr_gym.integrations.trl_reward`. The finished model goes
to ``OUT/final`` with its ``tvr_policy.json``, so ``tvr-gym eval --agent mllm:OUT/final`` reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvr_gym.agents.mllm.policy import POLICY_FILE
from tvr_gym.agents.mllm.tiny import build_tiny_base
from tvr_gym.core.options import check_int
from tvr_gym.core.prompt import OBS_MODES
from tvr_gym.core.reward import ABLATIONS, REWARDS
from tvr_gym.data.demonstrations import turn_rows
from tvr_gym.data.export import export
from tvr_gym.envs.registration import INTERACTIVE_ID, check_env_id
from tvr_gym.integrations import trl_reward

DATA_DIR = "data"
FINAL_DIR = "final"


@dataclass
class TVRArguments:
    """What tvr-gym adds to TRL's config: the model, the environment and its rows, and the reward."""

    model: str = field(default="tiny", metadata={"help": "'tiny' (built in OUT/base) or a local checkpoint directory"})
    env: str = field(default="TVR-Basic-v0", metadata={"help": "a registered TVR environment id"})
    dataset: str | None = field(
        default=None, metadata={"help": "a `tvr-gym export --format hf` directory; default: export --rows rows"}
    )
    n: int = field(default=512, metadata={"help": "rows exported on the fly to OUT/data (without --dataset)"})
    episode_seed: int = field(default=0, metadata={"help": "export seed: row i is reset(seed, options={'index': i})"})
    obs_mode: str = field(default="image", metadata={"help": "image | text", "choices": list(OBS_MODES)})
    reward: str = field(default="star", metadata={"help": "star | state | sparse | a STAR ablation (GRPO only)"})
    size: list[int] = field(default_factory=lambda: [160, 120], metadata={"help": "image size W H"})
    renderer: str = field(default="auto", metadata={"help": "auto | gl | numpy | blender"})

    def __post_init__(self) -> None:
        check_env_id(self.env)
        valid = (*REWARDS, *(a for a in ABLATIONS if a not in REWARDS))
        if self.reward not in valid:
            raise ValueError(f"reward: unknown {self.reward!r}; valid: {', '.join(valid)}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode: unknown {self.obs_mode!r}; valid: {', '.join(OBS_MODES)}")
        check_int("n", self.n, 1)
        if len(self.size) != 2:
            raise ValueError(f"size: expected W H, got {self.size!r}")
        if self.model != "tiny" and not (Path(self.model).expanduser() / "config.json").is_file():
            raise ValueError(f"model: {self.model!r} is neither 'tiny' nor a checkpoint directory (no config.json)")
        if self.dataset is not None and not Path(self.dataset).is_dir():
            raise ValueError(f"dataset: {self.dataset!r} is not a `tvr-gym export --format hf` directory")


def model_dir(tvr: TVRArguments, out: Path) -> Path:
    """The checkpoint to start from: ``--model tiny`` builds one in ``OUT/base`` (once, atomically)."""
    if tvr.model != "tiny":
        return Path(tvr.model).expanduser().resolve()
    return build_tiny_base(out / "base")


def train_rows(tvr: TVRArguments, out: Path, progress: bool = True):
    """The training rows: the ``--dataset`` export's ``train`` split, or ``--rows`` rows exported to OUT/data."""
    from accelerate import PartialState
    from datasets import Dataset, DatasetDict, load_from_disk

    path = Path(tvr.dataset) if tvr.dataset else out / DATA_DIR
    with PartialState().main_process_first():  # one process exports, the others then read it
        if tvr.dataset is None and not (path / "train" / "dataset_info.json").is_file():
            env_kwargs = {"obs_mode": tvr.obs_mode, "render_size": tuple(tvr.size), "renderer": tvr.renderer}
            solver = "oracle" if tvr.env == INTERACTIVE_ID else None  # interactive rows are demonstrations
            export("hf", tvr.env, tvr.n, path, seed=tvr.episode_seed, progress=progress, demonstrations=solver,
                   **env_kwargs)  # fmt: skip
    loaded = load_from_disk(str(path))
    rows = loaded["train"] if isinstance(loaded, DatasetDict) else loaded
    if not isinstance(rows, Dataset) or "problem" not in rows.column_names:
        raise ValueError(f"dataset: {path} holds no `problem` column; make it with `tvr-gym export --format hf`")
    return rows


def _load(base: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"local_files_only": True, "trust_remote_code": False}
    model = AutoModelForImageTextToText.from_pretrained(base, use_safetensors=True, **kwargs)
    return model, AutoProcessor.from_pretrained(base, **kwargs)


def _save_final(trainer, processor, out: Path, tvr: TVRArguments, max_new_tokens: int) -> Path:
    final = out / FINAL_DIR
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(str(final))
        policy = {"use_images": tvr.obs_mode == "image", "max_new_tokens": max_new_tokens}
        (final / POLICY_FILE).write_text(json.dumps(policy, indent=1) + "\n")
    return final


def _resume(config) -> Any:
    """TRL's ``resume_from_checkpoint``: a path, or ``last`` / ``true`` for the newest OUT/checkpoint-N."""
    value = getattr(config, "resume_from_checkpoint", None)
    return True if isinstance(value, str) and value.lower() in ("last", "true") else value


def train_trl_grpo(tvr: TVRArguments, config) -> Path:
    """TRL GRPO with the tvr-gym reward; returns ``OUT/final``."""
    from trl import GRPOTrainer

    out = Path(config.output_dir)
    rows = train_rows(tvr, out, progress=not config.disable_tqdm)
    model, processor = _load(model_dir(tvr, out))
    trainer = GRPOTrainer(
        model=model, reward_funcs=trl_reward(tvr.reward), args=config, train_dataset=rows, processing_class=processor
    )
    trainer.train(resume_from_checkpoint=_resume(config))
    return _save_final(trainer, processor, out, tvr, config.max_completion_length)


def sft_rows(rows):
    """Rows for TRL's SFT: prompt-completion rows with the true answer as the assistant's completion, or, for
    ``TVR-Interactive-v0`` demonstrations (``messages``), the whole chats, every assistant turn trained."""
    if "messages" in rows.column_names:
        return _turn_rows(rows)
    keep = [c for c in ("prompt", "images") if c in rows.column_names]
    return rows.map(
        lambda row: {"completion": [{"role": "assistant", "content": row["answer"]}]},
        remove_columns=[c for c in rows.column_names if c not in keep],
    )


def _turn_rows(rows):
    """``TVR-Interactive-v0`` demonstrations as one prompt-completion row per turn (:func:`turn_rows`): the loss
    falls on the solver's turns only, each seen with the chat the policy sees then."""
    with_images = "images" in rows.column_names

    def expand(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"prompt": [], "completion": [], **({"images": []} if with_images else {})}
        for i, messages in enumerate(batch["messages"]):
            for row in turn_rows(messages, batch["images"][i] if with_images else []):
                for key in out:
                    out[key].append(row[key])
        return out

    return rows.map(expand, batched=True, remove_columns=rows.column_names)


def train_sft(tvr: TVRArguments, config) -> Path:
    """TRL SFT on the true answers (STAR-R1's SFT baseline); returns ``OUT/final``."""
    from trl import SFTTrainer

    out = Path(config.output_dir)
    rows = sft_rows(train_rows(tvr, out, progress=not config.disable_tqdm))
    model, processor = _load(model_dir(tvr, out))
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=processor)
    trainer.train(resume_from_checkpoint=_resume(config))
    return _save_final(trainer, processor, out, tvr, max_new_tokens=128)
