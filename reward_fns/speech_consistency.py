"""The speech-consistency rule: 1 − WER between an ASR transcript of the generated speech and the text.

ASR runs through transformers' Whisper pipeline (model id configurable, long audio in 30 s chunks). The
pipeline loads once per (model, device) and process and is reused; calls are serialised with a lock
because verl's reward workers score samples from a thread pool.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from reward_fns.protocol import resample, to_mono_float32
from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

DEFAULT_ASR_MODEL = "openai/whisper-large-v3"
ASR_RATE = 16000  # Whisper's feature extractor rate
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_NON_WORD = re.compile(r"[^\w']+")  # a single character class: linear, cannot backtrack
_ASR_LOCK = threading.Lock()


def normalize_words(text: str) -> list[str]:
    """Lower-cased words with the contract tags and punctuation removed (what a listener would hear)."""
    for tag in _TAGS:
        text = text.replace(tag, " ")
    return _NON_WORD.sub(" ", text.lower()).split()


def consistency_from_transcript(response_text: str, transcript: str) -> float:
    """`max(0, 1 − WER)` of the transcript against the response text, on normalised words."""
    import jiwer

    reference, hypothesis = normalize_words(response_text), normalize_words(transcript)
    if not reference:  # WER is undefined without reference words: silence matches an empty text
        return 1.0 if not hypothesis else 0.0
    return max(0.0, 1.0 - float(jiwer.wer(" ".join(reference), " ".join(hypothesis))))


@lru_cache(maxsize=2)
def _asr_pipeline(model_id: str, device: str | None) -> Any:
    """Load the ASR pipeline once per process; `device=None` picks CUDA when present."""
    import torch
    from transformers import pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return pipeline("automatic-speech-recognition", model=model_id, device=device, dtype=dtype)


def transcribe(
    audios: Sequence[tuple[Any, int]],
    model_id: str = DEFAULT_ASR_MODEL,
    language: str | None = "en",
    device: str | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Transcripts of (waveform, sampling rate) pairs, batched through one cached Whisper pipeline."""
    waves = [resample(to_mono_float32(audio), int(rate), ASR_RATE) for audio, rate in audios]
    texts = [""] * len(waves)
    todo = [i for i, wave in enumerate(waves) if wave.size > 0]  # no speech, nothing to hear
    if not todo:
        return texts
    pipe = _asr_pipeline(model_id, device)
    generate_kwargs = {"task": "transcribe", **({"language": language} if language else {})}
    inputs = [{"raw": waves[i], "sampling_rate": ASR_RATE} for i in todo]
    # chunked rather than sequential long-form decoding: it batches across chunks and responses, at the
    # cost of small errors at chunk borders (the Whisper model cards recommend it for batched use)
    with _ASR_LOCK:
        outputs = pipe(
            inputs,
            chunk_length_s=30,
            batch_size=batch_size,
            ignore_warning=True,
            generate_kwargs=generate_kwargs,
        )
    for i, out in zip(todo, outputs, strict=True):
        texts[i] = str(out["text"]).strip()
    return texts


def speech_consistency_reward(
    response: str,
    audio: Any,
    sampling_rate: int,
    model_id: str = DEFAULT_ASR_MODEL,
    language: str | None = "en",
    device: str | None = None,
) -> float:
    """1 − WER between the transcript of `audio` and the response text (see `consistency_from_transcript`)."""
    (transcript,) = transcribe([(audio, sampling_rate)], model_id, language, device)
    return consistency_from_transcript(response, transcript)
