"""``tvr-gym export``: environment episodes in the formats trainers read (TRL, verl, EasyR1, SkyRL) or as TRANCE data.

Row ``i`` of an export is the episode ``env.reset(seed=seed, options={"index": i})``: the same seed and
index always give the same problem and pixels, and any range of rows can be exported alone. Every
format carries the problem as JSON, so any reward (star, state, sparse, an ablation) and any metric can
be recomputed from a row with :mod:`tvr_gym.integrations`. The columns of each format are defined here
only (:data:`COLUMNS`) and documented in ``docs/integrations.md``.

A table export is staged in ``OUT/.tmp-export-*/`` and moved into place when complete; an export that
is stopped (Ctrl-C, SIGTERM, a full disk) removes its staging directory and keeps nothing, and the next
export into ``OUT`` removes those a killed one left. ``trance`` exports resume like ``tvr-gym generate``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tvr_gym.core import chat
from tvr_gym.core.atomic import atomic_write_text, encode_png, is_url, replace_dir
from tvr_gym.core.options import check_choice, check_int
from tvr_gym.core.trance import Problem
from tvr_gym.data.cluster import ENGINES, RayOptions, ray_session
from tvr_gym.data.dataset import (
    BUSY,
    RESUMES,
    DatasetDirError,
    DatasetWriter,
    lock_dir,
    share_lock,
    stopping_cleanly,
    unlock_dir,
    write_sample,
)
from tvr_gym.data.demonstrations import Demonstration, demonstrations
from tvr_gym.data.shards import DEFAULT_SHARD_ROWS, datasets_quiet, export_shards
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.envs.interactive_sb3 import SOLVERS
from tvr_gym.envs.registration import INTERACTIVE_ID, check_env_id
from tvr_gym.version import __version__

__all__ = ["COLUMNS", "FORMATS", "ExportRow", "export", "export_rows"]

FORMATS = ("hf", "verl", "easyr1", "trance", "skyrl")
STAGING_PREFIX = ".tmp-export-"
"""``OUT/.tmp-export-*/``: where a table export is built before it is moved into place."""
CLAIM_WAIT_S = 30.0
"""How long a table export waits for another export into the same ``OUT`` to finish removing stale files."""
STARTS_OVER = "nothing of this export is kept; rerun the same command to start it over"
"""What a stopped table export keeps: it is written whole or not at all."""
VERL_AGENT_NAME = "tvr_interactive"
"""The ``agent_name`` of ``TVR-Interactive-v0``'s verl rows: the name its agent-loop config entry registers."""
COLUMNS: dict[str, dict[str, str]] = {
    "hf": {
        "prompt": "TRL conversational prompt: [{'role': 'user', 'content': <prompt text>}]; TRL puts the images "
        "before the text",
        "images": "[initial, final] images (image observations only)",
        "answer": "the true answer, <think></think><answer>...</answer>",
        "problem": "the problem as JSON (TRANCE sample dict): the ground truth of every reward",
        "n_steps": "number of true transformations",
        "final_view": "camera of the final image: center, left or right",
        "env_id": "environment id",
        "index": "row index i: env.reset(seed=seed, options={'index': i})",
        "seed": "the export's seed",
    },
    "verl": {
        "data_source": "tvr/<setting>, e.g. tvr/crossview",
        "prompt": "[{'role': 'user', 'content': '<image><image>' + prompt text}], one <image> per image",
        "images": "[initial, final] images (image observations only)",
        "ability": "visual-reasoning",
        "reward_model": "{'style': 'rule', 'ground_truth': <the problem as JSON>}",
        "extra_info": "{'index', 'split', 'env_id', 'seed', 'answer', 'n_steps', 'final_view'}",
    },
    "easyr1": {
        "problem": "'<image><image>' + prompt text, one <image> per image",
        "answer": "the problem as JSON: EasyR1 hands it to the reward as ground_truth",
        "images": "[initial, final] images (image observations only)",
    },
    "skyrl": {
        "data_source": "tvr/<setting>, e.g. tvr/crossview; tvr-interactive/<setting> for TVR-Interactive-v0",
        "prompt": "[{'role': 'user', 'content': <prompt text>}], text only (both object tables)",
        "env_class": "the skyrl_gym env: tvr, or tvr_interactive for TVR-Interactive-v0",
        "reward_spec": "{'method': 'rule', 'ground_truth': <the problem as JSON>}",
        "extra_info": "{'index', 'split', 'env_id', 'seed', 'answer', 'n_steps', 'final_view'}",
    },
    "trance": {"data.jsonl": "TRANCE samples with final_view", "image/": "the observed initial and final images"},
    "hf-demonstrations": {
        "messages": "the solver's episode as a TRL chat: user [target, current, prompt], then each turn "
        "(assistant <think></think><answer>STEP</answer>, user [new image, feedback]), ending with the "
        "assistant's done; content blocks {'type': 'image'} / {'type': 'text', 'text': ...}",
        "images": "one image per image block, in block order (image observations only)",
        "answer": "the true answer", "problem": "the problem as JSON", "n_steps": "number of true transformations",
        "final_view": "camera of the target image", "env_id": "TVR-Interactive-v0", "index": "row index i",
        "seed": "the export's seed", "solver": "oracle or greedy", "success": "the episode reached the target",
        "return": "the episode's total reward",
    },
    "verl-demonstrations": {
        "messages": "the same chat for verl's MultiTurnSFTDataset: string contents, one <image> per image",
        "images": "one image per <image>, in order (image observations only)",
        "data_source": "tvr-interactive/<setting>",
        "extra_info": "{'index', 'split', 'env_id', 'seed', 'answer', 'n_steps', 'final_view', 'solver', 'success'}",
    },
}
"""Every column of every format, with its meaning."""

ABILITY = "visual-reasoning"
SKYRL_ENV_CLASSES = {"single": "tvr", "interactive": "tvr_interactive"}
"""The ``env_class`` of SkyRL rows: the ids :mod:`tvr_gym.integrations.skyrl` registers."""


@dataclass(frozen=True)
class ExportRow:
    """One exported episode, before it takes a format's shape."""

    index: int
    seed: int
    env_id: str
    setting: str
    prompt: str
    initial: np.ndarray
    final: np.ndarray
    use_images: bool
    answer: str
    problem: dict[str, Any]
    problem_object: Problem
    final_view: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """The environment keywords the row was made with (``setting`` aside), for a loop that replays it."""

    @property
    def images(self) -> list[np.ndarray]:
        """The images a policy is shown: both, for image observations; none for text observations."""
        return [self.initial, self.final] if self.use_images else []

    @property
    def data_source(self) -> str:
        """``tvr/<setting>``, or ``tvr-interactive/<setting>`` for ``TVR-Interactive-v0`` (verl and SkyRL rows)."""
        return f"tvr-interactive/{self.setting}" if self.env_id == INTERACTIVE_ID else f"tvr/{self.setting}"

    def extra_info(self, split: str) -> dict[str, Any]:
        """The ``extra_info`` column of verl and SkyRL rows (:func:`_features` holds its schema)."""
        return {
            "index": self.index, "split": split, "env_id": self.env_id, "seed": self.seed, "answer": self.answer,
            "n_steps": self.n_steps, "final_view": self.final_view,
        }  # fmt: skip

    @property
    def problem_json(self) -> str:
        return json.dumps(self.problem, separators=(",", ":"))

    @property
    def n_steps(self) -> int:
        return len(self.problem["transformations"])


def export_rows(env_id: str, indices: Iterable[int], seed: int = 0, **env_kwargs: Any) -> Iterator[ExportRow]:
    """The rows of ``indices``: row ``i`` is ``reset(seed=seed, options={"index": i})`` of ``env_id``.

    For ``TVR-Interactive-v0`` the prompt is the first observation's, and ``initial`` and ``final`` hold its
    two images in the prompt's order: the target, then the current state.
    """
    import gymnasium as gym

    first, second = ("target", "current") if env_id == INTERACTIVE_ID else ("initial", "final")
    replay_kwargs = json.loads(json.dumps({k: v for k, v in env_kwargs.items() if k != "setting"}, default=list))
    env = gym.make(check_env_id(env_id), **env_kwargs)
    try:
        for i in indices:
            obs, info = env.reset(seed=seed, options={"index": i})
            problem = env.unwrapped.problem
            yield ExportRow(
                index=i,
                seed=seed,
                env_id=env_id,
                setting=env.unwrapped.setting,
                prompt=obs["prompt"],
                initial=obs[first],
                final=obs[second],
                use_images=env.unwrapped.obs_mode == "image",
                answer=info["truth"],
                problem=problem.to_dict(),
                problem_object=problem,
                final_view=info["final_view"],
                env_kwargs=replay_kwargs,
            )
    finally:
        env.close()


def _png_images(images: list[np.ndarray]) -> list[dict[str, Any]]:
    """Images as the ``datasets`` Image feature stores them, encoded here at our PNG level (its own is PIL's 6)."""
    return [{"bytes": encode_png(im), "path": None} for im in images]


def _hf_row(row: ExportRow) -> dict[str, Any]:
    out = {
        "prompt": chat.string_messages(row.prompt),
        "answer": row.answer,
        "problem": row.problem_json,
        "n_steps": row.n_steps,
        "final_view": row.final_view,
        "env_id": row.env_id,
        "index": row.index,
        "seed": row.seed,
    }
    if row.images:
        out["images"] = _png_images(row.images)
    return out


def _verl_row(row: ExportRow, split: str) -> dict[str, Any]:
    out = {
        "data_source": row.data_source,
        "prompt": chat.placeholder_messages(row.prompt, len(row.images)),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": row.problem_json},
        "extra_info": row.extra_info(split),
    }
    if row.env_id == INTERACTIVE_ID:  # a row of tvr-gym's verl agent loop (tvr_gym.integrations.verl_agent)
        out["agent_name"] = VERL_AGENT_NAME
        out["extra_info"]["setting"] = row.setting
        out["extra_info"]["interaction_kwargs"] = {
            "name": VERL_AGENT_NAME, "env_id": row.env_id, "setting": row.setting, "seed": row.seed,
            "index": row.index, "env_kwargs": json.dumps(row.env_kwargs, sort_keys=True),
        }  # fmt: skip
    if row.images:
        out["images"] = _png_images(row.images)
    return out


def _easyr1_row(row: ExportRow) -> dict[str, Any]:
    out = {"problem": chat.placeholder_text(row.prompt, len(row.images)), "answer": row.problem_json}
    if row.images:
        out["images"] = _png_images(row.images)
    return out


def _skyrl_row(row: ExportRow, split: str) -> dict[str, Any]:
    interactive = row.env_id == INTERACTIVE_ID
    return {
        "data_source": row.data_source,
        "prompt": chat.string_messages(row.prompt),
        "env_class": SKYRL_ENV_CLASSES["interactive" if interactive else "single"],
        "reward_spec": {"method": "rule", "ground_truth": row.problem_json},
        "extra_info": row.extra_info(split),
    }


def _hf_demonstration_row(demo: Demonstration) -> dict[str, Any]:
    out = {
        "messages": demo.messages, "answer": demo.answer, "problem": json.dumps(demo.problem, separators=(",", ":")),
        "n_steps": demo.n_steps, "final_view": demo.final_view, "env_id": INTERACTIVE_ID, "index": demo.index,
        "seed": demo.seed, "solver": demo.solver, "success": demo.success, "return": demo.episode_return,
    }  # fmt: skip
    if demo.images:
        out["images"] = _png_images(demo.images)
    return out


def _placeholder_content(blocks: list[dict[str, Any]]) -> str:
    """Content blocks as one string, each image block an ``<image>`` (verl's placeholder)."""
    return "".join(chat.IMAGE_PLACEHOLDER if b["type"] == "image" else b["text"] for b in blocks)


def _verl_demonstration_row(demo: Demonstration, split: str) -> dict[str, Any]:
    out = {
        "messages": [{"role": m["role"], "content": _placeholder_content(m["content"])} for m in demo.messages],
        "data_source": f"tvr-interactive/{demo.setting}",
        "extra_info": {
            "index": demo.index, "split": split, "env_id": INTERACTIVE_ID, "seed": demo.seed, "answer": demo.answer,
            "n_steps": demo.n_steps, "final_view": demo.final_view, "solver": demo.solver, "success": demo.success,
        },
    }  # fmt: skip
    if demo.images:
        out["images"] = _png_images(demo.images)
    return out


def _skyrl_kwargs(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """SkyRL-gym's messages are text only, so its rows are too: ``obs_mode`` is ``text`` (the default here)."""
    if env_kwargs.get("obs_mode", "text") != "text":
        raise ValueError(
            "obs_mode: the skyrl format is text only (SkyRL-gym messages are Dict[str, str]); "
            "use obs_mode='text' (--obs-mode text), its default"
        )
    return {**env_kwargs, "obs_mode": "text"}


def _features(fmt: str, with_images: bool, interactive: bool = False, demonstrations: bool = False):
    from datasets import Features, Image, List, Value

    text = Value("string")
    if demonstrations:
        return _demonstration_features(fmt, with_images)
    message = {"role": text, "content": text}
    extra_info = {  # ExportRow.extra_info
        "index": Value("int64"), "split": text, "env_id": text, "seed": Value("int64"), "answer": text,
        "n_steps": Value("int32"), "final_view": text,
    }  # fmt: skip
    columns: dict[str, Any] = {
        "hf": {
            "prompt": List(message), "answer": text, "problem": text, "n_steps": Value("int32"),
            "final_view": text, "env_id": text, "index": Value("int64"), "seed": Value("int64"),
        },
        "verl": {
            "data_source": text, "prompt": List(message), "ability": text,
            "reward_model": {"style": text, "ground_truth": text},
            "extra_info": extra_info,
        },
        "easyr1": {"problem": text, "answer": text},
        "skyrl": {
            "data_source": text, "prompt": List(message), "env_class": text,
            "reward_spec": {"method": text, "ground_truth": text},
            "extra_info": extra_info,
        },
    }[fmt]  # fmt: skip
    if fmt == "verl" and interactive:
        columns["agent_name"] = text
        columns["extra_info"] = {
            **columns["extra_info"], "setting": text,
            "interaction_kwargs": {
                "name": text, "env_id": text, "setting": text, "seed": Value("int64"), "index": Value("int64"),
                "env_kwargs": text,
            },
        }  # fmt: skip
    if with_images:
        columns["images"] = List(Image())
    return Features(columns)


def _demonstration_features(fmt: str, with_images: bool):
    from datasets import Features, Image, List, Value

    text = Value("string")
    if fmt == "hf":
        columns: dict[str, Any] = {
            "messages": List({"role": text, "content": List({"type": text, "text": text})}), "answer": text,
            "problem": text, "n_steps": Value("int32"), "final_view": text, "env_id": text, "index": Value("int64"),
            "seed": Value("int64"), "solver": text, "success": Value("bool"), "return": Value("float64"),
        }  # fmt: skip
    else:
        columns = {
            "messages": List({"role": text, "content": text}), "data_source": text,
            "extra_info": {
                "index": Value("int64"), "split": text, "env_id": text, "seed": Value("int64"), "answer": text,
                "n_steps": Value("int32"), "final_view": text, "solver": text, "success": Value("bool"),
            },
        }  # fmt: skip
    if with_images:
        columns["images"] = List(Image())
    return Features(columns)


def _progress(rows: Iterator[Any], total: int, label: str, enabled: bool) -> Iterator[Any]:
    from rich.progress import track

    yield from track(rows, total=total, description=label, disable=not enabled, transient=False)


def _shaped_rows(
    fmt: str, env_id: str, start: int, n: int, seed: int, split: str, env_kwargs: dict, progress: bool,
    solver: str | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows of a table format (a module-level generator, so ``datasets`` can fingerprint its arguments)."""
    if solver is not None:
        demos = demonstrations(range(start, start + n), seed, solver, **env_kwargs)
        for demo in _progress(demos, n, f"{solver} demonstrations of {env_id} ({fmt})", progress):
            yield _hf_demonstration_row(demo) if fmt == "hf" else _verl_demonstration_row(demo, split)
        return
    shape = {
        "hf": _hf_row, "verl": lambda r: _verl_row(r, split), "easyr1": _easyr1_row,
        "skyrl": lambda r: _skyrl_row(r, split),
    }[fmt]  # fmt: skip
    rows = export_rows(env_id, range(start, start + n), seed, **env_kwargs)
    for row in _progress(rows, n, f"exporting {env_id} ({fmt})", progress):
        yield shape(row)


def export(
    fmt: str,
    env_id: str,
    n: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    start: int = 0,
    split: str = "train",
    progress: bool = True,
    demonstrations: str | None = None,
    engine: str = "local",
    ray: RayOptions | None = None,
    shard_size: int | None = None,
    **env_kwargs: Any,
) -> Path | str:
    """Export rows ``start .. start + n - 1`` of ``env_id`` as ``fmt``; returns what was written.

    ``demonstrations`` (``oracle`` or ``greedy``, ``TVR-Interactive-v0`` only) exports that solver's whole
    episodes as multi-turn SFT chats (:mod:`tvr_gym.data.demonstrations`): ``hf`` rows for TRL's SFT, ``verl``
    rows for verl's ``MultiTurnSFTDataset``.

    - ``hf``: ``out/<split>/``, a ``datasets`` dataset (``save_to_disk``); ``out/dataset_dict.json``
      lists the splits, so ``load_from_disk(out)`` gives them all;
    - ``verl``, ``easyr1`` and ``skyrl``: ``out/<split>.parquet`` (``skyrl``: text only; it also takes
      ``TVR-Interactive-v0``, whose rows are for the ``tvr_interactive`` environment);
    - ``trance``: ``out/data.jsonl`` and ``out/image/``, resumable like ``tvr-gym generate``, and like it
      on a Ray cluster with ``engine="ray"`` (``ray``: :class:`~tvr_gym.data.cluster.RayOptions`);
    - with ``shard_size`` or ``engine="ray"``, a table format is written as parquet shards of ``shard_size``
      rows (default 1000), ``out/<split>/shard-00000-of-0000K.parquet``, with the manifest
      ``out/.tvr-gym-shards/<split>.json``: resumable shard by shard, and on Ray one task per shard
      (:mod:`tvr_gym.data.shards`). ``hf`` rows too are then parquet (``load_dataset("parquet", ...)``).
      ``out`` may then be a URL of a file system ``fsspec`` has (``s3://bucket/x`` with ``s3fs``,
      ``file:///abs/path``), and a URL ``out`` always writes shards; the URL is returned.

    Every argument is checked, and the environment built, before anything is written; the dataset
    appears atomically once complete.
    """
    check_choice("format", fmt, FORMATS)
    check_choice("engine", engine, ENGINES)
    if shard_size is not None:
        check_int("shard_size", shard_size, 1)
        if fmt == "trance":
            raise ValueError("shard_size: trance exports are one dataset directory; shards are for table formats")
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        check_int(name, value, 0)
    if not isinstance(split, str) or not split or not split.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"split: expected a name of letters, digits, '-' or '_', got {split!r}")
    check_env_id(env_id)
    if fmt == "skyrl":
        env_kwargs = _skyrl_kwargs(env_kwargs)
    config = check_env_kwargs(env_id, **env_kwargs)  # bad keywords fail here, before any directory exists
    if demonstrations is not None:
        check_choice("demonstrations", demonstrations, SOLVERS)
        if env_id != INTERACTIVE_ID or fmt not in ("hf", "verl"):
            raise ValueError(f"demonstrations: solver episodes export from {INTERACTIVE_ID} as hf or verl rows")
    elif env_id == INTERACTIVE_ID and fmt in ("trance", "easyr1", "hf"):
        extra = "; hf rows are demonstrations (--demonstrations oracle)" if fmt == "hf" else ""
        raise ValueError(f"format: {INTERACTIVE_ID} exports as verl (its agent loop) or skyrl rows, not {fmt}{extra}")
    if env_id == INTERACTIVE_ID and fmt == "verl" and demonstrations is None and config.obs_mode != "image":
        raise ValueError("obs_mode: the verl agent loop shows images; export TVR-Interactive-v0 with obs_mode='image'")
    if is_url(out) and fmt == "trance":
        raise ValueError(f"out: {out}: a URL takes table exports (parquet shards); write trance data to a local or "
                         "shared path")  # fmt: skip
    if fmt == "trance" and engine == "ray":
        with ray_session(ray or RayOptions()), stopping_cleanly(Path(out), RESUMES):  # a bad address: before any write
            return _export_trance(env_id, seed, start, n, Path(out), env_kwargs, progress, ray or RayOptions())
    if fmt == "trance":
        with stopping_cleanly(Path(out), RESUMES):
            return _export_trance(env_id, seed, start, n, Path(out), env_kwargs, progress)
    with_images = config.obs_mode == "image"
    if shard_size is not None or engine == "ray" or is_url(out):
        features = _features(fmt, with_images, env_id == INTERACTIVE_ID, demonstrations=demonstrations is not None)
        with stopping_cleanly(out, RESUMES):
            return export_shards(fmt, env_id, start, n, seed, split, env_kwargs, progress, out, _shaped_rows,
                                 features, shard_size or DEFAULT_SHARD_ROWS,
                                 (ray or RayOptions()) if engine == "ray" else None, demonstrations)  # fmt: skip
    with stopping_cleanly(Path(out), STARTS_OVER):
        return _export_table(fmt, env_id, start, n, seed, split, env_kwargs, progress, Path(out), with_images,
                             demonstrations)  # fmt: skip


def _export_table(
    fmt: str, env_id: str, start: int, n: int, seed: int, split: str, env_kwargs: dict, progress: bool, out: Path,
    with_images: bool, solver: str | None = None,
) -> Path:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    lock = _claim(out, split)
    try:
        return _build_table(fmt, env_id, start, n, seed, split, env_kwargs, progress, out, with_images, solver)
    finally:
        unlock_dir(lock)


def _claim(out: Path, split: str) -> int | None:
    """Hold ``out`` for this export (a shared lock: exports of other splits may run beside it).

    When no other export is running there, first tidy up after killed ones: remove their staging
    directories (``.tmp-export-*``), and put back the old ``split`` that :func:`replace_dir` had moved
    aside (``.old-SPLIT``) if it was killed before the new one took its place, else remove that copy.
    """
    try:
        lock = lock_dir(out)
    except BlockingIOError:  # another export is running (its staging directory is live), or cleaning up
        try:
            return lock_dir(out, shared=True, wait_s=CLAIM_WAIT_S)
        except BlockingIOError:  # a command that holds it whole (generate, a trance export)
            raise DatasetDirError(f"{out}: {BUSY}") from None
    for stale in out.glob(STAGING_PREFIX + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    old, current = out / f".old-{split}", out / split
    if old.is_dir() and not old.is_symlink():
        if current.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, current)
    share_lock(lock)  # now others may start
    return lock


def _build_table(
    fmt: str, env_id: str, start: int, n: int, seed: int, split: str, env_kwargs: dict, progress: bool, out: Path,
    with_images: bool, solver: str | None = None,
) -> Path:  # fmt: skip
    from datasets import Dataset

    with datasets_quiet(), tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=out) as tmp:
        dataset = Dataset.from_generator(
            _shaped_rows,
            features=_features(fmt, with_images, env_id == INTERACTIVE_ID, demonstrations=solver is not None),
            gen_kwargs={"fmt": fmt, "env_id": env_id, "start": start, "n": n, "seed": seed, "split": split,
                        "env_kwargs": env_kwargs, "progress": progress, "solver": solver},  # fmt: skip
            cache_dir=str(Path(tmp) / "cache"),
        )
        if fmt == "hf":
            staged = Path(tmp) / split
            dataset.save_to_disk(str(staged))
            target = replace_dir(staged, out / split)
            splits = sorted({split, *_hf_splits(out)})
            atomic_write_text(out / "dataset_dict.json", json.dumps({"splits": splits}) + "\n")
        else:
            staged = Path(tmp) / f"{split}.parquet"
            dataset.to_parquet(str(staged))
            target = out / f"{split}.parquet"
            os.replace(staged, target)
        del dataset
    return target


def _hf_splits(out: Path) -> list[str]:
    listed = out / "dataset_dict.json"
    found = json.loads(listed.read_text())["splits"] if listed.is_file() else []
    return [s for s in found if (out / s / "dataset_info.json").is_file()]


def _export_trance(
    env_id: str, seed: int, start: int, n: int, out: Path, env_kwargs: dict, progress: bool,
    ray: RayOptions | None = None,
) -> Path:  # fmt: skip
    manifest = {"kind": "export", "tvr_gym": __version__, "env": env_id, "seed": seed, "env_kwargs": env_kwargs}
    writer = DatasetWriter.open(out, json.loads(json.dumps(manifest, default=list)))
    todo = [i for i in range(start, start + n) if i not in writer.done]
    if ray is not None:
        payload = partial(_trance_range_task, writer.out, env_id, seed, env_kwargs)
        writer.record_ranges(_export_trance_range, todo, payload, ray, f"exporting {env_id}", progress)
        return out
    rows = _progress(export_rows(env_id, todo, seed, **env_kwargs), len(todo), f"exporting {env_id}", progress)
    writer.record_all(_trance_line(writer.out, row) for row in rows)
    return out


def _trance_line(out: Path, row: ExportRow) -> str:
    """Write one exported row's observed images as a TRANCE sample; its ``data.jsonl`` line."""
    problem = replace(row.problem_object, idx=row.index, final_view=row.final_view)
    images = {("initial", "center"): row.initial, ("final", row.final_view): row.final}
    return write_sample(out, problem, images)


def _trance_range_task(out: Path, env_id: str, seed: int, env_kwargs: dict, indices: list[int]) -> tuple:
    return out, env_id, seed, indices, env_kwargs


def _export_trance_range(task: tuple[Path, str, int, list[int], dict]) -> list[str]:
    """One Ray task of a trance export: the rows of one index range, written as TRANCE samples."""
    out, env_id, seed, indices, env_kwargs = task
    return [_trance_line(out, row) for row in export_rows(env_id, indices, seed, **env_kwargs)]
