"""Full fine-tuning vs LoRA: trainable parameters, optimizer-state bytes, and time per GRPO step.

    python benchmarks/lora_vs_full.py [--rank 8] [--steps 4] [--out DIR] [--sizes-only]

1. Sizes for Qwen2.5-Omni-7B's language model (built on the meta device from transformers' default thinker
   config, whose language model has the 7B's sizes: checked against ``step_time.OMNI_7B``; its default encoder
   configs are not the 7B's, so the frozen encoders are left out), trained as the recipe trains it: full
   fine-tuning trains the language model, LoRA trains adapters on its projections
   (``verl_audio.models.lora.default_targets``). Bytes are fp32 (verl's master weights): the AdamW state is
   two fp32 tensors per trainable parameter, the gradients one; per GPU is that over the paper preset's 8
   (FSDP shards both).
2. Time per step on this machine for ``step_time.py``'s ``realistic`` model (a scaled-down Omni whose audio
   encoder / decoder FLOP ratio is the 7B's on ALR): the tiny preset of ``recipes/soundmind_alr.sh`` on the
   demo sample, ``--steps`` steps, mean of steps 2..N of verl's timings, once without and once with
   ``LORA_RANK`` (hf rollout: the adapter reaches it each step instead of the whole model).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from recipe_runs import later_steps
from step_time import OMNI_7B, build_model

#: verl's timings per step, in the order a step runs them
PHASES = {"step": "timing_s/step", "rollout": "timing_s/gen", "old log-prob": "timing_s/old_log_prob",
          "ref": "timing_s/ref", "update actor": "timing_s/update_actor", "weight sync": "timing_s/update_weights"}


def sizes(rank: int) -> dict[str, int]:
    """Parameters of Qwen2.5-Omni-7B's language model that full fine-tuning trains, and those LoRA trains."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from verl_audio.models.families import family_named
    from verl_audio.models.lora import default_targets, encoder_exclusion

    config = Qwen2_5OmniThinkerConfig()
    text = config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.vocab_size) == tuple(
        OMNI_7B["text"][k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")), text
    family = family_named("qwen2_5_omni")
    with torch.device("meta"):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config)
        language_model = sum(p.numel() for name, p in model.named_parameters()
                             if not name.startswith(("audio_tower.", "visual.")))
        peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=default_targets(family),
                                                      exclude_modules=encoder_exclusion(family)))
        adapters = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return {"full": language_model, "lora": adapters}


def print_sizes(rank: int, gpus: int = 8) -> None:
    counts = sizes(rank)
    print(f"Qwen2.5-Omni-7B language model, fp32; per GPU: sharded over the paper preset's {gpus}")
    print(f"{'':<20}{'trainable':>16}{'AdamW state':>14}{'per GPU':>12}{'gradients':>12}{'per GPU':>12}")
    for name, key in (("full fine-tuning", "full"), (f"LoRA r={rank}", "lora")):
        n = counts[key]
        state, grads = 8 * n, 4 * n
        print(f"{name:<20}{n:>16,}{_gib(state):>14}{_gib(state / gpus):>12}{_gib(grads):>12}{_gib(grads / gpus):>12}")
    print(f"LoRA trains {counts['lora'] / counts['full']:.2%} of the parameters full fine-tuning trains; the frozen "
          f"base weights ({_gib(4 * counts['full'])} in fp32) are held either way")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def print_step_times(out: Path, rank: int, steps: int) -> None:
    model = build_model(out, "realistic")
    overrides = [f"actor_rollout_ref.model.path={model}", f"trainer.total_training_steps={steps}"]
    results = {}
    for name, env in (("full", {}), (f"lora r={rank}", {"LORA_RANK": str(rank)})):
        later = later_steps(out, f"realistic_{name.replace(' ', '_').replace('=', '')}", overrides, **env)
        results[name] = {phase: statistics.mean(d[key] for d in later if key in d) for phase, key in PHASES.items()}
    print(f"realistic model on this machine, {steps} steps, mean of steps 2..{steps} (seconds)")
    print(f"{'phase':<16}" + "".join(f"{name:>14}" for name in results))
    for phase in PHASES:
        print(f"{phase:<16}" + "".join(f"{r[phase]:>14.3f}" for r in results.values()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha twice the rank, as LORA_RANK sets)")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run (the first is not averaged)")
    parser.add_argument("--out", default="outputs/bench_lora", help="folder for the model and the runs")
    parser.add_argument("--sizes-only", action="store_true", help="print the 7B sizes only (no runs)")
    args = parser.parse_args(argv)
    print_sizes(args.rank)
    if not args.sizes_only:
        out = Path(args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        print_step_times(out, args.rank, args.steps)


if __name__ == "__main__":
    main()
