"""The Qwen2.5-Omni thinker as a batch generator: left-padded prefill with audio, then a KV-cached decode loop.

The loop is ours rather than HF ``generate`` so that each row keeps its own sampling settings, token
budget and stop tokens, finished rows leave the batch (their KV cache is dropped), an abort stops
between steps, and logits are computed for the last position only (a long audio prompt times a 150k
vocabulary would not fit otherwise).

Positions follow the thinker's own ``forward``: ``get_rope_index`` on the padded prompt with its
attention mask, and for decode steps ``past length + rope delta - left padding``. They are passed
explicitly, so nothing depends on the model's cached ``rope_deltas``.

Multimodal placeholder ids (``placeholder_token_ids``) are never sampled: the actor's forward would
read a sampled ``<|AUDIO|>`` as a slot for audio it does not have and fail. Nor are the LM head's rows
past the tokenizer (ids no tokenizer can decode), as verl's vLLM rollout bans them: both backends then
sample from the same ids.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, Qwen2_5OmniThinkerForConditionalGeneration

from verl_audio.content_cache import LRUCache
from verl_audio.models.clips import ClipFeatures, encode_clips
from verl_audio.models.loading import load_part
from verl_audio.models.omni_config import NON_THINKER_PREFIXES
from verl_audio.models.token_ids import eos_token_ids, placeholder_token_ids, tokenizer_size
from verl_audio.rollout.sampling import BatchSampler, SamplingSpec, sample_step

logger = logging.getLogger(__name__)



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


class OmniGenerator:
    """Holds the thinker on one device and generates padded batches (call from one thread at a time)."""

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
        self.model = load_part(Qwen2_5OmniThinkerForConditionalGeneration, self.path, other_parts=NON_THINKER_PREFIXES,
                               dtype=dtype, attn_implementation=attn_implementation).eval()
        self.model.requires_grad_(False)
        self.model.to(self.device)
        cfg = self.model.config
        self.audio_token_id = int(cfg.audio_token_id)
        self.pad_token_id = int(cfg.get_text_config().pad_token_id or 0)
        if self.pad_token_id == self.audio_token_id:
            raise ValueError("pad_token_id equals the audio token id; left padding would be read as audio")
        self.eos_ids = eos_token_ids(self.model, self.path)
        vocab = self.model.lm_head.out_features
        self.banned_ids = placeholder_token_ids(cfg, vocab) | set(range(tokenizer_size(self.path, vocab), vocab))
        if self.banned_ids & self.eos_ids:
            clash = sorted(self.banned_ids & self.eos_ids)
            raise ValueError(f"end-of-sequence ids {clash} are multimodal placeholders ({self.path})")
        self.max_positions = int(cfg.get_text_config().max_position_embeddings)
        # audio-encoder outputs depend on the weights: cleared whenever weights change or leave the device
        self.embed_cache: LRUCache[torch.Tensor] = LRUCache(embed_cache_size)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.params = dict(self.model.named_parameters(remove_duplicate=False))

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
            if name.startswith("thinker."):
                name = name[len("thinker.") :]
            elif name.startswith(NON_THINKER_PREFIXES):
                skipped += 1
                continue
            param = loadable.get(name)
            if param is None:
                raise KeyError(f"weight {name!r} matches no parameter of the thinker ({self.path})")
            if param.shape != tensor.shape:
                raise ValueError(f"weight {name!r}: shape {tuple(tensor.shape)} != parameter {tuple(param.shape)}")
            param.copy_(tensor.to(device=param.device, dtype=param.dtype))
            loaded.append(name)
        if skipped:
            logger.info("hf rollout: ignored %d talker/token2wav weights (audio output is not generated)", skipped)
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
            out = encode_clips(self.model, todo, self.device)
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
                raise ValueError(f"{int(audio_slots.sum())} <|AUDIO|> slots for {audio.shape[0]} audio embeddings")
            slots = audio_slots.unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(slots, audio)
        seqlens = torch.tensor([c.frames for c in clips], dtype=torch.long, device=self.device) if clips else None
        positions, deltas = self.model.get_rope_index(ids, None, None, mask, False, seqlens, None)
        deltas = deltas.to(self.device) - (1 - mask).sum(dim=-1, keepdim=True)
        return mask, embeds, positions, deltas

    # ---- generation ------------------------------------------------------------------------------

    def _logits(self, embeds, mask, positions, cache) -> torch.Tensor:
        hidden = self.model.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        ).last_hidden_state
        return self.model.lm_head(hidden[:, -1]).float()

    @torch.inference_mode()
    def generate(self, requests: list[GenRequest], abort: threading.Event | None = None) -> list[GenResult]:
        """Generate every request as one padded batch; stops early (``abort`` finish) once ``abort`` is set."""
        results = [GenResult() for _ in requests]
        if not requests:
            return results
        mask, embeds, positions, deltas = self._prefill_inputs(requests)
        specs = [r.spec for r in requests]
        sampler = BatchSampler.from_specs(specs, self.device, banned=self.banned_ids)
        vocab = self.model.lm_head.out_features
        seen = None
        if sampler.penalty is not None:  # vLLM penalizes prompt and output tokens alike
            seen = torch.zeros(len(requests), vocab, dtype=torch.bool, device=self.device)
            for row, r in enumerate(requests):
                seen[row, torch.tensor([t for t in r.prompt_ids if t < vocab], dtype=torch.long)] = True
        cache = DynamicCache(config=self.model.config.get_text_config())
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
            step_pos = (past + deltas).unsqueeze(0).expand(3, -1, -1)
            logits = self._logits(self.model.get_input_embeddings()(tokens[:, None]), mask, step_pos, cache)
        return results
