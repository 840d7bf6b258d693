"""Scoring throughput in the trainers' call conventions, against ``star_reward`` called directly, same run.

    taskset -c 0 .venv/bin/python -m benchmarks.bench_integrations [--seconds 2] [--out FILE.md]

Each completion is scored against the problem as JSON (what an export row holds), so the adapters pay
for the cached ground-truth lookup and, when they log it, TVR's Acc; the reference gets the parsed
``Problem`` object and computes only the reward. Answer mixes on 256 Event problems: the true
answers (the recorded sequence: its Acc is simulated once per problem), the same steps in reverse
order (simulated every time), random-agent guesses (most rejected without simulation), and half
true, half random.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import gymnasium as gym

import tvr_gym  # noqa: F401  (registers the environments)
from benchmarks import report, run_line
from tvr_gym.agents.baselines import RandomAgent
from tvr_gym.core.answer import format_answer, parse_answer
from tvr_gym.core.reward import star_reward
from tvr_gym.integrations import compute_score, easyr1_compute_score, problem_from_json, trl_reward


def rows(n: int) -> list[tuple[str, str, str]]:
    """(true answer, random answer, problem JSON) of ``n`` Event episodes."""
    env = gym.make("TVR-Event-v0", obs_mode="text", render_size=(32, 24))
    guesser = RandomAgent(seed=0)
    out = []
    for i in range(n):
        obs, info = env.reset(seed=0, options={"index": i})
        out.append((info["truth"], guesser.act(obs), json.dumps(info["problem"])))
    return out


def reverse(answer: str) -> str:
    """The answer's items in reverse order: often still correct, but never the recorded sequence itself."""
    return format_answer(parse_answer(answer).steps[::-1])


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Answers per second of ``fn`` (which scores a batch and returns its size), over ``seconds``."""
    fn()  # warm the caches: every ground truth is parsed once, as in training
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def measure(pairs: list[tuple[str, str]], seconds: float) -> dict[str, float]:
    """Answers/s of each scorer on (answer, problem JSON) pairs."""
    texts, truths = [t for t, _ in pairs], [p for _, p in pairs]
    objects = [problem_from_json(p) for p in truths]
    easy_inputs = [{"response": t, "response_length": len(t), "ground_truth": p} for t, p in pairs]
    trl = trl_reward("star")

    def direct() -> int:
        return sum(1 for t, p in zip(texts, objects) if star_reward(t, p))

    def in_trl() -> int:
        return len(trl(texts, truths, log_metric=lambda k, v: None))

    def in_verl() -> int:
        return sum(1 for t, p in pairs if compute_score("tvr/event", t, p))

    def in_easyr1() -> int:
        return len(easyr1_compute_score(easy_inputs))

    rates = {
        "star_reward (direct, Problem objects)": rate(direct, seconds),
        "trl_reward (+ terms and Acc logged)": rate(in_trl, seconds),
        "verl compute_score (+ terms and Acc)": rate(in_verl, seconds),
        "EasyR1 batch compute_score": rate(in_easyr1, seconds),
    }
    print({k: round(v) for k, v in rates.items()}, flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--out", default=None, help="also write a markdown table here")
    args = parser.parse_args()
    data = rows(args.n)
    mixes = {
        "true answers": [(t, p) for t, _, p in data],
        "true steps in reverse (simulated)": [(reverse(t), p) for t, _, p in data],
        "random guesses": [(r, p) for _, r, p in data],
        "half and half": [(t if i % 2 else r, p) for i, (t, r, p) in enumerate(data)],
    }
    results = {mix: measure(pairs, args.seconds) for mix, pairs in mixes.items()}
    columns = list(next(iter(results.values())))
    lines = [
        "# Scoring in the trainers' call conventions",
        "",
        run_line(f"taskset -c N .venv/bin/python -m benchmarks.bench_integrations --seconds {args.seconds:g}"),
        "",
        "Answers per second; the ratio is against `star_reward` called directly on the same answers.",
        "",
        "| answers | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for mix, rates in results.items():
        base = rates["star_reward (direct, Problem objects)"]
        lines.append(f"| {mix} | " + " | ".join(f"{v:,.0f} ({v / base:.2f}×)" for v in rates.values()) + " |")
    report(lines, args.out)


if __name__ == "__main__":
    main()
