#!/usr/bin/env bash
# verl GRPO on TVR-CrossView for Qwen2.5-VL-7B-Instruct, 8 GPUs, vLLM rollouts (STAR-R1's settings:
# G = 8, lr 1e-6, KL 0.04, clip 0.2). Tested with verl 0.9.1: tests/verl/test_verl.py composes this command's
# overrides with verl's own Hydra config, validates them as main_ppo does, and loads the reward through
# verl's RewardLoopWorker. The reward lives under reward.custom_reward_function (verl >= 0.8; main_ppo
# ignores the old top-level custom_reward_function). verl reads clip_ratio_low/high, not clip_ratio alone.
set -euo pipefail
DATA=${DATA:-data/tvr-cv-verl}
tvr-gym export --format verl --env TVR-CrossView-v0 --n 20000 --seed 0 --split train --out "$DATA"
tvr-gym export --format verl --env TVR-CrossView-v0 --n 500 --seed 1 --split val --out "$DATA"

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/val.parquet" \
    data.prompt_key=prompt \
    data.image_key=images \
    data.train_batch_size=512 \
    data.max_prompt_length=2048 \
    data.max_response_length=1024 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-7B-Instruct \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=128 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.04 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
    +actor_rollout_ref.rollout.engine_kwargs.vllm.disable_mm_preprocessor_cache=True \
    reward.custom_reward_function.path=pkg://tvr_gym.integrations.verl \
    reward.custom_reward_function.name=compute_score \
    +reward.custom_reward_function.reward_kwargs.reward=star \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.logger='["console","tensorboard"]' \
    trainer.project_name=tvr_gym \
    trainer.experiment_name=qwen2_5_vl_7b_tvr_crossview_grpo \
    trainer.total_epochs=15 \
    trainer.test_freq=5 \
    trainer.save_freq=20 "$@"
