"""The `hf` rollout server: a Ray actor (or a plain object in tests) answering verl's token-in-token-out calls.

``generate`` has vLLM's server signature. Each request's audio becomes features right away (cached by
content, see ``features``); the request then waits in the ``batcher`` to be generated with whatever
else arrived within ``batch_window_ms`` (up to ``max_batch_size`` sequences).

Control calls follow vLLM's server: ``abort_all_requests`` closes the gate (later requests wait for
``resume_generation``, or return ``aborted`` at once with ``reject_request``), returns queued
requests as ``aborted`` and stops the running batch after its current step (partial tokens,
``aborted``). ``sleep``/``wake_up`` move the weights to CPU and back on CUDA (with
``free_cache_engine``); on CPU there is nothing to free and they keep serving. The KV cache lives only
while a batch runs, so the kv-cache calls free the allocator cache at most; profiling calls are no-ops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import RolloutConfig
from verl.workers.rollout.replica import RolloutMode, TokenOutput

from verl_audio.models.lora import is_adapter_tensor
from verl_audio.plugin_state import require_plugin
from verl_audio.rollout.batcher import RequestBatcher
from verl_audio.rollout.features import AudioFeaturizer
from verl_audio.rollout.hf.config import HFRolloutOptions
from verl_audio.rollout.hf.engine import AudioGenerator, GenRequest, GenResult
from verl_audio.rollout.options import model_path, resolve_device, resolve_dtype
from verl_audio.rollout.sampling import parse_sampling_params

logger = logging.getLogger(__name__)


class HFRolloutServer:
    """Generates with the checkpoint's audio model (any family) for one rollout replica."""

    def __init__(
        self,
        config: Any,
        model_config: Any,
        rollout_mode: RolloutMode = RolloutMode.HYBRID,
        replica_rank: int = 0,
        node_rank: int = 0,
        visible_devices: str | None = None,
    ) -> None:
        require_plugin("the hf rollout server")
        if visible_devices:  # before anything touches CUDA: the GPUs of this replica's workers
            from verl.utils.device import get_visible_devices_keyword

            os.environ[get_visible_devices_keyword()] = visible_devices
        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.options = HFRolloutOptions.from_engine_kwargs(self.config.engine_kwargs)
        self.rollout_mode, self.replica_rank, self.node_rank = rollout_mode, replica_rank, node_rank
        self.device = resolve_device(self.options.device)
        if self.device.type == "cpu" and self.options.cpu_threads:
            torch.set_num_threads(self.options.cpu_threads)
        path = model_path(model_config)
        self.engine = AudioGenerator(
            path,
            device=self.device,
            dtype=resolve_dtype(self.config.dtype),
            attn_implementation=self.options.attn_implementation,
            embed_cache_size=self.options.embed_cache_size,
            seed=self.config.seed + replica_rank,
        )
        processor = self.engine.family.load_processor(path)
        self.featurizer = AudioFeaturizer(
            self.engine.family, processor.feature_extractor, self.engine.audio_token_id, self.options.feature_cache_size
        )
        self.max_model_len = self.config.max_model_len or self.engine.max_positions
        if self.max_model_len > self.engine.max_positions:
            raise ValueError(
                f"max_model_len {self.max_model_len} > max_position_embeddings {self.engine.max_positions}"
            )
        self.global_steps: int | None = None
        self._awake = asyncio.Event()  # weights are on the generation device
        self._awake.set()
        self._engine_lock = asyncio.Lock()  # one batch or one weight operation at a time
        self.batcher: RequestBatcher[GenRequest, GenResult] = RequestBatcher(
            self.engine.generate,
            window_s=self.options.batch_window_ms / 1000,
            max_batch=self.options.max_batch_size,
            lock=self._engine_lock,
            ready=self._awake,
        )
        self._loaded: set[str] = set()
        self._tokens = 0
        from verl_audio.rollout.speech_server import attach  # speech stage: None unless engine_kwargs.speech.enable

        self.speech = attach(self, path)
        logger.info("hf rollout server %d: %s, %s, %s", replica_rank, self.device, self.config.dtype, self.options)

    # ---- generation ------------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        kv_transfer_params: dict | None = None,
    ) -> TokenOutput:
        """Generate a response to ``prompt_ids`` (fully expanded: one ``<|AUDIO|>`` per audio token).

        ``priority`` is accepted for vLLM compatibility; requests are served in arrival order.
        """
        if image_data or video_data:
            raise NotImplementedError("the hf rollout backend takes audio and text only, not images or video")
        if kv_transfer_params is not None:
            raise NotImplementedError("the hf rollout backend has no prefill/decode disaggregation")
        prompt_ids = [int(t) for t in prompt_ids]
        spec = parse_sampling_params(
            dict(sampling_params),
            len(prompt_ids),
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.max_model_len,
            ignore_eos=self.config.ignore_eos,
        )
        rate = (mm_processor_kwargs or {}).get("sampling_rate")
        clips = await asyncio.to_thread(self.featurizer.prepare, prompt_ids, audio_data, rate)
        result = await self.batcher.submit(GenRequest(prompt_ids, clips, spec), request_id)
        if result is None:  # aborted and not resumed, with reject_request
            return self._output(GenResult(finish="abort"), with_log_probs=False)
        self._tokens += len(result.token_ids)
        return self._output(result, with_log_probs=spec.logprobs)

    def _output(self, result: GenResult, *, with_log_probs: bool) -> TokenOutput:
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if with_log_probs else None,
            stop_reason="aborted" if result.finish == "abort" else "completed",
            extra_fields={"global_steps": self.global_steps, "finish_reason": result.finish},
        )

    async def speak(self, **request: Any) -> dict[str, Any]:
        """Speak a generated response with this server's thinker (``verl_audio.rollout.speech_server.SpeechServer``)."""
        if self.speech is None:
            raise RuntimeError("this hf rollout server has no speech stage (rollout.engine_kwargs.speech.enable)")
        return {**await self.speech.speak(**request), "global_steps": self.global_steps}

    # ---- pause / resume --------------------------------------------------------------------------

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict[str, Any]:
        """Stop the running batch after its current step, return queued requests as aborted, close the gate."""
        ids = await self.batcher.abort(GenResult(finish="abort"), reject=reject_request)
        if reset_prefix_cache:
            self.engine.embed_cache.clear()
        logger.info("hf rollout: aborted %d requests", len(ids))
        return {"aborted_count": len(ids), "request_ids": ids}

    async def resume_generation(self) -> None:
        """Admit requests again after ``abort_all_requests``."""
        self.batcher.resume()

    # ---- weights and memory ----------------------------------------------------------------------

    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load one bucket of thinker weights (HF names); returns how many tensors it held."""
        async with self._engine_lock:
            loaded = await asyncio.to_thread(self.engine.load_weights, named_tensors)
        self._loaded.update(loaded)
        return len(loaded)

    async def update_adapter(self, named_tensors: list[tuple[str, torch.Tensor]], peft_config: dict[str, Any],
                             global_steps: int | None = None) -> int:
        """Apply a whole LoRA adapter (``engine.load_adapter``) and tag outputs with ``global_steps``; returns the
        modules it covered."""
        async with self._engine_lock:
            modules = await asyncio.to_thread(self.engine.load_adapter, named_tensors, peft_config)
        self.global_steps = global_steps
        return len(modules)

    async def finish_weight_update(self, global_steps: int | None = None) -> dict[str, Any]:
        """End a weight update: tag outputs with ``global_steps``; report parameters no bucket covered (a LoRA
        adapter's own come with ``update_adapter``)."""
        loaded_storage = {self.engine.params[n].data_ptr() for n in self._loaded}
        missing = [n for n, p in self.engine.params.items()
                   if p.data_ptr() not in loaded_storage and not is_adapter_tensor(n)]
        count, self._loaded = len(self._loaded), set()
        if missing:
            logger.warning("hf rollout: weight update left %d parameters unchanged, e.g. %s", len(missing), missing[:5])
        self.engine.embed_cache.clear()
        self.global_steps = global_steps
        return {"loaded": count, "missing": missing}

    async def set_global_steps(self, global_steps: int) -> None:
        """The training step whose weights the server holds (reported in every output)."""
        self.global_steps = global_steps

    async def sleep(self) -> None:
        """Free the accelerator for training: weights to CPU (CUDA with free_cache_engine), caches cleared."""
        if not self.config.free_cache_engine:
            return
        async with self._engine_lock:
            self.engine.embed_cache.clear()
            if self.device.type == "cuda" and self.options.offload_on_sleep:
                self._awake.clear()
                self.engine.to("cpu")
                if self.speech is not None:
                    self.speech.stage.to("cpu")
                torch.cuda.empty_cache()

    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Bring the weights back to the device (``weights`` tag or no tags); ``kv_cache`` needs nothing."""
        if tags is not None and "weights" not in tags:
            return
        async with self._engine_lock:
            if not self._awake.is_set():
                self.engine.to(self.device)
                if self.speech is not None:
                    self.speech.stage.to(self.device)
                self._awake.set()

    async def clear_kv_cache(self) -> None:
        """Drop the audio-encoder outputs (they depend on the weights); the KV cache lives per batch only."""
        self.engine.embed_cache.clear()

    async def release_kv_cache(self) -> None:
        """Nothing is held between batches; returns the allocator's cached blocks on CUDA."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    async def resume_kv_cache(self) -> None:
        """No-op: the KV cache is allocated by each batch."""

    async def start_profile(self, **kwargs: Any) -> None:
        """No-op: profile the server process with verl's worker profiler or torch.profiler directly."""

    async def stop_profile(self) -> None:
        """No-op (see ``start_profile``)."""

    async def get_stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks: batches, sequences, tokens, generation seconds, cache hits."""
        return {
            **self.batcher.stats,
            "tokens": self._tokens,
            "queued": self.batcher.queued,
            "feature_cache": self.featurizer.cache.stats(),
            "embed_cache": self.engine.embed_cache.stats(),
        }
