"""TRL: ``TVR-Interactive-v0`` as a tool environment for ``GRPOTrainer(environment_factory=...)``.

TRL (1.x, ``trl/trainer/grpo_trainer.py``) builds one environment per rollout with
``environment_factory()``, calls ``reset(**row)`` with the dataset row, appends what ``reset`` returns to
the last user message, exposes every public method of the class (but ``reset`` and ``get_reward``) as a
tool, runs the model's ``<tool_call>`` s against them, and scores the rollout with ``get_reward()``.
:class:`TVRToolEnv` follows that contract:

- ``reset(setting, seed, index)`` starts the episode ``TVRInteractive(setting).reset(seed=seed,
  options={"index": index})`` and returns the target image, the current image and the prompt;
- the tool ``apply(object_id, attribute, value)`` takes one turn; it returns the new current image
  and the feedback text (TRL passes image blocks of a tool result on to a vision-language model);
- the tool ``finish()`` says ``done`` and ends the episode;
- ``get_reward()`` is the episode's total reward: the sum of every turn's reward, terminal included,
  exactly what ``env.step`` returned. A rollout that ends without ``finish()`` (the model answered
  without a tool call, or ran out of completion tokens) is truncated then (``TVRInteractive.truncate``),
  which adds its terminal reward.

:func:`interactive_rows` makes the dataset (``setting``, ``seed``, ``index`` per row) and
:func:`tool_processor` readies a Qwen-VL processor for TRL's tool loop (a tool-capable chat template and
the matching response parser). See ``docs/interactive.md``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from tvr_gym.core.chat import ImageBudget
from tvr_gym.core.chat_template import CHAT_TEMPLATE, RESPONSE_TEMPLATE
from tvr_gym.core.options import SETTINGS, check_choice, check_int
from tvr_gym.core.prompt import state_table
from tvr_gym.envs.interactive import TVRInteractive

__all__ = [
    "TVRToolEnv",
    "chat_texts",
    "environment_factory",
    "interactive_rows",
    "tool_processor",
    "tool_prompt",
]

IMAGE_INSTRUCTIONS = (
    'Use the tools. Call apply(object_id, attribute, value) for one transformation per turn, e.g. apply(2, "color", '
    '"cyan") or apply(4, "position", "front-left.1"); it answers with a new image of the current state and what the '
    "turn did. When the current state matches the target, call finish()."
)
TEXT_INSTRUCTIONS = (
    'Use the tools. Call apply(object_id, attribute, value) for one transformation per turn, e.g. apply(2, "color", '
    '"cyan") or apply(4, "position", "front-left.1"); it answers with what the turn did and the current objects. '
    "When the current state matches the target, call finish()."
)
_ANSWER_LINES = ("Answer format:", "Example:")
OVER = "The episode is over: call no more tools."
BUDGET_OVER = "No images left, so the episode is over: call no more tools."


def tool_prompt(prompt: str, use_images: bool = True) -> str:
    """The environment's prompt for tool use: its answer-format lines give way to how to call the tools."""
    lines = prompt.split("\n")
    at = next((k for k, line in enumerate(lines) if line.startswith(_ANSWER_LINES)), len(lines))
    kept = [line for line in lines if not line.startswith(_ANSWER_LINES)]
    kept.insert(at, IMAGE_INSTRUCTIONS if use_images else TEXT_INSTRUCTIONS)
    return "\n".join(kept).replace("answer done", "call finish()")


def _image(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.asarray(array, dtype=np.uint8))


class TVRToolEnv:
    """One interactive TVR episode per rollout, played through tool calls (TRL's ``environment_factory``).

    ``setting`` is the default when a row has none; ``use_images`` shows the target and the current
    state as images (off: as tables, with ``obs_mode="text"``); ``max_images`` caps the images of a
    rollout (:class:`tvr_gym.core.chat.ImageBudget`; TRL keeps every image in the context, so a rollout of
    ``t`` turns holds ``2 + t``): after a turn whose reply image would not fit, the episode ends,
    truncated, with its terminal reward, and the reply is the feedback text alone. Every other keyword
    goes to :class:`tvr_gym.envs.interactive.TVRInteractive` (``render_size``, ``renderer``,
    ``terminal_reward``, ``costs``, ``max_turns``, ...).

    After a rollout, ``rewards`` holds every turn's reward (what ``env.step`` returned), ``truncation``
    the terminal reward of an episode ended by :meth:`TVRInteractive.truncate` (else 0), ``actions`` the
    texts sent to ``env.step``, ``info`` the last ``info`` (``metrics`` and ``interactive`` once the
    episode is over) and ``ended_by`` how it ended: ``finish``, ``turn_limit`` (``max_turns``),
    ``image_budget``, or ``rollout_end`` (the model stopped calling tools; :meth:`get_reward` truncates).
    """

    def __init__(
        self,
        setting: str = "event",
        use_images: bool = True,
        max_images: int | None = None,
        render_size: tuple[int, int] = (160, 120),
        **env_kwargs: Any,
    ) -> None:
        self.setting = check_choice("setting", setting, SETTINGS)
        self.use_images = bool(use_images)
        self.budget = ImageBudget(max_images=max_images)
        if "obs_mode" in env_kwargs:
            raise ValueError("obs_mode: set use_images instead (True: image, False: text)")
        self.env_kwargs = {**env_kwargs, "render_size": tuple(render_size)}
        self.env_kwargs["obs_mode"] = "image" if self.use_images else "text"
        self._envs: dict[str, TVRInteractive] = {}
        self._env: TVRInteractive | None = None
        self.rewards: list[float] = []
        self.truncation = 0.0
        self.actions: list[str] = []
        self.info: dict[str, Any] = {}
        self.done = True
        self.ended_by: str | None = None

    # ------------------------------------------------------------------ TRL's environment contract

    def reset(self, setting: str | None = None, seed: int | None = None, index: int | None = None, **row: Any):
        """Start the episode of a dataset row: ``TVRInteractive(setting).reset(seed=seed, options={"index": index})``.

        Returns the target image, the current image and the prompt as content blocks (TRL appends them
        to the row's last user message), or the prompt alone without images. Other row fields are ignored.
        """
        name = self.setting if setting is None else check_choice("setting", setting, SETTINGS)
        if name not in self._envs:
            self._envs[name] = TVRInteractive(setting=name, **self.env_kwargs)
        self._env = self._envs[name]
        options = None if index is None else {"index": int(index)}
        obs, self.info = self._env.reset(seed=None if seed is None else int(seed), options=options)
        self.rewards, self.truncation, self.actions, self.done, self.ended_by = [], 0.0, [], False, None
        prompt = tool_prompt(obs["prompt"], self.use_images)
        if not self.use_images:
            return prompt
        return [
            {"type": "image", "image": _image(obs["target"])},
            {"type": "image", "image": _image(obs["current"])},
            {"type": "text", "text": prompt},
        ]

    def apply(self, object_id: int, attribute: str, value: str) -> str | list[dict[str, Any]]:
        """Apply one transformation to the current scene: set an attribute of one object.

        Args:
            object_id: The number of the object, from 0 to 9.
            attribute: The attribute to change. (choices: ["color", "material", "position", "shape", "size"])
            value: The new value: a color, material, shape or size name, or for position a direction and a step
                such as front-left.1

        Returns:
            What the turn did, with a new image of the current state.
        """
        if self.done:
            return OVER
        obs = self._step(f"<answer>{object_id}.{attribute}.{value}</answer>", "turn_limit")
        if self.done:
            return obs["feedback"]
        if not self.use_images:
            return obs["feedback"] + "\n" + state_table(self._env.current, "Current objects")
        turns = len(self.rewards)
        if not self.budget.allows(turns, window=turns):  # the reply's image would not fit
            self._truncate("image_budget")
            return obs["feedback"] + " " + BUDGET_OVER
        return [{"type": "image", "image": _image(obs["current"])}, {"type": "text", "text": obs["feedback"]}]

    def finish(self) -> str:
        """Say that the current state matches the target. This ends the episode.

        Returns:
            What the turn did.
        """
        if self.done:
            return OVER
        return self._step("<answer>done</answer>", "finish")["feedback"]

    def get_reward(self) -> float:
        """The episode's total reward: every turn's reward summed, the terminal reward included.

        An episode still running (the model stopped calling tools) is ended first, truncated
        (:meth:`TVRInteractive.truncate`), which adds its terminal reward.
        """
        if not self.done and self._env is not None:
            self._truncate("rollout_end")
        return float(sum(self.rewards) + self.truncation)

    # ------------------------------------------------------------------ internals

    @property
    def env(self) -> TVRInteractive | None:
        """The environment of the current episode."""
        return self._env

    def _step(self, action: str, ending: str) -> dict[str, Any]:
        """``env.step(action)``; ``ending`` names how the episode ended if this turn ends it."""
        assert self._env is not None
        obs, reward, terminated, truncated, self.info = self._env.step(action)
        self.actions.append(action)
        self.rewards.append(float(reward))
        if terminated or truncated:
            self.done, self.ended_by = True, ending
        return obs

    def _truncate(self, why: str) -> None:
        assert self._env is not None
        self.truncation, self.info = self._env.truncate()
        self.done, self.ended_by = True, why


def environment_factory(**kwargs: Any) -> Callable[[], TVRToolEnv]:
    """A zero-argument factory of :class:`TVRToolEnv` with these keywords, for ``GRPOTrainer(environment_factory=...)``.

    The keywords are checked now, by building one environment.
    """
    TVRToolEnv(**kwargs)
    return functools.partial(TVRToolEnv, **kwargs)


def interactive_rows(n: int, setting: str = "event", seed: int = 0, start: int = 0):
    """A ``datasets.Dataset`` of ``n`` rows ``{setting, seed, index}``, ``index`` from ``start``: row ``i``
    is the episode ``TVRInteractive(setting).reset(seed=seed, options={"index": start + i})``."""
    from datasets import Dataset

    check_int("n", n, 1)
    check_int("start", start, 0)
    check_int("seed", seed, 0)
    check_choice("setting", setting, SETTINGS)
    return Dataset.from_dict({"setting": [setting] * n, "seed": [seed] * n, "index": list(range(start, start + n))})


_QWEN_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


def tool_processor(processor):
    """Ready a Qwen-style processor (or tokenizer) for TRL's tool loop; returns it.

    A chat template that cannot render tool calls (the one Qwen2.5-VL ships) is replaced by
    :data:`tvr_gym.core.chat_template.CHAT_TEMPLATE` (the tiny preset's), which renders them in Qwen2.5's format;
    when that template is in use and the tokenizer has no response parser,
    :data:`~tvr_gym.core.chat_template.RESPONSE_TEMPLATE` is set, so TRL reads ``<tool_call>`` s back. A template
    that already supports tools is left to TRL.
    """
    from trl.chat_template_utils import supports_tool_calling

    tokenizer = getattr(processor, "tokenizer", processor)
    missing = [t for t in _QWEN_CHAT_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"tool_processor: not a Qwen-style tokenizer (no {', '.join(missing)})")
    if not supports_tool_calling(processor):
        processor.chat_template = CHAT_TEMPLATE
        tokenizer.chat_template = CHAT_TEMPLATE
    parser = getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None)
    if processor.chat_template == CHAT_TEMPLATE and parser is None:
        tokenizer.response_template = copy.deepcopy(RESPONSE_TEMPLATE)
    return processor


def chat_texts() -> list[str]:
    """Every fixed text a rollout of :class:`TVRToolEnv` puts in a chat: the tool-calling frame of the chat
    template, the tools' schemas, the instructions and the replies. ``make_tiny_model(extra_texts=chat_texts())``
    gives a tiny model whose vocabulary can spell every tool call."""
    from transformers.utils import get_json_schema

    frame = re.sub(r"\{[{%].*?[%}]\}", " ", CHAT_TEMPLATE)
    schemas = [json.dumps(get_json_schema(getattr(TVRToolEnv, name))) for name in ("apply", "finish")]
    replies = "applied illegal moves object off the grid would overlap no change leaves the scene as it looks"
    replies += " unreadable done Turn of No turns left several transformations a turn holds one"
    calls = '<tool_call>\n{"name": "apply", "arguments": {"object_id": 2, "attribute": "color", "value": "cyan"}}'
    return [frame, *schemas, IMAGE_INSTRUCTIONS, TEXT_INSTRUCTIONS, OVER, BUDGET_OVER, replies, calls]
