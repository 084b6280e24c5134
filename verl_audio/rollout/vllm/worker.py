"""``OmniVLLMWorkerExtension``: verl's vLLM colocate worker extension, for the audio families and vLLM on CPU.

vLLM mixes this class into each of its workers (``worker_extension_cls``), so it runs inside vLLM's
processes; verl calls its methods through ``collective_rpc``. What it changes, and why:

* **Weight names.** The actor sends its model's in-memory names; vLLM loads the released checkpoints' names
  (``AudioFamily.checkpoint_name``): the Omni thinkers' ``thinker.`` prefix, Qwen2-Audio's
  ``language_model.model.*`` (its vLLM class has no name mapper). Unmapped names make vLLM's loader raise in
  this process while verl's sender waits forever.
* **CPU weight reload.** vLLM's CPU backend repacks linear weights after loading, so the loaded
  parameters lose their ``weight_loader``; reloading goes through vLLM's layerwise reload
  (``initialize_layerwise_reload`` / ``finalize_layerwise_reload``, what vLLM's own weight-transfer
  engines use), and received tensors are cloned out of the shared-memory bucket, which the next bucket
  overwrites. A mixture-of-experts model's experts are prepacked again afterwards (``repack_cpu_moe``).
  On CUDA, verl's path runs unchanged.
* **LoRA adapters** (``model.lora_rank`` > 0 and the family's ``vllm_lora``). Adapter tensors arrive named
  ``base_model.model.<actor name>``; vLLM strips ``base_model.model.`` and maps only the checkpoint's names
  (the Omni thinker's ``thinker.model.``), so a bare ``model.`` would match no LoRA layer and the adapter
  would silently do nothing: they are renamed to ``base_model.model.<checkpoint name>``. verl's loader then
  builds the adapter in memory (``patches.patch_vllm_lora_weights_mapper`` lets it run on vLLM 0.32). The
  first sync of an engine started on dummy weights sends the base weights with ``.base_layer`` names: on CPU
  they go through the same layerwise reload as full updates, named as verl's LoRA base sync loads them.
* **Log-probs the actor recomputes.** verl masks banned ids in ``compute_logits``, before vLLM takes
  log-probs, so the reported log-probs are renormalised over the allowed ids while the actor evaluates
  the whole vocabulary. Here the ids the policy must not sample (the tokenizer's out-of-vocabulary
  tail, and the family's audio/vision placeholders and delimiters) are removed after log-probs are taken
  (``verl_audio.patches.install_vllm_sampler_hooks``), and the log-probs are those of
  ``log_softmax(logits / temperature)``, as in the `hf` backend. Needs ``rollout.logprobs_mode=raw_logprobs``
  (set by ``verl_audio.trainer.cpu_mode`` and the recipe).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

from verl_audio.models.lora import PEFT_PREFIX
from verl_audio.patches import install_vllm_sampler_hooks, patch_vllm_lora_weights_mapper

logger = logging.getLogger(__name__)


def _family(hf_config: Any) -> Any:
    """The model family of vLLM's hf config, or None for a model that is none of verl-audio's."""
    from verl_audio.models.families import MODEL_TYPES

    return MODEL_TYPES.get(getattr(hf_config, "model_type", None))


def _banned_ids(model_config: Any) -> list[int]:
    """The family's placeholder and delimiter ids (the `hf` backend's set), empty for other models."""
    from transformers import AutoTokenizer

    family = _family(model_config.hf_config)
    if family is None:
        return []
    tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer)
    vocab = int(family.text_config(model_config.hf_config).vocab_size)
    return sorted(family.placeholder_ids(model_config.hf_config, tokenizer, vocab))


def repack_cpu_moe(model: torch.nn.Module) -> int:
    """Prepack the MoE experts of vLLM's CPU kernel again after a weight update; returns the layers repacked.

    vLLM 0.32 on CPU: on a weight update ``UnquantizedFusedMoEMethod`` skips the experts' own
    ``process_weights_after_loading``, where ``CPUUnquantizedExperts`` prepacks w13/w2 into its grouped-gemm
    layout, so the layerwise reload copies unpacked weights into the packed storage (same shape, no error) and
    the kernel computes with them as if packed: wrong log-probs (0.06 apart on the tiny Qwen3-Omni). Can go when
    vLLM prepacks on updates too.
    """
    from vllm._custom_ops import cpu_prepack_moe_weight

    repacked = 0
    for module in model.modules():
        experts = getattr(getattr(getattr(module, "quant_method", None), "moe_kernel", None), "fused_experts", None)
        isa = getattr(experts, "isa", None)
        if isa is None or getattr(experts, "_use_zentorch", False) or not hasattr(module, "w13_weight"):
            continue
        for name in ("w13_weight", "w2_weight"):
            weight = getattr(module, name)
            weight.data.copy_(cpu_prepack_moe_weight(weight.data.clone(), isa))
        repacked += 1
    return repacked


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class OmniVLLMWorkerExtension(vLLMColocateWorkerExtension):
    """Weight names, CPU weight reload and actor-consistent log-probs (module doc)."""

    def monkey_patch_model(self, vocab_size: int, banned_token_ids: list[int] | None = None) -> None:
        """Ban ``banned_token_ids``, the Omni placeholders and ids >= ``vocab_size`` after log-probs are taken."""
        from verl.utils.vllm.patch import patch_vllm_moe_model_weight_loader

        runner = self.model_runner
        extra = _banned_ids(runner.model_config)
        banned = sorted(set(banned_token_ids or []) | set(extra))
        install_vllm_sampler_hooks(runner.sampler, vocab_size=vocab_size, banned_token_ids=banned)
        patch_vllm_lora_weights_mapper()  # this is vLLM's worker process, where adapters are loaded
        for model in self._iter_all_models():
            patch_vllm_moe_model_weight_loader(model)
        logger.info("vLLM sampler: %d ids banned after log-probs, vocabulary cut at %d", len(banned), vocab_size)

    def _update_weights(self, weights: list[tuple[str, torch.Tensor]], peft_config: Any, base_sync_done: bool) -> None:
        family = _family(self.model_runner.model_config.hf_config)
        if family is not None and peft_config and base_sync_done:  # adapter tensors: base_model.model.<checkpoint name>
            weights = [(PEFT_PREFIX + family.checkpoint_name(n.removeprefix(PEFT_PREFIX)), t) for n, t in weights]
        elif family is not None:  # the actor's in-memory names -> the checkpoint's
            weights = [(n if n.startswith(family.part_prefix or "\0") else family.checkpoint_name(n), t)
                       for n, t in weights]
        if _on_cpu():
            weights = [(n, t.clone()) for n, t in weights]  # the shared-memory bucket is reused
        super()._update_weights(weights, peft_config, base_sync_done)

    def update_weights_from_ipc(self, peft_config: dict | None = None, base_sync_done: bool = False,
                                use_shm: bool = False) -> None:
        """verl's update on CUDA and for adapters; on CPU full and LoRA-base updates go through vLLM's layerwise
        reload (the same buckets)."""
        if not _on_cpu() or (peft_config and base_sync_done):
            return super().update_weights_from_ipc(peft_config, base_sync_done, use_shm)
        from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        if self.device is None:
            self.device = torch.device("cpu")
        models = list(self._iter_all_models_with_config())
        for model, _ in models:
            initialize_layerwise_reload(model)
        receiver = BucketedWeightReceiver(zmq_handle=self._get_zmq_handle(), device=self.device, use_shm=use_shm)
        receiver.receive_weights(
            on_bucket_received=lambda weights, is_last: self._update_weights(weights, peft_config, base_sync_done)
        )
        for model, model_config in models:
            finalize_layerwise_reload(model, model_config)
            family = _family(model_config.hf_config)
            if family is not None and family.moe:
                repack_cpu_moe(model)
