"""verl's ``RayPPOTrainer`` plus two things a reader of ``metrics.jsonl`` needs.

* Reward components per step. verl puts the reward function's extra outputs (``answer``, ``format``,
  ``text_length``, ...) into the batch but logs only the combined score for training steps; here the
  mean of each component over the responses where it applies (``None`` = not applicable) is added as
  ``reward/<name>/mean`` to the step's metrics. The hook is ``_update_actor``: verl reduces the
  returned ``meta_info["metrics"]`` into the step's metrics right after it.
* Audio-encoder work per step: ``audio_encoder/{passes,cache_hits,seconds}/{old_log_prob,ref,update,step}``,
  summed over the workers (clips run through the audio encoder, clips served from its cache, seconds in
  the encoder). The engine reports them with each batch's output (``verl_audio.models.encoder_cache``);
  the worker-group calls of old log-prob and reference are wrapped to collect them, and the update adds
  them to the step's metrics.
* Metrics history on resume: after verl loads a checkpoint (``_load_checkpoint``), the lines of the
  steps that will be run again are dropped from ``metrics.jsonl`` (see ``metrics_log``).
* Validation per mode: besides verl's per-data-source metrics, ``val-mode/<mode>/<metric>`` (accuracy,
  format rate, items scored / failed, and pass@k / maj@k with ``val_kwargs.n`` > 1) computed by the
  evaluation CLI's scorer (``verl_audio.eval.scoring.validation_metrics``) from the reward's ``mode``,
  ``acc``, ``format`` and ``pred``, so a validation line and ``python -m verl_audio.eval`` report the same table;
  rows with grouping fields (multiple choice: MMAU's task, difficulty, ...) add the same metrics per group,
  ``val-group/<field>=<value>/<metric>`` (``verl_audio.trainer.val_groups``).
* Bad audio and decodes per step: the datasets are told the step they draw rows for (recorded in
  ``bad_audio.jsonl``); each training line gets ``bad_audio/skipped`` (rows left out of the step for bad
  audio), ``audio/clip_decodes`` (clips the rollout's agent-loop workers decoded for the step) and
  ``audio/check_decodes`` (decodes of the trainer's own checks of drawn rows); validation adds
  ``val-aux/bad_audio/skipped`` and ``val-aux/audio/clip_decodes``.
* Speech (``verl_audio.trainer.speech_tap.SpeechTap``): after each generation the waveforms leave the
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

from verl_audio.data.decode_cache import take_decode_count
from verl_audio.eval.scoring import validation_metrics
from verl_audio.models.encoder_cache import METRIC_KEYS
from verl_audio.trainer import metrics_log
from verl_audio.trainer.val_groups import group_validation_metrics

logger = logging.getLogger(__name__)

#: reward outputs averaged into the step metrics: the score, each component, and accuracy
REWARD_KEYS = ("score", "format", "answer", "text_length", "audio_length", "speech_consistency", "acc",
               "answer_tag", "ended", "answer_words")
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


#: the phases of a step whose forwards run the actor's or reference's audio encoder
ENCODER_PHASES = ("old_log_prob", "ref", "update")


def encoder_metric_sums(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"audio_encoder/passes": total, ...}``: the engine's per-rank (per mini-batch) counters summed."""
    return {key: float(np.sum(metrics[prefix + key])) for key in METRIC_KEYS if prefix + key in metrics}


class _RunComplete(Exception):
    """Raised from ``_load_checkpoint`` when the loaded checkpoint is the run's last step."""


class AudioPPOTrainer(RayPPOTrainer):
    """``RayPPOTrainer`` with reward components in each step's metrics and a resumable metrics file."""

    @property
    def global_steps(self) -> int:
        return self.__dict__.get("_global_steps", 0)

    @global_steps.setter
    def global_steps(self, step: int) -> None:
        # verl sets the step before drawing the batch for it: the datasets record it with each bad row
        self._global_steps = step
        for dataset in (getattr(self, "train_dataset", None), getattr(self, "val_dataset", None)):
            if dataset is not None and hasattr(dataset, "current_step"):
                dataset.current_step = step

    def _dataset_skips(self, dataset: Any) -> int:
        report = getattr(dataset, "report", None)
        return report.take_skipped() if report is not None else 0

    def _rollout_decodes(self) -> int:
        """Decodes the agent-loop workers made since the last call (each keeps its own count)."""
        import ray

        workers = getattr(getattr(self, "async_rollout_manager", None), "agent_loop_workers", None) or []
        return int(sum(ray.get([w.__ray_call__.remote(take_decode_count) for w in workers])))

    def _audio_metrics(self, dataset: Any, prefix: str = "") -> dict[str, float]:
        metrics = {f"{prefix}bad_audio/skipped": self._dataset_skips(dataset),
                   f"{prefix}audio/clip_decodes": self._rollout_decodes()}
        if not prefix:
            metrics["audio/check_decodes"] = take_decode_count()
        return metrics

    def _validate(self, merged: bool = False) -> Any:
        self._audio_metrics(self.val_dataset, "val-aux/")  # counts up to here belong to training
        result = super()._validate(merged=merged)
        if isinstance(result, dict) and not merged:
            result.update(self._audio_metrics(self.val_dataset, "val-aux/"))
        return result

    def init_workers(self) -> None:
        super().init_workers()
        self._encoder_work: dict[str, dict[str, float]] = {}
        wg = self.actor_rollout_wg
        wg.compute_log_prob = self._collecting(wg.compute_log_prob, "old_log_prob")
        if self.use_reference_policy and not self.ref_in_actor:
            self.ref_policy_wg.compute_ref_log_prob = self._collecting(self.ref_policy_wg.compute_ref_log_prob, "ref")
        self._tap_speech()

    def _tap_speech(self) -> None:
        """Route each generation through ``SpeechTap`` (waveforms leave the batch, speech metrics, samples)."""
        from verl_audio.trainer.speech_tap import SpeechTap

        va = self.config.get("verl_audio", {}) or {}
        self.speech_tap = SpeechTap(self.tokenizer, va.get("output_dir"), va.get("val_samples_per_mode", 2),
                                    list(self.config.trainer.logger or []))
        manager, generate = self.async_rollout_manager, self.async_rollout_manager.generate_sequences

        def generate_and_tap(batch: DataProto) -> DataProto:
            return self.speech_tap.after_generation(batch, generate(batch))

        manager.generate_sequences = generate_and_tap
    def _collecting(self, call: Any, phase: str) -> Any:
        """``call`` (a worker-group method returning a TensorDict with metrics) noting its encoder counters."""
        from verl.utils import tensordict_utils as tu

        def collect(data: Any, *args: Any, **kwargs: Any) -> Any:
            # the reference of a LoRA actor is the actor's compute_log_prob with the adapter off
            name = "ref" if tu.get(data, "no_lora_adapter", default=False) else phase
            output = call(data, *args, **kwargs)
            metrics = tu.get(output, "metrics", default=None) or {}
            for key, value in encoder_metric_sums(metrics).items():
                work = self._encoder_work.setdefault(name, {})
                work[key] = work.get(key, 0.0) + value
            return output

        return collect

    def _encoder_step_metrics(self, update_metrics: dict[str, Any]) -> dict[str, float]:
        """This step's ``audio_encoder/<counter>/<phase>`` (and ``/step``); the collected counters are reset."""
        work, self._encoder_work = getattr(self, "_encoder_work", {}), {}
        work["update"] = encoder_metric_sums(update_metrics, prefix="actor/")
        for key in METRIC_KEYS:
            update_metrics.pop("actor/" + key, None)
        step = {}
        for key in METRIC_KEYS:
            values = {phase: work.get(phase, {}).get(key) for phase in ENCODER_PHASES}
            step.update({f"{key}/{phase}": v for phase, v in values.items() if v is not None})
            if any(v is not None for v in values.values()):
                step[f"{key}/step"] = sum(v for v in values.values() if v is not None)
        return step

    def _update_actor(self, batch: DataProto) -> DataProto:
        output = super()._update_actor(batch)
        metrics = output.meta_info.setdefault("metrics", {})
        means = {**reward_component_means(batch.non_tensor_batch), **self._audio_metrics(self.train_dataset),
                 **self._encoder_step_metrics(metrics)}
        if getattr(self, "speech_tap", None) is not None:
            means.update(self.speech_tap.take_step_metrics())
        # reduce_metrics averages lists; one value per key keeps the value as computed here
        metrics.update({k: [v] for k, v in means.items()})
        return output

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns):
        metrics = super()._val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict, sample_turns)
        metrics.update(validation_metrics(sample_uids, reward_extra_infos_dict))
        metrics.update(group_validation_metrics(sample_uids, reward_extra_infos_dict))
        return metrics

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
