"""``generate`` on a local Ray instance against ``--workers``: rows/s with 1 and 2 of each, for gl and Blender.

    .venv/bin/python -m benchmarks.bench_cluster [--gl-n 300] [--blender-n 8] [--out FILE]

Every configuration makes the same Basic samples into a fresh directory, rendering and PNG writing
included, each Blender process with one thread: ``--workers 1`` and ``--workers 2`` (this machine's
processes, the reference), then ``--engine ray`` on a local Ray instance of 1 and 2 CPUs. The Ray
instance starts before the clock does (its start-up is reported apart: a cluster starts once, not per
command); the Ray workers start inside the timed run, as the ``--workers`` processes do. Needs two free
cores. The report ends with the projection of official-scale TRANCE (500k samples, about 2M images at
320x240) from the measured per-core Blender rate.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import report, run_line
from tvr_gym.data.cluster import RayOptions, ray_session
from tvr_gym.data.dataset import generate_dataset
from tvr_gym.render.blender import BLENDER_THREADS_ENV

TRANCE_SAMPLES = 500_000
TRANCE_IMAGES = 2_000_000
"""Official TRANCE scale: 500k samples, an initial image and three final views each."""
SETTING = "basic"


def images_per_sample(out: Path, n: int) -> float:
    """The images each sample of a made dataset has (the initial view and every final view)."""
    return len(list((out / "image").glob("*.png"))) / n


def timed(out: Path, renderer: str, n: int, workers: int, ray: RayOptions | None) -> float:
    """Rows/s of one ``generate`` run."""
    start = time.perf_counter()
    made, _ = generate_dataset(
        out, SETTING, 0, n, renderer=renderer, workers=workers, progress=False,
        engine="ray" if ray else "local", ray=ray,
    )  # fmt: skip
    assert made == n
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gl-n", type=int, default=300)
    parser.add_argument("--blender-n", type=int, default=8)
    parser.add_argument("--renderers", default="gl,blender")
    parser.add_argument("--out", default=None, help="also write the markdown report here")
    args = parser.parse_args()
    os.environ[BLENDER_THREADS_ENV] = "1"  # one Blender thread per process in the --workers runs too (Ray sets it)
    sizes = {"gl": (args.gl_n, 25), "blender": (args.blender_n, 1)}  # samples, shard size
    rates: dict[tuple[str, str], float] = {}
    startup: dict[int, float] = {}
    images: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for renderer in args.renderers.split(","):
            n, shard = sizes[renderer]
            for workers in (1, 2):
                rates[renderer, f"workers {workers}"] = timed(Path(tmp) / f"{renderer}-w{workers}", renderer, n,
                                                              workers, None)  # fmt: skip
                print(renderer, "workers", workers, round(rates[renderer, f"workers {workers}"], 2), flush=True)
            for workers in (1, 2):
                options = RayOptions(workers=workers, shard_size=shard)
                begin = time.perf_counter()
                with ray_session(options):
                    startup[workers] = time.perf_counter() - begin
                    rates[renderer, f"ray {workers}"] = timed(Path(tmp) / f"{renderer}-r{workers}", renderer, n,
                                                              workers, options)  # fmt: skip
                print(renderer, "ray", workers, round(rates[renderer, f"ray {workers}"], 2), flush=True)
            images[renderer] = images_per_sample(Path(tmp) / f"{renderer}-r1", n)

    command = f".venv/bin/python -m benchmarks.bench_cluster --gl-n {args.gl_n} --blender-n {args.blender_n}"
    lines = [
        "# Datasets on Ray",
        "",
        f"{run_line(command)} `generate --setting {SETTING}`, 320x240, PNGs written; Ray instance start-up "
        f"{startup.get(1, 0):.1f} s (1 CPU) and {startup.get(2, 0):.1f} s (2 CPUs), not in the rates.",
        "",
        "| renderer | samples | configuration | samples/s | images/s | ratio to `--workers` with as many CPUs |",
        "|---|---|---|---|---|---|",
    ]
    for renderer in args.renderers.split(","):
        n = sizes[renderer][0]
        for config in ("workers 1", "workers 2", "ray 1", "ray 2"):
            kind, k = config.split()
            engine = f"`--workers {k}`" if kind == "workers" else f"`--engine ray --workers {k}`"
            ratio = rates[renderer, config] / rates[renderer, f"workers {k}"]
            rate = rates[renderer, config]
            lines.append(f"| {renderer} | {n} | {engine} | {rate:.2f} | {rate * images[renderer]:.2f} | {ratio:.2f}× |")
    if ("blender", "ray 1") in rates:
        per_core = rates["blender", "ray 1"] * images["blender"]  # images/s on one core, Ray's overhead included
        frames_s = 1 / per_core
        cpu_hours = TRANCE_IMAGES * frames_s / 3600
        lines += [
            "",
            f"Projection, official-scale TRANCE ({TRANCE_SAMPLES:,} samples, {TRANCE_IMAGES:,} images) with Blender "
            f"at the measured {frames_s:.2f} s per image per core (one thread, sample generation, start-up and PNG "
            f"writing included): {cpu_hours:,.0f} CPU-hours.",
            "",
            "| nodes × cores | wall time |",
            "|---|---|",
            *(f"| {nodes} × {cores} | {cpu_hours / (nodes * cores):,.1f} h |"
              for nodes, cores in ((1, 2), (1, 64), (8, 64), (32, 64))),  # fmt: skip
        ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
