"""Spoken answers for rows whose output is audio: the speech hook, the Omni talker, and their WER.

The hook is a ``SpeechSynthesizer``: given the prompt and the response tokens the thinker produced, it
returns the waveform that says them. ``OmniTalkerSpeech`` is the one that exists: the checkpoint's own
talker + token2wav through ``Qwen2_5OmniForConditionalGeneration.generate(return_audio=True)``, with the
thinker held to the response already generated (forced decoding), so the speech says exactly the text that
was scored. A backend that speaks by itself puts the waveform on ``Response.audio`` and no hook runs.

WER: Whisper ASR through transformers (``reward_fns.speech_consistency.transcribe``: model id
configurable, batched, CPU or CUDA) of each waveform, against the response text with the output
contract's tags removed; both sides go through Whisper's English text normaliser
(``EnglishTextNormalizer``, with the ASR tokenizer's spelling map when it ships one), and jiwer counts
substitutions, deletions and insertions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)

_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@dataclass
class SpeechRequest:
    """What the hook gets: the prompt (as the backend saw it) and the response's token ids."""

    prompt: Any  # verl_audio.eval.generation.Prompt
    token_ids: list[int]


class SpeechSynthesizer(Protocol):
    """Turns responses into speech: one (mono float32 waveform, sampling rate) per request."""

    def speak(self, requests: list[SpeechRequest]) -> list[tuple[np.ndarray, int]]: ...


def has_talker(model_dir: str | Path) -> bool:
    """Whether the checkpoint holds talker and token2wav weights (an exported or full Omni checkpoint)."""
    import json

    from safetensors import safe_open

    path = Path(model_dir)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = json.loads(index.read_text())["weight_map"].keys()
    else:
        names = []
        for shard in sorted(path.glob("*.safetensors")):
            with safe_open(str(shard), "pt") as f:
                names.extend(f.keys())
    return any(n.startswith("talker.") for n in names) and any(n.startswith("token2wav.") for n in names)


class _ForceTokens:
    """Logits processor that makes step t choose ``tokens[t]`` (the thinker replays a response)."""

    def __init__(self, tokens: list[int], prompt_len: int) -> None:
        self.tokens, self.prompt_len = tokens, prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_len
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[min(step, len(self.tokens) - 1)]] = 0.0
        return forced


class OmniTalkerSpeech:
    """The checkpoint's talker speaking the given responses (module doc); one request at a time."""

    def __init__(self, model_dir: str | Path, processor: Any, *, device: str = "cpu", speaker: str | None = None,
                 max_speech_tokens: int = 4096, seed: int = 0) -> None:
        import torch
        from transformers import Qwen2_5OmniForConditionalGeneration

        self.model = Qwen2_5OmniForConditionalGeneration.from_pretrained(
            str(model_dir), dtype=torch.float32, attn_implementation="sdpa", enable_audio_output=True
        ).eval().to(device)
        if not getattr(self.model, "has_talker", False):
            raise ValueError(f"{model_dir}: the checkpoint has no talker, so it cannot speak")
        self.processor, self.device, self.seed = processor, device, seed
        self.speaker = speaker or next(iter(self.model.speaker_map))
        self.max_speech_tokens = max_speech_tokens
        self.rate = 24000  # token2wav's output rate

    def speak(self, requests: list[SpeechRequest]) -> list[tuple[np.ndarray, int]]:
        import torch
        from transformers import LogitsProcessorList

        from verl_audio.eval.generation import chat_text
        from verl_audio.models.audio_features import SAMPLING_RATE

        out = []
        for req in requests:
            if not req.token_ids:
                out.append((np.zeros(0, np.float32), self.rate))
                continue
            audio = {"audio": req.prompt.audios, "sampling_rate": SAMPLING_RATE} if req.prompt.audios else {}
            inputs = self.processor(text=[chat_text(self.processor, req.prompt)], return_tensors="pt", **audio)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            force = _ForceTokens(req.token_ids, inputs["input_ids"].shape[1])
            torch.manual_seed(self.seed)  # the talker samples; a fixed seed makes eval repeatable
            with torch.inference_mode():
                _, wave = self.model.generate(
                    **inputs, speaker=self.speaker, thinker_max_new_tokens=len(req.token_ids), thinker_do_sample=False,
                    thinker_logits_processor=LogitsProcessorList([force]),
                    talker_max_new_tokens=self.max_speech_tokens,
                )
            out.append((wave.reshape(-1).float().cpu().numpy(), self.rate))
        return out


def spoken_text(response: str) -> str:
    """The response as it would be said: the output contract's tags removed."""
    for tag in _TAGS:
        response = response.replace(tag, " ")
    return response


def english_normalizer(asr_model: str, device: str | None) -> Any:
    """Whisper's English normaliser, with the ASR tokenizer's spelling map when it has one."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from reward_fns.speech_consistency import _asr_pipeline

    tokenizer = getattr(_asr_pipeline(asr_model, device), "tokenizer", None)
    return EnglishTextNormalizer(getattr(tokenizer, "english_spelling_normalizer", None) or {})


def word_errors(reference: str, hypothesis: str, normalize: Any) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after ``normalize`` on both sides."""
    import jiwer

    ref, hyp = normalize(spoken_text(reference)).split(), normalize(hypothesis).split()
    if not ref:
        return len(hyp), 0
    if not hyp:
        return len(ref), len(ref)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions, len(ref)


def transcribe_and_score(samples: list[Any], audios: list[tuple[np.ndarray, int]], *, asr_model: str,
                         asr_device: str | None = None, batch_size: int = 8) -> None:
    """Fill ``speech_seconds``, ``transcript``, ``wer`` (and its counts) of each ``SampleScore`` from its audio."""
    from reward_fns.speech_consistency import transcribe

    if not samples:
        return
    transcripts = transcribe(audios, asr_model, "en", asr_device, batch_size)
    normalize = english_normalizer(asr_model, asr_device)
    for sample, (wave, rate), transcript in zip(samples, audios, transcripts, strict=True):
        errors, words = word_errors(sample.response, transcript, normalize)
        sample.speech_seconds = len(wave) / rate
        sample.transcript = transcript
        sample.wer_errors, sample.wer_words = errors, words
        sample.wer = errors / words if words else None
