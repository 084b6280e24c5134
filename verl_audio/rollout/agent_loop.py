"""``SpeakingAgentLoop``: verl's single-turn agent loop plus speech for rows whose output is audio.

verl computes rewards inside the agent loop (``_agent_loop_postprocess`` -> reward loop), after ``run``
returns and with ``AgentLoopOutput.extra_fields`` merged into the reward's ``extra_info``. So the speech
is made here, right after the text: ``extra_fields["response_audio"] = {"array", "sampling_rate"}``
reaches ``reward_fns`` as ``extra_info["response_audio"]``, whatever rollout backend produced the text.
Registered for verl as ``speech_single_turn_agent`` (``trainer/config/agent_loops.yaml``); text-output
rows run exactly as verl's ``single_turn_agent``.

Every response also gets ``extra_fields["response_ended"]`` (reaching the rewards as
``extra_info["response_ended"]``): whether its last token is an end-of-sequence id of the checkpoint, i.e.
it ended by itself rather than being cut at the response budget. verl's reward manager decodes without
special tokens, so the text alone cannot tell; ``reward_fns/choice.py`` reads it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.utils.profiler import simple_timer

from reward_fns.protocol import RESPONSE_AUDIO, output_modality
from verl_audio.rollout import speech_endpoints as endpoints

AGENT_NAME = "speech_single_turn_agent"
#: extra fields this loop adds for the trainer's speech metrics (popped there, never sent to the actor)
SPEECH_FIELDS = ("speech_compute_s", "speech_codec_tokens")
#: extra field (and reward extra_info key) saying whether the response ended with an end-of-sequence id
RESPONSE_ENDED = "response_ended"


@lru_cache(maxsize=8)
def end_token_ids(model_path: str, tokenizer_eos: int | None) -> frozenset[int]:
    """The ids that end a response: the checkpoint's generation config ``eos_token_id`` (what both rollout
    backends stop on) and the tokenizer's end-of-sequence id."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):  # no generation_config.json: the tokenizer's id alone
        eos = None
    ids = set([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer_eos is not None:
        ids.add(int(tokenizer_eos))
    return frozenset(int(i) for i in ids)


class SpeakingAgentLoop(SingleTurnAgentLoop):
    """Generates the text as verl's single-turn loop does, then speaks it when the row's output is audio."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        output = await super().run(sampling_params, **kwargs)
        ends = end_token_ids(str(self.config.actor_rollout_ref.model.path), self.tokenizer.eos_token_id)
        output.extra_fields[RESPONSE_ENDED] = bool(output.response_ids) and int(output.response_ids[-1]) in ends
        info = kwargs.get("extra_info") or {}
        try:
            modality = output_modality(info)
        except ValueError as err:
            raise ValueError(f"row {info.get('id', info.get('index', '?'))}: {err}") from err
        if modality != "audio":
            return output
        audios = (output.multi_modal_data or {}).get("audios")
        rate = (output.mm_processor_kwargs or {}).get("sampling_rate")
        timing: dict[str, float] = {}
        with simple_timer("speech", timing):
            spoken = await endpoints.next_endpoint().speak.remote(
                prompt_ids=output.prompt_ids,
                response_ids=output.response_ids,
                audio_data=audios,
                sampling_rate=rate,
                request_id=f"speech-{info.get('id', '')}",
            )
        output.extra_fields[RESPONSE_AUDIO] = {"array": spoken["array"], "sampling_rate": spoken["sampling_rate"]}
        output.extra_fields["speech_compute_s"] = float(spoken["compute_s"])
        output.extra_fields["speech_codec_tokens"] = int(spoken["codec_tokens"])
        return output
