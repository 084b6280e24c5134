"""An offline Qwen-style tokenizer for the tiny Qwen2.5-Omni checkpoints.

A byte-level BPE with Qwen2's pre-tokenizer is trained here on a small built-in corpus that covers the
output contract, so nothing is downloaded. Two layouts:

* ``small``: the trained BPE (a few hundred ids), then Qwen2.5-Omni's added tokens, then the contract
  tags ``<think> </think> <answer> </answer>`` as single (non-special) tokens, so that a policy trained
  from random init only has to learn a handful of ids.
* ``qwen``: Qwen2.5's id layout: regular ids 0..151642 (the trained BPE followed by unreachable
  ``<|reserved_N|>`` fillers), the family's added tokens at their real ids from 151643.

The added tokens are Qwen2.5-Omni's unless a family passes its own (``verl_audio.models.families``).
"""

from __future__ import annotations

import json
from typing import Literal

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from verl_audio.contract import ANSWER_CLOSE, ANSWER_OPEN, INSTRUCTION, LABEL_WORDS, THINK_CLOSE, THINK_OPEN

Vocab = Literal["small", "qwen"]

#: Qwen2.5-Omni's added tokens in id order (the first sits at 151643 in the real tokenizer);
#: the flag says whether it is special (stripped by ``decode(skip_special_tokens=True)``).
QWEN_OMNI_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|AUDIO|>", True),
    ("<|audio_bos|>", True),
    ("<|audio_eos|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_bos|>", True),
    ("<|vision_eos|>", True),
    ("<|vision_pad|>", True),
    ("<|IMAGE|>", True),
    ("<|VIDEO|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
QWEN_FIRST_ADDED_ID = 151643
QWEN_MODEL_VOCAB = 151936  # embedding rows of Qwen2.5-Omni-3B (ids past the tokenizer are reserved)

#: the names the Omni processor reads from the tokenizer (``tokenizer.audio_token`` ...)
OMNI_NAMED_TOKENS: dict[str, str] = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}
CONTRACT_TAGS: tuple[str, ...] = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
EOS_TOKEN, PAD_TOKEN = "<|im_end|>", "<|endoftext|>"

#: the tone multiple-choice task's words (examples/hear_tones_mcq): "very", " very", " low", " high" become
#: single tokens, so that an answer is at most two tokens before the end of the turn
TONE_MCQ_PHRASES = ("How high is the tone?", "very low", "very high", "It is very low. It is very high.")

_CORPUS = """
system user assistant You are a helpful assistant that listens to audio and reasons about it.
Listen to the recording and decide whether the statement is entailed by what was said.
The speaker says the meeting starts at nine, so the statement that it starts in the morning is entailed.
The speaker never mentions the price, so the claim about the price is not-entailed.
The answer is entailed. The answer is not-entailed. The confidence is high. The confidence is low.
First I think about what the speakers said, then I give the answer.
The woman says she will travel to the city on Monday and come back on Friday.
The man asks about the weather, and she answers that it will rain in the afternoon.
They talk about a book, a movie, a song, a game, a trip, a job, a school and a house.
Two people discuss the plan for the weekend: one wants to stay home, the other wants to go out.
Is it true that the first speaker agrees? Does the second speaker disagree? Why or why not?
The audio is long, about one or two minutes, and the question is about a detail near the end.
It is likely, unlikely, possible, certain, uncertain, true, false, correct, wrong, yes, no.
one two three four five six seven eight nine ten hundred thousand minutes seconds hours days
because therefore however although since while before after during until when where who what which
the a an and or but not of to in on at by for with from about as into over under between this that
he she they we you it his her their our your its is are was were be been has have had do does did
will would can could should may might must say said tell told ask asked hear heard know think
0 1 2 3 4 5 6 7 8 9 10 25 30 60 90 100 2024 . , ; : ! ? ' " ( ) [ ] - _ / \\ < > = + * & % $ # @
"""


def _corpus_lines() -> list[str]:
    """The training text: the corpus above plus every contract phrase, repeated so it merges fully."""
    contract = [INSTRUCTION, *LABEL_WORDS, *CONTRACT_TAGS, "system\nuser\nassistant\n", "It is high. It is low.",
                *TONE_MCQ_PHRASES]
    for word in LABEL_WORDS:
        contract.append(f"{THINK_OPEN}The speaker says so.{THINK_CLOSE}\n{ANSWER_OPEN}{word}{ANSWER_CLOSE}")
    return _CORPUS.strip().splitlines() * 4 + contract * 20


def _train_bpe(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE (Qwen2 pre-tokenizer) and return its vocab and merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]  # the merges are only reachable through the serialized form
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer(vocab: Vocab = "small", added_tokens: tuple[tuple[str, bool], ...] = QWEN_OMNI_ADDED_TOKENS,
                    named_tokens: dict[str, str] | None = None) -> Qwen2Tokenizer:
    """Build the offline Qwen2 tokenizer for ``vocab`` ("small" or "qwen"); see the module docstring.

    ``added_tokens`` (in id order, with their special flag) and ``named_tokens`` (the attributes a processor
    reads, e.g. ``audio_token``) are the model family's: Qwen2.5-Omni's by default.
    """
    named_tokens = OMNI_NAMED_TOKENS if named_tokens is None else named_tokens
    if vocab not in ("small", "qwen"):
        raise ValueError(f"vocab must be 'small' or 'qwen', got {vocab!r}")
    bpe_vocab, merges = _train_bpe(480 if vocab == "small" else 1000)
    ids = dict(sorted(bpe_vocab.items(), key=lambda kv: kv[1]))
    if sorted(ids.values()) != list(range(len(ids))):
        raise RuntimeError("trained BPE ids are not contiguous")
    if vocab == "qwen":
        # unreachable fillers keep the real id layout: nothing merges into "<|reserved_N|>"
        for i in range(len(ids), QWEN_FIRST_ADDED_ID):
            ids[f"<|reserved_{i}|>"] = i
    first_added = len(ids)
    for offset, (token, _) in enumerate(added_tokens):
        ids[token] = first_added + offset
    if vocab == "small":
        for tag in CONTRACT_TAGS:
            ids[tag] = len(ids)
    tokenizer = Qwen2Tokenizer(
        vocab=ids,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=dict(named_tokens),
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    # the ids already exist in the vocab, so registering them as added tokens keeps those ids
    added = [AddedToken(t, special=s, normalized=False) for t, s in added_tokens]
    if vocab == "small":
        added += [AddedToken(t, special=False, normalized=False) for t in CONTRACT_TAGS]
    tokenizer.add_tokens(added)
    _check_layout(tokenizer, ids, added_tokens)
    return tokenizer


def _check_layout(tokenizer: Qwen2Tokenizer, ids: dict[str, int], added_tokens: tuple[tuple[str, bool], ...]) -> None:
    """Fail loudly if the tokenizer did not keep the planned ids or special flags."""
    for token, special in added_tokens:
        got = tokenizer.convert_tokens_to_ids(token)
        if got != ids[token]:
            raise RuntimeError(f"{token} got id {got}, expected {ids[token]}")
        if tokenizer.added_tokens_decoder[got].special != special:
            raise RuntimeError(f"{token} special flag is not {special}")
    if len(tokenizer) != len(ids):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} ids, expected {len(ids)}")
