"""Any model behind an OpenAI-compatible chat endpoint as a TVR agent: vLLM, SGLang, ``transformers serve``,
hosted APIs. ``tvr-gym eval --agent openai:MODEL@URL`` builds one.

Each observation becomes one chat request with both images as PNG data URLs (:func:`tvr_gym.core.chat.openai_messages`).
On ``TVR-Interactive-v0`` each turn is one request holding the episode's chat so far (:meth:`OpenAIAgent.act_chats`).
Requests have a timeout and are retried with backoff by the official ``openai`` client; a batch is sent
concurrently. A server that cannot be reached is reported when the agent is built, before any episode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tvr_gym.core import chat

DEFAULT_URL = "https://api.openai.com/v1"
API_EXTRA_HINT = "install the api extra: pip install -e '.[api]' (or pip install 'tvr-gym[api]')"


def _openai() -> Any:
    """The ``openai`` package; when it is missing, ``ModuleNotFoundError`` naming the ``[api]`` extra."""
    try:
        import openai
    except ImportError as exc:
        raise ModuleNotFoundError(f"agent openai: needs the openai package ({exc}); {API_EXTRA_HINT}",
                                  name="openai") from None  # fmt: skip
    return openai


def parse_spec(spec: str) -> tuple[str, str]:
    """``MODEL@URL`` (the part after ``openai:``) as (model, base URL); without ``@URL``, ``$OPENAI_BASE_URL``."""
    model, at, url = spec.rpartition("@")
    if not at:
        model, url = spec, os.environ.get("OPENAI_BASE_URL", DEFAULT_URL)
    if not model or not url.startswith(("http://", "https://")):
        raise ValueError(f"agent: expected openai:MODEL@http(s)://HOST[:PORT]/v1, got openai:{spec!r}")
    return model, url.rstrip("/")


class OpenAIAgent:
    """A TVR agent that asks an OpenAI-compatible chat-completions endpoint.

    ``use_images`` sends both images (image observations); ``False`` sends the prompt only (text
    observations). ``temperature`` 0 and ``max_tokens`` bound the answer; ``timeout`` (seconds) and
    ``max_retries`` apply per request; ``concurrency`` requests of a batch are in flight at once. The
    API key is ``$OPENAI_API_KEY`` (``EMPTY`` when unset, as local servers accept). Servers that return
    the ``<think>`` part separately (``reasoning_content``) get it put back in front of the answer.
    :attr:`usage` keeps the token counts the server reports for each reply (what a hosted model bills).
    """

    privileged = False

    def __init__(
        self,
        model: str,
        base_url: str,
        use_images: bool = True,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        timeout: float = 120.0,
        max_retries: int = 4,
        concurrency: int = 8,
        system_prompt: str | None = None,
        api_key: str | None = None,
        check: bool = True,
    ) -> None:
        openai = _openai()  # before anything else: a missing package says which extra to install
        if concurrency < 1 or max_tokens < 1 or timeout <= 0 or max_retries < 0:
            raise ValueError("concurrency and max_tokens must be >= 1, timeout > 0 and max_retries >= 0")
        self.model, self.base_url = model, base_url
        self.use_images = use_images
        self.max_tokens, self.temperature = max_tokens, temperature
        self.concurrency = concurrency
        self.system_prompt = system_prompt
        self.name = f"openai:{model}@{base_url}"
        self.usage: list[dict[str, int]] = []
        """One ``{"prompt_tokens", "completion_tokens"}`` per reply the server reported usage for, as replies arrive."""
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)
        if check:
            self.check_server()

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> OpenAIAgent:
        model, url = parse_spec(spec)
        return cls(model, url, **kwargs)

    @property
    def obs_mode(self) -> str:
        return "image" if self.use_images else "text"

    def check_server(self) -> None:
        """Fail fast, with the URL in the message, when the endpoint cannot be reached."""
        openai = _openai()
        try:
            self.client.with_options(max_retries=min(self.client.max_retries, 1)).models.list()
        except openai.APIConnectionError as exc:
            raise ConnectionError(f"{self.name}: cannot reach the server ({exc}); is it running?") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise ConnectionError(f"{self.name}: the server refused the API key ($OPENAI_API_KEY)") from None
            # some servers do not list models; the first request will tell

    def messages(self, obs: Mapping[str, Any]) -> list[dict[str, Any]]:
        images = chat.images_of(obs, self.use_images)
        return chat.openai_messages(str(obs.get("prompt", "")), images, self.system_prompt)

    def act(self, obs: Mapping[str, Any]) -> str:
        return self._complete(self.messages(obs))

    def chat_messages(self, chat_and_images: tuple[Sequence[Mapping[str, Any]], Sequence[Any]]) -> list[dict[str, Any]]:
        """The request's messages for one turn of an interactive episode (:func:`tvr_gym.core.chat.openai_chat`),
        with the system prompt in front when the chat has none."""
        messages, images = chat_and_images
        out = chat.openai_chat(messages, images)
        if self.system_prompt and not (out and out[0].get("role") == "system"):
            out.insert(0, {"role": "system", "content": self.system_prompt})
        return out

    def act_chats(self, chats: Sequence[tuple[Sequence[Mapping[str, Any]], Sequence[Any]]]) -> list[str]:
        """The next turn of each interactive chat (:func:`tvr_gym.core.chat.interactive_messages`), one request
        each, ``concurrency`` at a time: how :func:`tvr_gym.agents.interactive.play_chats` asks a served model."""
        requests = [self.chat_messages(c) for c in chats]
        if len(requests) <= 1:
            return [self._complete(m) for m in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._complete, requests))

    def _complete(self, messages: list[dict[str, Any]]) -> str:
        openai = _openai()
        try:
            reply = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=self.temperature,
            )  # fmt: skip
        except openai.APIConnectionError as exc:
            raise ConnectionError(f"{self.name}: the server went away ({exc})") from None
        used = reply.usage
        if used is not None:  # list.append is atomic: the threads of act_batch may share the list
            self.usage.append({"prompt_tokens": used.prompt_tokens, "completion_tokens": used.completion_tokens})
        message = reply.choices[0].message
        content = message.content or ""
        reasoning = getattr(message, "reasoning_content", None) or (message.model_extra or {}).get("reasoning_content")
        if reasoning and "<think>" not in content:
            content = f"<think>{reasoning}</think>{content}"
        return content

    def act_batch(self, observations: Sequence[Mapping[str, Any]]) -> list[str]:
        if len(observations) <= 1:
            return [self.act(obs) for obs in observations]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(observations))) as pool:
            return list(pool.map(self.act, observations))
