#!/usr/bin/env bash
# Submit a recipe (default recipes/soundmind_alr.sh) as a Ray job to a running cluster; extra args are
# verl/Hydra overrides for the recipe. See docs/cluster.md.
#   RAY_ADDRESS     the head's job server (dashboard), default http://127.0.0.1:8265
#   RAY_AUTH_MODE=token RAY_AUTH_TOKEN=...   the token the head and nodes were started with (the client needs it too)
#   OUTPUTS         where the run writes, an absolute path every node sees (default: $PWD/outputs, right for a
#                   one-machine cluster); resubmitting with the same OUTPUTS and EXPERIMENT resumes the run
#   PRESET, EXPERIMENT, MODEL_PATH, DATA_DIR, ROLLOUT, INPUT_MODALITY, OUTPUT_MODALITY, DRY_RUN
#                   passed to the recipe on the cluster
#   CLUSTER_PYTHON  the interpreter on the nodes that has verl-audio installed (default: `python` on their PATH)
#   PIP             a requirements file Ray installs per job on each node (runtime env `pip`; default: none, the nodes' own environment)
#   IMAGE           a container image the job runs in (runtime env `image_uri`; default: none)
#   SUBMISSION_ID   the job id (default verl_audio_<experiment>_<date>)
#   NO_WAIT=1       return after submitting (then: ray job logs --follow / status / stop <id>)
#   AGENT_WAIT_S    how long to keep resubmitting while a just-started head has no job agent yet (default 120)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${RAY:-}" ]]; then RAY=ray; [[ -x .venv/bin/ray ]] && RAY=.venv/bin/ray; fi
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
OUTPUTS=${OUTPUTS:-$PWD/outputs}
[[ "$OUTPUTS" == /* ]] || { echo "submit.sh: OUTPUTS must be an absolute path on storage every node sees (got '$OUTPUTS')" >&2; exit 2; }
if [[ "${RAY_AUTH_MODE:-}" != token ]]; then
  echo "submit.sh: RAY_AUTH_MODE is not 'token'; a head started with token authentication refuses this client." >&2
  echo "           export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the head's token> (docs/cluster.md)" >&2
fi
EXP=${EXPERIMENT:-}
AGENT_WAIT_S=${AGENT_WAIT_S:-120}
ID=${SUBMISSION_ID:-verl_audio_${EXP:-${PRESET:-run}}_$(date +%Y%m%d_%H%M%S)}

RUNTIME_ENV=$(OUTPUTS="$OUTPUTS" "$PY" - <<'EOF'
import json, os
env_vars = {"OUTPUTS": os.environ["OUTPUTS"], "PYTHON": os.environ.get("CLUSTER_PYTHON") or "python"}
for key in ("PRESET", "EXPERIMENT", "MODEL_PATH", "DATA_DIR", "ROLLOUT", "INPUT_MODALITY", "OUTPUT_MODALITY",
            "MODEL_FAMILY", "LORA_RANK", "DRY_RUN"):
    if os.environ.get(key):
        env_vars[key] = os.environ[key]
runtime_env = {
    "working_dir": ".",  # this checkout, uploaded to every node; its copy comes first on sys.path
    "excludes": ["/outputs/", "/.venv/", "/data/", ".git/", "__pycache__/", "*.egg-info/", "/.pytest_cache/"],
    "env_vars": env_vars,
}
if os.environ.get("PIP"):
    runtime_env["pip"] = os.environ["PIP"]
if os.environ.get("IMAGE"):
    runtime_env["image_uri"] = os.environ["IMAGE"]
print(json.dumps(runtime_env))
EOF
)
RECIPE=${RECIPE:-recipes/soundmind_alr.sh}
ENTRY=(bash "$RECIPE" "$@")  # separate words: ray job submit quotes each one (shlex.join)
echo "submit.sh: job $ID on $RAY_ADDRESS: ${ENTRY[*]} (outputs under $OUTPUTS)"
echo "submit.sh: follow: $RAY job logs --follow $ID | status: $RAY job status $ID | stop: $RAY job stop $ID"
ARGS=(job submit --submission-id "$ID" --runtime-env-json "$RUNTIME_ENV")
[[ "${NO_WAIT:-0}" == 1 ]] && ARGS+=(--no-wait)
# A head that has just started accepts connections before its node's job agent is up, and refuses a
# submission with "No available agent to submit job" meanwhile: retry that refusal (only that one).
LOG=$(mktemp); trap 'rm -f "$LOG"' EXIT
for (( attempt = 1; ; attempt++ )); do
  set +e; "$RAY" "${ARGS[@]}" -- "${ENTRY[@]}" 2>&1 | tee "$LOG"; rc=${PIPESTATUS[0]}; set -e
  if (( rc != 0 )) && grep -q "No available agent to submit job" "$LOG" && (( attempt < AGENT_WAIT_S / 2 )); then
    echo "submit.sh: the head's job agent is not up yet; submitting again in 2 s (attempt $attempt)" >&2
    sleep 2
    continue
  fi
  exit "$rc"
done
