"""Running on an existing Ray cluster: join it, check its resources, check that every node sees the run's paths.

``verl_audio.trainer.main`` joins a cluster instead of starting Ray when ``ray_kwargs.ray_init.address``
is given or ``RAY_ADDRESS`` is set (``ray job submit`` sets it for its entrypoint). Then, before any
worker starts:

* **join** (``connect``): ``ray.init(address=...)`` with verl's runtime env merged with
  ``ray_kwargs.ray_init.runtime_env`` (as verl's ``run_ppo`` builds it), without the arguments that only
  apply to starting Ray (``num_cpus``, ``num_gpus``, ``resources``, ...: Ray refuses them when
  connecting; the nodes declare their resources at ``ray start``). Each dropped key is logged.
* **resources** (``check_resources``): verl places ``trainer.n_gpus_per_node`` worker bundles of
  ``{GPU: 1, CPU: 3}`` on each of ``trainer.nnodes`` nodes (one placement group per node; plus the
  reward pool when ``reward.reward_model.enable_resource_pool``) and the task runner takes 1 CPU. The
  free resources of the alive nodes must hold that, else the run stops naming what is missing and what
  each node has. In CPU mode the worker slots are the logical ``GPU`` resources each node declares with
  ``ray start --num-gpus=N`` (the CPU platform reports that resource name; see ``cpu_mode``).
* **paths** (``check_paths``, when the cluster has more than one alive node and
  ``verl_audio.check_paths``): one tiny Ray task per node checks every path the run reads (model,
  export base, train/val files, the audio folders their rows name) and writes (output and checkpoint
  dirs). A write dir must be the driver's own: the driver leaves a marker file with a random token in
  it and each node must read that token back (a same-named local folder is not shared storage).
  Problems are collected from all nodes and reported together, each naming node and path.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger(__name__)

#: ray.init arguments that only apply to starting a cluster (Ray refuses or ignores them when connecting)
START_ONLY_KEYS = ("num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "include_dashboard",
                   "dashboard_host", "dashboard_port", "enable_resource_isolation", "cgroup_path",
                   "system_reserved_cpu", "system_reserved_memory", "_system_config",
                   "_enable_object_reconstruction", "_node_name")
#: the Ray resource a worker slot takes (the CPU platform reports GPU for its logical slots)
SLOT_RESOURCE = "GPU"
#: file the driver writes into each write dir; every node must read back the same token
MARKER = ".verl_audio_shared_check"
#: seconds to wait for the per-node path checks (a node that cannot start a task is reported)
PATH_CHECK_TIMEOUT_S = 120


class ClusterError(RuntimeError):
    """The cluster cannot run this config; the message names what is missing (resources, or node and path)."""


def address(config: DictConfig) -> str | None:
    """The cluster to join: ``ray_kwargs.ray_init.address``, else ``RAY_ADDRESS``; None starts a local Ray."""
    configured = config.ray_kwargs.ray_init.get("address")
    if configured:
        return str(configured)
    return os.environ.get("RAY_ADDRESS") or None


def init_kwargs(config: DictConfig, cluster: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``ray.init`` arguments for joining ``cluster``, and the start-only ones dropped (key -> value)."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    ray_init = OmegaConf.to_container(config.ray_kwargs.ray_init, resolve=True)
    runtime_env = get_ppo_ray_runtime_env(config)
    if config.get("transfer_queue", {}).get("enable", False):  # as verl's run_ppo does
        runtime_env.setdefault("env_vars", {})["TRANSFER_QUEUE_ENABLE"] = "1"
    runtime_env = OmegaConf.to_container(OmegaConf.merge(runtime_env, ray_init.pop("runtime_env", None) or {}))
    dropped = {key: ray_init.pop(key) for key in START_ONLY_KEYS if ray_init.get(key) is not None}
    kwargs = {key: value for key, value in ray_init.items() if value is not None and key not in START_ONLY_KEYS}
    kwargs.update(address=cluster, runtime_env=runtime_env)
    return kwargs, dropped


def connect(config: DictConfig, cluster: str) -> list[str]:
    """Join ``cluster`` (``ray.init``); return log lines (what was dropped, the nodes)."""
    from ray.exceptions import AuthenticationError

    kwargs, dropped = init_kwargs(config, cluster)
    try:
        ray.init(**kwargs)
    except AuthenticationError as error:
        raise ClusterError(
            f"cannot join the Ray cluster at {cluster}: {error}\nGive this process the cluster's token: "
            "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the token the head was started with> "
            "(see docs/cluster.md)") from error
    lines = [f"joined the Ray cluster at {cluster}"]
    lines += [f"dropped ray_kwargs.ray_init.{key}={value} (start-only; the nodes declare their resources at "
              "`ray start`)" for key, value in dropped.items()]
    lines += [f"node {describe(node)}: {_resources(node['Resources'])}" for node in alive_nodes()]
    return lines


def alive_nodes() -> list[dict]:
    """``ray.nodes()`` entries of the alive nodes, ordered by IP then name."""
    return sorted((n for n in ray.nodes() if n.get("Alive")),
                  key=lambda n: (n.get("NodeManagerAddress", ""), n.get("NodeName", ""), n["NodeID"]))


def describe(node: dict) -> str:
    """A node as the messages name it: address, name when it differs, and the start of its id."""
    ip, name = node.get("NodeManagerAddress", "?"), node.get("NodeName", "")
    shown = ip if not name or name == ip else f"{ip} ({name})"
    return f"{shown} id {node['NodeID'][:12]}"


def _resources(res: dict[str, float], total: dict[str, float] | None = None) -> str:
    keys = [k for k in (SLOT_RESOURCE, "CPU") if k in res or (total and k in total)]
    if total is None:
        return ", ".join(f"{k} {res.get(k, 0):g}" for k in keys) or "no CPU or GPU"
    return ", ".join(f"{k} {res.get(k, 0):g} free of {total.get(k, 0):g}" for k in keys) or "no CPU or GPU"


# --- resources ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolNeed:
    """One of verl's resource pools: ``nnodes`` placement groups of ``per_node`` worker bundles each."""

    name: str            #: the pool and the keys it comes from, for the message
    nnodes: int          #: placement groups (one per node, STRICT_PACK)
    per_node: int        #: worker bundles (slots) per placement group
    cpus_per_slot: int   #: CPUs each bundle asks for (verl's max_colocate_count)


def pool_needs(config: DictConfig) -> list[PoolNeed]:
    """The resource pools verl's task runner will create for ``config`` (``init_resource_pool_mgr``)."""
    from dataclasses import fields

    from verl.single_controller.ray.base import ResourcePoolManager

    cpus = next(f.default for f in fields(ResourcePoolManager) if f.name == "max_colocate_count")
    trainer = config.trainer
    needs = [PoolNeed(f"global_pool (trainer.nnodes={trainer.nnodes} x trainer.n_gpus_per_node="
                      f"{trainer.n_gpus_per_node})", int(trainer.nnodes), int(trainer.n_gpus_per_node), cpus)]
    rm = config.reward.reward_model
    if rm.get("enable", False) and rm.get("enable_resource_pool", False):
        needs.append(PoolNeed(f"reward_pool (reward.reward_model.nnodes={rm.nnodes} x n_gpus_per_node="
                              f"{rm.n_gpus_per_node})", int(rm.nnodes), int(rm.n_gpus_per_node), cpus))
    return needs


def check_resources(config: DictConfig, cpu_mode: bool) -> None:
    """Raise ``ClusterError`` unless the alive nodes' free resources hold the run's placement groups."""
    nodes = alive_nodes()
    free_by_id = ray._private.state.available_resources_per_node()
    free = {n["NodeID"]: dict(free_by_id.get(n["NodeID"], {})) for n in nodes}
    groups = [(need, need.per_node) for need in pool_needs(config) for _ in range(need.nnodes)]
    groups.sort(key=lambda g: -g[1])
    unplaced: list[PoolNeed] = []
    for need, slots in groups:  # first fit, largest first, as placement groups are packed one per node
        want = {SLOT_RESOURCE: slots, "CPU": slots * need.cpus_per_slot}
        node = next((i for i, res in free.items() if all(res.get(k, 0) >= v for k, v in want.items())), None)
        if node is None:
            unplaced.append(need)
            continue
        for key, value in want.items():
            free[node][key] -= value
    runner_cpu = sum(res.get("CPU", 0) for res in free.values()) >= 1
    if not unplaced and runner_cpu:
        return
    lines = []
    for need in pool_needs(config):
        missing = sum(1 for u in unplaced if u == need)
        if missing:
            lines.append(f"{need.name} needs {need.nnodes} node(s) with {need.per_node} {SLOT_RESOURCE} and "
                         f"{need.per_node * need.cpus_per_slot} CPU free each ({need.cpus_per_slot} CPU per "
                         f"worker slot): {missing} of {need.nnodes} do not fit")
    if not unplaced and not runner_cpu:
        lines.append("the task runner needs 1 free CPU beside the worker slots")
    lines.append(f"the cluster's alive nodes ({len(nodes)}):")
    lines += [f"  {describe(n)}: {_resources(free_by_id.get(n['NodeID'], {}), n['Resources'])}" for n in nodes]
    if cpu_mode:
        lines.append("CPU mode on a cluster: each node declares its worker slots as logical GPUs and enough "
                     "logical CPUs, e.g. `ray start ... --num-gpus=<trainer.n_gpus_per_node> "
                     "--num-cpus=<3 x n_gpus_per_node + 1>` (docs/cluster.md)")
    else:
        lines.append("lower trainer.nnodes / trainer.n_gpus_per_node, or add nodes (docs/cluster.md)")
    raise ClusterError("the Ray cluster cannot hold this run:\n" + "\n".join(lines))


# --- paths ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathNeed:
    """A path the run reads or writes, and the config key it comes from."""

    key: str
    path: str
    write: bool = False


def _files(value: Any) -> list[str]:
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def audio_dirs(files: list[str], audio_key: str) -> list[str]:
    """The distinct folders of the audio paths that the rows of ``files`` name (parquet, ``audio_key``)."""
    import pyarrow.parquet as pq

    dirs: set[str] = set()
    for file in files:
        if not Path(file).is_file() or audio_key not in pq.read_schema(file).names:
            continue
        for audios in pq.read_table(file, columns=[audio_key]).column(audio_key).to_pylist():
            for audio in audios or []:
                path = audio.get("path") if isinstance(audio, dict) else audio
                if isinstance(path, str) and path:
                    dirs.add(str(Path(path).parent))
    return sorted(dirs)


def run_paths(config: DictConfig) -> list[PathNeed]:
    """Every path the run reads or writes (paths already made absolute by ``main.prepare``)."""
    needs: list[PathNeed] = []
    model = config.actor_rollout_ref.model.path
    if Path(model).exists():  # otherwise a Hub id: each node loads it from its own cache
        needs.append(PathNeed("actor_rollout_ref.model.path", str(model)))
    base = config.verl_audio.get("export_base")
    if base and Path(base).exists():
        needs.append(PathNeed("verl_audio.export_base", str(base)))
    data: list[str] = []
    for key in ("train_files", "val_files"):
        for file in _files(config.data[key]):
            needs.append(PathNeed(f"data.{key}", file))
            data.append(file)
    for folder in audio_dirs(data, config.data.get("audio_key", "audios")):
        needs.append(PathNeed("audio folder named in data rows", folder))
    needs.append(PathNeed("verl_audio.output_dir", str(config.verl_audio.output_dir), write=True))
    needs.append(PathNeed("trainer.default_local_dir", str(config.trainer.default_local_dir), write=True))
    return needs


def _check_here(needs: list[PathNeed], tokens: dict[str, str]) -> list[str]:
    """Problems with ``needs`` as seen from this process (runs on every node)."""
    probe_name = f".verl_audio_probe_{socket.gethostname()}_{os.getpid()}"
    problems = []
    for need in needs:
        path = Path(need.path)
        if not path.exists():
            problems.append(f"{need.key}: {need.path} does not exist")
        elif not need.write:
            if not os.access(path, os.R_OK):
                problems.append(f"{need.key}: {need.path} is not readable")
        else:
            marker = path / MARKER
            seen = marker.read_text() if marker.is_file() else None
            if seen != tokens[need.path]:
                problems.append(f"{need.key}: {need.path} exists but is not the driver's folder (its marker "
                                f"{MARKER} is {'missing' if seen is None else 'different'}): not shared storage")
                continue
            probe = path / probe_name
            try:
                probe.write_text("ok")
                probe.unlink()
            except OSError as error:
                problems.append(f"{need.key}: {need.path} is not writable ({error.strerror})")
    return problems


@ray.remote(num_cpus=0)
def _check_on_node(needs: list[PathNeed], tokens: dict[str, str]) -> list[str]:
    return _check_here(needs, tokens)


def check_paths(needs: list[PathNeed], nodes: list[dict] | None = None,
                timeout_s: float = PATH_CHECK_TIMEOUT_S) -> None:
    """Check ``needs`` from every alive node (one task each); raise ``ClusterError`` naming node and path."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes() if nodes is None else nodes
    tokens = {}
    for need in needs:
        if need.write:
            Path(need.path).mkdir(parents=True, exist_ok=True)
            tokens[need.path] = uuid.uuid4().hex
            (Path(need.path) / MARKER).write_text(tokens[need.path])
    try:
        refs = {describe(n): _check_on_node.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(needs, tokens)
            for n in nodes}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        problems = []
        for node, ref in refs.items():
            if ref not in ready:
                problems.append(f"node {node}: did not run the path check within {timeout_s:g} s")
                continue
            try:
                problems += [f"node {node}: {p}" for p in ray.get(ref)]
            except Exception as error:  # a node that cannot start a task (e.g. runtime env setup) is named too
                problems.append(f"node {node}: the path check failed: {type(error).__name__}: {error}")
    finally:
        for need in needs:
            if need.write:
                (Path(need.path) / MARKER).unlink(missing_ok=True)
    if problems:
        raise ClusterError(f"{len(problems)} path problem(s) on the cluster's {len(nodes)} nodes; every node "
                           "must see the run's paths (shared storage):\n  " + "\n  ".join(problems))


def join(config: DictConfig, cluster: str, cpu_mode: bool) -> list[str]:
    """Connect, check resources, and (more than one node) check paths; return log lines."""
    lines = connect(config, cluster)
    check_resources(config, cpu_mode)
    nodes = alive_nodes()
    if len(nodes) > 1 and config.verl_audio.get("check_paths", True):
        needs = run_paths(config)
        check_paths(needs, nodes)
        lines.append(f"every node of {len(nodes)} sees the run's {len(needs)} paths")
    return lines
