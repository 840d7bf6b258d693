"""One message contract for vision-language models: an observation as chat messages, for every consumer.

The layout is the same everywhere: one user turn holding the initial image, the final image (when
images are used) and then the prompt text. It takes three spellings, one per kind of consumer:

- :func:`messages`: content blocks ``{"type": "image"}`` and ``{"type": "text", ...}``, as processor
  chat templates (transformers, the MLLM policy) read them;
- :func:`placeholder_messages` / :func:`placeholder_text`: text with one ``<image>`` per image, as
  verl and EasyR1 datasets hold them (they split the text at the placeholders);
- :func:`openai_messages`: OpenAI chat parts with the images as PNG data URLs.

TRL datasets take the plain string (:func:`string_messages`) and insert the image blocks before the text
themselves, which gives the same layout. See ``docs/integrations.md``.

Interactive episodes (``TVR-Interactive-v0``) have one multi-turn contract,
:func:`interactive_messages`: the target once, then every turn's render with its feedback, the images
of the last ``window`` turns only, and an :class:`ImageBudget` that ends an episode before an image
would not fit.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tvr_gym.core.atomic import encode_png
from tvr_gym.core.options import check_int

__all__ = [
    "DEFAULT_WINDOW",
    "Exchange",
    "IMAGE_KEYS",
    "IMAGE_PLACEHOLDER",
    "ImageBudget",
    "count_images",
    "openai_chat",
    "reply_exchange",
    "image_tokens",
    "interactive_messages",
    "images_of",
    "messages",
    "openai_messages",
    "placeholder_messages",
    "placeholder_text",
    "string_messages",
]

IMAGE_KEYS = ("initial", "final")
"""The observation's images, in the order they are shown."""
IMAGE_PLACEHOLDER = "<image>"
"""Where an image goes in the text form (verl, EasyR1)."""

Message = dict[str, Any]


def images_of(obs: Mapping[str, Any], use_images: bool = True) -> list[np.ndarray]:
    """The observation's images to show (none when ``use_images`` is off or the observation has none)."""
    if not use_images:
        return []
    shown = []
    for key in IMAGE_KEYS:
        value = obs.get(key)
        if value is not None and np.asarray(value).size > 0:
            shown.append(np.asarray(value))
    return shown


def _with_system(user: Message, system: str | None) -> list[Message]:
    return ([{"role": "system", "content": system}] if system else []) + [user]


def messages(prompt: str, n_images: int, system: str | None = None) -> list[Message]:
    """Content-block messages: ``n_images`` image blocks, then the prompt text, in one user turn."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": prompt})
    return _with_system({"role": "user", "content": content}, system)


def string_messages(prompt: str, system: str | None = None) -> list[Message]:
    """Plain-string messages (TRL's conversational format; TRL puts the row's images before the text)."""
    return _with_system({"role": "user", "content": prompt}, system)


def placeholder_text(prompt: str, n_images: int) -> str:
    """The prompt with one ``<image>`` per image in front: ``<image><image>A scene holds ...``."""
    return IMAGE_PLACEHOLDER * n_images + prompt


def placeholder_messages(prompt: str, n_images: int, system: str | None = None) -> list[Message]:
    """verl's form: string content holding one ``<image>`` per image."""
    return _with_system({"role": "user", "content": placeholder_text(prompt, n_images)}, system)


def png_data_url(image: np.ndarray) -> str:
    """An RGB uint8 image as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def openai_messages(prompt: str, images: Sequence[np.ndarray], system: str | None = None) -> list[Message]:
    """OpenAI chat-completions messages: image parts (PNG data URLs), then the text part."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images]
    content.append({"type": "text", "text": prompt})
    return _with_system({"role": "user", "content": content}, system)


def openai_chat(chat: Sequence[Message], images: Sequence[np.ndarray]) -> list[Message]:
    """A chat with ``{"type": "image"}`` blocks and its images in block order (:func:`interactive_messages`)
    as OpenAI chat-completions messages: each block becomes its image as a PNG data URL, an assistant's
    text parts become one string (what every server takes), string contents stay strings."""
    if count_images(chat) != len(images):
        raise ValueError(f"images: the chat has {count_images(chat)} image blocks, got {len(images)} images")
    pending = iter(images)
    out: list[Message] = []
    for message in chat:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": png_data_url(next(pending))}}
                if part.get("type") == "image"
                else dict(part)
                for part in content
            ]
            if message.get("role") == "assistant" and all(part.get("type") == "text" for part in content):
                content = "".join(part["text"] for part in content)
        out.append({**message, "content": content})
    return out


# ---------------------------------------------------------------- interactive episodes (multi-turn)


@dataclass(frozen=True)
class Exchange:
    """One turn of an interactive episode: what the model said and what the environment showed back."""

    action: str
    """The model's completion for the turn."""
    feedback: str
    """The environment's feedback text (``obs["feedback"]``)."""
    image: np.ndarray | None = None
    """The new render of the current state (``obs["current"]``)."""


def reply_exchange(action: str, obs: Mapping[str, Any], current: Any, use_images: bool) -> Exchange:
    """The :class:`Exchange` of a turn that said ``action`` and got ``obs`` back: with images, the feedback and the
    new render; without, the feedback and the ``current`` state's table (the text chat's only view of it)."""
    from tvr_gym.core.prompt import state_table

    feedback = str(obs["feedback"])
    if not use_images:
        feedback += "\n" + state_table(current, "Current objects")
    return Exchange(action, feedback, np.asarray(obs["current"]) if use_images else None)


DEFAULT_WINDOW = 4
"""Turns shown with their images; older turns keep only their text."""


def interactive_messages(
    prompt: str,
    target: np.ndarray | None,
    current: np.ndarray | None,
    history: Sequence[Exchange] = (),
    window: int = DEFAULT_WINDOW,
    system: str | None = None,
) -> tuple[list[Message], list[np.ndarray]]:
    """The chat of an interactive episode so far, and its images in the order their blocks appear.

    The first user turn holds the target image, the first current image and the prompt: the target
    is shown once. Every exchange adds the model's turn (assistant) and the environment's reply
    (user): the new current image and the feedback. Only the last ``window`` replies keep their
    image; older ones keep their text. Without images (``target`` and ``current`` ``None``) the chat is
    text only. ``images`` holds exactly one array per image block, so a processor that expands each
    block into image tokens sees as many images as blocks, whatever the window.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window: expected an int >= 0, got {window!r}")
    images: list[np.ndarray] = [np.asarray(a) for a in (target, current) if a is not None]
    first: list[dict[str, Any]] = [{"type": "image"} for _ in images]
    first.append({"type": "text", "text": prompt})
    chat = _with_system({"role": "user", "content": first}, system)
    keep_from = len(history) - window
    for k, turn in enumerate(history):
        chat.append({"role": "assistant", "content": [{"type": "text", "text": turn.action}]})
        content: list[dict[str, Any]] = []
        if turn.image is not None and k >= keep_from:
            content.append({"type": "image"})
            images.append(np.asarray(turn.image))
        content.append({"type": "text", "text": turn.feedback})
        chat.append({"role": "user", "content": content})
    return chat, images


def count_images(chat: Sequence[Message]) -> int:
    """Image blocks in a chat."""
    return sum(
        1
        for m in chat
        if isinstance(m.get("content"), list)
        for block in m["content"]
        if isinstance(block, Mapping) and block.get("type") == "image"
    )


QWEN_PATCH = 28
"""Qwen2-VL and Qwen2.5-VL: 14-pixel patches merged 2 by 2, so one image token per 28×28 pixels."""
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 56 * 56, 28 * 28 * 1280
"""The image processors' default pixel bounds."""


def image_tokens(
    size: tuple[int, int],
    patch: int = QWEN_PATCH,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> int:
    """Image tokens a Qwen-VL processor spends on an image of ``size`` = (width, height): the sides
    rounded to multiples of ``patch`` (scaled into [min_pixels, max_pixels] when the rounded area falls
    outside), one token per cell. The same arithmetic as the processors' ``smart_resize``, which also
    refuses an aspect ratio above 200 (a ``ValueError`` here too)."""
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise ValueError(f"size: expected a positive (width, height), got {tuple(size)!r}")
    if max(w, h) / min(w, h) > 200:
        raise ValueError(f"size: aspect ratio {max(w, h) / min(w, h):g} is above 200, which Qwen-VL refuses")
    hb, wb = round(h / patch) * patch, round(w / patch) * patch
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(patch, math.floor(h / beta / patch) * patch), max(patch, math.floor(w / beta / patch) * patch)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / patch) * patch, math.ceil(w * beta / patch) * patch
    return (hb // patch) * (wb // patch)


@dataclass(frozen=True)
class ImageBudget:
    """How many images an episode may show: ``max_images`` (``None``: no limit), at ``tokens_per_image``.

    A rollout asks :meth:`allows` before a turn; when the next reply's image would not fit, the
    episode ends there (truncated), so an image is never cut.
    """

    max_images: int | None = None
    tokens_per_image: int = 0

    def __post_init__(self) -> None:
        if self.max_images is not None:  # at least the target and the first render
            object.__setattr__(self, "max_images", check_int("max_images", self.max_images, 2))
        object.__setattr__(self, "tokens_per_image", check_int("tokens_per_image", self.tokens_per_image, 0))

    def images_after(self, turns: int, window: int = DEFAULT_WINDOW) -> int:
        """Images in the chat after ``turns`` exchanges: the target, the first render and at most ``window`` replies."""
        return 2 + min(turns, window)

    def allows(self, turns: int, window: int = DEFAULT_WINDOW) -> bool:
        """Whether a chat of ``turns`` exchanges stays within the budget."""
        return self.max_images is None or self.images_after(turns, window) <= self.max_images

    def tokens(self, turns: int, window: int = DEFAULT_WINDOW) -> int:
        """Image tokens in a chat of ``turns`` exchanges."""
        return self.images_after(turns, window) * self.tokens_per_image
