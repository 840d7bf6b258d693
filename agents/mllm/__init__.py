"""The multimodal LLM policy (Qwen2-VL family), its tiny preset and its GRPO trainer.

Heavy imports (torch, transformers) happen on first use of a name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GRPOConfig", "MLLMAgent", "Samples", "make_tiny_model", "train", "warmup_format"]

_WHERE = {
    "MLLMAgent": "tvr_gym.agents.mllm.policy",
    "Samples": "tvr_gym.agents.mllm.sampling",
    "make_tiny_model": "tvr_gym.agents.mllm.tiny",
    "GRPOConfig": "tvr_gym.agents.mllm.grpo",
    "train": "tvr_gym.agents.mllm.grpo",
    "warmup_format": "tvr_gym.agents.mllm.warmup",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tvr_gym.agents.mllm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
