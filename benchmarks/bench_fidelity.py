"""How close each renderer's images are to the official TRANCE images (``tvr_gym.render.fidelity``).

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

from benchmarks import report, run_line
from tvr_gym.render import make_renderer
from tvr_gym.render.fidelity import (
    MATERIALS,
    classifier_accuracy,
    colour_distance,
    comparison_sheet,
    generated_views,
    ground_bands,
    measure_objects,
    object_sheet,
    official_views,
    render_view,
)

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
    views = official_views(args.trance)
    counts = {m: sum(v.state[i].material == m for v in views for i in v.masks) for m in MATERIALS}
    rows, images = {}, {}
    for name in names:
        renderer = make_renderer(name, (320, 240))
        start = time.perf_counter()
        images[name] = [render_view(renderer, v) for v in views]
        official = measure_objects(renderer, views)
        n_train = args.blender_train if name == "blender" else args.train
        train = measure_objects(renderer, generated_views(n_train, args.seed))
        accuracy, confusion = classifier_accuracy(train, official)
        bands = ground_bands(views, images[name])
        rows[name] = (colour_distance(official), accuracy, confusion, bands, len(train), time.perf_counter() - start)
        print(name, rows[name][0], f"classifier {accuracy:.3f}", f"{rows[name][5]:.0f} s", flush=True)
        renderer.close()
    comparison_sheet(views, images).save(args.sheet)
    object_sheet(views, images).save(args.objects)
    lines = [
        "# Fidelity to the official TRANCE images",
        "",
        run_line(f"LP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_fidelity --renderers {args.renderers}"),
        "",
        f"Official objects measured: {sum(counts.values())} ({', '.join(f'{n} {m}' for m, n in counts.items())}) "
        f"in 16 images; renders from the same states and nominal cameras at 320x240, box-downscaled to 160x120.",
        "",
        "| renderer | colour distance rubber | metal | glass | all | material classifier "
        "| ground, ours - official by band (top to bottom) | training objects | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (dist, acc, _, bands, n_train, seconds) in rows.items():
        cells = " | ".join(f"{dist[m]:.1f}" for m in (*MATERIALS, "all"))
        band = ", ".join(f"{b:+.1f}" for b in bands.mean(0))
        lines.append(f"| {name} | {cells} | {acc:.3f} | {band} | {n_train} | {seconds:.0f} |")
    lines += ["", "Confusions of the classifier (official material -> predicted), per renderer:", ""]
    for name, (_, _, confusion, _, _, _) in rows.items():
        wrong = ", ".join(f"{t} -> {p}: {n}" for (t, p), n in sorted(confusion.items()) if t != p) or "none"
        lines.append(f"- {name}: {wrong}")
    if "gl" in rows:
        dist, acc = rows["gl"][0], rows["gl"][1]
        met = all(dist[m] <= GOAL_DISTANCE for m in MATERIALS)
        lines += [
            "",
            f"Goals for gl: colour distance <= {GOAL_DISTANCE:g} for every material: **{'met' if met else 'missed'}**; "
            f"classifier >= {GOAL_ACCURACY}: **{'met' if acc >= GOAL_ACCURACY else 'missed'}** ({acc:.3f}).",
        ]
    lines += [
        "",
        f"Sheets: `{Path(args.sheet).name}` (official | renderers), `{Path(args.objects).name}` (object crops).",
    ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
