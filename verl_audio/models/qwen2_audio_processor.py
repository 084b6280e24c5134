"""Whole audio for Qwen2-Audio: a long clip becomes consecutive 30 s windows, each its own audio item.

Qwen2-Audio's encoder takes exactly 3,000 mel frames (30 s) per item and raises on anything else; its processor
pads every item to 30 s and cuts longer clips, and vLLM forces the cut too. So one item carries at most 30 s,
and a 100 s question fed as one item would silently keep its first 30 s. Here every clip is split instead:

* a clip of n samples (16 kHz) becomes consecutive windows of 480,000 samples (30 s), the last holding the rest;
  a rest under 3 hops (480 samples) is zero-padded to that, since fewer frames give no encoder token;
* each window is an audio item of its own: the clip's ``<|audio_bos|><|AUDIO|><|audio_eos|>`` segment in the
  prompt becomes one segment per window, adjacent, in order (the template's "Audio N:" still labels the clip);
* a window of m samples has ceil(m / 160) frames and ``((f - 1) // 2 + 1 - 2) // 2 + 1`` placeholders: 25 per
  second; 100 s -> 750 * 3 + 250 = 2,500. Each window is featurized in its own 30 s frame, so its features and
  its encoder output do not depend on the other windows.

``WindowedQwen2AudioProcessor`` applies the rule in every call (verl's prompt building, its multimodal inputs,
the dataset's length filter) and saves as the stock class; ``windows`` and ``clip_tokens`` serve the rollouts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import Qwen2AudioProcessor

from verl_audio.models.audio_features import CachingWhisperFeatureExtractor

logger = logging.getLogger(__name__)

SAMPLING_RATE, HOP = 16_000, 160
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLING_RATE
MIN_WINDOW_SAMPLES = 3 * HOP
_logged_lengths: set[int] = set()


def window_frames(num_samples: int) -> int:
    """Mel frames marked for a window of ``num_samples`` (at most 30 s): ceil(n / 160)."""
    return min(-(-num_samples // HOP), WINDOW_SAMPLES // HOP)


def window_tokens(frames: int) -> int:
    """Placeholders of a window of ``frames`` marked mel frames."""
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def windows(clip: Any) -> list[np.ndarray]:
    """A clip as consecutive windows of at most 30 s (module doc); logs each new clip length that is split."""
    x = np.asarray(clip, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise ValueError("empty audio clip")
    parts = [x[i : i + WINDOW_SAMPLES] for i in range(0, x.size, WINDOW_SAMPLES)]
    if parts[-1].size < MIN_WINDOW_SAMPLES:
        parts[-1] = np.pad(parts[-1], (0, MIN_WINDOW_SAMPLES - parts[-1].size))
    if len(parts) > 1 and x.size not in _logged_lengths:
        _logged_lengths.add(x.size)
        logger.info("Qwen2-Audio: a %.2f s clip enters as %d consecutive audio windows of at most %d s",
                    x.size / SAMPLING_RATE, len(parts), WINDOW_SECONDS)
    return parts


def clip_tokens(num_samples: int) -> int:
    """Placeholders of a whole clip of ``num_samples``: the sum over its windows."""
    full, rest = divmod(num_samples, WINDOW_SAMPLES)
    tokens = full * window_tokens(WINDOW_SAMPLES // HOP)
    if rest or not full:
        tokens += window_tokens(window_frames(max(rest, MIN_WINDOW_SAMPLES)))
    return tokens


class WindowedQwen2AudioProcessor(Qwen2AudioProcessor):
    """The stock processor with every clip split into windows and its prompt segment repeated per window.

    Text whose segments already match the windows (a prompt expanded before) is taken as it is; text with no
    segment at all (verl decodes prompts without special tokens before computing multimodal inputs) gets the
    windows' features only.
    """

    def __call__(self, text: Any = None, audio: Any = None, **kwargs: Any) -> Any:
        if audio is None:
            return super().__call__(text=text, **kwargs)
        clips = [audio] if isinstance(audio, np.ndarray) and audio.ndim == 1 else list(audio)
        per_clip = [windows(c) for c in clips]
        flat = [w for ws in per_clip for w in ws]
        texts = [text] if isinstance(text, str) else list(text or [])
        segment = self.audio_bos_token + self.audio_token + self.audio_eos_token
        found = sum(t.count(segment) for t in texts)
        if found == len(clips) and found != len(flat):
            texts = _expand_segments(texts, segment, [len(ws) for ws in per_clip])
        elif found not in (0, len(flat)):
            raise ValueError(f"{found} audio segments in the prompt for {len(clips)} clips ({len(flat)} windows)")
        kwargs.pop("sampling_rate", None)
        audio_kwargs = {**(kwargs.pop("audio_kwargs", None) or {}), "truncation": False}
        if found == 0:  # the stock processor refuses audio without segments: the text alone, the features beside
            out = self.tokenizer(texts, **{k: v for k, v in kwargs.items() if k in ("return_tensors", "padding")})
            features = self.feature_extractor(flat, sampling_rate=SAMPLING_RATE, padding="max_length",
                                              return_attention_mask=True, return_tensors=kwargs.get("return_tensors"),
                                              **audio_kwargs)
            out["input_features"] = features["input_features"]
            out["feature_attention_mask"] = features["attention_mask"]
            return out
        return super().__call__(text=texts, audio=flat, sampling_rate=SAMPLING_RATE, audio_kwargs=audio_kwargs,
                                **kwargs)

    @classmethod
    def from_processor(cls, processor: Qwen2AudioProcessor) -> WindowedQwen2AudioProcessor:
        if isinstance(processor, cls):
            return processor
        # verl's agent loop featurizes each clip 2 x rollout.n times per step; padded to 30 s, each call is costly
        return cls(feature_extractor=CachingWhisperFeatureExtractor.from_extractor(processor.feature_extractor),
                   tokenizer=processor.tokenizer, chat_template=processor.chat_template)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "processor_class": Qwen2AudioProcessor.__name__}

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> Any:
        stock = Qwen2AudioProcessor(feature_extractor=self.feature_extractor, tokenizer=self.tokenizer,
                                    chat_template=self.chat_template)
        return stock.save_pretrained(save_directory, **kwargs)


def _expand_segments(texts: Sequence[str], segment: str, counts: Sequence[int]) -> list[str]:
    """Each text's i-th audio segment repeated ``counts[i]`` times (segments numbered across the texts)."""
    out, index = [], 0
    for text in texts:
        parts = text.split(segment)
        pieces = [parts[0]]
        for rest in parts[1:]:
            pieces.append(segment * counts[index] + rest)
            index += 1
        out.append("".join(pieces))
    return out
