"""How close a renderer's images are to the official TRANCE images, measured per object.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tvr_gym.generator import generate
from tvr_gym.render.base import Renderer
from tvr_gym.render.raycast import NumpyRenderer
from tvr_gym.render.rig import camera_rig, lamp_rig
from tvr_gym.scene import State
from tvr_gym.spec import SPEC
from tvr_gym.trance import Problem, load_trance

NATIVE = tuple(SPEC.raw["camera"]["native_size"])
RELEASED = tuple(SPEC.raw["camera"]["released_size"])
ERODE = 1
"""Pixels (at the released size) taken off every mask's border."""
MIN_PIXELS = 12
"""Objects with fewer eroded-mask pixels (at the released size) are not measured."""
MATERIALS = tuple(SPEC.values["material"])


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


def object_masks(state: State, view: str, jitter_seed: int | None = None, masker: Renderer | None = None) -> dict:
    """Eroded released-size masks of the objects of ``state`` seen from ``view`` that keep at least
    :data:`MIN_PIXELS` pixels."""
    masker = masker or NumpyRenderer(NATIVE)
    native = masker.render_mask(state, camera_rig(view, jitter_seed))
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
                masks = object_masks(state, view, None, masker)
                views.append(View(state, view, None, masks, official, f"{problem.idx}-{phase}.{view}"))
    return views


def generated_views(n: int, seed: int = 0, setting: str = "crossview") -> Iterator[View]:
    """``n`` generated images (initial and final of ``n // 2`` problems) with jittered cameras."""
    masker = NumpyRenderer(NATIVE)
    for k in range((n + 1) // 2):
        problem: Problem = generate(setting, seed, k)
        for state, view in ((problem.initial, "center"), (problem.final, problem.final_view)):
            yield View(state, view, problem.render_seed, object_masks(state, view, problem.render_seed, masker))


def render_view(renderer: Renderer, view: View) -> np.ndarray:
    """``view`` drawn by ``renderer`` at the native size and downscaled to the released size."""
    image = renderer.render(view.state, camera_rig(view.view, view.jitter_seed), lamp_rig(view.jitter_seed))
    return downscale(image) if image.shape[1::-1] != RELEASED else image


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


__all__ = [
    "MaterialClassifier",
    "View",
    "classifier_accuracy",
    "colour_distance",
    "downscale",
    "generated_views",
    "measure_objects",
    "object_features",
    "object_masks",
    "official_views",
    "render_view",
]
