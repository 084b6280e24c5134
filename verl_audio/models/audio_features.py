"""Whole-length audio features for Qwen2.5-Omni: the one place that decides the processor's audio kwargs.

Stock behaviour (transformers 5.10): ``Qwen2_5OmniProcessor.__call__`` forces ``padding="max_length"``
on the Whisper feature extractor, whose ``max_length`` defaults to ``n_samples`` (``chunk_length`` = 30 s)
and whose ``truncation`` defaults to True, so a 90 s clip is silently cut to 30 s and a 10 s clip is
padded to 30 s. Placeholder counts follow ``feature_attention_mask``, so they always match what the audio
encoder produces; the problem is only which audio survives.

What we do, by configuration only (no transformers class is patched):

* ``audio_processor_kwargs(audios)``: ``{"sampling_rate": sr, "audio_kwargs": {"truncation": False,
  "max_length": longest clip}}``: nothing is cut and clips are padded only to the longest clip of the
  call (a single clip is not padded at all). Without ``audios`` it returns the static form (no
  ``max_length``): nothing is cut, clips are padded to ``n_samples``. Never pass ``max_length`` or
  ``truncation`` as top-level processor kwargs: they would reach the tokenizer too.
* ``prepare_omni_processor(processor)``: for calls with default kwargs: raises the extractor's
  ``chunk_length`` (hence ``n_samples``) to at least ``MAX_AUDIO_SECONDS`` and turns audio truncation off
  through the tokenizer's init kwargs (the processor takes modality defaults from them; text truncation is
  off by default anyway), so default calls pad to ``n_samples`` but never cut. ``chunk_length`` is also
  what serving engines read as the longest clip to budget for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, Qwen2_5OmniProcessor, Qwen2VLImageProcessorPil, WhisperFeatureExtractor
from transformers.utils import PushToHubMixin, is_torchvision_available

SAMPLING_RATE = 16_000
HOP_LENGTH = 160  # mel frames: 100 per second
AUDIO_TOKENS_PER_SECOND = 25  # conv1 (stride 1) -> conv2 (stride 2) -> avg-pool (stride 2)
MAX_AUDIO_SECONDS = 120  # ALR questions are 40-110 s


def audio_placeholder_count(feature_frames: int) -> int:
    """<|AUDIO|> placeholders (= audio-encoder outputs) for ``feature_frames`` mel frames."""
    after_conv = (feature_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def audio_tokens_for_samples(num_samples: int) -> int:
    """Placeholders for one clip of ``num_samples`` at 16 kHz processed unpadded (``audio_processor_kwargs``)."""
    return audio_placeholder_count(num_samples // HOP_LENGTH)


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


def audio_processor_kwargs(
    audios: Sequence[np.ndarray] | None = None, *, sampling_rate: int = SAMPLING_RATE
) -> dict[str, Any]:
    """Kwargs for ``processor(text=..., audio=audios, **kwargs)`` that keep every clip whole (see module doc)."""
    audio_kwargs: dict[str, Any] = {"truncation": False, "return_attention_mask": True}
    if audios:
        longest = max(len(np.asarray(a).reshape(-1)) for a in audios)
        if longest == 0:
            raise ValueError("empty audio clip")
        audio_kwargs["max_length"] = longest
    return {"sampling_rate": sampling_rate, "audio_kwargs": audio_kwargs}


#: the static form, for configs that cannot see the clips (e.g. verl's ``mm_processor_kwargs``)
WHOLE_AUDIO_KWARGS: dict[str, Any] = audio_processor_kwargs()


def whole_audio_feature_extractor(max_seconds: int = MAX_AUDIO_SECONDS) -> WhisperFeatureExtractor:
    """Qwen2.5-Omni's Whisper extractor (128 mels, 16 kHz, hop 160) with a ``max_seconds`` window."""
    return WhisperFeatureExtractor(
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


def prepare_omni_processor(processor: Any, *, max_seconds: int | None = None) -> Any:
    """Make ``processor`` keep whole clips with default kwargs (in place; returns it). See module doc."""
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
    disable_audio_truncation(processor.tokenizer)
    return processor


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
    """Load a Qwen2.5-Omni processor from a local directory and (unless ``prepare=False``) prepare it.

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
