"""The one scorer: per-response scores and the per-mode / per-category table, for the CLI and for validation.

Per response:

* ALR rows (``score_alr``): the output contract's parser and the reward rules of ``reward_fns`` (the same
  functions the training reward composes): ``correct`` is ``answer_reward``, ``well_formed`` is
  ``format_reward``, ``reasoning_words`` the words of the ``<think>`` block. A response with no
  unambiguous final ``<answer>`` label is *unparsed*: it counts as wrong and is listed as a failure.
* Multiple-choice items (``score_choice``, MMAU / MMAR): the answer is taken from the contract's final
  ``<answer>`` block when there is one, else from the whole response, and scored with the benchmarks'
  string-match rule (``string_match``): every word of the answer is in the prediction and no word that
  only a wrong choice has. The parsed answer is the one choice the rule accepts; when it accepts none the
  response is unparsed (wrong, listed). Nothing is drawn at random: the same response always scores the same.

Per table row (``summarize``; a row is a mode such as ``audio_to_text``, or for multiple choice one value of
one of the benchmark's groupings, such as ``task: sound`` (``grouped_table``)), over the *items* given
(rows in = rows scored + rows failed):

* ``accuracy`` = items correct / all items (an item that failed counts as wrong, never leaves the
  denominator); with K samples per item, an item's correctness is the mean over its samples (``mean@K``),
  and ``pass@K`` (any sample correct) and ``maj@K`` (the most frequent parsed answer is correct; ties go to
  the answer parsed first; unparsed samples do not vote) are added;
* ``format_rate`` = samples following the output contract / all samples;
* ``wer`` = corpus word error rate of the spoken answers (errors over reference words, summed over the
  samples that have a transcript), None when no sample was spoken;
* ``n_scored`` = items with at least one parsed sample, ``n_failed`` = the others (bad input, or no
  sample parsed), with ``failures`` counting the reasons.

Nothing heavy is imported here: the trainer imports this module for its validation metrics.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from reward_fns.answer import answer_reward
from reward_fns.format import format_reward
from reward_fns.protocol import MODE_LABELS
from reward_fns.text_length import reasoning_words
from verl_audio.contract import parse_response

#: table row order of the paper's ALR table; other modes follow in name order
MODE_ORDER = tuple(MODE_LABELS)
UNPARSED_ALR = "unparsed: no single final <answer> block naming a label"
UNPARSED_CHOICE = "unparsed: the answer matches no choice"


@dataclass
class SampleScore:
    """One response's score (one of an item's K samples)."""

    response: str
    parsed: str | None  # the label word / the choice, None when unparsed
    correct: bool
    well_formed: bool  # follows the output contract (<think> then <answer>)
    reasoning_words: int
    failure: str | None = None  # why it could not be scored (unparsed), else None
    speech_seconds: float | None = None  # length of the spoken answer (speech outputs)
    transcript: str | None = None  # ASR of the spoken answer
    wer: float | None = None  # word error rate of the transcript against the response text
    wer_errors: int | None = None  # substitutions + deletions + insertions (for the corpus WER)
    wer_words: int | None = None  # reference words (for the corpus WER)
    speech_error: str | None = None  # why the answer could not be spoken / transcribed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ItemScore:
    """One item (a row or a benchmark question) with its samples; ``error`` for bad input (no samples)."""

    key: str
    id: str
    group: str  # the table row: the mode (ALR) or the category (multiple choice)
    samples: list[SampleScore] = field(default_factory=list)
    error: str | None = None
    groups: dict[str, str] = field(default_factory=dict)  # multiple choice: grouping field -> value
    retry: bool = False  # the error is a failed generation (OOM, a crashed engine): generated again on resume

    @property
    def failed(self) -> bool:
        return self.error is not None or not any(s.failure is None for s in self.samples)

    @property
    def failure(self) -> str | None:
        if self.error is not None:
            return self.error
        return self.samples[0].failure if self.failed and self.samples else None

    def mean_correct(self) -> float:
        return sum(s.correct for s in self.samples) / len(self.samples) if self.samples else 0.0

    def passed(self) -> bool:
        return any(s.correct for s in self.samples)

    def majority(self) -> tuple[str | None, bool]:
        """(most frequent parsed answer, whether it is correct); ties go to the answer parsed first."""
        votes = Counter(s.parsed for s in self.samples if s.parsed is not None)
        if not votes:
            return None, False
        best = max(votes.values())
        answer = next(s.parsed for s in self.samples if s.parsed is not None and votes[s.parsed] == best)
        return answer, next(s.correct for s in self.samples if s.parsed == answer)


# ---- per response ---------------------------------------------------------------------------------


def score_alr(response: str, ground_truth: Any) -> SampleScore:
    """Score an ALR response with the reward's own rules (module doc)."""
    parsed = parse_response(response)
    correct = answer_reward(parsed, ground_truth) == 1.0
    return SampleScore(
        response=response,
        parsed=parsed.label,
        correct=correct,
        well_formed=format_reward(parsed) == 1.0,
        reasoning_words=reasoning_words(parsed),
        failure=None if parsed.label is not None else UNPARSED_ALR,
    )


_WORD = re.compile(r"\b\w+\b")  # the benchmarks' tokenizer


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """MMAU / MMAR's rule: all answer words in the prediction, none of the words only wrong choices have."""
    predicted, wanted = _words(prediction), _words(answer)
    if not predicted:
        return False
    wrong: set[str] = set()
    for choice in choices:
        words = _words(choice)
        if words != wanted:
            wrong |= words - wanted
    return wanted <= predicted and predicted.isdisjoint(wrong)


def extract_choice_text(response: str) -> str:
    """The text the choice is read from: the contract's only ``<answer>`` block if any, else the response."""
    answer_text = parse_response(response).answer_text
    return response if answer_text is None else answer_text


def score_choice(response: str, answer: str, choices: Sequence[str]) -> SampleScore:
    """Score a multiple-choice response with the benchmarks' rule (module doc)."""
    text = extract_choice_text(response)
    parsed = next((c for c in choices if string_match(c, text, choices)), None)
    return SampleScore(
        response=response,
        parsed=parsed,
        correct=string_match(answer, text, choices),
        well_formed=parse_response(response).well_formed,
        reasoning_words=reasoning_words(response),
        failure=None if parsed is not None else UNPARSED_CHOICE,
    )


# ---- tables ---------------------------------------------------------------------------------------


def summarize(items: Iterable[ItemScore], k: int = 1) -> dict[str, Any]:
    """The metrics of one table row over ``items`` (module doc); ``k`` samples were asked per item."""
    items = list(items)
    n = len(items)
    samples = [s for item in items for s in item.samples]
    spoken = [s for s in samples if s.wer_words is not None]
    words = sum(s.wer_words for s in spoken)
    failures = Counter(item.failure for item in items if item.failed)
    row: dict[str, Any] = {
        "n": n,
        "accuracy": sum(item.mean_correct() for item in items) / n if n else None,
        "format_rate": sum(s.well_formed for s in samples) / (n * k) if n else None,
        "wer": (sum(s.wer_errors for s in spoken) / words if words else (0.0 if spoken else None)),
        "n_spoken": len(spoken),
        "n_scored": sum(not item.failed for item in items),
        "n_failed": sum(item.failed for item in items),
        "failures": dict(sorted(failures.items())),
        "samples_unparsed": sum(s.failure is not None for s in samples),
        "speech_errors": dict(sorted(Counter(s.speech_error for s in samples if s.speech_error).items())),
    }
    if k > 1:
        row[f"pass@{k}"] = sum(item.passed() for item in items) / n if n else None
        row[f"maj@{k}"] = sum(item.majority()[1] for item in items) / n if n else None
    return row


def group_order(groups: Iterable[str]) -> list[str]:
    """Modes in the paper's order, then any other group by name."""
    groups = set(groups)
    return [m for m in MODE_ORDER if m in groups] + sorted(groups - set(MODE_ORDER))


def table(items: Iterable[ItemScore], k: int = 1) -> dict[str, dict[str, Any]]:
    """``{group: summarize(items of that group)}`` in table order, plus ``all`` over every item."""
    items = list(items)
    by_group: dict[str, list[ItemScore]] = {}
    for item in items:
        by_group.setdefault(item.group, []).append(item)
    out = {group: summarize(by_group[group], k) for group in group_order(by_group)}
    out["all"] = summarize(items, k)
    return out


def grouped_table(items: Iterable[ItemScore], groupings: Sequence[str], k: int = 1,
                  order: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[str, Any]]:
    """The benchmarks' tables in one: ``{"<grouping>: <value>": summarize(items with that value)}`` for each
    grouping in turn, then ``all``. Values listed in ``order[grouping]`` come first in that order, the others
    in the order first seen; an item without a value for a grouping is in none of its rows."""
    items = list(items)
    out: dict[str, dict[str, Any]] = {}
    for grouping in groupings:
        by_value: dict[str, list[ItemScore]] = {}
        for item in items:
            if grouping in item.groups:
                by_value.setdefault(item.groups[grouping], []).append(item)
        known = [v for v in (order or {}).get(grouping, ()) if v in by_value]
        for value in known + [v for v in by_value if v not in known]:
            out[f"{grouping}: {value}"] = summarize(by_value[value], k)
    out["all"] = summarize(items, k)
    return out


# ---- validation during training -------------------------------------------------------------------

#: the table metrics logged per mode during validation (``val-mode/<mode>/<metric>``)
VAL_METRICS = ("accuracy", "format_rate", "n_scored", "n_failed")


def validation_sample(infos: Mapping[str, Sequence[Any]], i: int, unparsed: str) -> SampleScore:
    """Response ``i`` of verl's validation outputs as a scored sample: the reward's ``acc``, ``format`` (absent:
    not well formed) and ``pred`` (empty: the ``unparsed`` failure)."""
    pred = infos["pred"][i] if "pred" in infos else None
    return SampleScore(
        response="",
        parsed=pred or None,
        correct=float(infos["acc"][i]) == 1.0,
        well_formed=float(infos["format"][i]) == 1.0 if "format" in infos else False,
        reasoning_words=0,
        failure=None if pred else unparsed,
    )


def validation_items(sample_uids: Sequence[Any], infos: Mapping[str, Sequence[Any]]) -> list[ItemScore]:
    """Items from verl's validation outputs: the reward's ``mode``, ``acc``, ``format`` and ``pred`` per
    response, grouped by prompt uid (``val_kwargs.n`` responses per prompt). Responses without a mode
    (other tasks) are left out."""
    modes = infos.get("mode")
    if modes is None:
        return []
    items: dict[Any, ItemScore] = {}
    for i, uid in enumerate(sample_uids):
        mode = modes[i]
        if not mode:
            continue
        sample = validation_sample(infos, i, UNPARSED_ALR)
        items.setdefault(uid, ItemScore(key=str(uid), id=str(uid), group=str(mode))).samples.append(sample)
    return list(items.values())


def validation_metrics(sample_uids: Sequence[Any], infos: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """``val-mode/<mode>/<metric>`` for the modes present: the CLI's table metrics over verl's validation."""
    items = validation_items(sample_uids, infos)
    if not items:
        return {}
    k = max(len(item.samples) for item in items)
    metrics = {}
    for group, row in table(items, k).items():
        for name in (*VAL_METRICS, *([f"pass@{k}", f"maj@{k}"] if k > 1 else [])):
            if row.get(name) is not None:
                metrics[f"val-mode/{group}/{name}"] = float(row[name])
    return metrics
