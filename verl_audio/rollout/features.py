"""Audio of a request -> log-mel features per clip, cached by the clip's content.

verl repeats each prompt ``rollout.n`` times before generation and sends every copy separately, so
the same clip arrives n times. Features are keyed by a hash of the clip's samples and kept in a small
LRU: the extractor runs once per distinct clip. Features come from ``extract_audio_features``, the
project's one definition of a clip's features, which verl's processor calls use as well: the frames, the
``<|AUDIO|>`` count and every feature value equal what the actor recomputes. A prompt whose placeholder
count differs raises instead of feeding the model misaligned audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from verl_audio.content_cache import LRUCache, audio_key
from verl_audio.data.decode import to_array
from verl_audio.models.audio_features import (
    CachingWhisperFeatureExtractor,
    check_audio_placeholders,
    extract_audio_features,
)
from verl_audio.models.clips import ClipFeatures


class AudioFeaturizer:
    """Computes (or recalls) each clip's features with the checkpoint's Whisper feature extractor."""

    def __init__(self, feature_extractor: Any, audio_token_id: int, cache_size: int = 128) -> None:
        # this class keeps its own per-clip LRU: a caching extractor would hold every clip a second time
        self.feature_extractor = CachingWhisperFeatureExtractor.uncached(feature_extractor)
        self.audio_token_id = audio_token_id
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.cache: LRUCache[ClipFeatures] = LRUCache(cache_size)

    def _compute(self, samples: np.ndarray, key: str) -> ClipFeatures:
        out = extract_audio_features(self.feature_extractor, [samples], sampling_rate=self.sampling_rate)
        frames = int(out["feature_attention_mask"][0].sum())
        return ClipFeatures(key=key, features=out["input_features"][0, :, :frames].float().contiguous())

    def clip(self, audio: Any) -> ClipFeatures:
        """Features of one clip (an array at the extractor's rate, a path, or a datasets-style dict)."""
        samples = to_array(audio, self.sampling_rate)
        key = audio_key(samples)
        return self.cache.get_or_compute(key, lambda: self._compute(samples, key))

    def prepare(
        self, prompt_ids: Sequence[int], audio_data: Sequence[Any] | None, sampling_rate: int | None = None
    ) -> list[ClipFeatures]:
        """The clips of one request, checked against the prompt's ``<|AUDIO|>`` count."""
        if sampling_rate is not None and int(sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"audio sampling_rate {sampling_rate} differs from the feature extractor's {self.sampling_rate}: "
                "resample the audio before generation"
            )
        clips = [self.clip(audio) for audio in (audio_data or [])]
        ids = torch.as_tensor(list(prompt_ids), dtype=torch.long)
        mask = torch.zeros(len(clips), max((c.frames for c in clips), default=0), dtype=torch.long)
        for row, c in enumerate(clips):
            mask[row, : c.frames] = 1
        check_audio_placeholders(ids, mask, self.audio_token_id)
        return clips
