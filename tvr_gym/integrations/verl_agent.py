"""verl: a multi-turn agent loop for ``TVR-Interactive-v0``, and the dataset it reads.

:class:`TVRInteractiveAgentLoop` plays one interactive episode per dataset row inside verl's rollout:
each turn the policy names one transformation (or ``done``), the environment applies it, and its
reply (the feedback text and a new render of the current state) is appended as a user turn. The
trajectory's score is the sum of the environment's rewards. :func:`episode_rows` and
:func:`export_parquet` write the rows (``python -m tvr_gym.integrations.verl_agent --help``).
``docs/configs/verl_tvr_interactive.sh`` runs it.

Why an agent loop, not an Interaction or a tool (verl ``b178a3cd``)
-------------------------------------------------------------------
- An ``Interaction`` (``verl/interactions/base.py:39-54``) returns text only:
  ``generate_response -> (should_terminate, response_content: str, score, extra)``, and
  ``ToolAgentLoop._handle_interacting_state`` (``verl/experimental/agent_loop/tool_agent_loop.py:379-414``)
  wraps it as ``{"role": "user", "content": <str>}`` and tokenizes it without images (398-401), so an
  interaction cannot show a new render.
- A tool may return images (``ToolResponse.image``, ``tool_agent_loop.py:298-331, 364-370``), but only
  after the model emits a function call in the parser's format (``multi_turn.format``, 118-121), and a
  reply without a tool call ends the rollout (273-278): the TVR action grammar
  (``<answer>2.color.cyan</answer>``, ``done``) is not a function call.
- A custom ``AgentLoopBase`` (``verl/experimental/agent_loop/agent_loop.py:192-323``) owns the whole
  rollout: ``run(sampling_params, **row) -> AgentLoopOutput``. This is the place for an environment
  that returns images every turn.

How this loop follows verl's contract
-------------------------------------
- **Registration.** verl's workers learn of the loop from
  ``actor_rollout_ref.rollout.agent.agent_loop_config_path``, a YAML list of ``{name, _target_, ...}``
  (``agent_loop.py:375-380``; ``verl/trainer/config/rollout/rollout.yaml:220-230``;
  ``docs/configs/verl_tvr_interactive.agent_loop.yaml``), instantiated per sample with
  ``hydra.utils.instantiate`` (``agent_loop.py:508-517``): the entry's extra keys (``max_images``,
  ``max_turn_tokens``) and ``name`` arrive as constructor keywords. ``@register`` (``agent_loop.py:334-342``)
  would only act where this module is imported, and it replaces the entry by a bare ``{_target_}``:
  importing this module registers the name only when no entry holds it, so the first instantiation
  (which imports the module) cannot wipe the YAML's keywords for every later sample. A row picks its
  loop by its ``agent_name`` column, else ``rollout.agent.default_agent_loop`` (``agent_loop.py:442-445``).
- **The row.** ``RLHFDataset.__getitem__`` (``verl/utils/dataset/rl_dataset.py:341-362``) turns the
  ``prompt`` column into ``raw_prompt`` (its ``<image>`` placeholders replaced by the row's ``images``,
  ``_build_messages`` 285-339) and lifts ``extra_info.interaction_kwargs`` to a top-level
  ``interaction_kwargs`` (355, 361). Every non-tensor field reaches ``run`` as a keyword
  (``agent_loop.py:473-478``; in async mode ``ray_trainer.py:536-551`` keeps ``extra_info`` too). The
  episode is ``{env_id, setting, seed, index, env_kwargs}`` of ``interaction_kwargs`` (or of
  ``extra_info["interaction_kwargs"]``, where ``ToolAgentLoop`` reads it, ``tool_agent_loop.py:150``).
- **Tokens.** As in ``ToolAgentLoop``: the prompt is ``apply_chat_template(raw_prompt, images=...)``
  (``agent_loop.py:247-310``); every model turn is appended as the server's token ids with mask 1
  (``tool_agent_loop.py:243-248``); every environment reply is ``apply_chat_template([reply],
  images=[new render], remove_system_prompt=True)`` appended with mask 0 and log-prob 0.0 (353-375). The
  same token sequence is the next turn's prompt, so training sees exactly what generation saw
  (``response_mask`` semantics: ``agent_loop.py:140-141, 414-426``).
- **Images.** ``multi_modal_data["images"]`` lists every image in the order of its image block; the
  worker reprocesses them with the decoded full sequence (``agent_loop.py:642-675``), and each
  ``server_manager.generate`` gets the images of the sequence so far as ``image_data`` (95-122;
  ``tool_agent_loop.py:229-235``). A new render goes through ``self.process_vision_info``
  (``agent_loop.py:226-245``), the dataset's own vision preprocessing, like the row's images.
- **Reward.** ``reward_score`` is set, so the worker skips its reward loop (``agent_loop.py:707``) and
  writes the score on the last response token as ``rm_scores`` (761-767), which the trainer uses as is
  (``verl/trainer/ppo/ray_trainer.py:504-517``); GRPO sums a row's token rewards
  (``verl/trainer/ppo/core_algos.py:303``). verl has no per-token reward from an agent loop, so the
  per-turn rewards go to ``extra_fields["turn_scores"]`` (the name ``ToolAgentLoop`` uses,
  ``tool_agent_loop.py:208``) with ``turn_ends`` (where each model turn ends in ``response_ids``); the
  worker turns extra fields into ``non_tensor_batch`` columns (``agent_loop.py:785-793``).
  ``extra_fields["reward_extra_info"]`` (always the same keys) is logged with the score (773-777,
  795-800; validation ``ray_trainer.py:631-644``; ``acc`` is validation's core metric, 684).
- **Async.** verl runs many loops as tasks of one event loop per worker (``agent_loop.py:472-481``). The
  environment (reset, step, renders) runs on one dedicated thread per process (:func:`env_executor`),
  so the event loop never blocks on it, and the gl renderer's context (one per process,
  ``tvr_gym/render/gl.py``) is made and used on that thread only: renders from a thread other than the
  one that made the context come out wrong, so nothing else in a worker process may render with gl.

What differs from :func:`tvr_gym.chat.interactive_messages`
-----------------------------------------------------------
The layout is the same (target and first render once in the row's prompt, then per turn the model's
text and a user reply with the new render and the feedback, built by ``interactive_messages`` itself),
but a verl trajectory is one token sequence that only grows (one trajectory per prompt,
``docs/advance/agent_loop.rst:76``): an image, once tokenized, stays. So the loop's chat is
``interactive_messages(..., window=len(history))``: every reply keeps its image, and the number of
images is bounded by :class:`~tvr_gym.chat.ImageBudget` (``max_images``) and ``response_length``.
Before a reply whose image would not fit (``ImageBudget.allows``) or whose tokens would not fit
(``response_length``, as ``tool_agent_loop.py:360``), the episode ends, truncated, with its terminal
reward (``TVRInteractive.truncate``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from PIL import Image

from tvr_gym.chat import Exchange, ImageBudget, interactive_messages, placeholder_messages
from tvr_gym.options import check_int

__all__ = [
    "AGENT_NAME",
    "COLUMNS",
    "EXTRA_KEYS",
    "HAVE_VERL",
    "EpisodeSpec",
    "TVRInteractiveAgentLoop",
    "env_executor",
    "episode_rows",
    "export_parquet",
]

AGENT_NAME = "tvr_interactive"
"""The loop's name: the rows' ``agent_name`` and the ``name`` of its agent-loop config entry."""
ENV_ID = "TVR-Interactive-v0"
ABILITY = "visual-reasoning"
EXTRA_KEYS = ("acc", "success", "misplaced", "fixed_strict", "turns", "applied", "image_cut", "length_cut")
"""``reward_extra_info`` keys, the same for every trajectory (verl takes the keys of the batch's first)."""
COLUMNS: dict[str, str] = {
    "data_source": "tvr-interactive/<setting>",
    "agent_name": f"{AGENT_NAME!r}: the agent loop verl runs for the row",
    "prompt": "[{'role': 'user', 'content': '<image><image>' + prompt text}] (a system turn first when given)",
    "images": "[target, current]: the episode's first observation",
    "ability": ABILITY,
    "reward_model": "{'style': 'rule', 'ground_truth': <the problem as JSON>}",
    "extra_info": "{'index', 'split', 'env_id', 'setting', 'seed', 'answer', 'n_steps', 'final_view', "
    "'interaction_kwargs': {'name', 'env_id', 'setting', 'seed', 'index', 'env_kwargs' (JSON)}}",
}
"""The columns of an interactive verl dataset."""

# ---------------------------------------------------------------- verl, when installed

try:
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase as _Base
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register

    HAVE_VERL = True
except ImportError:  # verl absent (as in tvr-gym's own tests): stand-ins with verl's signatures
    HAVE_VERL = False

    @dataclass
    class AgentLoopOutput:  # type: ignore[no-redef]
        """Stand-in for verl's ``AgentLoopOutput`` (``agent_loop.py:133-155``), same fields."""

        prompt_ids: list[int]
        response_ids: list[int]
        response_mask: list[int]
        response_logprobs: list[float] | None = None
        routed_experts: Any = None
        multi_modal_data: dict[str, Any] | None = None
        reward_score: float | None = None
        num_turns: int = 0
        metrics: dict[str, Any] = field(default_factory=dict)
        extra_fields: dict[str, Any] = field(default_factory=dict)

    class _Base:  # type: ignore[no-redef]
        """Stand-in for verl's ``AgentLoopBase`` (``agent_loop.py:192-323``): its constructor and helpers.

        ``apply_chat_template`` ports ``agent_loop.py:247-310``; ``process_vision_info`` returns a
        chat's images in block order (verl's resizes them first with ``qwen_vl_utils``; the processor
        resizes them here).
        """

        def __init__(
            self,
            trainer_config: Any,
            server_manager: Any,
            tokenizer: Any,
            processor: Any,
            dataset_cls: Any = None,
            dataset_config: Any = None,
            **kwargs: Any,
        ) -> None:
            self.config = trainer_config.config
            self.server_manager = server_manager
            self.tokenizer = tokenizer
            self.processor = processor
            self.dataset_cls = dataset_cls
            self.dataset_config = dataset_config.config if dataset_config is not None else {}
            self.apply_chat_template_kwargs = dict(self.dataset_config.get("apply_chat_template_kwargs", {}) or {})
            self.system_prompt = _system_prompt_ids(tokenizer)

        async def process_vision_info(self, messages: list[dict]) -> dict:
            if self.processor is None:
                return {}
            images = [
                _as_pil(block["image"])
                for m in messages
                if isinstance(m.get("content"), list)
                for block in m["content"]
                if isinstance(block, Mapping) and block.get("type") == "image" and block.get("image") is not None
            ]
            return {"images": images} if images else {}

        async def apply_chat_template(
            self,
            messages: list[dict],
            tools: list[dict] | None = None,
            images: list[Any] | None = None,
            videos: Any = None,
            remove_system_prompt: bool = False,
        ) -> list[int]:
            loop = asyncio.get_running_loop()
            if self.processor is not None:
                raw_prompt = await loop.run_in_executor(
                    None,
                    lambda: self.processor.apply_chat_template(
                        messages,
                        tools=tools,
                        add_generation_prompt=True,
                        tokenize=False,
                        **self.apply_chat_template_kwargs,
                    ),
                )
                model_inputs = self.processor(text=[raw_prompt], images=images or None, return_tensors="pt")
                prompt_ids = model_inputs.pop("input_ids").squeeze(0).tolist()
            else:
                prompt_ids = await loop.run_in_executor(
                    None,
                    lambda: _ids(
                        self.tokenizer.apply_chat_template(
                            messages,
                            tools=tools,
                            add_generation_prompt=True,
                            tokenize=True,
                            **self.apply_chat_template_kwargs,
                        )
                    ),
                )
            if remove_system_prompt:
                prompt_ids = prompt_ids[len(self.system_prompt) :]
            return prompt_ids

    def register(agent_name: str):  # type: ignore[no-redef]
        """verl's ``register`` (``agent_loop.py:334-342``) is a no-op without verl."""
        return lambda cls: cls


def _ids(encoded: Any) -> list[int]:
    """Token ids from ``apply_chat_template(tokenize=True)``: a list, or a ``BatchEncoding`` (transformers 5)."""
    if isinstance(encoded, Mapping) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def _system_prompt_ids(tokenizer: Any) -> list[int]:
    """verl's ``initialize_system_prompt`` (``verl/utils/chat_template.py:9-28``): the default system turn."""
    one = _ids(
        tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=False, tokenize=True)
    )
    two = _ids(
        tokenizer.apply_chat_template([{"role": "user", "content": ""}] * 2, add_generation_prompt=False, tokenize=True)
    )
    return one[: -(len(two) - len(one))]


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


# ---------------------------------------------------------------- the environment thread

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_PID: int | None = None
_EXECUTOR_LOCK = threading.Lock()


def env_executor() -> ThreadPoolExecutor:
    """This process's one environment thread (a new one after a fork): every reset, step and render runs there.

    The gl renderer's OpenGL context belongs to the thread that made it, and the renderers are shared
    by every episode of the process (:func:`tvr_gym.cache.shared_renderer`), so one thread serves them
    all; episodes interleave at turn boundaries.
    """
    global _EXECUTOR, _EXECUTOR_PID
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR_PID != os.getpid():
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvr-env")
            _EXECUTOR_PID = os.getpid()
        return _EXECUTOR


async def _on_env_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(env_executor(), functools.partial(fn, *args))


# ---------------------------------------------------------------- episodes


@dataclass(frozen=True)
class EpisodeSpec:
    """A row's episode: ``gym.make(env_id, setting=setting, **env_kwargs)`` reset with ``seed`` and ``index``."""

    setting: str
    seed: int
    index: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_id: str = ENV_ID

    def interaction_kwargs(self) -> dict[str, Any]:
        """The row's ``extra_info["interaction_kwargs"]`` (``env_kwargs`` as JSON, so every row has one schema)."""
        return {
            "name": AGENT_NAME,
            "env_id": self.env_id,
            "setting": self.setting,
            "seed": int(self.seed),
            "index": int(self.index),
            "env_kwargs": json.dumps(self.env_kwargs, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EpisodeSpec:
        """The spec of a row as verl passes it to ``run``: ``interaction_kwargs`` (lifted from ``extra_info``
        by ``RLHFDataset``), else ``extra_info["interaction_kwargs"]``."""
        found = row.get("interaction_kwargs")
        if not found:
            found = (row.get("extra_info") or {}).get("interaction_kwargs")
        if not found:
            raise ValueError(
                "row: no interaction_kwargs (expected extra_info.interaction_kwargs with setting, seed, index; "
                "build the dataset with tvr_gym.integrations.verl_agent.export_parquet)"
            )
        missing = [k for k in ("setting", "seed", "index") if found.get(k) is None]
        if missing:
            raise ValueError(f"interaction_kwargs: missing {', '.join(missing)}")
        env_kwargs = found.get("env_kwargs") or {}
        if isinstance(env_kwargs, str):
            env_kwargs = json.loads(env_kwargs)
        return cls(
            setting=str(found["setting"]),
            seed=int(found["seed"]),
            index=int(found["index"]),
            env_kwargs=dict(env_kwargs),
            env_id=str(found.get("env_id") or ENV_ID),
        )

    def make(self):
        """A new environment of this spec (not reset)."""
        import gymnasium as gym

        from tvr_gym.registration import check_env_id

        if self.env_id != ENV_ID:
            raise ValueError(f"env_id: the verl agent loop plays {ENV_ID}, got {self.env_id!r}")
        env = gym.make(check_env_id(self.env_id), setting=self.setting, **self.env_kwargs)
        if env.unwrapped.obs_mode != "image":
            raise ValueError("env_kwargs: the verl agent loop shows images; obs_mode must be 'image'")
        return env

    def start(self):
        """(env, obs, info): a new environment reset to this spec's episode."""
        env = self.make()
        obs, info = env.reset(seed=self.seed, options={"index": self.index})
        return env, obs, info


@dataclass
class _Step:
    """One environment turn, as the loop needs it (made on the environment thread)."""

    reward: float
    done: bool
    feedback: str
    current: np.ndarray
    info: dict[str, Any]


def _env_step(env: Any, action: str) -> _Step:
    obs, reward, terminated, truncated, info = env.step(action)
    return _Step(float(reward), bool(terminated or truncated), obs["feedback"], obs["current"], info)


def _env_truncate(env: Any) -> tuple[float, dict[str, Any]]:
    unwrapped = env.unwrapped
    if not hasattr(unwrapped, "truncate"):
        raise RuntimeError("TVRInteractive.truncate() is missing: this tvr_gym cannot end an episode early")
    terminal, info = unwrapped.truncate()
    return float(terminal), info


def _user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message (``<image>`` placeholders dropped)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content.replace("<image>", "")
        return "".join(b.get("text") or "" for b in content or () if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def _extra_info(info: Mapping[str, Any], image_cut: bool, length_cut: bool) -> dict[str, float]:
    interactive = info.get("interactive") or {}
    metrics = info.get("metrics") or {}
    out = {
        "acc": float(metrics.get("acc", 0.0)),
        "success": float(interactive.get("success", 0.0)),
        "misplaced": float(interactive.get("misplaced", 0.0)),
        "fixed_strict": float(interactive.get("fixed_strict", 0.0)),
        "turns": float(interactive.get("turns", 0)),
        "applied": float(interactive.get("applied", 0)),
        "image_cut": float(image_cut),
        "length_cut": float(length_cut),
    }
    assert tuple(out) == EXTRA_KEYS
    return out


# ---------------------------------------------------------------- the agent loop


class TVRInteractiveAgentLoop(_Base):
    """verl agent loop: one ``TVR-Interactive-v0`` episode per row, a user turn with a new image per environment reply.

    Keywords (from the agent-loop config entry): ``max_images`` (:class:`~tvr_gym.chat.ImageBudget`:
    images in the whole trajectory, the row's two included; ``None``: only ``response_length``
    bounds them) and ``max_turn_tokens`` (tokens per model turn; ``None``: what is left of
    ``response_length``). The episode itself (setting, seed, index, environment keywords such as
    ``render_size``, ``terminal_reward``, ``slack``) comes from the row.
    """

    def __init__(
        self,
        trainer_config: Any,
        server_manager: Any,
        tokenizer: Any,
        processor: Any,
        max_images: int | None = None,
        max_turn_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(trainer_config, server_manager, tokenizer, processor, **kwargs)
        rollout = self.config.actor_rollout_ref.rollout
        self.prompt_length = int(rollout.prompt_length)
        self.response_length = int(rollout.response_length)
        self.budget = ImageBudget(max_images)
        self.max_turn_tokens = None if max_turn_tokens is None else check_int("max_turn_tokens", max_turn_tokens, 1)
        self.messages: list[dict[str, Any]] = []
        """The chat of the last :meth:`run` (the row's prompt, then the turns), for inspection."""

    async def _vision(self, image: np.ndarray) -> list[Any]:
        """A render as the dataset preprocesses images (``process_vision_info``), so every image takes one path."""
        found = await self.process_vision_info(
            [{"role": "user", "content": [{"type": "image", "image": _as_pil(image)}]}]
        )
        images = found.get("images")
        if not images or len(images) != 1:
            raise ValueError("processor: the TVR agent loop needs a vision-language model (a processor with images)")
        return list(images)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        spec = EpisodeSpec.from_row(kwargs)
        messages = list(kwargs["raw_prompt"])
        metrics: dict[str, Any] = {"generate_sequences": 0.0, "tool_calls": 0.0}

        tic = time.perf_counter()
        env, obs, _ = await _on_env_thread(spec.start)
        metrics["tool_calls"] += time.perf_counter() - tic
        if _user_text(messages).strip() != obs["prompt"].strip():
            raise ValueError(
                f"row {spec.index}: its prompt is not the episode's ({spec}); was the dataset built with other "
                "environment keywords or another tvr_gym version?"
            )
        vision = await self.process_vision_info(messages)
        images: list[Any] = list(vision.get("images") or [])
        if len(images) != 2:
            raise ValueError(f"row {spec.index}: expected 2 images (target, current) in the prompt, got {len(images)}")
        prompt_ids = list(await self.apply_chat_template(messages, images=images))
        if len(prompt_ids) > self.prompt_length:
            raise ValueError(
                f"row {spec.index}: the prompt takes {len(prompt_ids)} tokens > prompt_length {self.prompt_length}"
            )

        ids = list(prompt_ids)
        mask: list[int] = []
        logprobs: list[float] = []
        turn_scores: list[float] = []
        turn_ends: list[int] = []
        history: list[Exchange] = []
        request_id = uuid4().hex
        image_cut = length_cut = False
        info: dict[str, Any] = {}
        loop = asyncio.get_running_loop()

        while True:
            room = self.response_length - len(mask)
            params = dict(sampling_params)
            params["max_tokens"] = room if self.max_turn_tokens is None else min(room, self.max_turn_tokens)
            tic = time.perf_counter()
            out = await self.server_manager.generate(
                request_id=request_id, prompt_ids=list(ids), sampling_params=params, image_data=list(images)
            )
            metrics["generate_sequences"] += time.perf_counter() - tic
            preempted = getattr(out, "num_preempted", None)
            if "num_preempted" not in metrics:
                metrics["num_preempted"] = preempted if preempted is not None else -1
            else:
                metrics["num_preempted"] += preempted or 0
            tokens = list(out.token_ids)
            ids += tokens
            mask += [1] * len(tokens)
            if out.log_probs:
                logprobs += list(out.log_probs)
            turn_ends.append(len(mask))
            text = await loop.run_in_executor(None, lambda t=tokens: self.tokenizer.decode(t, skip_special_tokens=True))
            messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})

            tic = time.perf_counter()
            step = await _on_env_thread(_env_step, env, text)
            metrics["tool_calls"] += time.perf_counter() - tic
            turn_scores.append(step.reward)
            info = step.info
            if step.done:
                break
            turns = len(history) + 1
            if not self.budget.allows(turns, window=turns):  # the reply's image would not fit
                image_cut = True
            else:
                history.append(Exchange(text, step.feedback, step.current))
                chat, _ = interactive_messages(
                    obs["prompt"], obs["target"], obs["current"], history, window=len(history)
                )
                reply = chat[-1]
                new_images = await self._vision(step.current)
                reply_ids = list(await self.apply_chat_template([reply], images=new_images, remove_system_prompt=True))
                if len(mask) + len(reply_ids) >= self.response_length:
                    length_cut = True  # no room for the reply and a turn after it (tool_agent_loop.py:360)
                else:
                    ids += reply_ids
                    mask += [0] * len(reply_ids)
                    if logprobs:
                        logprobs += [0.0] * len(reply_ids)
                    images += new_images
                    messages.append(reply)
                    continue
            tic = time.perf_counter()
            terminal, info = await _on_env_thread(_env_truncate, env)
            metrics["tool_calls"] += time.perf_counter() - tic
            turn_scores[-1] += terminal
            break

        self.messages = messages
        response_ids = ids[len(prompt_ids) :]
        assert len(response_ids) == len(mask) <= self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids,
            response_mask=mask,
            response_logprobs=logprobs if logprobs else None,
            multi_modal_data={"images": images},
            reward_score=float(sum(turn_scores)),
            num_turns=len(messages),
            metrics=metrics,
            extra_fields={
                "turn_scores": turn_scores,
                "turn_ends": turn_ends,
                "tvr_state": await _on_env_thread(lambda: env.unwrapped.get_state()),
                "reward_extra_info": _extra_info(info, image_cut, length_cut),
            },
        )


if HAVE_VERL:  # a name from agent_loop_config_path keeps its keywords (see the module docstring)
    from verl.experimental.agent_loop import agent_loop as _verl_agent_loop

    if AGENT_NAME not in getattr(_verl_agent_loop, "_agent_loop_registry", {}):
        TVRInteractiveAgentLoop = register(AGENT_NAME)(TVRInteractiveAgentLoop)


# ---------------------------------------------------------------- the dataset


def episode_rows(
    n: int,
    seed: int = 0,
    start: int = 0,
    setting: str = "event",
    split: str = "train",
    system: str | None = None,
    **env_kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """verl rows of episodes ``start .. start + n - 1``: row ``i`` is ``reset(seed=seed, options={"index": i})``.

    Each row holds the first observation (the prompt with one ``<image>`` per image, and the images
    [target, current]) and the episode spec in ``extra_info.interaction_kwargs`` (:data:`COLUMNS`).
    ``env_kwargs`` go to ``TVR-Interactive-v0`` here and in the agent loop: pin ``renderer`` when the
    rows are built on another machine than the rollouts, so the first images and the later renders
    come from the same renderer.
    """
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        check_int(name, value, 0)
    env_kwargs = json.loads(json.dumps(env_kwargs))  # as the loop will see them (tuples become lists)
    probe = EpisodeSpec(setting, seed, start, env_kwargs)
    env = probe.make()
    try:
        for i in range(start, start + n):
            spec = EpisodeSpec(setting, seed, i, env_kwargs)
            obs, info = env.reset(seed=seed, options={"index": i})
            problem = env.unwrapped.problem
            yield {
                "data_source": f"tvr-interactive/{setting}",
                "agent_name": AGENT_NAME,
                "prompt": placeholder_messages(obs["prompt"], 2, system),
                "images": [Image.fromarray(obs["target"]), Image.fromarray(obs["current"])],
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": json.dumps(problem.to_dict(), separators=(",", ":"))},
                "extra_info": {
                    "index": i,
                    "split": split,
                    "env_id": ENV_ID,
                    "setting": setting,
                    "seed": seed,
                    "answer": info["truth"],
                    "n_steps": len(problem.transformations),
                    "final_view": info["final_view"],
                    "interaction_kwargs": spec.interaction_kwargs(),
                },
            }
    finally:
        env.close()


def _features():
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "data_source": text,
            "agent_name": text,
            "prompt": List({"role": text, "content": text}),
            "images": List(Image()),
            "ability": text,
            "reward_model": {"style": text, "ground_truth": text},
            "extra_info": {
                "index": Value("int64"),
                "split": text,
                "env_id": text,
                "setting": text,
                "seed": Value("int64"),
                "answer": text,
                "n_steps": Value("int32"),
                "final_view": text,
                "interaction_kwargs": {
                    "name": text,
                    "env_id": text,
                    "setting": text,
                    "seed": Value("int64"),
                    "index": Value("int64"),
                    "env_kwargs": text,
                },
            },
        }
    )


def _rows_for_datasets(
    n: int, seed: int, start: int, setting: str, split: str, system: str | None, env_kwargs: dict
) -> Iterator[dict[str, Any]]:
    yield from episode_rows(n, seed, start, setting, split, system, **env_kwargs)


def export_parquet(
    out: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    start: int = 0,
    setting: str = "event",
    split: str = "train",
    system: str | None = None,
    **env_kwargs: Any,
) -> Path:
    """Write :func:`episode_rows` to ``out/<split>.parquet`` (for ``data.train_files`` / ``val_files``); returns it.

    The images are stored as ``datasets`` images, so ``RLHFDataset`` reads them as PIL images.
    """
    import tempfile

    from datasets import Dataset

    if not re.fullmatch(r"[A-Za-z0-9_-]+", split or ""):
        raise ValueError(f"split: expected a name of letters, digits, '-' or '_', got {split!r}")
    EpisodeSpec(setting, seed, start, json.loads(json.dumps(env_kwargs))).make().close()  # bad keywords fail first
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-verl-interactive-", dir=out) as tmp:
        dataset = Dataset.from_generator(
            _rows_for_datasets,
            features=_features(),
            gen_kwargs={
                "n": n,
                "seed": seed,
                "start": start,
                "setting": setting,
                "split": split,
                "system": system,
                "env_kwargs": env_kwargs,
            },
            cache_dir=str(Path(tmp) / "cache"),
        )
        staged = Path(tmp) / f"{split}.parquet"
        dataset.to_parquet(str(staged))
        del dataset
        target = out / f"{split}.parquet"
        os.replace(staged, target)
    return target


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m tvr_gym.integrations.verl_agent --out DIR --n N [--seed S --start K --split NAME --setting S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tvr_gym.integrations.verl_agent",
        description="Write a verl dataset of TVR-Interactive-v0 episodes.",
    )
    parser.add_argument("--out", required=True, help="directory; writes <out>/<split>.parquet")
    parser.add_argument("--n", type=int, required=True, help="number of episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first episode index")
    parser.add_argument("--split", default="train")
    parser.add_argument("--setting", default="event", help="basic, event or crossview")
    parser.add_argument("--system", default=None, help="a system prompt (none by default)")
    parser.add_argument(
        "--env-kwargs", default="{}", help='TVR-Interactive-v0 keywords as JSON, e.g. \'{"renderer": "gl"}\''
    )
    args = parser.parse_args(argv)
    env_kwargs = json.loads(args.env_kwargs)
    if not isinstance(env_kwargs, dict):
        parser.error("--env-kwargs: expected a JSON object")
    path = export_parquet(args.out, args.n, args.seed, args.start, args.setting, args.split, args.system, **env_kwargs)
    print(path)
    return path


if __name__ == "__main__":
    main()
