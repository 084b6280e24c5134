"""The tiny preset as Ray jobs on a local cluster: ``ray start --head`` with token auth, ``recipes/submit.sh``.

In order, on one head (1 logical GPU slot, 8 logical CPUs, job server on a free port):

1. one node: the tiny preset for 1 step submitted with ``recipes/submit.sh`` (``ray job submit``, a
   ``working_dir`` runtime env) and followed through the Jobs API to ``SUCCEEDED``; outputs checked;
2. a second node joins (``ray start --address``): ``trainer.nnodes=2`` in CPU mode, one worker per node;
3. a third node joins whose storage lacks the run's data folder (a private mount namespace with an
   empty tmpfs over it; skipped where namespaces are not allowed): the job fails in the path check,
   naming that node and the path, before any worker starts.

Each prints its wall time. Minutes on 2 cores: marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.paths import REPO, SUBMIT
from helpers.ray_nodes import RayNodes, unshare_hiding

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 1200
STEPS = ("trainer.total_training_steps=1", "trainer.test_freq=1", "trainer.n_gpus_per_node=1")


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    nodes = RayNodes()
    nodes.start_head(num_cpus=8, num_gpus=1, dashboard=True, name="head")
    nodes.outputs = tmp_path_factory.mktemp("cluster_jobs")
    try:
        yield nodes
    finally:
        nodes.stop()


def submit(nodes: RayNodes, experiment: str, *overrides: str, job: str | None = None) -> tuple[str, str, float]:
    """Submit the tiny preset with ``recipes/submit.sh`` as job ``test_<job or experiment>``; wait for the end;
    (status, logs, seconds)."""
    sid = f"test_{job or experiment}"
    from ray.job_submission import JobStatus, JobSubmissionClient

    env = {**nodes.env, "RAY_ADDRESS": nodes.dashboard, "OUTPUTS": str(nodes.outputs), "PRESET": "tiny",
           "EXPERIMENT": experiment, "CLUSTER_PYTHON": sys.executable, "SUBMISSION_ID": sid,
           "NO_WAIT": "1"}
    start = time.monotonic()
    result = subprocess.run(["bash", str(SUBMIT), *STEPS, *overrides], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # the token as an explicit header: this process read Ray's auth settings when it first imported ray
    client = JobSubmissionClient(nodes.dashboard, headers={"Authorization": f"Bearer {nodes.env['RAY_AUTH_TOKEN']}"})
    while True:
        status = client.get_job_status(sid)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        assert time.monotonic() - start < JOB_TIMEOUT_S, f"job still {status} after {JOB_TIMEOUT_S} s"
        time.sleep(2)
    seconds = time.monotonic() - start
    print(f"\njob {experiment}: {status.value} in {seconds:.1f} s (submit to end)")
    return status.value, client.get_job_logs(sid), seconds


def training_steps(run: Path) -> list[int]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [rec["step"] for rec in lines if "training/global_step" in rec["data"]]


def test_1_tiny_job_on_one_node(head: RayNodes) -> None:
    status, logs, _ = submit(head, "one_node")
    assert status == "SUCCEEDED", logs[-6000:]
    assert "joined the Ray cluster at" in logs and "CPU mode" in logs
    run = head.outputs / "one_node"
    assert training_steps(run) == [1]
    assert (run / "checkpoints" / "global_step_1" / "actor" / "model_world_size_1_rank_0.pt").is_file()
    assert (run / "hf_export" / "config.json").is_file() and (run / "reward_curve.png").stat().st_size > 0
    # the prepared rows name audio in the outputs' copy of the sample, not in the job's temporary working_dir
    import pyarrow.parquet as pq

    audios = pq.read_table(run / "data" / "train.parquet", columns=["audios"]).column("audios").to_pylist()
    assert all(path.startswith(str(run / "demo_sample")) for paths in audios for path in paths)


def test_2_two_nodes_in_cpu_mode(head: RayNodes) -> None:
    head.add_node(num_cpus=8, num_gpus=1, name="w1")
    status, logs, _ = submit(head, "two_nodes", "trainer.nnodes=2")
    assert status == "SUCCEEDED", logs[-6000:]
    assert "every node of 2 sees the run's" in logs
    run = head.outputs / "two_nodes"
    assert training_steps(run) == [1]
    shards = {p.name for p in (run / "checkpoints" / "global_step_1" / "actor").glob("model_world_size_*")}
    assert shards == {"model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"}


def test_3_a_node_without_the_data_fails_fast_naming_node_and_path(head: RayNodes) -> None:
    data = head.outputs / "two_nodes" / "data"  # prepared by the run before
    wrap = unshare_hiding(data)
    if wrap is None:
        pytest.skip("no mount namespaces here (unshare -m): cannot give one node a storage without the data")
    head.add_node(num_cpus=2, num_gpus=0, name="blind", wrap=wrap)
    status, logs, seconds = submit(head, "two_nodes", "trainer.nnodes=2", job="blind_node")
    assert status == "FAILED", logs[-6000:]
    assert "(blind) id " in logs
    assert f"data.train_files: {data / 'train.parquet'} does not exist" in logs
    assert "ClusterError" in logs
    assert "AudioTaskRunner hostname" not in logs  # nothing of the training started
    print(f"path check failure reported {seconds:.1f} s after submission")
