"""``python -m verl_audio.eval``: a checkpoint and evaluation files -> predictions.jsonl, results.json, results.md
(and, for MMAU / MMAR, official_input.json).

    python -m verl_audio.eval --model DIR --data FILE [--data FILE ...] --out DIR [--task alr|mmau|mmar]
        [--backend hf|vllm] [--batch-size N] [--max-new-tokens N] [--temperature T --n K] [--limit N]
        [--audio-root DIR] [--prompt-template T] [--asr-model ID] [--device D] [--dtype D] [--max-model-len N]

Each item is generated (greedy by default; ``--n K`` samples at ``--temperature``), scored by the shared
scorer (``verl_audio.eval.scoring``), and appended to ``OUT/predictions.jsonl`` as soon as its batch is
done; rerunning the same command skips the items already there (settings that change predictions must
match ``OUT/run.json``). Items that cannot be asked or scored (a bad annotation, a missing clip, an
unparsable answer) are written too, with the reason, and count in the table's ``n failed``; items whose
generation raised (out of memory, a crashed engine) are written with ``retry`` set, count as failed in this
run's table, and are generated again when the command is rerun.

For ``--task mmau`` / ``mmar`` the table has the benchmark's own groupings (MMAU: task, difficulty,
sub-category; MMAR: modality, category, sub-category; rows ``"<grouping>: <value>"``, then ``all``), and
``OUT/official_input.json`` is the file the benchmark's own scorer reads: the annotation items as given (every
field, input order), each with the answer text (the ``<answer>`` block when the response has one, else the
whole response; the first sample's with ``--n K``) under ``model_output`` (MMAU's ``evaluation.py``) and
``answer_prediction`` (MMAR's ``code/evaluation.py``); items that could not be answered carry ``""``, which
both scorers count as wrong, as this table does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verl_audio.eval.generation import (
    BACKENDS,
    DTYPES,
    Backend,
    Prompt,
    PromptError,
    PromptShape,
    Response,
    Sampling,
    make_backend,
    resolve_device_dtype,
)
from verl_audio.eval.items import (
    CHOICE_TASKS,
    DEFAULT_PROMPT_TEMPLATE,
    GROUP_ORDER,
    GROUPINGS,
    TASKS,
    EvalItem,
    load_items,
)
from verl_audio.eval.scoring import (
    ItemScore,
    SampleScore,
    extract_choice_text,
    grouped_table,
    score_alr,
    score_choice,
    table,
)
from verl_audio.plugin_state import PluginNotActive, require_plugin

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
OFFICIAL_INPUT = "official_input.json"
RUN_FILE = "run.json"
#: the keys the official scorers read the answer from: MMAU's evaluation.py, MMAR's code/evaluation.py
OFFICIAL_KEYS = ("model_output", "answer_prediction")
#: settings that change what is predicted: a resumed run must use the same ones
PREDICTION_SETTINGS = ("model", "backend", "task", "n", "temperature", "top_p", "max_new_tokens", "seed",
                       "prompt_template", "asr_model", "max_speech_tokens", "dtype")


# ---- one batch ------------------------------------------------------------------------------------


def _load_prompt(item: EvalItem) -> Prompt:
    from verl_audio.data.decode import to_array
    from verl_audio.models.audio_features import SAMPLING_RATE

    return Prompt(item.prompt, [to_array(path, SAMPLING_RATE) for path in item.audios])


def _generate(backend: Backend, prompts: list[Prompt], sampling: Sampling) -> list[list[Response] | Exception]:
    """Generate a batch; when the batch fails, each prompt alone, so one bad prompt fails only itself."""
    try:
        return list(backend.generate(prompts, sampling))
    except Exception as err:  # noqa: BLE001 - isolate the culprit below
        if len(prompts) == 1:
            return [err]
        logger.warning("batch of %d failed (%s); generating one at a time", len(prompts), err)
    out: list[list[Response] | Exception] = []
    for prompt in prompts:
        try:
            out.append(backend.generate([prompt], sampling)[0])
        except Exception as err:  # noqa: BLE001 - recorded as the item's failure
            out.append(err)
    return out


def _score(item: EvalItem, response: Response) -> SampleScore:
    if item.task in CHOICE_TASKS:
        return score_choice(response.text, item.ground_truth, item.choices)
    return score_alr(response.text, item.ground_truth)


def evaluate_batch(items: list[EvalItem], backend: Backend, sampling: Sampling,
                   speech: Callable[[], Any] | None = None, asr: dict[str, Any] | None = None) -> list[ItemScore]:
    """Score ``items`` (module doc); ``speech()`` gives the synthesizer, or a str saying why there is none."""
    from verl_audio.data.audio import AudioError
    from verl_audio.eval.speech import transcribe_and_score

    scores = [ItemScore(key=i.key, id=i.id, group=i.group, error=i.error, groups=dict(i.groups)) for i in items]
    ready, prompts = [], []
    for idx, item in enumerate(items):
        if item.error:
            continue
        try:
            prompts.append(_load_prompt(item))
            ready.append(idx)
        except (AudioError, OSError) as err:
            scores[idx].error = f"unreadable audio: {err}"
    outputs = _generate(backend, prompts, sampling) if prompts else []
    to_speak: list[tuple[SampleScore, Prompt, Response]] = []
    for idx, prompt, out in zip(ready, prompts, outputs, strict=True):
        item = items[idx]
        if isinstance(out, PromptError):  # the backend can never take this prompt: final
            scores[idx].error = f"cannot be asked: {out}"
            continue
        if isinstance(out, Exception):  # out of memory, a crashed engine, ...: generated again on resume
            scores[idx].error = f"generation failed: {type(out).__name__}: {out}"
            scores[idx].retry = True
            continue
        try:
            samples = [_score(item, r) for r in out]
        except ValueError as err:  # a ground truth that is no label: a data error
            scores[idx].error = f"bad row: {err}"
            continue
        scores[idx].samples = samples
        if item.output_modality == "audio":
            to_speak.extend((s, prompt, r) for s, r in zip(samples, out, strict=True))
    if to_speak:
        synth = speech() if speech is not None else "no speech synthesizer"
        spoken: list[tuple[SampleScore, tuple]] = [(s, r.audio) for s, _, r in to_speak if r.audio is not None]
        todo = [(s, p, r) for s, p, r in to_speak if r.audio is None]
        if todo and isinstance(synth, str):
            for sample, _, _ in todo:
                sample.speech_error = f"no speech: {synth}"
        elif todo:
            try:  # the batch's answers in one stage call; if it fails, each alone, so one failure is its own
                waves = synth.speak([(p, r.token_ids) for _, p, r in todo])
                spoken.extend((s, w) for (s, _, _), w in zip(todo, waves, strict=True))
            except Exception:  # noqa: BLE001 - retried one by one below
                for sample, prompt, response in todo:
                    try:
                        (wave,) = synth.speak([(prompt, response.token_ids)])
                        spoken.append((sample, wave))
                    except Exception as err:  # noqa: BLE001 - listed per sample, the text is still scored
                        sample.speech_error = f"speech failed: {type(err).__name__}: {err}"
        try:
            transcribe_and_score([s for s, _ in spoken], [w for _, w in spoken], **(asr or {}))
        except Exception as err:  # noqa: BLE001 - an ASR failure loses the WER, not the run
            for sample, _ in spoken:
                sample.speech_error = f"ASR failed: {type(err).__name__}: {err}"
    return scores


# ---- records and resume ---------------------------------------------------------------------------


def to_record(item: EvalItem, score: ItemScore) -> dict[str, Any]:
    """One predictions.jsonl line."""
    majority, majority_correct = score.majority()
    return {
        "key": item.key, "id": item.id, "task": item.task, "group": item.group, "source": item.source,
        **({"groups": item.groups} if item.groups else {}),
        "ground_truth": item.ground_truth, **({"choices": item.choices} if item.choices else {}),
        "error": score.error, "retry": score.retry, "failed": score.failed, "failure": score.failure,
        "correct": score.mean_correct(), "pass": score.passed(),
        "majority": majority, "majority_correct": majority_correct,
        "samples": [s.to_dict() for s in score.samples],
    }


def from_record(record: dict[str, Any]) -> ItemScore:
    samples = [SampleScore(**s) for s in record.get("samples", [])]
    return ItemScore(record["key"], record["id"], record["group"], samples, record.get("error"),
                     dict(record.get("groups") or {}), bool(record.get("retry")))


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Records by key; a line that is not JSON (a run killed mid-write) is dropped from the file and redone."""
    if not path.exists():
        return {}
    records, bad = {}, 0
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            record = json.loads(line)
            records[record["key"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            bad += bool(line.strip())
    if bad:
        logger.warning("%s: %d unreadable line(s) dropped; those items are generated again", path, bad)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()), encoding="utf-8")
    return records


def check_run_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into ``out`` with settings that would change predictions; record them otherwise."""
    run_file = out / RUN_FILE
    wanted = {k: settings[k] for k in PREDICTION_SETTINGS}
    if run_file.exists():
        before = json.loads(run_file.read_text())
        before.setdefault("dtype", "float32")  # runs from before --dtype generated in float32
        changed = {k: (before.get(k), v) for k, v in wanted.items() if before.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{out} holds predictions made with other settings ({detail}); use another --out")
    run_file.write_text(json.dumps(wanted, indent=2) + "\n")


# ---- the run --------------------------------------------------------------------------------------


def _speech_factory(model: str, backend: Backend, device: str, seed: int, max_tokens: int) -> Callable[[], Any]:
    made: list[Any] = []

    def get() -> Any:
        if not made:
            from verl_audio.eval.speech import EvalSpeech
            from verl_audio.speech.talker import missing_speech_parts

            family = getattr(backend, "family", None)
            missing = missing_speech_parts(model)
            if family is not None and not family.can_speak:
                made.append(f"{family.name} has no talker the speech stage drives (Qwen2.5-Omni only)")
            elif missing:
                made.append(f"{model} has no talker (it lacks {', '.join(missing)})")
            else:
                made.append(EvalSpeech(model, backend, device=device, seed=seed, max_speech_tokens=max_tokens))
        return made[0]

    return get


def _clip_samples(path: str) -> int | None:
    """A clip's length in 16 kHz samples from its header, None when the header cannot be read."""
    import soundfile as sf

    from verl_audio.models.audio_features import SAMPLING_RATE

    try:
        info = sf.info(path)
    except (RuntimeError, OSError):  # the item fails when its audio is read; it sizes nothing
        return None
    return (info.frames * SAMPLING_RATE + info.samplerate // 2) // info.samplerate


def prompt_shapes(items: list[EvalItem]) -> list[PromptShape]:
    """The shapes of the items that can be asked (``generation.needed_limits`` sizes vLLM from them)."""
    shapes = []
    for item in items:
        if item.error:
            continue
        samples = [_clip_samples(a) for a in item.audios]
        if all(n for n in samples):
            shapes.append(PromptShape(item.prompt, tuple(samples)))
    return shapes


def official_input(items: list[EvalItem], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The official scorers' input (module doc): each annotation item as read, plus the answer text under
    ``OFFICIAL_KEYS``; ``""`` for an item that has no response. Items that were no JSON object are left out."""
    out = []
    for item in items:
        if not isinstance(item.raw, dict):
            continue
        samples = records.get(item.key, {}).get("samples") or []
        text = extract_choice_text(samples[0]["response"]) if samples else ""
        out.append({**item.raw, **{key: text for key in OFFICIAL_KEYS}})
    return out


def run(args: argparse.Namespace, backend: Backend | None = None) -> dict[str, Any]:
    """Evaluate (module doc) and return the results written to ``args.out``."""
    from tqdm import tqdm

    from verl_audio.eval import report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.device, args.dtype = resolve_device_dtype(getattr(args, "device", None), getattr(args, "dtype", None))
    if backend is not None and getattr(backend, "dtype", None):
        args.dtype = backend.dtype  # a backend handed in was built in its own dtype
    choice = args.task in CHOICE_TASKS
    settings = {
        "model": str(args.model), "backend": args.backend, "task": args.task, "n": args.n,
        "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
        "seed": args.seed, "prompt_template": args.prompt_template if choice else None,
        "asr_model": args.asr_model, "max_speech_tokens": args.max_speech_tokens, "dtype": args.dtype,
        "device": args.device, "data": [str(d) for d in args.data], "limit": args.limit,
        "audio_root": str(args.audio_root) if args.audio_root else None,
    }
    check_run_settings(out, settings)
    items = load_items(args.data, args.task, args.audio_root, args.prompt_template, args.limit)
    pred_path = out / PREDICTIONS
    done = read_predictions(pred_path)
    retry = {key for key, record in done.items() if record.get("retry")}
    if retry:  # failed generations are done again; their lines go, so the file holds each item once
        logger.info("%d item(s) whose generation failed are generated again", len(retry))
        done = {key: record for key, record in done.items() if key not in retry}
        pred_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()),
                             encoding="utf-8")
    todo = [item for item in items if item.key not in done]
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.n, args.seed)
    if todo and backend is None:
        extra: dict[str, Any] = {}
        if args.backend == "vllm":
            extra = {"max_model_len": getattr(args, "max_model_len", None), "shapes": prompt_shapes(todo),
                     "max_new_tokens": args.max_new_tokens}
        backend = make_backend(args.backend, str(args.model), device=args.device, dtype=args.dtype,
                               seed=args.seed, processor=args.processor, **extra)
    speech = (_speech_factory(str(args.model), backend, args.device, args.seed, args.max_speech_tokens)
              if backend is not None else None)
    asr = {"asr_model": args.asr_model, "asr_device": args.device, "batch_size": args.batch_size}
    with open(pred_path, "a", encoding="utf-8") as handle, tqdm(
        total=len(items), initial=len(items) - len(todo), desc="eval", unit="item", disable=args.quiet
    ) as bar:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            for item, score in zip(batch, evaluate_batch(batch, backend, sampling, speech, asr), strict=True):
                done[item.key] = to_record(item, score)
                handle.write(json.dumps(done[item.key], ensure_ascii=False) + "\n")
            handle.flush()
            bar.update(len(batch))
    scores = [from_record(done[item.key]) for item in items]
    if choice:
        grouped = grouped_table(scores, GROUPINGS[args.task], args.n, GROUP_ORDER)
        (out / OFFICIAL_INPUT).write_text(json.dumps(official_input(items, done), indent=1) + "\n")
    results = {"settings": settings, "table": grouped if choice else table(scores, args.n),
               "failed": [{"key": s.key, "reason": s.failure, "retry": s.retry} for s in scores if s.failed],
               "to_retry": sum(s.retry for s in scores)}
    if results["to_retry"]:
        logger.warning("%d item(s) failed to generate; rerun the same command to generate them again",
                       results["to_retry"])
    report.write(out, results)
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verl_audio.eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="Omni checkpoint dir (an export, hf_export/, or a base model)")
    p.add_argument("--data", required=True, action="append", help="an ALR parquet or an MMAU/MMAR json(l); repeatable")
    p.add_argument("--out", required=True, help="output folder (predictions.jsonl, results.json, results.md)")
    p.add_argument("--task", choices=TASKS, default="alr",
                   help="alr: ALR parquet rows; mmau / mmar: multiple choice, grouped as that benchmark groups")
    p.add_argument("--backend", choices=BACKENDS, default="hf", help="generation backend (default hf)")
    p.add_argument("--batch-size", type=int, default=8, help="items generated together (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="response budget in tokens (default 1024)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    p.add_argument("--n", type=int, default=1, help="samples per item; > 1 adds pass@n and maj@n (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N items of each --data file")
    p.add_argument("--audio-root", default=None,
                   help="folder relative audio paths are resolved in and must stay in (mmau/mmar default: the "
                        "annotation file's folder)")
    p.add_argument("--prompt-template", default=DEFAULT_PROMPT_TEMPLATE,
                   help="mmau prompt with {question}, {choices} (one per line) or {choices_inline} (a, b or c)")
    p.add_argument("--max-speech-tokens", type=int, default=4096,
                   help="talker codec-token budget per spoken answer (default 4096, the Omni default)")
    p.add_argument("--asr-model", default="openai/whisper-large-v3", help="Whisper model id or dir for WER")
    p.add_argument("--processor", default=None, help="processor folder (default: --model)")
    p.add_argument("--device", default=None, help="cpu / cuda / cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="vllm context in tokens (default: the longest prompt, audio included, + --max-new-tokens)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        require_plugin("python -m verl_audio.eval")
    except PluginNotActive as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name in ("batch_size", "max_new_tokens", "n"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.n > 1 and args.temperature == 0:
        print("error: --n > 1 needs --temperature > 0 (greedy samples are identical)", file=sys.stderr)
        return 2
    if args.max_model_len is not None and args.max_model_len < 1:
        print("error: --max-model-len must be at least 1", file=sys.stderr)
        return 2
    try:
        run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(args.out) / "results.md").read_text(encoding="utf-8"), end="")
    return 0
