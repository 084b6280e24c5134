"""Validation per group: ``val-group/<field>=<value>/<metric>`` from the choice reward's outputs, by the eval scorer."""

from __future__ import annotations

import json

import pytest

from verl_audio.trainer.val_groups import group_validation_metrics


def infos(rows: list[tuple[list[str], float, str]]) -> dict[str, list]:
    """verl's reward_extra_infos_dict for responses (groups, acc, pred), as the choice reward returns them."""
    return {"groups": [json.dumps(g) for g, _, _ in rows], "acc": [a for _, a, _ in rows],
            "format": [0.0 for _ in rows], "pred": [p for _, _, p in rows], "mode": ["audio_to_text" for _ in rows]}


def test_accuracy_per_group_value_with_list_valued_categories() -> None:
    rows = [
        (["task=sound", "difficulty=easy"], 1.0, "low"),
        (["task=sound", "difficulty=hard"], 0.0, "high"),
        (["task=music", "difficulty=easy", "category=Signal", "category=Semantic"], 1.0, "x"),
        (["task=music", "difficulty=hard", "category=Signal"], 0.0, ""),  # unparsed: failed, counts as wrong
    ]
    metrics = group_validation_metrics(["a", "b", "c", "d"], infos(rows))
    assert metrics["val-group/task=sound/accuracy"] == 0.5
    assert metrics["val-group/task=music/accuracy"] == 0.5
    assert metrics["val-group/difficulty=easy/accuracy"] == 1.0
    assert metrics["val-group/difficulty=hard/accuracy"] == 0.0
    assert metrics["val-group/category=Semantic/accuracy"] == 1.0  # the item counts in both of its categories
    assert metrics["val-group/category=Signal/accuracy"] == 0.5
    assert metrics["val-group/task=music/n_failed"] == 1.0 and metrics["val-group/task=music/n_scored"] == 1.0
    assert not any(k.startswith("val-group/") and "@" in k for k in metrics)


def test_several_samples_per_prompt_add_pass_and_maj() -> None:
    rows = [(["task=sound"], 1.0, "low"), (["task=sound"], 0.0, "high"), (["task=sound"], 1.0, "low"),
            (["task=speech"], 0.0, "a"), (["task=speech"], 0.0, "a"), (["task=speech"], 1.0, "b")]
    metrics = group_validation_metrics(["u1", "u1", "u1", "u2", "u2", "u2"], infos(rows))
    assert metrics["val-group/task=sound/accuracy"] == pytest.approx(2 / 3)
    assert metrics["val-group/task=sound/pass@3"] == 1.0 and metrics["val-group/task=sound/maj@3"] == 1.0
    assert metrics["val-group/task=speech/pass@3"] == 1.0 and metrics["val-group/task=speech/maj@3"] == 0.0


def test_other_tasks_add_nothing() -> None:
    assert group_validation_metrics(["a"], {"acc": [1.0], "format": [1.0], "pred": ["entailed"]}) == {}
    assert group_validation_metrics(["a"], infos([([], 1.0, "low")])) == {}
