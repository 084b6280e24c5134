#!/usr/bin/env bash
# GRPO of an audio model (Qwen2.5-Omni by default) on audio multiple-choice questions in the MMAU / MMAR / AVQA
# layout, R1-AQA / AudioMCQ style: pick a preset, then hand every argument to verl.
#   DATA_DIR     the folder with train.parquet and dev.parquet from examples/data_preprocess/audio_mcq.py
#                (--split train / --split dev); validation reports accuracy per group (val-group/<field>=<value>/...).
#   PRESET=tiny  (default when no GPU is visible and MODEL_PATH is unset): a random tiny Omni on a few tone
#                questions written and prepared on the spot (or MODEL_PATH / DATA_DIR when given), a few GRPO
#                steps on CPU, checkpoint, export, reward curve; ROLLOUT=hf (default) or ROLLOUT=vllm.
#   PRESET=paper 8 GPUs: MODEL_PATH (default Qwen/Qwen2.5-Omni-7B), DATA_DIR (default outputs/audio_mcq_data),
#                ROLLOUT=vllm|hf (default vllm).
#   REWARD_PRESET=r1_aqa|audiomcq|soundmind|answer_only|tones (default r1_aqa; reward_fns/choice.py).
#   MODEL_FAMILY=qwen2_5_omni|qwen2_audio|qwen3_omni (default qwen2_5_omni; with MODEL_PATH read from its config).
#   LORA_RANK=R  train LoRA adapters of rank R on the language model instead of all weights (docs/lora.md).
#   DRY_RUN=1    prepare and check the whole config, write it to the output folder, start nothing.
# Outputs: $OUTPUTS/<experiment>/ (OUTPUTS defaults to outputs; experiment audio_mcq_<preset>...). Rerunning the
# same command resumes from the newest checkpoint. Extra args are verl/Hydra overrides. The presets live in
# verl_audio/trainer/recipe.py (TASK_OVERRIDES: what audio_mcq changes in the shared config).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
# the project venv made by scripts/setup_env.sh, unless PYTHON says otherwise
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
exec "$PY" -m verl_audio.trainer.recipe audio_mcq "$@"
