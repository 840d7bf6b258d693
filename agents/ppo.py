"""A Stable-Baselines3 PPO agent on the TVR environments (through :mod:`tvr_gym.envs.wrappers`).

:func:`train_ppo` trains and writes ``OUT/model.zip``, ``OUT/ppo_settings.json`` (the wrapper settings, so
:meth:`PPOAgent.load` rebuilds the same encoding), checkpoints in ``OUT/checkpoints``, TensorBoard logs in
``OUT/tensorboard`` and Monitor CSVs in ``OUT/monitor``. :class:`PPOAgent` answers raw environment
observations, so ``agents.make_agent("ppo:OUT")`` plugs into the evaluator. See ``docs/ppo.md``.

On ``TVR-Interactive-v0`` (:mod:`tvr_gym.envs.interactive_sb3`: one discrete step per turn, action masks,
symbolic observations) :func:`train_ppo` trains sb3-contrib's ``MaskablePPO`` instead and returns an
:class:`InteractivePPOAgent`, which plays whole episodes (:meth:`InteractivePPOAgent.play`); loading
such a directory with :meth:`PPOAgent.load` gives that agent too. See ``docs/interactive.md``.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tvr_gym  # noqa: F401  (registers the ids, also in subprocesses)
from tvr_gym.agents.base import Agent, Observation
from tvr_gym.agents.interactive import INTERACTIVE_KEYS
from tvr_gym.core.atomic import atomic_open, atomic_write_text
from tvr_gym.core.options import check_choice, check_int
from tvr_gym.core.scene import State
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.envs.interactive_sb3 import (
    N_ACTIONS,
    InteractiveSB3,
    action_text,
    legal_mask,
    make_interactive_sb3_env,
    observation_size,
    play_episode,
    symbolic_observation,
)
from tvr_gym.envs.registration import INTERACTIVE_ID, check_env_id
from tvr_gym.envs.wrappers import (
    OBS_KINDS,
    AnswerEncoding,
    encode_states,
    image_table_observation,
    stack_images,
    symbolic_size,
    wrap_for_sb3,
)

__all__ = [
    "MODEL_FILE",
    "SETTINGS_FILE",
    "InteractivePPOAgent",
    "PPOAgent",
    "PPOConfig",
    "PPOSettings",
    "train_from_config",
    "train_ppo",
]

MODEL_FILE = "model.zip"
SETTINGS_FILE = "ppo_settings.json"
DEFAULT_RENDER_SIZE = {"image": (160, 120), "symbolic": (32, 24), "image-table": (64, 48)}
"""Image observations use TRANCE's released size; symbolic ones ignore pixels, so the env renders tiny
images; ``image-table`` runs use 64x48 (about 55 training steps a second on one of two busy cores)."""
DEFAULT_PPO_KWARGS: dict[str, dict[str, Any]] = {
    "symbolic": {"learning_rate": 1e-3, "n_steps": 128, "batch_size": 256, "ent_coef": 0.06},
    "image": {"learning_rate": 3e-4, "n_steps": 256, "batch_size": 64, "ent_coef": 0.01},
    "image-table": {"learning_rate": 1e-3, "n_steps": 128, "batch_size": 256, "ent_coef": 0.06},
    "interactive": {"learning_rate": 1e-3, "n_steps": 128, "batch_size": 256, "ent_coef": 0.06},
}
"""Overrides of SB3's PPO defaults per run kind (:func:`run_kind`), for one-step episodes (every step
ends an episode). The symbolic ones are the measured recipe of ``benchmarks/learning.py``: with
``ent_coef`` 0 every attribute's value collapses to one constant (held-out Acc stops near 0.5). The
interactive runs take the same recipe: with lr 3e-4, one environment and entropy 0.01 MaskablePPO said
``done`` at once in every held-out episode after 40k steps, with it it reached success 0.13-0.16
(``benchmarks/results/interactive_rewards.md``)."""
DEFAULT_N_ENVS = {"symbolic": 8, "image": 1, "image-table": 8, "interactive": 8}
"""Parallel environments per run kind: 8 symbolic ones give rollouts of 1,024 one-step episodes."""
DEFAULT_TIMESTEPS = {"symbolic": 200_000, "image": 100_000, "image-table": 100_000, "interactive": 600_000}
"""Steps of ``tvr-gym train ppo`` per run kind when ``--timesteps`` is not given. Interactive: what learns
interactive Basic (held-out Success 0.96-1.00 in 3 seeds, 0.9 from 240k-300k steps; about 18 minutes on one
core; ``benchmarks/results/learning.md``)."""
LR_SCHEDULES = ("constant", "decay")
"""``constant``, or ``decay``: the learning rate for the first half of training, then linearly to 0
(:class:`DecayingRate`)."""
DEFAULT_LR_SCHEDULE = {"symbolic": "decay", "image": "constant", "image-table": "decay", "interactive": "decay"}
"""With a constant 1e-3, symbolic runs peaked at held-out Acc 0.92 after 120k-160k steps and fell to
0.76 by 200k (seed 0); the decay keeps what was learned."""


@dataclass(frozen=True)
class DecayingRate:
    """An SB3 learning-rate schedule: ``lr`` over the first ``hold`` of training, then linearly to 0.

    SB3 calls it with ``progress_remaining``, from 1 at the start to 0 at the end. A module-level class,
    so saved models load again.
    """

    lr: float
    hold: float = 0.5

    def __call__(self, progress_remaining: float) -> float:
        done = 1.0 - progress_remaining
        return self.lr if done <= self.hold else self.lr * max(0.0, 1.0 - done) / (1.0 - self.hold)


VEC_ENVS = ("dummy", "subproc")
ALGOS = ("ppo", "maskable_ppo")
"""SB3's ``PPO`` (single-shot ids) or sb3-contrib's ``MaskablePPO`` (``TVR-Interactive-v0``)."""
ARCHS = {"symbolic": ("objects", "mlp"), "image": ("cnn",), "image-table": ("glimpses",)}
"""Policy networks per observation, the first the default: ``objects`` is the per-object, shared-weight
extractor of :mod:`tvr_gym.agents.ppo_objects`, ``mlp`` SB3's flat ``MlpPolicy``, ``cnn`` its ``CnnPolicy``,
``glimpses`` the per-object extractor reading a CNN feature map at each object's glimpse points."""


@dataclass
class PPOSettings:
    """What :meth:`PPOAgent.load` needs to rebuild the observation and action encodings."""

    env_id: str
    obs: str
    render_size: tuple[int, int]
    max_items: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    timesteps: int = 0
    n_envs: int = 1
    ppo_kwargs: dict[str, Any] = field(default_factory=dict)
    algo: str = "ppo"
    arch: str | None = None
    """The policy network (:data:`ARCHS`); ``None`` in settings written before it was recorded."""
    lr_schedule: str = "constant"
    """:data:`LR_SCHEDULES`; settings written before it was recorded were constant."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> PPOSettings:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["render_size"] = tuple(data["render_size"])
            settings = cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: not a valid PPO settings file ({type(exc).__name__}: {exc})") from None
        if settings.obs not in OBS_KINDS:
            raise ValueError(f"{path}: obs: unknown value {settings.obs!r}; valid: {', '.join(OBS_KINDS)}")
        if settings.algo not in ALGOS:
            raise ValueError(f"{path}: algo: unknown value {settings.algo!r}; valid: {', '.join(ALGOS)}")
        if settings.arch is not None and settings.arch not in ARCHS[settings.obs]:
            valid = ", ".join(ARCHS[settings.obs])
            raise ValueError(f"{path}: arch: {settings.arch!r} is not a {settings.obs} policy ({valid})")
        return settings


# ---------------------------------------------------------------------------- the agent


class PPOAgent(Agent):
    """A trained SB3 PPO policy answering raw TVR observations with canonical answer text.

    Image agents read ``initial`` and ``final`` (resized to the training size when they differ).
    Symbolic agents are ``privileged``: the evaluator hands them each reset ``info`` and they read only
    the initial and final object tables of ``info["problem"]``, never its transformations.
    ``image-table`` agents read the images and, from ``info["problem"]``, only the initial table (what the
    task's prompt shows beside the images).
    """

    name = "ppo"

    def __init__(self, model: Any, settings: PPOSettings, deterministic: bool = True) -> None:
        self.model = model
        self.settings = settings
        self.deterministic = deterministic
        self.encoding = AnswerEncoding(settings.max_items)
        self.privileged = settings.obs in ("symbolic", "image-table")
        self._tables: deque[Any] = deque()
        expected = _observation_shape(settings)
        space = model.observation_space
        images = getattr(space, "spaces", {}).get("images") if settings.obs == "image-table" else None
        shape = tuple((images or space).shape or ())
        if shape != expected and shape != expected[-1:] + expected[:-1]:  # SB3 may store images channel-first
            raise ValueError(
                f"model: observation shape {shape} does not match the settings "
                f"({settings.obs}, render_size={settings.render_size}: {expected})"
            )
        if tuple(getattr(model.action_space, "nvec", ())) != tuple(self.encoding.nvec):
            raise ValueError(f"model: action space {model.action_space} does not match max_items={settings.max_items}")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str = "cpu", deterministic: bool = True
    ) -> PPOAgent | InteractivePPOAgent:
        """Load ``OUT`` (a training directory), ``OUT/model.zip`` or a checkpoint ``OUT/checkpoints/*.zip``.

        A ``TVR-Interactive-v0`` run (``algo: maskable_ppo``) loads as an :class:`InteractivePPOAgent`.
        SB3 model zips unpickle on load, so a crafted one can run code: load only models you trust.
        """
        model_path, settings_path = _locate(Path(path))
        settings = PPOSettings.from_file(settings_path)
        if settings.algo == "maskable_ppo":
            return InteractivePPOAgent(_load_model(model_path, settings, device), settings, deterministic)
        return cls(_load_model(model_path, settings, device), settings, deterministic)

    def reset(self, seed: int | None = None) -> None:
        self._tables.clear()
        if seed is not None:
            self.model.set_random_seed(seed)

    def observe_privileged(self, info: Mapping[str, Any]) -> None:
        """Queue the object tables of the next episode: both (symbolic) or the initial one (image-table).

        Only ``info["problem"]["states"]`` is read, never the transformations.
        """
        if not self.privileged:
            return
        problem = info.get("problem") if isinstance(info, Mapping) else None
        try:
            initial, final = (State.from_dicts(s["objects"]) for s in problem["states"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"info.problem: a {self.settings.obs} PPO agent needs a TRANCE sample dict with "
                f"states[0..1].objects ({exc})"
            ) from None
        self._tables.append(encode_states(initial, final) if self.settings.obs == "symbolic" else initial)

    def act(self, obs: Observation) -> str:
        return self.act_batch([obs])[0]

    def act_batch(self, observations: Sequence[Observation]) -> list[str]:
        if not observations:
            return []
        if self.settings.obs == "symbolic":
            batch: Any = np.stack(self._queued(len(observations)))
        elif self.settings.obs == "image-table":
            rows = [
                image_table_observation(images, initial)
                for images, initial in zip(self._images(observations), self._queued(len(observations)))
            ]
            batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
        else:
            batch = np.stack([stack_images(images) for images in self._images(observations)])
        actions, _ = self.model.predict(batch, deterministic=self.deterministic)
        return [self.encoding.text(a) for a in np.asarray(actions).reshape(len(observations), -1)]

    def _queued(self, n: int) -> list[Any]:
        if len(self._tables) < n:
            raise RuntimeError(
                f"PPOAgent ({self.settings.obs}): no object tables; the evaluator must call "
                "observe_privileged(info) first"
            )
        return [self._tables.popleft() for _ in range(n)]

    def _images(self, observations: Sequence[Observation]) -> list[dict[str, np.ndarray]]:
        w, h = self.settings.render_size
        out = []
        for obs in observations:
            if not isinstance(obs, Mapping):
                raise ValueError(f"observation: expected a dict with initial and final, got {type(obs).__name__}")
            out.append({k: _fit(np.asarray(obs.get(k)), (w, h), k) for k in ("initial", "final")})
        return out


class InteractivePPOAgent:
    """A trained ``MaskablePPO`` policy for ``TVR-Interactive-v0``: one masked-in step per turn, then ``done``.

    It reads object tables (the current and the target state), so it plays through an
    :class:`~tvr_gym.envs.interactive_sb3.InteractiveSB3` environment (:meth:`play`, :meth:`evaluate`) or is
    asked for one turn's text with :meth:`act_state`. It answers no single-shot observation (:meth:`act`).
    """

    name = "ppo"
    interactive = True
    privileged = False

    def __init__(self, model: Any, settings: PPOSettings, deterministic: bool = True) -> None:
        self.model = model
        self.settings = settings
        self.deterministic = deterministic
        shape = tuple(model.observation_space.shape or ())
        if shape != (observation_size(),):
            raise ValueError(f"model: observation shape {shape} is not the interactive one ({observation_size()},)")
        if getattr(model.action_space, "n", None) != N_ACTIONS:
            raise ValueError(f"model: action space {model.action_space} is not the interactive Discrete({N_ACTIONS})")

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "cpu", deterministic: bool = True) -> InteractivePPOAgent:
        """Load a ``TVR-Interactive-v0`` training directory or model zip (see :meth:`PPOAgent.load`)."""
        agent = PPOAgent.load(path, device, deterministic)
        if not isinstance(agent, cls):
            raise ValueError(f"{path}: a {agent.settings.env_id} PPO model, not a {INTERACTIVE_ID} one")
        return agent

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.model.set_random_seed(seed)

    def make_env(self, **env_kwargs: Any) -> InteractiveSB3:
        """The wrapped environment of the training settings; ``env_kwargs`` override them (e.g. ``source``)."""
        kwargs = {**self.settings.env_kwargs, **env_kwargs}
        kwargs.setdefault("render_size", self.settings.render_size)
        return make_interactive_sb3_env(**kwargs)

    def table_policy(self, env: InteractiveSB3, episode_seed: int) -> Any:
        """The policy of one episode (:func:`tvr_gym.agents.interactive.play_tables`): the model, its sampling
        seeded by ``episode_seed`` unless it plays deterministically."""
        if not self.deterministic:
            self.model.set_random_seed(episode_seed)
        return self.model

    def act_state(self, current: State, target: State, turn: int, turn_limit: int) -> str:
        """The text of this turn's action (``obj.attr.value`` or ``done``) for the given states."""
        obs = symbolic_observation(current, target, turn, turn_limit)
        action, _ = self.model.predict(obs, action_masks=legal_mask(current), deterministic=self.deterministic)
        return action_text(int(np.asarray(action).reshape(())))

    def act(self, obs: Observation) -> str:
        raise RuntimeError(
            "InteractivePPOAgent plays whole TVR-Interactive-v0 episodes from object tables: use play(), "
            "evaluate() or act_state()"
        )

    def play(
        self, env: InteractiveSB3 | None = None, seed: int | None = None, index: int | None = None
    ) -> dict[str, Any]:
        """Play one episode (:func:`tvr_gym.envs.interactive_sb3.play_episode`); ``index`` picks a problem
        of the source."""
        env = self.make_env() if env is None else env
        options = None if index is None else {"index": index}
        return play_episode(env, self.model, seed=seed, options=options, deterministic=self.deterministic)

    def evaluate(self, episodes: int, seed: int = 0, **env_kwargs: Any) -> dict[str, Any]:
        """``episodes`` episodes (episode ``i`` is ``reset(seed=seed + i)``): the records and their means."""
        check_int("episodes", episodes, 1)
        env = self.make_env(**env_kwargs)
        try:
            records = [self.play(env, seed=seed + i) for i in range(episodes)]
        finally:
            env.close()
        return {"records": records, "summary": interactive_summary(records)}


def interactive_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means over :func:`~tvr_gym.envs.interactive_sb3.play_episode` records: reward, the interactive scores, Acc."""
    keys = INTERACTIVE_KEYS
    out = {"episodes": float(len(records)), "reward": float(np.mean([r["reward"] for r in records]))}
    out.update({k: float(np.mean([r["interactive"][k] for r in records])) for k in keys})
    for key in ("acc", "loose_acc", "dist", "norm_dist"):
        out[key] = float(np.mean([r["metrics"][key] for r in records]))
    return out


def run_kind(env_id: str, obs: str | None) -> str:
    """``interactive`` (``TVR-Interactive-v0``), else the observation kind (``symbolic`` when ``obs`` is None)."""
    if check_env_id(env_id) == INTERACTIVE_ID:
        return "interactive"
    return check_choice("obs", obs or "symbolic", OBS_KINDS)


def _policy_of(arch: str, interactive: bool = False) -> tuple[Any, dict[str, Any] | None]:
    """SB3's policy (name or class) and ``policy_kwargs`` for an :data:`ARCHS` entry. ``objects`` on
    ``TVR-Interactive-v0`` reads each object's step logits off the object itself (one head shared by all
    objects, :class:`~tvr_gym.agents.ppo_objects.ObjectActionPolicy`) instead of a linear head over pooled
    features, which must learn every (object, pair) action on its own."""
    if arch == "objects" and interactive:
        from tvr_gym.agents.ppo_objects import OBJECT_ACTION_POLICY_KWARGS, ObjectActionPolicy

        return ObjectActionPolicy, dict(OBJECT_ACTION_POLICY_KWARGS)
    if arch == "objects":
        from tvr_gym.agents.ppo_objects import POLICY_KWARGS

        return "MlpPolicy", dict(POLICY_KWARGS)
    if arch == "glimpses":
        from tvr_gym.agents.ppo_objects import GLIMPSE_POLICY_KWARGS

        return "MultiInputPolicy", dict(GLIMPSE_POLICY_KWARGS)
    return ("CnnPolicy" if arch == "cnn" else "MlpPolicy"), None


def _load_model(model_path: Path, settings: PPOSettings, device: str) -> Any:
    if settings.algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO as algo
    else:
        from stable_baselines3 import PPO as algo
    try:
        return algo.load(model_path, device=device)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{model_path}: not a readable SB3 PPO model ({type(exc).__name__}: {exc})") from None


def _fit(image: np.ndarray, size: tuple[int, int], key: str) -> np.ndarray:
    """An (H, W, 3) uint8 image at ``size = (W, H)`` (resized bilinearly when needed)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"observation.{key}: expected an (H, W, 3) uint8 image, got shape {image.shape}")
    if image.shape[:2] == (size[1], size[0]):
        return image.astype(np.uint8, copy=False)
    from PIL import Image

    return np.asarray(Image.fromarray(image.astype(np.uint8)).resize(size, Image.BILINEAR))


def _observation_shape(settings: PPOSettings) -> tuple[int, ...]:
    """The model's observation shape (of ``images`` for ``image-table``), channel-last."""
    w, h = settings.render_size
    return (symbolic_size(),) if settings.obs == "symbolic" else (h, w, 6)


def _locate(path: Path) -> tuple[Path, Path]:
    """(model zip, settings file) for a training directory or a model/checkpoint zip."""
    model = path / MODEL_FILE if path.is_dir() else path
    if not model.is_file():
        raise FileNotFoundError(f"ppo: no model at {model}; expected a training directory with {MODEL_FILE} or a .zip")
    for folder in (model.parent, model.parent.parent):
        if (folder / SETTINGS_FILE).is_file():
            return model, folder / SETTINGS_FILE
    raise FileNotFoundError(f"ppo: {SETTINGS_FILE} not found beside {model} or in its parent directory")


# ---------------------------------------------------------------------------- training


def _base_env(env_id: str, **env_kwargs: Any):
    import gymnasium as gym

    return gym.make(env_id, **env_kwargs)


def _table_only(settings: PPOSettings) -> dict[str, Any]:
    """``renderer="none"`` for runs that read only the object tables (symbolic, interactive), unless the run
    names a renderer: their images are never seen, and drawing them took about half of a symbolic run."""
    return {"renderer": "none"} if settings.obs == "symbolic" else {}


def _interactive_sb3_env(env_id: str, **env_kwargs: Any) -> InteractiveSB3:
    """The SB3 view of an interactive env, built inside SB3's ``Monitor``: its turns go through
    ``play_turn`` on the base env, so a ``Monitor`` inside it would never see an episode."""
    return InteractiveSB3(_base_env(env_id, **env_kwargs))


def _atomic_save(model: Any, path: Path) -> Path:
    """``model.save`` into ``path`` so that the file is either absent or complete."""
    with atomic_open(path, "wb") as fh:
        model.save(fh)
    return path


def _callbacks(out: Path, checkpoint_every: int, n_envs: int) -> list[Any]:
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

    class AtomicCheckpoint(CheckpointCallback):
        """SB3's checkpoint callback, writing each checkpoint atomically."""

        def _on_step(self) -> bool:
            if self.n_calls % self.save_freq == 0:
                _atomic_save(self.model, Path(self._checkpoint_path(extension="zip")))
            return True

    class EpisodeMetrics(BaseCallback):
        """Logs the mean reward terms and TVR metrics of the episodes of each rollout under ``tvr/``."""

        def _on_rollout_start(self) -> None:
            self.sums: dict[str, float] = {}
            self.count = 0

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"]):
                if not done or "metrics" not in info:
                    continue
                self.count += 1
                values = {**info.get("reward_terms", {}), **info["metrics"], **info.get("interactive", {})}
                for key, value in values.items():
                    if isinstance(value, (bool, int, float, np.number)):
                        self.sums[key] = self.sums.get(key, 0.0) + float(value)
            return True

        def _on_rollout_end(self) -> None:
            for key, total in self.sums.items():
                self.logger.record(f"tvr/{key}", total / max(self.count, 1))

    callbacks: list[Any] = [EpisodeMetrics()]
    if checkpoint_every > 0:
        freq = max(checkpoint_every // n_envs, 1)
        callbacks.append(AtomicCheckpoint(freq, str(out / "checkpoints"), name_prefix="ppo"))
    return callbacks


def train_ppo(
    env_id: str,
    timesteps: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    obs: str | None = None,
    render_size: tuple[int, int] | None = None,
    n_envs: int | None = None,
    max_items: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    checkpoint_every: int = 10_000,
    vec_env: str = "dummy",
    device: str = "cpu",
    progress_bar: bool = False,
    verbose: int = 0,
    torch_threads: int | None = 1,
    arch: str | None = None,
    callbacks: Sequence[Any] = (),
    lr_schedule: str | None = None,
    **ppo_kwargs: Any,
) -> PPOAgent | InteractivePPOAgent:
    """Train SB3 PPO on ``env_id``: ``arch`` (:data:`ARCHS`) is ``cnn`` for ``obs="image"`` and, for
    ``"symbolic"``, the per-object extractor ``objects`` (default) or the flat ``mlp``.

    ``obs`` defaults to ``symbolic`` (the object tables: the recipe that learns the task, see
    ``docs/ppo.md``). On ``TVR-Interactive-v0`` it trains sb3-contrib's ``MaskablePPO``
    (MlpPolicy) on :class:`~tvr_gym.envs.interactive_sb3.InteractiveSB3` instead: symbolic observations only,
    no ``max_items``; the result is an :class:`InteractivePPOAgent`.

    ``render_size`` defaults to 160x120 for images and 32x24 for symbolic runs (pixels unused);
    ``env_kwargs`` go to ``gym.make`` (e.g. ``max_visible``, ``reward``, ``source``); ``ppo_kwargs``
    override :data:`DEFAULT_PPO_KWARGS` (per :func:`run_kind`) and SB3's defaults; ``n_envs=None`` takes
    :data:`DEFAULT_N_ENVS`. ``callbacks`` are further SB3 callbacks, run after the built-in ones.
    ``lr_schedule`` (:data:`LR_SCHEDULES`; default :data:`DEFAULT_LR_SCHEDULE` of the kind) shapes the
    ``learning_rate``.
    ``torch_threads`` sets torch's CPU threads for the process (1 by default: small PPO networks run far
    faster single-threaded, especially on a busy machine; ``None`` leaves torch's setting).
    Writes the files listed in the module docstring and returns the trained agent.
    """
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    # ---- arguments: every one checked and every default resolved before anything is written
    settings = _resolve_settings(
        env_id, timesteps, seed, obs, render_size, n_envs, max_items, env_kwargs, arch, lr_schedule, ppo_kwargs
    )
    check_choice("vec_env", vec_env, VEC_ENVS)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 0)
    if torch_threads is not None:
        torch.set_num_threads(check_int("torch_threads", torch_threads, 1))

    # ---- the settings file, then the vectorised environments (Monitor CSVs in OUT/monitor)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SETTINGS_FILE, settings.to_json())
    interactive = settings.algo == "maskable_ppo"
    vec = make_vec_env(  # Monitor wraps the SB3 view of an interactive env: its turns bypass the inner wrappers
        functools.partial(_interactive_sb3_env if interactive else _base_env, env_id),
        n_envs=settings.n_envs,
        seed=settings.seed,
        env_kwargs={**_table_only(settings), **settings.env_kwargs, "render_size": settings.render_size},
        monitor_dir=str(out / "monitor"),
        wrapper_class=None if interactive else wrap_for_sb3,
        wrapper_kwargs=None if interactive else {"obs": settings.obs, "max_items": settings.max_items},
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
    )
    # ---- the model, trained with the built-in callbacks (episode metrics, checkpoints) and the caller's
    try:
        model = _build_model(settings, vec, device, verbose, str(out / "tensorboard"))
        builtin = _callbacks(out, checkpoint_every, settings.n_envs)
        model.learn(settings.timesteps, callback=[*builtin, *callbacks], progress_bar=progress_bar)
        _atomic_save(model, out / MODEL_FILE)
    finally:
        vec.close()
    return (InteractivePPOAgent if interactive else PPOAgent)(model, settings)


def _resolve_settings(
    env_id: str,
    timesteps: int,
    seed: int,
    obs: str | None,
    render_size: tuple[int, int] | None,
    n_envs: int | None,
    max_items: int | None,
    env_kwargs: Mapping[str, Any] | None,
    arch: str | None,
    lr_schedule: str | None,
    ppo_kwargs: dict[str, Any],
) -> PPOSettings:
    """The settings of a :func:`train_ppo` run: its arguments checked, the defaults of its kind resolved, and
    ``max_items`` read from the environment's config (:func:`tvr_gym.envs.base.check_env_kwargs`, which checks
    ``env_kwargs`` without building an environment)."""
    interactive = check_env_id(env_id) == INTERACTIVE_ID
    obs = check_choice("obs", "symbolic" if obs is None else obs, OBS_KINDS)
    if interactive and obs != "symbolic":
        raise ValueError(f"obs: {INTERACTIVE_ID} trains on symbolic observations only (the object tables)")
    if interactive and max_items not in (None, 1):
        raise ValueError(f"max_items: {INTERACTIVE_ID} takes one step per turn; leave max_items unset")
    arch = ARCHS[obs][0] if arch is None else check_choice("arch", arch, ARCHS[obs])
    if "policy_kwargs" in ppo_kwargs:
        raise ValueError("ppo_kwargs: policy_kwargs is set by arch (objects, mlp or cnn)")
    timesteps = check_int("timesteps", timesteps, 1)
    kind = run_kind(env_id, obs)
    n_envs = check_int("n_envs", DEFAULT_N_ENVS[kind] if n_envs is None else n_envs, 1)
    seed = check_int("seed", seed, 0)
    kwargs = dict(env_kwargs or {})
    if "render_size" in kwargs:
        raise ValueError("env_kwargs: pass render_size as train_ppo's own argument")
    size = tuple(render_size) if render_size is not None else DEFAULT_RENDER_SIZE[obs]
    config = check_env_kwargs(env_id, **kwargs, render_size=size)
    most = config.episode.steps[1] if max_items is None else max_items  # DiscreteAnswer's default
    items = 1 if interactive else AnswerEncoding(most).max_items
    ppo = {**DEFAULT_PPO_KWARGS[kind], **ppo_kwargs}
    algo = "maskable_ppo" if interactive else "ppo"
    schedule = check_choice("lr_schedule", lr_schedule or DEFAULT_LR_SCHEDULE[kind], LR_SCHEDULES)
    return PPOSettings(env_id, obs, size, items, kwargs, seed, timesteps, n_envs, ppo, algo, arch, schedule)


def _build_model(settings: PPOSettings, vec: Any, device: str, verbose: int, tensorboard_log: str) -> Any:
    """SB3's ``PPO`` (sb3-contrib's ``MaskablePPO`` on ``TVR-Interactive-v0``) on ``vec``, with the network of
    the settings' ``arch`` and their hyperparameters; the ``decay`` schedule wraps the learning rate."""
    policy, policy_kwargs = _policy_of(settings.arch, interactive=settings.algo == "maskable_ppo")
    if settings.algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO as algo_class
    else:
        from stable_baselines3 import PPO as algo_class
    rate = settings.ppo_kwargs["learning_rate"]  # every kind's defaults name one
    shaped = {**settings.ppo_kwargs, "learning_rate": DecayingRate(rate) if settings.lr_schedule == "decay" else rate}
    return algo_class(policy, vec, seed=settings.seed, device=device, verbose=verbose, tensorboard_log=tensorboard_log,
                      policy_kwargs=policy_kwargs, **shaped)  # fmt: skip


# ---------------------------------------------------------------------------- configuration


def _defaults_help(text: str, table: Mapping[str, Any], key: str | None = None) -> dict[str, str]:
    """A flag's help ending with its per-kind defaults, read from ``table`` (so no number is repeated)."""
    shown = {kind: v[key] if key else v for kind, v in table.items()}
    values = ", ".join(f"{kind} {v:,}" if isinstance(v, (int, float)) else f"{kind} {v}" for kind, v in shown.items())
    return {"help": f"{text} (default: {values})"}


@dataclass
class PPOConfig:
    """The options of ``tvr-gym train ppo``, one flag per field; :func:`train_from_config` runs them."""

    env: str = field(
        default="TVR-Basic-v0",
        metadata={"help": f"a registered TVR environment id ({INTERACTIVE_ID}: MaskablePPO on object tables)"},
    )
    timesteps: int | None = field(
        default=None, metadata=_defaults_help("environment steps (= episodes)", DEFAULT_TIMESTEPS)
    )
    out: str = field(default="runs/ppo", metadata={"help": "output directory: model.zip, settings, checkpoints"})
    obs_mode: str | None = field(
        default=None,
        metadata={
            "help": "object tables (default; per-object network), stacked images (CnnPolicy) or image-table "
            f"(the images and the initial table; per-object glimpse network); images not on {INTERACTIVE_ID}",
            "choices": OBS_KINDS,
        },
    )
    arch: str | None = field(
        default=None,
        metadata={"help": "policy network: objects (per-object extractor, symbolic default), mlp, cnn (image), "
                          "glimpses (image-table)",
                  "choices": tuple(dict.fromkeys(a for archs in ARCHS.values() for a in archs))},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "seed of the environments and the policy"})
    n_envs: int | None = field(default=None, metadata=_defaults_help("parallel environments", DEFAULT_N_ENVS))
    subproc: bool = field(default=False, metadata={"help": "run the environments in subprocesses"})
    size: list[int] | None = field(
        default=None,
        metadata={
            "help": "image size W H (default: "
            + ", ".join(f"{k} {w} {h}" for k, (w, h) in DEFAULT_RENDER_SIZE.items())
            + ")"
        },
    )
    max_items: int | None = field(default=None, metadata={"help": "answer items an action can hold (default: env max)"})
    checkpoint_every: int = field(default=10_000, metadata={"help": "steps between checkpoints (0: off)"})
    lr: float | None = field(
        default=None, metadata=_defaults_help("learning rate", DEFAULT_PPO_KWARGS, "learning_rate")
    )
    n_steps: int | None = field(
        default=None, metadata=_defaults_help("rollout steps per environment", DEFAULT_PPO_KWARGS, "n_steps")
    )
    batch_size: int | None = field(
        default=None, metadata=_defaults_help("minibatch size", DEFAULT_PPO_KWARGS, "batch_size")
    )
    lr_schedule: str | None = field(
        default=None,
        metadata={**_defaults_help("constant, or decay (held for half the run, then linearly to 0)",
                                   DEFAULT_LR_SCHEDULE), "choices": LR_SCHEDULES},
    )  # fmt: skip
    ent_coef: float | None = field(
        default=None, metadata=_defaults_help("entropy coefficient", DEFAULT_PPO_KWARGS, "ent_coef")
    )
    device: str = field(default="cpu", metadata={"help": "torch device (cpu, cuda, auto)"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "further environment keywords"})


def train_from_config(cfg: PPOConfig) -> PPOAgent | InteractivePPOAgent:
    """:func:`train_ppo` with the options of a :class:`PPOConfig`.

    On ``TVR-Interactive-v0`` the ``reward`` keyword (``--reward``) names the terminal reward.
    """
    env_kwargs = dict(cfg.env_kwargs)
    if cfg.env == INTERACTIVE_ID and "reward" in env_kwargs:
        env_kwargs["terminal_reward"] = env_kwargs.pop("reward")
    kind = run_kind(cfg.env, cfg.obs_mode)
    chosen = {"learning_rate": cfg.lr, "n_steps": cfg.n_steps, "batch_size": cfg.batch_size, "ent_coef": cfg.ent_coef}
    ppo_kwargs = {key: value for key, value in chosen.items() if value is not None}
    timesteps = DEFAULT_TIMESTEPS[kind] if cfg.timesteps is None else cfg.timesteps
    return train_ppo(
        cfg.env, timesteps, cfg.out, seed=cfg.seed, obs=cfg.obs_mode, render_size=cfg.size, n_envs=cfg.n_envs,
        max_items=cfg.max_items, env_kwargs=env_kwargs, checkpoint_every=cfg.checkpoint_every,
        vec_env="subproc" if cfg.subproc else "dummy", device=cfg.device, progress_bar=not cfg.quiet,
        arch=cfg.arch, lr_schedule=cfg.lr_schedule, **ppo_kwargs,
    )  # fmt: skip
