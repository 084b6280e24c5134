"""The speech stage: a generated response -> 24 kHz speech, conditioned as Qwen2.5-Omni conditions its talker.

``Qwen2_5OmniForConditionalGeneration.generate(..., return_audio=True)`` (transformers 5.19) feeds its
talker, per sequence, the thinker's input embedding plus its last hidden state at every position:

* prompt: ``hidden + embedding`` for each prompt token (audio/image/video positions' embeddings zeroed,
  their hidden states kept), then the embedding of the speaker's text bos, then the first response token;
* reply: ``hidden + embedding`` of each further response token, then the embeddings of the talker's
  text eos and text pad; the talker consumes one per codec step (pads once they run out);
* talker ids: the codec mask token over the prompt, then codec pad and codec bos; ``input_text_ids``
  (prompt + text bos + first response token) give the talker its rotary positions.

``generate`` takes these states from its own KV-cached decoding. Here they come from one teacher-forced
forward of the thinker over prompt + response (the same function of the same weights; fp32 results
differ in the last bits, see docs/models.md). That is what lets any backend use the stage: vLLM returns
token ids only. The thinker is passed in (the `hf` server shares its own, already synced each step) or
owned by the stage (``update_thinker_weights``, for backends whose engine holds the weights elsewhere).

What is spoken: the whole response up to (not including) its first end-of-sequence token, tags and all,
as Omni speaks a reply (see docs/models.md for why not only the answer). token2wav runs one response at a
time, as ``generate`` does, with its noise (and talker sampling) drawn from the request's seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from verl_audio.models.clips import ClipFeatures, encode_clips
from verl_audio.models.families import QWEN2_5_OMNI
from verl_audio.speech.config import SAMPLING_RATE, SpeechOptions
from verl_audio.speech.talker import NON_THINKER, SpeechModules

logger = logging.getLogger(__name__)

#: the family whose talker the stage drives (Qwen2.5-Omni); other families' speech is refused at start
SPEAKING_FAMILY = QWEN2_5_OMNI


@dataclass
class SpeechRequest:
    """One response to speak: the prompt exactly as generated from (expanded ids + its clips) and the response."""

    prompt_ids: list[int]
    clips: list[ClipFeatures]
    response_ids: list[int]
    speaker: str
    seed: int = 0


@dataclass
class SpeechResult:
    """The waveform (float32, mono) and what it took."""

    waveform: np.ndarray
    sampling_rate: int = SAMPLING_RATE
    codec_tokens: int = 0
    spoken_tokens: int = 0
    compute_s: float = 0.0  # this request's share of its batch's wall time
    extra: dict = field(default_factory=dict)


@dataclass
class ThinkerStates:
    """Per request: token embeddings (audio zeroed) and last hidden states over prompt + spoken response."""

    embeds: list[torch.Tensor]  # (L_i, H)
    hidden: list[torch.Tensor]  # (L_i, H)
    prompt_lens: list[int]


class SpeechStage:
    """Talker + token2wav behind one call, ``speak(requests)``, fed by a thinker forward under current weights."""

    def __init__(
        self,
        modules: SpeechModules,
        thinker: Qwen2_5OmniThinkerForConditionalGeneration,
        options: SpeechOptions,
        eos_ids: Iterable[int],
        *,
        owns_thinker: bool = False,
    ) -> None:
        self.modules, self.thinker, self.options, self.owns_thinker = modules, thinker, options, owns_thinker
        self.eos_ids = {int(e) for e in eos_ids}
        cfg = thinker.config
        self.audio_token_id = int(cfg.audio_token_id)
        #: positions whose input embedding generate() zeroes before handing it to the talker
        self.media_ids = {int(i) for i in (cfg.audio_token_id, cfg.image_token_id, cfg.video_token_id) if i is not None}
        self.pad_token_id = int(cfg.get_text_config().pad_token_id or 0)
        for name in {options.speaker}:
            if name not in modules.speakers:
                raise ValueError(f"speaker {name!r} not in spk_dict.pt (has {sorted(modules.speakers)})")

    @property
    def device(self) -> torch.device:
        return next(self.thinker.parameters()).device

    def to(self, device: str | torch.device) -> None:
        """Move the talker and token2wav (and an owned thinker)."""
        self.modules.to(device)
        if self.owns_thinker:
            self.thinker.to(device)

    @torch.no_grad()
    def update_thinker_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
        """Copy actor weights (thinker HF names, optionally ``thinker.``-prefixed) into the owned thinker."""
        if not self.owns_thinker:
            raise RuntimeError("this stage shares its rollout's thinker: update the rollout's weights instead")
        params = {**dict(self.thinker.named_buffers()), **dict(self.thinker.named_parameters(remove_duplicate=False))}
        loaded = []
        for name, tensor in named_tensors:
            name = name.removeprefix("thinker.")
            if name.startswith(NON_THINKER):
                continue
            if name not in params:
                raise KeyError(f"weight {name!r} matches no parameter of the speech stage's thinker")
            target = params[name]
            if target.shape != tensor.shape:
                raise ValueError(f"weight {name!r}: shape {tuple(tensor.shape)} != {tuple(target.shape)}")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
            loaded.append(name)
        return loaded

    # ---- conditioning ----------------------------------------------------------------------------

    def spoken_ids(self, response_ids: list[int]) -> list[int]:
        """The response up to (not including) its first end-of-sequence token."""
        for i, tok in enumerate(response_ids):
            if int(tok) in self.eos_ids:
                return [int(t) for t in response_ids[:i]]
        return [int(t) for t in response_ids]

    def _audio_embeddings(self, clips: list[ClipFeatures]) -> torch.Tensor:
        return encode_clips(SPEAKING_FAMILY, self.thinker, clips, self.device)

    @torch.no_grad()
    def thinker_states(self, requests: list[SpeechRequest]) -> ThinkerStates:
        """One left-padded thinker forward over prompt + spoken response of every request."""
        seqs = [list(r.prompt_ids) + self.spoken_ids(r.response_ids) for r in requests]
        width = max(len(s) for s in seqs)
        dev = self.device
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :] = torch.tensor(s)
            mask[row, width - len(s) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        embeds = self.thinker.get_input_embeddings()(ids)
        clips = [c for r in requests for c in r.clips]
        full = embeds
        if clips:
            audio = self._audio_embeddings(clips).to(embeds.dtype)
            slots = (ids == self.audio_token_id).unsqueeze(-1).expand_as(embeds)
            if int((ids == self.audio_token_id).sum()) != audio.shape[0]:
                raise ValueError("speech stage: <|AUDIO|> slots and audio embeddings differ in number")
            full = embeds.masked_scatter(slots, audio)
        seqlens = torch.tensor([c.frames for c in clips], dtype=torch.long, device=dev) if clips else None
        positions, _ = self.thinker.get_rope_index(ids, None, None, mask, False, seqlens, None)
        hidden = self.thinker.model(inputs_embeds=full, attention_mask=mask, position_ids=positions).last_hidden_state
        media = torch.zeros_like(ids, dtype=torch.bool)
        for m in self.media_ids:
            media |= ids == m
        talker_embeds = full.masked_fill(media.unsqueeze(-1), 0.0)
        out = ThinkerStates([], [], [len(r.prompt_ids) for r in requests])
        for row, s in enumerate(seqs):
            out.embeds.append(talker_embeds[row, width - len(s) :])
            out.hidden.append(hidden[row, width - len(s) :])
        return out

    def _talker_inputs(self, requests: list[SpeechRequest], states: ThinkerStates) -> dict[str, torch.Tensor]:
        """The talker's batched inputs, left-padded, built as ``Qwen2_5OmniForConditionalGeneration.generate``."""
        talker, dev = self.modules.talker, self.device
        embed = self.thinker.get_input_embeddings()

        def tok(i: int) -> torch.Tensor:
            return embed(torch.tensor([i], device=dev))[0]

        eos_e, pad_e = tok(talker.text_eos_token), tok(talker.text_pad_token)
        prompts, replies, text_ids, codec_ids = [], [], [], []
        for r, e, h, plen in zip(requests, states.embeds, states.hidden, states.prompt_lens, strict=True):
            bos = int(self.modules.speakers[r.speaker]["bos_token"])
            cond = h + e
            prompts.append(torch.cat([cond[:plen], tok(bos)[None], cond[plen : plen + 1]]))
            replies.append(torch.cat([cond[plen + 1 :], eos_e[None], pad_e[None]]))
            text_ids.append(list(r.prompt_ids) + [bos, self.spoken_ids(r.response_ids)[0]])
            codec_ids.append([talker.codec_mask_token] * plen + [talker.codec_pad_token, talker.codec_bos_token])
        n, width = len(requests), max(p.shape[0] for p in prompts)
        hdim = prompts[0].shape[-1]
        inputs_embeds = prompts[0].new_zeros(n, width, hdim)
        mask = torch.zeros(n, width, dtype=torch.long, device=dev)
        # left padding as codec mask tokens: the prompt is all mask tokens, so repetition penalty sees nothing new
        ids = torch.full((n, width), talker.codec_mask_token, dtype=torch.long, device=dev)
        tids = torch.full((n, width), self.pad_token_id, dtype=torch.long, device=dev)
        rlen = max(x.shape[0] for x in replies)
        reply = pad_e.expand(n, rlen, hdim).clone()
        for row in range(n):
            k = prompts[row].shape[0]
            inputs_embeds[row, width - k :] = prompts[row]
            mask[row, width - k :] = 1
            ids[row, width - k :] = torch.tensor(codec_ids[row], device=dev)
            tids[row, width - k :] = torch.tensor(text_ids[row], device=dev)
            reply[row, : replies[row].shape[0]] = replies[row]
        out = {"input_ids": ids, "input_text_ids": tids, "inputs_embeds": inputs_embeds, "attention_mask": mask,
               "thinker_reply_part": reply}  # fmt: skip
        clips = [c for r in requests for c in r.clips]
        if clips:
            out["audio_feature_lengths"] = torch.tensor([c.frames for c in clips], dtype=torch.long, device=dev)
        return out

    # ---- speaking --------------------------------------------------------------------------------

    @torch.inference_mode()
    def codes(self, requests: list[SpeechRequest]) -> list[torch.Tensor]:
        """The talker's codec tokens per request (eos and padding removed)."""
        states = self.thinker_states(requests)
        inputs = self._talker_inputs(requests, states)
        talker = self.modules.talker
        kwargs = self.options.talker_kwargs()
        talker.rope_deltas = None  # generate() keeps the last batch's deltas on the module
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(requests[0].seed)
            result = talker.generate(
                **{k: v.to(talker.dtype) if v.is_floating_point() else v for k, v in inputs.items()},
                suppress_tokens=[talker.codec_bos_token],
                pad_token_id=talker.codec_pad_token,
                **kwargs,
            )
        generated = result[:, inputs["input_ids"].shape[1] :]
        eos = torch.tensor(kwargs["eos_token_id"], device=generated.device)
        out = []
        for row in generated:
            stop = torch.nonzero(torch.isin(row, eos))
            out.append(row[: int(stop[0]) if len(stop) else row.shape[0]])
        return out

    @torch.inference_mode()
    def waveform(self, code: torch.Tensor, speaker: str, seed: int) -> np.ndarray:
        """token2wav of one response's codes (float32), its diffusion noise drawn from ``seed``."""
        if code.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        spk = self.modules.speakers[speaker]
        dev = self.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            wav = self.modules.token2wav(
                code[None].to(dev),
                conditioning=spk["cond"].to(dev).float(),
                reference_mel=spk["ref_mel"].to(dev).float(),
                num_steps=self.options.token2wav_steps,
            )
        return wav.reshape(-1).float().cpu().numpy()

    def speak(self, requests: list[SpeechRequest]) -> list[SpeechResult]:
        """Speak every request: one batched thinker forward and talker run, then token2wav per response."""
        if not requests:
            return []
        start = time.perf_counter()
        # a response that ends at once has nothing to say: it gets an empty waveform (scored as silence)
        todo = [i for i, r in enumerate(requests) if self.spoken_ids(r.response_ids)]
        codes: list[torch.Tensor] = [torch.zeros(0, dtype=torch.long)] * len(requests)
        if todo:
            for i, code in zip(todo, self.codes([requests[i] for i in todo]), strict=True):
                codes[i] = code
        results = []
        for r, code in zip(requests, codes, strict=True):
            wav = self.waveform(code, r.speaker, r.seed)
            results.append(SpeechResult(wav, SAMPLING_RATE, int(code.numel()), len(self.spoken_ids(r.response_ids))))
        share = (time.perf_counter() - start) / len(requests)
        for res in results:
            res.compute_s = share
        return results
