"""The CPU platform: what verl asks of a platform and of its device module, answered on CPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("verl")

from verl_audio.platform import PLATFORM_NAME, PlatformCPU, device_module, use_cpu_platform  # noqa: E402
from verl_audio.platform import cpu as cpu_platform  # noqa: E402


def test_platform_answers_like_verl_expects() -> None:
    platform = PlatformCPU()  # instantiable: every abstract method of PlatformBase is implemented
    assert platform.device_name == "cpu" and platform.vendor_name == "cpu"
    assert platform.communication_backend_name() == "gloo"
    assert platform.current_device() == "cpu"
    assert torch.zeros(1).to(platform.current_device()).device.type == "cpu"
    assert torch.device(platform.current_device()).type == "cpu"
    assert platform.device_count() == 1 and platform.is_available()
    assert platform.get_device_capability() == (None, None)
    assert platform.is_ipc_supported() is False and platform.cudart() is None
    assert platform.device_module is device_module
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    with platform.nvtx_range("x"):
        pass
    platform.set_device(0), platform.synchronize(), platform.empty_cache(), platform.set_allocator_settings("x")


def test_platform_seeds_the_cpu_generator() -> None:
    platform = PlatformCPU()
    platform.manual_seed(123)
    a = torch.rand(3)
    platform.manual_seed_all(123)
    assert torch.equal(a, torch.rand(3))


def test_device_module_memory_functions_report_process_memory() -> None:
    free, total = device_module.mem_get_info()
    assert 0 < free <= total
    allocated = device_module.memory_allocated()
    assert allocated > 0 and device_module.memory_reserved() >= allocated // 2
    assert device_module.max_memory_allocated() >= allocated // 2
    assert device_module.max_memory_reserved() == device_module.max_memory_allocated()
    for noop in (device_module.empty_cache, device_module.ipc_collect, device_module.reset_peak_memory_stats):
        assert noop() is None
    assert device_module.set_per_process_memory_fraction(0.5) is None
    assert isinstance(device_module.get_device_name(), str) and device_module.get_device_name()


def test_device_module_rng_state_round_trip() -> None:
    state = device_module.get_rng_state()
    a = torch.rand(4)
    device_module.set_rng_state(state)
    assert torch.equal(a, torch.rand(4))
    device_module.manual_seed(7)
    b = torch.rand(2)
    device_module.manual_seed_all(7)
    assert torch.equal(b, torch.rand(2))


def test_device_module_falls_back_to_torch_cpu() -> None:
    assert device_module.Stream is torch.cpu.Stream
    assert device_module.current_stream is torch.cpu.current_stream
    assert device_module.is_available() and device_module.device_count() == 1
    assert device_module.current_device() == "cpu"
    with pytest.raises(AttributeError):
        device_module.no_such_function  # noqa: B018


def test_verl_device_helpers_on_the_cpu_platform() -> None:
    """verl's own helpers, as its engine and workers call them (this host has no accelerator)."""
    from verl.plugin.platform import get_platform
    from verl.utils import device

    if cpu_platform.accelerator_present():
        pytest.skip("an accelerator is present: verl picks it, not the CPU platform")
    assert isinstance(get_platform(), PlatformCPU)
    assert device.get_device_name() == "cpu" and device.get_nccl_backend() == "gloo"
    assert device.get_device_id() == "cpu"
    torch_device = device.get_torch_device()
    for name in ("empty_cache", "mem_get_info", "memory_allocated", "memory_reserved", "max_memory_allocated",
                 "max_memory_reserved", "get_rng_state", "set_rng_state", "ipc_collect",
                 "set_per_process_memory_fraction", "get_device_name", "synchronize", "current_stream"):
        assert callable(getattr(torch_device, name)), name
    assert device.is_support_ipc() is False


def test_auto_detection_is_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(cpu_platform.shutil, "which", lambda tool: None)
    assert PlatformCPU().is_platform_available(use_smi_check=True)
    monkeypatch.setattr(cpu_platform.shutil, "which", lambda tool: f"/usr/bin/{tool}" if tool == "nvidia-smi" else None)
    assert not PlatformCPU().is_platform_available(use_smi_check=True)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(cpu_platform.shutil, "which", lambda tool: None)
    assert not PlatformCPU().is_platform_available()


def test_verl_platform_env_selects_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from verl.plugin.platform import PlatformRegistry, platform_manager

    assert PlatformRegistry.get(PLATFORM_NAME) is PlatformCPU
    monkeypatch.setenv("VERL_PLATFORM", PLATFORM_NAME)
    assert platform_manager._detect_platform_name() == PLATFORM_NAME


def test_use_cpu_platform_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from verl.plugin.platform import get_platform, platform_manager

    monkeypatch.setattr(platform_manager, "_current_platform", None)  # restored after the test
    platform = use_cpu_platform()
    assert get_platform() is platform and isinstance(platform, PlatformCPU)
