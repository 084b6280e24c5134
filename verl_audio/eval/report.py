"""``results.json`` and ``results.md``: the table laid out like the paper's, one row per mode, or for MMAU /
MMAR one row per value of each of the benchmark's groupings (``task: sound``, ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reward_fns.protocol import MODE_LABELS


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """The markdown table of ``results`` (what ``write`` puts in results.md)."""
    k = results["settings"]["n"]
    extra = [f"pass@{k}", f"maj@{k}"] if k > 1 else []
    head = ["", "accuracy", *extra, "format rate", "WER", "n scored", "n failed"]
    lines = [f"# {results['settings']['model']}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, row in results["table"].items():
        label = MODE_LABELS.get(group, group)
        cells = [label if group != "all" else "**all**", _pct(row["accuracy"]), *(_pct(row[m]) for m in extra),
                 _pct(row["format_rate"]), _pct(row["wer"]), str(row["n_scored"]), str(row["n_failed"])]
        lines.append("| " + " | ".join(cells) + " |")
    s = results["settings"]
    how = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}"
    lines += ["", f"Percentages. Backend `{s['backend']}`, {how}, "
              f"{k} sample(s) per item, at most {s['max_new_tokens']} new tokens; task `{s['task']}`; "
              f"data: {', '.join(s['data'])}."]
    failures = results["table"].get("all", {}).get("failures", {})
    if failures:
        lines += ["", "Failures (counted in the accuracy denominator as wrong):", ""]
        lines += [f"- {count} × {reason}" for reason, count in failures.items()]
    if results.get("to_retry"):
        lines += ["", f"{results['to_retry']} item(s) failed to generate (listed above); rerunning the same "
                  "command generates them again and keeps the rest."]
    speech = results["table"].get("all", {}).get("speech_errors", {})
    if speech:
        lines += ["", "Speech not scored (no WER):", ""]
        lines += [f"- {count} × {reason}" for reason, count in speech.items()]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, results: dict[str, Any]) -> None:
    """Write results.json and results.md to ``out_dir``."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(markdown(results), encoding="utf-8")
