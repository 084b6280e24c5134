"""Generation backends for evaluation: prompts in, K decoded responses per prompt out.

A backend is anything with ``generate(prompts, sampling) -> list[list[Response]]`` (``Backend``). Two exist:

* ``hf``: the ``hf`` rollout's generator (``verl_audio.rollout.hf.engine.AudioGenerator``) with the rollout's
  feature path (``AudioFeaturizer``) and sampling (``SamplingSpec``): the same prefill, positions, banned
  placeholder ids and sampling as the rollout's validation. Prompts are laid out as verl's
  ``RLHFDataset`` lays them out (``build_messages``) and decoded without special tokens, as verl's reward
  manager decodes them.
* ``vllm``: offline ``vllm.LLM`` (vLLM's CPU build without a GPU) with the rollout's worker extension
  (``verl_audio.rollout.vllm.worker``): the same banned ids (placeholders, ids past the tokenizer) and
  log-prob mode as the `vllm` rollout. Prompts go in as ``chat_text`` (one ``<|AUDIO|>`` per clip: vLLM
  expands the run itself and would expand pre-expanded ids again) with the clips as ``multi_modal_data``;
  the audio tokens vLLM ran with are checked against the clips' lengths for every prompt. Its context
  (``max_model_len``) and clips per prompt default to what the data needs (``needed_limits``): the longest
  prompt, audio tokens included, plus ``max_new_tokens``, and the most clips (windows) any prompt holds.

Both run in ``dtype`` on ``device``: ``resolve_device_dtype`` gives the defaults (cuda when there is one;
bfloat16 on a GPU, float32 on the CPU). A backend raises ``PromptError`` for a prompt it can never take (too
long for the model): that item fails for good, while any other exception (out of memory, a crashed engine)
is a failed generation the CLI tries again on resume.

A ``Response`` may carry the spoken answer (``audio``) when a backend produces speech itself; otherwise the
CLI speaks rows whose output is audio with the training speech stage (``verl_audio.eval.speech.EvalSpeech``),
over the backend's ``thinker`` when it has one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("hf", "vllm")
DTYPES = ("bfloat16", "float16", "float32")
AUDIO_TAG = "<audio>"


class PromptError(ValueError):
    """A prompt this backend can never generate for (e.g. longer than the model's context): a final failure."""


def resolve_device_dtype(device: str | None, dtype: str | None) -> tuple[str, str]:
    """``(device, dtype)`` with the defaults filled in: cuda when available, else cpu; bfloat16 on a GPU,
    float32 on the CPU."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = "float32" if device == "cpu" else "bfloat16"
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    return device, dtype


@dataclass(frozen=True)
class PromptShape:
    """What sizes a prompt without its audio: the user text and each clip's length in 16 kHz samples."""

    text: str
    clip_samples: tuple[int, ...] = ()


def needed_limits(processor: Any, family: Any, shapes: list[PromptShape], max_new_tokens: int) -> tuple[int, int]:
    """``(max_model_len, max_clips)`` the prompts need: the longest prompt's token count, each clip's audio
    tokens included (counted by the processor on silent clips of the same lengths), plus ``max_new_tokens``;
    and the most audio items (a family's windows counted) in one prompt, at least 1."""
    from verl_audio.models.audio_features import SAMPLING_RATE

    seconds = getattr(family, "window_seconds", None)
    window = int(seconds * SAMPLING_RATE) if seconds else None
    longest, clips, seen = 0, 1, {}
    for shape in shapes:
        key = (shape.text, shape.clip_samples)
        if key not in seen:
            silent = Prompt(shape.text, [np.zeros(n, dtype=np.float32) for n in shape.clip_samples])
            seen[key] = len(prompt_token_ids(processor, silent))
        longest = max(longest, seen[key])
        clips = max(clips, sum(-(-n // window) if window else 1 for n in shape.clip_samples))
    return longest + max_new_tokens, clips


@dataclass(frozen=True)
class Sampling:
    """How responses are drawn: greedy (temperature 0) by default, ``n`` per prompt."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0


@dataclass
class Prompt:
    """User-turn text with one ``<audio>`` per clip, and the clips as 16 kHz mono float32 arrays."""

    text: str
    audios: list[np.ndarray] = field(default_factory=list)


@dataclass
class Response:
    """One decoded response; ``audio`` = (waveform, rate) when the backend spoke it."""

    text: str
    token_ids: list[int]
    finish: str = "stop"
    audio: tuple[np.ndarray, int] | None = None


class Backend(Protocol):
    """What the CLI needs from a generation backend."""

    name: str
    processor: Any

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
        """``sampling.n`` responses per prompt, in prompt order; raises for a batch it cannot generate."""
        ...


def build_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The chat messages verl's ``RLHFDataset._build_messages`` makes of a row: ``<audio>`` tags -> audio parts."""
    if not prompt.audios:
        return [{"role": "user", "content": prompt.text}]
    content, clips = [], iter(prompt.audios)
    for segment in re.split(f"({AUDIO_TAG})", prompt.text):
        if segment == AUDIO_TAG:
            content.append({"type": "audio", "audio": next(clips)})
        elif segment:
            content.append({"type": "text", "text": segment})
    return [{"role": "user", "content": content}]


def chat_text(processor: Any, prompt: Prompt) -> str:
    """The chat-template text of a prompt, generation prompt added (one ``<|AUDIO|>`` per clip, unexpanded)."""
    return processor.apply_chat_template(build_messages(prompt), add_generation_prompt=True, tokenize=False)


def prompt_token_ids(processor: Any, prompt: Prompt) -> list[int]:
    """Token ids with each clip's ``<|AUDIO|>`` run expanded to its whole length, as the processor does in training."""
    from verl_audio.models.audio_features import SAMPLING_RATE

    text = chat_text(processor, prompt)
    audio = {"audio": prompt.audios, "sampling_rate": SAMPLING_RATE} if prompt.audios else {}
    return processor(text=[text], return_tensors="pt", **audio)["input_ids"][0].tolist()


class HFBackend:
    """The ``hf`` rollout's generator on one device (module doc)."""

    name = "hf"

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "float32", processor: str | None = None,
                 seed: int = 0) -> None:
        import torch

        from verl_audio.rollout.features import AudioFeaturizer
        from verl_audio.rollout.hf.engine import AudioGenerator

        self.dtype = dtype
        self.generator = AudioGenerator(str(model), device=device, dtype=getattr(torch, dtype), seed=seed)
        self.family = self.generator.family
        self.processor = self.family.load_processor(processor or model)
        self.featurizer = AudioFeaturizer(self.family, self.processor.feature_extractor, self.generator.audio_token_id)

    @property
    def thinker(self) -> Any:
        """The generator's thinker, which the speech stage shares for spoken rows."""
        return self.generator.model

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
        from verl_audio.rollout.hf.engine import GenRequest
        from verl_audio.rollout.sampling import SamplingSpec

        requests = []
        for prompt in prompts:
            ids = prompt_token_ids(self.processor, prompt)
            room = self.generator.max_positions - len(ids)
            if room < 1:
                raise PromptError(f"prompt of {len(ids)} tokens leaves no room within {self.generator.max_positions}")
            spec = SamplingSpec(max_tokens=min(sampling.max_new_tokens, room), temperature=sampling.temperature,
                                top_p=sampling.top_p)
            clips = self.featurizer.prepare(ids, prompt.audios)
            requests.extend(GenRequest(ids, clips, spec) for _ in range(sampling.n))
        outputs = self.generator.generate(requests)
        decode = self.processor.tokenizer.decode
        responses = [Response(decode(o.token_ids, skip_special_tokens=True), list(o.token_ids), o.finish)
                     for o in outputs]
        return [responses[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]


class VLLMBackend:
    """Offline vLLM on the checkpoint (module doc); needs vLLM installed and, on CPU, head dim >= 32.

    ``max_model_len`` / ``max_clips`` left None are what ``shapes`` need (``needed_limits``, the context capped
    at the model's), or the model's context and one clip when no shapes are given. ``device`` is the
    platform vLLM is built for (``cuda`` / ``cuda:N``, which picks the GPU, or ``cpu``); another is refused.
    """

    name = "vllm"

    def __init__(self, model: str, *, device: str | None = None, dtype: str = "float32",
                 processor: str | None = None, seed: int = 0, max_model_len: int | None = None,
                 max_clips: int | None = None, shapes: list[PromptShape] | None = None,
                 max_new_tokens: int = 1024) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ValueError(f"--backend vllm needs vLLM ({exc}); scripts/setup_env.sh installs it") from exc
        from transformers import AutoConfig
        from vllm.platforms import current_platform

        from verl_audio.models.families import family_of_config
        from verl_audio.rollout.vllm.server import WORKER_EXTENSION

        import os

        platform = "cpu" if current_platform.is_cpu() else "cuda"
        if device is not None and device.split(":")[0] != platform:
            raise ValueError(f"--device {device}: the installed vLLM runs on {platform} only")
        if device is not None and ":" in device:  # vLLM takes the first visible GPU; its workers inherit this
            os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        if platform == "cpu":
            # vLLM's CPU build sizes its KV cache from this (else a fraction of all host memory); 1 GB as in training
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        hf_config = AutoConfig.from_pretrained(str(model))
        self.family = family_of_config(hf_config)
        self.processor = self.family.load_processor(processor or model)
        self.dtype = dtype
        context = int(self.family.text_config(hf_config).max_position_embeddings)
        if shapes:
            need_len, need_clips = needed_limits(self.processor, self.family, shapes, max_new_tokens)
            if need_len > context:
                logger.warning("the longest prompt + %d new tokens needs %d tokens; the model holds %d",
                               max_new_tokens, need_len, context)
        else:
            need_len, need_clips = context, 1
        self.max_model_len = max_model_len or min(need_len, context)
        self.max_clips = max_clips or need_clips
        logger.info("vLLM: max_model_len %d, %d audio item(s) per prompt", self.max_model_len, self.max_clips)
        self.llm = LLM(model=str(model), dtype=dtype, seed=seed, max_model_len=self.max_model_len,
                       limit_mm_per_prompt={"audio": self.max_clips, "image": 0, "video": 0},
                       enforce_eager=current_platform.is_cpu(), logprobs_mode="raw_logprobs",
                       worker_extension_cls=WORKER_EXTENSION)
        hf_config = self.llm.llm_engine.model_config.hf_config
        self.audio_token_id = self.family.audio_token_id(hf_config)
        # the rollout's bans after log-probs: the worker extension adds the family's placeholders and the ids
        # past the tokenizer
        self.llm.collective_rpc("monkey_patch_model", kwargs={
            "vocab_size": int(self.family.text_config(hf_config).vocab_size), "banned_token_ids": []})

    def _request(self, prompt: Prompt) -> dict[str, Any]:
        """vLLM's input: the chat text with one placeholder per audio item (vLLM expands each itself); a family
        that splits clips into windows sends the windows, with the prompt's segments repeated per window."""
        from verl_audio.models.audio_features import SAMPLING_RATE
        from verl_audio.rollout.vllm.server import collapse_runs

        items = [(w, SAMPLING_RATE) for a in prompt.audios for w in self.family.windows(a)]
        if not items:
            return {"prompt": chat_text(self.processor, prompt)}
        if len(items) == len(prompt.audios):
            return {"prompt": chat_text(self.processor, prompt), "multi_modal_data": {"audio": items}}
        ids = prompt_token_ids(self.processor, prompt)
        return {"prompt_token_ids": collapse_runs(ids, self.audio_token_id), "multi_modal_data": {"audio": items}}

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Response]]:
        from vllm import SamplingParams

        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        outputs = self.llm.generate([self._request(p) for p in prompts], params, use_tqdm=False)
        decode = self.processor.tokenizer.decode
        responses = []
        for prompt, out in zip(prompts, outputs, strict=True):
            used = sum(1 for t in out.prompt_token_ids if t == self.audio_token_id)
            expected = sum(self.family.clip_tokens(len(a)) for a in prompt.audios)
            if used != expected:
                raise ValueError(f"vLLM used {used} audio tokens for clips that call for {expected}")
            responses.append([Response(decode(c.token_ids, skip_special_tokens=True), list(c.token_ids),
                                       "length" if c.finish_reason == "length" else "stop") for c in out.outputs])
        return responses


def make_backend(name: str, model: str, **kwargs: Any) -> Backend:
    """The backend called ``name`` (``BACKENDS``) for the checkpoint ``model``; ``kwargs`` are the backend's
    keyword arguments (the ``hf`` backend takes device, dtype, processor and seed of them)."""
    if name == "hf":
        return HFBackend(model, **{k: v for k, v in kwargs.items() if k in ("device", "dtype", "processor", "seed")})
    if name == "vllm":
        return VLLMBackend(model, **kwargs)
    raise ValueError(f"--backend must be one of {BACKENDS}, got {name!r}")
