"""Frames per second of the ``gl`` and ``numpy`` renderers at 320x240, on one core.

Images (gl: 4x MSAA and soft shadow maps) and instance masks are timed over a fixed set of
random scenes (1-10 visible objects, all shapes, materials and views). The reference is the
``numpy`` renderer in the same run: the report gives gl frames/s as a ratio to numpy frames/s.
The process pins itself to one core and sets ``LP_NUM_THREADS=1`` before Mesa loads, which equals::

    LP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.bench_render
"""

from __future__ import annotations

import os

os.environ.setdefault("LP_NUM_THREADS", "1")  # must precede Mesa's initialisation

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import cpu_model
from tvr_gym.core.scene import SceneObject, State  # noqa: E402
from tvr_gym.core.spec import SPEC  # noqa: E402
from tvr_gym.render import camera_rig, lamp_rig, make_renderer  # noqa: E402

SIZE = (320, 240)
GOAL_GL_FPS = 100.0


def random_scenes(n: int, seed: int = 0) -> list[tuple[State, int, str]]:
    """``n`` (state, jitter seed, view) triples with 1-10 visible objects (overlap is irrelevant here)."""
    rng = np.random.default_rng(seed)
    vals, lim, far = SPEC.values, SPEC.visible_limit, SPEC.grid_limit
    scenes = []
    for k in range(n):
        n_visible = int(rng.integers(1, SPEC.n_objects + 1))
        objs = []
        for i in range(SPEC.n_objects):
            pos = (int(rng.integers(-lim, lim + 1)), int(rng.integers(-lim, lim + 1))) if i < n_visible else (far, far)
            objs.append(
                SceneObject(
                    str(rng.choice(vals["color"])),
                    str(rng.choice(vals["material"])),
                    str(rng.choice(vals["shape"])),
                    str(rng.choice(vals["size"])),
                    pos,
                    float(rng.uniform(0, 360)),
                )
            )
        scenes.append((State(tuple(objs)), k, ("center", "left", "right")[k % 3]))
    return scenes


def frames_per_second(fn, scenes, seconds: float) -> tuple[float, float]:
    """Call ``fn(state, camera, lamps)`` cycling over ``scenes`` for about ``seconds``.

    Returns (frames per wall-clock second, frames per CPU second of this process), each the median
    over passes through all the scenes, so that a moment of load from another process moves one
    pass, not the result. On a busy machine the second is the better estimate of one free core.
    """
    prepared = [(s, camera_rig(v, seed), lamp_rig(seed)) for s, seed, v in scenes]
    for args in prepared:
        fn(*args)  # warm-up: shader variants, ray tables
    walls, cpus = [], []
    start = time.perf_counter()
    while not walls or time.perf_counter() - start < seconds:
        wall, cpu = time.perf_counter(), time.process_time()
        for args in prepared:
            fn(*args)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return len(prepared) / statistics.median(walls), len(prepared) / max(statistics.median(cpus), 1e-9)


def machine() -> dict[str, str]:
    return {"cpu": cpu_model(), "nproc": str(os.cpu_count()), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--scenes", type=int, default=30, help="number of distinct random scenes")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    scenes = random_scenes(args.scenes)
    results: dict[str, object] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "size": list(SIZE),
        "lp_num_threads": os.environ.get("LP_NUM_THREADS"),
        "pinned_cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    results["load_average"] = list(os.getloadavg())
    renderers = {"numpy": make_renderer("numpy", SIZE)}
    try:
        renderers["gl"] = make_renderer("gl", SIZE)
    except RuntimeError as exc:
        results["gl_error"] = str(exc)
    for name, r in renderers.items():
        results[f"{name}_fps"], results[f"{name}_cpu_fps"] = frames_per_second(r.render, scenes, args.seconds)
        results[f"{name}_mask_fps"], results[f"{name}_mask_cpu_fps"] = frames_per_second(
            lambda s, c, _l, r=r: r.render_mask(s, c), scenes, args.seconds
        )
    print(f"renderer benchmark, {SIZE[0]}x{SIZE[1]}, {args.scenes} random scenes, cores {results['pinned_cores']}")
    print(f"load average {results['load_average'][0]:.2f} (other processes share the machine when > 1)")
    print(f"{'':8}{'image fps':>12}{'image fps/CPU-s':>17}{'mask fps':>12}{'mask fps/CPU-s':>16}")
    for name in renderers:
        print(
            f"{name:8}{results[f'{name}_fps']:12.1f}{results[f'{name}_cpu_fps']:17.1f}"
            f"{results[f'{name}_mask_fps']:12.1f}{results[f'{name}_mask_cpu_fps']:16.1f}"
        )
    if "gl" in renderers:
        for key in ("fps", "cpu_fps", "mask_fps", "mask_cpu_fps"):
            results[f"gl_over_numpy_{key}"] = results[f"gl_{key}"] / results[f"numpy_{key}"]
        results["gl_goal_fps"] = GOAL_GL_FPS
        print(
            f"gl / numpy: image {results['gl_over_numpy_fps']:.1f}x (CPU {results['gl_over_numpy_cpu_fps']:.1f}x), "
            f"mask {results['gl_over_numpy_mask_fps']:.1f}x; gl goal {GOAL_GL_FPS:.0f} fps on one free core: "
            f"wall {'met' if results['gl_fps'] >= GOAL_GL_FPS else 'not met'}, "
            f"per CPU-second {'met' if results['gl_cpu_fps'] >= GOAL_GL_FPS else 'not met'}"
        )
    else:
        print(f"gl unavailable: {results['gl_error']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
