"""verl's CPU platform: device ``cpu``, collectives over gloo.

Registered as ``"cpu"`` in verl's ``PlatformRegistry`` by ``verl_audio.plugin``. How it is chosen:

* ``VERL_PLATFORM=cpu`` (verl's own override) picks it explicitly, also on a machine with GPUs;
* otherwise verl probes the registered platforms in registration order (nvidia, huawei, amd, then
  ours) and takes the first available one: this platform reports itself available only when torch
  sees no accelerator and no vendor SMI tool is on ``PATH``, so it is the fallback of a CPU-only host;
* in-process, ``use_cpu_platform()`` installs it with verl's ``set_platform`` (before anything has
  called ``get_platform()``; verl's FSDP engine module reads the device name when it is imported).

Ray: training processes still ask Ray for its ``"GPU"`` resource, which on a CPU host is a count of
logical worker slots (start Ray with ``num_gpus=N``). verl's resource-pool checks and accelerator-id
lookups know only GPU/NPU names, so this keeps them working without patches.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase

from verl_audio.platform import device_module

#: name under which the platform is registered (the value of ``VERL_PLATFORM`` that selects it)
PLATFORM_NAME = "cpu"
#: gloo on the CPU; verl's process-group strings become ``cpu:gloo`` (see ``verl_audio.patches``)
BACKEND = "gloo"
_ACCELERATOR_TOOLS = ("nvidia-smi", "npu-smi", "rocm-smi", "amd-smi")


def accelerator_present() -> bool:
    """Whether torch sees an accelerator or a vendor SMI tool is installed (then CPU is not the default)."""
    if torch.accelerator.is_available():
        return True
    return any(shutil.which(tool) for tool in _ACCELERATOR_TOOLS)


class PlatformCPU(PlatformBase):
    """Runs verl's FSDP engines and Ray workers on CPU (see module doc)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Only the fallback: a host with an accelerator must pick it (or set VERL_PLATFORM=cpu).
        return not accelerator_present()

    def current_device(self) -> str:  # type: ignore[override]
        # verl passes this to `.to()`, `torch.device()` and FSDP's `device_id`; an int would mean a GPU index.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None  # no configurable allocator on CPU

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return BACKEND

    def visible_devices_envvar(self) -> str:
        # Ray sets this for actors holding its "GPU" resource; torch on CPU ignores it.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # logical worker slots, see module doc

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def use_cpu_platform() -> PlatformCPU:
    """Make the CPU platform verl's current platform in this process (``VERL_PLATFORM=cpu`` does it for all)."""
    from verl.plugin.platform import set_platform

    platform = PlatformCPU()
    set_platform(platform)
    return platform
