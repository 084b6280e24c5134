"""Validation accuracy per group: ``val-group/<field>=<value>/<metric>`` beside the per-mode table.

Rows prepared by ``examples/data_preprocess/audio_mcq.py`` carry their grouping fields (MMAU's task,
difficulty, category, sub-category; MMAR's modality, ...) as ``"field=value"`` strings, which the
multiple-choice reward (``reward_fns/choice.py``) returns per response as ``groups`` (a JSON list). Each
validation line then gets, for every group present, the evaluation CLI's table metrics (accuracy, format
rate, items scored / failed, and pass@k / maj@k with ``val_kwargs.n`` > 1), computed by the same scorer's
``summarize`` over the items of that group: ``val-group/task=sound/accuracy``. An item with a list-valued
category counts in each of its groups. Responses without ``groups`` (other tasks) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from verl_audio.eval.scoring import UNPARSED_CHOICE, VAL_METRICS, ItemScore, summarize, validation_sample

PREFIX = "val-group"


def _groups(value: Any) -> list[str]:
    if not value:
        return []
    try:
        groups = json.loads(value) if isinstance(value, str) else list(value)
    except json.JSONDecodeError:
        return []
    return [str(g) for g in groups] if isinstance(groups, list) else []


def group_items(sample_uids: Sequence[Any], infos: Mapping[str, Sequence[Any]]) -> dict[str, list[ItemScore]]:
    """``{group: items}`` from verl's validation outputs: the reward's ``groups``, ``acc``, ``format`` and
    ``pred`` per response, grouped by prompt uid (``val_kwargs.n`` responses per prompt)."""
    groups_of = infos.get("groups")
    if groups_of is None:
        return {}
    items: dict[Any, tuple[list[str], ItemScore]] = {}
    for i, uid in enumerate(sample_uids):
        groups = _groups(groups_of[i])
        if not groups:
            continue
        sample = validation_sample(infos, i, UNPARSED_CHOICE)
        items.setdefault(uid, (groups, ItemScore(key=str(uid), id=str(uid), group=groups[0])))[1].samples.append(
            sample)
    by_group: dict[str, list[ItemScore]] = {}
    for groups, item in items.values():
        for group in groups:
            by_group.setdefault(group, []).append(item)
    return dict(sorted(by_group.items()))


def group_validation_metrics(sample_uids: Sequence[Any], infos: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """``val-group/<field>=<value>/<metric>`` for the groups present (module doc)."""
    by_group = group_items(sample_uids, infos)
    if not by_group:
        return {}
    k = max(len(item.samples) for items in by_group.values() for item in items)
    names = (*VAL_METRICS, *([f"pass@{k}", f"maj@{k}"] if k > 1 else []))
    metrics = {}
    for group, items in by_group.items():
        row = summarize(items, k)
        for name in names:
            if row.get(name) is not None:
                metrics[f"{PREFIX}/{group}/{name}"] = float(row[name])
    return metrics
