"""Where a rollout server runs: the node and accelerators of the actor workers it serves (both backends, speech).

A server actor reserves no Ray slot of its own (it works while the colocated trainer waits), so it is placed on
its replica's first worker's node by node affinity and told which accelerators that replica's workers hold.
"""

from __future__ import annotations

from typing import Any

import ray


def worker_placement(worker: Any) -> tuple[str, str, list[str]]:
    """(node id, node ip, accelerator ids) of the calling Ray worker; none on a CPU-only platform."""
    from verl.utils.device import get_resource_name

    ctx = ray.get_runtime_context()
    ids = ctx.get_accelerator_ids().get(get_resource_name(), [])
    return ctx.get_node_id(), ray.util.get_node_ip_address(), [str(i) for i in ids]


def device_order(device: str) -> tuple[int, str]:
    return (int(device), device) if device.isdigit() else (1 << 30, device)


def noset_visible_devices_env() -> dict[str, str]:
    """Keep Ray from hiding the workers' accelerators from a server that reserves none itself."""
    from verl.plugin.platform import get_platform

    return {var: "1" for var in (get_platform().ray_noset_envvars() or [])}
