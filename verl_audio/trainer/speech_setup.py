"""Before training: does this run speak? Decide from the data, check the checkpoint, wire verl's agent loop.

``configure(config)`` (called by ``verl_audio.trainer.main.prepare``):

1. reads ``extra_info.output_modality`` of every row of ``data.train_files`` and ``data.val_files``
   (a value other than text/audio stops the run naming file and row);
2. sets ``rollout.engine_kwargs.speech.enable`` from them when it is unset (any ``audio`` row: true);
   an explicit false with audio rows is refused;
3. with speech on: checks that the checkpoint has talker and token2wav weights and ``spk_dict.pt``
   (a thinker-only checkpoint fails here, naming what it lacks);
4. selects verl-audio's agent loop (``speech_single_turn_agent``, from ``trainer/config/agent_loops.yaml``)
   in place of verl's ``single_turn_agent`` for every run: it speaks the audio-output rows and marks every
   response's ``response_ended`` for the rewards; text rows are otherwise generated exactly as verl's loop does.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from verl_audio.modality import ModalityError, row_modality
from verl_audio.models.families import family_of_path
from verl_audio.rollout.agent_loop import AGENT_NAME
from verl_audio.speech.talker import require_speech_weights

logger = logging.getLogger(__name__)

AGENT_LOOPS_YAML = Path(__file__).resolve().parents[1] / "trainer" / "config" / "agent_loops.yaml"


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def output_modalities(files: Iterable[str]) -> Counter:
    """How many rows ask for each output modality (missing -> text); a bad value raises naming file and row."""
    import pyarrow.parquet as pq

    counts: Counter = Counter()
    for file in files:
        table = pq.read_table(file, columns=["extra_info"]) if "extra_info" in pq.read_schema(file).names else None
        rows = table.column("extra_info").to_pylist() if table is not None else []
        if table is None:
            counts["text"] += pq.read_metadata(file).num_rows
        for row, info in enumerate(rows):
            try:
                counts[row_modality(info).output] += 1
            except ModalityError as err:
                raise ValueError(f"{file} row {row}: {err}") from err
    return counts


def configure(config: DictConfig) -> bool:
    """Apply the steps of the module doc to ``config`` in place; returns whether the rollout speaks."""
    rollout = config.actor_rollout_ref.rollout
    files = _files(config.data.get("train_files")) + _files(config.data.get("val_files"))
    counts = output_modalities(f for f in files if Path(f).exists())
    speech = dict((rollout.get("engine_kwargs") or {}).get("speech") or {})
    enable = speech.get("enable")
    if enable is None:
        enable = counts["audio"] > 0
    elif not enable and counts["audio"]:
        raise ValueError(f"{counts['audio']} rows ask for output_modality 'audio' but "
                         "rollout.engine_kwargs.speech.enable is false")
    with open_dict(config):
        if "speech" not in rollout.engine_kwargs or rollout.engine_kwargs.speech is None:
            rollout.engine_kwargs.speech = {}
        rollout.engine_kwargs.speech.enable = bool(enable)
        if enable:
            model = Path(str(config.actor_rollout_ref.model.path)).expanduser()
            if model.is_dir():  # a Hub id is checked when the speech worker loads it
                family = family_of_path(model)
                if family is not None and not family.can_speak:
                    raise ValueError(f"{counts['audio']} rows ask for output_modality 'audio', but {model} is a "
                                     f"{family.name} checkpoint: speech output needs a Qwen2.5-Omni checkpoint (the "
                                     "speech stage drives its talker); prepare the data with --output-modality text")
                require_speech_weights(model)
        if rollout.agent.default_agent_loop == "single_turn_agent":
            rollout.agent.default_agent_loop = AGENT_NAME
        if not rollout.agent.get("agent_loop_config_path"):
            rollout.agent.agent_loop_config_path = str(AGENT_LOOPS_YAML)
    logger.warning("verl-audio: output modalities %s -> speech stage %s", dict(counts), "on" if enable else "off")
    return bool(enable)
