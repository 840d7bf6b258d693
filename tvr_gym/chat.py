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
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_KEYS",
    "IMAGE_PLACEHOLDER",
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
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(prompt: str, images: Sequence[np.ndarray], system: str | None = None) -> list[Message]:
    """OpenAI chat-completions messages: image parts (PNG data URLs), then the text part."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images]
    content.append({"type": "text", "text": prompt})
    return _with_system({"role": "user", "content": content}, system)
