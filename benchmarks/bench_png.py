"""PNG writing: our zlib level against PIL's default (6), per image and for ``generate``, in one run.

    LP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.bench_png [--n 40] [--rounds 2]

Part 1 encodes the ``--n`` × 4 renders of a Basic dataset (320x240, gl) at PIL's default level and at
:data:`tvr_gym.core.atomic.PNG_COMPRESS_LEVEL`: milliseconds and bytes per image, and a check that both
decode to the same pixels. Part 2 times ``generate_dataset`` of ``--n`` samples with each level (rounds
alternate the order, a fresh directory and a cleared render cache each time): samples per second.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import report, run_line
from tvr_gym.core import atomic
from tvr_gym.data.dataset import generate_dataset
from tvr_gym.render.cache import shared_lru

PIL_DEFAULT_LEVEL = 6
"""``compress_level`` of PIL's PNG writer when none is given: the reference."""


def encode(images: list[np.ndarray], level: int) -> tuple[float, float, list[bytes]]:
    """Milliseconds and bytes per image at zlib ``level``, and the files."""
    start = time.perf_counter()
    files = [atomic.encode_png(image, level) for image in images]
    ms = 1000 * (time.perf_counter() - start) / len(images)
    return ms, statistics.mean(len(f) for f in files), files


def generate_rate(out: Path, n: int, level: int) -> float:
    """Samples per second of ``generate_dataset`` with PNGs written at ``level``."""
    atomic.PNG_COMPRESS_LEVEL = level
    shared_lru().clear()
    start = time.perf_counter()
    generate_dataset(out, "basic", seed=5, n=n, renderer="gl", progress=False)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="samples (4 images each)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write a markdown table here")
    args = parser.parse_args()
    ours = atomic.PNG_COMPRESS_LEVEL
    levels = (PIL_DEFAULT_LEVEL, ours)
    rates: dict[int, list[float]] = {level: [] for level in levels}
    with tempfile.TemporaryDirectory() as tmp:
        generate_rate(Path(tmp) / "warm-up", 2, ours)  # the GL context and imports, outside the timings
        for r in range(args.rounds):
            for level in levels if r % 2 == 0 else levels[::-1]:
                rates[level].append(generate_rate(Path(tmp) / f"{level}-{r}", args.n, level))
                print(f"generate, level {level}, round {r}: {rates[level][-1]:.1f} samples/s", flush=True)
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((Path(tmp) / f"{ours}-0").rglob("*.png"))]
    atomic.PNG_COMPRESS_LEVEL = ours
    (ms_ref, bytes_ref, files_ref), (ms, size, files) = (encode(images, level) for level in levels)
    same = all(
        np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))
        for a, b in zip(files_ref, files)
    )
    rate = {level: statistics.median(v) for level, v in rates.items()}
    command = "LP_NUM_THREADS=1 taskset -c N .venv/bin/python -m benchmarks.bench_png"
    command += f" --n {args.n} --rounds {args.rounds}"
    report([
        "# PNG writing: zlib level",
        "",
        f"{run_line(command)} Basic, 320x240, gl, {len(images)} images.",
        "",
        "| | PIL default (level 6) | ours (level " + str(ours) + ") | ratio |",
        "|---|---|---|---|",
        f"| encode, ms per image | {ms_ref:.1f} | {ms:.1f} | {ms_ref / ms:.2f}× faster |",
        f"| bytes per image | {bytes_ref:,.0f} | {size:,.0f} | {size / bytes_ref:.2f}× |",
        f"| `generate`, samples/s (median of {args.rounds}) | {rate[PIL_DEFAULT_LEVEL]:.1f} | {rate[ours]:.1f} | "
        f"{rate[ours] / rate[PIL_DEFAULT_LEVEL]:.2f}× |",
        "",
        f"The same pixels at both levels: {'yes' if same else 'NO'} ({len(images)} images decoded and compared).",
    ], args.out)  # fmt: skip


if __name__ == "__main__":
    main()
