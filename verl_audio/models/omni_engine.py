"""Qwen2.5-Omni's thinker as verl's actor / reference under the FSDP and FSDP2 engines.

Registered by ``verl_audio.plugin`` in verl's ``EngineRegistry`` for the model types ``qwen2_5_omni``
(a full checkpoint: thinker + talker + token2wav, or thinker weights only) and
``qwen2_5_omni_thinker`` (a thinker saved on its own), backends ``fsdp`` / ``fsdp2``, devices
``cuda``, ``npu`` and ``cpu``. verl picks the engine by ``actor_rollout_ref.model.model_type``
(default ``language_model``), so select it in one of two ways:

* ``actor_rollout_ref.model._target_=verl_audio.models.omni_engine.OmniModelConfig``: the model
  config below, which sets ``model_type`` from the checkpoint and adds the Omni options; or
* ``+actor_rollout_ref.model.model_type=qwen2_5_omni`` with verl's ``HFModelConfig`` (options at
  their defaults).

What differs from verl's ``FSDPEngineWithLMHead`` is only how the module is built: always
``Qwen2_5OmniThinkerForConditionalGeneration`` from the thinker config, so a full checkpoint loads
just its ``thinker.*`` weights (talker and token2wav weights are skipped, never materialised in the
actor); the audio (and vision) encoders can be frozen. Forward, losses and checkpoints are verl's:
``multi_modal_inputs`` carry ``input_features`` + ``feature_attention_mask`` per sample, which verl
pads on the time axis and concatenates per micro-batch; the thinker keeps only the frames the mask
marks, so clips of different lengths are encoded unpadded.

Padding removal (``model.use_remove_padding``, verl's default True) is supported: the packed batch
has no attention mask and the thinker separates sequences by the restarts of the text-position row
of verl's ``(4, L)`` position ids (sdpa/eager: transformers' packed-sequence mask, checked against
an unpadded forward in the tests; flash attention: varlen from the same position ids, not yet run in
the tests). Unsupported combinations are rejected when the engine is built. verl packs those position
ids wrongly when every sequence of a batch has the same length; ``patches.patch_packed_position_ids``
(patch 12) fixes the packing before the batch reaches the engine.

A frozen audio encoder runs once per clip per worker process: its outputs are cached by clip content
(``model.audio_encoder_cache_size`` clips, LRU, host memory) and reused by old log-prob, reference and
update and by later steps (``verl_audio.models.encoder_cache``). Each batch's output metrics carry the
clips encoded, cache hits and encoder seconds of that call (``audio_encoder/*``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from verl.workers.config import HFModelConfig
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_audio.models import encoder_cache
from verl_audio.models.loading import load_part
from verl_audio.models.omni_config import NON_THINKER_PREFIXES, OMNI_MODEL_TYPES, thinker_config
from verl_audio.plugin_state import require_plugin

logger = logging.getLogger(__name__)

#: ``config.json`` model types this engine serves (and the names it is registered under)
THINKER_ARCHITECTURE = "Qwen2_5OmniThinkerForConditionalGeneration"
#: attention implementations whose packed (padding-removed) forward honours sequence boundaries
PACKED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
#: the thinker's encoders, which hold the layer classes they are listed with
ENCODER_LAYERS = {"Qwen2_5OmniAudioEncoder": "Qwen2_5OmniAudioEncoderLayer",
                  "Qwen2_5OmniVisionEncoder": "Qwen2_5OmniVisionBlock"}
#: FSDP units by strategy. FSDP2's ``fully_shard`` must not wrap a module after its parent (verl wraps
#: in ``named_modules`` order, parents first), so it gets only the leaf layers; FSDP1's auto-wrap nests
#: correctly and needs the encoders as units so frozen encoder weights never share a flat parameter
#: with trainable ones.
WRAP_CLASSES = {
    "fsdp2": ["Qwen2_5OmniDecoderLayer", *ENCODER_LAYERS.values()],
    "fsdp": ["Qwen2_5OmniDecoderLayer", *ENCODER_LAYERS, *ENCODER_LAYERS.values()],
}


@dataclass
class OmniModelConfig(HFModelConfig):
    """verl's ``HFModelConfig`` plus the Omni-thinker options (set under ``actor_rollout_ref.model``).

    Inherited keys that matter here: ``enable_gradient_checkpointing`` (default True) checkpoints the
    thinker's decoder and encoder layers; ``use_remove_padding`` (default True) packs sequences (see
    module doc); ``override_config.attn_implementation`` (verl's default ``flash_attention_2``; use
    ``sdpa`` on CPU).
    """

    freeze_audio_encoder: bool = True
    """Keep the audio encoder (``audio_tower``) frozen: no gradients, weights never change."""

    freeze_vision_encoder: bool = True
    """Keep the vision encoder (``visual``), unused by audio prompts, frozen."""

    audio_encoder_cache_size: int = 64
    """Clips whose frozen-encoder outputs each worker keeps (LRU, host memory; ~20 MB per 110 s clip at 7B in
    bf16); 0 turns the cache off. Unused when the audio encoder is trained."""

    def __post_init__(self) -> None:
        # built in every process that reads audio prompts (agent loop, actor, trainer): without the plugin's
        # processor patch the processor below would be None and audio prompts would become text prompts
        require_plugin("the model config of " + str(self.path))
        super().__post_init__()
        for key in ("freeze_audio_encoder", "freeze_vision_encoder"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"model.{key} must be a bool, got {getattr(self, key)!r}")
        size = self.audio_encoder_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"model.audio_encoder_cache_size must be an int >= 0, got {size!r}")
        checkpoint_type = getattr(self.hf_config, "model_type", None)
        if checkpoint_type not in OMNI_MODEL_TYPES:
            raise ValueError(f"OmniModelConfig needs a Qwen2.5-Omni checkpoint {OMNI_MODEL_TYPES}, "
                             f"{self.path} has model_type {checkpoint_type!r}")
        if self.model_type == "language_model":  # verl's default role: route to the Omni engine
            self.model_type = checkpoint_type
        if self.load_tokenizer and self.processor is None:
            raise ValueError(f"{self.path}: no processor was loaded for this audio checkpoint; audio prompts "
                             "would become text prompts")


def worker_model_config(model_config: Any) -> HFModelConfig:
    """The model config object verl's workers build from ``actor_rollout_ref.model``: the class its ``_target_``
    names (``OmniModelConfig`` in the recipe's config), else verl's ``HFModelConfig``."""
    from verl.utils.config import omega_conf_to_dataclass

    if isinstance(model_config, HFModelConfig):
        return model_config
    if model_config.get("_target_"):
        return omega_conf_to_dataclass(model_config)
    return omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)


def check_supported(model_config: Any, engine_config: Any) -> None:
    """Raise for settings this engine cannot run correctly, before anything is built."""
    thinker = thinker_config(model_config.hf_config)
    if engine_config.ulysses_sequence_parallel_size > 1:
        raise NotImplementedError("Qwen2.5-Omni thinker: ulysses_sequence_parallel_size > 1 is not supported "
                                  "(verl slices multimodal inputs only for the VLMs it patches); set it to 1")
    for key in ("use_fused_kernels", "use_liger"):
        if model_config.get(key, False):
            raise NotImplementedError(f"Qwen2.5-Omni thinker: model.{key}=True is not supported "
                                      "(verl's kernels do not patch the Omni forward); set it to False")
    wrap = (engine_config.wrap_policy or {}).get("transformer_layer_cls_to_wrap")
    if engine_config.strategy == "fsdp2" and wrap:
        nested = [outer for outer, inner in ENCODER_LAYERS.items() if outer in wrap and inner in wrap]
        if nested:
            raise ValueError(f"Qwen2.5-Omni thinker under fsdp2: wrap_policy.transformer_layer_cls_to_wrap lists "
                             f"{nested} together with their own layers; fully_shard would wrap the parent first and "
                             "leave the layers sharded in forward. List only one of each pair.")
    attn = thinker.get_text_config()._attn_implementation
    if model_config.get("use_remove_padding", False) and attn not in PACKED_ATTENTION:
        raise ValueError(f"Qwen2.5-Omni thinker: model.use_remove_padding=True needs an attention implementation "
                         f"that separates packed sequences {PACKED_ATTENTION}, got {attn!r}; "
                         "set model.use_remove_padding=False or change override_config.attn_implementation")


def freeze_encoders(module: torch.nn.Module, *, audio: bool, vision: bool) -> list[str]:
    """Turn off gradients of the chosen encoders of a thinker; return the names of those frozen."""
    frozen = []
    for name, wanted in (("audio_tower", audio), ("visual", vision)):
        if wanted:
            getattr(module, name).requires_grad_(False)
            frozen.append(name)
    return frozen


def materialize_unsharded_params(module: torch.nn.Module) -> None:
    """Unshard and reshard every FSDP2 unit once, so each parameter has its unsharded counterpart.

    The thinker has units that never run forward on audio prompts (vision blocks, the audio encoder's
    ``audio_bos_eos_token`` embedding). Under mixed precision (reduce dtype != param dtype), torch's
    FSDP2 post-backward of a gradient-accumulation step without gradient sync reads the unsharded
    parameter of every unit and fails with ``'FSDPParam' object has no attribute '_unsharded_param'``
    for those never unsharded. Can go when torch skips parameters that were never unsharded there.
    """
    from torch.distributed.fsdp import FSDPModule

    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.unshard()
            unit.reshard()


class OmniThinkerFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP/FSDP2 LM engine, building ``Qwen2_5OmniThinkerForConditionalGeneration`` (see module doc)."""

    def __init__(self, model_config: Any, engine_config: Any, optimizer_config: Any, checkpoint_config: Any) -> None:
        check_supported(model_config, engine_config)
        super().__init__(model_config, engine_config, optimizer_config, checkpoint_config)

    def initialize(self) -> None:
        super().initialize()
        self._refresh_encoder_identity()

    def load_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        super().load_checkpoint(*args, **kwargs)
        self._refresh_encoder_identity()  # the checkpoint's encoder may differ from the one built

    def _refresh_encoder_identity(self) -> None:
        """Name this engine's audio encoder by its weights (this rank's shards) and compute precision."""
        if self._audio_features.cache is None:
            self._encoder_identity = "uncached"
            return
        weights = encoder_cache.tensor_digest(self._thinker.audio_tower.parameters())
        self._encoder_identity = f"{weights}|{getattr(self, '_autocast_dtype', None)}|{self.engine_config.mixed_precision}"

    def infer_batch(self, data: Any, loss_function: Any = None) -> Any:
        before = encoder_cache.STATS.snapshot()
        outputs = super().infer_batch(data, loss_function)
        return _with_encoder_metrics(outputs, before)

    def train_batch(self, data: Any, loss_function: Any) -> Any:
        before = encoder_cache.STATS.snapshot()
        outputs = super().train_batch(data, loss_function)
        return _with_encoder_metrics(outputs, before)

    def _build_fsdp_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = super()._build_fsdp_module(module)
        if self.engine_config.strategy == "fsdp2" and not self.engine_config.forward_only:
            materialize_unsharded_params(module)
        return module

    def _build_module(self) -> torch.nn.Module:
        # Deviation from FSDPEngineWithLMHead._build_module: the class and config are the thinker's,
        # whatever the checkpoint's top-level architecture, and liger/fused kernels are refused above.
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration
        from verl.models.transformers.monkey_patch import apply_monkey_patch
        from verl.utils.fsdp_utils import get_init_weight_context_manager
        from verl.utils.torch_dtypes import PrecisionType

        dtype = self.engine_config.model_dtype
        if dtype is None:  # verl's rule: fp32 master weights for training, bf16 for forward-only
            dtype = torch.float32 if not self.engine_config.forward_only else torch.bfloat16
        dtype = PrecisionType.to_dtype(dtype)

        config = thinker_config(self.model_config.hf_config)
        # the thinker config inside a full checkpoint has no architectures; checkpoints save this config
        config.architectures = [THINKER_ARCHITECTURE]
        # the thinker's own flag decides tying in transformers (and verl's FSDP2 wrap reads it from module.config)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        init_context = get_init_weight_context_manager(use_meta_tensor=not tied, mesh=self.device_mesh)
        with init_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = load_part(Qwen2_5OmniThinkerForConditionalGeneration, self.model_config.local_path,
                               other_parts=NON_THINKER_PREFIXES, config=config, dtype=dtype,
                               trust_remote_code=self.model_config.trust_remote_code)

        # read by verl's wrap policy when engine.wrap_policy.transformer_layer_cls_to_wrap is not set
        module._no_split_modules = list(WRAP_CLASSES[self.engine_config.strategy])
        apply_monkey_patch(model=module, use_remove_padding=self.use_remove_padding,
                           ulysses_sp_size=self.ulysses_sequence_parallel_size, use_fused_kernels=False)
        module.to(dtype)
        frozen = freeze_encoders(module, audio=self.model_config.get("freeze_audio_encoder", True),
                                 vision=self.model_config.get("freeze_vision_encoder", True))
        # installed before FSDP wraps the module: the instance attribute survives fully_shard / FSDP1 wrapping
        audio_frozen = "audio_tower" in frozen
        cache_size = int(self.model_config.get("audio_encoder_cache_size", 64)) if audio_frozen else 0
        self._thinker = module
        self._encoder_identity = "unbuilt"
        self._audio_features = encoder_cache.install(module, cache_size, lambda: self._encoder_identity)
        if self.model_config.enable_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.rank == 0:
            logger.info("Qwen2.5-Omni thinker built from %s (dtype %s, frozen: %s, remove padding: %s, "
                        "audio-encoder cache: %d clips)", self.model_config.local_path, dtype, frozen or "none",
                        self.use_remove_padding, cache_size)
        return module


def _with_encoder_metrics(outputs: Any, before: tuple[int, int, float]) -> Any:
    """Add this call's audio-encoder counters to an engine output's metrics (one-element lists, as verl's
    per-micro-batch metrics are, so its dp all-gather and mini-batch flattening keep one value per rank)."""
    if isinstance(outputs, dict) and isinstance(outputs.get("metrics"), dict):
        for key, value in encoder_cache.STATS.since(before).items():
            outputs["metrics"][key] = [value]
    return outputs
