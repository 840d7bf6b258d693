"""Fixtures of the verl and SkyRL tests (run in the verl venv: ``make verl-env``)."""

from __future__ import annotations

import pytest

from verl_support import FEEDBACK_WORDS


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny Qwen2.5-VL checkpoint whose vocabulary also holds the interactive feedback words."""
    from tvr_gym.agents.mllm.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0, extra_texts=[FEEDBACK_WORDS])
