"""The few lines a run prints last (and writes to ``<output_dir>/summary.txt``): what it did and where it is.

Steps trained, the mean reward, LoRA (rank, what reached the rollout), the last validation score, the paths of the checkpoint, export, curve,
metrics and config, and the next commands to try. When every step's reward was zero (a random tiny model on
ALR never writes the answer format the rules reward) it says so and points to the run that visibly learns.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from verl_audio.trainer.metrics_log import finite, read_lines, training_steps

SCORE = "critic/score/mean"
#: validation accuracy over every mode (``AudioPPOTrainer``'s val-mode table)
VAL_ACCURACY = "val-mode/all/accuracy"
LEARNS_FROM_SCRATCH = "bash examples/hear_tones/train.sh"
NO_REWARD_NOTE = (
    "every step's reward was 0: the random model never writes the answer format the reward rules check, so "
    "GRPO had no signal to learn from (expected for a tiny random model; the pipeline ran end to end). For a "
    f"run that learns visibly from random weights: {LEARNS_FROM_SCRATCH}"
)


def _last_validation(metrics: Path) -> tuple[int, float, float | None] | None:
    """(step, accuracy, items scored) of the newest line carrying the validation accuracy."""
    found = None
    for record in read_lines(metrics):
        data = record.get("data", {})
        if finite(data.get(VAL_ACCURACY)):
            found = (int(record["step"]), float(data[VAL_ACCURACY]), data.get("val-mode/all/n_scored"))
    return found


def reward_was_always_zero(steps: dict[int, dict[str, Any]]) -> bool:
    """Whether every logged step had a mean score of exactly 0 (and there was at least one)."""
    scores = [float(d[SCORE]) for d in steps.values() if finite(d.get(SCORE))]
    return bool(scores) and all(s == 0.0 for s in scores)


def summarize(config: Any, out: Path, checkpoint: Path | None, export: Path | None, curve: Path | None) -> str:
    """The summary text of the run in ``out`` (see module doc)."""
    metrics = out / "metrics.jsonl"
    steps = training_steps(metrics) if metrics.exists() else {}
    scores = [float(d[SCORE]) for d in steps.values() if finite(d.get(SCORE))]
    total = int(config.trainer.total_training_steps or 0)
    lines = [f"verl-audio: run {config.trainer.experiment_name} finished"]
    lines.append(f"  steps       {len(steps)} logged" + (f" of {total}" if total else ""))
    if scores:
        lines.append(f"  reward      mean {sum(scores) / len(scores):.3f} over the steps, last step {scores[-1]:.3f}")
    model = config.actor_rollout_ref.model
    if int(model.get("lora_rank", 0) or 0) > 0:
        synced = "merged weights" if (model.get("lora") or {}).get("merge") else "adapters"
        lines.append(f"  lora        rank {model.lora_rank}, alpha {model.lora_alpha}; {synced} synced to the "
                     f"{config.actor_rollout_ref.rollout.name} rollout; the export holds them merged")
    validation = _last_validation(metrics) if metrics.exists() else None
    if validation is not None:
        step, accuracy, scored = validation
        items = f" ({int(scored)} items scored)" if finite(scored) else ""
        lines.append(f"  validation  accuracy {accuracy:.3f} at step {step}{items}")
    for name, path in (("checkpoint", checkpoint), ("export", export), ("curve", curve), ("metrics", metrics),
                       ("config", out / "config.yaml")):
        if path is not None and Path(path).exists():
            lines.append(f"  {name:<11} {path}")
    if reward_was_always_zero(steps):
        lines.append(textwrap.fill(NO_REWARD_NOTE, width=110, initial_indent="  note        ",
                                   subsequent_indent=" " * 14))
    lines.append("  next")
    if export is not None:
        data = config.data.val_files
        data = data if isinstance(data, str) else data[0]
        lines.append(f"    python -m verl_audio.eval --model {export} --data {data} --out {out / 'eval'}")
    lines.append(f"    tensorboard --logdir {out / 'tensorboard'}")
    if not reward_was_always_zero(steps):
        lines.append(f"    {LEARNS_FROM_SCRATCH}   # GRPO from random weights on a listening task")
    return "\n".join(lines)
