"""verl-audio's registrations and patches, as verl's plugin loader leaves them.

verl loads ``verl_audio.plugin`` through its ``verl.plugins`` entry point at ``import verl`` and
swallows any error at debug level, so a fresh interpreter checks that the plugin really ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("verl")

from verl_audio import patches  # noqa: E402
from verl_audio.platform.cpu import accelerator_present  # noqa: E402
from verl_audio.upstream import REQUIRED, problems  # noqa: E402

PROBE = r"""
import json, os, socket, sys
import verl  # loads the entry point
loaded_by_verl = "verl_audio.plugin" in sys.modules
import torch
from verl.plugin.platform import PlatformRegistry, get_platform
from verl.workers.engine.base import EngineRegistry
import verl.utils.distributed as dist_utils
import verl.workers.engine_workers as engine_workers
import verl.workers.engine.fsdp.transformer_impl as transformer_impl
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl_audio import patches, plugin
from verl_audio.platform import PlatformCPU

engines = {m: {b: {d: cls.__name__ for d, cls in by_dev.items() if isinstance(d, str)}
               for b, by_dev in by_backend.items()} for m, by_backend in EngineRegistry._engines.items()}
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
engine_workers.initialize_global_process_group_ray()  # the name TrainingWorker calls
print(json.dumps({
    "loaded_by_verl": loaded_by_verl,
    "active": plugin.ACTIVE,
    "applied": patches.APPLIED,
    "registered_cpu": PlatformRegistry.get("cpu") is PlatformCPU,
    "platform": type(get_platform()).__name__,
    "engines": engines,
    "rebound": [engine_workers.initialize_global_process_group_ray is dist_utils.initialize_global_process_group_ray,
                hasattr(engine_workers.initialize_global_process_group_ray, patches.ORIGINAL_ATTR),
                hasattr(transformer_impl.load_fsdp_model_to_gpu, patches.ORIGINAL_ATTR)],
    "backend": torch.distributed.get_backend(),
    "rollout_replica": RolloutReplicaRegistry.get("hf").__name__,
    "rollout_adapter": _ROLLOUT_REGISTRY.get(("hf", "async")),
}))
"""

PATCH_TARGETS = {
    ("verl.utils.distributed", "initialize_global_process_group_ray"),
    ("torch.distributed.fsdp._init_utils", "_check_module_states_for_sync_module_states"),
    ("verl.utils.fsdp_utils", "load_fsdp_model_to_gpu"),
    ("verl.utils.fsdp_utils", "fsdp_version"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._build_fsdp_module"),
    ("verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy"),
    ("torch.distributed.fsdp", "CPUOffload"),
}
OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")


@pytest.fixture(scope="module")
def probe() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_PLUGINS", "VERL_PLATFORM")}
    if accelerator_present():  # auto-detection would pick the accelerator: choose CPU explicitly
        env["VERL_PLATFORM"] = "cpu"
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugin_is_loaded_by_verl(probe: dict) -> None:
    assert probe["loaded_by_verl"]
    assert probe["active"][:2] == ["verl_audio", "platform:cpu"]
    for name in ("cpu_process_group_backend", "fsdp1_cpu_sync_module_states", "fsdp1_load_to_cpu_device",
                 "cpu_fsdp_host_offload"):
        assert f"patch:{name}" in probe["active"] and name in probe["applied"]
    assert "engine:language_model:cpu" in probe["active"] and "engine:value_model:cpu" in probe["active"]
    for model_type in OMNI_TYPES:
        assert f"engine:{model_type}:cuda,npu,cpu" in probe["active"]


def test_hf_rollout_is_registered(probe: dict) -> None:
    assert "rollout:hf" in probe["active"]
    assert probe["rollout_replica"] == "HFReplica"
    assert probe["rollout_adapter"] == "verl_audio.rollout.hf.adapter.HFServerAdapter"


def test_cpu_platform_is_registered_and_current(probe: dict) -> None:
    assert probe["registered_cpu"]
    assert probe["platform"] == "PlatformCPU"


def test_engines_are_registered(probe: dict) -> None:
    engines = probe["engines"]
    for backend in ("fsdp", "fsdp2"):
        assert engines["language_model"][backend]["cpu"] == "FSDPEngineWithLMHead"
        assert engines["value_model"][backend]["cpu"] == "FSDPEngineWithValueHead"
        assert engines["language_model"][backend]["cuda"] == "FSDPEngineWithLMHead"  # verl's own, untouched
        for model_type in OMNI_TYPES:
            for device in ("cuda", "npu", "cpu"):
                assert engines[model_type][backend][device] == "AudioFSDPEngine"


def test_process_group_comes_up_on_gloo(probe: dict) -> None:
    assert probe["rebound"] == [True, True, True]
    assert probe["backend"] == "cpu:gloo"  # torch reports the device:backend string it was given


def test_patch_targets_match_upstream() -> None:
    entries = [e for e in REQUIRED if (e[0], e[1]) in PATCH_TARGETS]
    assert len(entries) == len(PATCH_TARGETS)
    assert [p for e in entries for p in problems(e)] == []


def test_apply_all_is_idempotent() -> None:
    import verl.utils.distributed as dist_utils

    first = patches.apply_all()
    wrapper = dist_utils.initialize_global_process_group_ray
    assert patches.apply_all() == first
    assert dist_utils.initialize_global_process_group_ray is wrapper
    assert not hasattr(getattr(wrapper, patches.ORIGINAL_ATTR), patches.ORIGINAL_ATTR)  # wrapped once


def test_process_group_backend_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    import verl.utils.distributed as dist_utils
    from verl.utils.device import get_device_name, get_nccl_backend

    seen: list[str] = []
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kw: seen.append(backend))
    init = dist_utils.initialize_global_process_group_ray
    init()
    init(backend="gloo")
    init(None, "cpu:gloo,foo:bar")
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: False)
    init()
    verl_string = f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"  # "cpu:gloo,cpu:gloo" on this platform
    assert seen == ["cpu:gloo", "gloo", "cpu:gloo,foo:bar", verl_string]


def test_fsdp1_sync_module_states_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed.fsdp._init_utils as fsdp_init

    cpu_states = [torch.zeros(2)]
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: True)
    assert fsdp_init._check_module_states_for_sync_module_states(cpu_states) is None
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: False)
    with pytest.raises(ValueError, match="CPU parameters"):
        fsdp_init._check_module_states_for_sync_module_states(cpu_states)


def test_fsdp1_load_to_device_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    import verl.utils.fsdp_utils as fsdp_utils

    monkeypatch.setattr(fsdp_utils, "fsdp_version", lambda model: 1)
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: True)
    not_fsdp = torch.nn.Linear(2, 2)
    assert fsdp_utils.load_fsdp_model_to_gpu(not_fsdp) is None  # CPU platform: nothing to move
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: False)
    with pytest.raises(AssertionError):  # verl's own function runs (and wants a real FSDP module)
        fsdp_utils.load_fsdp_model_to_gpu(not_fsdp)


def test_host_offload_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed.fsdp as fsdp
    import verl.workers.engine.fsdp.transformer_impl as impl

    seen: list[tuple[bool, bool]] = []

    def build(self: object, module: object) -> object:  # what verl's method would construct
        policy, offload = impl.CPUOffloadPolicy(pin_memory=True), fsdp.CPUOffload(offload_params=True)
        seen.append((policy.pin_memory, offload.offload_params))
        return module

    wrapper = impl.FSDPEngine._build_fsdp_module
    monkeypatch.setattr(wrapper, patches.ORIGINAL_ATTR, build)
    names = (impl.CPUOffloadPolicy, fsdp.CPUOffload)
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: True)
    assert wrapper(None, "m") == "m"
    assert (impl.CPUOffloadPolicy, fsdp.CPUOffload) == names  # swapped back
    monkeypatch.setattr(patches, "_on_cpu_platform", lambda: False)
    wrapper(None, "m")
    assert seen == [(False, False), (True, True)]  # CPU: nothing pinned, nothing offloaded; else verl's own
