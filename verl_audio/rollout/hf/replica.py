"""``HFReplica``: verl's ``RolloutReplica`` for the `hf` backend (``rollout.name=hf``).

In hybrid mode (verl's default: rollout colocated with the actor) each replica takes
``tensor_model_parallel_size * data_parallel_size * pipeline_model_parallel_size`` actor workers and
starts ONE ``HFRolloutServer`` actor on the node of its first worker, seeing the same accelerators
(its model is not sharded: the parallel sizes only group workers). The server is a named Ray actor,
``hf_server_<replica>_0``, which is how the workers' ``HFServerAdapter`` finds it to push weights.
"""

from __future__ import annotations

import asyncio

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from verl_audio.rollout.hf import BACKEND
from verl_audio.rollout.hf.server import HFRolloutServer
from verl_audio.rollout.placement import device_order, noset_visible_devices_env, worker_placement


def server_actor_name(replica_rank: int, node_rank: int = 0, role: str = "", suffix: str = "") -> str:
    """Ray actor name of a replica's server (``role``: "", "reward" or "teacher", as vLLM names them)."""
    middle = f"server_{role}_" if role else "server_"
    return f"{BACKEND}_{middle}{replica_rank}_{node_rank}{suffix}"


class HFReplica(RolloutReplica):
    """One `hf` rollout server per replica, colocated with (and weight-synced from) the actor workers."""

    async def launch_servers(self) -> None:
        """Start the server actor next to this replica's workers and publish its handle and address."""
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(
                f"the hf rollout backend runs colocated with the actor (hybrid mode), not {self.rollout_mode}"
            )
        if len(self.workers) != self.world_size:
            raise RuntimeError(f"replica {self.replica_rank}: {len(self.workers)} workers, expected {self.world_size}")
        placements = await asyncio.gather(*[w.__ray_call__.remote(worker_placement) for w in self.workers])
        node_id, node_ip, _ = placements[0]
        devices = sorted({d for node, _, ids in placements if node == node_id for d in ids}, key=device_order)
        role = "reward" if self.is_reward_model else "teacher" if self.is_teacher_model else ""
        name = server_actor_name(self.replica_rank, 0, role, self.name_suffix)
        server = (
            ray.remote(HFRolloutServer)
            .options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                runtime_env={"env_vars": noset_visible_devices_env()},
                name=name,
                # the server holds no CPU slot: it works while the colocated trainer waits, and vice versa
                num_cpus=0,
                max_concurrency=self.max_concurrency,
            )
            .remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                replica_rank=self.replica_rank,
                node_rank=0,
                visible_devices=",".join(devices) or None,
            )
        )
        await server.get_stats.remote()  # surfaces construction errors here rather than at the first request
        self.servers = [server]
        self._server_handle = server
        # the load balancer keys replicas by this string; there is no HTTP endpoint behind it
        self._server_address = f"{BACKEND}://{node_ip}/{name}"
