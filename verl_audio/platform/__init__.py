"""verl platforms added by verl-audio: the CPU platform (``VERL_PLATFORM=cpu``)."""

from verl_audio.platform.cpu import PLATFORM_NAME, PlatformCPU, use_cpu_platform

__all__ = ["PLATFORM_NAME", "PlatformCPU", "use_cpu_platform"]
