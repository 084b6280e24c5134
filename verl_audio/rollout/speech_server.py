"""``SpeechServer``: the speech stage behind an async ``speak`` call, batching concurrent responses.

verl's agent loop finishes each sample on its own; the responses of a step arrive one by one and are
gathered by the project's ``RequestBatcher`` (a short window, up to ``max_batch_size``) into one
thinker forward and one talker run. Two ways to host it:

* inside the `hf` rollout server (``attach``): the stage shares the server's thinker, so it speaks with
  the weights the actor pushed this step; it shares the server's engine lock and wake state too;
* as its own Ray actor (``StandaloneSpeechServer``), for a backend whose engine returns no hidden
  states (vLLM): it loads its own thinker and takes the actor's weights through ``update_weights``
  (the same named tensors the rollout receives), then ``finish_weight_update``.

Either way the actor is found by name (``endpoints``): the `hf` server, or ``speech_server_<replica>``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import torch

from verl_audio.models.token_ids import eos_token_ids
from verl_audio.plugin_state import require_plugin
from verl_audio.rollout.batcher import RequestBatcher
from verl_audio.rollout.features import AudioFeaturizer
from verl_audio.rollout.options import resolve_device, resolve_dtype
from verl_audio.rollout.placement import noset_visible_devices_env
from verl_audio.rollout.speech_endpoints import speech_actor_name
from verl_audio.speech.config import SpeechOptions
from verl_audio.speech.stage import SPEAKING_FAMILY, SpeechRequest, SpeechResult, SpeechStage
from verl_audio.speech.talker import load_speech_modules

logger = logging.getLogger(__name__)


class SpeechServer:
    """Async front of a ``SpeechStage``: featurizes the prompt's audio, batches requests, returns waveforms."""

    def __init__(
        self,
        stage: SpeechStage,
        featurizer: AudioFeaturizer,
        *,
        lock: asyncio.Lock | None = None,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.stage, self.featurizer, self.options = stage, featurizer, stage.options
        self._lock = lock or asyncio.Lock()
        if ready is None:
            ready = asyncio.Event()
            ready.set()
        self.batcher: RequestBatcher[SpeechRequest, SpeechResult] = RequestBatcher(
            self._run,
            window_s=self.options.batch_window_ms / 1000,
            max_batch=self.options.max_batch_size,
            lock=self._lock,
            ready=ready,
        )
        self._requests = 0
        self.global_steps: int | None = None
        self._loaded = 0
        self.seconds_spoken = 0.0

    def _run(self, requests: list[SpeechRequest], abort: threading.Event) -> list[SpeechResult]:
        return self.stage.speak(requests)  # a started batch is finished: its speech is short next to the text

    async def speak(
        self,
        prompt_ids: list[int],
        response_ids: list[int],
        audio_data: list[Any] | None = None,
        sampling_rate: int | None = None,
        speaker: str | None = None,
        request_id: str = "",
    ) -> dict[str, Any]:
        """Speak ``response_ids`` as the reply to ``prompt_ids`` (+ its clips); returns the waveform and stats."""
        prompt_ids = [int(t) for t in prompt_ids]
        clips = await asyncio.to_thread(self.featurizer.prepare, prompt_ids, audio_data, sampling_rate)
        speaker = speaker or self.options.speaker
        seed = self.options.seed + self._requests
        self._requests += 1
        request = SpeechRequest(prompt_ids, clips, [int(t) for t in response_ids], speaker, seed)
        result = await self.batcher.submit(request, request_id)
        if result is None:
            raise RuntimeError(f"speech request {request_id} was rejected (the speech server is stopping)")
        self.seconds_spoken += result.waveform.size / result.sampling_rate
        return {
            "array": result.waveform,
            "sampling_rate": result.sampling_rate,
            "codec_tokens": result.codec_tokens,
            "spoken_tokens": result.spoken_tokens,
            "compute_s": result.compute_s,
            "global_steps": self.global_steps,
        }

    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load a bucket of the actor's thinker weights into an owned thinker; returns how many it held."""
        async with self._lock:
            loaded = await asyncio.to_thread(self.stage.update_thinker_weights, named_tensors)
        self._loaded += len(loaded)
        return len(loaded)

    async def finish_weight_update(self, global_steps: int | None = None) -> dict[str, Any]:
        """End a weight update (tags later speech with ``global_steps``)."""
        count, self._loaded = self._loaded, 0
        self.global_steps = global_steps
        return {"loaded": count}

    async def get_stats(self) -> dict[str, Any]:
        """Batches, sequences, run seconds, seconds of speech produced."""
        return {**self.batcher.stats, "requests": self._requests, "seconds_spoken": self.seconds_spoken}


def attach(rollout_server: Any, model_path: str) -> SpeechServer | None:
    """The speech server of an `hf` rollout server (sharing its thinker), or None when speech is off."""
    options = SpeechOptions.from_engine_kwargs(rollout_server.config.engine_kwargs)
    if not options.enable:
        return None
    engine = rollout_server.engine
    modules = load_speech_modules(model_path, device=engine.device, dtype=engine.model.dtype)
    stage = SpeechStage(modules, engine.model, options, engine.eos_ids)
    logger.info("speech stage on %s (shared thinker): %s bytes", engine.device, modules.parameter_bytes())
    return SpeechServer(stage, rollout_server.featurizer, lock=rollout_server._engine_lock, ready=rollout_server._awake)


class StandaloneSpeechServer(SpeechServer):
    """A speech server with its own thinker copy, for backends without hidden states (run it as a Ray actor)."""

    def __init__(self, model_path: str, engine_kwargs: Any = None, dtype: str = "bfloat16") -> None:
        require_plugin("the stand-alone speech server")
        options = SpeechOptions.from_engine_kwargs(engine_kwargs)
        device = resolve_device(options.device)
        torch_dtype = resolve_dtype(dtype)
        thinker = SPEAKING_FAMILY.load_trainable(model_path, dtype=torch_dtype)
        thinker.eval().requires_grad_(False).to(device)
        modules = load_speech_modules(model_path, device=device, dtype=torch_dtype)
        stage = SpeechStage(modules, thinker, options, eos_token_ids(thinker, model_path), owns_thinker=True)
        processor = SPEAKING_FAMILY.load_processor(model_path)
        featurizer = AudioFeaturizer(SPEAKING_FAMILY, processor.feature_extractor, stage.audio_token_id)
        super().__init__(stage, featurizer)
        logger.info("stand-alone speech server on %s: %s", device, modules.parameter_bytes())


def launch_standalone(replica_rank: int, node_id: str, model_path: str, engine_kwargs: Any, dtype: str,
                      visible_device: str | None = None) -> Any:  # fmt: skip
    """Start ``speech_server_<replica_rank>`` (a ``StandaloneSpeechServer`` Ray actor) on ``node_id``.

    It holds no Ray CPU/GPU slot, like the rollout servers: it works while the colocated trainer waits.
    With ``visible_device`` (the replica's first accelerator) it sees that device only.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env = noset_visible_devices_env()
    if visible_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_device
    options = SpeechOptions.from_engine_kwargs(engine_kwargs)
    return (
        ray.remote(StandaloneSpeechServer)
        .options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            runtime_env={"env_vars": env},
            name=speech_actor_name(replica_rank),
            num_cpus=0,
            max_concurrency=max(16, 2 * options.max_batch_size),
        )
        .remote(model_path, engine_kwargs, dtype)
    )
