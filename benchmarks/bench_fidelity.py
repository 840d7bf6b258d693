"""How close each renderer's images are to the official TRANCE images (``benchmarks.fidelity``).

For every renderer: the per-object mean-colour distance to the 16 official images (per material),
the accuracy on the official objects of a k-NN material classifier trained on the renderer's own
images of generated scenes, and the ground's brightness per image band. Writes the table and two
PNG sheets to look at: every official image beside each renderer's, and every measured object's
crop. Reference: the official images themselves. Goals (``gl``): distance <= 20 per material,
classifier >= 0.85::

    LP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_fidelity
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import report, run_line
from benchmarks.fidelity import (
    MATERIALS,
    classifier_accuracy,
    colour_distance,
    comparison_sheet,
    fit_cameras,
    generated_views,
    ground_bands,
    measure_objects,
    object_sheet,
    official_views,
    render_view,
)
from tvr_gym.render import make_renderer

GOAL_DISTANCE = 20.0
GOAL_ACCURACY = 0.85
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renderers", default="gl,numpy,blender", help="comma-separated renderer names")
    parser.add_argument("--trance", default=str(Path(__file__).parents[2] / "shared" / "trance"))
    parser.add_argument("--train", type=int, default=200, help="generated images to train each classifier on")
    parser.add_argument("--blender-train", type=int, default=60, help="the same for blender (about 1 s per image)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated training scenes")
    parser.add_argument("--out", default=str(RESULTS / "fidelity.md"))
    parser.add_argument("--sheet", default=str(RESULTS / "fidelity.png"))
    parser.add_argument("--objects", default=str(RESULTS / "fidelity_objects.png"))
    args = parser.parse_args()
    names = args.renderers.split(",")
    nominal = official_views(args.trance)
    start = time.perf_counter()
    fitted = fit_cameras(nominal, make_renderer("gl" if "gl" in names else names[0], (160, 120)))
    fit_seconds = time.perf_counter() - start
    counts = {m: sum(v.state[i].material == m for v in nominal for i in v.masks) for m in MATERIALS}
    results, images = {}, {}
    for name in names:
        renderer = make_renderer(name, (320, 240))
        start = time.perf_counter()
        n_train = args.blender_train if name == "blender" else args.train
        train = measure_objects(renderer, generated_views(n_train, args.seed))
        for label, views in (("nominal", nominal), ("fitted", fitted)):
            rendered = [render_view(renderer, v) for v in views]
            if label == "fitted":
                images[name] = rendered
            official = measure_objects(renderer, views)
            accuracy, confusion = classifier_accuracy(train, official)
            bands = ground_bands(views, rendered)
            results[name, label] = (colour_distance(official), accuracy, confusion, bands, len(train))
            print(name, label, results[name, label][0], f"classifier {accuracy:.3f}", flush=True)
        results[name, "seconds"] = time.perf_counter() - start
        renderer.close()
    comparison_sheet(fitted, images).save(args.sheet)
    object_sheet(fitted, images).save(args.objects)
    offsets = np.array([v.offset for v in fitted])
    lines = [
        "# Fidelity to the official TRANCE images",
        "",
        run_line(f"LP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_fidelity --renderers {args.renderers}"),
        "",
        f"Official objects measured: {sum(counts.values())} ({', '.join(f'{n} {m}' for m, n in counts.items())}) "
        "in 16 images; renders from the same states at 320x240, box-downscaled to 160x120. **nominal**: the "
        "nominal cameras; **fitted**: each official camera's jitter recovered by `fit_cameras` "
        f"({fit_seconds:.0f} s; mean offset {', '.join(f'{o:+.2f}' for o in offsets.mean(0))} in x, y, z).",
        "",
        "| renderer | cameras | colour distance rubber | metal | glass | all | material classifier "
        "| ground, ours - official by band (top to bottom) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for label in ("nominal", "fitted"):
            dist, acc, _, bands, _ = results[name, label]
            cells = " | ".join(f"{dist[m]:.1f}" for m in (*MATERIALS, "all"))
            band = ", ".join(f"{b:+.1f}" for b in bands.mean(0))
            lines.append(f"| {name} | {label} | {cells} | {acc:.3f} | {band} |")
    lines += [
        "",
        "Training objects and time per renderer: "
        + "; ".join(f"{n} {results[n, 'nominal'][4]} objects, {results[n, 'seconds']:.0f} s" for n in names)
        + ".",
        "",
        "Confusions of the classifier (official material -> predicted):",
        "",
    ]
    for name in names:
        for label in ("nominal", "fitted"):
            confusion = results[name, label][2]
            wrong = ", ".join(f"{t} -> {p}: {n}" for (t, p), n in sorted(confusion.items()) if t != p) or "none"
            lines.append(f"- {name}, {label}: {wrong}")
    if "gl" in names:
        for label in ("nominal", "fitted"):
            dist, acc = results["gl", label][:2]
            met = all(dist[m] <= GOAL_DISTANCE for m in MATERIALS)
            lines.append(
                f"- Goals for gl, {label} cameras: colour distance <= {GOAL_DISTANCE:g} for every material: "
                f"**{'met' if met else 'missed'}**; classifier >= {GOAL_ACCURACY}: "
                f"**{'met' if acc >= GOAL_ACCURACY else 'missed'}** ({acc:.3f})."
            )
    lines += [
        "",
        f"Sheets (fitted cameras): `{Path(args.sheet).name}` (official | renderers), "
        f"`{Path(args.objects).name}` (object crops, grouped by material).",
    ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
