"""What the trainer does with the speech once the rewards have heard it: metrics, samples, and letting it go.

``SpeechTap.after_generation`` wraps the agent-loop manager's ``generate_sequences`` (rewards are
already computed inside the agent loop by then):

* the waveforms are popped from the batch, so they never travel on to the actor, reference or critic;
* training steps get ``speech/seconds/mean`` and ``speech/voiced_seconds/mean`` (WebRTC VAD, the
  ``audio_length`` reward's measure) over the audio-output rows, and ``timing_s/speech``: the seconds the
  speech stage's batches ran in the step (each response carries its share of its batch), summed over
  the replicas' servers (which speak in parallel, so it can exceed ``timing_s/gen``), through verl's
  own timing dict;
* validation writes a few responses per mode (``<input>_to_<output>``) under
  ``<output_dir>/samples/step_<N>/`` as wav + txt, and logs them to tensorboard (``add_audio`` /
  ``add_text``) and, when wandb is a logger, as ``wandb.Audio``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reward_fns.audio_length import voiced_seconds
from reward_fns.protocol import RESPONSE_AUDIO
from verl_audio.modality import row_modality
from verl_audio.rollout.agent_loop import SPEECH_FIELDS

logger = logging.getLogger(__name__)


def speech_metrics(audios: list[Any], compute_s: list[Any]) -> tuple[dict[str, float], float]:
    """(``speech/*`` metrics over the rows that have speech, seconds the speech stage ran)."""
    items = [a for a in audios if isinstance(a, dict) and "array" in a]
    metrics: dict[str, float] = {}
    if items:
        secs = [np.asarray(a["array"]).size / int(a["sampling_rate"]) for a in items]
        voiced = [voiced_seconds(a["array"], int(a["sampling_rate"])) for a in items]
        metrics = {"speech/seconds/mean": float(np.mean(secs)), "speech/voiced_seconds/mean": float(np.mean(voiced)),
                   "speech/responses": float(len(items))}  # fmt: skip
    total = float(sum(float(s) for s in compute_s if s is not None and np.isfinite(float(s))))
    return metrics, total


class SpeechTap:
    """Holds the tokenizer and output folder; see the module doc."""

    def __init__(self, tokenizer: Any, output_dir: str | None, samples_per_mode: int = 2,
                 loggers: list[str] | None = None) -> None:  # fmt: skip
        self.tokenizer, self.samples_per_mode = tokenizer, int(samples_per_mode)
        self.output_dir = Path(output_dir) if output_dir else None
        self.loggers = list(loggers or [])
        self.step_metrics: dict[str, float] = {}
        self._writer: Any = None

    def after_generation(self, batch: Any, output: Any) -> Any:
        """Pop the speech from ``output`` (a DataProto), record metrics or samples; returns ``output``."""
        nt = output.non_tensor_batch
        audios = list(nt.pop(RESPONSE_AUDIO)) if RESPONSE_AUDIO in nt else [None] * len(output)
        compute = list(nt.pop("speech_compute_s")) if "speech_compute_s" in nt else []
        for key in SPEECH_FIELDS:
            nt.pop(key, None)
        metrics, seconds = speech_metrics(audios, compute)
        if batch.meta_info.get("validate", False):
            if self.samples_per_mode > 0 and self.output_dir is not None:
                self.write_samples(batch, output, audios, int(batch.meta_info.get("global_steps", 0) or 0))
        else:
            self.step_metrics = metrics
            if compute:
                output.meta_info.setdefault("timing", {})["speech"] = seconds
        return output

    def take_step_metrics(self) -> dict[str, float]:
        metrics, self.step_metrics = self.step_metrics, {}
        return metrics

    def _texts(self, output: Any) -> list[str]:
        responses = output.batch["responses"]
        mask = output.batch["attention_mask"][:, -responses.shape[1] :]
        return [self.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True) for r, m in zip(responses, mask)]

    def write_samples(self, batch: Any, output: Any, audios: list[Any], step: int) -> Path:
        """wav + txt of the first ``samples_per_mode`` rows of each mode, to disk, tensorboard and wandb."""
        import soundfile as sf

        infos = batch.non_tensor_batch.get("extra_info", [None] * len(output))
        texts = self._texts(output)
        folder = self.output_dir / "samples" / f"step_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        taken: dict[str, int] = defaultdict(int)
        logged = []
        for i, (info, text, audio) in enumerate(zip(infos, texts, audios, strict=True)):
            mode = row_modality(info).label
            if taken[mode] >= self.samples_per_mode:
                continue
            k = taken[mode]
            taken[mode] += 1
            rid = (info or {}).get("id", i) if isinstance(info, dict) else i
            stem = folder / f"{mode}_{k}"
            stem.with_suffix(".txt").write_text(f"id: {rid}\n{text}\n", encoding="utf-8")
            wave = None
            if isinstance(audio, dict) and "array" in audio:
                wave, rate = np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"])
                sf.write(stem.with_suffix(".wav"), wave, rate, subtype="PCM_16")
            logged.append((mode, k, text, wave, rate if wave is not None else None))
        self._log(logged, step)
        logger.warning("verl-audio: %d validation samples in %s", len(logged), folder)
        return folder

    def _log(self, logged: list[tuple], step: int) -> None:
        if "tensorboard" in self.loggers and os.environ.get("TENSORBOARD_DIR"):
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(os.environ["TENSORBOARD_DIR"])
            for mode, k, text, wave, rate in logged:
                self._writer.add_text(f"val_samples/{mode}/{k}", text, step)
                if wave is not None and wave.size:
                    self._writer.add_audio(f"val_samples/{mode}/{k}", wave[None], step, sample_rate=rate)
            self._writer.flush()
        if "wandb" in self.loggers:
            import wandb

            if wandb.run is not None:
                wandb.log({f"val_samples/{mode}/{k}": (wandb.Audio(wave, sample_rate=rate, caption=text)
                                                       if wave is not None and wave.size else wandb.Html(text))
                           for mode, k, text, wave, rate in logged}, step=step)  # fmt: skip
