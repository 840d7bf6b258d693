"""Turns per second of ``TVR-Interactive-v0`` against the single-shot ``TVR-Event-v0`` in the same run.

An interactive episode plays its true steps, one turn each, then ``done``: ``n + 1`` turns and ``n + 2``
renders (the target, the first current image, one per applied step). Two ways of serving episodes
are timed, each for ``--seconds``, for both environments:

- fresh: every episode is new (new seed), rendered by ``gl`` (cache off);
- cached: 16 seeds again and again from the render cache (the G members of a GRPO group replay one
  scene).

The reference is the single-shot environment serving the same seeds (``reset`` + one ``step``).

It also times the SB3 action mask (``legal_mask``: every step's legality at once, which MaskablePPO asks
for at every turn) against the same 330 judgements made one by one with ``try_apply``.
The process pins itself to one core and sets ``LP_NUM_THREADS=1``::

    LP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.bench_interactive
"""

from __future__ import annotations

import os

os.environ.setdefault("LP_NUM_THREADS", "1")  # must precede Mesa's initialisation

import argparse  # noqa: E402
import itertools  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402

import tvr_gym  # noqa: E402, F401  (registers the ids)
from benchmarks import report, run_line  # noqa: E402
from tvr_gym.core.answer import format_item  # noqa: E402

SIZE = (320, 240)


def interactive_rate(env, seeds, seconds: float) -> tuple[float, float]:
    """(turns/s, episodes/s) playing each episode's true steps then ``done``."""
    turns = episodes = 0
    start = time.perf_counter()
    for seed in seeds:
        env.reset(seed=seed)
        for step in env.unwrapped.problem.transformations:
            env.step(format_item(step))
        env.step("done")
        turns += len(env.unwrapped.problem.transformations) + 1
        episodes += 1
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    return turns / elapsed, episodes / elapsed


def single_rate(env, seeds, seconds: float) -> tuple[float, float]:
    """(steps/s, episodes/s) of the single-shot environment: one step per episode."""
    episodes = 0
    start = time.perf_counter()
    for seed in seeds:
        _, info = env.reset(seed=seed)
        env.step(info["truth"])
        episodes += 1
        if time.perf_counter() - start >= seconds:
            break
    rate = episodes / (time.perf_counter() - start)
    return rate, rate


def mask_rates(seconds: float) -> tuple[float, float]:
    """(masks/s of ``legal_mask``, masks/s of one ``try_apply`` per step) on the initial states of Event problems."""
    from tvr_gym.core.transform import PAIRS, try_apply
    from tvr_gym.envs.interactive_sb3 import legal_mask, make_interactive_sb3_env

    env = make_interactive_sb3_env(setting="event", renderer="numpy")
    states = []
    for seed in range(64):
        env.reset(seed=seed)
        states.append(env.unwrapped.current)
    steps = [(i, *pair) for i in range(len(states[0].objects)) for pair in PAIRS]

    def rate(mask) -> float:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            mask(states[count % len(states)])
            count += 1
        return count / (time.perf_counter() - start)

    return rate(legal_mask), rate(lambda state: [try_apply(state, step).legal for step in steps])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = []
    for mode in ("fresh", "cached"):
        kwargs = {"render_size": SIZE, "renderer": "gl"} | ({"cache_size": 0} if mode == "fresh" else {})
        seeds = (lambda: itertools.count(10_000)) if mode == "fresh" else (lambda: itertools.cycle(range(16)))
        single = gym.make("TVR-Event-v0", **kwargs)
        interactive = gym.make("TVR-Interactive-v0", setting="event", **kwargs)
        if mode == "cached":  # fill the cache first
            interactive_rate(interactive, range(16), 1e9)
            single_rate(single, range(16), 1e9)
        s_steps, s_eps = single_rate(single, seeds(), args.seconds)
        i_turns, i_eps = interactive_rate(interactive, seeds(), args.seconds)
        rows.append((mode, i_turns, i_eps, s_eps, i_turns / s_steps))
        print(
            mode, f"interactive {i_turns:.1f} turns/s ({i_eps:.1f} episodes/s), single-shot {s_eps:.1f}/s", flush=True
        )
    arrays, one_by_one = mask_rates(args.seconds)
    print(f"masks: legal_mask {arrays:,.0f}/s, try_apply one by one {one_by_one:,.0f}/s", flush=True)
    report(
        [
            "# Interactive environment throughput",
            "",
            run_line(f"LP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m {__spec__.name} --seconds {args.seconds:g}"),
            "",
            "Event setting at 320x240, gl renderer. An interactive episode is its true steps then `done`; the "
            "reference is the single-shot TVR-Event-v0 on the same seeds (reset + one step).",
            "",
            "| mode | interactive turns/s | interactive episodes/s | single-shot episodes/s "
            "| turns per single-shot step |",
            "|---|---|---|---|---|",
            *(f"| {m} | {t:,.1f} | {e:,.1f} | {s:,.1f} | {r:.2f}× |" for m, t, e, s, r in rows),
            "",
            "| action mask (330 steps) | masks/s | ratio |",
            "|---|---|---|",
            f"| `legal_mask` (arrays) | {arrays:,.0f} | {arrays / one_by_one:.1f}× |",
            f"| `try_apply` one by one (reference) | {one_by_one:,.0f} | 1.0× |",
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
