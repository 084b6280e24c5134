#!/usr/bin/env bash
# Creates ./.venv (if absent) and installs verl-audio with its test extras into it.
# VENV=path picks another location; TORCH_SPEC overrides the torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, so verl's dependency resolution does not pull a different build.
"$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "verl-audio installed in $VENV"
