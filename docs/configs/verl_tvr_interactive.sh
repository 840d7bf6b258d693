#!/usr/bin/env bash
# verl GRPO on TVR-Interactive-v0 (multi-turn, a new render every turn) for Qwen2.5-VL-7B-Instruct,
# 8 GPUs, vLLM async rollouts through tvr_gym's agent loop (tvr_gym/integrations/verl_agent.py).
# Tested with verl 0.9.1: tests/verl/test_verl.py composes these overrides with verl's own Hydra config and
# validates them as main_ppo does (limit_images is a RolloutConfig field missing from rollout.yaml, hence
# the +; vLLM gets it as limit_mm_per_prompt). No reward function is configured: the agent loop sets
# reward_score (the sum of the environment's rewards), which verl writes into rm_scores and uses as is.
# Lengths: a prompt is ~600 text tokens + 2 x 99 image tokens (320x240 renders, tvr_gym.core.chat.image_tokens);
# a turn is <= 256 model tokens + ~135 reply tokens (one image + feedback), and max_images=8 allows 6 replies.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA=${DATA:-data/tvr-interactive-verl}
SETTING=${SETTING:-event}
# Pin the renderer: the rows' first images and the rollouts' renders must come from the same one (every
# environment flag given here is recorded in each row and replayed by the agent loop).
RENDERER=${RENDERER:-gl}
tvr-gym export --format verl --env TVR-Interactive-v0 --setting "$SETTING" --renderer "$RENDERER" \
    --n 20000 --seed 0 --split train --out "$DATA"
tvr-gym export --format verl --env TVR-Interactive-v0 --setting "$SETTING" --renderer "$RENDERER" \
    --n 500 --seed 1 --split val --out "$DATA"

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/val.parquet" \
    data.prompt_key=prompt \
    data.image_key=images \
    data.train_batch_size=256 \
    data.max_prompt_length=2048 \
    data.max_response_length=3072 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.04 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.mode=async \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.rollout.agent.num_workers=8 \
    actor_rollout_ref.rollout.agent.default_agent_loop=tvr_interactive \
    actor_rollout_ref.rollout.agent.agent_loop_config_path="$HERE/verl_tvr_interactive.agent_loop.yaml" \
    +actor_rollout_ref.rollout.limit_images=8 \
    +actor_rollout_ref.rollout.engine_kwargs.vllm.disable_mm_preprocessor_cache=True \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.logger='["console","tensorboard"]' \
    trainer.project_name=tvr_gym \
    trainer.experiment_name=qwen2_5_vl_7b_tvr_interactive_grpo \
    trainer.total_epochs=15 \
    trainer.test_freq=5 \
    trainer.save_freq=20 "$@"
