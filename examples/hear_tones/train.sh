#!/usr/bin/env bash
# GRPO of a random-weight tiny audio model (small vocabulary; Qwen2.5-Omni unless MODEL_FAMILY says otherwise)
# on the tone task, through the same stack as
# the ALR recipe: verl's PPO trainer (verl_audio.trainer.main), the `hf` rollout, the FSDP2 engine (CPU when
# no GPU is visible). Then the last checkpoint is exported and scored on the held-out test clips.
#
#   bash examples/hear_tones/train.sh                 # the run
#   ABLATION=1 bash examples/hear_tones/train.sh      # the same run on silent training audio
#   MODEL_FAMILY=qwen2_audio bash examples/hear_tones/train.sh   # another family (qwen2_audio, qwen3_omni)
#   LORA_RANK=8 bash examples/hear_tones/train.sh     # LoRA adapters on the language model and the audio encoder
#   LORA_RANK=8 LORA_ENCODER= bash examples/hear_tones/train.sh   # ... on the language model only
#   STEPS=80 bash examples/hear_tones/train.sh trainer.test_freq=5     # extra args: verl/Hydra overrides
#
# Environment: OUTPUTS (default outputs), EXPERIMENT (default hear_tones[_<family>][_lora<R>][_ablation]),
# MODEL_FAMILY (default qwen2_5_omni), LORA_RANK (0: all weights; alpha is twice the rank), LORA_TARGETS (peft
# target_modules with LORA_RANK: the decoder's projections and lm_head), LORA_ENCODER (with LORA_RANK: the
# audio-encoder modules that get adapters too, model.audio_encoder_lora_targets; default every linear layer of the
# encoder; empty: none), STEPS (60),
# TRAIN_ENCODER (1: train the random audio encoder too; default 1, Qwen2-Audio 0; refused with LORA_RANK),
# TRAIN_PROJECTOR (1: train Qwen2-Audio's projector, also on the frozen encoder's cached outputs; 0: as the encoder;
# default 1 for Qwen2-Audio, 0 otherwise; refused with LORA_RANK),
# BATCH (prompts per step, 64), MICRO_BATCH (sequences per actor pass: BATCH x N; a trained Qwen2-Audio encoder 64), N (rollouts per prompt, 8), LR (3e-3), RESPONSE_LENGTH (1), ENTROPY (0), SEED (0).
# Writes $OUTPUTS/$EXPERIMENT/: tiny_model/, data/ (train/val/test clips + parquet), metrics.jsonl,
# reward_curve.png, checkpoints/, hf_export/, eval.txt (eval.py's report; its last line is the accuracy).
# Rerunning the same command resumes from the newest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
# the project venv made by scripts/setup_env.sh, unless PYTHON says otherwise
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
OUTPUTS=${OUTPUTS:-outputs}
ABLATION=${ABLATION:-0}
FAMILY=${MODEL_FAMILY:-qwen2_5_omni}
NAME=hear_tones; [[ $FAMILY == qwen2_5_omni ]] || NAME=hear_tones_$FAMILY
LORA_RANK=${LORA_RANK:-0}
LORA=()
if [[ "$LORA_RANK" != 0 ]]; then
  # adapters on the language model and lm_head: the random model's frozen lm_head bounds every logit by ~1.7
  # (README), so decoder adapters alone cannot make an answer word likely. And on the random audio encoder's
  # linear layers (its base weights frozen): with the encoder untouched the policy collapsed onto one word
  # (README), as the runs that learnt all trained the audio side. LORA_ENCODER= leaves the encoder untouched.
  TARGETS=${LORA_TARGETS:-[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head]}
  ENCODER_TARGETS=${LORA_ENCODER-'layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|fc1|fc2)|proj'}
  NAME=${NAME}_lora$LORA_RANK; [[ -n $ENCODER_TARGETS ]] || NAME=${NAME}_lm
  LORA=(actor_rollout_ref.model.lora_rank="$LORA_RANK" actor_rollout_ref.model.lora_alpha="$((2 * LORA_RANK))"
        actor_rollout_ref.model.target_modules="$TARGETS")
  [[ -z $ENCODER_TARGETS ]] || LORA+=("actor_rollout_ref.model.audio_encoder_lora_targets='$ENCODER_TARGETS'")
fi
if [[ "$ABLATION" == 1 ]]; then
  EXP=${EXPERIMENT:-${NAME}_ablation}; SILENT=--silent-train
else
  EXP=${EXPERIMENT:-$NAME}; SILENT=
fi
STEPS=${STEPS:-60} BATCH=${BATCH:-64} N=${N:-8}
# Qwen2-Audio's encoder takes 30 s of features per clip however short (30x the Omni's for these ~1 s tones):
# trained, its attention over 1500 positions for 512 sequences took 16 GB and ~100 s of each step's actor update
# on this CPU, so for Qwen2-Audio the random encoder stays frozen (its outputs cached) unless TRAIN_ENCODER=1,
# and a trained one goes through the actor 64 sequences at a time
if [[ "$LORA_RANK" != 0 ]]; then  # LoRA trains adapters only: the encoder's own weights stay frozen
  for part in ENCODER PROJECTOR; do
    var=TRAIN_$part
    if [[ "${!var:-0}" == 1 ]]; then
      echo "error: $var=1 with LORA_RANK=$LORA_RANK: LoRA keeps the audio ${part,,}'s weights frozen" \
           "(LORA_ENCODER puts adapters on the encoder)" >&2; exit 2
    fi
  done
  TRAIN_ENCODER=0 TRAIN_PROJECTOR=0
fi
TRAIN_ENCODER=${TRAIN_ENCODER:-$([[ $FAMILY == qwen2_audio ]] && echo 0 || echo 1)}
FREEZE=$([[ $TRAIN_ENCODER == 1 ]] && echo false || echo true)
# Qwen2-Audio's projector (apart from its encoder) is trained on the frozen encoder's cached outputs; the Omni
# thinkers have none, so there it follows the encoder (null)
TRAIN_PROJECTOR=${TRAIN_PROJECTOR:-$([[ $FAMILY == qwen2_audio ]] && echo 1 || echo 0)}
FREEZE_PROJECTOR=$([[ $TRAIN_PROJECTOR == 1 ]] && echo false || echo null)
MICRO=$((BATCH * N)); [[ $FAMILY == qwen2_audio && $TRAIN_ENCODER == 1 ]] && MICRO=64
MICRO=${MICRO_BATCH:-$MICRO} LR=${LR:-3e-3} RESPONSE_LENGTH=${RESPONSE_LENGTH:-1} SEED=${SEED:-0}
ENTROPY=${ENTROPY:-0}
RUN=$OUTPUTS/$EXP MODEL=$OUTPUTS/$EXP/tiny_model DATA=$OUTPUTS/$EXP/data
start=$(date +%s)

[[ -f $MODEL/config.json ]] || $PY -m verl_audio.models.tiny --family "$FAMILY" --out "$MODEL" --vocab small --seed "$SEED"
[[ -f $DATA/train.parquet ]] || $PY examples/hear_tones/prepare.py --out "$DATA" --seed "$SEED" $SILENT

# Why these settings (sized on this 2-core CPU machine; see examples/hear_tones/README.md):
# - freeze_audio_encoder=false: the encoder is random too, so it is trained with the decoder (not for
#   Qwen2-Audio, above, whose projector is trained instead: with it frozen too the policy settled on one word
#   before it heard the tone; nor with LoRA, which trains adapters on the encoder instead).
# - lr 3e-3, no KL term (so no reference model): random weights have nothing to stay close to.
# - response length 1: the answer is one word (` high` / ` low` are single tokens of the small vocabulary;
#   reward_fns/tones.py says why); more room only lets text follow it, which the reward rejects.
# - 64 prompts x 8 rollouts per step, one optimizer step per batch: a random policy samples a label word
#   ~2 times in 500, so 512 rollouts give GRPO a few groups with a signal from the first step, and a
#   step's fixed cost dominates at this model size.
# - bypass_mode: the old log-probs are the rollout's (fp32 on both sides, so they equal the actor's);
#   use_remove_padding=false: on CPU packed sequences take a slow attention path; micro-batch = whole batch
#   (a trained Qwen2-Audio encoder: 64, above).
# - validation on the 64 val clips every 10 steps, greedy (verl's val_kwargs default).
$PY -m verl_audio.trainer.main \
  trainer.experiment_name="$EXP" verl_audio.output_dir="$RUN" \
  actor_rollout_ref.model.path="$MODEL" actor_rollout_ref.model.freeze_audio_encoder="$FREEZE" \
  actor_rollout_ref.model.freeze_audio_projector="$FREEZE_PROJECTOR" \
  actor_rollout_ref.model.enable_gradient_checkpointing=false \
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/val.parquet" \
  data.train_batch_size="$BATCH" data.val_batch_size=64 data.max_prompt_length=128 \
  data.max_response_length="$RESPONSE_LENGTH" data.seed="$SEED" \
  actor_rollout_ref.rollout.n="$N" actor_rollout_ref.rollout.dtype=float32 \
  actor_rollout_ref.rollout.engine_kwargs.hf.batch_window_ms=200 \
  actor_rollout_ref.rollout.engine_kwargs.hf.max_batch_size=512 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$MICRO" \
  actor_rollout_ref.actor.optim.lr="$LR" actor_rollout_ref.actor.optim.weight_decay=0.0 \
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH" actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$MICRO" \
  actor_rollout_ref.actor.use_kl_loss=false actor_rollout_ref.actor.entropy_coeff="$ENTROPY" \
  actor_rollout_ref.actor.calculate_entropy=true algorithm.rollout_correction.bypass_mode=true \
  actor_rollout_ref.model.use_remove_padding=false \
  +actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32 \
  actor_rollout_ref.rollout.agent.num_workers=1 reward.num_workers=1 \
  reward.custom_reward_function.path=pkg://reward_fns.tones reward.custom_reward_function.name=compute_score \
  trainer.n_gpus_per_node=1 trainer.total_training_steps="$STEPS" trainer.total_epochs=1000 \
  trainer.save_freq="$STEPS" trainer.test_freq=10 trainer.val_before_train=true \
  trainer.logger='[console,file]' ${LORA[@]+"${LORA[@]}"} "$@"

$PY examples/hear_tones/eval.py --model "$RUN/hf_export" --audio-dir "$DATA/test" \
  --max-new-tokens "$RESPONSE_LENGTH" --show 4 | tee "$RUN/eval.txt"
echo "hear_tones: $EXP done in $(( $(date +%s) - start )) s (wall, including data, training, export and eval)"
