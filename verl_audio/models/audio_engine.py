"""An audio model's trainable part as verl's actor / reference under the FSDP and FSDP2 engines.

Registered by ``verl_audio.plugin`` in verl's ``EngineRegistry`` for every model type of every family
(``verl_audio.models.families``: Qwen2.5-Omni and the Qwen3-Omni thinker, full or thinker-only checkpoints;
Qwen2-Audio), backends ``fsdp`` / ``fsdp2``, devices ``cuda``, ``npu`` and ``cpu``. verl picks the engine by
``actor_rollout_ref.model.model_type`` (default ``language_model``), so select it with
``actor_rollout_ref.model._target_=verl_audio.models.audio_engine.AudioModelConfig`` (the recipe's config does):
it sets ``model_type`` from the checkpoint, checks the family, and adds the audio options.

What differs from verl's ``FSDPEngineWithLMHead`` is only how the module is built: always the family's
trainable class (the thinker of an Omni checkpoint, so a full checkpoint loads just its ``thinker.*`` weights
and the talker never enters the actor), with the family's FSDP units, and the audio (and vision) encoders
frozen on request. Forward, losses and checkpoints are verl's: ``multi_modal_inputs`` carry
``input_features`` + ``feature_attention_mask`` per sample, which verl pads on the time axis and concatenates
per micro-batch; the model keeps only the frames the mask marks.

Padding removal (``model.use_remove_padding``, verl's default True) is supported: the packed batch has no
attention mask and the model separates sequences by the restarts of the text-position row of verl's position
ids (sdpa/eager: transformers' packed-sequence mask). Unsupported combinations are rejected when the engine is
built. verl packs multi-row position ids wrongly when every sequence of a batch has the same length;
``patches.patch_packed_position_ids`` (patch 12) fixes the packing before the batch reaches the engine.

LoRA (``model.lora_rank`` > 0, verl's keys): verl wraps the built module with peft before FSDP, and the
reference policy is the actor with the adapter off. Adapters stay on the language model: verl's default
``target_modules="all-linear"`` means its projections, ``exclude_modules`` defaults to the family's encoders
(``verl_audio.models.lora``), an adapter inside an encoder is refused unless ``audio_encoder_lora_targets``
asks for the audio encoder's (its base weights stay frozen, its outputs uncached), and the encoders stay
frozen. FSDP2 only (FSDP1 wraps each LoRA layer as its own unit, and peft's adapter export then finds no tensor).
With ``model.lora.merge=True`` the merged weights are sent in the actor's precision.

A frozen audio encoder runs once per clip per worker process: its outputs are cached by content
(``model.audio_encoder_cache_size`` clips, LRU, host memory) and reused by old log-prob, reference and update
and by later steps (``verl_audio.models.encoder_cache``). Each batch's output metrics carry the clips encoded,
cache hits and encoder seconds of that call (``audio_encoder/*``).
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
from verl_audio.models.families import AudioFamily, family_of_config
from verl_audio.models.lora import (PEFT_PREFIX, default_targets, encoder_exclusion, modules_in_audio_encoder,
                                    modules_in_encoders, with_audio_encoder_targets)
from verl_audio.plugin_state import require_plugin

logger = logging.getLogger(__name__)

#: attention implementations whose packed (padding-removed) forward honours sequence boundaries
PACKED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


@dataclass
class AudioModelConfig(HFModelConfig):
    """verl's ``HFModelConfig`` plus the audio options (set under ``actor_rollout_ref.model``).

    Inherited keys that matter here: ``enable_gradient_checkpointing`` (default True) checkpoints the
    decoder and encoder layers; ``use_remove_padding`` (default True) packs sequences (see module doc);
    ``override_config.attn_implementation`` (verl's default ``flash_attention_2``; use ``sdpa`` on CPU).
    LoRA: ``lora_rank`` (0: off), ``lora_alpha`` (16), ``target_modules`` (verl's ``all-linear`` -> the language
    model's projections), ``exclude_modules`` (None -> the family's encoders), ``lora.merge`` (sync merged
    weights to the rollout instead of adapters; set automatically where the rollout cannot take adapters).
    """

    # verl's, plus the LoRA targets resolved for the family in __post_init__
    _mutable_fields = HFModelConfig._mutable_fields | {"target_modules", "exclude_modules"}

    freeze_audio_encoder: bool = True
    """Keep the audio encoder frozen: no gradients, weights never change (a separate projector too, unless
    ``freeze_audio_projector`` says otherwise)."""

    freeze_audio_projector: bool | None = None
    """Keep a family's separate audio projector (Qwen2-Audio's ``multi_modal_projector``) frozen; None: as
    ``freeze_audio_encoder``. False with a frozen encoder trains the projector on the cached encoder outputs. The
    Omni thinkers have none (their projection is the encoder's last layer), so False is refused there."""

    freeze_vision_encoder: bool = True
    """Keep a vision encoder, unused by audio prompts, frozen (families that have one)."""

    audio_encoder_lora_targets: str | None = None
    """With LoRA: a regex (full match) of audio-encoder modules, named relative to the encoder (Qwen2.5-Omni's
    last projection: ``proj``), that get adapters too; None: the encoder is left untouched. The encoder then runs
    uncached and a ``vllm`` rollout receives merged weights (vLLM applies LoRA to the language model only)."""

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
        if self.freeze_audio_projector is not None and not isinstance(self.freeze_audio_projector, bool):
            raise TypeError(f"model.freeze_audio_projector must be a bool or null, got {self.freeze_audio_projector!r}")
        size = self.audio_encoder_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"model.audio_encoder_cache_size must be an int >= 0, got {size!r}")
        family = family_of_config(self.hf_config)  # raises for a checkpoint of no known family
        if self.freeze_audio_projector is False and not family.audio_encoder_extra:
            raise ValueError(f"{self.path}: model.freeze_audio_projector=False, but {family.name} has no audio "
                             "projector apart from its encoder (train the encoder with model.freeze_audio_encoder=False)")
        encoder_targets = self.audio_encoder_lora_targets
        if encoder_targets is not None and (not isinstance(encoder_targets, str) or not encoder_targets):
            raise TypeError(f"model.audio_encoder_lora_targets must be a non-empty regex or null, "
                            f"got {encoder_targets!r}")
        if encoder_targets is not None and self.lora_rank <= 0:
            raise ValueError(f"model.audio_encoder_lora_targets={encoder_targets!r} needs LoRA (model.lora_rank > 0)")
        if self.lora_rank > 0:  # adapters on the language model (verl_audio.models.lora), the audio encoder on request
            if self.target_modules == "all-linear":
                self.target_modules = default_targets(family)
            if encoder_targets is not None:
                self.target_modules = with_audio_encoder_targets(family, self.target_modules, encoder_targets)
            if self.exclude_modules is None:
                self.exclude_modules = encoder_exclusion(family, encoder_targets)
        if self.model_type == "language_model":  # verl's default role: route to the audio engine
            self.model_type = self.hf_config.model_type
        if self.load_tokenizer and self.processor is None:
            raise ValueError(f"{self.path}: no processor was loaded for this {family.name} checkpoint; audio prompts "
                             "would become text prompts")


def worker_model_config(model_config: Any) -> HFModelConfig:
    """The model config object verl's workers build from ``actor_rollout_ref.model``: the class its ``_target_``
    names (``AudioModelConfig`` in the recipe's config), else verl's ``HFModelConfig``."""
    from verl.utils.config import omega_conf_to_dataclass

    if isinstance(model_config, HFModelConfig):
        return model_config
    if model_config.get("_target_"):
        return omega_conf_to_dataclass(model_config)
    return omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)


def wrap_classes(family: AudioFamily, strategy: str) -> list[str]:
    """FSDP units by strategy. FSDP2's ``fully_shard`` must not wrap a module after its parent (verl wraps in
    ``named_modules`` order, parents first), so it gets only the leaf layers; FSDP1's auto-wrap nests correctly
    and gets the encoders as units too, so frozen encoder weights never share a flat parameter with trainable ones."""
    return list(family.wrap_layers) + (list(family.wrap_containers) if strategy == "fsdp" else [])


def check_supported(model_config: Any, engine_config: Any) -> None:
    """Raise for settings this engine cannot run correctly, before anything is built."""
    family = family_of_config(model_config.hf_config)
    if engine_config.ulysses_sequence_parallel_size > 1:
        raise NotImplementedError(f"{family.name}: ulysses_sequence_parallel_size > 1 is not supported (verl slices "
                                  "multimodal inputs only for the VLMs it patches); set it to 1")
    for key in ("use_fused_kernels", "use_liger"):
        if model_config.get(key, False):
            raise NotImplementedError(f"{family.name}: model.{key}=True is not supported (verl's kernels do not "
                                      "patch this forward); set it to False")
    if model_config.get("lora_rank", 0) > 0 or model_config.get("lora_adapter_path"):
        if engine_config.strategy != "fsdp2":
            raise NotImplementedError(f"{family.name}: LoRA needs actor.strategy=fsdp2 (under fsdp each LoRA layer is "
                                      "its own FSDP unit and peft's adapter export finds no tensor)")
        if not model_config.get("freeze_audio_encoder", True):
            raise ValueError(f"{family.name}: LoRA trains the adapters only, so the audio encoder would stay frozen "
                             "although model.freeze_audio_encoder=False; set it to True (or train without LoRA)")
        if model_config.get("freeze_audio_projector", None) is False:
            raise ValueError(f"{family.name}: LoRA trains the adapters only, so the audio projector would stay frozen "
                             "although model.freeze_audio_projector=False; leave it unset (or train without LoRA)")
    wrap = (engine_config.wrap_policy or {}).get("transformer_layer_cls_to_wrap")
    if engine_config.strategy == "fsdp2" and wrap:
        nested = [outer for outer in family.wrap_containers if outer in wrap and any(w in wrap for w in family.wrap_layers)]
        if nested:
            raise ValueError(f"{family.name} under fsdp2: wrap_policy.transformer_layer_cls_to_wrap lists {nested} "
                             "together with their own layers; fully_shard would wrap the parent first and leave the "
                             "layers sharded in forward. List only one of each pair.")
    attn = family.text_config(model_config.hf_config)._attn_implementation
    if model_config.get("use_remove_padding", False) and attn not in PACKED_ATTENTION:
        raise ValueError(f"{family.name}: model.use_remove_padding=True needs an attention implementation that "
                         f"separates packed sequences {PACKED_ATTENTION}, got {attn!r}; set "
                         "model.use_remove_padding=False or change override_config.attn_implementation")


def freeze_encoders(family: AudioFamily, module: torch.nn.Module, *, audio: bool, vision: bool,
                    projector: bool | None = None) -> list[str]:
    """Turn off gradients of the chosen encoders of a family's model; return the paths of those frozen.
    ``projector`` (the family's ``audio_encoder_extra``) follows ``audio`` when None."""
    projector = audio if projector is None else projector
    paths = ([family.audio_encoder] if audio else []) + (list(family.audio_encoder_extra) if projector else []) + (
        [family.vision_encoder] if vision and family.vision_encoder else [])
    for path in paths:
        family.module(module, path).requires_grad_(False)
    return paths


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


class AudioFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP/FSDP2 LM engine, building the family's trainable model (see module doc)."""

    def __init__(self, model_config: Any, engine_config: Any, optimizer_config: Any, checkpoint_config: Any) -> None:
        check_supported(model_config, engine_config)
        self.family = family_of_config(model_config.hf_config)
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
        weights = encoder_cache.tensor_digest(self.family.module(self._model, self.family.audio_encoder).parameters())
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

    def _build_lora_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = super()._build_lora_module(module)
        adapted = [name.removeprefix(PEFT_PREFIX) for name, sub in module.named_modules() if hasattr(sub, "lora_A")]
        if not adapted:
            raise ValueError(f"{self.family.name}: LoRA matched no module (target_modules="
                             f"{self.model_config.target_modules!r}, exclude_modules={self.model_config.exclude_modules!r})")
        encoder_targets = self.model_config.get("audio_encoder_lora_targets", None)
        inside = modules_in_encoders(self.family, adapted, keep_audio_encoder=encoder_targets is not None)
        if inside:
            raise ValueError(f"{self.family.name}: LoRA adapters inside the encoders {inside[:4]} ({len(inside)}): vLLM "
                             "applies LoRA to the language model only and the audio-encoder cache assumes a fixed "
                             "encoder; exclude them (model.exclude_modules, default: the encoders; the audio "
                             "encoder's own layers go through model.audio_encoder_lora_targets)")
        in_audio = modules_in_audio_encoder(self.family, adapted)
        if encoder_targets is not None and not in_audio:
            raise ValueError(f"{self.family.name}: model.audio_encoder_lora_targets={encoder_targets!r} matched no "
                             f"module of the audio encoder ({self.family.audio_encoder})")
        if self.rank == 0:
            trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
            logger.info("LoRA r=%d alpha=%s on %d modules (%d in the audio encoder), %d trainable parameters",
                        self.model_config.lora_rank, self.model_config.lora_alpha, len(adapted), len(in_audio),
                        trainable)
        return module

    def _merged_lora_per_tensor_param(self) -> Any:
        """verl's merged-weights stream (``model.lora.merge=True``) in the actor's own precision.

        Deviation from ``FSDPEngine._merged_lora_per_tensor_param``: verl casts every FSDP2 tensor to bfloat16,
        which moves an fp32 rollout's log-probs ~1e-3 away from the actor's; the plain (non-LoRA) sync sends the
        actor's dtype, and so does this. Otherwise the same steps (merge, state dict, names, restore on exit).
        """
        from torch.distributed.tensor import DTensor
        from verl.utils.device import get_device_id
        from verl.utils.fsdp_utils import merged_lora_context, normalize_peft_param_name, offload_fsdp_model_to_cpu
        from verl.utils.model import convert_weight_keys

        device = get_device_id()
        try:
            with merged_lora_context(self.module, backup_adapters=True):
                params = normalize_peft_param_name(self.module.state_dict())
                params = convert_weight_keys(params, getattr(self.module, "_fsdp_wrapped_module", self.module))
                for name, param in params.items():
                    # full_tensor() and clone() copy: the tensors stay valid after the restore
                    yield name, (param.to(device).full_tensor() if isinstance(param, DTensor) else param.detach().clone())
        finally:
            if self._is_offload_param:
                offload_fsdp_model_to_cpu(self.module)

    def _build_module(self) -> torch.nn.Module:
        # Deviation from FSDPEngineWithLMHead._build_module: the class and config are the family's trainable
        # part, whatever the checkpoint's top-level architecture, and liger/fused kernels are refused above.
        from verl.models.transformers.monkey_patch import apply_monkey_patch
        from verl.utils.fsdp_utils import get_init_weight_context_manager
        from verl.utils.torch_dtypes import PrecisionType

        family = self.family
        dtype = self.engine_config.model_dtype
        if dtype is None:  # verl's rule: fp32 master weights for training, bf16 for forward-only
            dtype = torch.float32 if not self.engine_config.forward_only else torch.bfloat16
        dtype = PrecisionType.to_dtype(dtype)

        config = family.thinker_config(self.model_config.hf_config)
        # a thinker config inside a full checkpoint has no architectures; checkpoints save this config
        config.architectures = [family.trainable_class]
        # the trainable part's own flag decides tying (and verl's FSDP2 wrap reads it from module.config)
        tied = bool(getattr(config, "tie_word_embeddings", False) or
                    getattr(family.text_config(self.model_config.hf_config), "tie_word_embeddings", False))
        init_context = get_init_weight_context_manager(use_meta_tensor=not tied, mesh=self.device_mesh)
        with init_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = family.load_trainable(self.model_config.local_path, config=config, dtype=dtype,
                                           trust_remote_code=self.model_config.trust_remote_code)

        # read by verl's wrap policy when engine.wrap_policy.transformer_layer_cls_to_wrap is not set
        module._no_split_modules = wrap_classes(family, self.engine_config.strategy)
        family.before_fsdp(module)
        apply_monkey_patch(model=module, use_remove_padding=self.use_remove_padding,
                           ulysses_sp_size=self.ulysses_sequence_parallel_size, use_fused_kernels=False)
        module.to(dtype)
        frozen = freeze_encoders(family, module, audio=self.model_config.get("freeze_audio_encoder", True),
                                 vision=self.model_config.get("freeze_vision_encoder", True),
                                 projector=self.model_config.get("freeze_audio_projector", None))
        # installed before FSDP wraps the module: the instance attribute survives fully_shard / FSDP1 wrapping
        audio_frozen = family.audio_encoder in frozen
        cache_size = int(self.model_config.get("audio_encoder_cache_size", 64)) if audio_frozen else 0
        self._model = module
        self._encoder_identity = "unbuilt"
        self._audio_features = encoder_cache.install(family, module, cache_size, lambda: self._encoder_identity)
        if self.model_config.enable_gradient_checkpointing:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.rank == 0:
            logger.info("%s built from %s (dtype %s, frozen: %s, remove padding: %s, audio-encoder cache: %d clips)",
                        family.trainable_class, self.model_config.local_path, dtype, frozen or "none",
                        self.use_remove_padding, cache_size)
        return module


def _with_encoder_metrics(outputs: Any, before: tuple[int, int, float]) -> Any:
    """Add this call's audio-encoder counters to an engine output's metrics (one-element lists, as verl's
    per-micro-batch metrics are, so its dp all-gather and mini-batch flattening keep one value per rank)."""
    if isinstance(outputs, dict) and isinstance(outputs.get("metrics"), dict):
        for key, value in encoder_cache.STATS.since(before).items():
            outputs["metrics"][key] = [value]
    return outputs
