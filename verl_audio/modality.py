"""A row's modalities: the one reader of ``extra_info``'s ``input_modality`` / ``output_modality``.

Data preparation writes the two keys; rewards, the speech stage, validation samples and eval read them here,
so every part of a run agrees on what a row asks for. A missing output modality means text; a missing input
modality is left unknown (``RowModality.mode`` is then None); any other value raises ``ModalityError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INPUT_MODALITY = "input_modality"
OUTPUT_MODALITY = "output_modality"
INPUT_MODALITIES = ("audio", "text", "both")
OUTPUT_MODALITIES = ("text", "audio")


class ModalityError(ValueError):
    """An ``extra_info`` modality that is not one of the known values."""


@dataclass(frozen=True)
class RowModality:
    """What a row takes in (None: not stated) and gives out."""

    input: str | None
    output: str

    @property
    def mode(self) -> str | None:
        """``<input>_to_<output>`` (e.g. ``audio_to_text``), or None when the row states no input modality."""
        return f"{self.input}_to_{self.output}" if self.input else None

    @property
    def label(self) -> str:
        """``mode``, or ``unstated_to_<output>`` for a row without an input modality (folder and table names)."""
        return self.mode or f"unstated_to_{self.output}"


def check_modalities(input_modality: str, output_modality: str) -> None:
    """Raise ``ModalityError`` unless both are known values (for data preparation's arguments)."""
    if input_modality not in INPUT_MODALITIES:
        raise ModalityError(f"input_modality must be one of {INPUT_MODALITIES}, got {input_modality!r}")
    if output_modality not in OUTPUT_MODALITIES:
        raise ModalityError(f"output_modality must be one of {OUTPUT_MODALITIES}, got {output_modality!r}")


def row_modality(extra_info: Mapping[str, Any] | None) -> RowModality:
    """The modalities of a row's ``extra_info`` (module doc for missing values); raises ``ModalityError``."""
    info = extra_info if isinstance(extra_info, Mapping) else {}
    source, target = info.get(INPUT_MODALITY) or None, info.get(OUTPUT_MODALITY) or "text"
    if target not in OUTPUT_MODALITIES:
        raise ModalityError(f"extra_info[{OUTPUT_MODALITY!r}] must be one of {OUTPUT_MODALITIES}, got {target!r}")
    if source is not None and source not in INPUT_MODALITIES:
        raise ModalityError(f"extra_info[{INPUT_MODALITY!r}] must be one of {INPUT_MODALITIES}, got {source!r}")
    return RowModality(source, target)
