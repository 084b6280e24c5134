"""Time per GRPO step on this machine, split by phase, for audio and text prompts (and with / without
the audio-encoder cache).

    python benchmarks/step_time.py [--setting tiny|realistic] [--cache on|off|both] [--steps 4] [--out DIR]

Runs ``recipes/soundmind_alr.sh`` (PRESET=tiny) twice on the bundled demo sample: once with the
spoken questions (audio prompts) and once with the same questions as text, each text prompt
lengthened (its question repeated, then cut) to the token count of its audio prompt, so the two runs
differ only in where the prompt tokens come from. Per phase it prints the mean of verl's
``timing_s/*`` over the steps after the first (step 1 includes warm-up), and the audio/text ratio:
the overhead of audio (feature extraction, the audio encoder) at equal sequence length. With
``--cache both`` the audio run is made twice, with the audio-encoder cache off
(``actor_rollout_ref.model.audio_encoder_cache_size=0``) and on (the default), and the encoder passes
per step are printed beside the times.

Settings. ``tiny`` is the 20 M tiny Omni, whose decoder is so small that the audio encoder is a large
share of a forward. ``realistic`` is a scaled-down Omni whose audio-encoder / decoder FLOP ratio for
the demo questions (15-23 s) equals Qwen2.5-Omni-7B's on ALR's 60-110 s questions. The count
(``forward_flops``; FLOP = 2 multiply-adds, one prompt forward, biases and norms left out):

* audio encoder, a clip of S seconds: 100 S mel frames, 50 S tokens after the two convolutions,
  25 S outputs after pooling; conv1 (128 -> d_e, kernel 3) per frame, conv2 (d_e -> d_e, kernel 3) per
  token, per layer and token 4 d_e^2 (attention projections) + 2 d_e f_e (MLP) + 2 w d_e (attention
  within windows of w = n_window = 100 tokens), and the projection d_e -> d per output;
* decoder, N = 25 S + 33 tokens (the instruction text): per layer and token 2 d^2 + 2 d d_kv (q, o and
  k, v projections) + 3 d f (SwiGLU MLP), causal attention 2 d (t + 1) for the t-th token, and the
  vocabulary projection d V per token.

Qwen2.5-Omni-7B (encoder 32 layers, d_e 1280, f_e 5120; decoder 28 layers, d 3584, d_kv 512, f 18944,
V 152064): 3.87 / 22.1 TFLOP at 60 s, 4.84 / 27.7 at 75 s, 7.10 / 40.9 at 110 s: encoder / decoder
= 0.175, 0.175, 0.174 (15 % of a forward). The realistic model (``REALISTIC``: decoder 4 layers, d 256,
f 1344, 4 heads, 2 kv heads; encoder 3 layers, d_e 96, f_e 416) has 0.175 at the demo clips' 17.7 s mean;
the benchmark prints both ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
from recipe_runs import REPO, later_steps

#: Qwen2.5-Omni-7B's sizes (its config.json) that the FLOP count reads
OMNI_7B = {"audio": {"encoder_layers": 32, "d_model": 1280, "encoder_ffn_dim": 5120, "num_mel_bins": 128,
                     "n_window": 100, "output_dim": 3584},
           "text": {"num_hidden_layers": 28, "hidden_size": 3584, "kv_dim": 512, "intermediate_size": 18944,
                    "vocab_size": 152064}}
#: the realistic setting's thinker (everything else as the tiny Omni); head dim 64, mrope over 32 pairs
REALISTIC = {"audio": {"encoder_layers": 3, "d_model": 96, "encoder_ffn_dim": 416, "encoder_attention_heads": 3},
             "text": {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 1344,
                      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64}}
REALISTIC_MROPE = [8, 12, 12]
#: instruction tokens of an ALR audio prompt besides the audio placeholders (the demo prompts' count)
PROMPT_TEXT_TOKENS = 33
#: verl's timing keys, in the order a step runs them
PHASES = {"rollout": "timing_s/gen", "old log-prob": "timing_s/old_log_prob", "ref": "timing_s/ref",
          "update": "timing_s/update_actor", "weight sync": "timing_s/update_weights", "step": "timing_s/step",
          # rule rewards are scored in the agent loop, during the rollout (per-sample mean);
          # timing_s/reward is only the trainer reading the scores back
          "reward (per sample)": "timing_s/agent_loop/compute_score/mean", "reward (read)": "timing_s/reward"}


def forward_flops(audio: dict, text: dict, seconds: float, text_tokens: int = PROMPT_TEXT_TOKENS) -> tuple[float, float]:
    """(audio encoder, decoder) FLOP of one forward of a prompt with a clip of ``seconds`` (see module doc)."""
    d_e, f_e, window = audio["d_model"], audio["encoder_ffn_dim"], audio["n_window"]
    frames, tokens, outputs = 100 * seconds, 50 * seconds, 25 * seconds
    encoder = (frames * audio["num_mel_bins"] * 3 * d_e + tokens * 3 * d_e * d_e
               + audio["encoder_layers"] * tokens * (4 * d_e * d_e + 2 * d_e * f_e + 2 * window * d_e)
               + outputs * d_e * audio["output_dim"])
    d, n = text["hidden_size"], outputs + text_tokens
    decoder = (text["num_hidden_layers"] * (n * (2 * d * d + 2 * d * text["kv_dim"] + 3 * d * text["intermediate_size"])
                                            + n * (n + 1) / 2 * 2 * d)
               + n * d * text["vocab_size"])
    return 2 * encoder, 2 * decoder


def model_sizes(thinker_config) -> tuple[dict, dict]:
    """The sizes ``forward_flops`` reads, from a thinker config."""
    a, t = thinker_config.audio_config, thinker_config.text_config
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    audio = {k: getattr(a, k) for k in ("encoder_layers", "d_model", "encoder_ffn_dim", "num_mel_bins", "n_window",
                                          "output_dim")}
    text = {k: getattr(t, k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")}
    text["kv_dim"] = t.num_key_value_heads * head_dim
    return audio, text


def _realistic(config) -> None:
    thinker = config.thinker_config
    for key, value in REALISTIC["text"].items():
        setattr(thinker.text_config, key, value)
    thinker.text_config.rope_parameters = {**thinker.text_config.rope_parameters, "mrope_section": REALISTIC_MROPE}
    thinker.text_config.layer_types = ["full_attention"] * REALISTIC["text"]["num_hidden_layers"]
    for key, value in REALISTIC["audio"].items():
        setattr(thinker.audio_config, key, value)
    thinker.audio_config.output_dim = REALISTIC["text"]["hidden_size"]
    thinker.vision_config.out_hidden_size = REALISTIC["text"]["hidden_size"]


def build_model(out: Path, setting: str) -> Path:
    from verl_audio.models.tiny import build_tiny_omni

    model = out / f"{setting}_omni"
    if not (model / "config.json").exists():
        if setting == "tiny":
            build_tiny_omni(model, talker=True, vocab="small")
        else:
            build_tiny_omni(model, talker=False, vocab="small", edit_config=_realistic)
    return model


def prepare(out: Path, model: Path) -> tuple[Path, Path]:
    """Audio-prompt and equal-length text-prompt parquet of the demo sample; returns their folders."""
    from verl_audio.models.audio_features import load_omni_processor

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
        text = pd.read_parquet(folders["text"] / f"{split}.parquet")  # rewritten below: prompts lengthened
        prompts = []
        for (_, a), (_, t) in zip(audio.iterrows(), text.iterrows(), strict=True):
            target = _audio_prompt_tokens(processor, a)
            prompts.append([{"role": "user", "content": _lengthen(processor.tokenizer, t.prompt[0]["content"], target)}])
        text["prompt"] = prompts
        text.to_parquet(folders["text"] / f"{split}.parquet")
    return folders["audio"], folders["text"]


def _audio_prompt_tokens(processor, row) -> int:
    from verl_audio.data.decode import to_array
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


def run(out: Path, model: Path, name: str, data: Path, steps: int, cache: bool) -> dict[str, float]:
    """One tiny-preset run of ``model`` on ``data``; the mean of each phase over steps 2..N."""
    overrides = [f"actor_rollout_ref.model.path={model}", f"data.train_files={data / 'train.parquet'}",
                 f"data.val_files={data / 'dev.parquet'}", f"trainer.total_training_steps={steps}"]
    if not cache:
        overrides.append("actor_rollout_ref.model.audio_encoder_cache_size=0")
    later = later_steps(out, name, overrides)
    means = {phase: statistics.mean(d[key] for d in later if key in d) for phase, key in PHASES.items()}
    means["prompt tokens"] = statistics.mean(d["prompt_length/mean"] for d in later)
    for phase in ("old_log_prob", "ref", "update"):
        key = f"audio_encoder/passes/{phase}"
        means[f"encoder passes, {phase}"] = statistics.mean(d.get(key, 0.0) for d in later)
    return means


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=("tiny", "realistic"), default="tiny",
                        help="the model: tiny Omni, or one with Qwen2.5-Omni-7B's encoder/decoder FLOP ratio")
    parser.add_argument("--cache", choices=("on", "off", "both"), default="on",
                        help="audio-encoder cache in the audio run(s); both: one run without and one with it")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run (the first is not averaged)")
    parser.add_argument("--out", default="outputs/bench_step_time", help="folder for models, data and runs")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(out, args.setting)
    audio_data, text_data = prepare(out, model)
    print_flop_ratios(model, audio_data)
    caches = {"on": [True], "off": [False], "both": [False, True]}[args.cache]
    results = {"text": run(out, model, f"{args.setting}_text", text_data, args.steps, cache=True)}
    for cache in caches:
        name = f"audio, cache {'on' if cache else 'off'}"
        results[name] = run(out, model, f"{args.setting}_audio_cache_{'on' if cache else 'off'}", audio_data,
                            args.steps, cache)
    print(f"{args.setting} setting, {args.steps} steps, mean of steps 2..{args.steps} (seconds)")
    audio_runs = [name for name in results if name != "text"]
    print(f"{'phase':<28}" + "".join(f"{name:>18}{'/ text':>8}" for name in audio_runs) + f"{'text':>10}")
    rows = [*PHASES, "prompt tokens", "encoder passes, old_log_prob", "encoder passes, ref", "encoder passes, update"]
    for phase in rows:
        t = results["text"][phase]
        line = f"{phase:<28}"
        for name in audio_runs:
            a = results[name][phase]
            ratio = f"{a / t:>8.2f}" if t and not phase.startswith("encoder") else f"{'':>8}"
            line += f"{a:>18.3f}{ratio}"
        print(line + f"{t:>10.3f}")


def print_flop_ratios(model: Path, audio_data: Path) -> None:
    """Encoder / decoder FLOP of one prompt forward: Qwen2.5-Omni-7B on 60-110 s, this model on the demo clips."""
    from transformers import AutoConfig

    from verl_audio.models.omni_config import thinker_config

    for seconds in (60, 85, 110):
        enc, dec = forward_flops(OMNI_7B["audio"], OMNI_7B["text"], seconds)
        print(f"Qwen2.5-Omni-7B, {seconds} s: encoder {enc / 1e12:.2f} TFLOP, decoder {dec / 1e12:.2f} TFLOP, "
              f"ratio {enc / dec:.3f}")
    audio, text = model_sizes(thinker_config(AutoConfig.from_pretrained(model)))
    seconds = statistics.mean(pd.read_parquet(audio_data / "train.parquet").extra_info.map(
        lambda e: e["question_audio_seconds"]))
    enc, dec = forward_flops(audio, text, seconds)
    print(f"this model, {seconds:.1f} s (demo train mean): encoder {enc / 1e9:.2f} GFLOP, "
          f"decoder {dec / 1e9:.2f} GFLOP, ratio {enc / dec:.3f}")


if __name__ == "__main__":
    main()
