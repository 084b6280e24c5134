#!/usr/bin/env bash
# SoundMind GRPO of Qwen2.5-Omni on ALR: pick a preset, then hand every argument to verl.
#   PRESET=tiny  (default when no GPU is visible and MODEL_PATH is unset): a random tiny Omni on the
#                bundled demo sample, a few GRPO steps on CPU, checkpoint, export, reward curve;
#                ROLLOUT=hf (default) or ROLLOUT=vllm (vLLM's CPU build).
#   PRESET=paper the paper's settings on 8 GPUs: MODEL_PATH (default Qwen/Qwen2.5-Omni-7B), DATA_DIR
#                (prepared ALR parquet), ROLLOUT=vllm|hf (default vllm; with audio output a speech
#                server runs beside each vLLM replica).
#   INPUT_MODALITY=audio|text (default audio) and OUTPUT_MODALITY=text|audio (default text) pick the paper's
#                mode: audio->text, text->audio, audio->audio (and text->text). Audio output turns on the
#                rollout's speech stage (talker + token2wav of the checkpoint; docs/models.md).
# Outputs: $OUTPUTS/<experiment>/ (OUTPUTS defaults to outputs; metrics.jsonl, tensorboard/, checkpoints/, hf_export/, reward_curve.png).
# Rerunning the same command resumes from the newest checkpoint. Extra args are verl/Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# the project venv made by scripts/setup_env.sh, unless PYTHON says otherwise
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
OUTPUTS=${OUTPUTS:-outputs}

gpu_visible() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
if [[ -z "${PRESET:-}" ]]; then
  if ! gpu_visible && [[ -z "${MODEL_PATH:-}" ]]; then
    PRESET=tiny; echo "soundmind_alr.sh: no GPU visible and MODEL_PATH unset -> PRESET=tiny (CPU demo run)"
  else
    PRESET=paper; echo "soundmind_alr.sh: PRESET=paper"
  fi
fi

IN=${INPUT_MODALITY:-audio} OUT=${OUTPUT_MODALITY:-text}
[[ $IN == audio || $IN == text ]] || { echo "soundmind_alr.sh: INPUT_MODALITY must be audio or text, got '$IN'" >&2; exit 2; }
[[ $OUT == text || $OUT == audio ]] || { echo "soundmind_alr.sh: OUTPUT_MODALITY must be text or audio, got '$OUT'" >&2; exit 2; }
MODE_SUFFIX=""; [[ $IN/$OUT == audio/text ]] || MODE_SUFFIX="_${IN}_to_${OUT}"  # audio->text keeps the old names

case "$PRESET" in
tiny)
  ROLLOUT=${ROLLOUT:-hf}
  EXP=${EXPERIMENT:-soundmind_alr_tiny$MODE_SUFFIX}
  [[ $ROLLOUT == hf ]] || EXP=${EXPERIMENT:-soundmind_alr_tiny${MODE_SUFFIX}_$ROLLOUT}
  MODEL=$OUTPUTS/$EXP/tiny_omni DATA=$OUTPUTS/$EXP/data
  # --talker: the tiny Omni can speak (audio output needs talker + token2wav weights);
  # head dim 32: vLLM's CPU attention has no kernel for the builder's default 16
  [[ -f $MODEL/config.json ]] || $PY -m verl_audio.models.tiny --out "$MODEL" --talker --vocab small --head-dim 32
  # the rows name their audio by absolute path: prepare from a copy in the outputs, so that they never
  # point into a Ray job's temporary working_dir (which a resubmitted job does not have)
  SAMPLE=$OUTPUTS/$EXP/demo_sample
  [[ -d $SAMPLE ]] || { mkdir -p "$OUTPUTS/$EXP" && cp -r verl_audio/data/demo_sample "$SAMPLE"; }
  [[ -f $DATA/train.parquet ]] || $PY examples/data_preprocess/alr.py --src "$SAMPLE" \
    --out "$DATA" --input-modality "$IN" --output-modality "$OUT" --splits train,dev
  SPEECH=()  # a random talker rarely ends on its own: 100 codec tokens = 2 s of speech per response
  [[ $OUT == audio ]] && SPEECH=(+actor_rollout_ref.rollout.engine_kwargs.speech.talker_max_new_tokens=100)
  set -- trainer.experiment_name="$EXP" verl_audio.output_dir="$OUTPUTS/$EXP" actor_rollout_ref.model.path="$MODEL" \
    data.train_files="$DATA/train.parquet" data.val_files="$DATA/dev.parquet" \
    data.train_batch_size=2 data.max_prompt_length=1024 data.max_response_length=32 \
    actor_rollout_ref.rollout.n=2 actor_rollout_ref.actor.ppo_mini_batch_size=2 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 actor_rollout_ref.actor.optim.lr=1e-4 \
    +actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32 \
    +actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32 \
    actor_rollout_ref.rollout.name="$ROLLOUT" actor_rollout_ref.rollout.max_model_len=2048 \
    actor_rollout_ref.rollout.dtype=float32 +actor_rollout_ref.rollout.engine_kwargs.hf.batch_window_ms=200 \
    actor_rollout_ref.rollout.agent.num_workers=1 reward.num_workers=1 \
    trainer.n_gpus_per_node=2 trainer.total_training_steps=3 trainer.save_freq=1 trainer.test_freq=3 \
    trainer.val_before_train=false verl_audio.export_verify=true "${SPEECH[@]}" "$@"
  ;;
paper)
  if ! gpu_visible; then
    echo "soundmind_alr.sh: PRESET=paper needs 8 GPUs and none is visible (nvidia-smi); use PRESET=tiny on CPU" >&2
    exit 2
  fi
  DATA_DIR=${DATA_DIR:-outputs/alr_data$MODE_SUFFIX}
  ROLLOUT=${ROLLOUT:-vllm}
  EXP=${EXPERIMENT:-soundmind_alr_paper$MODE_SUFFIX}
  if [[ ! -f $DATA_DIR/train.parquet ]]; then
    echo "soundmind_alr.sh: no $DATA_DIR/train.parquet; prepare it with: python examples/data_preprocess/alr.py" \
      "--src SRC --out $DATA_DIR --input-modality $IN --output-modality $OUT" >&2
    exit 2
  fi
  set -- trainer.experiment_name="$EXP" verl_audio.output_dir="$OUTPUTS/$EXP" \
    actor_rollout_ref.model.path="${MODEL_PATH:-Qwen/Qwen2.5-Omni-7B}" \
    data.train_files="$DATA_DIR/train.parquet" data.val_files="$DATA_DIR/dev.parquet" \
    actor_rollout_ref.rollout.name="$ROLLOUT" actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.actor.fsdp_config.param_offload=true actor_rollout_ref.actor.fsdp_config.optimizer_offload=true \
    actor_rollout_ref.ref.fsdp_config.param_offload=true trainer.n_gpus_per_node=8 verl_audio.device=gpu "$@"
  ;;
*) echo "soundmind_alr.sh: unknown PRESET=$PRESET (tiny|paper)" >&2; exit 2 ;;
esac
exec $PY -m verl_audio.trainer.main "$@"
