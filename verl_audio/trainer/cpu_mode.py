"""CPU mode: run verl's PPO trainer on a machine without an accelerator.

Chosen by ``verl_audio.device`` (``auto``: when torch sees no accelerator and no vendor SMI tool is
installed; ``cpu``: always; ``gpu``: never). What it changes, each logged:

* ``VERL_PLATFORM=cpu`` for every Ray process (verl-audio's CPU platform: device ``cpu``, gloo);
* ``trainer.device=cpu`` (verl's ``auto_set_device`` only knows NPUs);
* Ray's local cluster gets ``num_gpus = nnodes * n_gpus_per_node`` *logical* GPUs: verl's resource
  pools, ``_check_resource_available`` and accelerator-id lookups count ``GPU`` resources, and the
  CPU platform reports that resource name, so each training worker takes one logical slot (a CPU
  process) with no patch to verl's pool code; ``num_cpus`` is ``verl_audio.cpu_ray_cpus`` (logical
  too: each worker bundle asks for 3 CPUs). When joining an existing cluster (``joining``) nothing
  is set here: each node declares the same logical slots at ``ray start --num-gpus=N --num-cpus=M``
  and ``cluster.check_resources`` checks them (docs/cluster.md);
* torch.compile is turned off for the actor and reference (no compiler is needed on CPU);
* the model's attention becomes ``sdpa`` unless ``override_config.attn_implementation`` is set
  (verl's default, flash attention, does not exist on CPU).

* with ``rollout.name=vllm`` (vLLM's CPU build): no sleep mode and no cache freeing (vLLM's CPU
  platform has neither), eager execution (no graph compilation at start), and a KV cache of
  ``verl_audio.vllm_cpu_kvcache_gb`` GB (``VLLM_CPU_KVCACHE_SPACE``; ``gpu_memory_utilization`` means
  nothing on CPU).

The ``hf`` and ``vllm`` rollout backends run on CPU: anything else is refused here, before Ray starts.
"""

from __future__ import annotations

import logging
import os

import verl  # noqa: F401  (before verl_audio.platform: `import verl` loads the plugin, which imports it)
from omegaconf import DictConfig, open_dict

from verl_audio.platform import PLATFORM_NAME
from verl_audio.platform.cpu import accelerator_present

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "gpu")
CPU_ROLLOUTS = ("hf", "vllm")
#: rollout keys set for vLLM's CPU build
VLLM_CPU_ROLLOUT = {"enable_sleep_mode": False, "free_cache_engine": False, "enforce_eager": True}


def wants_cpu(config: DictConfig) -> tuple[bool, str]:
    """Whether to run in CPU mode, and why (for the log)."""
    choice = config.verl_audio.device
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"verl_audio.device must be one of {DEVICE_CHOICES}, got {choice!r}")
    if choice == "cpu":
        return True, "verl_audio.device=cpu"
    if choice == "gpu":
        return False, "verl_audio.device=gpu"
    if accelerator_present():
        return False, "an accelerator is visible"
    return True, "no accelerator is visible (verl_audio.device=auto)"


def set_env_vars(config: DictConfig, env: dict[str, str]) -> None:
    """Add ``env`` to ``ray_kwargs.ray_init.runtime_env.env_vars`` (every Ray process gets these)."""
    with open_dict(config):
        # DictConfig.setdefault returns the plain default, not the node it stores: look each level up again
        node = config.ray_kwargs
        for key in ("ray_init", "runtime_env", "env_vars"):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        for key, value in env.items():
            node[key] = str(value)


def apply(config: DictConfig, joining: bool = False) -> list[str]:
    """Set the CPU-mode keys (module doc) on ``config`` in place; return ``key=value`` lines for the log.

    ``joining``: the run joins an existing Ray cluster, whose nodes declare their (logical) resources.
    """
    rollout = config.actor_rollout_ref.rollout.name
    if rollout not in CPU_ROLLOUTS:
        raise ValueError(f"CPU mode runs only the {CPU_ROLLOUTS} rollout backend, got "
                         f"actor_rollout_ref.rollout.name={rollout!r}: it needs a GPU")
    changes: dict[str, object] = {}
    os.environ["VERL_PLATFORM"] = PLATFORM_NAME
    set_env_vars(config, {"VERL_PLATFORM": PLATFORM_NAME})
    changes["env VERL_PLATFORM"] = PLATFORM_NAME
    slots = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
    with open_dict(config):
        config.trainer.device = "cpu"
        changes["trainer.device"] = "cpu"
        if joining:
            changes["worker slots (logical GPUs the cluster's nodes declare at `ray start --num-gpus`)"] = slots
        else:
            config.ray_kwargs.ray_init.num_gpus = slots
            changes["ray_kwargs.ray_init.num_gpus (logical worker slots)"] = slots
        if not joining and config.ray_kwargs.ray_init.get("num_cpus") is None:
            config.ray_kwargs.ray_init.num_cpus = int(config.verl_audio.cpu_ray_cpus)
            changes["ray_kwargs.ray_init.num_cpus (logical)"] = config.ray_kwargs.ray_init.num_cpus
        for role in ("actor", "ref"):
            section = config.actor_rollout_ref[role]
            if section.get("use_torch_compile", False):
                section.use_torch_compile = False
                changes[f"actor_rollout_ref.{role}.use_torch_compile"] = False
            if section.fsdp_config.get("use_torch_compile", False):
                section.fsdp_config.use_torch_compile = False
                changes[f"actor_rollout_ref.{role}.fsdp_config.use_torch_compile"] = False
        if rollout == "vllm":
            for key, value in VLLM_CPU_ROLLOUT.items():
                config.actor_rollout_ref.rollout[key] = value
                changes[f"actor_rollout_ref.rollout.{key}"] = value
        override = config.actor_rollout_ref.model.override_config
        if override.get("attn_implementation") is None:
            override.attn_implementation = "sdpa"
            changes["actor_rollout_ref.model.override_config.attn_implementation"] = "sdpa"
    if rollout == "vllm":
        kv_gb = int(config.verl_audio.vllm_cpu_kvcache_gb)
        set_env_vars(config, {"VLLM_CPU_KVCACHE_SPACE": str(kv_gb)})
        changes["env VLLM_CPU_KVCACHE_SPACE (GB)"] = kv_gb
    threads = int(config.verl_audio.torch_threads)
    if threads > 0:
        set_env_vars(config, {"OMP_NUM_THREADS": str(threads)})
        changes["env OMP_NUM_THREADS"] = threads
    return [f"{key}={value}" for key, value in changes.items()]
