"""TVR as SkyRL-gym environments: ``tvr`` (single-shot) and ``tvr_interactive`` (one transformation per turn).

SkyRL's trainer builds one environment per trajectory with
``skyrl_gym.make(env_class, env_config=..., extras=...)``:

- ``env_class`` is the dataset row's ``env_class`` column (or ``environment.env_class`` for all rows);
- ``extras`` is the rest of the row (``data_source``, ``reward_spec``, ``extra_info``, ...; the
  dataset drops ``prompt`` and ``env_class``), plus ``max_turns`` set from ``generator.max_turns``;
- ``env_config`` is ``environment.skyrl_gym.<env_class>`` of SkyRL's config, ``{}`` when it has none.

Both classes here follow that contract: the problem is ``extras["reward_spec"]["ground_truth"]``, the
problem as JSON that every ``tvr-gym export`` writes (``--format skyrl`` writes whole SkyRL rows); the
reward and its weights come from ``env_config``, or from the defaults an id was registered with
(:func:`register_env`), since SkyRL's own config has no section for an environment it does not ship.

SkyRL-gym's messages are text (``skyrl_gym.envs.base_text_env.MessageType = Dict[str, str]``), so
both environments are text only: the prompt holds the object tables (``obs_mode="text"``).

- :class:`TVRSkyRLEnv`: ``step(completion)`` returns exactly ``env.step``'s reward of
  ``TVR-Basic/Event/CrossView-v0`` for the same text and problem, and ``done=True``.
- :class:`TVRSkyRLInteractiveEnv`: ``TVR-Interactive-v0`` in text mode, rebuilt from the row's problem;
  each ``step`` is one turn (a transformation or ``done``) with the environment's turn reward, and
  the reply is the feedback and the new table of the current state.

Importing this module registers ``tvr`` and ``tvr_interactive`` (:func:`register_envs`, idempotent).
See ``docs/integrations.md``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import skyrl_gym
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput, ConversationType

from tvr_gym.core.options import check_choice, check_int
from tvr_gym.core.prompt import state_table
from tvr_gym.core.reward import REWARD_NAMES, score_answer
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem
from tvr_gym.data.export import SKYRL_ENV_CLASSES
from tvr_gym.envs.base import action_as_text
from tvr_gym.envs.interactive import TERMINAL_REWARDS, TVRInteractive
from tvr_gym.integrations.scoring import Scorer, problem_from_json

__all__ = [
    "ENV_ID",
    "INTERACTIVE_ENV_ID",
    "TVRSkyRLEnv",
    "TVRSkyRLInteractiveEnv",
    "register_env",
    "register_envs",
]

ENV_ID = SKYRL_ENV_CLASSES["single"]
INTERACTIVE_ENV_ID = SKYRL_ENV_CLASSES["interactive"]
"""``tvr`` and ``tvr_interactive``: the ``env_class`` of the rows ``tvr-gym export --format skyrl`` writes."""
ENTRY_POINT = "tvr_gym.integrations.skyrl:TVRSkyRLEnv"
INTERACTIVE_ENTRY_POINT = "tvr_gym.integrations.skyrl:TVRSkyRLInteractiveEnv"

SINGLE_KEYS = ("reward", "reward_weights")
"""What ``env_config`` may set for :class:`TVRSkyRLEnv` (the single-shot environments' keywords)."""
INTERACTIVE_KEYS = ("terminal_reward", "reward_weights", "costs", "max_turns", "slack")
"""What ``env_config`` may set for :class:`TVRSkyRLInteractiveEnv` (``TVR-Interactive-v0``'s keywords)."""

TEXT_RENDER = {"renderer": "numpy", "render_size": (8, 6), "cache_size": 0}
"""The interactive core renders every turn even in text mode; nobody sees these images, so they are tiny."""

_LOCK = threading.Lock()
"""SkyRL steps environments on a thread pool; tvr-gym's renderer pool and problem cache are per process."""


# ---------------------------------------------------------------------------------------------- config


def _plain(value: Any) -> Any:
    """A config value as plain Python: mappings (omegaconf's ``DictConfig`` too) to dicts, sequences to lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _config(env_config: Any, defaults: Mapping[str, Any] | None, valid: tuple[str, ...]) -> dict[str, Any]:
    """``defaults`` updated by ``env_config`` (``None``, a mapping or a dataclass); unknown keys are errors."""
    if env_config is None:
        given: dict[str, Any] = {}
    elif dataclasses.is_dataclass(env_config) and not isinstance(env_config, type):
        given = dataclasses.asdict(env_config)
    elif isinstance(env_config, Mapping):
        given = _plain(env_config)
    else:
        raise ValueError(f"env_config: expected a mapping or a dataclass, got {type(env_config).__name__}")
    merged = {**_plain(defaults or {}), **given}
    bad = sorted(set(merged) - set(valid))
    if bad:
        raise ValueError(f"env_config: unknown key(s) {', '.join(bad)}; valid: {', '.join(valid)}")
    return merged


def _ground_truth(extras: Any) -> Any:
    """``extras["reward_spec"]["ground_truth"]``, or an error that says where it comes from."""
    spec = extras.get("reward_spec") if isinstance(extras, Mapping) else None
    if not isinstance(spec, Mapping) or spec.get("ground_truth") is None:
        raise ValueError(
            "extras: expected reward_spec.ground_truth, the problem as JSON (a row of "
            "`tvr-gym export --format skyrl` holds one)"
        )
    return spec["ground_truth"]


def _scorer(config: Mapping[str, Any]) -> Scorer:
    """The single-shot reward of a config: ``reward`` (default ``star``) with ``reward_weights``."""
    reward = check_choice("reward", config.get("reward", "star"), REWARD_NAMES)
    weights = config.get("reward_weights") or {}
    if not isinstance(weights, Mapping):
        raise ValueError(f"reward_weights: expected a dict, got {type(weights).__name__}")
    try:
        return Scorer(reward, dict(weights))
    except ValueError as exc:
        raise ValueError(f"reward_weights: {exc}") from None


def _problem(extras: Any) -> Problem:
    ground_truth = _ground_truth(extras)
    with _LOCK:  # the parsed-problem cache is shared by the process
        return problem_from_json(ground_truth)


# ---------------------------------------------------------------------------------------------- single-shot


class TVRSkyRLEnv(BaseTextEnv):
    """Single-shot TVR for SkyRL: one completion, scored by the environment's reward, then done.

    ``env_config`` keys: ``reward`` (``star`` by default, ``state``, ``sparse`` or a STAR ablation)
    and ``reward_weights`` (a dict of the reward's constants), as for ``gym.make("TVR-...-v0")``.
    ``defaults`` holds the same keys, set at registration (:func:`register_env`); ``env_config`` wins.
    """

    def __init__(
        self, env_config: Any = None, extras: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.scorer = _scorer(_config(env_config, defaults, SINGLE_KEYS))
        self.problem = _problem(extras or {})
        self.max_turns = 1
        self._metrics: dict[str, float] = {}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        """Score the completion (any text); the episode ends."""
        self.turns += 1
        scored = score_answer(action_as_text(action), self.problem, self.scorer.fn)
        reward, terms, acc, parsed = scored.total, scored.terms, scored.acc, scored.parsed
        # as the TRL adapter logs them: each term, then TVR's Acc (over the sparse reward's own ``acc`` term)
        self._metrics = {**{f"tvr/{k}": v for k, v in terms.items()}, "tvr/reward": reward, "tvr/acc": acc}
        metadata = {"reward_terms": terms, "acc": acc, "parsed": parsed.to_dict()}
        return BaseTextEnvStepOutput(observations=[], reward=reward, done=True, metadata=metadata)

    def get_metrics(self) -> dict[str, Any]:
        """After the step: ``tvr/<term>`` for every reward term, ``tvr/reward`` and ``tvr/acc`` (TVR's Acc)."""
        return dict(self._metrics)


# ---------------------------------------------------------------------------------------------- interactive


class _RowSource:
    """The episode source of a dataset row: always its problem (the interactive core's source interface)."""

    KEY = {"source": "skyrl-row"}

    def __init__(self, problem: Problem) -> None:
        self._problem = problem

    def draw(self, rng: np.random.Generator, index: int | None = None) -> tuple[dict, Problem]:
        return dict(self.KEY), self._problem

    def sample(self, rng: np.random.Generator, index: int | None = None) -> Problem:
        return self._problem

    def from_key(self, key: dict) -> Problem:
        return self._problem


def _setting(extras: Mapping[str, Any]) -> str:
    """The row's setting, from its ``data_source`` (``tvr-interactive/<setting>``, as the export writes it)."""
    kind, _, setting = str(extras.get("data_source", "")).partition("/")
    if kind != "tvr-interactive" or setting not in SPEC.steps_per_setting:
        raise ValueError(
            f"extras.data_source: expected tvr-interactive/<setting> ({', '.join(SPEC.steps_per_setting)}), got "
            f"{extras.get('data_source')!r}; build the rows with "
            "`tvr-gym export --env TVR-Interactive-v0 --format skyrl`"
        )
    return setting


class TVRSkyRLInteractiveEnv(BaseTextEnv):
    """``TVR-Interactive-v0`` for SkyRL, in text mode: one transformation (or ``done``) per turn.

    The episode is the row's problem. Each ``step`` is one turn of the interactive environment: its
    reward is that turn's reward (progress, minus a cost for an illegal, no-op or unreadable turn, plus
    the terminal reward on the last turn), so a trajectory's rewards sum to the episode's return. The
    reply is one user message: the feedback and the table of the current state. The episode ends on
    ``done`` or at the turn limit, which is the environment's for the row's setting (its most steps + 1 +
    ``slack``, or ``max_turns``; the same for every row of a setting, so it never tells the answer's length),
    capped by SkyRL's ``generator.max_turns`` (``extras["max_turns"]``).

    ``env_config`` keys: ``terminal_reward`` (``state`` by default, any reward name, or ``none``),
    ``reward_weights``, ``costs``, ``max_turns`` and ``slack``, as for ``TVR-Interactive-v0``;
    ``defaults`` holds the same keys, set at registration (:func:`register_env`).
    """

    def __init__(
        self, env_config: Any = None, extras: Mapping[str, Any] | None = None, defaults: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        extras = extras or {}
        config = _config(env_config, defaults, INTERACTIVE_KEYS)
        check_choice("terminal_reward", config.get("terminal_reward", "state"), TERMINAL_REWARDS)
        problem = _problem(extras)
        config.setdefault("setting", _setting(extras))  # the turn limit is the setting's, never the answer's length
        cap = extras.get("max_turns")
        if cap is not None:
            cap = check_int("extras.max_turns (generator.max_turns)", cap, 1)
        with _LOCK:
            self.env = TVRInteractive(obs_mode="text", **TEXT_RENDER, **config)
            if cap is not None and cap < self.env.turn_limit:  # the env's own limit, capped by SkyRL's
                self.env = TVRInteractive(obs_mode="text", **TEXT_RENDER, **{**config, "max_turns": cap})
            self.env.source = _RowSource(problem)  # reset() now starts the row's episode
            obs, self.info = self.env.reset()
        self.prompt = obs["prompt"]
        self.max_turns = self.env.turn_limit
        self.done = False
        self.rewards: list[float] = []
        self._final: dict[str, Any] = {}

    def init(self, prompt: ConversationType) -> tuple[ConversationType, dict[str, Any]]:
        """The row's prompt, unchanged, once checked: its last user message must be the episode's prompt
        (``tvr-gym export --env TVR-Interactive-v0 --format skyrl`` writes it; a system message may precede)."""
        users = [m.get("content") for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if not users or not isinstance(users[-1], str) or users[-1].strip() != self.prompt.strip():
            raise ValueError(
                "prompt: the row's last user message is not this episode's interactive prompt; build the rows "
                "with `tvr-gym export --env TVR-Interactive-v0 --format skyrl` (single-shot rows ask for another task)"
            )
        return prompt, {"turn_limit": self.max_turns}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        """One turn: apply the action's transformation (or ``done``); the reply shows what it did."""
        if self.done:
            raise RuntimeError("step() after the episode ended (done=True)")
        with _LOCK:
            obs, reward, terminated, truncated, info = self.env.step(action_as_text(action))
            current = state_table(self.env.current, "Current objects")
        self.turns += 1
        self.info = info
        self.rewards.append(float(reward))
        self.done = bool(terminated or truncated)
        metadata = {k: info[k] for k in ("outcome", "turn", "turn_limit", "progress", "turn_reward") if k in info}
        if self.done:
            self._final = info
            metadata.update({k: info[k] for k in ("terminal", "terminal_terms", "interactive", "metrics")})
            return BaseTextEnvStepOutput(observations=[], reward=float(reward), done=True, metadata=metadata)
        message = {"role": "user", "content": obs["feedback"] + "\n" + current}
        return BaseTextEnvStepOutput(observations=[message], reward=float(reward), done=False, metadata=metadata)

    def get_metrics(self) -> dict[str, Any]:
        """At the end: ``tvr_interactive/success``, ``misplaced``, ``fixed_strict``, ``turns``, ``applied``,
        ``acc`` (TVR's Acc of the net change: the success), ``return`` (the rewards given) and ``ended``
        (1 if the episode ended by ``done`` or its turn limit, 0 if SkyRL stopped it early, e.g. at its
        length limit; the other metrics are then those of the state reached)."""
        ended = self.done
        if not ended:
            with _LOCK:
                _, self._final = self.env.truncate()
            self.done = True
        if not self._final:
            return {}
        out = {f"tvr_interactive/{k}": float(v) for k, v in self._final["interactive"].items()}
        out["tvr_interactive/acc"] = float(self._final["metrics"]["acc"])
        out["tvr_interactive/return"] = float(sum(self.rewards))
        out["tvr_interactive/ended"] = float(ended)
        return out


# ---------------------------------------------------------------------------------------------- registration


def register_env(env_id: str, interactive: bool = False, **defaults: Any) -> str:
    """Register ``env_id`` with skyrl_gym for :class:`TVRSkyRLEnv` (or, with ``interactive``,
    :class:`TVRSkyRLInteractiveEnv`), whose ``env_config`` defaults to ``defaults``; returns ``env_id``.

    ``register_env("tvr_state", reward="state")`` gives an ``env_class`` that scores with the state
    reward. Registering an id again with the same class and defaults does nothing; with others it is
    an error. The defaults are checked now.
    """
    entry = INTERACTIVE_ENTRY_POINT if interactive else ENTRY_POINT
    keys = INTERACTIVE_KEYS if interactive else SINGLE_KEYS
    defaults = _plain(_config(None, defaults, keys))
    _check_defaults(interactive, defaults)
    kwargs = {"defaults": defaults} if defaults else {}
    known = skyrl_gym.registry.get(env_id)
    if known is not None:
        if known.entry_point == entry and known.kwargs == kwargs:
            return env_id
        taken = f"{known.entry_point} with {known.kwargs}"
        raise ValueError(f"skyrl_gym: {env_id!r} is already registered to {taken}; choose another id")
    skyrl_gym.register(id=env_id, entry_point=entry, kwargs=kwargs)
    return env_id


def register_envs() -> tuple[str, str]:
    """Register ``tvr`` and ``tvr_interactive`` with their default rewards (idempotent); returns the ids."""
    return register_env(ENV_ID), register_env(INTERACTIVE_ENV_ID, interactive=True)


def _check_defaults(interactive: bool, defaults: dict[str, Any]) -> None:
    """Fail at registration, not in a rollout: the defaults must build an environment."""
    if interactive:
        check_choice("terminal_reward", defaults.get("terminal_reward", "state"), TERMINAL_REWARDS)
        TVRInteractive(obs_mode="text", **TEXT_RENDER, **defaults)
    else:
        _scorer(defaults)


register_envs()
