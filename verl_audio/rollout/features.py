"""Audio of a request -> log-mel features per audio item, cached by the item's content.

verl repeats each prompt ``rollout.n`` times before generation and sends every copy separately, so
the same clip arrives n times. Features are keyed by a hash of the samples and kept in a small
LRU: the extractor runs once per distinct item. A clip is one item, or consecutive windows for a family that
caps an item's length (Qwen2-Audio: 30 s). Features come from the family's ``extract`` (the project's one
definition of an item's features, which verl's processor calls use as well): the frames, the placeholder
count and every feature value equal what the actor recomputes. A prompt whose placeholder count differs
raises instead of feeding the model misaligned audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from verl_audio.content_cache import LRUCache, audio_key
from verl_audio.data.decode import to_array
from verl_audio.models.audio_features import CachingWhisperFeatureExtractor
from verl_audio.models.clips import ClipFeatures


class AudioFeaturizer:
    """Computes (or recalls) each audio item's features with the checkpoint's Whisper feature extractor."""

    def __init__(self, family: Any, feature_extractor: Any, audio_token_id: int, cache_size: int = 128) -> None:
        # this class keeps its own per-item LRU: a caching extractor would hold every clip a second time
        self.family = family
        self.feature_extractor = CachingWhisperFeatureExtractor.uncached(feature_extractor)
        self.audio_token_id = audio_token_id
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.cache: LRUCache[ClipFeatures] = LRUCache(cache_size)

    def _compute(self, samples: np.ndarray, key: str) -> ClipFeatures:
        features, frames = self.family.extract(self.feature_extractor, samples)
        return ClipFeatures(key=key, features=features, frames=frames, tokens=self.family.item_tokens(frames))

    def clip(self, audio: Any) -> list[ClipFeatures]:
        """The items of one clip (an array at the extractor's rate, a path, or a datasets-style dict)."""
        items = []
        for window in self.family.windows(to_array(audio, self.sampling_rate)):
            key = audio_key(window)
            items.append(self.cache.get_or_compute(key, lambda w=window, k=key: self._compute(w, k)))
        return items

    def prepare(
        self, prompt_ids: Sequence[int], audio_data: Sequence[Any] | None, sampling_rate: int | None = None
    ) -> list[ClipFeatures]:
        """The audio items of one request, in order, checked against the prompt's placeholder count."""
        if sampling_rate is not None and int(sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"audio sampling_rate {sampling_rate} differs from the feature extractor's {self.sampling_rate}: "
                "resample the audio before generation"
            )
        items = [item for audio in (audio_data or []) for item in self.clip(audio)]
        have = sum(1 for t in prompt_ids if int(t) == self.audio_token_id)
        want = sum(item.tokens for item in items)
        if have != want:
            raise ValueError(f"{have} audio placeholders in the prompt but its {len(items)} audio item(s) give {want}")
        return items
