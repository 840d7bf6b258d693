"""Shared fixtures. ``TVR_GYM_REQUIRE_ALL=1`` (set by CI) turns every skip into a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    from tvr_gym.trance import load_trance

    return list(load_trance(trance_dir))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skip turned into failure by TVR_GYM_REQUIRE_ALL=1: {reason}"
