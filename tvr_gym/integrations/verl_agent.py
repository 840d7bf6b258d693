"""verl: a multi-turn agent loop for ``TVR-Interactive-v0`` (needs verl 0.9.x: ``pip install -e ".[verl]"``).

:class:`TVRInteractiveAgentLoop` plays one interactive episode per dataset row inside verl's rollout:
each turn the policy names one transformation (or ``done``), the environment applies it, and its
reply (the feedback text and a new render of the current state) is appended as a user turn. The
trajectory's score is the sum of the environment's rewards. The rows come from
``tvr-gym export --format verl --env TVR-Interactive-v0`` (:func:`tvr_gym.data.export.export`);
``docs/configs/verl_tvr_interactive.sh`` runs it.

Why an agent loop, not an Interaction or a tool
-----------------------------------------------
- An ``Interaction`` (``verl/interactions/base.py``) returns text only, so it cannot show a new render.
- A tool may return images (``ToolResponse.image``), but only after the model emits a function call in
  the parser's format, and a reply without a tool call ends ``ToolAgentLoop``'s rollout: the TVR action
  grammar (``<answer>2.color.cyan</answer>``, ``done``) is not a function call.
- A custom ``AgentLoopBase`` owns the whole rollout: ``run(sampling_params, **row) -> AgentLoopOutput``.

How this loop follows verl's contract (verl 0.9.1, ``verl/experimental/agent_loop/``)
-------------------------------------------------------------------------------------
- **Registration.** verl's workers load ``actor_rollout_ref.rollout.agent.agent_loop_config_path``, a
  YAML list of ``{name, _target_, ...}`` (``docs/configs/verl_tvr_interactive.agent_loop.yaml``), and
  build one loop per sample with ``hydra.utils.instantiate``: the entry's extra keys (``max_images``,
  ``max_turn_tokens``) arrive as constructor keywords. ``@register`` would replace such an entry by a
  bare ``{_target_}``, so importing this module registers the name only when no entry holds it.
- **The row.** ``RLHFDataset.__getitem__`` turns the ``prompt`` column into ``raw_prompt`` (its
  ``<image>`` placeholders replaced by the row's images) and lifts ``extra_info.interaction_kwargs``;
  every non-tensor field reaches :meth:`TVRInteractiveAgentLoop.run` as a keyword.
- **Tokens.** The same way as ``ToolAgentLoop``, through verl's continuous-token builder: the prompt is
  ``ct_build_initial_tokens(raw_prompt, images=...)``; each model turn is the server's token ids merged
  by ``ct_merge_assistant_token`` (mask 1, the server's log-probs); each environment reply is a user
  message merged by ``ct_merge_context_msg`` (mask 0, log-prob 0), which also puts back the ``\\n``
  that Qwen's template writes after ``<|im_end|>`` and generation stops before. The same token
  sequence is the next turn's prompt, so training sees exactly what generation saw.
- **Images.** A new render goes through ``process_multi_modal_info``, the dataset's own vision
  preprocessing (``qwen_vl_utils``), like the row's images; ``multi_modal_data["images"]`` lists every
  image in the order of its block, and each ``generate`` call gets the images of the sequence so far.
- **Reward.** ``reward_score`` is set, so the worker skips its reward loop and writes the score on the
  last response token as ``rm_scores``. verl has no per-token reward from an agent loop, so the
  per-turn rewards go to ``extra_fields["turn_scores"]`` (the name ``ToolAgentLoop`` uses) with
  ``turn_ends`` (where each model turn ends in ``response_ids``); ``extra_fields["reward_extra_info"]``
  (always the keys of :data:`EXTRA_KEYS`) is logged with the score.
- **Async.** verl runs many loops as tasks of one event loop per worker. The environment (reset, step,
  renders) runs on one dedicated thread per process (:func:`env_executor`), so the event loop never
  blocks on it, and the gl renderer's context (one per process, ``tvr_gym/render/gl.py``) is made and
  used on that thread only: renders from a thread other than the one that made the context come out
  wrong, so nothing else in a worker process may render with gl.

What differs from :func:`tvr_gym.core.chat.interactive_messages`
-----------------------------------------------------------
The layout is the same (target and first render once in the row's prompt, then per turn the model's
text and a user reply with the new render and the feedback), but a verl trajectory is one token
sequence that only grows: an image, once tokenized, stays. So every reply keeps its image, and the
number of images is bounded by :class:`~tvr_gym.core.chat.ImageBudget` (``max_images``) and
``response_length``. Before a reply whose image would not fit (``ImageBudget.allows``) or whose tokens
would not fit (``response_length``, as ``ToolAgentLoop``), the episode ends, truncated, with its
terminal reward (``TVRInteractive.truncate``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import numpy as np
from PIL import Image

from tvr_gym.core.chat import ImageBudget
from tvr_gym.core.options import check_int
from tvr_gym.data.export import VERL_AGENT_NAME as AGENT_NAME
from tvr_gym.envs.registration import INTERACTIVE_ID as ENV_ID

try:
    from verl.experimental.agent_loop import agent_loop as _verl_agent_loop
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "tvr_gym.integrations.verl_agent needs verl 0.9.x: pip install -e '.[verl]' (docs/integrations.md). "
        "The rows need only datasets: tvr-gym export --format verl --env TVR-Interactive-v0."
    ) from exc

__all__ = ["AGENT_NAME", "EXTRA_KEYS", "EpisodeSpec", "TVRInteractiveAgentLoop", "env_executor"]

EXTRA_KEYS = ("acc", "success", "misplaced", "fixed_strict", "turns", "applied", "image_cut", "length_cut")
"""``reward_extra_info`` keys, the same for every trajectory (verl takes the keys of the batch's first)."""


# ---------------------------------------------------------------- the row's episode


@dataclass(frozen=True)
class EpisodeSpec:
    """A row's episode: ``gym.make(env_id, setting=setting, **env_kwargs)`` reset with ``seed`` and ``index``."""

    setting: str
    seed: int
    index: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_id: str = ENV_ID

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
                "export the dataset with tvr-gym export --format verl --env TVR-Interactive-v0)"
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

        from tvr_gym.envs.registration import check_env_id

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


# ---------------------------------------------------------------- the environment thread

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_PID: int | None = None
_EXECUTOR_LOCK = threading.Lock()


def env_executor() -> ThreadPoolExecutor:
    """This process's one environment thread (a new one after a fork): every reset, step and render runs there.

    The gl renderer's OpenGL context belongs to the thread that made it, and the renderers are shared
    by every episode of the process (:func:`tvr_gym.render.pool.shared_renderer`), so one thread serves them
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
    terminal, info = env.unwrapped.truncate()
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


@dataclass
class _Trajectory:
    """What one rollout has built so far: the chat, the token sequence with its mask and log-probs, the
    images in block order, the reward of each turn and where each model turn ends."""

    messages: list[dict[str, Any]]
    prompt_ids: list[int]
    ids: list[int]
    images: list[Any]
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    turn_scores: list[float] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)
    replies: int = 0
    image_cut: bool = False
    length_cut: bool = False
    timing: dict[str, float] = field(default_factory=dict)
    num_preempted: int | None = None


# ---------------------------------------------------------------- the agent loop


class TVRInteractiveAgentLoop(AgentLoopBase):
    """verl agent loop: one ``TVR-Interactive-v0`` episode per row, a user turn with a new image per environment reply.

    Keywords (from the agent-loop config entry): ``max_images`` (:class:`~tvr_gym.core.chat.ImageBudget`:
    images in the whole trajectory, the row's two included; ``None``: only ``response_length``
    bounds them) and ``max_turn_tokens`` (tokens per model turn; ``None``: what is left of
    ``response_length``). The episode itself (setting, seed, index, environment keywords such as
    ``render_size``, ``terminal_reward``, ``slack``) comes from the row.
    """

    def __init__(
        self,
        *args: Any,
        max_images: int | None = None,
        max_turn_tokens: int | None = None,
        tools: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("name", None)  # the config entry's name (agent_loop.py instantiates the entry whole)
        super().__init__(*args, **kwargs)
        self.prompt_length = int(self.rollout_config.prompt_length)
        self.response_length = int(self.rollout_config.response_length)
        self.budget = ImageBudget(max_images)
        self.max_turn_tokens = None if max_turn_tokens is None else check_int("max_turn_tokens", max_turn_tokens, 1)
        self.messages: list[dict[str, Any]] = []
        """The chat of the last :meth:`run` (the row's prompt, then the turns), for inspection."""

    async def _reply(self, feedback: str, render: np.ndarray) -> tuple[dict[str, Any], list[Any]]:
        """The environment's reply as a user message (the new render, then the feedback: the reply of
        :func:`tvr_gym.core.chat.interactive_messages`), its render preprocessed as the dataset's images are."""
        message = {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.fromarray(np.asarray(render, dtype=np.uint8)).convert("RGB")},
                {"type": "text", "text": feedback},
            ],
        }
        images = (await self.process_multi_modal_info([message])).get("images") or []
        if len(images) != 1:
            raise ValueError("processor: the TVR agent loop needs a vision-language model (a processor with images)")
        message["content"][0]["image"] = images[0]
        return message, list(images)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """Play the row's episode: model turn, environment turn, until the episode ends or is cut."""
        env, trajectory = await self._begin(kwargs)
        request_id = uuid4().hex
        while True:
            text = await self._model_turn(trajectory, sampling_params, request_id)
            done, info = await self._environment_turn(env, trajectory, text)
            if done:
                break
        self.messages = trajectory.messages
        return await self._output(env, trajectory, info)

    async def _begin(self, row: dict[str, Any]) -> tuple[Any, _Trajectory]:
        """The row's episode started, its prompt checked against the environment's, and the prompt's tokens."""
        spec = EpisodeSpec.from_row(row)
        messages = list(row["raw_prompt"])
        timing = {"generate_sequences": 0.0, "tool_calls": 0.0}
        tic = time.perf_counter()
        env, obs, _ = await _on_env_thread(spec.start)
        timing["tool_calls"] += time.perf_counter() - tic
        if _user_text(messages).strip() != obs["prompt"].strip():
            raise ValueError(
                f"row {spec.index}: its prompt is not the episode's ({spec}); was the dataset built with other "
                "environment keywords or another tvr_gym version?"
            )
        images: list[Any] = list((await self.process_multi_modal_info(messages)).get("images") or [])
        if len(images) != 2:
            raise ValueError(f"row {spec.index}: expected 2 images (target, current) in the prompt, got {len(images)}")
        self._assert_mm_supported(True)
        prompt_ids = list(await self.ct_build_initial_tokens(messages, images=images))
        return env, _Trajectory(messages, prompt_ids, list(prompt_ids), images, timing=timing)

    async def _model_turn(self, t: _Trajectory, sampling_params: dict[str, Any], request_id: str) -> str:
        """One model turn: generate within the room left, merge its tokens (mask 1) and return its text."""
        room = self.response_length - len(t.mask)
        params = dict(sampling_params)
        params["max_tokens"] = room if self.max_turn_tokens is None else min(room, self.max_turn_tokens)
        tic = time.perf_counter()
        out = await self.server_manager.generate(
            request_id=request_id, prompt_ids=list(t.ids), sampling_params=params, image_data=list(t.images)
        )
        t.timing["generate_sequences"] += time.perf_counter() - tic
        if t.num_preempted is None:  # as ToolAgentLoop: -1 when the server does not say
            t.num_preempted = out.num_preempted if out.num_preempted is not None else -1
        else:
            t.num_preempted += out.num_preempted or 0
        tokens = list(out.token_ids)
        if out.log_probs and t.logprobs is None:
            t.logprobs = [0.0] * len(t.mask)
        served = list(out.log_probs) if t.logprobs is not None else None
        merged, t.mask, t.logprobs = await self.ct_merge_assistant_token(
            t.ids, tokens, t.mask, t.logprobs, assistant_logprobs=served
        )
        t.ids = merged.token_ids
        t.turn_ends.append(len(t.mask))
        text = await self.loop.run_in_executor(None, lambda: self.tokenizer.decode(tokens, skip_special_tokens=True))
        t.messages.append({"role": "assistant", "content": text})
        return text

    async def _environment_turn(self, env: Any, t: _Trajectory, text: str) -> tuple[bool, dict[str, Any]]:
        """Step the environment with ``text``; merge its reply (mask 0) when the image budget and the
        response length leave room, else end the episode truncated. (whether it ended, the last info)"""
        tic = time.perf_counter()
        step = await _on_env_thread(_env_step, env, text)
        t.timing["tool_calls"] += time.perf_counter() - tic
        t.turn_scores.append(step.reward)
        if step.done:
            return True, step.info
        if not self.budget.allows(t.replies + 1, window=t.replies + 1):  # the reply's image would not fit
            t.image_cut = True
        else:
            reply, new_images = await self._reply(step.feedback, step.current)
            merged, new_mask, new_logprobs = await self.ct_merge_context_msg(
                t.messages, [*t.messages, reply], t.ids, t.mask, t.logprobs
            )
            if len(new_mask) < self.response_length:
                t.ids, t.mask, t.logprobs = merged.token_ids, new_mask, new_logprobs
                t.replies += 1
                t.images += new_images
                t.messages.append(reply)
                return False, step.info
            t.length_cut = True  # no room for the reply and a turn after it (as ToolAgentLoop)
        tic = time.perf_counter()
        terminal, info = await _on_env_thread(_env_truncate, env)
        t.timing["tool_calls"] += time.perf_counter() - tic
        t.turn_scores[-1] += terminal
        return True, info

    async def _output(self, env: Any, t: _Trajectory, info: dict[str, Any]) -> AgentLoopOutput:
        response_ids = t.ids[len(t.prompt_ids) :]
        assert len(response_ids) == len(t.mask) <= self.response_length
        return AgentLoopOutput(
            prompt_ids=list(t.prompt_ids),
            response_ids=response_ids,
            response_mask=t.mask,
            response_logprobs=t.logprobs,
            multi_modal_data={"images": t.images},
            reward_score=float(sum(t.turn_scores)),
            num_turns=len(t.messages),
            metrics=AgentLoopMetrics(**t.timing, num_preempted=-1 if t.num_preempted is None else t.num_preempted),
            extra_fields={
                "turn_scores": t.turn_scores,
                "turn_ends": t.turn_ends,
                "tvr_state": await _on_env_thread(lambda: env.unwrapped.get_state()),
                "reward_extra_info": _extra_info(info, t.image_cut, t.length_cut),
            },
        )


# A name from agent_loop_config_path keeps its keywords (see the module docstring).
if AGENT_NAME not in _verl_agent_loop._agent_loop_registry:
    TVRInteractiveAgentLoop = register(AGENT_NAME)(TVRInteractiveAgentLoop)
