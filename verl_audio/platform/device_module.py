"""The ``torch.<device>``-like namespace verl gets from ``get_torch_device()`` on the CPU platform.

verl calls memory, RNG and stream functions on its device module (``empty_cache``, ``mem_get_info``,
``max_memory_allocated``, ``get_rng_state`` ...). ``torch.cpu`` has only some of them, so this module
adds the rest with CPU meanings: memory figures are this process's resident memory, the RNG is
torch's default (CPU) generator, cache/IPC calls do nothing. Any other name falls through to
``torch.cpu`` (``Stream``, ``Event``, ``current_stream``, ``stream`` ...) and raises
``AttributeError`` there if it does not exist.
"""

from __future__ import annotations

import platform as _platform
import resource
from typing import Any

import psutil
import torch


def is_available() -> bool:
    """The CPU is always there."""
    return True


def device_count() -> int:
    """One logical device per process."""
    return 1


def current_device() -> str:
    """``"cpu"``: verl passes this to ``.to(...)`` and ``torch.device(...)``, where an index would fail."""
    return "cpu"


def set_device(device: Any = None) -> None:
    """Nothing to select on CPU (verl calls this with a local rank)."""


def synchronize(device: Any = None) -> None:
    """CPU ops are synchronous."""


def get_device_name(device: Any = None) -> str:
    """The processor name, or ``"cpu"`` when the OS does not report one."""
    return _platform.processor() or "cpu"


# --- memory: this process's resident set stands in for "allocated" and "reserved" ---------------


def empty_cache() -> None:
    """No caching allocator on CPU."""


def ipc_collect() -> None:
    """No CUDA IPC handles on CPU."""


def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
    """Not enforceable on CPU; accepted so that verl's callers run unchanged."""


def reset_peak_memory_stats(device: Any = None) -> None:
    """The peak is the OS's ``ru_maxrss``, which cannot be reset."""


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """``(free, total)`` system memory in bytes, like ``torch.cuda.mem_get_info``."""
    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def memory_allocated(device: Any = None) -> int:
    """Resident memory of this process in bytes."""
    return int(psutil.Process().memory_info().rss)


def memory_reserved(device: Any = None) -> int:
    """Same as ``memory_allocated`` (no allocator cache on CPU)."""
    return memory_allocated(device)


def max_memory_allocated(device: Any = None) -> int:
    """Peak resident memory of this process in bytes (``ru_maxrss`` is in KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def max_memory_reserved(device: Any = None) -> int:
    """Same as ``max_memory_allocated``."""
    return max_memory_allocated(device)


# --- RNG: the device generator is torch's default CPU generator ---------------------------------


def manual_seed(seed: int) -> None:
    """Seed torch's default generator."""
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    """Same as ``manual_seed``: there is one CPU generator."""
    torch.manual_seed(seed)


def get_rng_state(device: Any = None) -> torch.Tensor:
    """State of torch's default generator."""
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device: Any = None) -> None:
    """Restore torch's default generator."""
    torch.set_rng_state(new_state)


def __getattr__(name: str) -> Any:
    # everything else (Stream, Event, current_stream, stream, ...) is torch.cpu's
    return getattr(torch.cpu, name)
