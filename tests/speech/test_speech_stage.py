"""The speech stage on a tiny Omni with a talker: parity with transformers' generate, batching, weights, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniThinkerForConditionalGeneration
from verl.workers.config import RolloutConfig

from verl_audio.models.audio_features import load_omni_processor
from verl_audio.models.tiny import build_tiny_omni
from verl_audio.rollout.features import AudioFeaturizer
from verl_audio.rollout.hf.server import HFRolloutServer
from verl_audio.rollout.speech_server import StandaloneSpeechServer
from verl_audio.speech.config import SAMPLING_RATE, SpeechOptions
from verl_audio.speech.stage import SPEAKING_FAMILY, SpeechRequest, SpeechStage
from verl_audio.speech.talker import MissingSpeechWeights, load_speech_modules, require_speech_weights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 16_000
GREEDY_TALKER = {"talker_do_sample": False, "talker_max_new_tokens": 30}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """token2wav's many tiny convolutions run >10x slower with 2 intra-op threads on a shared 2-core host."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("speech") / "tiny", talker=True)


@pytest.fixture(scope="module")
def omni(ckpt: Path) -> Qwen2_5OmniForConditionalGeneration:
    return Qwen2_5OmniForConditionalGeneration.from_pretrained(ckpt).eval()


@pytest.fixture(scope="module")
def processor(ckpt: Path) -> Any:
    return load_omni_processor(ckpt)


def audio_prompt(processor: Any, seconds: float, seed: int, text: str = "Is it entailed?") -> dict[str, Any]:
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "q.wav"}, {"type": "text", "text": text}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    audio = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
    inputs = processor(text=chat, audio=[audio], return_tensors="pt", sampling_rate=SR)
    return {"inputs": inputs, "audio": audio, "ids": inputs["input_ids"][0].tolist()}


def stage_for(omni: Any, ckpt: Path, speaker: str = "Ethan") -> SpeechStage:
    from verl_audio.models.token_ids import eos_token_ids

    options = SpeechOptions(speaker=speaker, **GREEDY_TALKER)
    return SpeechStage(load_speech_modules(ckpt), omni.thinker, options, eos_token_ids(omni.thinker, str(ckpt)))


def generate_reference(omni: Any, prompt: dict[str, Any], seed: int, speaker: str) -> tuple[list[int], torch.Tensor]:
    """transformers' own speech for a greedy response: (response ids it spoke, waveform)."""
    torch.manual_seed(seed)
    text, wav = omni.generate(**prompt["inputs"], return_audio=True, speaker=speaker, thinker_max_new_tokens=10,
                              thinker_do_sample=False, talker_max_new_tokens=GREEDY_TALKER["talker_max_new_tokens"],
                              talker_do_sample=False)  # fmt: skip
    return text[0, len(prompt["ids"]) :].tolist(), wav


def as_spoken(response: list[int], eos: set[int]) -> list[int]:
    """generate() never feeds its last sampled token back: it speaks response[:-1]; end there with an eos."""
    return response if response[-1] in eos else response[:-1] + [min(eos)]


def test_waveform_equals_transformers_generate_with_audio_prompt(omni, ckpt: Path, processor) -> None:
    stage = stage_for(omni, ckpt)
    featurizer = AudioFeaturizer(SPEAKING_FAMILY, processor.feature_extractor, stage.audio_token_id)
    for seconds, seed, speaker in ((1.0, 3, "Ethan"), (0.6, 11, "Chelsie")):
        prompt = audio_prompt(processor, seconds, seed)
        response, wav = generate_reference(omni, prompt, seed, speaker)
        clips = featurizer.prepare(prompt["ids"], [prompt["audio"]], SR)
        (result,) = stage.speak([SpeechRequest(prompt["ids"], clips, as_spoken(response, stage.eos_ids), speaker, seed)])
        assert result.sampling_rate == SAMPLING_RATE == 24000
        assert result.waveform.shape == tuple(wav.shape) and result.waveform.size > 0
        np.testing.assert_allclose(result.waveform, wav.numpy(), atol=1e-5, rtol=0)


def test_batched_equals_one_at_a_time_and_speaker_matters(omni, ckpt: Path, processor) -> None:
    stage = stage_for(omni, ckpt)
    featurizer = AudioFeaturizer(SPEAKING_FAMILY, processor.feature_extractor, stage.audio_token_id)
    eos = min(stage.eos_ids)
    reqs = []
    for i, (seconds, resp) in enumerate(((1.2, [40, 41, 42, 43, 44, 45, 46, eos]), (0.4, [50, 51, eos]),
                                         (0.8, [60, 61, 62, 63, 64]))):  # fmt: skip
        prompt = audio_prompt(processor, seconds, i, text="x" * (i + 1))
        reqs.append(SpeechRequest(prompt["ids"], featurizer.prepare(prompt["ids"], [prompt["audio"]], SR), resp,
                                  "Ethan", seed=i))  # fmt: skip
    batched = stage.speak(reqs)
    alone = [stage.speak([r])[0] for r in reqs]
    for b, a in zip(batched, alone, strict=True):
        assert b.codec_tokens == a.codec_tokens
        np.testing.assert_allclose(b.waveform, a.waveform, atol=1e-4, rtol=0)
    assert [b.spoken_tokens for b in batched] == [7, 2, 5]
    other = stage.speak([SpeechRequest(reqs[0].prompt_ids, reqs[0].clips, reqs[0].response_ids, "Chelsie", 0)])[0]
    a, b = other.waveform, batched[0].waveform  # random tiny weights: amplitudes near 1e-9, compare relatively
    assert a.shape != b.shape or np.abs(a - b).max() > 1e-2 * np.abs(b).max()
    empty = stage.speak([SpeechRequest(reqs[1].prompt_ids, reqs[1].clips, [eos], "Ethan", 0)])[0]
    assert empty.waveform.size == 0  # nothing before the end of sequence: silence


def thinker_states_of(model: Qwen2_5OmniThinkerForConditionalGeneration, processor, prompt, response) -> torch.Tensor:
    """Last hidden states of a plain thinker forward, as the actor computes them (processor features)."""
    full = torch.tensor([prompt["ids"] + response])
    feats = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[prompt["audio"]], return_tensors="pt",
                      sampling_rate=SR)  # fmt: skip
    with torch.no_grad():
        out = model(input_ids=full, attention_mask=torch.ones_like(full), input_features=feats["input_features"],
                    feature_attention_mask=feats["feature_attention_mask"], output_hidden_states=True)  # fmt: skip
    return out.hidden_states[-1][0]


def trained_actor(ckpt: Path, processor, prompt, response) -> Qwen2_5OmniThinkerForConditionalGeneration:
    """The thinker after a real optimizer step on the response's log-likelihood."""
    actor = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpt)
    actor.train()
    opt = torch.optim.AdamW(actor.parameters(), lr=1e-2)
    full = torch.tensor([prompt["ids"] + response])
    feats = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"], audio=[prompt["audio"]], return_tensors="pt",
                      sampling_rate=SR)  # fmt: skip
    out = actor(input_ids=full, attention_mask=torch.ones_like(full), input_features=feats["input_features"],
                feature_attention_mask=feats["feature_attention_mask"], labels=full)  # fmt: skip
    out.loss.backward()
    opt.step()
    return actor.eval()


def test_stage_speaks_with_the_weights_the_actor_pushed(ckpt: Path, processor) -> None:
    """Both hosts: the `hf` server (shared thinker) and a stand-alone server (own thinker, vLLM's path)."""
    prompt = audio_prompt(processor, 0.8, 5)
    response = [30, 31, 32, 33, 34]
    actor = trained_actor(ckpt, processor, prompt, response)
    expected = thinker_states_of(actor, processor, prompt, response)
    named = [(f"thinker.{n}" if i % 2 else n, p.detach().clone()) for i, (n, p) in enumerate(actor.named_parameters())]

    config = RolloutConfig(name="hf", prompt_length=256, response_length=16, dtype="float32",
                           tensor_model_parallel_size=1, engine_kwargs={"speech": {"enable": True, **GREEDY_TALKER}})  # fmt: skip
    hf_server = HFRolloutServer(config, {"path": str(ckpt)})
    standalone = StandaloneSpeechServer(str(ckpt), {"speech": GREEDY_TALKER}, dtype="float32")

    async def push_and_speak() -> list[dict]:
        await hf_server.update_weights(named)
        await hf_server.finish_weight_update(global_steps=1)
        await standalone.update_weights(named)
        await standalone.finish_weight_update(global_steps=1)
        kw = dict(prompt_ids=prompt["ids"], response_ids=response, audio_data=[prompt["audio"]], sampling_rate=SR)
        return [await hf_server.speak(**kw), await standalone.speak(**kw)]

    before = standalone.stage.thinker_states([_request(standalone, prompt, response)]).hidden[0].clone()
    hf_out, alone_out = asyncio.run(push_and_speak())
    assert not torch.allclose(before, expected, atol=1e-3)  # the update changed what the stage conditions on
    for host in (hf_server.speech, standalone):
        states = host.stage.thinker_states([_request(host, prompt, response)])
        torch.testing.assert_close(states.hidden[0], expected, atol=1e-5, rtol=1e-5)
    assert hf_out["global_steps"] == alone_out["global_steps"] == 1
    np.testing.assert_allclose(hf_out["array"], alone_out["array"], atol=1e-4)
    assert hf_out["sampling_rate"] == 24000 and hf_out["array"].size > 0


def _request(host: Any, prompt: dict[str, Any], response: list[int]) -> SpeechRequest:
    clips = host.featurizer.prepare(prompt["ids"], [prompt["audio"]], SR)
    return SpeechRequest(prompt["ids"], clips, response, "Chelsie", 0)


def test_thinker_only_checkpoint_is_refused_naming_the_missing_weights(tmp_path: Path) -> None:
    path = build_tiny_omni(tmp_path / "thinker_only", talker=False)
    with pytest.raises(MissingSpeechWeights, match=r"talker\.\* weights.*token2wav\.\* weights"):
        require_speech_weights(path)
    config = RolloutConfig(name="hf", prompt_length=64, response_length=8, dtype="float32",
                           tensor_model_parallel_size=1, engine_kwargs={"speech": {"enable": True}})  # fmt: skip
    with pytest.raises(MissingSpeechWeights, match="thinker-only"):
        HFRolloutServer(config, {"path": str(path)})


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="speaker"):
        SpeechOptions(speaker="Bob")
    with pytest.raises(ValueError, match="unknown rollout.engine_kwargs.speech keys"):
        SpeechOptions.from_engine_kwargs({"speech": {"talker_topk": 3}})
    assert SpeechOptions.from_engine_kwargs({}).talker_kwargs()["top_k"] == 40


def test_eval_speaks_with_the_training_stage_and_the_backends_thinker(ckpt: Path, processor) -> None:
    """Eval's spoken rows: the same waveform as the stage gives for the same checkpoint, response, speaker and
    seed, from the eval backend's own thinker (one model loaded, in the backend's dtype)."""
    from verl_audio.eval.generation import HFBackend, Prompt, prompt_token_ids
    from verl_audio.eval.speech import EvalSpeech
    from verl_audio.models.token_ids import eos_token_ids

    backend = HFBackend(str(ckpt), device="cpu", dtype="float32")
    speech = EvalSpeech(ckpt, backend, device="cpu", seed=5, max_speech_tokens=GREEDY_TALKER["talker_max_new_tokens"],
                        speaker="Ethan")
    assert speech.stage.thinker is backend.thinker and not speech.stage.owns_thinker
    prompt = Prompt("<audio>Is it entailed?", [audio_prompt(processor, 0.8, 4)["audio"]])
    eos = min(speech.stage.eos_ids)
    response = [40, 41, 42, 43, eos]
    (wave, rate), = speech.speak([(prompt, response)])

    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(ckpt).eval()
    options = SpeechOptions(speaker="Ethan", seed=5, talker_max_new_tokens=GREEDY_TALKER["talker_max_new_tokens"])
    stage = SpeechStage(load_speech_modules(ckpt), thinker, options, eos_token_ids(thinker, str(ckpt)))
    ids = prompt_token_ids(processor, prompt)
    clips = AudioFeaturizer(SPEAKING_FAMILY, processor.feature_extractor, stage.audio_token_id).prepare(ids, prompt.audios, SR)
    (ref,) = stage.speak([SpeechRequest(ids, clips, response, "Ethan", 5)])
    assert rate == ref.sampling_rate == SAMPLING_RATE and wave.size > 0
    np.testing.assert_array_equal(wave, ref.waveform)
