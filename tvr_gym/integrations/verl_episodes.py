"""The rows of a verl dataset of ``TVR-Interactive-v0`` episodes, and the episode each row names.

Row ``i`` of ``episode_rows(n, seed, setting=...)`` is ``reset(seed=seed, options={"index": i})`` of
``TVR-Interactive-v0``: its prompt and first images are that episode's first observation, and
``extra_info.interaction_kwargs`` names the episode so that the agent loop
(:mod:`tvr_gym.integrations.verl_agent`, which needs verl) replays it. Writing the rows needs only
``datasets``: ``python -m tvr_gym.integrations.verl_episodes --out DIR --n N``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from tvr_gym.chat import placeholder_messages
from tvr_gym.env_base import check_env_kwargs
from tvr_gym.options import check_int

__all__ = ["AGENT_NAME", "COLUMNS", "ENV_ID", "EpisodeSpec", "episode_rows", "export_parquet"]

AGENT_NAME = "tvr_interactive"
"""The loop's name: the rows' ``agent_name`` and the ``name`` of its agent-loop config entry."""
ENV_ID = "TVR-Interactive-v0"
ABILITY = "visual-reasoning"
COLUMNS: dict[str, str] = {
    "data_source": "tvr-interactive/<setting>",
    "agent_name": f"{AGENT_NAME!r}: the agent loop verl runs for the row",
    "prompt": "[{'role': 'user', 'content': '<image><image>' + prompt text}] (a system turn first when given)",
    "images": "[target, current]: the episode's first observation",
    "ability": ABILITY,
    "reward_model": "{'style': 'rule', 'ground_truth': <the problem as JSON>}",
    "extra_info": "{'index', 'split', 'env_id', 'setting', 'seed', 'answer', 'n_steps', 'final_view', "
    "'interaction_kwargs': {'name', 'env_id', 'setting', 'seed', 'index', 'env_kwargs' (JSON)}}",
}
"""The columns of an interactive verl dataset."""
IMAGES_ONLY = "env_kwargs: the verl agent loop shows images; obs_mode must be 'image'"


@dataclass(frozen=True)
class EpisodeSpec:
    """A row's episode: ``gym.make(env_id, setting=setting, **env_kwargs)`` reset with ``seed`` and ``index``."""

    setting: str
    seed: int
    index: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_id: str = ENV_ID

    def interaction_kwargs(self) -> dict[str, Any]:
        """The row's ``extra_info["interaction_kwargs"]`` (``env_kwargs`` as JSON, so every row has one schema)."""
        return {
            "name": AGENT_NAME,
            "env_id": self.env_id,
            "setting": self.setting,
            "seed": int(self.seed),
            "index": int(self.index),
            "env_kwargs": json.dumps(self.env_kwargs, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EpisodeSpec:
        """The spec of a row as verl passes it to ``run``: ``interaction_kwargs`` (lifted from ``extra_info``
        by ``RLHFDataset``), else ``extra_info["interaction_kwargs"]``."""
        found = row.get("interaction_kwargs")
        if not found:
            found = (row.get("extra_info") or {}).get("interaction_kwargs")
        if not found:
            raise ValueError(
                "row: no interaction_kwargs (expected extra_info.interaction_kwargs with setting, seed, index; "
                "build the dataset with tvr_gym.integrations.verl_episodes.export_parquet)"
            )
        missing = [k for k in ("setting", "seed", "index") if found.get(k) is None]
        if missing:
            raise ValueError(f"interaction_kwargs: missing {', '.join(missing)}")
        env_kwargs = found.get("env_kwargs") or {}
        if isinstance(env_kwargs, str):
            env_kwargs = json.loads(env_kwargs)
        return cls(
            setting=str(found["setting"]),
            seed=int(found["seed"]),
            index=int(found["index"]),
            env_kwargs=dict(env_kwargs),
            env_id=str(found.get("env_id") or ENV_ID),
        )

    def make(self):
        """A new environment of this spec (not reset)."""
        import gymnasium as gym

        from tvr_gym.registration import check_env_id

        if self.env_id != ENV_ID:
            raise ValueError(f"env_id: the verl agent loop plays {ENV_ID}, got {self.env_id!r}")
        env = gym.make(check_env_id(self.env_id), setting=self.setting, **self.env_kwargs)
        if env.unwrapped.obs_mode != "image":
            raise ValueError(IMAGES_ONLY)
        return env

    def start(self):
        """(env, obs, info): a new environment reset to this spec's episode."""
        env = self.make()
        obs, info = env.reset(seed=self.seed, options={"index": self.index})
        return env, obs, info



def episode_rows(
    n: int,
    seed: int = 0,
    start: int = 0,
    setting: str = "event",
    split: str = "train",
    system: str | None = None,
    **env_kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """verl rows of episodes ``start .. start + n - 1``: row ``i`` is ``reset(seed=seed, options={"index": i})``.

    Each row holds the first observation (the prompt with one ``<image>`` per image, and the images
    [target, current]) and the episode spec in ``extra_info.interaction_kwargs`` (:data:`COLUMNS`).
    ``env_kwargs`` go to ``TVR-Interactive-v0`` here and in the agent loop: pin ``renderer`` when the
    rows are built on another machine than the rollouts, so the first images and the later renders
    come from the same renderer.
    """
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        check_int(name, value, 0)
    env_kwargs = json.loads(json.dumps(env_kwargs))  # as the loop will see them (tuples become lists)
    probe = EpisodeSpec(setting, seed, start, env_kwargs)
    env = probe.make()
    try:
        for i in range(start, start + n):
            spec = EpisodeSpec(setting, seed, i, env_kwargs)
            obs, info = env.reset(seed=seed, options={"index": i})
            problem = env.unwrapped.problem
            yield {
                "data_source": f"tvr-interactive/{setting}",
                "agent_name": AGENT_NAME,
                "prompt": placeholder_messages(obs["prompt"], 2, system),
                "images": [Image.fromarray(obs["target"]), Image.fromarray(obs["current"])],
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": json.dumps(problem.to_dict(), separators=(",", ":"))},
                "extra_info": {
                    "index": i,
                    "split": split,
                    "env_id": ENV_ID,
                    "setting": setting,
                    "seed": seed,
                    "answer": info["truth"],
                    "n_steps": len(problem.transformations),
                    "final_view": info["final_view"],
                    "interaction_kwargs": spec.interaction_kwargs(),
                },
            }
    finally:
        env.close()


def _features():
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "data_source": text,
            "agent_name": text,
            "prompt": List({"role": text, "content": text}),
            "images": List(Image()),
            "ability": text,
            "reward_model": {"style": text, "ground_truth": text},
            "extra_info": {
                "index": Value("int64"),
                "split": text,
                "env_id": text,
                "setting": text,
                "seed": Value("int64"),
                "answer": text,
                "n_steps": Value("int32"),
                "final_view": text,
                "interaction_kwargs": {
                    "name": text,
                    "env_id": text,
                    "setting": text,
                    "seed": Value("int64"),
                    "index": Value("int64"),
                    "env_kwargs": text,
                },
            },
        }
    )


def _rows_for_datasets(
    n: int, seed: int, start: int, setting: str, split: str, system: str | None, env_kwargs: dict
) -> Iterator[dict[str, Any]]:
    yield from episode_rows(n, seed, start, setting, split, system, **env_kwargs)


def export_parquet(
    out: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    start: int = 0,
    setting: str = "event",
    split: str = "train",
    system: str | None = None,
    **env_kwargs: Any,
) -> Path:
    """Write :func:`episode_rows` to ``out/<split>.parquet`` (for ``data.train_files`` / ``val_files``); returns it.

    The images are stored as ``datasets`` images, so ``RLHFDataset`` reads them as PIL images.
    """
    import tempfile

    from datasets import Dataset

    if not re.fullmatch(r"[A-Za-z0-9_-]+", split or ""):
        raise ValueError(f"split: expected a name of letters, digits, '-' or '_', got {split!r}")
    config = check_env_kwargs(ENV_ID, setting=setting, **json.loads(json.dumps(env_kwargs)))  # bad ones fail first
    if config.obs_mode != "image":
        raise ValueError(IMAGES_ONLY)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-verl-interactive-", dir=out) as tmp:
        dataset = Dataset.from_generator(
            _rows_for_datasets,
            features=_features(),
            gen_kwargs={
                "n": n,
                "seed": seed,
                "start": start,
                "setting": setting,
                "split": split,
                "system": system,
                "env_kwargs": env_kwargs,
            },
            cache_dir=str(Path(tmp) / "cache"),
        )
        staged = Path(tmp) / f"{split}.parquet"
        dataset.to_parquet(str(staged))
        del dataset
        target = out / f"{split}.parquet"
        os.replace(staged, target)
    return target


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m tvr_gym.integrations.verl_episodes --out DIR --n N [--seed S --start K --split S --setting S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tvr_gym.integrations.verl_episodes",
        description="Write a verl dataset of TVR-Interactive-v0 episodes.",
    )
    parser.add_argument("--out", required=True, help="directory; writes <out>/<split>.parquet")
    parser.add_argument("--n", type=int, required=True, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first episode index")
    parser.add_argument("--split", default="train")
    parser.add_argument("--setting", default="event", help="basic, event or crossview")
    parser.add_argument("--system", default=None, help="a system prompt (none by default)")
    parser.add_argument(
        "--env-kwargs", default="{}", help='TVR-Interactive-v0 keywords as JSON, e.g. \'{"renderer": "gl"}\''
    )
    args = parser.parse_args(argv)
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        parser.error("--env-kwargs: expected a JSON object")
    path = export_parquet(args.out, args.n, args.seed, args.start, args.setting, args.split, args.system, **env_kwargs)
    print(path)
    return path



if __name__ == "__main__":
    main()
