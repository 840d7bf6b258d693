"""Picture of a problem: initial and final images side by side, the transformations in words, an answer.

The images are the ones the environment observes (:func:`tvr_gym.render.cache.observed_image`): the problem's
own files when it has them, else renders with its ``render_seed`` as the camera and lamp jitter seed.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tvr_gym.core.atomic import atomic_open
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, check_size
from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.trance import Problem
from tvr_gym.core.transform import Transformation
from tvr_gym.render.cache import RenderCache, observed_image, shared_renderer

MARGIN = 12
FONT_SIZE = 14
LINE_GAP = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
ANSWER_INK = (20, 60, 160)


def describe_object(obj: SceneObject) -> str:
    """``small yellow glass cube``."""
    return f"{obj.size} {obj.color} {obj.material} {obj.shape}"


def describe_step(step: Transformation, state: State) -> str:
    """One transformation in words, e.g. ``object 2 (small yellow glass cube): color -> cyan``."""
    head = f"object {step.obj_idx} ({describe_object(state[step.obj_idx])})"
    if step.attr == "position":
        direction, n = step.value
        more = f", {len(step.options) - 1} equivalent" if len(step.options) > 1 else ""
        return f"{head}: move {direction} {n} ({step.type or 'move'}{more})"
    return f"{head}: {step.attr} -> {step.value}"


def _image(problem: Problem, phase: str, view: str, renderer: str, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """The observed image (the dataset's file or a render: the environment's own way) and where it came from."""
    pixels = observed_image(problem, phase, view, renderer, size, RenderCache())
    source = "official" if problem.image_path(phase, view) is not None else shared_renderer(renderer, size).name
    return Image.fromarray(np.ascontiguousarray(pixels)), source


def check_image_path(path: str | os.PathLike[str]) -> str:
    """The PIL format that ``path``'s suffix names (``.png``: PNG, ``.jpg``: JPEG, ``.webp``, ...), checked before
    anything is drawn; ``ValueError`` for a suffix PIL cannot write as an image (``.txt``) or none."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        what = f"PIL cannot write {suffix!r} images" if suffix else "no suffix names an image format"
        raise ValueError(f"--out: {path}: {what}; use .png (or .jpg, .webp, .bmp, .tif)")
    return fmt


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    char = max(font.getlength("n"), 1.0)
    lines = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, max(int(width / char), 8)) or [""]
    return lines


def show_problem(
    problem: Problem,
    path: str | os.PathLike[str],
    renderer: str = "auto",
    size: tuple[int, int] = DEFAULT_RENDER_SIZE,
    answer: str | None = None,
    title: str | None = None,
) -> Path:
    """Write a picture of ``problem`` to ``path`` (atomically) and return the path; the format is the one
    the suffix names (:func:`check_image_path`: ``.png``, ``.jpg``, ...).

    Top: the title; then the initial image (centre camera) and the final image (camera
    ``problem.final_view`` or centre) with labels; below, the transformations in words and, if
    given, ``answer``. The images are what the environment observes: the dataset's own files when the
    problem has them, else renders by ``renderer`` (a name of :data:`tvr_gym.render.RENDERERS`).
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem: expected a tvr_gym.core.trance.Problem, got {type(problem).__name__}")
    w, h = check_size(size)
    fmt = check_image_path(path)
    final_view = problem.final_view or "center"
    font = ImageFont.load_default(size=FONT_SIZE)
    big = ImageFont.load_default(size=FONT_SIZE + 2)
    width = 2 * w + 3 * MARGIN
    text_width = width - 2 * MARGIN
    line_h = FONT_SIZE + LINE_GAP

    initial, source_i = _image(problem, "initial", "center", renderer, (w, h))
    final, source_f = _image(problem, "final", final_view, renderer, (w, h))
    heading = title if title is not None else f"problem {problem.idx}: {problem.n_steps} step(s)"
    title_lines = _wrap(heading, big, text_width)
    steps = [f"{k + 1}. {describe_step(s, problem.initial)}" for k, s in enumerate(problem.transformations)]
    step_lines = [ln for s in steps for ln in _wrap(s, font, text_width)] or ["(no transformations)"]
    answer_lines = _wrap(f"answer: {answer}", font, text_width) if answer is not None else []

    top = MARGIN + len(title_lines) * (FONT_SIZE + 2 + LINE_GAP) + LINE_GAP
    images_top = top + line_h
    text_top = images_top + h + MARGIN
    height = text_top + (len(step_lines) + 1 + len(answer_lines)) * line_h + MARGIN

    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for line in title_lines:
        draw.text((MARGIN, y), line, fill=INK, font=big)
        y += FONT_SIZE + 2 + LINE_GAP
    for k, (img, label) in enumerate(
        ((initial, f"initial (center, {source_i})"), (final, f"final ({final_view}, {source_f})"))
    ):
        x = MARGIN + k * (w + MARGIN)
        draw.text((x, top), label, fill=INK, font=font)
        canvas.paste(img, (x, images_top))
    y = text_top
    draw.text((MARGIN, y), "transformations:", fill=INK, font=font)
    y += line_h
    for line in step_lines:
        draw.text((MARGIN, y), line, fill=INK, font=font)
        y += line_h
    for line in answer_lines:
        draw.text((MARGIN, y), line, fill=ANSWER_INK, font=font)
        y += line_h
    with atomic_open(path, "wb") as fh:
        try:
            canvas.save(fh, format=fmt)
        except (OSError, ValueError) as exc:  # a format that takes no RGB picture, e.g. XBM
            raise ValueError(f"--out: PIL cannot write this picture as {fmt} ({exc}); use .png") from None
    return Path(path)


__all__ = ["check_image_path", "describe_object", "describe_step", "show_problem"]
