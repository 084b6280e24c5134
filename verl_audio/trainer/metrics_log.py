"""The run's ``metrics.jsonl``: verl's file-logger lines, kept across resumes.

verl's ``FileLogger`` writes one JSON line per ``Tracking.log`` call, ``{"step": N, "data": {...}}``, to
``VERL_FILE_LOGGER_PATH``. It opens the file with ``"wb"``, which would erase the history of a resumed
run; ``verl_audio.patches.patch_file_logger_append`` makes it append when ``VERL_FILE_LOGGER_APPEND=1``
(set by ``verl_audio.trainer.main``), and the trainer calls ``trim_after`` once it knows the step it
resumes from, so lines of steps that are run again are dropped instead of duplicated.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: verl's own variable: where its file logger writes
PATH_ENV = "VERL_FILE_LOGGER_PATH"
#: ours: "1" makes verl's file logger append instead of truncating (see verl_audio.patches)
APPEND_ENV = "VERL_FILE_LOGGER_APPEND"


def metrics_path() -> Path | None:
    """The file verl's file logger writes in this process, if set by the environment."""
    path = os.environ.get(PATH_ENV)
    return Path(path) if path else None


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a metrics file, in order; a malformed line raises with its line number."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
    return records


def trim_after(path: str | Path, step: int) -> int:
    """Keep only the lines of steps ``<= step`` (all lines dropped for ``step == 0``); return lines dropped.

    Called when a run (re)starts at ``step``: a fresh run (0) starts an empty history; a run resumed
    from the checkpoint of step k keeps steps 1..k (and the initial validation at 0) and drops the
    lines that the killed run wrote after its last checkpoint, since those steps are run again. A last
    line cut short by the kill (no newline, not JSON) is dropped with them; a bad line anywhere else raises.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines = [line for line in path.read_bytes().splitlines(keepends=True) if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith(b"\n"):
                logger.warning("%s: dropped a last line cut short by the interrupted run (%d bytes)", path, len(line))
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
        if step > 0 and record["step"] <= step:
            kept.append(line)
    # rewrite in place (not rename): verl's logger may already hold the file open in append mode
    with open(path, "r+b") as handle:
        handle.write(b"".join(kept))
        handle.truncate()
    return len(lines) - len(kept)


def training_steps(path: str | Path) -> dict[int, dict[str, float]]:
    """Per training step (lines holding ``training/global_step``), its metrics; later lines win."""
    steps: dict[int, dict[str, float]] = {}
    for record in read_lines(path):
        data = record.get("data", {})
        if "training/global_step" in data:
            steps[int(record["step"])] = data
    return dict(sorted(steps.items()))


def finite(value: Any) -> bool:
    """Whether a logged value is a finite number (verl logs NaN as ``null``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
