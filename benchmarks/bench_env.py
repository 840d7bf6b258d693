"""Episodes per second (reset + step) of ``TVR-CrossView-v0`` at 320x240, vs CartPole-v1 steps per second.

Three ways of serving an episode are timed, each for ``--seconds``:

- fresh: every episode is new (new seed) and rendered by the ``gl`` renderer (cache off);
- cached: a few seeds served again and again from the render cache (G copies of an episode, as in GRPO);
- trance: episodes read from a TRANCE-format directory (images decoded from PNG; cache off).

The reference is ``gymnasium.utils.performance.benchmark_step`` on ``CartPole-v1`` in the same run;
ratios are episodes/s divided by CartPole steps/s. The peak RSS of this process is reported too.
By default the process pins itself to one core and sets ``LP_NUM_THREADS=1`` (Mesa llvmpipe) before
any renderer loads, which equals::

    LP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.bench_env
"""

from __future__ import annotations

import os

os.environ.setdefault("LP_NUM_THREADS", "1")  # must precede Mesa's initialisation

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
from gymnasium.utils.performance import benchmark_step  # noqa: E402

import tvr_gym  # noqa: E402, F401  (registers the ids)
from benchmarks import cpu_model
from tvr_gym.data.export import export

ENV_ID = "TVR-CrossView-v0"
SIZE = (320, 240)
GOALS = {"fresh": 40.0, "cached": 1000.0}
RSS_GOAL_MB = 400.0


def episodes_per_second(env: gym.Env, seeds: Iterator[int], seconds: float) -> tuple[float, int]:
    """Run reset(seed) + step(truth) over ``seeds`` for about ``seconds``: (episodes/s, episodes)."""
    n, start = 0, time.perf_counter()
    for seed in seeds:
        _, info = env.reset(seed=seed)
        env.step(info["truth"])
        n += 1
        if n % 8 == 0 and time.perf_counter() - start >= seconds:
            break
    return n / (time.perf_counter() - start), n


def ms_per_image(env, n: int) -> float:
    """The renderer alone: milliseconds per 320x240 image (new cameras each time, no cache)."""
    from tvr_gym.render.cache import shared_renderer
    from tvr_gym.render.rig import camera_rig, lamp_rig

    renderer = shared_renderer(env.renderer_name, env.render_size)
    state = env.problem.final
    start = time.perf_counter()
    for seed in range(n):
        renderer.render(state, camera_rig("left", seed), lamp_rig(seed))
    return 1000.0 * (time.perf_counter() - start) / n


def machine() -> dict[str, str]:
    return {"cpu": cpu_model(), "nproc": str(os.cpu_count()), "python": platform.python_version()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--renderer", default="gl")
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    cartpole = gym.make("CartPole-v1")
    ref = benchmark_step(cartpole, target_duration=max(1, round(args.seconds)), seed=0)
    results: dict = {"reference_cartpole_steps_per_s": ref}

    fresh_env = gym.make(ENV_ID, render_size=SIZE, renderer=args.renderer, cache_size=0)
    episodes_per_second(fresh_env, iter([0]), 0.0)  # create the renderer outside the timing
    results["fresh"] = episodes_per_second(fresh_env, itertools.count(10_000), args.seconds)

    results["gl_ms_per_image"] = ms_per_image(fresh_env.unwrapped, 20)

    cached_env = gym.make(ENV_ID, render_size=SIZE, renderer=args.renderer)
    episodes_per_second(cached_env, iter(range(16)), 0.0)  # warm the cache
    results["cached"] = episodes_per_second(cached_env, itertools.cycle(range(16)), args.seconds)

    with tempfile.TemporaryDirectory() as tmp:
        export("trance", ENV_ID, 64, tmp, render_size=SIZE, renderer=args.renderer, progress=False)
        trance_env = gym.make(ENV_ID, render_size=SIZE, source=tmp, cache_size=0)
        results["trance"] = episodes_per_second(trance_env, itertools.cycle(range(64)), args.seconds)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    results["peak_rss_mb"] = rss_mb
    results["machine"] = machine()
    results["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["pinned_one_core"] = not args.all_cores

    print(f"{ENV_ID} at {SIZE[0]}x{SIZE[1]}, renderer {args.renderer}; {results['machine']}")
    print(f"reference: CartPole-v1 benchmark_step = {ref:,.0f} steps/s")
    print(f"{'mode':8} {'episodes/s':>12} {'episodes':>9} {'ratio to CartPole':>18} {'goal':>8}")
    for mode in ("fresh", "cached", "trance"):
        rate, n = results[mode]
        goal = GOALS.get(mode)
        print(f"{mode:8} {rate:12,.1f} {n:9d} {rate / ref:18.5f} {'>= ' + str(int(goal)) if goal else '-':>8}"
              f"{'  ok' if goal and rate >= goal else ('  MISSED' if goal else '')}")
    print(f"renderer alone: {results['gl_ms_per_image']:.1f} ms per image (an episode renders 2 images)")
    print(f"peak RSS {rss_mb:.0f} MB (goal <= {RSS_GOAL_MB:.0f} MB){'  ok' if rss_mb <= RSS_GOAL_MB else '  MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
