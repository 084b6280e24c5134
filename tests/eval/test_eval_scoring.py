"""The shared scorer: ALR and multiple-choice rules, the table, pass@k / majority, validation metrics."""

from __future__ import annotations

import pytest

from reward_fns import compute_score
from verl_audio.eval.scoring import (
    UNPARSED_ALR,
    UNPARSED_CHOICE,
    ItemScore,
    SampleScore,
    score_alr,
    score_choice,
    string_match,
    summarize,
    table,
    validation_metrics,
)

GOOD = "<think>a b c d</think>\n<answer>entailed</answer>"
CHOICES = ["dog barking", "cat meowing", "car horn"]


@pytest.mark.parametrize(
    "response",
    [GOOD, "<think>x</think><answer>not entailed</answer>", "entailed", "<answer>entailed</answer>", "", "junk"],
)
def test_alr_score_is_the_rewards_own(response: str) -> None:
    info = {"input_modality": "audio", "output_modality": "text", "ref_text_words": 4}
    reward = compute_score("alr", response, 1, info)
    sample = score_alr(response, "entailed")
    assert float(sample.correct) == reward["acc"]
    assert float(sample.well_formed) == reward["format"]
    assert (sample.parsed or "") == reward["pred"]
    assert (sample.failure == UNPARSED_ALR) == (reward["pred"] == "")
    assert reward["mode"] == "audio_to_text"


def test_string_match_is_the_benchmark_rule() -> None:
    assert string_match("dog barking", "A dog is barking.", CHOICES)
    assert not string_match("dog barking", "dog", CHOICES)  # not every answer word
    assert not string_match("dog barking", "dog barking or car horn", CHOICES)  # a wrong choice's word
    assert not string_match("dog barking", "", CHOICES)
    # words shared with the answer are not held against it
    assert string_match("a dog", "a dog", ["a dog", "a cat"])


def test_choice_is_read_from_the_answer_block_first() -> None:
    inside = score_choice("<think>maybe a car horn</think><answer>dog barking</answer>", "dog barking", CHOICES)
    assert inside.correct and inside.parsed == "dog barking" and inside.well_formed
    raw = score_choice("I hear a cat meowing", "dog barking", CHOICES)
    assert not raw.correct and raw.parsed == "cat meowing" and raw.failure is None
    none = score_choice("something else", "dog barking", CHOICES)
    assert not none.correct and none.parsed is None and none.failure == UNPARSED_CHOICE
    # the same response always scores the same: no random fallback
    assert [score_choice("hmm", "car horn", CHOICES).parsed for _ in range(5)] == [None] * 5


def _sample(parsed: str | None, correct: bool) -> SampleScore:
    return SampleScore("r", parsed, correct, False, 0, None if parsed else "unparsed")


def test_pass_at_k_and_majority() -> None:
    items = [
        ItemScore("a", "a", "g", [_sample("x", True), _sample("y", False), _sample("y", False)]),  # maj wrong
        ItemScore("b", "b", "g", [_sample("y", False), _sample("x", True), _sample("x", True)]),  # maj right
        ItemScore("c", "c", "g", [_sample("x", True), _sample("y", False), _sample(None, False)]),  # tie: first
        ItemScore("d", "d", "g", [_sample(None, False)] * 3),  # nothing parsed: failed
        ItemScore("e", "e", "g", error="unreadable audio: x.wav"),
    ]
    row = summarize(items, k=3)
    assert row["n"] == 5 and row["n_scored"] == 3 and row["n_failed"] == 2
    assert row["pass@3"] == pytest.approx(3 / 5)
    assert row["maj@3"] == pytest.approx(2 / 5)
    assert row["accuracy"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 3) / 5)
    assert row["failures"] == {"unparsed": 1, "unreadable audio: x.wav": 1}
    assert items[2].majority() == ("x", True)


def test_table_orders_modes_like_the_paper_and_counts_every_row() -> None:
    groups = ["audio_to_audio", "text_to_text", "zz_other", "audio_to_text", "text_to_audio"]
    items = [ItemScore(g, g, g, [_sample("x", True)]) for g in groups]
    out = table(items)
    assert list(out) == ["audio_to_text", "text_to_text", "text_to_audio", "audio_to_audio", "zz_other", "all"]
    assert out["all"]["n"] == 5 and out["all"]["accuracy"] == 1.0


def test_corpus_wer_sums_errors_over_words() -> None:
    a, b = _sample("x", True), _sample("x", True)
    a.wer_errors, a.wer_words, b.wer_errors, b.wer_words = 1, 10, 3, 10
    assert summarize([ItemScore("k", "k", "g", [a, b])], k=2)["wer"] == pytest.approx(0.2)


def test_validation_reports_the_cli_table_per_mode() -> None:
    responses = [GOOD, "junk", "<think>x</think><answer>not-entailed</answer>", GOOD]
    infos = [{"input_modality": m, "output_modality": "text"} for m in ("audio", "audio", "text", "text")]
    results = [compute_score("alr", r, 1, i) for r, i in zip(responses, infos)]
    keys = ("acc", "format", "pred", "mode")
    reward_infos = {k: [r[k] for r in results] for k in keys}
    metrics = validation_metrics(["u1", "u2", "u3", "u4"], reward_infos)
    expected = table([ItemScore(str(i), str(i), r["mode"], [score_alr(t, "entailed")])
                      for i, (t, r) in enumerate(zip(responses, results))])
    for mode in ("audio_to_text", "text_to_text", "all"):
        for name in ("accuracy", "format_rate", "n_scored", "n_failed"):
            assert metrics[f"val-mode/{mode}/{name}"] == pytest.approx(expected[mode][name])
    assert metrics["val-mode/audio_to_text/n_failed"] == 1.0
    assert validation_metrics(["u"], {"acc": [1.0]}) == {}  # rewards without modes (e.g. tones): nothing added
