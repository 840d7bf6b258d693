"""The suite's own guarantees: CI runs properties derandomized, and strategies draw only legal problems."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings

from tvr_gym.core.transform import replay, state_distance

from props import examples, problems


@pytest.mark.skipif(os.environ.get("HYPOTHESIS_PROFILE") != "ci", reason="checks the CI profile; CI sets it")
def test_the_ci_profile_is_derandomized():
    assert settings.default.derandomize is True
    assert settings.default.database is None


@settings(max_examples=examples(100), deadline=None)
@given(problem=problems())
def test_the_problem_strategy_never_draws_a_no_op_problem(problem):
    assert state_distance(problem.initial, problem.final) > 0
    assert replay(problem.initial, problem.transformations).same_as(problem.final)
