"""``recipes/submit.sh`` against a head that has just started: the job is accepted once the head's job agent is up.

A head answers on its job server before its node's job agent has registered; its job server waits 10 s for an
agent (``ray.dashboard.consts.WAIT_AVAILABLE_AGENT_TIMEOUT``) and then refuses the submission ("No available agent
to submit job"), which happens when the agent's start takes longer, as on a busy machine. The script resubmits on
exactly that refusal:

* the retry itself, with ``RAY`` set to a stand-in that refuses twice the way the job server does (whether a real
  agent is late cannot be arranged), then runs the entry point;
* a real head (``ray start --head`` with token auth), a one-line entry point submitted as soon as its job server
  answers, waiting for the job's end: the job succeeds and its output reaches the client (slow: ~45 s).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO, SUBMIT
from helpers.ray_nodes import RayNodes

MARKER = "fresh-head job ran"


@pytest.fixture()
def fresh_head():
    nodes = RayNodes()
    nodes.start_head_until_jobs_answer(num_cpus=2)
    try:
        yield nodes
    finally:
        nodes.stop()


REFUSING_RAY = """#!/usr/bin/env bash
# refuses the first two submissions as Ray's job server does while no agent is up, then runs the entry point
count=$(cat "$STATE" 2>/dev/null || echo 0); echo $((count + 1)) > "$STATE"
if (( count < 2 )); then
  echo "RuntimeError: Request failed with status code 500: No available agent to submit job, please try again later."
  exit 1
fi
while [[ $1 != -- ]]; do shift; done; shift; exec "$@"
"""


def test_submit_retries_while_no_job_agent_is_up(tmp_path: Path) -> None:
    ray, entry = tmp_path / "ray", tmp_path / "entry.sh"
    ray.write_text(REFUSING_RAY)
    ray.chmod(0o755)
    entry.write_text(f"echo '{MARKER}'\n")
    env = {"PATH": "/usr/bin:/bin", "RAY": str(ray), "STATE": str(tmp_path / "count"), "OUTPUTS": str(tmp_path),
           "RECIPE": str(entry), "RAY_AUTH_MODE": "token", "AGENT_WAIT_S": "20"}
    result = subprocess.run(["bash", str(SUBMIT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("job agent is not up yet") == 2 and MARKER in out, out


def test_submit_gives_up_on_other_errors_at_once(tmp_path: Path) -> None:
    ray = tmp_path / "ray"
    ray.write_text("#!/usr/bin/env bash\necho 'ConnectionError: connection refused'; exit 3\n")
    ray.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "RAY": str(ray), "OUTPUTS": str(tmp_path), "RAY_AUTH_MODE": "token"}
    result = subprocess.run(["bash", str(SUBMIT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "not up yet" not in result.stderr


@pytest.mark.slow
def test_submit_right_after_the_head_starts(fresh_head: RayNodes, tmp_path: Path) -> None:
    entry = tmp_path / "entry.sh"
    entry.write_text(f"echo '{MARKER}'\n")
    env = {**fresh_head.env, "RAY_ADDRESS": fresh_head.dashboard, "OUTPUTS": str(tmp_path), "RECIPE": str(entry),
           "CLUSTER_PYTHON": sys.executable, "SUBMISSION_ID": "fresh_head", "AGENT_WAIT_S": "180"}
    result = subprocess.run(["bash", str(SUBMIT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert MARKER in out, out[-4000:]
    assert "succeeded" in out.lower(), out[-4000:]
