"""Loaded by verl's `verl.plugins` entry point at `import verl`, in every process (Ray workers too).

Only registrations live here: nothing is written. verl swallows plugin load errors at debug level,
so each step logs what it did (and logs an error before re-raising), and
`tests/test_plugin_on_cpu.py` checks in a fresh interpreter that every registration below is active.

Registering engines needs the engine classes, so verl's FSDP engine module is imported here (a few
seconds; verl's workers import it anyway). That import reads the current platform's device name
once, which is why the CPU platform is registered first and why ``VERL_PLATFORM`` must be set
before ``import verl``.
"""

from __future__ import annotations

import logging
import warnings

logger = logging.getLogger(__name__)

#: names of the registrations that completed in this process (read by tests and `verl_audio.info`)
ACTIVE: list[str] = []
#: True once every step below ran (read by ``verl_audio.plugin_state.require_plugin``)
COMPLETE = False

#: verl model roles whose stock FSDP engines are registered for the CPU platform
CPU_ENGINE_ROLES = ("language_model", "value_model")
FSDP_BACKENDS = ["fsdp", "fsdp2"]
#: devices the audio engine is registered for
AUDIO_DEVICES = ["cuda", "npu", "cpu"]


def _register_cpu_platform() -> None:
    from verl.plugin.platform import PlatformRegistry

    from verl_audio.platform import PLATFORM_NAME, PlatformCPU

    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
    ACTIVE.append(f"platform:{PLATFORM_NAME}")


def _apply_patches() -> None:
    from verl_audio.patches import apply_all

    ACTIVE.extend(f"patch:{name}" for name in apply_all())


def _register_engine(engine_cls: type, model_type: str, devices: list[str]) -> None:
    from verl.workers.engine.base import EngineRegistry

    from verl_audio.patches import registered_engines

    for backend in FSDP_BACKENDS:
        # register() asserts on duplicates; skip keys already taken by this very class (re-imports)
        taken = registered_engines(model_type, backend)
        for device in devices:
            if taken.get(device) is engine_cls:
                continue
            if device in taken:
                raise RuntimeError(f"engine for {model_type}/{backend}/{device} already registered: {taken[device]}")
            EngineRegistry.register(model_type=model_type, backend=backend, device=device)(engine_cls)
    ACTIVE.append(f"engine:{model_type}:{','.join(devices)}")


def _register_engines() -> None:
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    from verl_audio.models.audio_engine import AudioFSDPEngine
    from verl_audio.models.families import MODEL_TYPES

    # verl registers its FSDP engines for cuda/npu only; the same classes run on the CPU platform
    for role, engine_cls in zip(CPU_ENGINE_ROLES, (FSDPEngineWithLMHead, FSDPEngineWithValueHead), strict=True):
        _register_engine(engine_cls, role, ["cpu"])
    for model_type in MODEL_TYPES:  # every family's config model types
        _register_engine(AudioFSDPEngine, model_type, AUDIO_DEVICES)


def _register_rollout() -> None:
    from verl_audio.rollout import register

    ACTIVE.extend(register())


#: run in this order at import; each appends its names to ACTIVE
STEPS = [_register_cpu_platform, _apply_patches, _register_engines, _register_rollout]


def _register_all() -> None:
    global COMPLETE
    ACTIVE.append("verl_audio")
    with warnings.catch_warnings():
        # importing verl's engine package warns once for each optional backend it cannot import
        # (torchtitan, veomni, automodel, mindspeed, megatron); verl-audio uses none of them
        warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)
        for step in STEPS:
            try:
                step()
            except Exception:
                logger.exception("verl-audio plugin: %s failed", step.__name__)
                raise
    COMPLETE = True
    logger.info("verl-audio plugin active: %s", ", ".join(ACTIVE))


_register_all()
