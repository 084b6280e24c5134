"""`AudioRLHFDataset`: verl's RLHFDataset with audio references loaded as 16 kHz arrays, and bad audio reported.

Select it with `data.custom_cls.path=pkg://verl_audio.data.rl_dataset data.custom_cls.name=AudioRLHFDataset`.

Rows carry audio as file paths (see `verl_audio.data.alr`). Every path is confined to the audio root
(`data.audio_root`, or the root the preparation recorded in the parquet: `verl_audio.data.confine`)
before it is opened, and decoded through the per-process cache of `verl_audio.data.decode_cache`
(keyed by path, size and mtime), by the agent loop (`process_multi_modal_info`) as by this class.

Bad audio (undecodable, outside the root, a duration that no longer matches `question_audio_seconds`,
and, with `reject_flagged_audio`, clipping / silent / over-long clips) is handled per
`verl_audio.data.bad_audio`:

* at construction, the over-long-prompt filter measures every row and reports every bad one in one pass;
  under `error` it raises one `BadAudioRows` listing them all; under `skip` they are reported and stay
  in the dataset (so its length, and a resumed data loader's position, do not change);
* when a row is drawn (`__getitem__`), its files are checked (a stat, and a decode only for a file
  version not seen before); a bad row is reported and, under `skip`, replaced by the next usable row
  (`on_skip="replace"`, training: batches stay full) or returned as None (`on_skip="drop"`,
  validation: `collate_skipping_bad` leaves it out). Under `error` it raises.

Over-long prompts are dropped, each reported with its id and token length; any other error while
measuring a prompt stops construction instead of silently dropping the row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
from verl.utils.tokenizer import build_multimodal_processor_inputs, normalize_token_ids

from verl_audio.data.audio import TARGET_SR, AudioError
from verl_audio.data.audio_quality import flag_kind
from verl_audio.data.bad_audio import BadAudioReport, BadAudioSettings
from verl_audio.data.confine import audio_roots, confine
from verl_audio.data.decode import to_array
from verl_audio.data.decode_cache import CACHE, file_key

logger = logging.getLogger(__name__)

_LENGTH_COLUMN = "__prompt_length"
_PROBLEM_COLUMN = "__audio_problem"
_WARNINGS_COLUMN = "__audio_warnings"
#: a decoded length this far from `question_audio_seconds` means the file changed after preparation
_DURATION_TOLERANCE_S = 0.05
_DURATION_TOLERANCE_FRACTION = 0.01


class BadAudioRows(AudioError):
    """Every bad row of a dataset at once (`.rows`: dicts with id, index, path, kind, reason)."""

    def __init__(self, rows: list[dict], source: str = "") -> None:
        self.rows = rows
        lines = "".join(f"\n  id={r['id']} (row {r['index']}) {r['path']}: {r['reason']}" for r in rows[:50])
        more = f"\n  ... and {len(rows) - 50} more" if len(rows) > 50 else ""
        super().__init__(rows[0]["path"], f"{len(rows)} rows of {source} have bad audio:{lines}{more}",
                         rows[0]["kind"])

    def __reduce__(self):
        return (type(self), (self.rows,))


class AudioRLHFDataset(RLHFDataset):
    """RLHFDataset whose audio references (paths, dicts) become 16 kHz float32 arrays, confined and checked."""

    #: (id, token length) of each prompt dropped as over-long by the last filter run
    dropped_overlong: list[tuple[str, int]]
    #: rows found bad at construction (dicts with id, index, path, kind, reason)
    bad_rows: list[dict]
    #: under `skip`, what `__getitem__` does with a bad row: "replace" (next usable row) or "drop" (None)
    on_skip: str = "replace"
    #: the training step rows are being drawn for (set by the trainer; recorded in bad_audio.jsonl)
    current_step: int | None = None
    #: the phase recorded in bad_audio.jsonl for rows drawn from this dataset ("train" / "val")
    phase: str = "train"

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples: int = -1) -> None:
        self.settings = BadAudioSettings.from_env()
        self.report = BadAudioReport(self.settings.report_dir)
        self.dropped_overlong, self.bad_rows = [], []
        super().__init__(data_files, tokenizer, config, processor=processor, max_samples=max_samples)

    # --- agent loop side: references -> arrays ---------------------------------------------------------

    @classmethod
    def _process_multi_modal_info(cls, messages: list[dict], image_patch_size, config) -> tuple:
        images, videos, audios = super()._process_multi_modal_info(messages, image_patch_size, config)
        if audios is None:
            return images, videos, None
        roots = audio_roots(config.get("audio_root"), _config_files(config))
        return images, videos, [to_array(audio, TARGET_SR, roots=roots) for audio in audios]

    # --- construction ------------------------------------------------------------------------------------

    def _read_files_and_tokenize(self) -> None:
        files = [os.fspath(f) for f in [*self.original_data_files, *self.data_files]]
        self.audio_roots = audio_roots(self.config.get("audio_root"), files)
        super()._read_files_and_tokenize()
        has_audio = self.audio_key in self.dataframe.column_names
        with_audio = sum(1 for audios in self.dataframe[self.audio_key] if audios) if has_audio else 0
        # verl would only fail at the first __getitem__, with a bare assert; say it up front
        if with_audio and self.processor is None:
            raise ValueError(
                f"{with_audio} of {len(self.dataframe)} rows in {self.data_files} carry audio "
                f"('{self.audio_key}'), but no processor was given: use an audio model's processor"
            )
        if with_audio and not self.audio_roots:
            raise ValueError(
                f"{with_audio} rows in {self.data_files} carry audio but no audio root is declared: set "
                "data.audio_root to the folder holding the audio (or prepare the data with "
                "examples/data_preprocess/alr.py, which records it); no audio outside it is ever opened"
            )

    def maybe_filter_out_long_prompts(self, dataframe: datasets.Dataset = None) -> datasets.Dataset:
        """Drop prompts longer than `max_prompt_length` (each reported: id, tokens); report every bad-audio
        row in one pass (module doc); other errors propagate."""
        self.dropped_overlong, self.bad_rows = [], []
        if not self.filter_overlong_prompts:
            return dataframe
        measured = dataframe.map(
            self._measure_row,
            with_indices=True,
            # one worker: measure in this process (datasets would start a pool of one)
            num_proc=self.num_workers if self.num_workers and self.num_workers > 1 else None,
            remove_columns=dataframe.column_names,
            new_fingerprint=self._measure_fingerprint(dataframe),
            desc=f"Measuring prompts against max_prompt_length={self.max_prompt_length}",
        )
        lengths = measured[_LENGTH_COLUMN]
        for i, (problem, warnings) in enumerate(zip(measured[_PROBLEM_COLUMN], measured[_WARNINGS_COLUMN],
                                                    strict=True)):
            if problem:
                self.bad_rows.append({"id": _row_id(dataframe[i], i), "index": i, **json.loads(problem)})
            for warning in json.loads(warnings or "[]"):
                self.report.warn({"id": _row_id(dataframe[i], i), "index": i, "phase": "dataset", **warning})
        if self.bad_rows:
            if self.settings.on_bad_audio == "error":
                raise BadAudioRows(self.bad_rows, ", ".join(map(str, self.data_files)))
            for row in self.bad_rows:
                self.report.bad({**row, "step": None, "phase": "dataset"})
            logger.warning("%d of %d rows have bad audio: reported, kept in place and replaced when drawn",
                           len(self.bad_rows), len(lengths))
        keep = [i for i, n in enumerate(lengths) if n <= self.max_prompt_length]  # bad rows measure -1
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

    def _measure_fingerprint(self, dataframe: datasets.Dataset) -> str:
        """The length cache's key: the rows, the limit, the policy and every audio file's size and mtime,
        so a file that changes after a first construction is measured (and checked) again."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{dataframe._fingerprint}|{self.max_prompt_length}|{self.settings}|{self.audio_roots}|"
                      f"{type(self.processor).__name__}|{self.mm_processor_kwargs}".encode())
        if self.audio_key in dataframe.column_names:
            for refs in dataframe[self.audio_key]:
                for ref in refs or []:
                    path = ref.get("path") if isinstance(ref, dict) else ref
                    try:
                        st = os.stat(path) if isinstance(path, str) else None
                        digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns};".encode() if st else b"-;")
                    except OSError:
                        digest.update(f"{path}|missing;".encode())
        return digest.hexdigest()

    def _measure_row(self, doc: dict, idx: int) -> dict:
        problem, warnings = None, []
        try:
            length = self._prompt_length(doc, idx, warnings)
        except AudioError as e:
            length, problem = -1, json.dumps(_problem(e))
        return {_LENGTH_COLUMN: length, _PROBLEM_COLUMN: problem, _WARNINGS_COLUMN: json.dumps(warnings)}

    def _prompt_length(self, doc: dict, idx: int, warnings: list | None = None) -> int:
        """Token length of one row's prompt, computed as verl's own filter does, minus its `except`."""
        try:
            return self._measure(doc, warnings if warnings is not None else [])
        except AudioError:
            raise  # already names the file
        except Exception as e:
            raise RuntimeError(f"cannot measure the prompt of row id={_row_id(doc, idx)}: {e}") from e

    # --- one row's audio -----------------------------------------------------------------------------------

    def _row_audio(self, doc: dict, warnings: list, want_samples: bool) -> list[np.ndarray]:
        """The row's clips (or none, with `want_samples=False`), confined and checked; AudioError if bad.
        Quality flags of usable clips are appended to `warnings` as {path, kind, reason, size, mtime_ns}."""
        refs = doc.get(self.audio_key) or []
        arrays = []
        for ref in refs:
            if isinstance(ref, dict) and ref.get("array") is not None:
                arrays.append(to_array(ref, TARGET_SR))
                continue
            path = ref.get("path") if isinstance(ref, dict) else ref
            real = confine(path, self.audio_roots)
            key = file_key(real)
            if want_samples:
                arrays.append(CACHE.load(real, TARGET_SR, keep=False))
            verdict = CACHE.verdict(key) or CACHE.check(real)
            if verdict.error is not None:
                raise verdict.error
            if len(refs) == 1:
                _check_duration(str(real), verdict.seconds, (doc.get("extra_info") or {}).get("question_audio_seconds"))
            for flag in verdict.flags:
                if self.settings.reject_flagged:
                    raise AudioError(real, flag, flag_kind(flag))
                warnings.append({"path": str(real), "kind": flag_kind(flag), "reason": flag, "size": key.size,
                                 "mtime_ns": key.mtime_ns})
        return arrays

    def __getitem__(self, item: int) -> dict | None:
        """verl's row dict, its audio confined and checked; a bad row is handled per `on_skip` (module doc)."""
        if self.audio_key not in self.dataframe.column_names:
            return super().__getitem__(item)
        index = item
        for _ in range(len(self)):
            doc = self.dataframe[index]
            warnings: list = []
            try:
                self._row_audio(doc, warnings, want_samples=False)
            except AudioError as e:
                self._report_drawn(doc, index, e)
                if self.settings.on_bad_audio == "error":
                    raise
                if self.on_skip == "drop":
                    return None
                index = (index + 1) % len(self)
                continue
            for warning in warnings:
                self.report.warn({"id": _row_id(doc, index), "index": index, "phase": self.phase,
                                  "step": self.current_step, **warning})
            return self._with_real_paths(super().__getitem__(index))
        raise RuntimeError(f"every row of {self.data_files} has bad audio (see bad_audio.jsonl); nothing to train on")

    def _report_drawn(self, doc: dict, index: int, error: AudioError) -> None:
        self.report.count_skip()
        self.report.bad({"id": _row_id(doc, index), "index": index, **_problem(error), "step": self.current_step,
                         "phase": self.phase})

    def _with_real_paths(self, row: dict) -> dict:
        """Point the prompt's audio items at the confined real paths that were checked."""
        for message in row.get("raw_prompt") or []:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and part.get("type") == "audio" and isinstance(part.get("audio"), str):
                    part["audio"] = str(confine(part["audio"], self.audio_roots))
        return row

    def _measure(self, doc: dict, warnings: list | None = None) -> int:
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
        images, videos, _ = super()._process_multi_modal_info(messages, self.image_patch_size, self.config)
        audios = self._row_audio(doc, [] if warnings is None else warnings, want_samples=True) or None
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


def _problem(error: AudioError) -> dict:
    """The bad-audio fields of a report line: path, kind, reason, and the file version when it exists."""
    record = {"path": error.path, "kind": error.kind, "reason": error.reason}
    try:
        key = file_key(error.path)
        record.update(size=key.size, mtime_ns=key.mtime_ns)
    except AudioError:
        record.update(size=None, mtime_ns=None)
    return record


def _check_duration(path: str, seconds: float | None, recorded: object) -> None:
    """AudioError when a clip no longer has the length the preparation recorded for it."""
    if seconds is None or recorded is None or isinstance(recorded, bool):
        return
    try:
        recorded = float(recorded)
    except (TypeError, ValueError):
        return
    if math.isfinite(recorded) and abs(seconds - recorded) > max(_DURATION_TOLERANCE_S,
                                                                 _DURATION_TOLERANCE_FRACTION * recorded):
        raise AudioError(path, f"decodes to {seconds:.2f} s but the parquet records {recorded:.2f} s "
                               "(question_audio_seconds): the file changed after preparation", "duration mismatch")


def _config_files(config: Any) -> list[str]:
    files = []
    for key in ("train_files", "val_files"):
        value = config.get(key) if config is not None else None
        if value is None:
            continue
        files.extend([value] if isinstance(value, str) else [str(v) for v in value])
    return files


def collate_skipping_bad(data_list: Sequence[dict | None]) -> dict:
    """verl's `collate_fn` over the rows that are not None (rows left out for bad audio)."""
    rows = [row for row in data_list if row is not None]
    if not rows:
        raise RuntimeError(f"all {len(data_list)} rows of a batch have bad audio (see bad_audio.jsonl)")
    return collate_fn(rows)
