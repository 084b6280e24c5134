#!/usr/bin/env bash
# SoundMind GRPO of an audio model (Qwen2.5-Omni by default) on ALR: pick a preset, then hand every argument to verl.
#   PRESET=tiny  (default when no GPU is visible and MODEL_PATH is unset): a random tiny Omni on the
#                bundled demo sample, a few GRPO steps on CPU, checkpoint, export, reward curve;
#                ROLLOUT=hf (default) or ROLLOUT=vllm (vLLM's CPU build).
#   PRESET=paper the paper's settings on 8 GPUs: MODEL_PATH (default Qwen/Qwen2.5-Omni-7B), DATA_DIR
#                (prepared ALR parquet), ROLLOUT=vllm|hf (default vllm; with audio output a speech
#                server runs beside each vLLM replica).
#   INPUT_MODALITY=audio|text (default audio) and OUTPUT_MODALITY=text|audio (default text) pick the paper's
#                mode: audio->text, text->audio, audio->audio (and text->text). Audio output turns on the
#                rollout's speech stage (talker + token2wav of the checkpoint; docs/models.md).
#   MODEL_FAMILY=qwen2_5_omni|qwen2_audio|qwen3_omni (default qwen2_5_omni; with MODEL_PATH read from its config).
#   LORA_RANK=R  train LoRA adapters of rank R on the language model instead of all weights (docs/lora.md).
#   DRY_RUN=1    prepare and check the whole config, write it to the output folder, start nothing.
# Outputs: $OUTPUTS/<experiment>/ (OUTPUTS defaults to outputs; metrics.jsonl, tensorboard/, checkpoints/,
# hf_export/, reward_curve.png, config.yaml, summary.txt). Rerunning the same command resumes from the newest
# checkpoint. Extra args are verl/Hydra overrides. The presets live in verl_audio/trainer/recipe.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# the project venv made by scripts/setup_env.sh, unless PYTHON says otherwise
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
exec "$PY" -m verl_audio.trainer.recipe soundmind_alr "$@"
