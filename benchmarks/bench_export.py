"""Export throughput: rows/s of ``hf`` and ``verl`` against ``trance``, in one run.

    LP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.bench_export [--n 200] [--rounds 2]

Each format exports the same ``--n`` CrossView rows (320x240 images) into a fresh directory; rounds
alternate the order. Rendering dominates every format equally, so the render cache is cleared before
each export (every format renders its rows itself). Reports the median rows/s and the ratio to
``trance``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import report, run_line
from tvr_gym.data.export import export
from tvr_gym.render.cache import shared_lru

FORMATS = ("trance", "hf", "verl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", default="TVR-CrossView-v0")
    parser.add_argument("--out", default=None, help="also write a markdown table here")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {f: [] for f in FORMATS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for fmt in FORMATS if r % 2 == 0 else FORMATS[::-1]:
                shared_lru().clear()
                start = time.perf_counter()
                export(fmt, args.env, args.n, Path(tmp) / f"{fmt}-{r}", seed=r, progress=False)
                rates[fmt].append(args.n / (time.perf_counter() - start))
                print(fmt, r, round(rates[fmt][-1], 1), flush=True)
    median = {f: statistics.median(v) for f, v in rates.items()}
    command = f"LP_NUM_THREADS=1 taskset -c N .venv/bin/python -m benchmarks.bench_export --n {args.n}"
    command += f" --rounds {args.rounds}"
    report([
        "# Export throughput",
        "",
        f"{run_line(command)} {args.env}, 320x240, rendering included.",
        "",
        "| format | rows/s (median) | ratio to trance |",
        "|---|---|---|",
        *(f"| {f} | {median[f]:.1f} | {median[f] / median['trance']:.2f}× |" for f in FORMATS),
    ], args.out)  # fmt: skip


if __name__ == "__main__":
    main()
