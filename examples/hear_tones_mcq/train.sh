#!/usr/bin/env bash
# The tone task as audio multiple choice, trained through recipes/audio_mcq.sh from random weights:
# "How high is the tone?" with the choices low / high (CHOICES=4: very low / low / high / very high; shuffled per
# question), a
# random-weight tiny Qwen2.5-Omni (small vocabulary), GRPO on CPU when no GPU is visible. The data goes the way
# benchmark data goes: MMAU-style annotation files + clips (prepare.py) -> examples/data_preprocess/audio_mcq.py
# -> recipes/audio_mcq.sh (reward preset `tones`), then the exported model is scored on 200 held-out questions by
# the evaluation CLI with its defaults (python -m verl_audio.eval --task mmau: greedy, 1024 new tokens) and by
# MMAU's official scorer when MMAU_EVAL names its evaluation.py.
#
#   bash examples/hear_tones_mcq/train.sh                 # the run
#   ABLATION=1 bash examples/hear_tones_mcq/train.sh      # the same run on silent training audio
#   MMAU_EVAL=/tmp/mmau_eval.py bash examples/hear_tones_mcq/train.sh   # score with MMAU's evaluation.py too
#   STEPS=200 bash examples/hear_tones_mcq/train.sh trainer.test_freq=5    # extra args: verl/Hydra overrides
#
# Environment: OUTPUTS (default outputs), CHOICES (2 or 4), EXPERIMENT (default hear_tones_mcq[4][_ablation]),
# STEPS (100), BATCH (prompts per step, 64), N (rollouts per prompt, 8), LR (3e-3), RESPONSE_LENGTH (2; 4 with four
# choices), ENTROPY (0), SEED (0), MMAU_EVAL
# (MMAU's evaluation.py; unset: our string_match only). Writes $OUTPUTS/$EXPERIMENT/: tiny_model/, tones/ (annotation
# files + clips), data/ (parquet), the recipe's outputs (metrics.jsonl, checkpoints/, hf_export/, ...), eval/ (the
# CLI's predictions, results, official_input.json) and eval.txt (its last line is the held-out accuracy).
# Rerunning the same command resumes from the newest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
# the project venv made by scripts/setup_env.sh, unless PYTHON says otherwise
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
OUTPUTS=${OUTPUTS:-outputs}
ABLATION=${ABLATION:-0}
CHOICES=${CHOICES:-2}
NAME=hear_tones_mcq; [[ $CHOICES == 2 ]] || NAME=hear_tones_mcq$CHOICES
if [[ "$ABLATION" == 1 ]]; then EXP=${EXPERIMENT:-${NAME}_ablation}; SILENT=--silent-train
else EXP=${EXPERIMENT:-$NAME}; SILENT=; fi
# the longest answer and <|im_end|>: " high" + end (2 choices); "very" + " low" + end (4)
RESPONSE_LENGTH=${RESPONSE_LENGTH:-$([[ $CHOICES == 2 ]] && echo 2 || echo 4)}
STEPS=${STEPS:-100} BATCH=${BATCH:-64} N=${N:-8} LR=${LR:-3e-3}
ENTROPY=${ENTROPY:-0} SEED=${SEED:-0}
RUN=$OUTPUTS/$EXP MODEL=$OUTPUTS/$EXP/tiny_model SRC=$OUTPUTS/$EXP/tones DATA=$OUTPUTS/$EXP/data
start=$(date +%s)

[[ -f $MODEL/config.json ]] || $PY -m verl_audio.models.tiny --out "$MODEL" --vocab small --seed "$SEED"
[[ -f $SRC/test.json ]] || $PY examples/hear_tones_mcq/prepare.py --out "$SRC" --seed "$SEED" --choices "$CHOICES" $SILENT
for split in train dev; do
  [[ -f $DATA/$split.parquet ]] || \
    $PY examples/data_preprocess/audio_mcq.py --src "$SRC/$split.json" --audio-root "$SRC" --out "$DATA" --split "$split"
done

# Why these settings (examples/hear_tones_mcq/README.md has the reasoning):
# - reward preset `tones`: each right word of the answer earns its share (0 with any word only a wrong choice
#   has), and ending the turn (end-of-sequence id within the budget) earns 0.5 whatever was said, so a right
#   answer that ends beats one that fills the budget (" high high"); the validation accuracy is the
#   evaluation's scorer on finished answers.
# - response length: the longest answer and <|im_end|> fit (2 with two choices, 4 with four).
# - as in examples/hear_tones: the random encoder is trained, lr 3e-3, no KL term, 64 prompts x 8 rollouts,
#   one optimizer step per batch, rollout log-probs as old log-probs (fp32 on both sides), no padding removal.
PRESET=tiny MODEL_PATH=$MODEL DATA_DIR=$DATA OUTPUTS=$OUTPUTS EXPERIMENT=$EXP REWARD_PRESET=tones PYTHON=$PY \
bash recipes/audio_mcq.sh \
  actor_rollout_ref.model.freeze_audio_encoder=false actor_rollout_ref.model.enable_gradient_checkpointing=false \
  data.train_batch_size="$BATCH" data.val_batch_size=64 data.max_prompt_length=192 \
  data.max_response_length="$RESPONSE_LENGTH" data.seed="$SEED" \
  actor_rollout_ref.rollout.n="$N" \
  actor_rollout_ref.rollout.engine_kwargs.hf.max_batch_size=512 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$((BATCH * N))" \
  actor_rollout_ref.actor.optim.lr="$LR" actor_rollout_ref.actor.optim.weight_decay=0.0 \
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH" actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$((BATCH * N))" \
  actor_rollout_ref.actor.use_kl_loss=false actor_rollout_ref.actor.entropy_coeff="$ENTROPY" \
  actor_rollout_ref.actor.calculate_entropy=true algorithm.rollout_correction.bypass_mode=true \
  actor_rollout_ref.model.use_remove_padding=false \
  trainer.n_gpus_per_node=1 trainer.total_training_steps="$STEPS" trainer.total_epochs=1000 \
  trainer.save_freq="$STEPS" trainer.test_freq=10 trainer.val_before_train=true \
  trainer.logger='[console,file]' "$@"

# the evaluation CLI with its defaults (greedy, 1024 new tokens): the model must end its answer by itself
[[ -f $RUN/eval/results.json ]] || \
  $PY -m verl_audio.eval --task mmau --model "$RUN/hf_export" --data "$SRC/test.json" --audio-root "$SRC" \
    --out "$RUN/eval" --quiet
$PY examples/hear_tones_mcq/score.py --eval "$RUN/eval" ${MMAU_EVAL:+--official "$MMAU_EVAL"} \
  | tee "$RUN/eval.txt"
echo "hear_tones_mcq: $EXP done in $(( $(date +%s) - start )) s (wall, including data, training, export and eval)"
