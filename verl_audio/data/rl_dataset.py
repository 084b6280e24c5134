"""`AudioRLHFDataset`: verl's RLHFDataset with audio references loaded as 16 kHz arrays.

Select it with `data.custom_cls.path=pkg://verl_audio.data.rl_dataset data.custom_cls.name=AudioRLHFDataset`.

Rows carry audio as file paths (see `verl_audio.data.alr`). verl hands audio values to the processor
untouched, so they are loaded here, in `_extract_audio_info`, which both the agent loop (through
`process_multi_modal_info`) and the over-long-prompt filter call. A bad file raises `AudioError`
naming it. Over-long prompts are still dropped, but each is reported with its id and token length,
and an error while measuring a prompt stops construction instead of silently dropping the row.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import datasets
import numpy as np
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tokenizer import build_multimodal_processor_inputs, normalize_token_ids

from verl_audio.data.audio import TARGET_SR, AudioError, load_audio, resample

logger = logging.getLogger(__name__)

_LENGTH_COLUMN = "__prompt_length"


def to_array(audio: Any, sampling_rate: int = TARGET_SR) -> np.ndarray:
    """An audio reference -> mono float32 array at `sampling_rate`.

    Accepts a path (str or PathLike), a dict with "path", or a dict with "array" and "sampling_rate"
    (the Hugging Face datasets Audio layout); a bare array is taken to be at `sampling_rate` already.
    """
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio, sampling_rate)
    if isinstance(audio, dict):
        if audio.get("array") is not None:
            if audio.get("sampling_rate") is None:
                raise AudioError(audio.get("path") or "<array>", "audio array given without 'sampling_rate'")
            return resample(audio["array"], int(audio["sampling_rate"]), sampling_rate, audio.get("path") or "<array>")
        if audio.get("path"):
            return load_audio(audio["path"], sampling_rate)
        raise TypeError(f"audio dict needs 'path' or 'array' + 'sampling_rate', got keys {sorted(audio)}")
    if isinstance(audio, np.ndarray) or hasattr(audio, "numpy"):  # numpy array or torch tensor
        data = audio.numpy() if hasattr(audio, "numpy") else audio
        return resample(data, sampling_rate, sampling_rate)
    raise TypeError(f"unsupported audio reference of type {type(audio).__name__}: {audio!r:.80}")


class AudioRLHFDataset(RLHFDataset):
    """RLHFDataset whose audio references (paths, dicts) become 16 kHz float32 arrays when extracted."""

    #: (id, token length) of each prompt dropped as over-long by the last filter run
    dropped_overlong: list[tuple[str, int]]

    @classmethod
    def _extract_audio_info(cls, messages: list[dict]) -> list[np.ndarray] | None:
        audios = super()._extract_audio_info(messages)
        if audios is None:
            return None
        return [to_array(audio, TARGET_SR) for audio in audios]

    def _read_files_and_tokenize(self) -> None:
        super()._read_files_and_tokenize()
        # verl would only fail at the first __getitem__, with a bare assert; say it up front
        if self.processor is None and self.audio_key in self.dataframe.column_names:
            with_audio = sum(1 for audios in self.dataframe[self.audio_key] if audios)
            if with_audio:
                raise ValueError(
                    f"{with_audio} of {len(self.dataframe)} rows in {self.data_files} carry audio "
                    f"('{self.audio_key}'), but no processor was given: use an audio model's processor"
                )

    def maybe_filter_out_long_prompts(self, dataframe: datasets.Dataset = None) -> datasets.Dataset:
        """Drop prompts longer than `max_prompt_length`, reporting each (id, tokens); errors propagate."""
        self.dropped_overlong = []
        if not self.filter_overlong_prompts:
            return dataframe
        measured = dataframe.map(
            lambda doc, idx: {_LENGTH_COLUMN: self._prompt_length(doc, idx)},
            with_indices=True,
            # one worker: measure in this process (datasets would start a pool of one)
            num_proc=self.num_workers if self.num_workers and self.num_workers > 1 else None,
            remove_columns=dataframe.column_names,
            desc=f"Measuring prompts against max_prompt_length={self.max_prompt_length}",
        )
        lengths = measured[_LENGTH_COLUMN]
        keep = [i for i, n in enumerate(lengths) if n <= self.max_prompt_length]
        for i, n in enumerate(lengths):
            if n > self.max_prompt_length:
                row_id = _row_id(dataframe[i], i)
                self.dropped_overlong.append((row_id, n))
                logger.warning("dropping over-long prompt: id=%s tokens=%d > %d", row_id, n, self.max_prompt_length)
        if self.dropped_overlong:
            logger.warning(
                "dropped %d of %d prompts longer than %d tokens (ids: %s)",
                len(self.dropped_overlong),
                len(lengths),
                self.max_prompt_length,
                ", ".join(rid for rid, _ in self.dropped_overlong[:20]),
            )
        return dataframe.select(keep) if len(keep) < len(lengths) else dataframe

    def _prompt_length(self, doc: dict, idx: int) -> int:
        """Token length of one row's prompt, computed as verl's own filter does, minus its `except`."""
        try:
            return self._measure(doc)
        except AudioError:
            raise  # already names the file
        except Exception as e:
            raise RuntimeError(f"cannot measure the prompt of row id={_row_id(doc, idx)}: {e}") from e

    def _measure(self, doc: dict) -> int:
        apply_kwargs = dict(**self.apply_chat_template_kwargs)
        if self.tool_schemas is not None:
            apply_kwargs["tools"] = self.tool_schemas
        if self.processor is None:
            for key in ("tokenize", "return_dict", "return_tensors"):
                apply_kwargs.pop(key, None)
            ids = self.tokenizer.apply_chat_template(
                doc[self.prompt_key], add_generation_prompt=True, tokenize=True, **apply_kwargs
            )
            return len(normalize_token_ids(ids))
        messages = self._build_messages(doc, key=self.prompt_key)
        raw_prompt = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **apply_kwargs
        )
        images, videos, audios = self._process_multi_modal_info(messages, self.image_patch_size, self.config)
        if images is None and videos is None and audios is None:
            ids = self.processor.tokenizer(text=raw_prompt, add_special_tokens=False, return_attention_mask=False)
            return len(ids["input_ids"])
        inputs = build_multimodal_processor_inputs(
            self.processor,
            text=[raw_prompt],
            images=images,
            videos=videos,
            audio=audios,
            mm_processor_kwargs=self.mm_processor_kwargs,
        )
        return len(inputs["input_ids"][0])


def _row_id(doc: dict, idx: int) -> str:
    extra = doc.get("extra_info") or {}
    rid = extra.get("id") if isinstance(extra, dict) else None
    return str(rid) if rid is not None else f"#{idx}"
