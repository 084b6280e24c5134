"""``OmniVLLMHttpServer``: verl's vLLM server with whole audio, on CUDA and on vLLM's CPU build.

``rollout.name=vllm`` resolves (through ``RolloutReplicaRegistry``, see ``verl_audio.rollout.register``)
to ``OmniVLLMReplica`` (``verl_audio.rollout.vllm.replica``), whose servers are this class: verl's
``vLLMHttpServer`` with what an audio checkpoint (any family of ``verl_audio.models.families``) and a CPU host
need, each through one of its hooks. For any other model the behaviour is verl's, except on CPU (see below).

* **Audio once.** verl sends prompt ids that already hold one audio placeholder per audio token, and vLLM
  0.32 expands every placeholder run it is given once more (N in, 2N - 1 used). ``generate`` collapses
  each run to a single token first (verl's own ``qwen2_5_vl_dedup_image_tokens`` does the same for image
  and video runs), so vLLM's processor expands it to the item's whole length; a family that splits clips
  into windows (Qwen2-Audio) gets the windows as its items, one per prompt segment. Every request's audio
  token count as vLLM used it is read back from vLLM's output and checked against the clips (the family's
  count): a mismatch raises, naming the request.
* **Config.** The model config is the class the recipe's ``_target_`` names (``server_model_config``), and a
  nested ``max_position_embeddings`` is lifted to the top level, where ``_validate_configs`` looks.
* **Worker extension.** ``verl_audio.rollout.vllm.worker.OmniVLLMWorkerExtension`` (runs inside vLLM's
  workers): weight names, CPU weight reload, log-probs and the ids the policy must not sample.
* **Pausing.** verl 0.9.1 calls ``AsyncLLM.pause_generation(wait_for_inflight_requests=...)``; vLLM 0.32
  takes ``mode="abort"|"wait"``: the engine's method is adapted once it exists.
* **CPU.** vLLM's CPU platform has no sleep mode and sizes its KV cache from ``VLLM_CPU_KVCACHE_SPACE``;
  ``verl_audio.trainer.cpu_mode`` sets the rollout keys for it.
* **Speech.** The replica starts a speech server beside this one (``verl_audio.rollout.vllm.replica``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from verl.workers.rollout.replica import TokenOutput
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer

from verl_audio.models.audio_engine import worker_model_config
from verl_audio.models.families import MODEL_TYPES
from verl_audio.plugin_state import require_plugin

logger = logging.getLogger(__name__)

WORKER_EXTENSION = "verl_audio.rollout.vllm.worker.OmniVLLMWorkerExtension"


def collapse_runs(prompt_ids: list[int], token_id: int) -> list[int]:
    """``prompt_ids`` with every run of ``token_id`` cut to one token (the form vLLM expands itself)."""
    out: list[int] = []
    for tok in prompt_ids:
        if tok == token_id and out and out[-1] == token_id:
            continue
        out.append(int(tok))
    return out


def _samples(audio: Any) -> np.ndarray:
    """The samples of one ``audio_data`` item: an array, or vLLM's ``(array, sampling_rate)`` pair."""
    return np.asarray(audio[0] if isinstance(audio, tuple) else audio)


def clip_samples(audio: Any) -> int:
    """Samples of one ``audio_data`` item."""
    return int(_samples(audio).shape[-1])


class AudioTokenMismatch(RuntimeError):
    """vLLM filled a prompt with another number of audio tokens than its clips call for."""


def server_model_config(model_config: Any) -> Any:
    """The model config the vLLM server works with, built from ``actor_rollout_ref.model``.

    verl's server builds ``HFModelConfig``, which refuses the keys of the class the recipe's ``_target_`` names
    (``AudioModelConfig``'s ``freeze_*`` and cache keys); here it is that class, as the workers build it. For an
    audio checkpoint a nested ``max_position_embeddings`` (under the text config) is lifted to the top, where
    verl's ``_validate_configs`` looks; a thinker-only Omni checkpoint is refused (no vLLM architecture).
    """
    config = worker_model_config(model_config)
    hf_config = config.hf_config
    family = MODEL_TYPES.get(getattr(hf_config, "model_type", None))
    if family is None:
        return config
    if family.part_prefix and hf_config.model_type != family.model_types[0]:
        raise ValueError(f"{config.local_path}: vLLM 0.32 serves full {family.name} checkpoints only (it has no "
                         "architecture for a thinker-only one); use the full checkpoint or rollout.name=hf")
    if getattr(hf_config, "max_position_embeddings", None) is None:
        hf_config.max_position_embeddings = family.text_config(hf_config).max_position_embeddings
    return config


class OmniVLLMHttpServer(vLLMHttpServer):
    """verl's vLLM server with whole-audio prompts for the audio families (module doc)."""

    def _init_model_config(self, model_config: Any) -> Any:
        require_plugin("the vLLM rollout server")
        config = server_model_config(model_config)
        hf_config = config.hf_config
        self.family = MODEL_TYPES.get(getattr(hf_config, "model_type", None))
        self.audio_token_id = self.family.audio_token_id(hf_config) if self.family is not None else None
        #: ids of the audio requests in flight, and the audio tokens vLLM used for each (from its output);
        #: ``generate`` adds and removes both, so requests without audio leave nothing behind
        self.audio_requests: set[str] = set()
        self.audio_tokens_used: dict[str, int] = {}
        return config

    def _get_worker_extension_cls(self) -> str:
        return WORKER_EXTENSION

    async def run_server(self, args: Any) -> None:
        await super().run_server(args)
        self._adapt_pause_generation()
        if self.family is not None:
            self._watch_audio_tokens()

    def _adapt_pause_generation(self) -> None:
        """verl 0.9.1 pauses with ``wait_for_inflight_requests=``; vLLM 0.32 takes ``mode=`` instead."""
        pause = self.engine.pause_generation
        if "wait_for_inflight_requests" in inspect.signature(pause).parameters:
            return

        async def pause_generation(*, wait_for_inflight_requests: bool = False, clear_cache: bool = True,
                                   **kwargs: Any) -> Any:
            mode = "wait" if wait_for_inflight_requests else "abort"
            return await pause(mode=mode, clear_cache=clear_cache, **kwargs)

        self.engine.pause_generation = pause_generation

    def _watch_audio_tokens(self) -> None:
        """Record, per request, how many audio tokens vLLM put in the prompt it actually ran."""
        engine_generate = self.engine.generate
        audio_id = self.audio_token_id
        used, watched = self.audio_tokens_used, self.audio_requests

        async def generate(*args: Any, request_id: str, **kwargs: Any) -> AsyncIterator[Any]:
            last = None
            async for output in engine_generate(*args, request_id=request_id, **kwargs):
                last = output
                yield output
            if str(request_id) in watched and last is not None and last.prompt_token_ids is not None:
                used[str(request_id)] = sum(1 for t in last.prompt_token_ids if t == audio_id)

        self.engine.generate = generate

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """verl's ``generate``, with audio placeholder runs collapsed and the audio vLLM used checked."""
        if self.family is None or not audio_data:
            return await super().generate(
                prompt_ids, sampling_params, request_id, image_data, video_data, audio_data, mm_processor_kwargs,
                **kwargs,
            )
        expected = sum(self.family.clip_tokens(clip_samples(a)) for a in audio_data)
        collapsed = collapse_runs(list(prompt_ids), self.audio_token_id)
        # one item per window for a family that caps an item's length (the prompt holds a segment per window)
        audio_data = [w for a in audio_data for w in self.family.windows(_samples(a))]
        self.audio_requests.add(str(request_id))
        try:
            output = await super().generate(
                collapsed, sampling_params, request_id, image_data, video_data, audio_data, mm_processor_kwargs,
                **kwargs,
            )
        finally:
            self.audio_requests.discard(str(request_id))
            used = self.audio_tokens_used.pop(str(request_id), None)
        if output.stop_reason != "aborted" and used != expected:
            raise AudioTokenMismatch(
                f"request {request_id}: vLLM used {used} audio tokens for clips that call for {expected} "
                f"({len(audio_data)} clip(s)); the audio did not reach the model whole and exactly once"
            )
        output.extra_fields["audio_tokens"] = used
        return output
