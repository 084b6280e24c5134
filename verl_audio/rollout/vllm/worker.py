"""``OmniVLLMWorkerExtension``: verl's vLLM colocate worker extension, for Qwen2.5-Omni and vLLM on CPU.

vLLM mixes this class into each of its workers (``worker_extension_cls``), so it runs inside vLLM's
processes; verl calls its methods through ``collective_rpc``. What it changes, and why:

* **Weight names.** The actor sends the thinker's own names (``model.*``, ``audio_tower.*``,
  ``lm_head.weight``); vLLM's Omni model maps checkpoint names that start with ``thinker.``. Bare names
  get the prefix, otherwise vLLM's loader raises in this process and verl's sender waits forever.
* **CPU weight reload.** vLLM's CPU backend repacks linear weights after loading, so the loaded
  parameters lose their ``weight_loader``; reloading goes through vLLM's layerwise reload
  (``initialize_layerwise_reload`` / ``finalize_layerwise_reload``, what vLLM's own weight-transfer
  engines use), and received tensors are cloned out of the shared-memory bucket, which the next bucket
  overwrites. On CUDA, verl's path runs unchanged.
* **Log-probs the actor recomputes.** verl masks banned ids in ``compute_logits``, before vLLM takes
  log-probs, so the reported log-probs are renormalised over the allowed ids while the actor evaluates
  the whole vocabulary. Here the ids the policy must not sample (the tokenizer's out-of-vocabulary
  tail, vision placeholders and, for Omni, ``<|AUDIO|>`` and the audio/vision delimiters) are removed
  after log-probs are taken (``verl_audio.patches.install_vllm_sampler_hooks``), and the log-probs are
  those of ``log_softmax(logits / temperature)``, as in the `hf` backend. Needs
  ``rollout.logprobs_mode=raw_logprobs`` (set by ``verl_audio.trainer.cpu_mode`` and the recipe).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

from verl_audio.patches import install_vllm_sampler_hooks

logger = logging.getLogger(__name__)

THINKER_PREFIX = "thinker."


def _maps_thinker_prefix(model: Any) -> bool:
    mapper = getattr(model, "hf_to_vllm_mapper", None)
    return THINKER_PREFIX in (getattr(mapper, "orig_to_new_prefix", None) or {})


def _omni_banned_ids(hf_config: Any) -> list[int]:
    """Omni placeholder and delimiter ids (the `hf` backend's set), empty for other models."""
    from verl_audio.models.omni_config import OMNI_MODEL_TYPES, thinker_config
    from verl_audio.models.token_ids import placeholder_token_ids

    if getattr(hf_config, "model_type", None) not in OMNI_MODEL_TYPES:
        return []
    thinker = thinker_config(hf_config)
    return sorted(placeholder_token_ids(thinker, int(thinker.get_text_config().vocab_size)))


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class OmniVLLMWorkerExtension(vLLMColocateWorkerExtension):
    """Weight names, CPU weight reload and actor-consistent log-probs (module doc)."""

    def monkey_patch_model(self, vocab_size: int, banned_token_ids: list[int] | None = None) -> None:
        """Ban ``banned_token_ids``, the Omni placeholders and ids >= ``vocab_size`` after log-probs are taken."""
        from verl.utils.vllm.patch import patch_vllm_moe_model_weight_loader

        runner = self.model_runner
        extra = _omni_banned_ids(runner.model_config.hf_config)
        banned = sorted(set(banned_token_ids or []) | set(extra))
        install_vllm_sampler_hooks(runner.sampler, vocab_size=vocab_size, banned_token_ids=banned)
        for model in self._iter_all_models():
            patch_vllm_moe_model_weight_loader(model)
        logger.info("vLLM sampler: %d ids banned after log-probs, vocabulary cut at %d", len(banned), vocab_size)

    def _update_weights(self, weights: list[tuple[str, torch.Tensor]], peft_config: Any, base_sync_done: bool) -> None:
        if peft_config is None and _maps_thinker_prefix(self.model_runner.model):
            weights = [(n if n.startswith(THINKER_PREFIX) else THINKER_PREFIX + n, t) for n, t in weights]
        if _on_cpu():
            weights = [(n, t.clone()) for n, t in weights]  # the shared-memory bucket is reused
        super()._update_weights(weights, peft_config, base_sync_done)

    def update_weights_from_ipc(self, peft_config: dict | None = None, base_sync_done: bool = False,
                                use_shm: bool = False) -> None:
        """verl's update on CUDA; on CPU the same buckets, loaded through vLLM's layerwise reload."""
        if not _on_cpu() or peft_config:
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
            on_bucket_received=lambda weights, is_last: self._update_weights(weights, None, base_sync_done)
        )
        for model, model_config in models:
            finalize_layerwise_reload(model, model_config)
