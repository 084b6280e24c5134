"""Test reward: the ALR score, and on its first call truncates the files listed in `truncate_list` (a JSON
file of paths), once for the whole run: training audio that breaks while a run is going."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reward_fns.alr import compute_score as alr_score


def compute_score(data_source: Any, solution_str: Any, ground_truth: Any, extra_info: Any = None,
                  truncate_list: str | None = None, **kwargs: Any) -> Any:
    if truncate_list:
        try:
            os.mkdir(truncate_list + ".done")  # atomic: the first caller of any process does it
        except FileExistsError:
            pass
        else:
            for path in json.loads(Path(truncate_list).read_text()):
                with open(path, "r+b") as f:
                    f.truncate(100)
    return alr_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
