"""How close a renderer's images are to the official TRANCE images, measured per object.

Benchmark tooling, outside the installed package: ``benchmarks/bench_fidelity.py`` reports it and
``tests/test_fidelity.py`` bounds it. It draws scenes with the generator and renders them, so it sits above
both; the renderers in ``tvr_gym.render`` never import it.

Two measures, both over the objects of the official images (``../shared/trance/image``: 160x120
Blender renders) seen through eroded instance masks:

- **colour distance**: each object's mean colour in our render (drawn from the same state with the
  nominal camera at the native 320x240, box-downscaled to 160x120) against its mean colour in the
  official image, as the RGB distance in 0-255 levels, averaged per material;
- **material classifier**: a k-nearest-neighbour classifier of per-object colour statistics
  (:func:`object_features`), trained on a renderer's images of generated scenes, scored on the
  official objects. A renderer whose materials look like the official ones transfers.

The masks come from the exact ``numpy`` ray caster at the native size; a released pixel belongs to
an object when all four of its native pixels do, and the mask is then eroded by
:data:`ERODE` pixels, so camera jitter and anti-aliased edges stay out of the statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image

from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.core.trance import Problem, load_trance
from tvr_gym.problems.generator import generate
from tvr_gym.render.base import Renderer
from tvr_gym.render.raycast import NumpyRenderer
from tvr_gym.render.rig import Camera, camera_rig, lamp_rig

NATIVE = tuple(SPEC.raw["camera"]["native_size"])
RELEASED = tuple(SPEC.raw["camera"]["released_size"])
ERODE = 1
"""Pixels (at the released size) taken off every mask's border."""
MIN_PIXELS = 12
"""Objects with fewer eroded-mask pixels (at the released size) are not measured."""
MATERIALS = tuple(SPEC.values["material"])
FIT_STEPS = (0.24, 0.12, 0.06, 0.03)
"""Step sizes (world units) of the camera search of :func:`fit_cameras`."""


@dataclass(frozen=True)
class View:
    """One image: a state seen from a camera, with the masks of its measurable objects."""

    state: State
    view: str
    jitter_seed: int | None
    masks: dict[int, np.ndarray]
    """Object index -> boolean mask at the released size (eroded)."""
    official: np.ndarray | None = None
    """The official image (uint8, released size), when the view is one of the fixture's."""
    label: str = ""
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Added to the camera's location: a fitted official camera's jitter (:func:`fit_cameras`)."""
    sample: int = -1
    """The official sample the view belongs to (its cameras are shared by its images)."""

    @property
    def camera(self) -> Camera:
        nominal = camera_rig(self.view, self.jitter_seed)
        return replace(nominal, location=tuple(float(a + b) for a, b in zip(nominal.location, self.offset)))


def downscale(image: np.ndarray) -> np.ndarray:
    """A native-size render box-averaged to the released size (uint8)."""
    return np.asarray(Image.fromarray(image).resize(RELEASED, Image.BOX))


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(k):
        m = out.copy()
        m[1:, :] &= out[:-1, :]
        m[:-1, :] &= out[1:, :]
        m[:, 1:] &= out[:, :-1]
        m[:, :-1] &= out[:, 1:]
        out = m
    return out


def object_masks(state: State, camera: Camera, masker: Renderer | None = None) -> dict:
    """Eroded released-size masks of the objects of ``state`` seen by ``camera`` that keep at least
    :data:`MIN_PIXELS` pixels."""
    masker = masker or NumpyRenderer(NATIVE)
    native = masker.render_mask(state, camera)
    h, w = native.shape
    blocks = native.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(h // 2, w // 2, 4)
    whole = np.where((blocks == blocks[..., :1]).all(-1), blocks[..., 0], -1)
    masks = {}
    for i in state.visible_indices():
        m = _erode(whole == i, ERODE)
        if m.sum() >= MIN_PIXELS:
            masks[i] = m
    return masks


def official_views(trance_dir: str | Path) -> list[View]:
    """Every official image of the fixture with its measurable objects (nominal cameras)."""
    masker = NumpyRenderer(NATIVE)
    views = []
    for problem in load_trance(trance_dir):
        for phase in ("initial", "final"):
            for view in ("left", "center", "right"):
                path = problem.image_path(phase, view)
                if path is None:
                    continue
                state = problem.initial if phase == "initial" else problem.final
                official = np.asarray(Image.open(path).convert("RGB"))
                if official.shape[1::-1] != RELEASED:
                    official = np.asarray(Image.fromarray(official).resize(RELEASED, Image.BOX))
                masks = object_masks(state, camera_rig(view), masker)
                label = f"{problem.idx}-{phase}.{view}"
                views.append(View(state, view, None, masks, official, label, sample=problem.idx))
    return views


def _blur(image: np.ndarray) -> np.ndarray:
    a = image.astype(np.float32)
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)), mode="edge")
    return sum(p[dy : dy + a.shape[0], dx : dx + a.shape[1]] for dy in range(3) for dx in range(3)) / 9.0


def fit_cameras(views: list[View], renderer: Renderer, steps: tuple[float, ...] = FIT_STEPS) -> list[View]:
    """The official views with each camera moved to where ``renderer``'s images best match them.

    The official cameras were jittered by up to ``camera.jitter`` per axis, and the jitter was not
    released: the nominal camera shifts objects by a few pixels, which puts ground into the masks.
    A camera serves every image of a sample from its view; its offset is found by a pattern search
    (a 3x3x3 neighbourhood at each of ``steps``) that minimises the mean absolute difference of the
    blurred images. ``renderer`` should render at the released size.
    """
    masker = NumpyRenderer(NATIVE)
    fitted: dict[tuple[int, str], np.ndarray] = {}
    for key in dict.fromkeys((v.sample, v.view) for v in views):
        shots = [(v, _blur(v.official)) for v in views if (v.sample, v.view) == key]

        def error(offset: np.ndarray, shots=shots) -> float:
            total = 0.0
            for v, target in shots:
                camera = replace(
                    v.camera, location=tuple(float(a + b) for a, b in zip(camera_rig(v.view).location, offset))
                )
                total += float(np.abs(_blur(downscale_if(renderer.render(v.state, camera))) - target).mean())
            return total

        best, best_error = np.zeros(3), error(np.zeros(3))
        for step in steps:
            for delta in product((-step, 0.0, step), repeat=3):
                candidate = best + np.asarray(delta)
                e = error(candidate)
                if e < best_error:
                    best, best_error = candidate, e
        fitted[key] = best
    out = []
    for v in views:
        offset = tuple(float(x) for x in fitted[v.sample, v.view])
        moved = replace(v, offset=offset)
        out.append(replace(moved, masks=object_masks(v.state, moved.camera, masker)))
    return out


def downscale_if(image: np.ndarray) -> np.ndarray:
    """``image`` at the released size (box-downscaled when it is larger)."""
    return downscale(image) if image.shape[1::-1] != RELEASED else image


def generated_views(n: int, seed: int = 0, setting: str = "crossview") -> Iterator[View]:
    """``n`` generated images (initial and final of ``n // 2`` problems) with jittered cameras."""
    masker = NumpyRenderer(NATIVE)
    for k in range((n + 1) // 2):
        problem: Problem = generate(setting, seed, k)
        for state, view in ((problem.initial, "center"), (problem.final, problem.final_view)):
            camera = camera_rig(view, problem.render_seed)
            yield View(state, view, problem.render_seed, object_masks(state, camera, masker))


def render_view(renderer: Renderer, view: View) -> np.ndarray:
    """``view`` drawn by ``renderer`` at the native size and downscaled to the released size."""
    return downscale_if(renderer.render(view.state, view.camera, lamp_rig(view.jitter_seed)))


def object_features(pixels: np.ndarray) -> np.ndarray:
    """Colour statistics of one object's pixels (N, 3 uint8): what the material classifier sees.

    Mean and standard deviation of R, G, B; the 10th, 50th and 90th percentile of brightness; the
    mean saturation; and the brightness spread relative to the mean (all in 0..1 units).
    """
    p = pixels.astype(np.float64) / 255.0
    value = p.max(1)
    lo, mid, hi = np.percentile(value, [10, 50, 90])
    sat = (value - p.min(1)) / np.maximum(value, 1e-6)
    return np.array([*p.mean(0), *p.std(0), lo, mid, hi, sat.mean(), (hi - lo) / max(mid, 1e-3)])


def measure_objects(renderer: Renderer | None, views: Iterable[View]) -> list[dict]:
    """One record per measured object: material, official mean colour and features, ours when a renderer is given."""
    rows = []
    for v in views:
        ours = render_view(renderer, v) if renderer is not None else None
        for i, mask in v.masks.items():
            obj = v.state[i]
            row = {"view": v.label, "index": i, "material": obj.material, "color": obj.color, "shape": obj.shape}
            if v.official is not None:
                row["official_mean"] = v.official[mask].mean(0)
                row["official_features"] = object_features(v.official[mask])
            if ours is not None:
                row["ours_mean"] = ours[mask].mean(0)
                row["ours_features"] = object_features(ours[mask])
            rows.append(row)
    return rows


def colour_distance(rows: list[dict]) -> dict[str, float]:
    """Mean per-object RGB distance (0-255) between our and the official mean colour, per material and overall."""
    out: dict[str, float] = {}
    for m in (*MATERIALS, "all"):
        d = [float(np.linalg.norm(r["ours_mean"] - r["official_mean"])) for r in rows if m in ("all", r["material"])]
        if d:
            out[m] = float(np.mean(d))
    return out


class MaterialClassifier:
    """k-nearest neighbours on standardized :func:`object_features`."""

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, features: np.ndarray, labels: list[str]) -> MaterialClassifier:
        x = np.asarray(features, dtype=np.float64)
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-9
        self.x = (x - self.mean) / self.scale
        self.labels = np.asarray(labels)
        return self

    def predict(self, features: np.ndarray) -> list[str]:
        q = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        d = ((q[:, None, :] - self.x[None, :, :]) ** 2).sum(-1)
        nearest = np.argsort(d, axis=1)[:, : self.k]
        out = []
        for row in self.labels[nearest]:
            names, counts = np.unique(row, return_counts=True)
            out.append(str(names[counts.argmax()]))
        return out


def classifier_accuracy(train_rows: list[dict], official_rows: list[dict], k: int = 5) -> tuple[float, dict]:
    """Accuracy on the official objects of a classifier trained on ``train_rows`` (our renders),
    and the confusion counts ``{(truth, predicted): n}``."""
    features = np.stack([r["ours_features"] for r in train_rows])
    clf = MaterialClassifier(k).fit(features, [r["material"] for r in train_rows])
    predicted = clf.predict(np.stack([r["official_features"] for r in official_rows]))
    truth = [r["material"] for r in official_rows]
    confusion: dict[tuple[str, str], int] = {}
    for t, p in zip(truth, predicted):
        confusion[t, p] = confusion.get((t, p), 0) + 1
    return float(np.mean([t == p for t, p in zip(truth, predicted)])), confusion


def ground_bands(views: list[View], images: list[np.ndarray], masker: Renderer | None = None) -> np.ndarray:
    """Mean brightness of the visible ground, ours minus official, in four horizontal bands of each
    image (top to bottom): (images, 4) in grey levels."""
    masker = masker or NumpyRenderer(RELEASED)
    out = []
    for v, ours in zip(views, images):
        background = masker.render_mask(v.state, v.camera) == -1
        row = []
        for band in np.array_split(np.arange(RELEASED[1]), 4):
            sel = np.zeros_like(background)
            sel[band] = True
            sel &= background
            row.append(float(ours[sel].mean() - v.official[sel].mean()) if sel.any() else 0.0)
        out.append(row)
    return np.asarray(out)


def comparison_sheet(views: list[View], columns: dict[str, list[np.ndarray]], scale: int = 2) -> Image.Image:
    """One row per official view: the official image, then each renderer's, labelled on top."""
    from PIL import ImageDraw

    w, h = RELEASED[0] * scale, RELEASED[1] * scale
    names = ["official", *columns]
    head = 18
    sheet = Image.new("RGB", (w * len(names), head + h * len(views)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(names):
        draw.text((c * w + 4, 3), name, fill="black")
        for r, v in enumerate(views):
            image = v.official if name == "official" else columns[name][r]
            sheet.paste(Image.fromarray(image).resize((w, h), Image.NEAREST), (c * w, head + r * h))
    return sheet


def object_sheet(
    views: list[View], columns: dict[str, list[np.ndarray]], size: int = 96, per_row: int = 3
) -> Image.Image:
    """Crops of every measured object, official then each renderer, grouped by material."""
    from PIL import ImageDraw

    names = ["official", *columns]
    crops: dict[str, list[list[np.ndarray]]] = {m: [] for m in MATERIALS}
    half = 14
    for r, v in enumerate(views):
        images = [v.official] + [columns[n][r] for n in columns]
        for i, mask in v.masks.items():
            ys, xs = np.nonzero(mask)
            y0, x0 = max(int(ys.mean()) - half, 0), max(int(xs.mean()) - half, 0)
            crops[v.state[i].material].append(
                [
                    np.asarray(Image.fromarray(im[y0 : y0 + 2 * half, x0 : x0 + 2 * half]).resize((size, size)))
                    for im in images
                ]
            )
    cell = size * len(names) + 8
    rows = sum((len(c) + per_row - 1) // per_row for c in crops.values())
    sheet = Image.new("RGB", (cell * per_row, 20 * len(MATERIALS) + size * rows), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for m, items in crops.items():
        draw.text((4, y + 4), f"{m}: " + " | ".join(names), fill="black")
        y += 20
        for k, group in enumerate(items):
            x = (k % per_row) * cell
            for j, crop in enumerate(group):
                sheet.paste(Image.fromarray(crop), (x + j * size, y + (k // per_row) * size))
        y += size * ((len(items) + per_row - 1) // per_row)
    return sheet


__all__ = [
    "MaterialClassifier",
    "View",
    "classifier_accuracy",
    "colour_distance",
    "comparison_sheet",
    "ground_bands",
    "object_sheet",
    "downscale",
    "downscale_if",
    "fit_cameras",
    "generated_views",
    "measure_objects",
    "object_features",
    "object_masks",
    "official_views",
    "render_view",
]
