"""What the verl tests share: verl's own config, worker and dataset built on a tiny local checkpoint.

Nothing here stands in for verl: the config is composed from verl's own Hydra files, the worker is
verl's ``AgentLoopWorker`` and the rows come from verl's ``RLHFDataset``. The one test double is the
LLM server (:class:`ScriptedServer`), as in verl's own agent-loop tests: it returns fixed token ids.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "docs" / "configs"
FEEDBACK_WORDS = (
    "applied illegal moves object off the grid would overlap no change leaves the scene as it looks done "
    "Turn of No turns left unreadable user system assistant"
)
"""Words of the interactive feedback lines, so the tiny tokenizer round-trips them."""


def verl_config_dir() -> str:
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose(overrides: list[str], name: str = "ppo_trainer"):
    """verl's trainer config with ``overrides``, composed by Hydra as ``main_ppo`` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return hydra_compose(name, overrides=list(overrides))


def loop_config(model: Path, data: Path | None = None, prompt_length: int = 4096, response_length: int = 4096,
                extra: tuple[str, ...] = ()):  # fmt: skip
    """The interactive config's agent-loop keys, on the tiny model and a local dataset."""
    overrides = [
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.prompt_length={prompt_length}",
        f"actor_rollout_ref.rollout.response_length={response_length}",
        f"actor_rollout_ref.rollout.agent.agent_loop_config_path={CONFIGS / 'verl_tvr_interactive.agent_loop.yaml'}",
        "actor_rollout_ref.rollout.agent.default_agent_loop=tvr_interactive",
        "data.prompt_key=prompt",
        "data.image_key=images",
        f"data.max_prompt_length={prompt_length}",
        *extra,
    ]
    if data is not None:
        overrides.append(f"data.train_files={data}")
    return compose(overrides)


class ScriptedServer:
    """verl's ``LLMServerClient.generate`` signature: a script of texts per request, each + EOS, as ``TokenOutput``."""

    def __init__(self, tokenizer: Any, texts: list[str], logprob: float = -0.5) -> None:
        self.tokenizer, self.texts, self.logprob = tokenizer, list(texts), logprob
        self.calls: list[dict[str, Any]] = []
        self.outputs: list[list[int]] = []
        self._turn: dict[str, int] = defaultdict(int)

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None,
                       audio_data=None, mm_processor_kwargs=None, **kwargs):  # fmt: skip
        from verl.workers.rollout.replica import TokenOutput

        self.calls.append(
            {"request_id": request_id, "prompt_ids": list(prompt_ids), "images": list(image_data or []),
             "params": dict(sampling_params)}
        )  # fmt: skip
        texts = self.script(request_id, prompt_ids)
        await asyncio.sleep(0)
        turn = self._turn[request_id]
        self._turn[request_id] += 1
        text = texts[min(turn, len(texts) - 1)]
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        ids = ids[: sampling_params["max_tokens"]]
        self.outputs.append(ids)
        return TokenOutput(token_ids=ids, log_probs=[self.logprob] * len(ids), num_preempted=0)

    def script(self, request_id: str, prompt_ids: list[int]) -> list[str]:
        """The texts the episode of ``request_id`` gets, turn by turn."""
        return self.texts


def worker_for(config, server: ScriptedServer | None = None):
    """verl's own ``AgentLoopWorker`` (not as a Ray actor) with ``server`` as its LLM client."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    worker = AgentLoopWorker(config, server)
    return worker


def make_loop(worker, server: ScriptedServer, **entry: Any):
    """The loop as ``AgentLoopWorker._run_agent_loop`` builds it: its registry entry, instantiated by Hydra."""
    import hydra
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap, _agent_loop_registry

    config = OmegaConf.merge(_agent_loop_registry["tvr_interactive"], entry) if entry else (
        _agent_loop_registry["tvr_interactive"]
    )  # fmt: skip
    return hydra.utils.instantiate(
        config=config,
        trainer_config=DictConfigWrap(config=worker.config),
        server_manager=server,
        tokenizer=worker.tokenizer,
        processor=worker.processor,
        hf_model_type=worker.hf_model_type,
        dataset_cls=worker.dataset_cls,
        data_config=DictConfigWrap(worker.config.data),
        tools=ToolListWrap(worker.tools),
    )


def dataset(config, files, tokenizer, processor):
    """verl's ``RLHFDataset`` on ``files`` with ``config.data``, its over-long-prompt filter run in this process.

    ``datasets`` 5 runs ``filter(num_proc=1)`` in a forked pool, which can hang in a process that already
    holds threads (the environment thread, xdist's); ``filter_overlong_prompts_workers=None`` keeps the
    same filter (the step that drops image rows without ``qwen-vl-utils``) in this process.
    """
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    data = OmegaConf.merge(config.data, {"filter_overlong_prompts_workers": None})
    return RLHFDataset([str(f) for f in files], tokenizer, data, processor)
