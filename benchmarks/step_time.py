"""Time per GRPO step of the tiny preset on this machine, split by phase, for audio and text prompts.

    python benchmarks/step_time.py [--steps 4] [--out outputs/bench_step_time]

Runs ``recipes/soundmind_alr.sh`` (PRESET=tiny) twice on the bundled demo sample: once with the
spoken questions (audio prompts) and once with the same questions as text, each text prompt
lengthened (its question repeated, then cut) to the token count of its audio prompt, so the two runs
differ only in where the prompt tokens come from. Per phase it prints the mean of verl's
``timing_s/*`` over the steps after the first (step 1 includes warm-up), and the audio/text ratio:
the overhead of audio (feature extraction, the audio encoder) at equal sequence length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
#: verl's timing keys, in the order a step runs them
PHASES = {"rollout": "timing_s/gen", "old log-prob": "timing_s/old_log_prob", "ref": "timing_s/ref",
          "update": "timing_s/update_actor", "weight sync": "timing_s/update_weights", "step": "timing_s/step",
          # rule rewards are scored in the agent loop, during the rollout (per-sample mean);
          # timing_s/reward is only the trainer reading the scores back
          "reward (per sample)": "timing_s/agent_loop/compute_score/mean", "reward (read)": "timing_s/reward"}


def prepare(out: Path) -> tuple[Path, Path]:
    """Audio-prompt and equal-length text-prompt parquet of the demo sample; returns their folders."""
    from verl_audio.models.audio_features import load_omni_processor
    from verl_audio.models.tiny import build_tiny_omni

    model = out / "tiny_omni"
    if not (model / "config.json").exists():
        build_tiny_omni(model, talker=True, vocab="small")
    folders = {}
    for modality in ("audio", "text"):
        folders[modality] = out / f"data_{modality}"
        subprocess.run([sys.executable, str(REPO / "examples/data_preprocess/alr.py"), "--src",
                        str(REPO / "verl_audio/data/demo_sample"), "--out", str(folders[modality]),
                        "--input-modality", modality, "--output-modality", "text", "--splits", "train,dev"],
                       check=True, capture_output=True)
    processor = load_omni_processor(model)
    for split in ("train", "dev"):
        audio = pd.read_parquet(folders["audio"] / f"{split}.parquet")
        text = pd.read_parquet(folders["text"] / f"{split}.parquet")
        prompts = []
        for (_, a), (_, t) in zip(audio.iterrows(), text.iterrows(), strict=True):
            target = _audio_prompt_tokens(processor, a)
            prompts.append([{"role": "user", "content": _lengthen(processor.tokenizer, t.prompt[0]["content"], target)}])
        text["prompt"] = prompts
        text.to_parquet(folders["text"] / f"{split}.parquet")
    return folders["audio"], folders["text"]


def _audio_prompt_tokens(processor, row) -> int:
    from verl_audio.data.rl_dataset import to_array
    from verl_audio.models.audio_features import audio_processor_kwargs

    content = row.prompt[0]["content"].replace("<audio>", "")
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": content}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    clip = to_array(row.audios[0])
    return int(processor(text=chat, audio=[clip], return_tensors="pt", **audio_processor_kwargs([clip]))["input_ids"].shape[1])


def _lengthen(tokenizer, content: str, target: int) -> str:
    """``content`` with its question repeated ahead of it until the chat prompt has ``target`` tokens."""
    def length(text: str) -> int:
        chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
        return len(tokenizer(chat)["input_ids"])

    filler_ids: list[int] = []
    while length(tokenizer.decode(filler_ids) + content) < target:
        filler_ids += tokenizer(content + "\n")["input_ids"]
    while filler_ids and length(tokenizer.decode(filler_ids) + content) > target:
        filler_ids.pop()
    return tokenizer.decode(filler_ids) + content


def run(out: Path, name: str, data: Path, steps: int) -> dict[str, float]:
    """One tiny-preset run on ``data``; the mean of each phase over steps 2..N."""
    from verl_audio.trainer.metrics_log import training_steps

    overrides = [f"actor_rollout_ref.model.path={out / 'tiny_omni'}", f"data.train_files={data / 'train.parquet'}",
                 f"data.val_files={data / 'dev.parquet'}", f"trainer.total_training_steps={steps}",
                 "trainer.save_freq=-1", "trainer.test_freq=-1", "verl_audio.export=false", "verl_audio.plot=false",
                 "trainer.resume_mode=disable"]
    env = {**os.environ, "PRESET": "tiny", "OUTPUTS": str(out), "EXPERIMENT": name, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "recipes/soundmind_alr.sh"), *overrides], cwd=REPO, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} run failed (rc {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    steps_data = training_steps(out / name / "metrics.jsonl")
    later = [data for step, data in steps_data.items() if step > 1] or list(steps_data.values())
    means = {phase: statistics.mean(d[key] for d in later if key in d) for phase, key in PHASES.items()}
    means["prompt tokens"] = statistics.mean(d["prompt_length/mean"] for d in later)
    return means


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run (the first is not averaged)")
    parser.add_argument("--out", default="outputs/bench_step_time", help="folder for models, data and runs")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    audio_data, text_data = prepare(out)
    results = {name: run(out, name, data, args.steps) for name, data in (("audio", audio_data), ("text", text_data))}
    print(f"tiny preset, {args.steps} steps, mean of steps 2..{args.steps} (seconds)")
    print(f"{'phase':<20}{'audio':>10}{'text':>10}{'audio/text':>12}")
    for phase in [*PHASES, "prompt tokens"]:
        a, t = results["audio"][phase], results["text"][phase]
        print(f"{phase:<20}{a:>10.3f}{t:>10.3f}{(a / t if t else float('nan')):>12.2f}")


if __name__ == "__main__":
    main()
