"""Accuracy of an audio checkpoint (any model family) on the tone task, over a folder of labelled clips.

    python examples/hear_tones/eval.py --model DIR --audio-dir DIR [--max-new-tokens 1] [--batch-size 50]
                                       [--processor DIR] [--show N]

``--model`` is an exported checkpoint (``verl_audio.models.export``, ``hf_export/`` of a training run) or a
verl checkpoint's ``huggingface/`` folder saved with weights (``checkpoint.save_contents`` holding
``hf_model``): a checkpoint of any family of ``verl_audio.models.families``.
The processor comes from the same folder unless ``--processor`` names another. Every ``*.wav`` in
``--audio-dir`` whose name starts with ``high_`` or ``low_`` is scored (other files are ignored).

Each clip is asked the training prompt (``verl_audio.data.tones.TONE_PROMPT``, laid out as verl's dataset
lays it out), greedily decoded by the ``hf`` rollout's generator (``verl_audio.rollout.hf.engine``: the same
prefill, positions and banned placeholder ids as the rollout's validation), decoded without special tokens
as verl's reward manager does, and parsed with ``reward_fns.tones.parse_tone_answer``. A response that is not
one of the answers the reward accepts counts as wrong. Prints per-class accuracy, then ``accuracy: <fraction>`` last.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reward_fns.tones import parse_tone_answer
from verl_audio.data.tones import TONE_LABELS, TONE_PROMPT

#: the training response length of train.sh (one word): a longer budget lets text follow the answer
DEFAULT_MAX_NEW_TOKENS = 1
AUDIO_TAG = "<audio>"


@dataclass(frozen=True)
class ClipResult:
    """One clip's outcome."""

    path: Path
    label: str
    response: str
    pred: str | None

    @property
    def correct(self) -> bool:
        return self.pred == self.label


def labelled_clips(audio_dir: str | Path) -> list[tuple[Path, str]]:
    """``(path, label)`` for each ``high_*.wav`` / ``low_*.wav`` in ``audio_dir``, sorted by name."""
    folder = Path(audio_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--audio-dir is not a folder: {folder}")
    clips = []
    for path in sorted(folder.glob("*.wav")):
        label = path.name.split("_", 1)[0]
        if label in TONE_LABELS and "_" in path.name:
            clips.append((path, label))
    if not clips:
        raise FileNotFoundError(f"no high_*.wav or low_*.wav clips in {folder}")
    return clips


def tone_messages(audio: Any) -> list[dict[str, Any]]:
    """The user turn of a tone row as verl's ``RLHFDataset._build_messages`` builds it: clip, then the question."""
    if not TONE_PROMPT.startswith(AUDIO_TAG) or TONE_PROMPT.count(AUDIO_TAG) != 1:
        raise ValueError(f"expected the tone prompt to open with one {AUDIO_TAG}: {TONE_PROMPT!r}")
    question = TONE_PROMPT[len(AUDIO_TAG) :]
    return [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": question}]}]


def prompt_ids(processor: Any, audio: Any) -> list[int]:
    """Token ids of the tone prompt for one 16 kHz clip (``<|AUDIO|>`` expanded, generation prompt added)."""
    from verl_audio.models.audio_features import SAMPLING_RATE

    text = processor.apply_chat_template(tone_messages(audio), add_generation_prompt=True, tokenize=False)
    return processor(text=[text], audio=[audio], sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_ids"][0].tolist()


def evaluate(
    model: str | Path,
    audio_dir: str | Path,
    *,
    processor_dir: str | Path | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 50,
) -> list[ClipResult]:
    """Greedy answers of ``model`` for every labelled clip of ``audio_dir`` (module doc)."""
    from verl_audio.data.confine import load_confined_audio
    from verl_audio.models.audio_features import SAMPLING_RATE
    from verl_audio.rollout.features import AudioFeaturizer
    from verl_audio.rollout.hf.engine import AudioGenerator, GenRequest
    from verl_audio.rollout.sampling import SamplingSpec

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("--max-new-tokens and --batch-size must be positive")
    clips = labelled_clips(audio_dir)
    generator = AudioGenerator(str(model))
    processor = generator.family.load_processor(processor_dir or model)
    featurizer = AudioFeaturizer(generator.family, processor.feature_extractor, generator.audio_token_id)
    greedy = SamplingSpec(max_tokens=max_new_tokens, temperature=0.0)
    results = []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        requests = []
        for path, _ in batch:
            audio = load_confined_audio(path, [audio_dir], SAMPLING_RATE)  # a symlink out of the folder is refused
            ids = prompt_ids(processor, audio)
            requests.append(GenRequest(ids, featurizer.prepare(ids, [audio]), greedy))
        for (path, label), out in zip(batch, generator.generate(requests), strict=True):
            response = processor.tokenizer.decode(out.token_ids, skip_special_tokens=True)
            results.append(ClipResult(path, label, response, parse_tone_answer(response).label))
    return results


def report(results: list[ClipResult], show: int = 0) -> list[str]:
    """The lines ``main`` prints: optional examples, per-class accuracy, answer counts, ``accuracy:`` last."""
    lines = [f"{r.path.name}: {r.response!r} -> {r.pred or '-'}" for r in results[:show]]
    for label in TONE_LABELS:
        mine = [r for r in results if r.label == label]
        right = sum(r.correct for r in mine)
        lines.append(f"{label}: {right}/{len(mine)}" + (f" = {right / len(mine):.4f}" if mine else ""))
    preds = Counter(r.pred or "no answer" for r in results)
    lines.append("predictions: " + ", ".join(f"{k} {v}" for k, v in sorted(preds.items())))
    lines.append(f"accuracy: {sum(r.correct for r in results) / len(results):.4f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported checkpoint or a verl checkpoint's huggingface/")
    parser.add_argument("--audio-dir", required=True, help="folder of high_*.wav / low_*.wav clips")
    parser.add_argument("--processor", default=None, help="processor folder (default: --model)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help=f"response budget; use the training response length (default {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--batch-size", type=int, default=50, help="clips generated together (default 50)")
    parser.add_argument("--show", type=int, default=0, help="print the first N responses")
    args = parser.parse_args(argv)
    results = evaluate(args.model, args.audio_dir, processor_dir=args.processor,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    print("\n".join(report(results, args.show)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
