"""Audio-encoder passes in real GRPO steps (the tiny preset: verl's trainer, Ray, FSDP2 over 2 gloo workers,
the `hf` rollout), read from metrics.jsonl, and the training metrics with and without the cache.

Two prompts, n = 4, no shuffling and no batch balancing, so each of the 2 workers holds the 4 copies of one
prompt in every phase, and step 2 sees step 1's clips again. About 5.5 minutes per run on 2 idle cores.
The rollout samples from the top token only (``top_k=1``): a sampled `hf` rollout draws each batch from
one generator per server, so which requests share a batch (arrival timing) moves its tokens between two
runs of the same command, with or without the cache (measured: gradient norm 3.6e-4 apart, step 1).
With that fixed, every metric that does not measure time, memory or the encoder work is the same bits.
"""

from __future__ import annotations

import pytest

from helpers.recipes import EXPERIMENT, run_recipe, training_lines

OVERRIDES = ("trainer.total_training_steps=2", "trainer.test_freq=-1", "trainer.save_freq=-1",
             "verl_audio.export=false", "verl_audio.plot=false", "actor_rollout_ref.rollout.n=4",
             "data.train_max_samples=2", "data.shuffle=false", "trainer.balance_batch=false",
             # a gradient for the random model (no rule reward is ever earned): step 2 runs moved weights
             "actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.calculate_entropy=true",
             # a rollout that two runs repeat token for token (see the module doc)
             "actor_rollout_ref.rollout.top_k=1")
PROMPTS, N = 2, 4
#: metrics that measure time or memory, or the encoder work itself: expected to differ between the runs
VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/", "audio_encoder/", "time/")


def _run(tmp_path_factory: pytest.TempPathFactory, name: str, *extra: str) -> dict[int, dict]:
    outputs = tmp_path_factory.mktemp(name)
    result = run_recipe(outputs, *OVERRIDES, *extra)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return training_lines(outputs / EXPERIMENT / "metrics.jsonl")


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    return _run(tmp_path_factory, "encoder_cache_on")


def _counts(step: dict, counter: str) -> dict[str, float]:
    return {phase: step[f"audio_encoder/{counter}/{phase}"] for phase in ("old_log_prob", "ref", "update", "step")}


@pytest.mark.slow  # a recipe run (about 4.5 min in the default suite); the engine-level counts stay there
def test_each_clip_is_encoded_once_in_a_step_and_never_again(cached: dict[int, dict]) -> None:
    assert sorted(cached) == [1, 2]
    samples = PROMPTS * N
    # step 1: old log-prob encodes the 2 distinct clips (one per worker); the reference (same frozen weights,
    # same precision, same process) and the update read them
    assert _counts(cached[1], "passes") == {"old_log_prob": PROMPTS, "ref": 0, "update": 0, "step": PROMPTS}
    assert _counts(cached[1], "cache_hits") == {"old_log_prob": samples - PROMPTS, "ref": samples,
                                                "update": samples, "step": 3 * samples - PROMPTS}
    # step 2, the same clips: no encoder pass at all
    assert _counts(cached[2], "passes") == {"old_log_prob": 0, "ref": 0, "update": 0, "step": 0}
    assert _counts(cached[2], "cache_hits")["step"] == 3 * samples
    assert cached[1]["audio_encoder/seconds/old_log_prob"] > 0 and cached[2]["audio_encoder/seconds/step"] == 0
    # the agent-loop workers decode each clip once for its n copies, and not again on step 2 (same file version)
    assert cached[1]["audio/clip_decodes"] == PROMPTS and cached[2]["audio/clip_decodes"] == 0


@pytest.mark.slow
def test_training_metrics_are_unchanged_by_the_cache(cached: dict[int, dict],
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    uncached = _run(tmp_path_factory, "encoder_cache_off", "actor_rollout_ref.model.audio_encoder_cache_size=0")
    samples = PROMPTS * N
    for step in (1, 2):  # every copy of every clip, in every phase
        assert _counts(uncached[step], "passes") == {"old_log_prob": samples, "ref": samples, "update": samples,
                                                     "step": 3 * samples}
    for step in (1, 2):
        compared = 0
        for key, value in cached[step].items():
            volatile = key.startswith(VOLATILE) or "/perf/" in key  # actor/perf/*: memory
            if volatile or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            assert str(value) == str(uncached[step][key]), (step, key, value, uncached[step][key])  # nan == nan
            compared += 1
        assert compared > 20 and "actor/pg_loss" in cached[step] and "critic/score/mean" in cached[step]
        assert "actor/grad_norm" in cached[step]
