"""Spoken answers for rows whose output is audio: the training speech stage, and the WER of what it says.

``EvalSpeech`` speaks each response with ``verl_audio.speech.stage.SpeechStage``, the stage the rollout speaks
with in training: the checkpoint's talker and token2wav conditioned on one thinker forward over prompt +
response, so the speech says exactly the text that was scored. The thinker is the eval backend's own when it
holds one (``hf``), so eval loads one model; a backend without one (``vllm``) gets a thinker loaded for the
stage. Everything runs in the backend's dtype and device; every spoken answer draws its talker samples and
token2wav noise from ``--seed``, so an answer's speech does not depend on which others were evaluated with it.

WER: Whisper ASR through transformers (``reward_fns.speech_consistency.transcribe``: model id
configurable, batched, CPU or CUDA) of each waveform, against the response text with the output
contract's tags removed; both sides go through Whisper's English text normaliser
(``EnglishTextNormalizer``, with the ASR tokenizer's spelling map when it ships one), and jiwer counts
substitutions, deletions and insertions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)

_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


class EvalSpeech:
    """The speech stage behind eval's spoken rows (module doc)."""

    def __init__(self, model_dir: str | Path, backend: Any, *, device: str = "cpu", seed: int = 0,
                 max_speech_tokens: int = 4096, speaker: str | None = None) -> None:
        import torch

        from verl_audio.models.token_ids import eos_token_ids
        from verl_audio.rollout.features import AudioFeaturizer
        from verl_audio.speech.config import SpeechOptions
        from verl_audio.speech.stage import SPEAKING_FAMILY, SpeechStage
        from verl_audio.speech.talker import load_speech_modules

        thinker = getattr(backend, "thinker", None)
        owns = thinker is None
        if owns:
            dtype = getattr(torch, getattr(backend, "dtype", "float32"))
            thinker = SPEAKING_FAMILY.load_trainable(model_dir, dtype=dtype).eval().requires_grad_(False).to(device)
        modules = load_speech_modules(model_dir, device=next(thinker.parameters()).device, dtype=thinker.dtype)
        options = SpeechOptions(talker_max_new_tokens=max_speech_tokens, seed=seed,
                                **({"speaker": speaker} if speaker else {}))
        self.stage = SpeechStage(modules, thinker, options, eos_token_ids(thinker, str(model_dir)), owns_thinker=owns)
        self.processor = backend.processor
        self.featurizer = AudioFeaturizer(SPEAKING_FAMILY, self.processor.feature_extractor, self.stage.audio_token_id)

    def speak(self, answers: list[tuple[Any, list[int]]]) -> list[tuple[np.ndarray, int]]:
        """(waveform, rate) for each (``Prompt``, response token ids), spoken together in one stage call."""
        from verl_audio.eval.generation import prompt_token_ids
        from verl_audio.speech.stage import SpeechRequest

        options = self.stage.options
        requests = []
        for prompt, token_ids in answers:
            ids = prompt_token_ids(self.processor, prompt)
            clips = self.featurizer.prepare(ids, prompt.audios)
            requests.append(SpeechRequest(ids, clips, list(token_ids), options.speaker, options.seed))
        return [(r.waveform, r.sampling_rate) for r in self.stage.speak(requests)]


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
