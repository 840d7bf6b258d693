"""The ``tvr-gym`` command line: demo, eval, show, generate, merge, export, train, make-tiny-model and bench.

Every subcommand speaks one vocabulary (:data:`tvr_gym.apps.cliargs.VOCABULARY`: ``--out``, ``--size W H``,
``--obs-mode``, ``--quiet``, ...), and every environment keyword comes from one helper
(:func:`tvr_gym.apps.cliargs.add_env_options`). The trainers (:mod:`tvr_gym.apps.train`) import torch,
so they are loaded only for ``train`` and ``make-tiny-model``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tvr_gym.agents import AGENT_NAMES, make_agent
from tvr_gym.agents.evaluate import evaluate
from tvr_gym.apps.cliargs import add_env_options, env_kwargs
from tvr_gym.apps.demo import run_demo
from tvr_gym.apps.show import show_problem
from tvr_gym.core.atomic import check_writable
from tvr_gym.core.metrics import format_table
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, SETTINGS, check_int
from tvr_gym.core.reference import comparison_table
from tvr_gym.core.trance import load_trance
from tvr_gym.data.dataset import generate_dataset, merge_datasets
from tvr_gym.data.export import FORMATS, export
from tvr_gym.envs.registration import ENV_IDS, check_env_id
from tvr_gym.problems.generator import generate
from tvr_gym.render import RENDERERS

TRAIN_HINT = "install the training extras: pip install -e '.[train]'"


# ---------------------------------------------------------------------------- commands


def cmd_eval(args: argparse.Namespace) -> int:
    check_env_id(args.env)
    default_name = f"{args.agent.replace(':', '_').replace('/', '_')}-{args.env}"
    out = check_writable(Path(args.out) if args.out else Path("out") / "eval" / default_name)
    if args.max_tokens is not None:
        check_int("--max-tokens", args.max_tokens, 1)  # before a model loads or a server is asked
    agent = make_agent(args.agent, seed=args.seed, obs_mode=args.obs_mode)
    result = evaluate(
        agent, args.env, args.episodes, seed=args.seed, env_kwargs=env_kwargs(args),
        progress=not args.quiet, batch_size=args.batch_size, out=out, resume=args.resume, max_tokens=args.max_tokens,
    )  # fmt: skip
    print(format_table(result.summary))
    print(comparison_table(result.summary, ENV_IDS.get(args.env), name=args.agent))
    print(f"wrote {out / 'summary.json'} and {out / 'episodes.jsonl'} ({len(result.records)} episodes)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
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
    made, total = generate_dataset(
        args.out, args.setting, args.seed, args.n, start=args.start, size=tuple(args.size), renderer=args.renderer,
        workers=args.workers, progress=not args.quiet,
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
    target = export(
        args.format, args.env, args.n, args.out, seed=args.seed, start=args.start, split=args.split,
        progress=not args.quiet, **env_kwargs(args),
    )  # fmt: skip
    print(f"wrote {args.n} episodes of {args.env} as {args.format} to {target}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(
        out_dir=Path(args.out), episodes=args.episodes, seed=args.seed, renderer=args.renderer,
        size=tuple(args.size), progress=not args.quiet,
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
    p.add_argument("--quiet", **quiet)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="run an agent for N seeded episodes; print and save the TVR metrics")
    p.add_argument("--agent", default="random", help=" | ".join(AGENT_NAMES))
    p.add_argument("--env", default="TVR-CrossView-v0", help=ids)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--batch-size", type=int, default=1, help="episodes answered together (concurrent for openai:)")
    p.add_argument("--out", help="directory for summary.json and episodes.jsonl (default out/eval/AGENT-ENV)")
    p.add_argument("--resume", action="store_true", help="skip the episodes already in OUT/episodes.jsonl")
    p.add_argument(
        "--max-tokens", type=int, metavar="N",
        help="cap on the tokens generated per answer, for mllm: and openai: agents (N >= 1; default: the agent's "
        "own, 1024 for openai:, the checkpoint's max_new_tokens or 128 for mllm:)",
    )  # fmt: skip
    p.add_argument("--quiet", **quiet)
    add_env_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("show", help="draw one problem (initial, final, answer) as a PNG")
    p.add_argument("--setting", default="crossview", choices=SETTINGS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=int, default=0, help="the generated problem's index, or the sample idx of --trance")
    p.add_argument("--trance", help="a TRANCE-format directory to draw a sample of")
    p.add_argument("--answer", help="an answer to draw beside the truth")
    p.add_argument("--renderer", default="auto", choices=RENDERERS)
    p.add_argument("--size", **size)
    p.add_argument("--out", required=True, help="PNG path")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("generate", help="write a TRANCE-format dataset (data.jsonl + image/); rerun to resume")
    p.add_argument("--setting", default="crossview", choices=SETTINGS)
    p.add_argument("--n", type=int, required=True, help="number of problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first index (shards: disjoint --start/--n ranges)")
    p.add_argument("--out", required=True)
    p.add_argument("--renderer", default="auto", choices=RENDERERS)
    p.add_argument("--size", **size)
    p.add_argument("--workers", type=int, default=1, help="processes that generate and render in parallel")
    p.add_argument("--quiet", **quiet)
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
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", **quiet)
    add_env_options(p)
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_trainers=_needs_trainers(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
        print(f"tvr-gym {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tvr-gym {args.command}: interrupted; finished work is kept (rerun the same command to resume)",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
