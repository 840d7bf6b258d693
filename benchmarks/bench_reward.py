"""Reward evaluations per second (parse included) for 4-item answers, vs ``json.loads`` of the same items.

Run pinned to one core::

    taskset -c 0 .venv/bin/python -m benchmarks.bench_reward --out benchmarks/results/reward.md

Answers are 4-item answers on 4-step TRANCE problems (the official fixture when present, otherwise
random scenes), a mix of correct and wrong items. The reference is ``json.loads`` of a JSON list holding
the same 4 item strings, timed in the same run; the ratio is reward rate / json rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import cpu_model, report
from tvr_gym.core.answer import format_answer, format_item, parse_answer
from tvr_gym.core.reward import sparse_reward, star_reward, state_reward
from tvr_gym.core.scene import SceneObject, State, overlaps
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem, load_trance
from tvr_gym.core.transform import PAIRS, Transformation, replay, simulate

FIXTURE = Path(os.environ.get("TVR_GYM_TRANCE_FIXTURE", Path(__file__).resolve().parents[2] / "shared" / "trance"))
GOAL_STAR = 50_000


def _random_problem(rng: random.Random) -> Problem:
    lim = SPEC.grid_limit
    attrs = [a for a in SPEC.attributes if a in SPEC.values]
    objs: list[SceneObject] = []
    while len(objs) < SPEC.n_objects:
        o = SceneObject(*(rng.choice(SPEC.values[a]) for a in attrs), position=(rng.randint(-lim, lim),) * 2)
        if not any(overlaps(o, p) for p in objs):
            objs.append(o)
    state = initial = State(tuple(objs))
    steps: list[Transformation] = []
    while len(steps) < 4:
        obj = rng.randrange(SPEC.n_objects)
        attr, value = rng.choice([p for p in PAIRS if p[0] != "position"])
        if getattr(state[obj], attr) == value or simulate(state, [(obj, attr, value)]).error_overlap:
            continue
        steps.append(Transformation(obj, attr, value))
        state = replay(state, [steps[-1]])
    return Problem(0, initial, state, steps)


def _problems(n: int, rng: random.Random) -> tuple[list[Problem], str]:
    if (FIXTURE / "data.jsonl").is_file():
        found = [p for p in load_trance(FIXTURE) if p.n_steps == 4]
        if found:
            return [found[i % len(found)] for i in range(n)], f"TRANCE fixture ({len(found)} 4-step problems)"
    return [_random_problem(rng) for _ in range(n)], "random scenes"


def _answers(problems: list[Problem], rng: random.Random) -> list[list[tuple]]:
    """Per problem, 4 items: each kept true with probability 1/2, else replaced by a random triplet."""
    out = []
    for p in problems:
        items = []
        for t in p.transformations:
            if rng.random() < 0.5:
                items.append((t.obj_idx, t.attr, t.value))
            else:
                attr, value = rng.choice(PAIRS)
                items.append((rng.randrange(SPEC.n_objects), attr, value))
        out.append(items)
    return out


def _rates(cases: dict[str, Callable[[int], object]], n: int, repeats: int) -> dict[str, float]:
    """Best rate of each case, in this thread's CPU time.

    CPU time leaves out the time slices other processes take from the shared core, which would
    otherwise penalise long passes more than short ones. Rounds interleave the cases.
    """
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.thread_time()
            for i in range(n):
                fn(i)
            best[name] = min(best[name], time.thread_time() - t0)
    return {name: n / t for name, t in best.items()}


def _machine() -> str:
    model = cpu_model()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return f"{os.cpu_count()} cores (nproc), pinned to {affinity}; {model}; no GPU; Python {platform.python_version()}"


def run(n: int = 2000, repeats: int = 7, seed: int = 0) -> dict:
    rng = random.Random(seed)
    problems, source = _problems(n, rng)
    items = _answers(problems, rng)
    canonical = [format_answer(a, think="The red cube turned cyan.") for a in items]
    tolerant = [
        "<think>x</think><answer>" + "\n".join(f"({format_item(s).replace('.', ', ')})" for s in a) + "</answer>"
        for a in items
    ]
    as_json = [json.dumps([format_item(s) for s in a]) for a in items]

    cases: dict[str, Callable[[int], object]] = {
        "json.loads (reference)": lambda i: json.loads(as_json[i]),
        "parse_answer": lambda i: parse_answer(canonical[i]),
        "star_reward": lambda i: star_reward(canonical[i], problems[i]),
        "state_reward": lambda i: state_reward(canonical[i], problems[i]),
        "sparse_reward": lambda i: sparse_reward(canonical[i], problems[i]),
        "star_reward, tolerant tuple form": lambda i: star_reward(tolerant[i], problems[i]),
    }
    rates = _rates(cases, n, repeats)
    json_rate = rates["json.loads (reference)"]
    rows = list(rates.items())
    return {"source": source, "n": n, "repeats": repeats, "json_rate": json_rate, "rows": rows}


def to_markdown(result: dict, command: str) -> str:
    star = dict(result["rows"])["star_reward"]
    lines = [
        "## Rewards (answer parse + reward), one core",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {_machine()}",
        f"- Load average at the end of the run: {os.getloadavg()[0]:.1f} (other jobs share the machine)",
        f"- Workload: {result['n']} 4-item answers on 4-step problems from the {result['source']}, about half of",
        "  the items correct; best of "
        f"{result['repeats']} interleaved passes. Reference: `json.loads` of a JSON list of the same 4 item strings.",
        "",
        "| what | evaluations/s | ratio to json.loads |",
        "|---|---:|---:|",
    ]
    for name, rate in result["rows"]:
        lines.append(f"| {name} | {rate:,.0f} | {rate / result['json_rate']:.3f} |")
    verdict = "met" if star >= GOAL_STAR else "NOT met"
    lines += [
        "",
        f"Goal ≥ {GOAL_STAR:,}/s for star_reward: {verdict} ({star:,.0f}/s).",
        "",
        "Rates are in thread CPU time (`time.thread_time`), best of several interleaved passes, so time slices",
        "taken by other processes on the shared core do not count; cache pressure from them still does, and",
        "the ratio to json.loads is the comparable figure.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="answers per pass")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the markdown fragment here")
    args = parser.parse_args()
    result = run(args.n, args.repeats)
    command = "taskset -c 0 .venv/bin/python -m benchmarks.bench_reward" + (f" --out {args.out}" if args.out else "")
    report(to_markdown(result, command), args.out)


if __name__ == "__main__":
    main()
