"""The multimodal LLM policy: any local Qwen2-VL / Qwen2.5-VL checkpoint as a TVR agent.

The observation (initial image, final image, prompt) becomes one user turn of the processor's chat
template. Generation never emits the processor's vision special tokens: they are banned, and the
log-probabilities used for training (:mod:`tvr_gym.agents.mllm.sampling`) mask them the same way, so
sampling and scoring agree. This module is inference: loading, encoding and greedy answers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tvr_gym.core import chat

VISION_TOKEN_ATTRS = ("image_token", "video_token", "vision_start_token", "vision_end_token")
VISION_TOKEN_NAMES = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
)
POLICY_FILE = "tvr_policy.json"
"""Written beside a trained checkpoint: how the policy reads observations (``use_images``, ...)."""


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise ValueError(f"dtype: unknown {dtype!r}; valid: {', '.join(choices)}")
    return choices[dtype]


def vision_token_ids(processor) -> list[int]:
    """Every token id of the processor's special vision tokens (image/video pads, vision start/end, ...)."""
    tokenizer = processor.tokenizer
    names = set(VISION_TOKEN_NAMES)
    for attr in VISION_TOKEN_ATTRS:
        name = getattr(processor, attr, None) or getattr(tokenizer, attr, None)
        if isinstance(name, str):
            names.add(name)
    vocab = tokenizer.get_vocab()
    ids = {vocab[name] for name in names if name in vocab}
    for attr in ("image_token_id", "video_token_id"):
        value = getattr(processor, attr, None)
        if isinstance(value, int):
            ids.add(value)
    return sorted(ids)


def _to_image(array: Any) -> Image.Image:
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"obs image: expected uint8 H x W x 3, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


class MLLMAgent:
    """A TVR agent backed by a Qwen2-VL-family model: ``act(obs) -> str``, ``act_batch``, ``sample``."""

    privileged = False

    def __init__(
        self,
        model,
        processor,
        use_images: bool = True,
        max_new_tokens: int = 128,
        system_prompt: str | None = None,
        name: str = "mllm",
        prompt_layout: str | None = None,
    ) -> None:
        self.model = model
        self.prompt_layout = prompt_layout
        """The prompt layout it was trained on (:data:`tvr_gym.core.prompt.PROMPT_LAYOUTS`; ``None``: the default)."""
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.use_images = use_images
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        self.name = name
        self.tokenizer.padding_side = "left"
        self.suppressed_ids = vision_token_ids(processor)
        self.eos_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if self.eos_id is None or self.eos_id == self.tokenizer.unk_token_id:
            self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        use_images: bool | None = None,
        max_new_tokens: int | None = None,
        system_prompt: str | None = None,
        obs_mode: str | None = None,
    ) -> MLLMAgent:
        """Load a local checkpoint directory (full model, or a PEFT adapter directory over a local base).

        Never touches the network (``local_files_only``), never runs remote code, reads safetensors.
        ``use_images`` and ``max_new_tokens`` default to the checkpoint's ``tvr_policy.json`` (written
        by tvr-gym's trainers), else to images on and 128 tokens; its ``prompt_layout`` (if any) becomes
        :attr:`prompt_layout`, which the evaluator passes to the environment. ``obs_mode`` (``image`` or ``text``)
        must agree with that file when both are given.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"path: {str(path)!r} is not a checkpoint directory")
        dev = _resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        kwargs = {"local_files_only": True, "trust_remote_code": False}
        adapter_cfg = path / "adapter_config.json"
        base = path
        if adapter_cfg.is_file():
            base = Path(json.loads(adapter_cfg.read_text())["base_model_name_or_path"])
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch_dtype, use_safetensors=True, **kwargs)
        if adapter_cfg.is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path, is_trainable=False)
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        model.to(dev).eval()
        saved = json.loads((path / POLICY_FILE).read_text()) if (path / POLICY_FILE).is_file() else {}
        if obs_mode is not None:
            wanted = obs_mode == "image"
            if "use_images" in saved and saved["use_images"] != wanted:
                trained = "image" if saved["use_images"] else "text"
                raise ValueError(f"obs_mode: {path} was trained on {trained} observations, not {obs_mode}")
            use_images = wanted if use_images is None else use_images
        use_images = saved.get("use_images", True) if use_images is None else use_images
        max_new_tokens = saved.get("max_new_tokens", 128) if max_new_tokens is None else max_new_tokens
        layout = saved.get("prompt_layout")
        return cls(model, processor, use_images, max_new_tokens, system_prompt, f"mllm:{path}", layout)

    @property
    def obs_mode(self) -> str:
        """The environment observation mode this policy reads: ``image`` or ``text``."""
        return "image" if self.use_images else "text"

    def settings(self) -> dict[str, Any]:
        """What :data:`POLICY_FILE` records: how this policy reads observations."""
        found = {"use_images": self.use_images, "max_new_tokens": self.max_new_tokens}
        return found if self.prompt_layout is None else {**found, "prompt_layout": self.prompt_layout}

    def reset(self, seed: int | None = None) -> None:
        """Reseed the sampling RNG (greedy ``act`` is deterministic anyway)."""
        if seed is not None:
            torch.manual_seed(seed)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- inputs
    def messages(self, obs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chat messages for one observation (:mod:`tvr_gym.core.chat`): the images (when used), then the prompt."""
        n_images = len(chat.images_of(obs, self.use_images))
        return chat.messages(str(obs.get("prompt", "")), n_images, self.system_prompt)

    def encode(self, obs_list: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Processor inputs for a batch of observations (left padded, on the model's device)."""
        return self.encode_chats([(self.messages(obs), chat.images_of(obs, self.use_images)) for obs in obs_list])

    def encode_chats(self, chats: Sequence[tuple[list[dict[str, Any]], Sequence[Any]]]) -> dict[str, torch.Tensor]:
        """Processor inputs for a batch of chats, each (messages, its images in block order), ready to
        generate the next assistant turn (left padded, on the model's device)."""
        texts, images = [], []
        for messages, chat_images in chats:
            texts.append(self.processor.apply_chat_template(list(messages), add_generation_prompt=True))
            images.extend(_to_image(image) for image in chat_images)
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    # ---------------------------------------------------------------- generation
    def generate_ids(self, inputs: dict[str, torch.Tensor], max_new_tokens: int | None, **sampling) -> torch.Tensor:
        """The generated ids after the prompts (vision tokens banned, stopping at the end of turn)."""
        out = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            bad_words_ids=[[i] for i in self.suppressed_ids] or None,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            **sampling,
        )
        return out[:, inputs["input_ids"].shape[1] :]

    def completion_mask(self, completion_ids: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first end-of-turn token, 0 after it."""
        is_eos = completion_ids == self.eos_id
        after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
        return (~after_eos).long()

    def decode(self, completion_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [
            self.tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True)
            for ids, m in zip(completion_ids, mask)
        ]

    @contextlib.contextmanager
    def evaluating(self):
        """The model in eval mode for the block, then back in the mode it was in."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _greedy(self, inputs: Mapping[str, torch.Tensor], max_new_tokens: int | None) -> list[str]:
        with self.evaluating():
            ids = self.generate_ids(inputs, max_new_tokens, do_sample=False)
        return self.decode(ids, self.completion_mask(ids))

    @torch.no_grad()
    def act_batch(self, obs_list: Sequence[Mapping[str, Any]], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers for a batch of observations."""
        if not obs_list:
            return []
        return self._greedy(self.encode(obs_list), max_new_tokens)

    def act(self, obs: Mapping[str, Any]) -> str:
        """The greedy answer for one observation."""
        return self.act_batch([obs])[0]

    @torch.no_grad()
    def act_chats(self, chats: Sequence[tuple[list[dict[str, Any]], Sequence[Any]]]) -> list[str]:
        """Greedy next turns for a batch of chats (:func:`tvr_gym.core.chat.interactive_messages`)."""
        if not chats:
            return []
        return self._greedy(self.encode_chats(chats), None)
