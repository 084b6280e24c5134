"""Joining a real local Ray cluster (a ``ray start`` head and worker node with token auth) and the checks.

Two nodes on this machine: the head with 2 logical GPU slots and 4 CPUs, a worker node with 1 slot and
4 CPUs. The config is the trainer's own (composed from ``soundmind_alr.yaml``). About 30 s on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from helpers.paths import CONFIG_DIR
from helpers.ray_nodes import RayNodes
from verl_audio.trainer import cluster


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("soundmind_alr", overrides=list(overrides))


@pytest.fixture(scope="module")
def nodes():
    from ray._private.authentication_test_utils import reset_auth_token_state

    local = RayNodes()
    local.start_head(num_cpus=4, num_gpus=2, name="head")
    local.add_node(num_cpus=4, num_gpus=1, name="w1")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PATH"):
            mp.setenv(key, local.env[key])
        mp.delenv("RAY_ADDRESS", raising=False)
        reset_auth_token_state()  # this process reads the token from the environment just set
        try:
            yield local
        finally:
            ray.shutdown()
            local.stop()
    reset_auth_token_state()


@pytest.fixture(scope="module")
def joined(nodes: RayNodes) -> list[str]:
    cfg = config("+ray_kwargs.ray_init.num_cpus=16", "+ray_kwargs.ray_init.num_gpus=4",
                 f"ray_kwargs.ray_init.address={nodes.address}")
    assert cluster.address(cfg) == nodes.address
    lines = cluster.connect(cfg, nodes.address)
    return lines


def test_address_from_config_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.address(config()) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cluster.address(config()) == "10.0.0.1:6379"
    assert cluster.address(config("ray_kwargs.ray_init.address=10.0.0.2:6379")) == "10.0.0.2:6379"


def test_connect_drops_start_only_arguments_and_keeps_runtime_env(joined: list[str], nodes: RayNodes) -> None:
    assert ray.is_initialized()
    assert joined[0] == f"joined the Ray cluster at {nodes.address}"
    assert any(line.startswith("dropped ray_kwargs.ray_init.num_cpus=16") for line in joined)
    assert any(line.startswith("dropped ray_kwargs.ray_init.num_gpus=4") for line in joined)
    cfg = config("+ray_kwargs.ray_init.runtime_env.env_vars.VA_PROBE=kept")
    kwargs, dropped = cluster.init_kwargs(cfg, nodes.address)
    assert not dropped and kwargs["address"] == nodes.address
    assert kwargs["runtime_env"]["env_vars"]["VA_PROBE"] == "kept"
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    # verl's defaults merged under it (verl leaves out those this process already has set)
    defaults = get_ppo_ray_runtime_env(cfg)["env_vars"]
    assert defaults and defaults.items() <= kwargs["runtime_env"]["env_vars"].items()
    names = sorted(n["NodeName"] for n in cluster.alive_nodes())
    assert names == ["head", "w1"]


def test_resources_that_fit_pass(joined: list[str]) -> None:
    cluster.check_resources(config("trainer.nnodes=2", "trainer.n_gpus_per_node=1"), cpu_mode=True)
    cluster.check_resources(config("trainer.nnodes=1", "trainer.n_gpus_per_node=1"), cpu_mode=False)


def test_missing_slots_fail_naming_pool_and_nodes(joined: list[str]) -> None:
    # 2 nodes x 2 slots: only the head has 2 GPUs free; each needs 6 CPUs and no node has more than 4
    with pytest.raises(cluster.ClusterError) as error:
        cluster.check_resources(config("trainer.nnodes=2", "trainer.n_gpus_per_node=2"), cpu_mode=True)
    text = str(error.value)
    assert "global_pool (trainer.nnodes=2 x trainer.n_gpus_per_node=2) needs 2 node(s) with 2 GPU and 6 CPU" in text
    assert "2 of 2 do not fit" in text
    assert "(head) id " in text and "(w1) id " in text
    assert "GPU 1 free of 1, CPU 4 free of 4" in text  # the worker node as it is
    assert "--num-gpus=<trainer.n_gpus_per_node>" in text  # CPU mode says how nodes declare slots
    with pytest.raises(cluster.ClusterError, match="3 of 3 do not fit") as error:
        cluster.check_resources(config("trainer.nnodes=3", "trainer.n_gpus_per_node=2"), cpu_mode=False)
    assert "lower trainer.nnodes / trainer.n_gpus_per_node, or add nodes" in str(error.value)


def _paths_config(root: Path) -> DictConfig:
    model, data, out = root / "model", root / "data", root / "out"
    for folder in (model, data):
        folder.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text("{}")
    cfg = config(f"actor_rollout_ref.model.path={model}", f"data.train_files={data / 'train.parquet'}",
                 f"data.val_files={data / 'dev.parquet'}", f"verl_audio.output_dir={out}")
    return cfg


def test_paths_every_node_sees_pass(joined: list[str], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = _paths_config(tmp_path)
    audio = tmp_path / "audio"
    audio.mkdir()
    for split in ("train", "dev"):
        pq.write_table(pa.table({"audios": [[str(audio / f"{split}.wav")]]}), tmp_path / "data" / f"{split}.parquet")
    needs = cluster.run_paths(cfg)
    assert [(n.key, n.path, n.write) for n in needs] == [
        ("actor_rollout_ref.model.path", str(tmp_path / "model"), False),
        ("data.train_files", str(tmp_path / "data" / "train.parquet"), False),
        ("data.val_files", str(tmp_path / "data" / "dev.parquet"), False),
        ("audio folder named in data rows", str(audio), False),
        ("verl_audio.output_dir", str(tmp_path / "out"), True),
        ("trainer.default_local_dir", str(tmp_path / "out" / "checkpoints"), True),
    ]
    cluster.check_paths(needs)
    assert not list((tmp_path / "out").glob(".verl_audio_*"))  # marker and probes cleaned up


def test_a_missing_path_fails_naming_every_node_and_the_path(joined: list[str], tmp_path: Path) -> None:
    cfg = _paths_config(tmp_path)  # no parquet files written
    with pytest.raises(cluster.ClusterError) as error:
        cluster.check_paths(cluster.run_paths(cfg))
    text = str(error.value)
    train = tmp_path / "data" / "train.parquet"
    for name in ("head", "w1"):
        assert f"({name}) id " in text
    assert text.count(f"data.train_files: {train} does not exist") == 2
    assert "4 path problem(s) on the cluster's 2 nodes" in text


def test_a_write_dir_that_is_not_the_drivers_is_named(joined: list[str], tmp_path: Path) -> None:
    # the marker the driver writes is what a node must read back: a node seeing other contents is refused
    out = tmp_path / "out"
    need = cluster.PathNeed("verl_audio.output_dir", str(out), write=True)
    assert cluster._check_here([need], {str(out): "t"}) == [f"verl_audio.output_dir: {out} does not exist"]
    out.mkdir(parents=True, exist_ok=True)
    (out / cluster.MARKER).write_text("token-the-node-sees")
    problems = cluster._check_here([need], {str(out): "token-the-driver-wrote"})
    assert problems == [f"verl_audio.output_dir: {out} exists but is not the driver's folder (its marker "
                        f"{cluster.MARKER} is different): not shared storage"]
