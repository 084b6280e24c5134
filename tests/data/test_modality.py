"""One reader of a row's modalities: data, rewards, speech, validation samples and eval agree on every row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reward_fns.protocol import mode_of, output_modality
from verl_audio.eval.items import alr_item
from verl_audio.modality import ModalityError, RowModality, check_modalities, row_modality
from verl_audio.trainer.speech_setup import output_modalities

ROWS = [
    ({"input_modality": "audio", "output_modality": "text"}, RowModality("audio", "text")),
    ({"input_modality": "text", "output_modality": "audio"}, RowModality("text", "audio")),
    ({"input_modality": "both"}, RowModality("both", "text")),
    ({"output_modality": "audio"}, RowModality(None, "audio")),
    ({}, RowModality(None, "text")),
    (None, RowModality(None, "text")),
]


@pytest.mark.parametrize(("info", "expected"), ROWS)
def test_every_reader_agrees(info, expected: RowModality) -> None:
    assert row_modality(info) == expected
    assert output_modality(info) == expected.output and mode_of(info) == expected.mode
    row = {"extra_info": info or {}, "prompt": [{"role": "user", "content": "q"}],
           "reward_model": {"ground_truth": "entailed"}}
    item = alr_item(row, "f:0", None)
    assert item.error is None and item.group == expected.label and item.output_modality == expected.output


@pytest.mark.parametrize("info", [{"output_modality": "speech"}, {"input_modality": "video"}])
def test_unknown_values_fail_everywhere(info, tmp_path) -> None:
    with pytest.raises(ModalityError):
        row_modality(info)
    with pytest.raises(ValueError):
        output_modality(info) if "output_modality" in info else mode_of(info)
    item = alr_item({"extra_info": info, "prompt": [], "reward_model": {}}, "f:0", None)
    assert item.error and "bad row" in item.error
    if "output_modality" in info:
        file = tmp_path / "rows.parquet"
        pq.write_table(pa.Table.from_pylist([{"extra_info": {"output_modality": "text"}}, {"extra_info": info}]), file)
        with pytest.raises(ValueError, match=r"rows.parquet row 1: .*output_modality"):
            output_modalities([str(file)])


def test_labels_and_argument_check() -> None:
    assert RowModality("audio", "text").label == "audio_to_text"
    assert RowModality(None, "audio").label == "unstated_to_audio"
    check_modalities("both", "audio")
    with pytest.raises(ModalityError, match="input_modality"):
        check_modalities("speech", "text")
