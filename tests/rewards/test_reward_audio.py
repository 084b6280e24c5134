"""The speech rules: VAD-based audio length, the response-audio protocol, and ASR speech consistency."""

from __future__ import annotations

import numpy as np
import pytest

import reward_fns.compose as compose
import reward_fns.speech_consistency as sc
from reward_fns import (
    audio_length_reward,
    compute_score,
    compute_score_batch,
    consistency_from_transcript,
    speech_consistency_reward,
    transcribe,
    voiced_seconds,
)


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: a gliding 140 Hz harmonic series, syllable-rate (4 Hz) envelope, faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.5 * t)) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (0.3 * wave * envelope / np.abs(wave).max() + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def with_pauses(rate: int, voiced: float = 2.0, pause: float = 2.0) -> np.ndarray:
    silence = np.zeros(int(pause * rate), np.float32)
    return np.concatenate([silence, speech_like(voiced, rate), silence, speech_like(voiced, rate, 1), silence])


def audio_info(wave: np.ndarray, rate: int, ref_seconds: float | None = 8.0) -> dict:
    return {
        "output_modality": "audio",
        "ref_text_words": 4,
        "ref_audio_seconds": ref_seconds,
        "response_audio": {"array": wave, "sampling_rate": rate},
    }


GOOD = "<think>a b c d</think>\n<answer>entailed</answer>"

# --- VAD and audio length ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
def test_voiced_seconds_counts_speech_not_pauses(rate: int) -> None:
    seconds = voiced_seconds(with_pauses(rate), rate)  # 4 s of speech inside 10 s of audio
    assert 3.6 <= seconds <= 4.6


def test_silence_and_empty_audio_have_no_voice() -> None:
    assert voiced_seconds(np.zeros(16000 * 3, np.float32), 16000) == 0.0
    assert voiced_seconds(np.zeros(0, np.float32), 24000) == 0.0


def test_a_clip_scores_the_same_whatever_was_scored_before() -> None:
    rate = 24000
    speech, silence = speech_like(1.0, rate), np.zeros(rate // 2, np.float32)
    first = [voiced_seconds(speech, rate), voiced_seconds(silence, rate)]
    again = [voiced_seconds(speech, rate), voiced_seconds(silence, rate)]
    assert first == again and first[1] == 0.0  # no detector state leaks from one clip into the next


def test_int16_pcm_is_accepted() -> None:
    pcm = (with_pauses(16000) * 32767).astype(np.int16)
    assert voiced_seconds(pcm, 16000) == pytest.approx(voiced_seconds(with_pauses(16000), 16000), abs=0.1)


def test_audio_length_is_capped_ratio() -> None:
    wave = with_pauses(24000)
    voiced = voiced_seconds(wave, 24000)
    assert audio_length_reward(wave, 24000, 8.0) == pytest.approx(voiced / 8.0)
    assert audio_length_reward(wave, 24000, 2.0) == 1.0
    assert audio_length_reward(wave, 24000, None) is None


def test_bad_vad_settings_and_shapes_fail_loudly() -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        voiced_seconds(np.zeros(160, np.float32), 16000, aggressiveness=5)
    with pytest.raises(ValueError, match="1-D"):
        voiced_seconds(np.zeros((2, 160), np.float32), 16000)


def test_mini_answer_recordings_are_mostly_voiced(shared_alr) -> None:
    import soundfile as sf

    for path in sorted((shared_alr / "mini").glob("dev/*/answer_*.wav")):
        wave, rate = sf.read(path, dtype="float32")
        duration = wave.size / rate
        assert 0.6 * duration <= voiced_seconds(wave, rate) <= duration, path


# --- the composed score for speech outputs ----------------------------------------------------------


def test_speech_output_scores_audio_length_with_soundmind_weight() -> None:
    wave = with_pauses(24000)
    result = compute_score("alr", GOOD, 1, audio_info(wave, 24000))
    expected_audio = min(1.0, voiced_seconds(wave, 24000) / 8.0)
    assert result["audio_length"] == pytest.approx(expected_audio)
    assert result["score"] == pytest.approx(1.0 + 2.0 + 1.0 + 0.75 * expected_audio)
    assert result["speech_consistency"] is None  # unweighted in soundmind: not computed


def test_speech_output_without_reference_skips_audio_length() -> None:
    result = compute_score("alr", GOOD, 1, audio_info(with_pauses(16000), 16000, ref_seconds=None))
    assert result["audio_length"] is None and result["score"] == 4.0


def test_text_output_ignores_audio() -> None:
    info = {**audio_info(with_pauses(16000), 16000), "output_modality": "text"}
    assert compute_score("alr", GOOD, 1, info)["audio_length"] is None


@pytest.mark.parametrize(
    "audio",
    [None, np.zeros(10, np.float32), {"array": np.zeros(10, np.float32)}, {"array": [0.0], "sampling_rate": 0}],
)
def test_speech_output_without_valid_audio_is_an_error(audio: object) -> None:
    info = {"output_modality": "audio", "ref_audio_seconds": 5.0}
    if audio is not None:
        info["response_audio"] = audio
    with pytest.raises(ValueError, match="response_audio|sampling_rate"):
        compute_score("alr", GOOD, 1, info)


def test_an_empty_recording_scores_zero_audio_length() -> None:
    result = compute_score("alr", GOOD, 1, audio_info(np.zeros(0, np.float32), 24000))
    assert result["audio_length"] == 0.0


# --- speech consistency -----------------------------------------------------------------------------


def test_consistency_from_transcript() -> None:
    response = "<think>The premise, clearly, holds.</think>\n<answer>entailed</answer>"
    assert consistency_from_transcript(response, "the premise clearly holds entailed") == 1.0
    assert consistency_from_transcript(response, "The premise holds. Entailed!") == pytest.approx(0.8)
    assert consistency_from_transcript(response, "") == 0.0
    assert consistency_from_transcript(response, "a b c d e f g h i j k l") == 0.0  # WER > 1 is clipped
    assert consistency_from_transcript("<think></think>", "") == 1.0
    assert consistency_from_transcript("<think></think>", "hello") == 0.0


def test_batch_transcribes_only_weighted_speech_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_transcribe(audios, model_id, language, device, batch_size):
        calls.append(len(audios))
        return ["a b c d entailed", "something else entirely"][: len(audios)]

    monkeypatch.setattr(compose, "transcribe", fake_transcribe)
    wave = with_pauses(16000)
    infos = [audio_info(wave, 16000), {"output_modality": "text", "ref_text_words": 4}, audio_info(wave, 16000)]
    weights = {"speech_consistency": 1.0}
    results = compute_score_batch(["alr"] * 3, [GOOD] * 3, [1] * 3, infos, preset="soundmind", weights=weights)
    assert calls == [2]  # one batched ASR call for the two speech outputs
    assert results[0]["speech_consistency"] == 1.0 and results[2]["speech_consistency"] == 0.0
    assert results[1]["speech_consistency"] is None
    assert results[0]["score"] - results[2]["score"] == pytest.approx(1.0)

    calls.clear()
    compute_score_batch(["alr"] * 3, [GOOD] * 3, [1] * 3, infos)  # soundmind: weight 0, no ASR
    assert calls == []


def test_tiny_whisper_transcribes_through_the_cached_pipeline(tiny_whisper: str) -> None:
    sc._asr_pipeline.cache_clear()
    long_wave = speech_like(45.0, 24000)  # longer than one 30 s Whisper window
    texts = transcribe([(long_wave, 24000), (np.zeros(0, np.float32), 16000)], tiny_whisper, device="cpu")
    assert len(texts) == 2 and isinstance(texts[0], str) and texts[1] == ""
    score = speech_consistency_reward(GOOD, speech_like(2.0, 16000), 16000, tiny_whisper, device="cpu")
    assert 0.0 <= score <= 1.0
    assert sc._asr_pipeline.cache_info().misses == 1  # loaded once, reused by the second call


def test_compute_score_runs_speech_consistency_with_a_configured_model(tiny_whisper: str) -> None:
    infos = [audio_info(speech_like(3.0, 24000), 24000), {"output_modality": "text", "ref_text_words": 4}]
    kwargs = {"weights": {"speech_consistency": 1.0}, "asr_model": tiny_whisper, "asr_device": "cpu"}
    results = compute_score_batch(["alr"] * 2, [GOOD] * 2, [1, 1], infos, **kwargs)
    assert 0.0 <= results[0]["speech_consistency"] <= 1.0
    assert results[1]["speech_consistency"] is None
