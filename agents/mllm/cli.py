"""Command line: ``tvr-gym train grpo ...`` and ``tvr-gym make-tiny-model DIR``.

The project CLI calls :func:`register`; ``python -m agents.mllm.cli`` runs the same commands alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agents.mllm.grpo import LOSS_TYPES, OBS_MODES, REWARDS, GRPOConfig
from tvr_gym.cli import size_wxh


def add_grpo_arguments(p: argparse.ArgumentParser) -> None:
    d = GRPOConfig()
    p.add_argument("--model", default=d.model, help="'tiny' (built in OUT/base) or a local checkpoint directory")
    p.add_argument("--env", default=d.env, help="a registered TVR environment id")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="episodes per step (per process)")
    p.add_argument("--group-size", type=int, default=d.group_size, help="completions per episode (G)")
    p.add_argument("--out", required=True, help="output directory (checkpoints, TensorBoard, evals)")
    p.add_argument("--resume", action="store_true", help="continue from the latest OUT/checkpoint-STEP")
    p.add_argument("--reward", choices=REWARDS, default=d.reward)
    p.add_argument("--obs-mode", choices=OBS_MODES, default=d.obs_mode)
    p.add_argument("--render-size", type=size_wxh, default=d.render_size, help="WxH of the images")
    p.add_argument("--source", default=None, help="episode source: procedural (default) or a TRANCE directory")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 for tiny, 1e-6 for a checkpoint")
    p.add_argument("--beta", type=float, default=d.beta, help="KL coefficient (k3 estimator); 0 = no reference")
    p.add_argument("--clip", type=float, default=d.clip, help="PPO ratio clip epsilon")
    p.add_argument("--mu", type=int, default=d.mu, help="inner updates per batch")
    p.add_argument("--loss", choices=LOSS_TYPES, default=d.loss, help="loss aggregation")
    std = p.add_mutually_exclusive_group()
    std.add_argument("--scale-std", dest="scale_std", action="store_true", default=None)
    std.add_argument("--no-scale-std", dest="scale_std", action="store_false", help="Dr.GRPO-style advantages")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per update")
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    p.add_argument("--save-every", type=int, default=d.save_every, help="steps between checkpoints (0: off)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between held-out evals (0: off)")
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--device", default=None, help="cpu forces CPU; default: accelerate's choice")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    p.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> GRPOConfig:
    env_kwargs = {"source": args.source} if args.source else {}
    return GRPOConfig(
        model=args.model,
        env=args.env,
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        group_size=args.group_size,
        reward=args.reward,
        obs_mode=args.obs_mode,
        render_size=args.render_size,
        lr=args.lr,
        beta=args.beta,
        clip=args.clip,
        mu=args.mu,
        loss=args.loss,
        scale_std=args.scale_std,
        grad_accum=args.grad_accum,
        max_grad_norm=args.max_grad_norm,
        lora=args.lora,
        lora_r=args.lora_r,
        save_every=args.save_every,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        resume=args.resume,
        device=args.device,
        dtype=args.dtype,
        env_kwargs=env_kwargs,
        progress=not args.no_progress,
    )


def run_grpo(args: argparse.Namespace) -> int:
    from agents.mllm.grpo import train

    cfg = config_from_args(args)
    try:
        history = train(cfg)
    except KeyboardInterrupt:
        return 130
    if history and os.environ.get("RANK", "0") == "0":  # one line, also under accelerate/torchrun
        last = history[-1]
        print(f"done: {last['step']} steps, last reward {last['reward']:.3f}, model in {cfg.out}/final")
    return 0


def run_make_tiny(args: argparse.Namespace) -> int:
    from agents.mllm.tiny import make_tiny_model

    if args.warmup_steps < 0:
        raise ValueError(f"warmup-steps: expected an integer >= 0, got {args.warmup_steps}")
    if args.warmup_steps:
        from agents.mllm.warmup import max_items_of

        max_items_of(args.env)  # an unknown id fails before anything is written
    path = make_tiny_model(args.dir, seed=args.seed, hidden_size=args.hidden_size, layers=args.layers)
    print(f"tiny Qwen2.5-VL checkpoint written to {path}")
    if args.warmup_steps:
        from agents.mllm.warmup import warmup_format

        warmup_format(
            path,
            path,
            env_id=args.env,
            steps=args.warmup_steps,
            batch_size=args.warmup_batch_size,
            lr=args.warmup_lr,
            obs_mode=args.obs_mode,
            seed=args.seed,
        )
        print(f"format warm-up: {args.warmup_steps} steps on {args.env} ({args.obs_mode} obs), random answers")
    return 0


def register(subparsers, train_subparsers) -> None:
    """Add ``make-tiny-model`` to the top-level commands and ``grpo`` to ``train``'s commands.

    Each parser sets ``func(args) -> int`` as its handler.
    """
    tiny = subparsers.add_parser("make-tiny-model", help="build a tiny random Qwen2.5-VL checkpoint")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument(
        "--warmup-steps", type=int, default=0, help="format warm-up steps on random answers (0: none, random weights)"
    )
    tiny.add_argument("--env", default="TVR-Basic-v0", help="the TVR environment whose prompts the warm-up uses")
    tiny.add_argument("--obs-mode", choices=OBS_MODES, default="text", help="observation mode of the warm-up prompts")
    tiny.add_argument("--warmup-batch-size", type=int, default=8)
    tiny.add_argument("--warmup-lr", type=float, default=3e-3)
    tiny.set_defaults(func=run_make_tiny)
    grpo = train_subparsers.add_parser("grpo", help="GRPO training of a multimodal LLM policy")
    add_grpo_arguments(grpo)
    grpo.set_defaults(func=run_grpo)
    register_trl(train_subparsers)


def register_trl(train_subparsers) -> None:
    """``train trl-grpo`` and ``train sft``: tvr-gym's flags plus every field of TRL's own config."""
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import SFTConfig

    from agents.cliargs import add_dataclass_arguments
    from agents.mllm.trl_train import TVRArguments, train_sft, train_trl_grpo

    for name, config_class, run, help_text in (
        ("trl-grpo", TRLGRPOConfig, train_trl_grpo, "GRPO with TRL's GRPOTrainer (vLLM, DeepSpeed, FSDP) on tvr-gym"),
        ("sft", SFTConfig, train_sft, "supervised fine-tuning on the true answers with TRL's SFTTrainer"),
    ):
        parser = train_subparsers.add_parser(name, help=help_text, description=help_text)
        add_dataclass_arguments(parser, TVRArguments, "tvr-gym")
        add_dataclass_arguments(
            parser, config_class, f"TRL {config_class.__name__} (see TRL's documentation)", {"output_dir": ["--out"]}
        )
        parser.set_defaults(func=lambda args, c=config_class, r=run: run_trl(args, c, r))


def run_trl(args: argparse.Namespace, config_class, run) -> int:
    import torch

    from agents.cliargs import dataclass_from_args
    from agents.mllm.trl_train import TVRArguments

    tvr = dataclass_from_args(TVRArguments, args)  # checked before anything is built
    if args.output_dir is None:
        raise ValueError("output_dir: required (--output_dir OUT)")
    overrides = {}
    if args.bf16 is None and not torch.cuda.is_available():
        overrides["bf16"] = False  # TRL turns bf16 on by default; on a CPU that is slow and lossy
    config = dataclass_from_args(config_class, args, **overrides)
    try:
        final = run(tvr, config)
    except KeyboardInterrupt:
        return 130
    if os.environ.get("RANK", "0") == "0":
        print(f"done: model in {final}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tvr-gym")
    subparsers = parser.add_subparsers(dest="command", required=True)
    train_parser = subparsers.add_parser("train", help="train an agent")
    train_subparsers = train_parser.add_subparsers(dest="trainer", required=True)
    register(subparsers, train_subparsers)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        parser.error(str(exc))
    return 2


if __name__ == "__main__":
    sys.exit(main())
