"""tvr-gym's rewards in the call conventions of the trainers researchers scale with.

- :func:`trl_reward` (TRL ``GRPOTrainer``): ``f(completions, problem, **kwargs) -> list[float]``;
- :func:`compute_score` (verl): ``compute_score(data_source, solution_str, ground_truth, extra_info=None)``;
- :func:`easyr1_compute_score` (EasyR1 batch reward): ``compute_score(reward_inputs) -> list[dict]``.

Each reads the problem from the row's ground truth (the problem as JSON, as ``tvr-gym export`` writes
it), caches the parsed problem, and returns exactly ``env.step``'s reward for the same text and
problem. See ``docs/integrations.md``.
"""

from tvr_gym.integrations.easyr1 import compute_score as easyr1_compute_score
from tvr_gym.integrations.scoring import Scorer, problem_from_json
from tvr_gym.integrations.trl import trl_reward
from tvr_gym.integrations.verl import compute_score

__all__ = ["Scorer", "compute_score", "easyr1_compute_score", "problem_from_json", "trl_reward"]
