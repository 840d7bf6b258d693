"""``tvr-gym train grpo|ppo|trl-grpo|sft`` and ``tvr-gym make-tiny-model``.

Every trainer's flags are generated from its config dataclass (:func:`tvr_gym.apps.cliargs.add_dataclass_arguments`),
so a config and its command line cannot drift apart; the environment's keywords come from the same
helper as every other subcommand's. This module imports torch; ``tvr_gym.apps.cli`` loads it only for
the commands that need it.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import torch

from tvr_gym.agents.mllm.grpo import GRPOConfig, train
from tvr_gym.agents.mllm.tiny import make_tiny_model
from tvr_gym.agents.mllm.trl_train import TVRArguments, train_sft, train_trl_grpo
from tvr_gym.agents.mllm.warmup import max_items_of, warmup_format
from tvr_gym.agents.ppo import MODEL_FILE, PPOConfig, train_from_config
from tvr_gym.apps.cliargs import TRL_ALIASES, add_dataclass_arguments, add_env_options, dataclass_from_args, env_kwargs
from tvr_gym.core.options import check_int
from tvr_gym.core.prompt import OBS_MODES

CONFIG_OPTIONS = ("size", "obs_mode", "reward")
"""Environment options that a trainer's config holds itself (so the env helper does not add them twice)."""


def register(subparsers: Any, train_subparsers: Any) -> None:
    """Add ``make-tiny-model`` to the top-level commands and the trainers to ``train``'s."""
    tiny = subparsers.add_parser("make-tiny-model", help="build a tiny random Qwen2.5-VL checkpoint")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument(
        "--tools", action="store_true", help="a vocabulary that spells TRL's tool calls of TVR-Interactive-v0 "
        "(tvr_gym.integrations.trl_env): for environment_factory runs",
    )  # fmt: skip
    tiny.add_argument("--image-tokens", type=int, default=6, help="cap on vision tokens per image (6 keeps a 160x120 "
                      "render at 4 tokens; 24 keeps it whole at 168x112)")  # fmt: skip
    tiny.add_argument(
        "--warmup-steps", type=int, default=0, help="format warm-up steps on random answers (0: none, random weights)"
    )
    tiny.add_argument("--env", default="TVR-Basic-v0", help="the TVR environment whose prompts the warm-up uses")
    tiny.add_argument("--obs-mode", choices=OBS_MODES, default="text", help="observation mode of the warm-up prompts")
    tiny.add_argument("--warmup-batch-size", type=int, default=8)
    tiny.add_argument("--warmup-lr", type=float, default=3e-3)
    tiny.set_defaults(func=run_make_tiny)

    grpo = train_subparsers.add_parser("grpo", help="GRPO of a multimodal LLM policy (our one-file trainer)")
    add_dataclass_arguments(grpo, GRPOConfig, "GRPO", skip=("env_kwargs",))
    add_env_options(grpo, exclude=CONFIG_OPTIONS)
    grpo.set_defaults(func=run_grpo)

    ppo = train_subparsers.add_parser("ppo", help="train a Stable-Baselines3 PPO agent")
    add_dataclass_arguments(ppo, PPOConfig, "PPO", skip=("env_kwargs",))
    add_env_options(ppo, exclude=CONFIG_OPTIONS[:2])
    ppo.set_defaults(func=run_ppo)

    from trl import GRPOConfig as TRLGRPOConfig
    from trl import SFTConfig

    for name, config_class, run, help_text in (
        ("trl-grpo", TRLGRPOConfig, train_trl_grpo, "GRPO with TRL's GRPOTrainer (vLLM, DeepSpeed, FSDP) on tvr-gym"),
        ("sft", SFTConfig, train_sft, "supervised fine-tuning on the true answers with TRL's SFTTrainer"),
    ):
        parser = train_subparsers.add_parser(name, help=help_text, description=help_text)
        add_dataclass_arguments(parser, TVRArguments, "tvr-gym")
        add_dataclass_arguments(parser, config_class, f"TRL {config_class.__name__} (see TRL's documentation)",
                                TRL_ALIASES)  # fmt: skip
        parser.set_defaults(func=lambda args, c=config_class, r=run: run_trl(args, c, r))


def check_device(device: str | None, per_process_gpu: bool = False) -> str | None:
    """``device`` when this machine has it: ``auto`` (or ``None``: a GPU when there is one), ``cpu``, ``cuda``,
    ``cuda:N``, ``mps``; ``ValueError`` otherwise, before anything is built or written.

    ``per_process_gpu``: the trainer runs under ``accelerate``, which gives each process its own GPU, so
    ``cuda:N`` is refused with the way to pick GPUs (``CUDA_VISIBLE_DEVICES``).
    """
    if device is None or device in ("auto", "cpu"):
        return device
    kind, colon, index = str(device).partition(":")
    if kind == "cuda" and (not colon or index.isdigit()):
        if colon and per_process_gpu:
            raise ValueError(f"--device: {device}: accelerate gives each process its GPU; choose them with "
                             f"CUDA_VISIBLE_DEVICES={index} and --device cuda")  # fmt: skip
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"--device: {device}: this machine has no CUDA device; use cpu or auto")
        if colon and int(index) >= count:
            raise ValueError(f"--device: {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("--device: mps: this machine has no MPS device; use cpu or auto")
        return device
    valid = "auto, cpu, cuda, mps" if per_process_gpu else "auto, cpu, cuda, cuda:N, mps"
    raise ValueError(f"--device: unknown device {device!r}; valid: {valid}")


def _finished(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # one line, also under accelerate and torchrun
        print(line)


def run_grpo(args: argparse.Namespace) -> int:
    check_device(args.device, per_process_gpu=True)
    cfg = dataclass_from_args(GRPOConfig, args, env_kwargs=env_kwargs(args))
    try:
        history = train(cfg)
    except KeyboardInterrupt as exc:  # the trainer said what it kept; SIGTERM exits 143, Ctrl-C 130
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    if history:
        last = history[-1]
        _finished(f"done: {last['step']} steps, last reward {last['reward']:.3f}, model in {cfg.out}/final")
    return 0


def run_ppo(args: argparse.Namespace) -> int:
    check_device(args.device)
    cfg = dataclass_from_args(PPOConfig, args, env_kwargs=env_kwargs(args))
    agent = train_from_config(cfg)
    settings = agent.settings
    w, h = settings.render_size
    algo = "MaskablePPO" if settings.algo == "maskable_ppo" else "PPO"
    print(f"done: {cfg.timesteps} steps of {algo} on {cfg.env} ({settings.obs}); model in {cfg.out}/{MODEL_FILE}")
    if settings.algo == "maskable_ppo":
        print(f"evaluate with: InteractivePPOAgent.load({str(cfg.out)!r}).evaluate(100) (tvr_gym.agents.ppo)")
        return 0
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in cfg.env_kwargs.items())
    print(f"evaluate with: tvr-gym eval --env {cfg.env} --agent ppo:{cfg.out} --size {w} {h}{flags}")
    return 0


def run_trl(args: argparse.Namespace, config_class: type, run: Any) -> int:
    tvr = dataclass_from_args(TVRArguments, args)  # checked before anything is built
    if args.output_dir is None:
        raise ValueError("out: required (--out DIR)")
    overrides = {}
    if args.bf16 is None and not torch.cuda.is_available():
        overrides["bf16"] = False  # TRL turns bf16 on by default; on a CPU that is slow and lossy
    config = dataclass_from_args(config_class, args, **overrides)
    try:
        final = run(tvr, config)
    except KeyboardInterrupt:
        return 130
    _finished(f"done: model in {final}")
    return 0


def run_make_tiny(args: argparse.Namespace) -> int:
    check_int("warmup_steps", args.warmup_steps, 0)
    if args.warmup_steps:
        max_items_of(args.env)  # an unknown id fails before anything is written
    extra_texts = None
    if args.tools:
        from tvr_gym.integrations.trl_env import chat_texts

        extra_texts = chat_texts()
    path = make_tiny_model(args.dir, seed=args.seed, hidden_size=args.hidden_size, layers=args.layers,
                           image_tokens=args.image_tokens, extra_texts=extra_texts)  # fmt: skip
    print(f"tiny Qwen2.5-VL checkpoint written to {path}")
    if args.warmup_steps:
        warmup_format(
            path, path, env_id=args.env, steps=args.warmup_steps, batch_size=args.warmup_batch_size,
            lr=args.warmup_lr, obs_mode=args.obs_mode, seed=args.seed,
        )  # fmt: skip
        print(f"format warm-up: {args.warmup_steps} steps on {args.env} ({args.obs_mode} obs), random answers")
    return 0
