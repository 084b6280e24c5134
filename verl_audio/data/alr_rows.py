"""One ALR input row -> one verl RLHF parquet row (validated), or a RowError saying why not.

The ground truth comes from `label` only: some reference reasonings end with the opposite word, so the
reasoning is parsed (`reasoning_label`) for statistics and never for the reward.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from verl_audio.contract import ENTAILED, NOT_ENTAILED, label_to_word, with_instruction
from verl_audio.data.alr_sources import PathEscapeError, SourceRow, resolve_inside
from verl_audio.data.audio import AudioError, audio_duration, decode_audio
from verl_audio.data.audio_quality import flag_kind, quality_flags

DATA_SOURCE = "alr"
ABILITY = "logical-reasoning"
_PLACEHOLDERS = ("<audio>", "<image>", "<video>")  # verl splits prompt text on these

SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("audios", pa.list_(pa.string())),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("id", pa.string()),
                    ("split", pa.string()),
                    ("index", pa.int64()),
                    ("label", pa.int64()),
                    ("question_text", pa.string()),
                    ("ref_text", pa.string()),
                    ("ref_text_words", pa.int64()),
                    ("ref_audio_seconds", pa.float64()),
                    ("question_audio_seconds", pa.float64()),
                    ("question_audio", pa.string()),
                    ("answer_audio", pa.string()),
                    ("input_modality", pa.string()),
                    ("output_modality", pa.string()),
                ]
            ),
        ),
    ]
)


class RowError(ValueError):
    """A bad input row: `reason`, the file it concerns when there is one, and a short `kind` for summaries."""

    def __init__(self, reason: str, path: str | None = None, kind: str | None = None):
        self.reason, self.path = reason, path
        # without an explicit kind: the reason with quoted values and numbers taken out (no bucket per id)
        self.kind = kind or re.sub(r"\d+(\.\d+)?", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason)).split(":")[0][:60]
        super().__init__(f"{path}: {reason}" if path else reason)


def build_row(src_row: SourceRow, root: Path, input_modality: str, output_modality: str,
              flags: list[dict] | None = None) -> dict:
    """One validated parquet row from a source row; RowError says why it cannot be one.

    Quality flags of the question audio (clipping, silence, over-long) are appended to `flags` as
    {path, kind, reason}; the row is still built (the caller decides whether to reject it)."""
    if src_row.data is None:
        raise RowError(src_row.error or "unparseable row")
    data = src_row.data
    rid = data.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid).strip() == "":
        raise RowError(f"missing or invalid 'id': {rid!r}")
    rid = str(rid).strip()
    label = parse_label(data.get("label"))
    question = _text(data, ("user_content", "annotation_question"), required=input_modality != "audio")
    reasoning = _text(data, ("answer", "annotation_answer"), required=True)
    for tag in _PLACEHOLDERS if input_modality != "audio" else ():  # only text that enters the prompt
        if tag in question:
            raise RowError(f"question text contains the placeholder {tag}, which would be read as media")

    uses_question_audio = input_modality in ("audio", "both")
    q_path, q_seconds = _audio(
        root, src_row, src_row.question_ref, "question_file_name", uses_question_audio, decode=True, flags=flags
    )
    a_ref = src_row.answer_ref.replace("{label}", str(label)) if src_row.answer_ref else None
    if a_ref:
        named = re.fullmatch(r"answer_(\d+)\.\w+", Path(a_ref).name)
        if named and int(named.group(1)) != label:
            raise RowError(f"answer file {Path(a_ref).name} disagrees with label {label}", a_ref, "answer file label")
    a_path, a_seconds = _audio(root, src_row, a_ref, "answer_file_name", output_modality == "audio", decode=False)

    if input_modality == "audio":
        content = with_instruction("<audio>")
    elif input_modality == "text":
        content = with_instruction(question)
    else:
        content = with_instruction(f"<audio>\n{question}")
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": content}],
        "audios": [q_path] if uses_question_audio else [],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": label_to_word(label)},
        "extra_info": {
            "id": rid,
            "split": src_row.split,
            "index": src_row.ordinal,
            "label": label,
            "question_text": question,
            "ref_text": reasoning,
            "ref_text_words": len(reasoning.split()),
            "ref_audio_seconds": a_seconds,
            "question_audio_seconds": q_seconds,
            "question_audio": q_path,
            "answer_audio": a_path,
            "input_modality": input_modality,
            "output_modality": output_modality,
        },
    }


def parse_label(value: object) -> int:
    """ALR label 0/1 (int, or the digit strings of annotation.json); anything else is a RowError."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise RowError(f"label must be 0 or 1, got {value!r}")


def reasoning_label(text: str | None) -> str | None:
    """The label word on the last non-empty line of a reference reasoning (for statistics only)."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None
    found = re.findall(r"not[\s_-]*entailed|entailed", lines[-1], flags=re.IGNORECASE)
    if not found:
        return None
    return ENTAILED if found[-1].lower() == "entailed" else NOT_ENTAILED


def _audio(root, src_row, ref, field_name, required: bool, decode: bool,
           flags: list[dict] | None = None) -> tuple[str | None, float | None]:
    """(real path, seconds) of an audio reference. A required one must exist and be valid; an
    optional one that is absent gives (None, None), but one that is present must still be valid."""
    if ref is None:
        if required:
            raise RowError(f"no audio path (field {field_name!r} missing)", kind="no audio path")
        return None, None
    try:
        path = resolve_inside(root, src_row.base, ref)
    except PathEscapeError as e:
        raise RowError(str(e), ref, "outside root") from None
    if not path.exists() and not required:
        return None, None
    try:
        if decode and required:  # model input: decode all of it once, as training will
            data, sr = decode_audio(path)
            for flag in quality_flags(data, sr):
                if flags is not None:
                    flags.append({"path": str(path), "kind": flag_kind(flag), "reason": flag})
            return str(path), data.shape[0] / sr
        return str(path), audio_duration(path)  # header only: answers run to minutes
    except AudioError as e:
        raise RowError(e.reason, e.path, e.kind) from None


def _text(data: dict, keys: tuple[str, ...], required: bool) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if value is not None and not isinstance(value, str):
            raise RowError(f"field {key!r} must be a string, got {type(value).__name__}")
    if required:
        raise RowError(f"missing text field ({' or '.join(repr(k) for k in keys)})")
    return None
