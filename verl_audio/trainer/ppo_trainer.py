"""verl's ``RayPPOTrainer`` plus two things a reader of ``metrics.jsonl`` needs.

* Reward components per step. verl puts the reward function's extra outputs (``answer``, ``format``,
  ``text_length``, ...) into the batch but logs only the combined score for training steps; here the
  mean of each component over the responses where it applies (``None`` = not applicable) is added as
  ``reward/<name>/mean`` to the step's metrics. The hook is ``_update_actor``: verl reduces the
  returned ``meta_info["metrics"]`` into the step's metrics right after it.
* Metrics history on resume: after verl loads a checkpoint (``_load_checkpoint``), the lines of the
  steps that will be run again are dropped from ``metrics.jsonl`` (see ``metrics_log``).
* Speech (``verl_audio.speech.trainer_hook.SpeechTap``): after each generation the waveforms leave the
  batch; training steps get ``speech/*`` metrics and ``timing_s/speech``; validation writes samples.
* A finished run stays finished: verl's ``fit`` increments the step before it checks for the last one,
  so rerunning a command whose newest checkpoint is already at ``total_training_steps`` would train (and
  save) one step more. Here ``fit`` returns after loading such a checkpoint, before validating.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from verl_audio.trainer import metrics_log

logger = logging.getLogger(__name__)

#: reward outputs averaged into the step metrics: the score, each component, and accuracy
REWARD_KEYS = ("score", "format", "answer", "text_length", "audio_length", "speech_consistency", "acc")
PREFIX = "reward/"


def reward_component_means(non_tensor_batch: dict[str, Any], keys: Iterable[str] = REWARD_KEYS) -> dict[str, float]:
    """``{"reward/<key>/mean": mean}`` over the responses where ``key`` applies (not None / NaN)."""
    means = {}
    for key in keys:
        if key not in non_tensor_batch:
            continue
        values = [float(v) for v in non_tensor_batch[key] if v is not None and np.isfinite(float(v))]
        if values:
            means[f"{PREFIX}{key}/mean"] = float(np.mean(values))
            means[f"{PREFIX}{key}/applicable"] = len(values) / len(non_tensor_batch[key])
    return means


class _RunComplete(Exception):
    """Raised from ``_load_checkpoint`` when the loaded checkpoint is the run's last step."""


class AudioPPOTrainer(RayPPOTrainer):
    """``RayPPOTrainer`` with reward components in each step's metrics and a resumable metrics file."""

    def init_workers(self) -> None:
        super().init_workers()
        from verl_audio.speech.trainer_hook import SpeechTap

        va = self.config.get("verl_audio", {}) or {}
        self.speech_tap = SpeechTap(self.tokenizer, va.get("output_dir"), va.get("val_samples_per_mode", 2),
                                    list(self.config.trainer.logger or []))
        manager, generate = self.async_rollout_manager, self.async_rollout_manager.generate_sequences

        def generate_and_tap(batch: DataProto) -> DataProto:
            return self.speech_tap.after_generation(batch, generate(batch))

        manager.generate_sequences = generate_and_tap

    def _update_actor(self, batch: DataProto) -> DataProto:
        output = super()._update_actor(batch)
        means = reward_component_means(batch.non_tensor_batch)
        if getattr(self, "speech_tap", None) is not None:
            means.update(self.speech_tap.take_step_metrics())
        # reduce_metrics averages lists; one value per key keeps the mean as computed here
        output.meta_info.setdefault("metrics", {}).update({k: [v] for k, v in means.items()})
        return output

    def fit(self) -> None:
        try:
            super().fit()
        except _RunComplete:
            self._shutdown_dump_executor()
            logger.warning("verl-audio: the newest checkpoint is step %d of %d: training is complete, nothing to run",
                           self.global_steps, self.total_training_steps)

    def _load_checkpoint(self) -> Any:
        result = super()._load_checkpoint()
        if 0 < self.total_training_steps <= self.global_steps:
            raise _RunComplete()
        path = metrics_log.metrics_path()
        if path is not None:
            dropped = metrics_log.trim_after(path, self.global_steps)
            logger.warning("verl-audio: %s starts at step %d (%d later lines dropped)", path, self.global_steps, dropped)
            # verl saves a step's checkpoint before it logs the step: a run stopped in between lacks that line
            if self.global_steps > 0 and self.global_steps not in metrics_log.training_steps(path):
                logger.warning("verl-audio: %s has no line for step %d: the run stopped after saving its checkpoint "
                               "and before logging it; that step's metrics are lost", path, self.global_steps)
        return result
