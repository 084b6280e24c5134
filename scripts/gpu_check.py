"""verl-audio's model-level paths on CUDA in bf16 (sdpa attention), checked against the fp32 CPU forward.

    python scripts/gpu_check.py --device cuda --json gpu_check.json     # on a GPU machine
    python scripts/gpu_check.py --device cpu --quick                    # dry run: bf16 on CPU vs fp32 on CPU

Per family (tiny random checkpoints built offline; a whole-audio prompt with one 100 s clip and a random
16-token response): placeholders of the clip (2,500 / 2,500 in four 30 s windows / 1,300) and the family's
positions, identical on both devices; the audio encoder's outputs, the response log-probs and the gradients of
one backward (encoders frozen, as the actor trains) within bf16 tolerance of fp32 on CPU; the audio-encoder
cache (one pass, then a hit that gives the same log-probs); LoRA r=8 on the language model (adapter count as
computed, a no-op at init, gradients on the adapters only). Speech stage (Qwen2.5-Omni): a greedy talker and
token2wav in fp32 on the device against fp32 on CPU (same codec tokens, waveform within tolerance), then in
bf16 on the device, reporting how many codec tokens agree with fp32: a random talker's top two codec logits are
often closer than bf16's rounding, so bf16 may pick other tokens, which is not an error. Peak device memory and
seconds per call are printed. Sizes: the released configs built on the meta device (no weights), with the
parameter, gradient and AdamW bytes per GPU of the paper preset's FSDP layout.

Needs torch, transformers, peft, accelerate, numpy; not verl, ray or vllm. Exits non-zero naming failed checks.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a GPU machine may have no network: fail fast, never wait on the Hub
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np
import torch

FAMILY_NAMES = ("qwen2_5_omni", "qwen2_audio", "qwen3_omni")
SR = 16_000
CLIP_SECONDS = 100
RESPONSE_TOKENS = 16
#: per family: placeholders of a 100 s clip and the mel frames of each audio item it becomes
EXPECTED = {"qwen2_5_omni": (2500, [10000]), "qwen2_audio": (2500, [3000, 3000, 3000, 1000]),
            "qwen3_omni": (1300, [10000])}

# Tolerances (device dtype vs fp32 on CPU unless said otherwise)
LOGP_ATOL = 0.05  # bf16 keeps 8 mantissa bits; tiny models on CPU differ by <= 0.005, GPU kernels sum in other orders
ENCODER_RTOL = 0.05  # max |diff| / max |fp32| of the audio encoder outputs: bf16 rounding through every layer
GRAD_COSINE_MIN = 0.99  # direction of the language model's gradient (measured >= 0.9999 on CPU in bf16)
GRAD_NORM_RTOL = 0.05  # relative difference of the gradient norms
SAME_ATOL = 1e-5  # cached vs uncached encoder, LoRA at init vs none: the same values enter, so equal outputs
WAVE_RTOL = 1e-3  # fp32 token2wav on device vs CPU: max |diff| / peak amplitude (accumulation order only)

LORA_RANK, LORA_ALPHA = 8, 16
GPUS_PER_NODE = 8  # the paper preset: FSDP full shard of actor and reference over the node's 8 GPUs
#: vLLM per family in the paper preset: (tensor parallel size, gpu_memory_utilization)
VLLM = {"qwen2_5_omni": (1, 0.6), "qwen2_audio": (1, 0.6), "qwen3_omni": (2, 0.5)}
GPU_GB = 80  # an H100's memory, for vLLM's share
QWEN3_OMNI_LM_PARAMS = 30_532_122_624  # keras-hub's Qwen3-Omni preset metadata: the thinker's language model
#: bf16 sizes the docs give, printed beside the computed ones
DOCS_ESTIMATE = {"qwen2_5_omni": "docs/models.md: thinker about 9 B params, ~18 GB bf16",
                 "qwen2_audio": "recipe.py: 7B dense (no byte estimate in docs)",
                 "qwen3_omni": "recipe.py: bf16 weights ~60 GB (full checkpoint)"}


# ---- measuring -----------------------------------------------------------------------------------


class Meter:
    """Seconds and peak device memory (MiB, CUDA only) of named calls."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"
        self.calls: dict[str, dict[str, float | None]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        self.calls[name] = {"seconds": round(time.perf_counter() - start, 3), "peak_mib": peak}


def add(checks: dict[str, Any], name: str, ok: bool, detail: str, **numbers: Any) -> None:
    """Record one named pass/fail result with the numbers behind it."""
    checks[name] = {"ok": bool(ok), "detail": detail, **numbers}


# ---- tiny models and prompts ---------------------------------------------------------------------


@dataclass
class Prompt:
    """A whole-audio prompt plus a random response, batch of one."""

    ids: torch.Tensor  # (1, prompt + response)
    features: torch.Tensor  # (items, mel bins, frames)
    feature_mask: torch.Tensor  # (items, frames)
    response: torch.Tensor  # (R,)
    clip: np.ndarray

    def inputs(self, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        ids = self.ids.to(device)
        features, mask = self.features.to(device, dtype), self.feature_mask.to(device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_features": features,
                "feature_attention_mask": mask}


def build_tiny(family: Any, root: Path) -> Path:
    options = {"talker": True, "head_dim": 32} if family.name == "qwen2_5_omni" else {}
    return family.build_tiny(root / family.name, vocab="small", **options)


def whole_audio_prompt(processor: Any, eos: set[int], seed: int = 0) -> Prompt:
    """A 100 s clip and a question through the family's whole-audio processor, then RESPONSE_TOKENS random ids."""
    rng = np.random.default_rng(seed)
    clip = (0.1 * rng.standard_normal(CLIP_SECONDS * SR)).astype(np.float32)
    content = [{"type": "audio", "audio": "clip"}, {"type": "text", "text": "What is heard?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    out = processor(text=[text], audio=[clip], return_tensors="pt", sampling_rate=SR)
    special = set(processor.tokenizer.all_special_ids) | eos
    normal = [i for i in range(len(processor.tokenizer)) if i not in special]
    response = torch.tensor(rng.choice(normal, RESPONSE_TOKENS), dtype=torch.long)
    return Prompt(torch.cat([out["input_ids"][0], response])[None], out["input_features"].float(),
                  out["feature_attention_mask"].long(), response, clip)


def load_model(family: Any, path: Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The family's trainable model with sdpa attention and its encoders frozen (the actor's default)."""
    from verl_audio.models.lora import encoder_paths

    model = family.load_trainable(path, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    for name in encoder_paths(family):
        family.module(model, name).requires_grad_(False)
    return model


def response_logprobs(model: torch.nn.Module, prompt: Prompt, device: str, dtype: torch.dtype) -> torch.Tensor:
    logits = model(**prompt.inputs(device, dtype)).logits[0, -len(prompt.response) - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, prompt.response.to(device)[:, None])[:, 0]


def trainable_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.float().flatten().cpu() for p in model.parameters() if p.requires_grad])


# ---- the family checks ---------------------------------------------------------------------------


@dataclass
class Run:
    """What one model gives on one device; a step that raised holds its exception instead."""

    positions: Any  # [positions, deltas] on CPU
    encoder: Any  # (placeholders, hidden) float32 on CPU
    backward: Any  # (response log-probs, trainable gradients, frozen parameters that got gradients)


def attempt(function: Callable[[], Any]) -> Any:
    """``function()``, or the exception it raised (printed); the check that needs the result reports it."""
    try:
        return function()
    except Exception as error:  # noqa: BLE001 - one failing path must not hide the others in a one-shot run
        traceback.print_exc()
        return error


def failed_step(checks: dict[str, Any], name: str, *results: Any) -> bool:
    """Record check ``name`` as failed when one of ``results`` is an exception."""
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        add(checks, name, False, f"raised {type(errors[0]).__name__}: {errors[0]}"[:400])
    return bool(errors)


def forward_backward(model: torch.nn.Module, prompt: Prompt, device: str,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int]:
    logp = response_logprobs(model, prompt, device, dtype)
    (-logp.mean()).backward()
    frozen = sum(1 for p in model.parameters() if not p.requires_grad and p.grad is not None)
    return logp.detach().cpu(), trainable_grads(model), frozen


def run_model(family: Any, model: torch.nn.Module, prompt: Prompt, device: str, dtype: torch.dtype,
              meter: Meter | None = None) -> Run:
    meter = meter or Meter("cpu")
    ids = prompt.ids.to(device)
    features, mask = prompt.features.to(device, dtype), prompt.feature_mask.to(device)
    frames = prompt.feature_mask.sum(-1).tolist()
    with torch.no_grad(), meter("positions"):
        positions = attempt(lambda: [t.cpu() for t in family.positions(model, ids, torch.ones_like(ids), frames)])
    with torch.no_grad(), meter("audio encoder"):
        encoder = attempt(lambda: torch.cat(family.encode(model, features, mask)).float().cpu())
    with meter("forward+backward"):
        backward = attempt(lambda: forward_backward(model, prompt, device, dtype))
    return Run(positions, encoder, backward)


def compare_runs(family: Any, prompt: Prompt, ref: Run, dev: Run, checks: dict[str, Any], audio_id: int) -> None:
    want_tokens, want_frames = EXPECTED[family.name]
    count = int((prompt.ids == audio_id).sum())
    frames = prompt.feature_mask.sum(-1).tolist()
    rows = [None if isinstance(r.encoder, Exception) else int(r.encoder.shape[0]) for r in (ref, dev)]
    ok = count == want_tokens == family.clip_tokens(len(prompt.clip)) == rows[0] == rows[1] and frames == want_frames
    add(checks, "placeholders", ok, f"{count} for {CLIP_SECONDS} s (expected {want_tokens}), items {len(frames)} "
        f"of {[f / 100 for f in frames]} s, encoder rows cpu {rows[0]} / device {rows[1]}",
        placeholders=count, expected=want_tokens, items=len(frames), encoder_rows=rows)
    if not failed_step(checks, "positions", ref.positions, dev.positions):
        same = all(torch.equal(a, b) for a, b in zip(ref.positions, dev.positions, strict=True))
        shape = list(ref.positions[0].shape)
        add(checks, "positions", same, f"{'identical' if same else 'differ'} {tuple(shape)}", identical=same,
            shape=shape)
    if not failed_step(checks, "audio_encoder", ref.encoder, dev.encoder):
        enc = float((dev.encoder - ref.encoder).abs().max() / ref.encoder.abs().max())
        add(checks, "audio_encoder", enc <= ENCODER_RTOL, f"max rel diff {enc:.2e} (tol {ENCODER_RTOL})",
            max_rel_diff=enc)
    if failed_step(checks, "logprobs", ref.backward, dev.backward):
        failed_step(checks, "gradients", ref.backward, dev.backward)
        return
    (ref_logp, ref_grads, _), (logp, grads, frozen) = ref.backward, dev.backward
    diff = float((logp - ref_logp).abs().max())
    add(checks, "logprobs", diff <= LOGP_ATOL, f"max |diff| {diff:.2e} over {len(logp)} tokens (tol {LOGP_ATOL})",
        max_abs_diff=diff, tokens=len(logp))
    cosine = float(torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0).clamp(max=1.0))
    norms = float(ref_grads.norm()), float(grads.norm())
    rel = abs(norms[1] - norms[0]) / norms[0]
    ok = cosine >= GRAD_COSINE_MIN and rel <= GRAD_NORM_RTOL and frozen == 0 and np.isfinite(norms[1])
    add(checks, "gradients", ok, f"cosine {cosine:.5f} (min {GRAD_COSINE_MIN}), norm {norms[1]:.4g} vs "
        f"{norms[0]:.4g} (rel {rel:.1e}, tol {GRAD_NORM_RTOL}), frozen params with grads {frozen}",
        cosine=cosine, norm=norms[1], norm_fp32=norms[0], norm_rel_diff=rel, frozen_with_grads=frozen)


def check_encoder_cache(family: Any, model: torch.nn.Module, prompt: Prompt, device: str, dtype: torch.dtype,
                        checks: dict[str, Any], meter: Meter) -> torch.Tensor:
    """Install the cache: the first forward encodes every item once, the second finds them all; same log-probs."""
    from verl_audio.models import encoder_cache

    with torch.no_grad():
        uncached = response_logprobs(model, prompt, device, dtype).cpu()
    encoder_cache.install(family, model, 8, lambda: f"gpu_check|{family.name}|{device}|{dtype}")
    items, counts, diffs = len(prompt.feature_mask), [], []
    for call in ("miss", "hit"):
        snapshot = encoder_cache.STATS.snapshot()
        with torch.no_grad(), meter(f"cached forward ({call})"):
            logp = response_logprobs(model, prompt, device, dtype).cpu()
        since = encoder_cache.STATS.since(snapshot)
        counts.append((int(since[encoder_cache.METRIC_PASSES]), int(since[encoder_cache.METRIC_HITS])))
        diffs.append(float((logp - uncached).abs().max()))
    ok = counts == [(items, 0), (0, items)] and max(diffs) <= SAME_ATOL
    add(checks, "encoder_cache", ok, f"(passes, hits): miss {counts[0]}, hit {counts[1]} for {items} item(s); "
        f"max |diff| to uncached {max(diffs):.1e} (tol {SAME_ATOL})", counts=counts, max_abs_diff=max(diffs))
    return uncached


def lora_modules(family: Any, model: torch.nn.Module) -> list[str]:
    """The Linear modules verl-audio's default LoRA targets (language model projections, encoders excluded)."""
    from verl_audio.models.lora import default_targets, encoder_exclusion

    targets, excluded = default_targets(family), encoder_exclusion(family)
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
            and re.fullmatch(targets, name) and not re.fullmatch(excluded, name)]


def lora_params(model: torch.nn.Module, modules: list[str], rank: int = LORA_RANK) -> int:
    """Adapter parameters of rank ``rank`` on ``modules``: A (r x in) and B (out x r) each."""
    return sum(rank * (model.get_submodule(m).in_features + model.get_submodule(m).out_features) for m in modules)


def check_lora(family: Any, model: torch.nn.Module, prompt: Prompt, device: str, dtype: torch.dtype,
               uncached: torch.Tensor, checks: dict[str, Any], meter: Meter) -> None:
    """peft adapters on the computed modules: counted as computed, a no-op at init, gradients on them only."""
    from verl_audio.models.lora import inject

    modules = lora_modules(family, model)
    expected = lora_params(model, modules)
    inject(model, modules, {"r": LORA_RANK, "lora_alpha": LORA_ALPHA})
    adapters = [p for n, p in model.named_parameters() if ".lora_" in n]
    for p in adapters:
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        diff = float((response_logprobs(model, prompt, device, dtype).cpu() - uncached).abs().max())
    with meter("lora forward+backward"):
        (-response_logprobs(model, prompt, device, dtype).mean()).backward()
    others = sum(1 for n, p in model.named_parameters() if p.grad is not None and ".lora_" not in n)
    norm = float(torch.cat([p.grad.float().flatten() for p in adapters if p.grad is not None]).norm())
    count = sum(p.numel() for p in adapters)
    ok = count == expected and diff <= SAME_ATOL and others == 0 and np.isfinite(norm) and norm > 0
    add(checks, "lora", ok, f"r={LORA_RANK} on {len(modules)} modules: {count} params (computed {expected}), "
        f"init |diff| {diff:.1e}, grad norm {norm:.3g}, non-adapter grads {others}",
        modules=len(modules), params=count, computed=expected, init_diff=diff, grad_norm=norm)


def check_family(family: Any, root: Path, device: str, dtype: torch.dtype) -> dict[str, Any]:
    from verl_audio.models.token_ids import eos_token_ids

    meter, checks = Meter(device), {}
    path = build_tiny(family, root)
    processor = family.load_processor(path)
    ref_model = load_model(family, path, "cpu", torch.float32)
    prompt = whole_audio_prompt(processor, eos_token_ids(ref_model, str(path)))
    ref = run_model(family, ref_model, prompt, "cpu", torch.float32)
    del ref_model
    model = load_model(family, path, device, dtype)
    dev = run_model(family, model, prompt, device, dtype, meter)
    compare_runs(family, prompt, ref, dev, checks, family.audio_token_id(processor.config))
    model.zero_grad(set_to_none=True)
    uncached = attempt(lambda: check_encoder_cache(family, model, prompt, device, dtype, checks, meter))
    if not failed_step(checks, "encoder_cache", uncached):
        failed_step(checks, "lora", attempt(lambda: check_lora(family, model, prompt, device, dtype, uncached,
                                                                checks, meter)))
    return {"path": str(path), "checks": checks, "calls": meter.calls, "prompt": prompt, "processor": processor}


# ---- speech (Qwen2.5-Omni) -----------------------------------------------------------------------


def stand_in_verl_base_config() -> str:
    """``verl_audio.speech.config`` subclasses verl's ``BaseConfig`` at import; where verl is absent (a GPU
    machine) a plain base class stands in, which is all ``SpeechOptions`` needs for the stage."""
    try:
        import verl.base_config  # noqa: F401

        return "verl"
    except ImportError:
        package, module = types.ModuleType("verl"), types.ModuleType("verl.base_config")
        package.__path__ = []
        module.BaseConfig = type("BaseConfig", (), {})
        sys.modules.update({"verl": package, "verl.base_config": module})
        return "stand-in (verl absent)"


@contextlib.contextmanager
def host_noise() -> Iterator[None]:
    """token2wav draws its diffusion noise with ``torch.randn`` on the model's device, and CUDA's generator gives
    other numbers than the CPU's for one seed: the noise is drawn on the host in every run, so runs compare."""
    original = torch.randn

    def randn(*args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        return original(*args, **kwargs) if device is None else original(*args, device="cpu", **kwargs).to(device)

    torch.randn = randn
    try:
        yield
    finally:
        torch.randn = original


@contextlib.contextmanager
def one_thread(device: str) -> Iterator[None]:
    """token2wav's many tiny convolutions run several times slower on CPU with more than one intra-op thread."""
    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def speak(path: Path, request: Any, options: Any, device: str, dtype: torch.dtype, meter: Meter,
          label: str) -> tuple[torch.Tensor, np.ndarray]:
    """Codec tokens and waveform of one request from a stage on ``device`` (thinker and talker in ``dtype``)."""
    from verl_audio.models.families import QWEN2_5_OMNI
    from verl_audio.models.token_ids import eos_token_ids
    from verl_audio.speech.stage import SpeechStage
    from verl_audio.speech.talker import load_speech_modules

    thinker = QWEN2_5_OMNI.load_trainable(path, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    stage = SpeechStage(load_speech_modules(path, device=device, dtype=dtype), thinker, options,
                        eos_token_ids(thinker, str(path)))
    with meter(f"speech {label} talker"):
        code = stage.codes([request])[0].cpu()
    with meter(f"speech {label} token2wav"), host_noise(), one_thread(device):
        wave = stage.waveform(code, request.speaker, request.seed)
    return code, wave


def check_speech(family_result: dict[str, Any], device: str, dtype: torch.dtype, quick: bool) -> dict[str, Any]:
    """fp32 on the device vs fp32 on CPU (greedy talker: same tokens, close waveform); bf16 on the device."""
    from verl_audio.content_cache import audio_key
    from verl_audio.models.clips import ClipFeatures
    from verl_audio.models.families import QWEN2_5_OMNI as family

    base_config = stand_in_verl_base_config()
    from verl_audio.speech.config import SpeechOptions
    from verl_audio.speech.stage import SpeechRequest

    path, prompt, processor = Path(family_result["path"]), family_result["prompt"], family_result["processor"]
    clips = []
    for window in family.windows(prompt.clip):
        features, frames = family.extract(processor.feature_extractor, window)
        clips.append(ClipFeatures(audio_key(window), features, frames, family.item_tokens(frames)))
    ids = prompt.ids[0].tolist()
    request = SpeechRequest(ids[: -len(prompt.response)], clips, prompt.response.tolist(), "Chelsie", seed=0)
    options = SpeechOptions(speaker="Chelsie", talker_do_sample=False, talker_max_new_tokens=16 if quick else 40,
                            token2wav_steps=4 if quick else 10)
    meter, checks = Meter(device), {}
    ref_code, ref_wave = speak(path, request, options, "cpu", torch.float32, Meter("cpu"), "fp32 cpu")
    # on CPU the fp32 run is the reference itself
    fp32 = (ref_code, ref_wave) if device == "cpu" else attempt(
        lambda: speak(path, request, options, device, torch.float32, meter, "fp32"))
    if not failed_step(checks, "speech_fp32", fp32):
        code, wave = fp32
        same = torch.equal(code, ref_code)
        diff = float(np.abs(wave - ref_wave).max() / max(np.abs(ref_wave).max(), 1e-12)) if same else float("inf")
        add(checks, "speech_fp32", same and len(code) > 0 and diff <= WAVE_RTOL,
            f"codec tokens {'identical' if same else 'differ'} ({len(code)}), waveform {len(wave)} samples, "
            f"max |diff| / peak {diff:.1e} (tol {WAVE_RTOL})", codec_tokens=len(code), same_tokens=same,
            samples=len(wave), max_rel_diff=diff)
    label = str(dtype).removeprefix("torch.")
    low = attempt(lambda: speak(path, request, options, device, dtype, meter, label))
    if not failed_step(checks, "speech_low_precision", low):
        code, wave = low
        agree = sum(int(a == b) for a, b in zip(code.tolist(), ref_code.tolist(), strict=False))
        agree /= max(len(code), len(ref_code), 1)
        finite = bool(np.isfinite(wave).all())
        add(checks, "speech_low_precision", finite and len(wave) > 0, f"{len(code)} codec tokens, {agree:.0%} agree "
            f"with fp32 (informational), waveform {len(wave)} samples, finite {finite}", codec_tokens=len(code),
            token_agreement=agree, samples=len(wave), finite=finite)
    return {"checks": checks, "calls": meter.calls, "verl_base_config": base_config}


# ---- sizes of the released configs ---------------------------------------------------------------


def release_configs() -> dict[str, tuple[str, Any]]:
    """The released trainable configs, written out (no Hub access).

    Qwen2.5-Omni-7B thinker: text 3584 hidden, 18944 MLP, 28 layers, 28/4 heads, vocab 152064, untied; audio
    d_model 1280, 32 layers, 20 heads, FFN 5120, output 3584; vision depth 32, hidden 1280, 16 heads, output 3584
    (public copies of the release config.json: rtp-llm's Qwen2.5-Omni tests and others). Vision MLP 3420: the
    Qwen2.5-VL-7B vision config (Omni reuses that encoder; not seen in an Omni config.json copy).
    Qwen2-Audio-7B-Instruct: text (Qwen2) 4096 hidden, 11008 MLP, 32 layers, 32/32 heads, vocab 156032; audio
    d_model 1280, 32 layers, 20 heads, FFN 5120, 128 mel bins, 1500 positions (several public copies of the
    config.json, named Qwen2-Audio-7B; the Instruct model shares the architecture. The file leaves out the text
    hidden size, depth and heads, which are then Qwen2's defaults; one third-party note quotes them as above).
    Qwen3-Omni-30B-A3B-Instruct thinker: text 2048 hidden, 48 layers, 32/4 heads, head dim 128, 128 experts top 8,
    expert MLP 768, vocab 152064, untied; audio d_model 1280, 32 layers, 20 heads, FFN 5120, output 2048; vision
    depth 27, hidden 1152, MLP 4304, 16 heads, output 2048 (a public dump of the release config, transformers
    5.7; the language model built from it, 30.53 B, is within 2e-5 of keras-hub's preset count, 30,532,122,624).
    """
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2AudioConfig
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig

    whisper = {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
               "num_mel_bins": 128, "max_source_positions": 1500}
    omni = Qwen2_5OmniThinkerConfig(
        text_config={"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                     "tie_word_embeddings": False},
        audio_config={**whisper, "output_dim": 3584},
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                       "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2})
    audio = Qwen2AudioConfig(
        audio_config=whisper,
        text_config={"model_type": "qwen2", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 156032,
                     "tie_word_embeddings": False})
    moe = Qwen3OmniMoeThinkerConfig(
        text_config={"hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
                     "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
                     "moe_intermediate_size": 768, "intermediate_size": 768, "vocab_size": 152064,
                     "tie_word_embeddings": False},
        audio_config={**whisper, "output_dim": 2048, "downsample_hidden_size": 480},
        vision_config={"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                       "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2})
    return {"qwen2_5_omni": ("Qwen2.5-Omni-7B thinker", omni), "qwen2_audio": ("Qwen2-Audio-7B-Instruct", audio),
            "qwen3_omni": ("Qwen3-Omni-30B-A3B thinker", moe)}


def count_release(family: Any, config: Any) -> dict[str, int]:
    """Parameter counts of the family's trainable model built on the meta device (no memory, no weights)."""
    from verl_audio.models.lora import encoder_paths

    with torch.device("meta"):
        model = family.model_class()._from_config(config)
    total = sum(p.numel() for p in model.parameters())
    encoders = {name: sum(p.numel() for p in family.module(model, name).parameters()) for name in encoder_paths(family)}
    return {"total": total, "encoders": sum(encoders.values()), "language_model": total - sum(encoders.values()),
            "lora": lora_params(model, lora_modules(family, model))}


def per_gpu(count: int, nbytes: int) -> float:
    """GB per GPU of ``count`` values of ``nbytes`` each, fully sharded over the node."""
    return count * nbytes / GPUS_PER_NODE / 1e9


def size_rows(name: str, counts: dict[str, int]) -> list[dict[str, Any]]:
    """Bytes per GPU (GB = 1e9) of the paper preset: actor and reference in fp32, FSDP over 8 GPUs, AdamW state
    2 fp32 tensors per trainable parameter. With the preset's offload the state rests in host memory and each
    phase loads its own; without it everything stays resident."""
    tp, share = VLLM[name]
    rows = []
    for mode, trainable in (("full", counts["language_model"]), (f"lora{LORA_RANK}", counts["lora"])):
        params = counts["total"] + (trainable if mode != "full" else 0)
        actor, grads, adam = per_gpu(params, 4), per_gpu(trainable, 4), per_gpu(trainable, 8)
        ref = per_gpu(params, 4) if mode == "full" else 0.0  # LoRA: the actor with its adapter off is the reference
        rows.append({"family": name, "mode": mode, "params_b": params / 1e9, "trainable_b": trainable / 1e9,
                     "param_gb": actor, "grad_gb": grads, "adamw_gb": adam, "ref_gb": ref,
                     "no_offload_gb": actor + grads + adam + ref, "offload_rollout_gb": 0.0,
                     "offload_update_gb": actor + grads + adam,
                     "host_gb_per_node": (actor + grads + adam + ref) * GPUS_PER_NODE,
                     "vllm_weights_gb": counts["total"] * 2 / tp / 1e9, "vllm_share_gb": share * GPU_GB})
    return rows


def sizes(families: list[str]) -> dict[str, Any]:
    from verl_audio.models.families import family_named

    configs, out = release_configs(), {"rows": [], "models": {}, "checks": {}, "calls": {}}
    for name in families:
        label, config = configs[name]
        counts = count_release(family_named(name), config)
        out["models"][name] = {"label": label, **counts, "bf16_gb": counts["total"] * 2 / 1e9,
                               "docs": DOCS_ESTIMATE[name]}
        out["rows"] += size_rows(name, counts)
    if "qwen3_omni" in families:  # the one published count found for a language model alone
        lm = out["models"]["qwen3_omni"]["language_model"]
        rel = abs(lm - QWEN3_OMNI_LM_PARAMS) / QWEN3_OMNI_LM_PARAMS
        add(out["checks"], "qwen3_omni_lm_params", rel <= 1e-3, f"{lm:,} vs {QWEN3_OMNI_LM_PARAMS:,} published "
            f"(rel {rel:.1e}, tol 1e-3)", params=lm, published=QWEN3_OMNI_LM_PARAMS, rel_diff=rel)
    return out


# ---- report --------------------------------------------------------------------------------------


def environment(device: str, dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "numpy": np.__version__}
    for name in ("peft", "accelerate"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    tolerances = {"logprobs_atol": LOGP_ATOL, "encoder_rtol": ENCODER_RTOL, "grad_cosine_min": GRAD_COSINE_MIN,
                  "grad_norm_rtol": GRAD_NORM_RTOL, "same_atol": SAME_ATOL, "wave_rtol": WAVE_RTOL}
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "device": device,
            "dtype": str(dtype).removeprefix("torch."), "gpu": gpu, "versions": versions, "tolerances": tolerances}


def print_section(title: str, section: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    for name, check in section["checks"].items():
        print(f"  {'ok  ' if check['ok'] else 'FAIL'} {name:<22} {check['detail']}")
    for name, call in section["calls"].items():
        peak = "n/a" if call["peak_mib"] is None else f"{call['peak_mib']:.1f} MiB"
        print(f"       call {name:<30} {call['seconds']:7.2f} s   peak {peak}")
    if "verl_base_config" in section:
        print(f"       verl BaseConfig for SpeechOptions: {section['verl_base_config']}")


def print_sizes(table: dict[str, Any]) -> None:
    for name, model in table.get("models", {}).items():
        print(f"  {name:<13} {model['label']}: {model['total'] / 1e9:.2f} B params (encoders "
              f"{model['encoders'] / 1e9:.2f} B), bf16 {model['bf16_gb']:.1f} GB | {model['docs']}")
    print("  GB per GPU: actor params, grads, AdamW, reference params; then all resident (no offload), with the "
          "preset's offload\n  during rollout and during the actor update; host memory per node holding the "
          f"offloaded state; vLLM's bf16 weights per GPU\n  and its share of an {GPU_GB} GB GPU")
    print(f"  {'family':<13}{'mode':<7}{'train B':>8}{'param':>7}{'grad':>7}{'AdamW':>7}{'ref':>7}{'no-offl':>8}"
          f"{'offl:roll':>10}{'offl:upd':>9}{'host/node':>10}{'vLLM w':>8}{'share':>7}")
    for r in table.get("rows", []):
        print(f"  {r['family']:<13}{r['mode']:<7}{r['trainable_b']:>8.3f}{r['param_gb']:>7.2f}{r['grad_gb']:>7.2f}"
              f"{r['adamw_gb']:>7.2f}{r['ref_gb']:>7.2f}{r['no_offload_gb']:>8.2f}{r['offload_rollout_gb']:>10.2f}"
              f"{r['offload_update_gb']:>9.2f}{r['host_gb_per_node']:>10.1f}{r['vllm_weights_gb']:>8.1f}"
              f"{r['vllm_share_gb']:>7.0f}")


def guarded(function: Any, *args: Any) -> dict[str, Any]:
    """``function(*args)``, or a failed ``error`` check naming the exception: one broken path must not hide the
    results of the others in a run that may not be repeated."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        return {"checks": {"error": {"ok": False, "detail": f"{type(error).__name__}: {error}"[:500]}}, "calls": {}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: the dry run")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--families", nargs="+", default=list(FAMILY_NAMES), choices=FAMILY_NAMES)
    parser.add_argument("--quick", action="store_true", help="shorter speech (the 100 s clip stays)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the dry run", file=sys.stderr)
        return 2
    import transformers

    from verl_audio.models.families import family_named

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 comparisons stay fp32
    torch.manual_seed(0)
    dtype, start = torch.bfloat16, time.perf_counter()
    result = environment(args.device, dtype)
    print(f"gpu_check {result['date']} device {args.device} ({result['gpu'] or 'dry run'}), {result['dtype']} vs fp32 "
          f"on CPU, sdpa; {result['versions']}", flush=True)
    sections: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as root:
        for name in args.families:
            sections[name] = guarded(check_family, family_named(name), Path(root), args.device, dtype)
            print_section(f"{name}: tiny, {args.device} {result['dtype']} vs cpu fp32", sections[name])
        if "qwen2_5_omni" in sections:
            sections["speech"] = guarded(check_speech, sections["qwen2_5_omni"], args.device, dtype, args.quick)
            print_section("speech stage (qwen2_5_omni): greedy talker + token2wav", sections["speech"])
    sections["sizes"] = guarded(sizes, args.families)
    print_section(f"released configs on the meta device: FSDP over {GPUS_PER_NODE} GPUs, fp32 actor + reference, "
                  "AdamW; GB = 1e9 bytes", sections["sizes"])
    print_sizes(sections["sizes"])
    keep = ("checks", "calls", "verl_base_config", "models", "rows")
    result["sections"] = {name: {k: v for k, v in section.items() if k in keep} for name, section in sections.items()}
    result["failed"] = [f"{name}.{check}" for name, section in result["sections"].items()
                        for check, outcome in section["checks"].items() if not outcome["ok"]]
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"\n{'FAILED: ' + ', '.join(result['failed']) if result['failed'] else 'all checks passed'} "
          f"({result['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
