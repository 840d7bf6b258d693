"""Shared fixtures and the hypothesis profiles.

``TVR_GYM_REQUIRE_ALL=1`` (set by CI) turns every skip into a failure. ``HYPOTHESIS_PROFILE=ci`` (set by
``.ci/run``) runs every property derandomized, so CI cannot flake; locally the ``explore`` profile draws
new examples each run (``--hypothesis-seed=N`` replays one).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))

REPO = Path(__file__).resolve().parents[1]
TRANCE_DIR = Path(os.environ.get("TVR_GYM_TRANCE_FIXTURE", REPO.parent / "shared" / "trance"))
REQUIRE_ALL = os.environ.get("TVR_GYM_REQUIRE_ALL") == "1"


@pytest.fixture(scope="session")
def trance_dir() -> Path:
    """The official TRANCE conformance fixture (../shared/trance)."""
    if not (TRANCE_DIR / "data.jsonl").is_file():
        pytest.skip(f"TRANCE fixture not found at {TRANCE_DIR} (set TVR_GYM_TRANCE_FIXTURE)")
    return TRANCE_DIR


@pytest.fixture(scope="session")
def trance_problems(trance_dir):
    from tvr_gym.core.trance import load_trance

    return list(load_trance(trance_dir))


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models gain nothing from threads; on shared CI cores threads only add contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A freshly built tiny Qwen2.5-VL checkpoint directory (random weights)."""
    from tvr_gym.agents.mllm.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skip turned into failure by TVR_GYM_REQUIRE_ALL=1: {reason}"
