"""The ``tvr-gym`` command line: demo, eval, generate, export, show, train and bench."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tvr_gym.atomic import check_writable
from tvr_gym.export import FORMATS
from tvr_gym.registration import ENV_IDS, check_env_id

TRAIN_HINT = "install the training extras: pip install -e '.[train]'"


# ---------------------------------------------------------------------------- helpers


def _size(values: Sequence[int]) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def size_wxh(text: str) -> tuple[int, int]:
    """argparse type for an image size written ``WxH`` (e.g. ``160x120``)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 160x120, got {text!r}") from None
    return (w, h)


def _progress(items: Iterable[Any], total: int, label: str, enabled: bool = True) -> Iterator[Any]:
    """Iterate with a rich progress bar (silent when disabled)."""
    from rich.progress import track

    yield from track(items, total=total, description=label, disable=not enabled, transient=False)


def _json_out(path: Path, payload: Any) -> None:
    from tvr_gym.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Environment keywords from the shared options (only those given)."""
    kw: dict[str, Any] = {}
    for name in ("renderer", "obs_mode", "reward", "source", "max_visible", "cache_dir"):
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = value
    if getattr(args, "size", None):
        kw["render_size"] = _size(args.size)
    if getattr(args, "final_views", None):
        kw["final_views"] = tuple(args.final_views.split(","))
    if getattr(args, "steps", None) is not None:
        kw["steps"] = args.steps
    return kw


def _add_env_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--renderer", help="auto | gl | numpy (default: auto)")
    p.add_argument("--size", nargs=2, type=int, metavar=("W", "H"), help="image size (default 320 240)")
    p.add_argument("--obs-mode", dest="obs_mode", help="image | text")
    p.add_argument("--reward", help="star | state | sparse (or a STAR ablation name)")
    p.add_argument("--final-views", dest="final_views", help="comma-separated views, e.g. left,right")
    p.add_argument("--source", help="'procedural' (default) or a TRANCE-format directory")
    p.add_argument("--max-visible", dest="max_visible", type=int, help="at most this many visible objects")
    p.add_argument("--steps", type=int, help="only episodes with this many transformations")
    p.add_argument("--cache-dir", dest="cache_dir", help="on-disk render cache")


# ---------------------------------------------------------------------------- commands


def cmd_eval(args: argparse.Namespace) -> int:
    check_env_id(args.env)
    from agents import make_agent
    from agents.evaluate import evaluate
    from tvr_gym.metrics import format_table

    default_name = f"{args.agent.replace(':', '_').replace('/', '_')}-{args.env}"
    out = check_writable(Path(args.out) if args.out else Path("out") / "eval" / default_name)
    agent = make_agent(args.agent, seed=args.seed, obs_mode=args.obs_mode)
    result = evaluate(
        agent, args.env, args.episodes, seed=args.seed, env_kwargs=_env_kwargs(args),
        progress=not args.quiet, batch_size=args.batch_size, out=out, resume=args.resume,
    )
    print(format_table(result.summary))
    _print_reference(result.summary, ENV_IDS.get(args.env), args.agent)
    print(f"wrote {out / 'summary.json'} and {out / 'episodes.jsonl'} ({len(result.records)} episodes)")
    return 0


def _print_reference(summary: dict[str, Any], setting: str | None, name: str) -> None:
    try:
        from tvr_gym.reference import comparison_table
    except ImportError:
        return
    print(comparison_table(summary, setting, name=name))


def _find_trance_problem(path: str, idx: int):
    from tvr_gym.trance import load_trance

    for problem in load_trance(path):
        if problem.idx == idx:
            return problem
    raise ValueError(f"--idx: no sample with idx {idx} in {path}")


def cmd_show(args: argparse.Namespace) -> int:
    from tvr_gym.show import show_problem

    if args.trance:
        problem = _find_trance_problem(args.trance, args.idx)
    else:
        from tvr_gym.generator import generate

        problem = generate(args.setting, args.seed, index=args.index)
    renderer = None
    if args.renderer:
        from tvr_gym.cache import shared_renderer

        renderer = shared_renderer(args.renderer, _size(args.size))
    path = show_problem(problem, Path(args.out), renderer=renderer, size=_size(args.size), answer=args.answer)
    print(f"wrote {path}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tvr_gym.dataset import generate_dataset

    made, total = generate_dataset(
        args.out, args.setting, args.seed, args.n, start=args.start, size=_size(args.size), renderer=args.renderer,
        workers=args.workers, progress=not args.quiet,
    )
    last = args.start + args.n - 1
    print(f"wrote {made} {args.setting} problems to {args.out} ({args.n - made} of indices {args.start}..{last} "
          f"were already there; {total} in the dataset)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from tvr_gym.dataset import merge_datasets

    n = merge_datasets(args.shards, args.out, progress=not args.quiet)
    print(f"merged {len(args.shards)} datasets into {args.out}: {n} problems")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tvr_gym.export import export

    check_env_id(args.env)
    target = export(
        args.format, args.env, args.n, args.out, seed=args.seed, start=args.start, split=args.split,
        progress=not args.quiet, **_env_kwargs(args),
    )
    print(f"wrote {args.n} episodes of {args.env} as {args.format} to {target}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tvr_gym.demo import run_demo

    run_demo(
        out_dir=Path(args.out), episodes=args.episodes, seed=args.seed, renderer=args.renderer,
        size=_size(args.size), progress=not args.quiet,
    )
    return 0


def _benchmarks_dir() -> Path | None:
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
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
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=bench_dir.parent)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _unavailable(what: str, exc: BaseException):
    missing = getattr(exc, "name", None) or ""
    hint = "this installation lacks that module" if missing.startswith("agents") else TRAIN_HINT

    def run(args: argparse.Namespace) -> int:
        print(f"{what} is unavailable ({type(exc).__name__}: {exc}); {hint}", file=sys.stderr)
        return 2

    return run


def _register_trainers(sub, train_sub) -> None:
    """Add ``train grpo``/``make-tiny-model`` (agents.mllm.cli) and ``train ppo`` (agents.ppo), guarded."""
    try:
        from agents.mllm.cli import register

        register(sub, train_sub)
    except Exception as exc:  # noqa: BLE001 - a missing module or torch must not break the CLI
        sub.add_parser("make-tiny-model", help="(unavailable) build the tiny MLLM").set_defaults(
            func=_unavailable("make-tiny-model", exc)
        )
        train_sub.add_parser("grpo", help="(unavailable) GRPO training").set_defaults(func=_unavailable("grpo", exc))
    try:
        from agents.ppo import register_cli

        register_cli(train_sub)
    except Exception as exc:  # noqa: BLE001
        train_sub.add_parser("ppo", help="(unavailable) PPO training").set_defaults(func=_unavailable("ppo", exc))


# ---------------------------------------------------------------------------- parser


def build_parser(with_trainers: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvr-gym", description="Gymnasium environments for TVR/TRANCE.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ids = ", ".join(ENV_IDS)

    p = sub.add_parser("demo", help="evaluate the baseline agents on CrossView and draw example episodes")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--renderer", default="auto")
    p.add_argument("--size", nargs=2, type=int, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="run an agent for N seeded episodes; print and save the TVR metrics")
    p.add_argument("--agent", default="random", help="random | oracle | noop | mllm:PATH | ppo:PATH | openai:MODEL@URL")
    p.add_argument("--env", default="TVR-CrossView-v0", help=ids)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1)
    p.add_argument("--out", help="directory for summary.json and episodes.jsonl (default out/eval/AGENT-ENV)")
    p.add_argument("--resume", action="store_true", help="skip the episodes already in OUT/episodes.jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_env_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("show", help="draw one problem (initial, final, answer) as a PNG")
    p.add_argument("--setting", default="crossview", choices=list(ENV_IDS.values()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--trance", help="a TRANCE-format directory (with --idx)")
    p.add_argument("--idx", type=int, default=0, help="sample idx in --trance")
    p.add_argument("--answer", help="an answer to draw beside the truth")
    p.add_argument("--renderer")
    p.add_argument("--size", nargs=2, type=int, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--out", required=True, help="PNG path")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("generate", help="write a TRANCE-format dataset (data.jsonl + image/); rerun to resume")
    p.add_argument("--setting", default="crossview", choices=list(ENV_IDS.values()))
    p.add_argument("--n", type=int, required=True, help="number of problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first index (shards: disjoint --start/--n ranges)")
    p.add_argument("--out", required=True)
    p.add_argument("--renderer", default="auto")
    p.add_argument("--size", nargs=2, type=int, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--workers", type=int, default=1, help="processes that generate and render in parallel")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("merge", help="join dataset directories (e.g. generate --start/--n shards) into one")
    p.add_argument("shards", nargs="+", help="dataset directories")
    p.add_argument("--out", required=True, help="a new directory")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("export", help="write episodes for TRL (hf), verl, EasyR1 or as TRANCE data")
    p.add_argument("--format", default="hf", choices=FORMATS, help="hf | verl | easyr1 | trance (default hf)")
    p.add_argument("--env", default="TVR-CrossView-v0", help=ids)
    p.add_argument("--n", type=int, required=True, help="number of rows")
    p.add_argument("--seed", type=int, default=0, help="row i is env.reset(seed=SEED, options={'index': i})")
    p.add_argument("--start", type=int, default=0, help="index of the first row (shards: disjoint --start/--n)")
    p.add_argument("--split", default="train", help="split name: OUT/SPLIT (hf) or OUT/SPLIT.parquet")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    _add_env_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("train", help="train an agent (grpo, ppo)")
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
