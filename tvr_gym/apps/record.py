"""``tvr-gym record``: play N seeded episodes with an agent and write each as a GIF (and an MP4).

An episode is played as ``tvr-gym eval`` plays it (:func:`tvr_gym.agents.evaluate.play_batch`; episode ``i``
uses ``seed + i``), in an environment made with ``render_mode="rgb_array_list"``, so its frames are the
environment's own ``render()`` frames: one after ``reset`` and one after each step
(:mod:`tvr_gym.envs.frames`). Each episode becomes ``OUT/episode-00000.gif`` (PIL), and ``.mp4`` where
``imageio`` and ``imageio-ffmpeg`` are installed. Files are written atomically. See ``docs/record.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tvr_gym.agents import AGENT_NAMES, make_agent
from tvr_gym.agents.evaluate import (
    agent_env_kwargs,
    check_eval_env,
    check_interactive_agent,
    make_envs,
    play_batch,
    progress_bar,
)
from tvr_gym.apps.cliargs import add_env_options, check_creatable, env_kwargs
from tvr_gym.core.atomic import atomic_open
from tvr_gym.core.chat import DEFAULT_WINDOW, ImageBudget
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, check_int, is_number
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.envs.registration import ENV_IDS, INTERACTIVE_ID

__all__ = ["DEFAULT_FPS", "FORMATS", "add_record_parser", "check_record_args", "cmd_record", "record"]

FORMATS = ("gif", "mp4")
DEFAULT_FPS = 2 / 3
"""Frames per second: each frame is held 1.5 s, long enough to read its caption."""
LAST_HOLD = 3
"""The last frame of an episode (the truth and the metrics) is held this many frames' time."""
MP4_FPS = 10
"""The MP4's own frame rate: each frame is repeated to last as long as in the GIF (players handle 10 fps
better than a fraction of one)."""
MP4_HINT = "pip install -e '.[video]'"


def episode_path(out: str | os.PathLike[str], index: int, fmt: str) -> Path:
    """``OUT/episode-00000.gif``: the file of the ``index``-th episode recorded."""
    return Path(out) / f"episode-{index:05d}.{fmt}"


def mp4_available() -> bool:
    """Whether an MP4 encoder is installed (imageio with imageio-ffmpeg, which ships its own ffmpeg)."""
    return all(importlib.util.find_spec(name) is not None for name in ("imageio", "imageio_ffmpeg"))


def write_gif(frames: Sequence[np.ndarray], path: str | os.PathLike[str], fps: float = DEFAULT_FPS) -> Path:
    """Write ``frames`` as a looping GIF (atomically): each held ``1 / fps`` s, the last :data:`LAST_HOLD` times
    as long."""
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    hold = round(1000 / fps)
    durations = [hold] * (len(images) - 1) + [hold * LAST_HOLD]
    with atomic_open(path, "wb") as fh:
        images[0].save(
            fh, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=True
        )
    return Path(path)


def write_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike[str], fps: float = DEFAULT_FPS) -> Path:
    """Write ``frames`` as an H.264 MP4 (atomically), each held as long as in :func:`write_gif`."""
    import imageio.v2 as imageio

    repeat = max(1, round(MP4_FPS / fps))
    with tempfile.TemporaryDirectory(prefix="tvr-gym-record-") as tmp:
        encoded = Path(tmp) / "episode.mp4"  # ffmpeg writes to a path; the finished file is copied atomically
        writer = imageio.get_writer(encoded, fps=MP4_FPS, codec="libx264", macro_block_size=2, quality=7)
        try:
            for k, frame in enumerate(frames):
                for _ in range(repeat * (LAST_HOLD if k == len(frames) - 1 else 1)):
                    writer.append_data(np.ascontiguousarray(frame))
        finally:
            writer.close()
        with encoded.open("rb") as src, atomic_open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return Path(path)


def check_record_args(
    env_id: str, episodes: int, seed: int, fps: float, env_kwargs: Mapping[str, Any] | None,
    formats: Sequence[str], window: int = DEFAULT_WINDOW, max_images: int | None = None, flags: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Check what :func:`record` is given, before an agent is made or a file written; the environment keywords
    it records with (``render_size`` the default 320x240 unless given). ``ValueError`` names a bad one (by its
    command-line flag with ``flags``)."""

    def name(argument: str) -> str:
        return "--" + argument.replace("_", "-") if flags else argument

    check_eval_env(env_id)
    check_int(name("episodes"), episodes, 1)
    check_int(name("seed"), seed, 0)
    if not is_number(fps) or not 0 < fps <= 60:
        raise ValueError(f"{name('fps')}: expected a number in (0, 60], got {fps!r}")
    bad = [f for f in formats if f not in FORMATS] if not isinstance(formats, str) else [formats]
    if bad or not formats:
        raise ValueError(f"{name('formats')}: expected some of {', '.join(FORMATS)}, got {formats!r}")
    if "gif" not in formats and not mp4_available():
        raise ValueError(f"{name('formats')}: no MP4 encoder is installed ({MP4_HINT}); add gif")
    check_int(name("window"), window, 0)
    if max_images is not None:
        check_int(name("max_images"), max_images, 2)
    kwargs = dict(env_kwargs or {})
    if "render_mode" in kwargs:
        raise ValueError("env_kwargs: render_mode is the recorder's (rgb_array_list)")
    kwargs.setdefault("render_size", DEFAULT_RENDER_SIZE)
    check_env_kwargs(env_id, **kwargs)
    return kwargs


def record(
    agent_spec: str | Any,
    env_id: str,
    episodes: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    fps: float = DEFAULT_FPS,
    env_kwargs: Mapping[str, Any] | None = None,
    formats: Sequence[str] = FORMATS,
    progress: bool = False,
    window: int = DEFAULT_WINDOW,
    max_images: int | None = None,
) -> list[Path]:
    """Play ``episodes`` episodes of ``env_id`` (episode ``i`` is ``reset(seed=seed + i)``) and write each one's
    frames to ``out``: ``episode-00000.gif`` and so on, and ``.mp4`` files where an encoder is installed
    (:func:`mp4_available`; else a note says so, once). Returns the paths written.

    ``agent_spec`` is a spec of :func:`tvr_gym.agents.make_agent` (``random``, ``oracle``, ``greedy``,
    ``ppo:PATH``, ``mllm:PATH``, ``openai:MODEL@URL``) or an agent. ``window`` and ``max_images`` are
    ``tvr-gym eval``'s, for chat agents on ``TVR-Interactive-v0``. Every argument is checked before the agent is
    made, and ``out`` is created only when the first file is written.
    """
    kwargs = check_record_args(env_id, episodes, seed, fps, env_kwargs, formats, window, max_images)
    interactive = env_id == INTERACTIVE_ID
    if isinstance(agent_spec, str):
        agent = make_agent(agent_spec, seed=seed, obs_mode=kwargs.get("obs_mode"), env_id=env_id)
    else:
        agent = agent_spec
    check_interactive_agent(agent, interactive)
    kwargs = {**agent_env_kwargs(agent, kwargs), "render_mode": "rgb_array_list"}
    check_env_kwargs(env_id, **kwargs)
    formats = [f for f in FORMATS if f in formats]
    if "mp4" in formats and not mp4_available():
        print(f"record: no MP4 encoder is installed ({MP4_HINT}); writing GIFs only", file=sys.stderr)
        formats.remove("mp4")
    name = getattr(agent, "name", agent_spec if isinstance(agent_spec, str) else type(agent).__name__)
    written: list[Path] = []
    budget = ImageBudget(max_images)
    (env,) = make_envs(agent, env_id, kwargs, 1)
    bar = progress_bar(progress, episodes, f"recording {name} on {env_id}")
    try:
        for index in range(episodes):
            play_batch(agent, [env], [seed + index], interactive, window, budget)
            frames = env.unwrapped.render()  # the SB3 view resets the environment itself, past gym.make's wrappers
            for fmt in formats:
                write = write_gif if fmt == "gif" else write_mp4
                written.append(write(frames, episode_path(out, index, fmt), fps))
            if bar is not None:
                bar[0].advance(bar[1])
    finally:
        if bar is not None:
            bar[0].stop()
        env.close()
    return written


# ---------------------------------------------------------------------------- command line


def cmd_record(args: argparse.Namespace) -> int:
    """``tvr-gym record``: every argument checked before the agent is made or OUT created."""
    kwargs = env_kwargs(args)
    check_record_args(args.env, args.episodes, args.seed, args.fps, kwargs, args.formats, args.window,
                      args.max_images, flags=True)  # fmt: skip
    default_name = f"{args.agent.replace(':', '_').replace('/', '_')}-{args.env}"
    out = check_creatable(Path(args.out) if args.out else Path("out") / "record" / default_name, "--out")
    args.on_interrupt = f"the finished episodes are kept in {out}"
    written = record(
        args.agent, args.env, args.episodes, out, seed=args.seed, fps=args.fps, env_kwargs=kwargs,
        formats=args.formats, progress=not args.quiet, window=args.window, max_images=args.max_images,
    )  # fmt: skip
    kinds = ", ".join(sorted({p.suffix.lstrip(".").upper() for p in written}))
    print(f"wrote {args.episodes} episodes ({kinds}) to {out}")
    return 0


def add_record_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``record`` to ``tvr-gym``'s subcommands (``sub``: the parser's ``add_subparsers()``)."""
    p = sub.add_parser("record", help="play N seeded episodes with an agent; write each as a GIF (and MP4)")
    p.add_argument("--agent", default="random", help=" | ".join(AGENT_NAMES))
    p.add_argument("--env", default="TVR-CrossView-v0", help=", ".join([*ENV_IDS, INTERACTIVE_ID]))
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i (as eval's)")
    p.add_argument("--out", help="directory for episode-00000.gif, ... (default out/record/AGENT-ENV)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help=f"frames per second (default {DEFAULT_FPS:.2f}: 1.5 s a frame; the last is held "
                   f"{LAST_HOLD}x as long)")  # fmt: skip
    p.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                   help=f"default gif mp4 (mp4 where an encoder is installed: {MP4_HINT})")  # fmt: skip
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=f"{INTERACTIVE_ID}, chat agents: replies "
                   "shown with their images")  # fmt: skip
    p.add_argument("--max-images", type=int, metavar="N", help=f"{INTERACTIVE_ID}, chat agents: images a chat may "
                   "hold")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_env_options(p)
    p.set_defaults(func=cmd_record)
    return p

