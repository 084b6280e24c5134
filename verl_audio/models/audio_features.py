"""Whole, unpadded audio features for Qwen2.5-Omni: the one place that decides how clips become features.

Stock behaviour (transformers 5.10): ``Qwen2_5OmniProcessor.__call__`` forces ``padding="max_length"``
on the Whisper feature extractor, whose ``max_length`` defaults to ``n_samples`` (``chunk_length`` = 30 s)
and whose ``truncation`` defaults to True, so a 90 s clip is silently cut to 30 s and a 10 s clip is
padded to 30 s. Placeholder counts follow ``feature_attention_mask``, so they always match what the audio
encoder produces; the problem is which audio survives and how much padding travels with it.

One definition of "the features of these clips", used by every path (verl's processor calls, the rollout):

* each call zero-pads its clips to ``padded_audio_length(longest clip)`` samples, truncation off: nothing
  is cut, and a clip's features (to the last bit) do not depend on the other clips of the call, nor on
  any longer padding such as the 120 s window (see ``padded_audio_length``);
* a clip of n samples gets ``audio_frames(n)`` = ceil(n / 160) mel frames (what ``feature_attention_mask``
  marks) and ``audio_placeholder_count`` of them become ``<|AUDIO|>`` tokens (25 per second);
* ``input_features`` / ``feature_attention_mask`` are cut to the frames of the longest clip of the call:
  padding only ever comes from batching clips of different lengths.

Entry points:

* ``WholeAudioOmniProcessor``: what ``load_omni_processor`` (and so verl's ``hf_processor``) returns. Its
  ``__call__`` applies the rule whatever audio kwargs the caller passes (verl passes only ``sampling_rate``);
  it saves and reports itself as the stock ``Qwen2_5OmniProcessor``.
* ``extract_audio_features(feature_extractor, clips)``: the same features without text (the rollout).
* ``audio_processor_kwargs(audios)``: the per-call kwargs the rule amounts to, for a stock processor.
* ``prepare_omni_processor(processor)``: also makes the checkpoint's own defaults keep whole clips
  (``chunk_length`` >= ``MAX_AUDIO_SECONDS``, audio truncation off through the tokenizer's init kwargs),
  so a saved processor loaded by stock transformers never cuts audio; ``chunk_length`` is also what
  serving engines read as the longest clip to budget for. Its feature extractor is a
  ``CachingWhisperFeatureExtractor``: verl's agent loop featurizes each clip twice per rollout request and
  once per copy of ``rollout.n``; the extractor computes each distinct call once.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import (
    AutoTokenizer,
    BatchFeature,
    Qwen2_5OmniProcessor,
    Qwen2VLImageProcessorPil,
    WhisperFeatureExtractor,
)
from transformers.utils import PushToHubMixin, is_torchvision_available

from verl_audio.content_cache import LRUCache, audio_key

SAMPLING_RATE = 16_000
HOP_LENGTH = 160  # mel frames: 100 per second
AUDIO_TOKENS_PER_SECOND = 25  # conv1 (stride 1) -> conv2 (stride 2) -> avg-pool (stride 2)
MAX_AUDIO_SECONDS = 120  # ALR questions are 40-110 s
#: zero hops past a clip's last frame that make its frames independent of any further padding
_GUARD_HOPS = 2
#: narrowest padded call, in frames: on CPU the extractor's mel projection of fewer than ~10 frames takes
#: another matmul kernel, whose last bits differ from a wide call's (the padding is cut off afterwards)
_MIN_FRAMES = 16


def audio_placeholder_count(feature_frames: int) -> int:
    """<|AUDIO|> placeholders (= audio-encoder outputs) for ``feature_frames`` mel frames."""
    after_conv = (feature_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def audio_frames(num_samples: int) -> int:
    """Mel frames of a clip of ``num_samples`` (what ``feature_attention_mask`` marks): ceil(n / 160)."""
    if num_samples <= 0:
        raise ValueError("empty audio clip")
    return -(-num_samples // HOP_LENGTH)


def padded_audio_length(num_samples: int) -> int:
    """Samples a call zero-pads its clips to when its longest clip has ``num_samples``.

    The extractor's STFT is centred (a 400-sample window, reflect padding at both ends of the padded
    signal) and its log-mel floor is the spectrogram's maximum minus 8. With two hops of zeros past a
    clip's last marked frame, the marked frames see only the clip and zeros (the reflected tail is zeros
    too) and every later frame is silence, which cannot raise the maximum; so a clip's features are the
    same for this padding and for any longer one (the 120 s window, a longer clip in the same call).
    Padding to exactly n samples would instead mark floor(n / 160) frames and reflect the clip's end.
    Calls are at least ``_MIN_FRAMES`` wide, so that even the shortest clips take the same arithmetic.
    """
    return max(audio_frames(num_samples) + _GUARD_HOPS, _MIN_FRAMES) * HOP_LENGTH


def audio_tokens_for_samples(num_samples: int) -> int:
    """Placeholders for one clip of ``num_samples`` at 16 kHz."""
    return audio_placeholder_count(audio_frames(num_samples))


def expected_audio_tokens(feature_attention_mask: torch.Tensor) -> list[int]:
    """Per-clip placeholder counts implied by a processor's ``feature_attention_mask`` (clips x frames)."""
    return [audio_placeholder_count(int(n)) for n in feature_attention_mask.sum(-1).tolist()]


def check_audio_placeholders(input_ids: torch.Tensor, feature_attention_mask: torch.Tensor, audio_token_id: int) -> int:
    """Raise if the <|AUDIO|> count in ``input_ids`` differs from what the encoder will produce; return it."""
    have = int((input_ids == audio_token_id).sum())
    want = sum(expected_audio_tokens(feature_attention_mask))
    if have != want:
        raise ValueError(f"{have} <|AUDIO|> placeholders in input_ids but the audio encoder yields {want}")
    return have


def clip_lengths(audio: Any) -> list[int]:
    """Samples per clip of a processor's ``audio`` argument (one clip or a batch, read as Whisper's extractor does)."""
    if isinstance(audio, np.ndarray) and audio.ndim > 1:
        clips = list(audio)
    elif isinstance(audio, (list, tuple)) and len(audio) > 0 and isinstance(audio[0], (np.ndarray, list, tuple)):
        clips = list(audio)
    elif isinstance(audio, (list, tuple)) and len(audio) == 0:
        raise ValueError("no audio clips")
    else:
        clips = [audio]
    return [int(np.asarray(clip).size) for clip in clips]


def whole_audio_kwargs(audio: Any) -> dict[str, Any]:
    """The audio kwargs of the whole-audio rule for the clips in ``audio`` (see module doc)."""
    return {
        "max_length": padded_audio_length(max(clip_lengths(audio))),
        "truncation": False,
        "return_attention_mask": True,
    }


def audio_processor_kwargs(audios: Any = None, *, sampling_rate: int = SAMPLING_RATE) -> dict[str, Any]:
    """Kwargs for ``processor(text=..., audio=audios, **kwargs)`` that apply the whole-audio rule.

    ``WholeAudioOmniProcessor`` applies them by itself; this is for stock processors and feature extractors.
    Without ``audios`` it returns the static form (no ``max_length``): nothing is cut, but a stock processor
    pads to ``n_samples``. ``max_length`` and ``truncation`` are never top-level: they would reach the
    tokenizer too.
    """
    if audios is None:
        audio_kwargs: dict[str, Any] = {"truncation": False, "return_attention_mask": True}
    else:
        audio_kwargs = whole_audio_kwargs(audios)
    return {"sampling_rate": sampling_rate, "audio_kwargs": audio_kwargs}


def _cut(value: Any, frames: int) -> Any:
    if hasattr(value, "shape"):  # torch / numpy
        return value[..., :frames]
    return [np.asarray(v)[..., :frames] for v in value]  # return_tensors=None may give a list of arrays


def cut_to_marked_frames(features: Any) -> Any:
    """Drop the trailing frames that no clip marks, from ``input_features`` and its mask (in place; returns it).

    The guard hops of ``padded_audio_length`` (and any ``pad_to_multiple_of``) leave unmarked frames after the
    longest clip; the thinker ignores them, so they are only memory.
    """
    mask_key = "feature_attention_mask" if "feature_attention_mask" in features else "attention_mask"
    frames = int(np.asarray(features[mask_key]).sum(-1).max())
    for key in ("input_features", mask_key):
        features[key] = _cut(features[key], frames)
    return features


def extract_audio_features(feature_extractor: Any, audios: Any, *, sampling_rate: int | None = None) -> BatchFeature:
    """``input_features`` (clips, mels, frames) and ``feature_attention_mask`` (clips, frames) of ``audios``.

    Exactly what ``WholeAudioOmniProcessor`` puts into a call with these clips: padded to the longest clip
    (``padding="max_length"``, as the Omni processor always asks), cut to its marked frames.
    """
    sr = int(feature_extractor.sampling_rate if sampling_rate is None else sampling_rate)
    out = feature_extractor(
        audios, sampling_rate=sr, padding="max_length", return_tensors="pt", **whole_audio_kwargs(audios)
    )
    features = BatchFeature({"input_features": out["input_features"], "feature_attention_mask": out["attention_mask"]})
    return cut_to_marked_frames(features)


def _whole_audio_call_kwargs(kwargs: Mapping[str, Any], audio: Any) -> dict[str, Any]:
    """A processor call's ``kwargs`` with the whole-audio audio kwargs forced in.

    A flat kwarg reaches every modality that takes it, and the processor refuses one that is also in
    ``audio_kwargs``: flat ``max_length`` / ``truncation`` / ``return_attention_mask`` are meant for the
    text, so they move to ``text_kwargs``.
    """
    kwargs = dict(kwargs)
    forced = whole_audio_kwargs(audio)
    kwargs["audio_kwargs"] = {**(kwargs.get("audio_kwargs") or {}), **forced}
    text_kwargs = dict(kwargs.get("text_kwargs") or {})
    for key in forced:
        if key in kwargs:
            if key in text_kwargs:
                raise ValueError(f"{key!r} passed both as a keyword and in text_kwargs")
            text_kwargs[key] = kwargs.pop(key)
    if text_kwargs:
        kwargs["text_kwargs"] = text_kwargs
    return kwargs


class WholeAudioOmniProcessor(Qwen2_5OmniProcessor):
    """``Qwen2_5OmniProcessor`` whose calls keep every clip whole and pad only to the longest clip of the call.

    Whatever audio kwargs a caller passes (verl passes only ``sampling_rate``), ``max_length``,
    ``truncation`` and ``return_attention_mask`` follow the whole-audio rule, and the features are cut to
    the longest clip's frames. Everything else is the stock processor.
    """

    def __call__(self, text: Any = None, images: Any = None, videos: Any = None, audio: Any = None, **kwargs: Any):
        if audio is None:
            return super().__call__(text=text, images=images, videos=videos, **kwargs)
        kwargs = _whole_audio_call_kwargs(kwargs, audio)
        return cut_to_marked_frames(super().__call__(text=text, images=images, videos=videos, audio=audio, **kwargs))

    @classmethod
    def from_processor(cls, processor: Qwen2_5OmniProcessor) -> WholeAudioOmniProcessor:
        """The same parts (shared, not copied) behind this class's ``__call__``."""
        if isinstance(processor, cls):
            return processor
        return cls(
            image_processor=processor.image_processor,
            video_processor=processor.video_processor,
            feature_extractor=processor.feature_extractor,
            tokenizer=processor.tokenizer,
            chat_template=processor.chat_template,
        )

    def to_dict(self) -> dict[str, Any]:
        # saved configs name the stock class, so a checkpoint reloads with stock transformers
        return {**super().to_dict(), "processor_class": Qwen2_5OmniProcessor.__name__}

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> Any:
        """Saved as the stock processor (ProcessorMixin writes the saving class's name into
        tokenizer_config.json too), with the stock Whisper extractor's settings."""
        stock = Qwen2_5OmniProcessor(
            image_processor=self.image_processor,
            video_processor=self.video_processor,
            feature_extractor=CachingWhisperFeatureExtractor.uncached(self.feature_extractor),
            tokenizer=self.tokenizer,
            chat_template=self.chat_template,
        )
        return stock.save_pretrained(save_directory, **kwargs)


#: results a ``CachingWhisperFeatureExtractor`` keeps (per extractor; 0 turns the cache off). Each holds
#: ~51 KB per second of audio: 64 results of 100 s clips are ~330 MB.
FEATURE_CACHE_SIZE = int(os.environ.get("VERL_AUDIO_FEATURE_CACHE", "64"))
#: keyword values a cached call may carry (anything else, e.g. a device object, is computed uncached)
_KEYABLE = (str, int, float, bool, type(None))
_CACHES: weakref.WeakKeyDictionary[Any, LRUCache[BatchFeature]] = weakref.WeakKeyDictionary()


def _feature_call_key(raw_speech: Any, kwargs: Mapping[str, Any]) -> str | None:
    """A key naming the clips (by content) and the options of one extractor call; None when not keyable."""
    if not all(isinstance(v, _KEYABLE) for v in kwargs.values()):
        return None
    if isinstance(raw_speech, np.ndarray) and raw_speech.ndim == 1:
        clips = [raw_speech]
    elif isinstance(raw_speech, (list, tuple)) and raw_speech and all(isinstance(c, np.ndarray) for c in raw_speech):
        clips = list(raw_speech)
    else:  # lists of floats and the like: rare, and hashing them would cost what extracting does
        return None
    return "|".join([audio_key(c) for c in clips] + [repr(sorted(kwargs.items()))])


def _copy_features(features: BatchFeature) -> BatchFeature:
    """A copy whose tensors / arrays callers may change without touching the cached result."""
    data = {}
    for key, value in features.items():
        if isinstance(value, torch.Tensor):
            data[key] = value.clone()
        elif isinstance(value, np.ndarray):
            data[key] = value.copy()
        elif isinstance(value, list):
            data[key] = [v.copy() if isinstance(v, np.ndarray) else v for v in value]
        else:
            data[key] = value
    return BatchFeature(data)


class CachingWhisperFeatureExtractor(WhisperFeatureExtractor):
    """``WhisperFeatureExtractor`` that computes each distinct call (same clips, same options) once.

    verl's agent loop calls the processor twice per rollout request (prompt tokens, then the multimodal
    inputs) and handles each copy of ``rollout.n`` on its own: the same clip is featurized 2n times per step.
    Results are kept in an LRU of ``FEATURE_CACHE_SIZE`` calls, keyed by a hash of the samples and the call's
    options, and every caller gets its own copy. Calls with dither (random by design) are not cached.
    The cache lives outside the instance, so saving, pickling and ``to_dict`` see a plain Whisper extractor.
    """

    def __call__(self, raw_speech: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        key = None if args or getattr(self, "dither", 0.0) or FEATURE_CACHE_SIZE <= 0 else (
            _feature_call_key(raw_speech, kwargs))
        if key is None:
            return super().__call__(raw_speech, *args, **kwargs)
        cache = _CACHES.get(self)
        if cache is None:
            cache = _CACHES.setdefault(self, LRUCache(FEATURE_CACHE_SIZE))
        return _copy_features(cache.get_or_compute(key, lambda: super(CachingWhisperFeatureExtractor, self).__call__(
            raw_speech, **kwargs)))

    def to_dict(self) -> dict[str, Any]:
        # saved configs name the stock class, so stock transformers reloads them
        return {**super().to_dict(), "feature_extractor_type": WhisperFeatureExtractor.__name__}

    @staticmethod
    def uncached(extractor: Any) -> Any:
        """``extractor`` without this cache (a plain Whisper extractor, same settings), for callers with their own."""
        if isinstance(extractor, CachingWhisperFeatureExtractor):
            return WhisperFeatureExtractor.from_dict(extractor.to_dict())
        return extractor

    @classmethod
    def from_extractor(cls, extractor: WhisperFeatureExtractor) -> CachingWhisperFeatureExtractor:
        """The same settings behind this class (``extractor`` itself when it already is one)."""
        if isinstance(extractor, cls):
            return extractor
        return cls.from_dict(extractor.to_dict())



def whole_audio_feature_extractor(max_seconds: int = MAX_AUDIO_SECONDS) -> WhisperFeatureExtractor:
    """Qwen2.5-Omni's Whisper extractor (128 mels, 16 kHz, hop 160) with a ``max_seconds`` window."""
    return CachingWhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=SAMPLING_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=max_seconds,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=True,
    )


def disable_audio_truncation(tokenizer: Any) -> None:
    """Make Omni processor calls default to ``truncation=False`` for audio (persisted by ``save_pretrained``).

    ``Qwen2_5OmniProcessor._merge_kwargs`` takes every modality's defaults from the tokenizer's init kwargs;
    text truncation is already off by default, so only audio changes.
    """
    tokenizer.init_kwargs["truncation"] = False


def prepare_omni_processor(processor: Any, *, max_seconds: int | None = None) -> WholeAudioOmniProcessor:
    """``processor``'s parts behind ``WholeAudioOmniProcessor``, with whole-clip defaults (module doc).

    The parts are changed in place and shared with ``processor``; its feature extractor is replaced by a
    ``CachingWhisperFeatureExtractor`` with the same settings (on ``processor`` too).
    """
    fe = getattr(processor, "feature_extractor", None)
    if not isinstance(fe, WhisperFeatureExtractor):
        raise TypeError(f"expected a processor with a WhisperFeatureExtractor, got {type(fe).__name__}")
    if fe.sampling_rate != SAMPLING_RATE or fe.hop_length != HOP_LENGTH:
        raise ValueError(f"unexpected extractor geometry: sr={fe.sampling_rate}, hop={fe.hop_length}")
    seconds = int(max_seconds if max_seconds is not None else max(fe.chunk_length, MAX_AUDIO_SECONDS))
    fe.chunk_length = seconds
    fe.n_samples = seconds * fe.sampling_rate
    fe.nb_max_frames = fe.n_samples // fe.hop_length
    fe.return_attention_mask = True
    processor.feature_extractor = CachingWhisperFeatureExtractor.from_extractor(fe)
    disable_audio_truncation(processor.tokenizer)
    return WholeAudioOmniProcessor.from_processor(processor)


# Without torchvision, `transformers.BaseVideoProcessor` is the placeholder class the processor checks against.
# PushToHubMixin: ProcessorMixin.to_dict serializes only parts that are PushToHubMixin instances.
class AudioOnlyVideoProcessor(transformers.BaseVideoProcessor, PushToHubMixin):  # type: ignore[misc,name-defined]
    """Stands in for Qwen2VLVideoProcessor where torchvision is missing: carries the merge geometry that
    the Omni processor reads even for audio-only calls, serializes as Qwen2VLVideoProcessor, refuses video."""

    _auto_class = None  # read by ProcessorMixin.save_pretrained

    def __init__(self, merge_size: int = 2, temporal_patch_size: int = 2, patch_size: int = 14) -> None:
        self.merge_size, self.temporal_patch_size, self.patch_size = merge_size, temporal_patch_size, patch_size
        self.model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("video input needs torchvision (Qwen2VLVideoProcessor), which is not installed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_processor_type": "Qwen2VLVideoProcessor",
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "patch_size": self.patch_size,
        }


def _chat_template(path: Path) -> str | None:
    """The processor chat template: chat_template.jinja (v5 layout) or chat_template.json (legacy)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    return None


def _assemble_without_torchvision(path: Path) -> Qwen2_5OmniProcessor:
    """The Omni processor from its parts, with a PIL image processor and ``AudioOnlyVideoProcessor``."""
    nested = (
        json.loads((path / "processor_config.json").read_text()) if (path / "processor_config.json").is_file() else {}
    )
    if "image_processor" in nested:  # v5 layout: one nested config per part
        image_cfg, video_cfg = nested["image_processor"], nested.get("video_processor", {})
    elif (path / "preprocessor_config.json").is_file():  # legacy layout: one flat file
        image_cfg = video_cfg = json.loads((path / "preprocessor_config.json").read_text())
    else:
        raise FileNotFoundError(f"no processor_config.json or preprocessor_config.json in {path}")
    image_keys = set(Qwen2VLImageProcessorPil.valid_kwargs.__annotations__) | {"min_pixels", "max_pixels"}
    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessorPil(**{k: v for k, v in image_cfg.items() if k in image_keys}),
        video_processor=AudioOnlyVideoProcessor(
            video_cfg.get("merge_size", 2), video_cfg.get("temporal_patch_size", 2)
        ),
        feature_extractor=WhisperFeatureExtractor.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        chat_template=_chat_template(path),
    )


def load_omni_processor(path: str | Path, *, max_seconds: int | None = None, prepare: bool = True) -> Any:
    """Load a Qwen2.5-Omni processor from a local directory: a ``WholeAudioOmniProcessor`` (see
    ``prepare_omni_processor``), or with ``prepare=False`` the stock processor exactly as the files say.

    With torchvision this is ``AutoProcessor.from_pretrained``. Without it, where ``AutoProcessor`` cannot
    load any Qwen2.5-Omni processor (its video processor needs torchvision), the same parts are assembled
    with a PIL image processor and ``AudioOnlyVideoProcessor`` (audio and text work; video is refused).
    """
    from transformers import AutoProcessor

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"not a local checkpoint directory: {path}")
    processor = (
        AutoProcessor.from_pretrained(path) if is_torchvision_available() else _assemble_without_torchvision(path)
    )
    return prepare_omni_processor(processor, max_seconds=max_seconds) if prepare else processor
