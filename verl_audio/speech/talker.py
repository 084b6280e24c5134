"""Loading the frozen speech half of a Qwen2.5-Omni checkpoint: talker, token2wav and the speakers.

Only the ``talker.*`` and ``token2wav.*`` tensors are read (safetensors, single file or shards), so a
speech worker never holds a second copy of a thinker it does not need. A checkpoint without them (a
thinker-only export, ``enable_audio_output: false``) is refused with the names of what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    Qwen2_5OmniConfig,
    Qwen2_5OmniTalkerForConditionalGeneration,
    Qwen2_5OmniToken2WavModel,
)

from verl_audio.models.omni_config import NON_THINKER_PREFIXES

#: prefixes of a full checkpoint's weights that are not the thinker's
NON_THINKER = NON_THINKER_PREFIXES
TALKER_PREFIX, TOKEN2WAV_PREFIX = NON_THINKER
SPEAKER_FILE = "spk_dict.pt"


class MissingSpeechWeights(ValueError):
    """The checkpoint cannot speak: talker / token2wav weights or the speaker file are absent."""


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    return sorted(path.glob("*.safetensors"))


def checkpoint_keys(path: str | Path) -> set[str]:
    """Every tensor name in the checkpoint's safetensors files (read from headers only)."""
    from safetensors import safe_open

    keys: set[str] = set()
    for file in _weight_files(Path(path)):
        with safe_open(str(file), framework="pt") as f:
            keys.update(f.keys())
    return keys


def missing_speech_parts(path: str | Path) -> list[str]:
    """What a speaking checkpoint needs and ``path`` lacks: ``talker.*``, ``token2wav.*``, ``spk_dict.pt``."""
    path = Path(path)
    keys = checkpoint_keys(path)
    missing = [f"{p}* weights" for p in (TALKER_PREFIX, TOKEN2WAV_PREFIX) if not any(k.startswith(p) for k in keys)]
    if not (path / SPEAKER_FILE).exists():
        missing.append(SPEAKER_FILE)
    return missing


def require_speech_weights(path: str | Path) -> None:
    """Raise ``MissingSpeechWeights`` naming the missing parts unless ``path`` can speak."""
    missing = missing_speech_parts(path)
    if missing:
        raise MissingSpeechWeights(
            f"{path} cannot speak: it has no {', no '.join(missing)} (a thinker-only checkpoint). Rows with "
            "output_modality 'audio' need a full Qwen2.5-Omni checkpoint (e.g. Qwen/Qwen2.5-Omni-7B, or "
            "`python -m verl_audio.models.tiny --talker`), or prepare the data with --output-modality text"
        )


def _load_prefixed(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    tensors[key[len(prefix) :]] = f.get_tensor(key)
    return tensors


def _load_module(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise MissingSpeechWeights(
            f"{path}: {what} weights do not match the config: missing {result.missing_keys[:5]} "
            f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})"
        )


@dataclass
class SpeechModules:
    """The frozen speech modules and the speaker table, on one device."""

    talker: Qwen2_5OmniTalkerForConditionalGeneration
    token2wav: Qwen2_5OmniToken2WavModel
    speakers: dict[str, dict[str, Any]]
    config: Qwen2_5OmniConfig

    def to(self, device: str | torch.device) -> None:
        self.talker.to(device)
        self.token2wav.to(device)

    def parameter_bytes(self) -> dict[str, int]:
        """Bytes of the talker's and token2wav's parameters and buffers (what they hold on their device)."""

        def size(m: torch.nn.Module) -> int:
            return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])

        return {"talker": size(self.talker), "token2wav": size(self.token2wav)}


def load_speech_modules(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SpeechModules:
    """Talker (in ``dtype``) and token2wav (float32, as transformers runs it) from ``path``, frozen and in eval."""
    path = Path(path)
    require_speech_weights(path)
    config = Qwen2_5OmniConfig.from_pretrained(path)
    talker = Qwen2_5OmniTalkerForConditionalGeneration(config.talker_config)
    _load_module(talker, _load_prefixed(path, TALKER_PREFIX), "talker", path)
    token2wav = Qwen2_5OmniToken2WavModel(config.token2wav_config)
    _load_module(token2wav, _load_prefixed(path, TOKEN2WAV_PREFIX), "token2wav", path)
    talker.to(device=device, dtype=dtype).eval().requires_grad_(False)
    token2wav.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    speakers = torch.load(path / SPEAKER_FILE, weights_only=True)
    return SpeechModules(talker=talker, token2wav=token2wav, speakers=dict(speakers), config=config)
