"""LoRA adapters on an audio family's language model: names, injection into a plain model, merging.

verl (``actor_rollout_ref.model.lora_rank`` > 0) wraps the trainable model with peft before FSDP; the
reference policy is the same model with the adapter off. What leaves the actor: the adapter tensors
(``base_model.model.<module>.lora_{A,B}.weight``, the trainable model's module names) with verl's
``peft_config.to_dict()``; on the first sync of a rollout started on dummy weights, the base weights with
``.base_layer`` in the names of every wrapped projection; with ``model.lora.merge=True``, merged plain weights.
A checkpoint holds the whole peft model (``base_model.model.<name>`` with ``.base_layer`` and
``lora_{A,B}.default`` parts) and ``lora_train_meta.json`` (rank and alpha).

Adapters stay on the language model: verl's default ``target_modules="all-linear"`` becomes the language
model's projections (``default_targets``; peft's own all-linear also takes the encoders' linears, and on the
Qwen3-Omni thinker it fails on a vision block's ``mlp.0`` leaf name), and the encoders' modules are excluded
(``encoder_exclusion``), because vLLM applies LoRA to the language model only and the audio-encoder cache
assumes a fixed encoder. On request (``model.audio_encoder_lora_targets``, ``with_audio_encoder_targets``) the audio
encoder's chosen layers get adapters too: the encoder then runs uncached wherever its adapters apply, and vLLM
receives merged weights (``verl_audio.trainer.lora_setup``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from verl_audio.models.families.base import AudioFamily

PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"
#: an adapter tensor, as verl sends it (``…lora_A.weight``) or as a checkpoint holds it (``…lora_A.default.weight``)
_ADAPTER_KEY = re.compile(r"(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight")


def encoder_paths(family: AudioFamily) -> tuple[str, ...]:
    """The module paths of the family's encoders (and the projector trained with the audio encoder)."""
    paths = (family.audio_encoder, *family.audio_encoder_extra, family.vision_encoder)
    return tuple(path for path in paths if path)


def encoder_exclusion(family: AudioFamily, audio_encoder_targets: str | None = None) -> str:
    """peft ``exclude_modules`` (a regex, full match on module names) that keeps adapters off the encoders, but
    off those audio-encoder modules whose names relative to the encoder fully match ``audio_encoder_targets``.

    The exclusion, not only ``target_modules``, spares the chosen modules: peft turns a regex target into leaf
    names for transformers-5 MoE models (``_convert_peft_config_moe``: the Qwen3-Omni thinker), which would then
    match every encoder layer's ``q_proj`` or ``fc1``."""
    paths = [p for p in encoder_paths(family) if not (audio_encoder_targets and p == family.audio_encoder)]
    excluded = "(?:" + "|".join(re.escape(p) for p in paths) + r")(?:\..*)?"
    if audio_encoder_targets:
        encoder = re.escape(family.audio_encoder)
        excluded += rf"|(?!{encoder}\.(?:{audio_encoder_targets})$){encoder}(?:\..*)?"
    return excluded


def with_audio_encoder_targets(family: AudioFamily, targets: str | Iterable[str], encoder_targets: str) -> str:
    """peft ``target_modules`` (one regex, full match) = ``targets`` outside the audio encoder, plus the audio
    encoder's modules whose names relative to the encoder fully match ``encoder_targets``.

    ``targets`` as peft takes it: a regex (full match), or names matched as peft matches a list (the whole name or
    its last dotted parts); either is kept out of the audio encoder, whose own adapters only ``encoder_targets``
    chooses."""
    try:
        re.compile(encoder_targets)
    except re.error as err:
        raise ValueError(f"audio_encoder_lora_targets {encoder_targets!r} is no regex: {err}") from None
    if isinstance(targets, str):
        outside = targets
    else:  # peft's list rule: the name is the entry or ends with "." + the entry
        outside = r"(?:.*\.)?(?:" + "|".join(re.escape(str(t)) for t in targets) + ")"
    encoder = re.escape(family.audio_encoder)
    return rf"(?!{encoder}\.)(?:{outside})|{encoder}\.(?:{encoder_targets})"


def default_targets(family: AudioFamily) -> str:
    """peft ``target_modules`` (a regex, full match) for the language model's projections: attention q/k/v/o and
    the dense MLP's gate/up/down in every decoder layer (a mixture-of-experts layer's experts are no Linear)."""
    return re.escape(family.decoder_layers) + r"\.\d+\.(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)"


def adapted_modules(names: Iterable[str]) -> list[str]:
    """The module names (trainable-model names, no peft prefix) that adapter tensor ``names`` belong to."""
    modules = set()
    for name in names:
        match = _ADAPTER_KEY.fullmatch(name)
        if match is not None:
            modules.add(match["module"])
    return sorted(modules)


def is_adapter_tensor(name: str) -> bool:
    return _ADAPTER_KEY.fullmatch(name) is not None


def modules_in_encoders(family: AudioFamily, modules: Iterable[str], keep_audio_encoder: bool = False) -> list[str]:
    """Those of ``modules`` inside one of the family's encoders (but the audio encoder with ``keep_audio_encoder``)."""
    prefixes = tuple(p + "." for p in encoder_paths(family) if not (keep_audio_encoder and p == family.audio_encoder))
    return sorted(m for m in modules if m.startswith(prefixes))


def modules_in_audio_encoder(family: AudioFamily, modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` inside the family's audio encoder."""
    return sorted(m for m in modules if m.startswith(family.audio_encoder + "."))


def scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """peft's LoRA scale: alpha / r (alpha / sqrt(r) with rsLoRA)."""
    return alpha / (r**0.5 if use_rslora else r)


def inject(model: torch.nn.Module, modules: list[str], peft_config: Mapping[str, Any]) -> None:
    """Wrap exactly ``modules`` of a plain ``model`` with LoRA layers (rank and alpha of verl's ``peft_config``)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(peft_config["r"]), lora_alpha=peft_config["lora_alpha"], lora_dropout=0.0,
                        use_rslora=bool(peft_config.get("use_rslora", False)), target_modules=list(modules),
                        bias="none")
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    model.requires_grad_(False)


@torch.no_grad()
def load_adapter(model: torch.nn.Module, tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Copy adapter tensors into an injected model's LoRA layers; returns the modules whose A and B arrived."""
    seen: dict[str, set[str]] = {}
    for name, tensor in tensors:
        match = _ADAPTER_KEY.fullmatch(name)
        if match is None:
            raise KeyError(f"{name!r} is no LoRA adapter tensor")
        layer = getattr(model.get_submodule(match["module"]), f"lora_{match['ab']}")[ADAPTER_NAME]
        if layer.weight.shape != tensor.shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} != LoRA layer {tuple(layer.weight.shape)}")
        layer.weight.copy_(tensor.to(device=layer.weight.device, dtype=layer.weight.dtype))
        seen.setdefault(match["module"], set()).add(match["ab"])
    return sorted(module for module, parts in seen.items() if parts == {"A", "B"})


def base_weight_name(name: str, known: Mapping[str, Any] | set[str]) -> str:
    """``name`` as ``known`` holds it: verl's LoRA base sync adds ``.base_layer`` to wrapped projections (and to
    projections of the same leaf name that are not wrapped); an injected model has it, a plain one has not."""
    if name in known:
        return name
    plain = name.replace(".base_layer.", ".")
    if plain in known:
        return plain
    head, _, leaf = name.rpartition(".")
    wrapped = f"{head}.base_layer.{leaf}"
    return wrapped if wrapped in known else name


def merge_checkpoint_state(state: Mapping[str, torch.Tensor], r: int, alpha: float,
                           use_rslora: bool = False) -> dict[str, torch.Tensor]:
    """A verl LoRA checkpoint's peft-model state -> the plain model's state, adapters merged (W + s * B @ A, in
    float32, then the base's dtype)."""
    scale = scaling(r, alpha, use_rslora)
    plain: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if is_adapter_tensor(name):
            continue
        name = name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
        plain[name] = tensor
    for module in adapted_modules(state):
        a, b = _pair(state, module)
        weight = plain.get(f"{module}.weight")
        if weight is None:
            raise KeyError(f"LoRA checkpoint has an adapter on {module} but no base weight for it")
        plain[f"{module}.weight"] = (weight.float() + scale * (b.float() @ a.float())).to(weight.dtype)
    return plain


def adapter_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (lora_A, lora_B) of a checkpoint state or an adapter sync."""
    return {module: _pair(state, module) for module in adapted_modules(state)}


def _pair(state: Mapping[str, torch.Tensor], module: str) -> tuple[torch.Tensor, torch.Tensor]:
    found = {}
    for ab in ("A", "B"):
        for key in (f"{PEFT_PREFIX}{module}.lora_{ab}.{ADAPTER_NAME}.weight", f"{PEFT_PREFIX}{module}.lora_{ab}.weight",
                    f"{module}.lora_{ab}.{ADAPTER_NAME}.weight", f"{module}.lora_{ab}.weight"):
            if key in state:
                found[ab] = state[key]
                break
        else:
            raise KeyError(f"LoRA adapter of {module} lacks lora_{ab}")
    return found["A"], found["B"]
