"""Loading one part of a checkpoint (a thinker out of a full Omni checkpoint) with a check instead of a report.

transformers prints a "LOAD REPORT" table of every tensor a class does not take: loading the thinker of a full
Omni checkpoint lists each talker and token2wav tensor (~100 lines per process), while a missing or misshapen
thinker tensor appears in the same table and is easily lost in it. ``load_part`` loads with that report off and
checks the loading info itself: tensors under the expected other parts' prefixes are skipped (one log line),
anything else unexpected, missing or mismatched raises, naming the tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

#: the transformers logger that prints the load report
REPORT_LOGGER = "transformers.modeling_utils"


class CheckpointMismatch(ValueError):
    """The checkpoint's tensors do not fit the class being loaded."""


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    target = logging.getLogger(name)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def load_part(cls: type, path: str, *, other_parts: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """``cls.from_pretrained(path, **kwargs)``; tensors whose names start with ``other_parts`` may be skipped."""
    with _quiet(REPORT_LOGGER):
        model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.startswith(other_parts))
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(str(m) for m in info.get("mismatched_keys", ()))
    problems = [f"{what} {len(keys)}: {keys[:5]}" for what, keys in
                (("unexpected", unexpected), ("missing", missing), ("mismatched", mismatched)) if keys]
    if problems:
        raise CheckpointMismatch(f"{path} does not fit {cls.__name__}: " + "; ".join(problems))
    skipped = len(info.get("unexpected_keys", ()))
    if skipped:
        logger.info("%s from %s (%d tensors of %s skipped)", cls.__name__, path, skipped, "/".join(other_parts))
    return model
