"""The ``tvr-gym`` command line: demo, eval, record, play, show, generate, merge, export, train, make-tiny-model
and bench.

Every subcommand speaks one vocabulary (:data:`tvr_gym.apps.cliargs.VOCABULARY`: ``--out``, ``--size W H``,
``--obs-mode``, ``--quiet``, ...), and every environment keyword comes from one helper
(:func:`tvr_gym.apps.cliargs.add_env_options`). The trainers (:mod:`tvr_gym.apps.train`) import torch,
so they are loaded only for ``train`` and ``make-tiny-model``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tvr_gym.agents import AGENT_NAMES, make_agent
from tvr_gym.agents.evaluate import EPISODES_FILE, check_eval_env, evaluate
from tvr_gym.apps.cliargs import add_engine_options, add_env_options, check_creatable, env_kwargs, ray_options
from tvr_gym.apps.demo import run_demo
from tvr_gym.apps.play import add_play_parser
from tvr_gym.apps.record import add_record_parser
from tvr_gym.apps.show import check_image_path, show_problem
from tvr_gym.core.atomic import is_url
from tvr_gym.core.chat import DEFAULT_WINDOW
from tvr_gym.core.metrics import format_table, interactive_table
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, SETTINGS, check_int, check_size
from tvr_gym.core.reference import comparison_table
from tvr_gym.core.trance import load_trance
from tvr_gym.data.cluster import RangeFailedError
from tvr_gym.data.dataset import generate_dataset, merge_datasets
from tvr_gym.data.export import FORMATS, export
from tvr_gym.data.shards import check_url
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.envs.interactive_sb3 import SOLVERS
from tvr_gym.envs.registration import ENV_IDS, check_env_id
from tvr_gym.problems.generator import generate
from tvr_gym.render import RENDERERS

TRAIN_HINT = "install the training extras: pip install -e '.[train]'"
MAX_ROWS = 1_000_000
"""The most problems (``generate``) or rows (``export``) one command makes: what a run keeps in memory grows
with it. Larger datasets are made as ``--start/--n`` shards (and joined with ``merge``)."""
RESUME_NOTE = "rerun the same command to resume"


# ---------------------------------------------------------------------------- commands


def agent_id(spec: str) -> str:
    """What ``eval.json`` records of an agent spec: ``mllm:`` and ``ppo:`` paths made absolute, so the same
    checkpoint is the same agent from any directory and two checkpoints are never the same agent."""
    kind, colon, path = spec.partition(":")
    return f"{kind}:{Path(path).resolve()}" if colon and kind in ("mllm", "ppo") and path else spec


def cmd_eval(args: argparse.Namespace) -> int:
    # every argument is checked before a model loads, a server is asked or OUT is created
    check_eval_env(args.env)
    check_int("--seed", args.seed, 0)
    check_int("--episodes", args.episodes, 0)
    check_int("--batch-size", args.batch_size, 1)
    check_int("--window", args.window, 0)
    if args.max_images is not None:
        check_int("--max-images", args.max_images, 2)
    if args.max_tokens is not None:
        check_int("--max-tokens", args.max_tokens, 1)
    kwargs = env_kwargs(args)
    layout_needs_agent = "prompt_layout" in kwargs and "obs_mode" not in kwargs  # the agent may bring its obs_mode
    check_env_kwargs(args.env, **{k: v for k, v in kwargs.items() if k != "prompt_layout" or not layout_needs_agent})
    default_name = f"{args.agent.replace(':', '_').replace('/', '_')}-{args.env}"
    out = check_creatable(Path(args.out) if args.out else Path("out") / "eval" / default_name, "--out")
    args.on_interrupt = f"the finished episodes are kept in {out / EPISODES_FILE}: {RESUME_NOTE}"
    agent = make_agent(args.agent, seed=args.seed, obs_mode=args.obs_mode, env_id=args.env)
    result = evaluate(
        agent, args.env, args.episodes, seed=args.seed, env_kwargs=kwargs, progress=not args.quiet,
        batch_size=args.batch_size, out=out, overwrite=args.overwrite, max_tokens=args.max_tokens,
        name=agent_id(args.agent), window=args.window, max_images=args.max_images,
    )  # fmt: skip
    print(format_table(result.summary))
    if "interactive" in result.summary:  # multi-turn: the published single-shot results do not compare
        print(interactive_table(result.summary["interactive"]))
    else:
        print(comparison_table(result.summary, ENV_IDS.get(args.env), name=args.agent))
    print(f"wrote {out / 'summary.json'} ({len(result.records)} episodes) and {out / EPISODES_FILE}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    check_image_path(args.out)  # before a problem is made or drawn
    if args.trance:
        problem = next((p for p in load_trance(args.trance) if p.idx == args.index), None)
        if problem is None:
            raise ValueError(f"--index: no sample with idx {args.index} in {args.trance}")
    else:
        problem = generate(args.setting, args.seed, index=args.index)
    path = show_problem(problem, Path(args.out), renderer=args.renderer, size=tuple(args.size), answer=args.answer)
    print(f"wrote {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    check_int("--n", args.n, 0, MAX_ROWS)
    check_size(args.size, "--size")
    check_creatable(args.out, "--out")
    ray = ray_options(args)
    args.on_interrupt = f"the finished samples are kept in {args.out}: {RESUME_NOTE}"
    made, total = generate_dataset(
        args.out, args.setting, args.seed, args.n, start=args.start, size=tuple(args.size), renderer=args.renderer,
        workers=args.workers, progress=not args.quiet, engine=args.engine, ray=ray,
    )  # fmt: skip
    last = args.start + args.n - 1
    print(f"wrote {made} {args.setting} problems to {args.out} ({args.n - made} of indices {args.start}..{last} "
          f"were already there; {total} in the dataset)")  # fmt: skip
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    n = merge_datasets(args.shards, args.out, progress=not args.quiet)
    print(f"merged {len(args.shards)} datasets into {args.out}: {n} problems")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    check_env_id(args.env)
    check_int("--n", args.n, 0, MAX_ROWS)
    table = args.format != "trance"
    if table and is_url(args.out):
        check_url(args.out)  # an object store: the export writes parquet shards there
    else:
        check_creatable(args.out, "--out")
    ray = ray_options(args, rows_per_shard=table)  # --shard-size: rows per parquet shard, with either engine
    if ray is None and args.workers != 1:
        raise ValueError("--workers: only with --engine ray (an export runs in one process here)")
    sharded = table and (ray is not None or args.shard_size is not None or is_url(args.out))
    resumable = args.format == "trance" or sharded
    args.on_interrupt = (
        f"the finished samples are kept in {args.out}: {RESUME_NOTE}" if resumable
        else "nothing was exported (a split is written only when complete)"
    )  # fmt: skip
    target = export(
        args.format, args.env, args.n, args.out, seed=args.seed, start=args.start, split=args.split,
        progress=not args.quiet, demonstrations=args.demonstrations, engine=args.engine, ray=ray,
        shard_size=args.shard_size if table else None, **env_kwargs(args),
    )  # fmt: skip
    what = f"{args.demonstrations} demonstrations" if args.demonstrations else "episodes"
    print(f"wrote {args.n} {what} of {args.env} as {args.format} to {target}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.on_interrupt = f"the finished episodes are kept under {args.out}/<agent>/: {RESUME_NOTE}"
    run_demo(
        out_dir=Path(args.out), episodes=args.episodes, seed=args.seed, renderer=args.renderer,
        size=tuple(args.size), progress=not args.quiet, overwrite=args.overwrite,
    )  # fmt: skip
    return 0


def _benchmarks_dir() -> Path | None:
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "benchmarks" / "__init__.py").is_file():
            return root / "benchmarks"
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    bench_dir = _benchmarks_dir()
    if bench_dir is None:
        print("no benchmarks/ directory here: run `tvr-gym bench` from a source checkout", file=sys.stderr)
        return 2
    names = sorted(p.stem for p in bench_dir.glob("bench_*.py"))
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            raise ValueError(f"--only: unknown benchmark {unknown[0]!r}; valid: {', '.join(names)}")
        names = list(args.only)
    failed = []
    for name in names:
        print(f"== {name}", flush=True)
        if subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=bench_dir.parent):
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _unavailable(what: str, exc: BaseException):
    def run(args: argparse.Namespace) -> int:
        print(f"{what} is unavailable ({type(exc).__name__}: {exc}); {TRAIN_HINT}", file=sys.stderr)
        return 2

    return run


def _register_trainers(sub: Any, train_sub: Any) -> None:
    """``train grpo|ppo|trl-grpo|sft`` and ``make-tiny-model``; without torch, each says what to install."""
    try:
        from tvr_gym.apps.train import register  # torch, transformers, TRL and SB3
    except ImportError as exc:
        for name, target in (("make-tiny-model", sub), ("grpo", train_sub), ("ppo", train_sub)):
            target.add_parser(name, help=f"(unavailable) {name}").set_defaults(func=_unavailable(name, exc))
        return
    register(sub, train_sub)


# ---------------------------------------------------------------------------- parser


def build_parser(with_trainers: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvr-gym", description="Gymnasium environments for TVR/TRANCE.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ids = ", ".join(ENV_IDS)
    size = {"nargs": 2, "type": int, "default": list(DEFAULT_RENDER_SIZE), "metavar": ("W", "H"), "help": "image size"}
    quiet = {"action": "store_true", "help": "no progress bars"}

    p = sub.add_parser("demo", help="evaluate the baseline agents on CrossView and draw example episodes")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--renderer", default="auto", choices=RENDERERS)
    p.add_argument("--size", **size)
    p.add_argument("--overwrite", action="store_true", help="discard the evaluations OUT holds if they differ")
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="run an agent for N seeded episodes; print and save the TVR metrics")
    p.add_argument("--agent", default="random", help=" | ".join(AGENT_NAMES))
    p.add_argument("--env", default="TVR-CrossView-v0", help=ids)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--batch-size", type=int, default=1, help="episodes answered together (concurrent for openai:)")
    p.add_argument(
        "--out", help="directory for eval.json, episodes.jsonl and summary.json (default out/eval/AGENT-ENV); "
        "one holding this evaluation is continued",
    )  # fmt: skip
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true",
        help="continue the evaluation in OUT (the default: its finished episodes are never run again or lost)",
    )  # fmt: skip
    again.add_argument(
        "--overwrite", action="store_true", help="discard the episodes of another evaluation that OUT holds",
    )  # fmt: skip
    p.add_argument(
        "--max-tokens", type=int, metavar="N",
        help="cap on the tokens generated per answer, for mllm: and openai: agents (N >= 1; default: the agent's "
        "own, 1024 for openai:, the checkpoint's max_new_tokens or 128 for mllm:)",
    )  # fmt: skip
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="TVR-Interactive-v0, chat agents: replies "
                   "shown with their images (older ones keep their text)")  # fmt: skip
    p.add_argument(
        "--max-images", type=int, metavar="N", help="TVR-Interactive-v0, chat agents: images a chat may hold (a "
        "server's per-request limit, N >= 2); an episode ends before a turn that would pass it",
    )  # fmt: skip
    p.add_argument("--quiet", **quiet)
    add_env_options(p)
    p.set_defaults(func=cmd_eval)

    add_record_parser(sub)
    add_play_parser(sub)

    p = sub.add_parser("show", help="draw one problem (initial, final, answer) as a picture (PNG, JPEG, ...)")
    p.add_argument("--setting", default="crossview", choices=SETTINGS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=int, default=0, help="the generated problem's index, or the sample idx of --trance")
    p.add_argument("--trance", help="a TRANCE-format directory to draw a sample of")
    p.add_argument("--answer", help="an answer to draw beside the truth")
    p.add_argument("--renderer", default="auto", choices=RENDERERS)
    p.add_argument("--size", **size)
    p.add_argument("--out", required=True, help="picture path; its suffix names the format (.png, .jpg, .webp, ...)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("generate", help="write a TRANCE-format dataset (data.jsonl + image/); rerun to resume")
    p.add_argument("--setting", default="crossview", choices=SETTINGS)
    p.add_argument("--n", type=int, required=True, help="number of problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first index (shards: disjoint --start/--n ranges)")
    p.add_argument("--out", required=True)
    p.add_argument("--renderer", default="auto", choices=RENDERERS)
    p.add_argument("--size", **size)
    p.add_argument(
        "--workers", type=int, default=1, help="processes that generate and render in parallel (--engine ray: "
        "the CPUs of the local Ray instance)",
    )  # fmt: skip
    p.add_argument("--quiet", **quiet)
    add_engine_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("merge", help="join dataset directories (e.g. generate --start/--n shards) into one")
    p.add_argument("shards", nargs="+", help="dataset directories")
    p.add_argument("--out", required=True, help="a new directory")
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("export", help="write episodes for TRL (hf), verl, EasyR1, SkyRL or as TRANCE data")
    p.add_argument("--format", default="hf", choices=FORMATS, help=" | ".join(FORMATS) + " (default hf)")
    p.add_argument("--env", default="TVR-CrossView-v0", help=ids)
    p.add_argument("--n", type=int, required=True, help="number of rows")
    p.add_argument("--seed", type=int, default=0, help="row i is env.reset(seed=SEED, options={'index': i})")
    p.add_argument("--start", type=int, default=0, help="index of the first row (shards: disjoint --start/--n)")
    p.add_argument("--split", default="train", help="split name: OUT/SPLIT (hf) or OUT/SPLIT.parquet")
    p.add_argument(
        "--demonstrations", choices=SOLVERS, help="TVR-Interactive-v0: the solver's whole episodes as multi-turn "
        "SFT chats (hf for TRL, verl for its MultiTurnSFTDataset)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="a directory, or for table formats a URL fsspec knows (s3://bucket/x "
                   "with s3fs, file:///abs/path): parquet shards are written there")  # fmt: skip
    p.add_argument("--quiet", **quiet)
    p.add_argument("--workers", type=int, default=1, help="--engine ray: the CPUs of the local Ray instance")
    add_env_options(p)
    add_engine_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("train", help="train an agent (grpo, ppo, trl-grpo, sft)")
    train_sub = p.add_subparsers(dest="trainer", metavar="TRAINER")
    p.set_defaults(func=lambda args, _p=p: (_p.print_help(), 2)[1])
    if with_trainers:
        _register_trainers(sub, train_sub)

    p = sub.add_parser("bench", help="run the benchmark scripts in benchmarks/ and print their output")
    p.add_argument("--only", nargs="+", help="benchmark names (see --list)")
    p.add_argument("--list", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


def _needs_trainers(argv: Sequence[str]) -> bool:
    """Trainer modules (torch) are imported only for the commands that use them."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first in ("train", "make-tiny-model")


@contextmanager
def _terminate_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM stops a command as Ctrl-C does (a ``KeyboardInterrupt``), so finished work is kept the same way;
    yields the list the SIGTERM is noted in. Signal handlers belong to the main thread: elsewhere, nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_trainers=_needs_trainers(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with _terminate_as_interrupt() as received:
        try:
            return int(args.func(args) or 0)
        except (ValueError, FileNotFoundError, ConnectionError) as exc:
            print(f"tvr-gym {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except RangeFailedError as exc:  # a Ray task failed on every attempt; the finished ranges are kept
            print(f"tvr-gym {args.command}: error: {exc}; {getattr(args, 'on_interrupt', '')}", file=sys.stderr)
            return 1
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] == "tvr_gym":
                raise  # our own module missing is a bug, with its traceback
            hint = "" if "pip install" in str(exc) else "; install the extra that provides it (pip install -e '.[all]')"
            print(f"tvr-gym {args.command}: error: {exc}{hint}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:  # the note of the work that stopped (what it kept), else the command's
            signum = received[0] if received else getattr(exc, "signum", None) or signal.SIGINT
            note = getattr(exc, "note", None) or getattr(args, "on_interrupt", None)
            line = f"tvr-gym {args.command}: interrupted ({signal.Signals(signum).name})"
            print(line + (f"; {note}" if note else ""), file=sys.stderr)
            return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
