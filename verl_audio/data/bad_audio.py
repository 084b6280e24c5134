"""What a run does with bad audio, and where it says so.

Set by `verl_audio.trainer.main` from the `verl_audio` config section, for every Ray process, through
environment variables (a dataset built elsewhere reads the same defaults):

* `VERL_AUDIO_ON_BAD_AUDIO` (`verl_audio.on_bad_audio`): `skip` (default) reports a sample whose audio
  cannot be used and leaves it out; `error` stops with the file and reason (fail-fast);
* `VERL_AUDIO_REJECT_FLAGGED` (`verl_audio.reject_flagged_audio`): `1` treats clipping, silent and
  over-long clips as bad; by default they are used and reported as warnings;
* `VERL_AUDIO_REPORT_DIR` (`verl_audio.output_dir`): where `bad_audio.jsonl` (one line per bad file
  version: id, index, path, kind, reason, step, phase, size, mtime_ns) and `audio_warnings.jsonl`
  (flagged clips that were used) are appended. Lines already in `bad_audio.jsonl` are not written
  again for the same file version, so a resumed run does not repeat them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ON_BAD_AUDIO_ENV = "VERL_AUDIO_ON_BAD_AUDIO"
REJECT_FLAGGED_ENV = "VERL_AUDIO_REJECT_FLAGGED"
REPORT_DIR_ENV = "VERL_AUDIO_REPORT_DIR"
POLICIES = ("skip", "error")
BAD_AUDIO_FILE = "bad_audio.jsonl"
WARNINGS_FILE = "audio_warnings.jsonl"


@dataclass(frozen=True)
class BadAudioSettings:
    """The policy for bad audio (module doc)."""

    on_bad_audio: str = "skip"
    reject_flagged: bool = False
    report_dir: str | None = None

    @classmethod
    def from_env(cls) -> BadAudioSettings:
        policy = os.environ.get(ON_BAD_AUDIO_ENV, "skip")
        if policy not in POLICIES:
            raise ValueError(f"verl_audio.on_bad_audio must be one of {POLICIES}, got {policy!r}")
        reject = os.environ.get(REJECT_FLAGGED_ENV, "0").lower() in ("1", "true", "yes")
        return cls(policy, reject, os.environ.get(REPORT_DIR_ENV) or None)


class BadAudioReport:
    """Appends bad-audio and warning lines (once per row and file version) and counts skips."""

    def __init__(self, report_dir: str | None) -> None:
        self.dir = Path(report_dir) if report_dir else None
        self.skipped = 0  # samples left out since the last `take_skipped`
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()
        for name in (BAD_AUDIO_FILE, WARNINGS_FILE):
            for record in self._read(name):
                self._seen.add(self._key(name, record))

    def _read(self, name: str) -> list[dict]:
        path = self.dir / name if self.dir else None
        if path is None or not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
        return records

    @staticmethod
    def _key(name: str, record: dict) -> tuple:
        return (name, record.get("id"), record.get("path"), record.get("size"), record.get("mtime_ns"),
                record.get("reason") if name == WARNINGS_FILE else None)

    def bad(self, record: dict[str, Any]) -> bool:
        """Record a bad sample; True when this row and file version were not reported before."""
        logger.warning("bad audio: id=%s %s: %s (%s)", record.get("id"), record.get("path"), record.get("reason"),
                       record.get("phase"))
        return self._append(BAD_AUDIO_FILE, record)

    def warn(self, record: dict[str, Any]) -> bool:
        """Record a flagged clip that is used anyway."""
        return self._append(WARNINGS_FILE, record)

    def _append(self, name: str, record: dict[str, Any]) -> bool:
        key = self._key(name, record)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            if self.dir is not None:
                self.dir.mkdir(parents=True, exist_ok=True)
                with open(self.dir / name, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
        return True

    def count_skip(self) -> None:
        with self._lock:
            self.skipped += 1

    def __getstate__(self) -> dict:  # datasets are pickled (data-loader workers, split copies); locks are not
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def take_skipped(self) -> int:
        with self._lock:
            n, self.skipped = self.skipped, 0
            return n
