"""The frames ``render()`` returns: the two images, labelled, over a caption that says what the last step did.

A frame is a label bar, the two panels side by side, and a caption strip of fixed rows (action, feedback,
reward, truth, metrics). Its size depends only on ``render_size`` (:func:`frame_size`), so every frame of
every episode of an environment has one size, as a video needs (gymnasium's ``RecordVideo``, ``tvr-gym
record``). The text is PIL's built-in scalable font (``ImageFont.load_default(size=...)``: no system font
is needed), sized with the images; a text longer than its row is shortened with an ellipsis, never cut
off (:func:`fit_lines`). See ``docs/record.md``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "PANEL_GAP", "Caption", "FrameLayout", "PlacedLine", "caption_layout", "draw_frame", "fit_lines", "frame_layout",
    "frame_size",
]  # fmt: skip

PANEL_GAP = 4
"""Pixels between the two panels."""
ELLIPSIS = "\u2026"
FONT_AT_320 = 14
"""The font size for 320-pixel-wide images; other sizes scale it (never below :data:`MIN_FONT`)."""
MIN_FONT = 8
BACKGROUND = (255, 255, 255)
STRIP = (240, 240, 240)
INK = (20, 20, 20)
MUTED = (110, 110, 110)
TRUTH_INK = (20, 70, 170)


@dataclass(frozen=True)
class Caption:
    """What the caption strip says; a field left empty leaves its row blank, so every frame has the same rows."""

    action: str | None = None
    """The agent's text as given (``None`` before the first step)."""
    feedback: str = ""
    """What the environment made of the action (or, before it, what the episode asks)."""
    reward: float | None = None
    episode_return: float | None = None
    """The sum of the episode's rewards so far (multi-turn episodes)."""
    detail: str = ""
    """More about the reward, or where the episode is: ``turn 2 of 8``."""
    truth: str = ""
    """The true transformations: on the last frame of an episode only."""
    metrics: str = ""
    """The episode's scores: on the last frame only."""

    def reward_text(self) -> str:
        parts = [] if self.reward is None else [f"{self.reward:+.2f}"]
        if self.episode_return is not None:
            parts.append(f"return {self.episode_return:+.2f}")
        return " · ".join([*parts, self.detail] if self.detail else parts)


@dataclass(frozen=True)
class _Row:
    label: str
    lines: int
    keep_tail: bool = False
    """Shorten in the middle (an answer's ``<answer>`` block is at its end), else at the end."""
    ink: tuple[int, int, int] = INK


ROWS = (
    _Row("action", 2, keep_tail=True),
    _Row("feedback", 2),
    _Row("reward", 1),
    _Row("truth", 2, ink=TRUTH_INK),
    _Row("metrics", 2),
)
"""The caption's rows and the lines each may fill."""
TASK_LABEL = "task"
"""The feedback row's label before the first action, when it says what the episode asks."""


def _row_texts(caption: Caption) -> list[tuple[str, str]]:
    """(label, text) of each of :data:`ROWS`; before the first action the feedback row says the task."""
    texts = ("" if caption.action is None else caption.action, caption.feedback, caption.reward_text(),
             caption.truth, caption.metrics)  # fmt: skip
    labels = [row.label for row in ROWS]
    if caption.action is None and caption.reward is None:
        labels[1] = TASK_LABEL
    return list(zip(labels, texts))


@dataclass(frozen=True)
class FrameLayout:
    """Where everything of a frame goes, for images of ``render_size``."""

    render_size: tuple[int, int]
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    line_height: int
    margin: int
    label_width: int
    """The width of the caption's label column (0 when the frame is too narrow for one)."""
    size: tuple[int, int]
    """The frame's (width, height)."""

    @property
    def panels_top(self) -> int:
        return self.line_height + self.margin

    @property
    def strip_top(self) -> int:
        return self.panels_top + self.render_size[1]

    @property
    def text_width(self) -> int:
        """The width the caption's texts may fill."""
        return max(self.size[0] - 2 * self.margin - self.label_width, 0)


@functools.lru_cache(maxsize=16)
def frame_layout(render_size: tuple[int, int]) -> FrameLayout:
    """The layout of the frames of images of ``render_size = (W, H)``: the font scales with ``W``."""
    w, h = int(render_size[0]), int(render_size[1])
    font_size = max(MIN_FONT, round(FONT_AT_320 * w / 320))
    font = ImageFont.load_default(size=font_size)
    line_height = round(font_size * 1.3)
    margin = max(2, font_size // 2)
    width = 2 * w + PANEL_GAP
    labels = max(font.getlength(label) for label in (TASK_LABEL, *(row.label for row in ROWS))) + 1.5 * margin
    label_width = int(labels) + 1 if labels <= width / 4 else 0  # a tiny frame gives its width to the texts
    height = line_height + margin + h + 2 * margin + sum(row.lines for row in ROWS) * line_height
    height += height % 2  # even sides: what H.264 video needs
    return FrameLayout((w, h), font, line_height, margin, label_width, (width, height))


def frame_size(render_size: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) of every frame of images of ``render_size``."""
    return frame_layout(tuple(render_size)).size


# ---------------------------------------------------------------------------- text that fits


def _printable(text: str) -> str:
    """One line of text: runs of whitespace as one space, characters that cannot be drawn as ``?``."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else "?" for c in text)


class _Advances(dict):
    """The advance of each character in one font, measured once: a text's width is about the sum of its
    characters' (kerning aside), found without asking FreeType to lay out every trial text."""

    def __init__(self, font) -> None:
        super().__init__()
        self.font = font

    def __missing__(self, char: str) -> float:
        self[char] = width = self.font.getlength(char)
        return width

    def prefix_widths(self, text: str) -> list[float]:
        """``w[k]``: the width of ``text[:k]``."""
        return [0.0, *itertools.accumulate(self[c] for c in text)]


@functools.lru_cache(maxsize=32)
def _advances(font) -> _Advances:
    return _Advances(font)


def _wrap(text: str, advances: _Advances, width: float, most: int) -> list[str]:
    """``text`` in lines of ``width`` pixels, broken at spaces where it can be; stops after ``most + 1`` lines
    (a line wider than ``width`` only when one character is)."""
    lines: list[str] = []
    widths = advances.prefix_widths(text)
    start = 0
    while start < len(text) and len(lines) <= most:
        end = bisect.bisect_right(widths, widths[start] + width, lo=start) - 1  # the most characters that fit
        if end == start:  # one character wider than the line: nothing more can be shown
            lines.append(text[start:])
            break
        if end < len(text):
            space = text.rfind(" ", start, end + 1)
            end = space if space > start else end
        lines.append(text[start:end].rstrip())
        start = end
        while start < len(text) and text[start] == " ":
            start += 1
    return lines


def _fit(text: str, advances: _Advances, width: float, most: int, keep_tail: bool) -> list[str]:
    """:func:`fit_lines` measured by the characters' advances."""
    lines = _wrap(text, advances, width, most)
    if len(lines) <= most and all(advances.prefix_widths(line)[-1] <= width for line in lines):
        return lines

    def shortened(n: int) -> str:
        if keep_tail:
            tail = (2 * n + 2) // 3
            return text[: n - tail].rstrip() + ELLIPSIS + text[len(text) - tail :].lstrip()
        return text[:n].rstrip() + ELLIPSIS

    def fits(n: int) -> bool:
        wrapped = _wrap(shortened(n), advances, width, most)
        return len(wrapped) <= most and all(advances.prefix_widths(line)[-1] <= width for line in wrapped)

    narrowest = max(1.0, min(advances[c] for c in text))
    lo, hi = 0, min(len(text), most * int(width / narrowest + 1))  # binary search: the most characters kept
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return _wrap(shortened(lo), advances, width, most) if fits(lo) else []


def fit_lines(text: str, font, width: float, most: int, keep_tail: bool = False) -> list[str]:
    """``text`` as at most ``most`` lines of at most ``width`` pixels each in ``font``.

    Whitespace runs become one space. A text that does not fit is shortened with an ellipsis: at its end, or
    with ``keep_tail`` in its middle (keeping its end, where an answer has its ``<answer>`` block). Nothing is
    ever drawn past ``width``: a line too narrow even for the ellipsis stays empty.
    """
    text = _printable(text)
    if not text or most < 1:
        return []
    advances = _advances(font)
    narrowest = max(1.0, min(advances[c] for c in " .,:;'|!ijl1"))
    cap = (most + 1) * int(width / narrowest + 1)  # more characters than the lines can ever show
    if len(text) > 2 * cap:  # only its head (or tail) can show: the middle is never measured
        text = text[:cap] + text[-cap:] if keep_tail else text[:cap]
    budget = width
    while budget > 0:
        lines = _fit(text, advances, budget, most, keep_tail)
        if all(font.getlength(line) <= width for line in lines):
            return lines
        budget -= max(1.0, getattr(font, "size", 8) / 4)  # kerning made a line wider than its characters: retry
    return []


# ---------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class PlacedLine:
    """One line of a frame's text: where it starts, what it says, how wide it is drawn, in which ink."""

    x: int
    y: int
    text: str
    width: float
    ink: tuple[int, int, int]


def caption_layout(caption: Caption, labels: tuple[str, str], render_size: tuple[int, int]) -> list[PlacedLine]:
    """Every line of text of a frame: the panel labels, then each caption row's label and lines."""
    layout = frame_layout(tuple(render_size))
    font, m, w = layout.font, layout.margin, layout.render_size[0]
    placed = []
    for k, label in enumerate(labels):
        for line in fit_lines(label, font, w - 2 * m, 1):
            placed.append(PlacedLine(k * (w + PANEL_GAP) + m, m // 2, line, font.getlength(line), INK))
    y = layout.strip_top + m
    x = m + layout.label_width
    for row, (label, text) in zip(ROWS, _row_texts(caption)):
        if layout.label_width and text:
            placed.append(PlacedLine(m, y, label, font.getlength(label), MUTED))
        for k, line in enumerate(fit_lines(text, font, layout.text_width, row.lines, row.keep_tail)):
            placed.append(PlacedLine(x, y + k * layout.line_height, line, font.getlength(line), row.ink))
        y += row.lines * layout.line_height
    return placed


def draw_frame(
    pair: tuple[np.ndarray, np.ndarray] | None, labels: tuple[str, str], caption: Caption,
    render_size: tuple[int, int],
) -> np.ndarray:  # fmt: skip
    """The frame (uint8, :func:`frame_size`) of the two images ``pair`` (black panels when ``None``), their
    ``labels`` and ``caption``."""
    layout = frame_layout(tuple(render_size))
    (w, h), (width, height) = layout.render_size, layout.size
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[: layout.strip_top] = BACKGROUND
    frame[layout.strip_top :] = STRIP
    top = layout.panels_top
    for k in range(2):
        x = k * (w + PANEL_GAP)
        frame[top : top + h, x : x + w] = 0 if pair is None else pair[k]
    canvas = Image.fromarray(frame)
    draw = ImageDraw.Draw(canvas)
    for line in caption_layout(caption, labels, render_size):
        draw.text((line.x, line.y), line.text, font=layout.font, fill=line.ink)
    return np.array(canvas)
