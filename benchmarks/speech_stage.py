"""The speech stage's cost: its share of a GRPO step, and seconds of speech per second of compute.

    python benchmarks/speech_stage.py                      # run the tiny preset with OUTPUT_MODALITY=audio
    python benchmarks/speech_stage.py --metrics RUN/metrics.jsonl   # read a finished run instead
    python benchmarks/speech_stage.py --stage-only         # the stage alone, in-process, batch 1 and 4

From a run's ``metrics.jsonl`` (steps after the first, which includes start-up): ``timing_s/speech``
(summed over the replicas' servers, which speak in parallel) / replicas / ``timing_s/step``, and
``speech/seconds/mean * speech/responses / timing_s/speech``. Figures depend on
the machine and its load; they are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def from_metrics(path: Path, replicas: int = 2) -> dict[str, float]:
    """Per-step means; ``timing_s/speech`` sums the servers' speech seconds, so shares divide by ``replicas``."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    steps = [r["data"] for r in lines if "training/global_step" in r["data"] and r["step"] > 1] or [
        r["data"] for r in lines if "training/global_step" in r["data"]
    ]
    speech = sum(d["timing_s/speech"] for d in steps)
    step = sum(d["timing_s/step"] for d in steps)
    gen = sum(d["timing_s/gen"] for d in steps)
    spoken = sum(d["speech/seconds/mean"] * d["speech/responses"] for d in steps)
    return {"steps": len(steps), "step_s": step / len(steps), "gen_s": gen / len(steps),
            "speech_s_summed_over_servers": speech / len(steps),
            "speech_share_of_step": speech / replicas / step, "speech_share_of_gen": speech / replicas / gen,
            "speech_seconds_per_compute_second": spoken / speech}  # fmt: skip


def run_tiny(steps: int) -> Path:
    out = Path(tempfile.mkdtemp(prefix="speech_bench_"))
    env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(out), "EXPERIMENT": "bench", "OUTPUT_MODALITY": "audio",
           "PYTHON": sys.executable}  # fmt: skip
    cmd = ["bash", str(REPO / "recipes" / "soundmind_alr.sh"), f"trainer.total_training_steps={steps}",
           f"trainer.test_freq={steps}", "trainer.save_freq=-1", "verl_audio.export=false"]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return out / "bench" / "metrics.jsonl"


def stage_only() -> None:
    import torch

    from verl_audio.models.tiny import build_tiny_omni
    from verl_audio.rollout.hf.engine import eos_token_ids
    from verl_audio.speech.config import SpeechOptions
    from verl_audio.speech.stage import SpeechRequest, SpeechStage
    from verl_audio.speech.talker import load_speech_modules

    torch.set_num_threads(1)
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    path = build_tiny_omni(Path(tempfile.mkdtemp()) / "tiny", talker=True)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path).eval()
    stage = SpeechStage(load_speech_modules(path), thinker, SpeechOptions(talker_max_new_tokens=100),
                        eos_token_ids(thinker, str(path)))  # fmt: skip
    print("talker/token2wav bytes:", stage.modules.parameter_bytes())
    for batch in (1, 4):
        reqs = [SpeechRequest(list(range(7, 40)), [], list(range(50, 82)), "Chelsie", i) for i in range(batch)]
        stage.speak(reqs[:1])  # warm-up
        start = time.perf_counter()
        results = stage.speak(reqs)
        took = time.perf_counter() - start
        spoken = sum(r.waveform.size / r.sampling_rate for r in results)
        print(f"batch {batch}: {spoken:.2f} s of speech in {took:.2f} s -> {spoken / took:.3f} s speech / s compute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, help="metrics.jsonl of a finished OUTPUT_MODALITY=audio run")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps when running the tiny preset")
    parser.add_argument("--replicas", type=int, default=2, help="rollout replicas of the run (tiny preset: 2)")
    parser.add_argument("--stage-only", action="store_true", help="time the stage alone, in this process")
    args = parser.parse_args()
    if args.stage_only:
        stage_only()
        return
    metrics = args.metrics or run_tiny(args.steps)
    for key, value in from_metrics(metrics, args.replicas).items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
