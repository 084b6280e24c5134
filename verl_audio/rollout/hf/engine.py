"""An audio model as a batch generator: left-padded prefill with audio, then a KV-cached decode loop.

The loop is ours rather than HF ``generate`` so that each row keeps its own sampling settings, token
budget and stop tokens, finished rows leave the batch (their KV cache is dropped), an abort stops
between steps, and logits are computed for the last position only (a long audio prompt times a 150k
vocabulary would not fit otherwise).

Positions follow the model's own ``forward`` (``AudioFamily.positions``): multimodal RoPE from
``get_rope_index`` on the padded prompt with its attention mask (Omni models), or the attended tokens counted
(Qwen2-Audio); decode steps take ``past length + the row's delta``. They are passed explicitly, so nothing
depends on the model's cached ``rope_deltas``.

LoRA: an adapter from the actor is applied with peft's LoRA layers injected into the model
(``load_adapter``); the base weights stay as loaded.

Multimodal placeholder ids (``AudioFamily.placeholder_ids``) are never sampled: the actor's forward would
read a sampled ``<|AUDIO|>`` as a slot for audio it does not have and fail. Nor are the LM head's rows
past the tokenizer (ids no tokenizer can decode), as verl's vLLM rollout bans them: both backends then
sample from the same ids.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, DynamicCache

from verl_audio.content_cache import LRUCache
from verl_audio.models.clips import ClipFeatures, encode_clips
from verl_audio.models.families import family_of_config
from verl_audio.models import lora
from verl_audio.models.token_ids import eos_token_ids
from verl_audio.rollout.sampling import BatchSampler, SamplingSpec, sample_step

logger = logging.getLogger(__name__)



#: one expert's projection as verl sends mixture-of-experts weights (``unfuse_moe_params``)
_EXPERT = re.compile(r"(.+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight")


def _fused_expert(params: dict[str, torch.Tensor], name: str) -> tuple[str, torch.Tensor | None]:
    """(the fused parameter's name, the view of it that one expert's tensor fills), or (name, None).

    transformers 5 holds a layer's experts fused: ``gate_up_proj`` (experts, 2 * intermediate, hidden) with the
    gate rows first, and ``down_proj`` (experts, hidden, intermediate); verl splits them per expert to send them.
    """
    match = _EXPERT.fullmatch(name)
    if match is None:
        return name, None
    base, expert, kind = match.group(1), int(match.group(2)), match.group(3)
    fused_name = f"{base}.{'down_proj' if kind == 'down' else 'gate_up_proj'}"
    fused = params.get(fused_name)
    if fused is None:
        return name, None
    if kind == "down":
        return fused_name, fused[expert]
    half = fused.shape[1] // 2
    return fused_name, fused[expert, :half] if kind == "gate" else fused[expert, half:]


@dataclass
class GenRequest:
    """One sequence to generate."""

    prompt_ids: list[int]
    clips: list[ClipFeatures]
    spec: SamplingSpec


@dataclass
class GenResult:
    """What one sequence produced; ``finish`` is ``stop``, ``length`` or ``abort``."""

    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    finish: str = "length"


class AudioGenerator:
    """Holds the family's trainable model on one device and generates padded batches (one thread at a time)."""

    def __init__(
        self,
        path: str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "sdpa",
        embed_cache_size: int = 16,
        seed: int = 0,
    ) -> None:
        self.path = str(path)
        self.device = torch.device(device)
        self.family = family_of_config(AutoConfig.from_pretrained(self.path))
        self.model = self.family.load_trainable(self.path, dtype=dtype, attn_implementation=attn_implementation).eval()
        self.model.requires_grad_(False)
        self.model.to(self.device)
        cfg = self.model.config
        text = self.family.text_config(cfg)
        self.audio_token_id = self.family.audio_token_id(cfg)
        self.pad_token_id = int(text.pad_token_id or 0)
        if self.pad_token_id == self.audio_token_id:
            raise ValueError("pad_token_id equals the audio token id; left padding would be read as audio")
        self.eos_ids = eos_token_ids(self.model, self.path)
        self.text_model = self.family.text_model(self.model)
        vocab = self.lm_head.out_features
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.banned_ids = self.family.placeholder_ids(cfg, tokenizer, vocab) | set(range(min(len(tokenizer), vocab), vocab))
        if self.banned_ids & self.eos_ids:
            clash = sorted(self.banned_ids & self.eos_ids)
            raise ValueError(f"end-of-sequence ids {clash} are multimodal placeholders ({self.path})")
        self.max_positions = int(text.max_position_embeddings)
        # audio-encoder outputs depend on the weights: cleared whenever weights change or leave the device
        self.embed_cache: LRUCache[torch.Tensor] = LRUCache(embed_cache_size)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.params = dict(self.model.named_parameters(remove_duplicate=False))
        self.adapter_modules: list[str] | None = None  # the LoRA-wrapped modules, once an adapter arrived

    # ---- weights and placement -------------------------------------------------------------------

    def to(self, device: str | torch.device) -> None:
        """Move the weights (e.g. to CPU while the trainer uses the accelerator)."""
        self.embed_cache.clear()
        self.model.to(device)

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
        """Copy tensors named like the thinker's parameters into it; return the names loaded."""
        loaded, skipped = [], 0
        # some exports also carry buffers (e.g. rotary inv_freq): accept them; only parameters are required.
        # Looked up per call: moving the model replaces buffer tensors (parameters stay the same objects).
        loadable = {**dict(self.model.named_buffers()), **self.params}
        for name, tensor in named_tensors:
            if name.startswith(self.family.other_parts):
                skipped += 1
                continue
            name = name if name in loadable else self.family.trainable_name(name)
            name = lora.base_weight_name(name, loadable)  # a LoRA base sync names wrapped projections .base_layer
            param = loadable.get(name)
            if param is None:
                name, param = _fused_expert(loadable, name)
            if param is None:
                raise KeyError(f"weight {name!r} matches no parameter of the {self.family.name} model ({self.path})")
            if param.shape != tensor.shape:
                raise ValueError(f"weight {name!r}: shape {tuple(tensor.shape)} != parameter {tuple(param.shape)}")
            param.copy_(tensor.to(device=param.device, dtype=param.dtype))
            loaded.append(name)
        if skipped:
            logger.info("hf rollout: ignored %d weights of %s (not the generating part)", skipped,
                        "/".join(self.family.other_parts))
        self.embed_cache.clear()
        return loaded

    @torch.no_grad()
    def load_adapter(self, named_tensors: list[tuple[str, torch.Tensor]], peft_config: dict[str, Any]) -> list[str]:
        """Apply a whole LoRA adapter sent by verl (``base_model.model.<module>.lora_{A,B}.weight``): the first one
        injects LoRA layers into exactly its modules, later ones are copied into them. Returns the modules.

        With an embedding or ``lm_head`` among the targets, peft's adapter state (``save_embedding_layers="auto"``)
        also holds that layer's base weight (``…lm_head.base_layer.weight``): it is loaded as a base weight."""
        base = [(name.removeprefix(lora.PEFT_PREFIX), t)
                for name, t in named_tensors if not lora.is_adapter_tensor(name)]
        named_tensors = [(name, t) for name, t in named_tensors if lora.is_adapter_tensor(name)]
        modules = lora.adapted_modules(name for name, _ in named_tensors)
        if self.adapter_modules is None:
            lora.inject(self.model, modules, peft_config)
            self.adapter_modules = modules
            self.params = dict(self.model.named_parameters(remove_duplicate=False))
        elif modules != self.adapter_modules:
            raise ValueError(f"LoRA adapter covers {len(modules)} modules, the injected one {len(self.adapter_modules)}")
        loaded = lora.load_adapter(self.model, named_tensors)
        if loaded != modules:
            raise ValueError(f"LoRA adapter lacks A or B for {sorted(set(modules) - set(loaded))[:4]}")
        if base and len(self.load_weights(base)) != len(base):
            raise ValueError(f"LoRA adapter update: base weights of the generating part expected, got {base[0][0]!r}…")
        self.embed_cache.clear()
        return loaded

    # ---- inputs ----------------------------------------------------------------------------------

    def _audio_embeddings(self, clips: list[ClipFeatures]) -> list[torch.Tensor]:
        """Audio-encoder outputs per clip; each distinct clip is encoded once (then kept in the LRU)."""
        known: dict[str, torch.Tensor] = {}
        pending: dict[str, ClipFeatures] = {}
        for c in clips:
            if c.key in known or c.key in pending:
                continue
            emb = self.embed_cache.get(c.key)
            if emb is None:
                pending[c.key] = c
            else:
                known[c.key] = emb
        if pending:
            todo = list(pending.values())
            out = encode_clips(self.family, self.model, todo, self.device)
            for c, emb in zip(todo, out.split([c.tokens for c in todo]), strict=True):
                known[c.key] = emb
                self.embed_cache.put(c.key, emb.clone())  # a view would pin the whole batch output
        return [known[c.key] for c in clips]

    def _prefill_inputs(self, requests: list[GenRequest]) -> tuple[torch.Tensor, ...]:
        """Left-padded attention mask, inputs_embeds with audio, rope positions (3, B, L), decode deltas (B, 1)."""
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(requests):
            ids[row, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = self.model.get_input_embeddings()(ids)
        clips = [c for r in requests for c in r.clips]  # row-major: the order placeholders are filled in
        if clips:
            audio = torch.cat(self._audio_embeddings(clips)).to(embeds.dtype)
            audio_slots = ids == self.audio_token_id
            if int(audio_slots.sum()) != audio.shape[0]:  # prepare() checks each request; this guards the batch
                raise ValueError(f"{int(audio_slots.sum())} audio slots for {audio.shape[0]} audio embeddings")
            slots = audio_slots.unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(slots, audio)
        positions, deltas = self.family.positions(self.model, ids, mask, [c.frames for c in clips])
        return mask, embeds, positions, deltas

    # ---- generation ------------------------------------------------------------------------------

    @property
    def lm_head(self) -> torch.nn.Module:
        """The model's output projection, looked up each time: an adapter or a test may replace the module."""
        return self.family.lm_head(self.model)

    def _logits(self, embeds, mask, positions, cache) -> torch.Tensor:
        hidden = self.text_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        ).last_hidden_state
        return self.lm_head(hidden[:, -1]).float()

    def _step_positions(self, past: int, deltas: torch.Tensor) -> torch.Tensor:
        """Positions of one decode step: ``past + delta`` per row, on every position row the model takes."""
        step = past + deltas
        return step if self.family.position_rows == 1 else step.unsqueeze(0).expand(self.family.position_rows, -1, -1)

    @torch.inference_mode()
    def generate(self, requests: list[GenRequest], abort: threading.Event | None = None) -> list[GenResult]:
        """Generate every request as one padded batch; stops early (``abort`` finish) once ``abort`` is set."""
        results = [GenResult() for _ in requests]
        if not requests:
            return results
        mask, embeds, positions, deltas = self._prefill_inputs(requests)
        specs = [r.spec for r in requests]
        sampler = BatchSampler.from_specs(specs, self.device, banned=self.banned_ids)
        vocab = self.lm_head.out_features
        seen = None
        if sampler.penalty is not None:  # vLLM penalizes prompt and output tokens alike
            seen = torch.zeros(len(requests), vocab, dtype=torch.bool, device=self.device)
            for row, r in enumerate(requests):
                seen[row, torch.tensor([t for t in r.prompt_ids if t < vocab], dtype=torch.long)] = True
        cache = DynamicCache(config=self.family.text_config(self.model.config))
        logits = self._logits(embeds, mask, positions, cache)
        active = list(range(len(requests)))  # request index of each batch row
        while True:
            tokens, logps = sample_step(logits, sampler, self.generator, seen)
            keep = []
            for row, (tok, lp) in enumerate(zip(tokens.tolist(), logps.tolist(), strict=True)):
                spec, res = specs[active[row]], results[active[row]]
                res.token_ids.append(tok)
                res.log_probs.append(lp)
                if (not spec.ignore_eos and tok in self.eos_ids) or tok in spec.stop_token_ids:
                    res.finish = "stop"
                elif len(res.token_ids) >= spec.max_tokens:
                    res.finish = "length"
                else:
                    keep.append(row)
            if not keep:
                break
            if abort is not None and abort.is_set():
                for row in keep:
                    results[active[row]].finish = "abort"
                break
            if len(keep) < len(active):  # finished rows leave the batch
                rows = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(rows)
                mask, deltas, tokens, sampler = mask[rows], deltas[rows], tokens[rows], sampler.select(rows)
                seen = None if seen is None else seen[rows]
                active = [active[row] for row in keep]
            if seen is not None:
                seen[torch.arange(len(active), device=self.device), tokens] = True
            past = cache.get_seq_length()
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            step_pos = self._step_positions(past, deltas)
            logits = self._logits(self.model.get_input_embeddings()(tokens[:, None]), mask, step_pos, cache)
        return results
