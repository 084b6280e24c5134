"""scripts/gpu_check.py: its CPU dry run passes with verl, ray and vllm unimportable (as on the lent GPU machine),
reporting the whole-audio placeholders, identical positions, bf16 log-probs within tolerance, the encoder cache,
LoRA, the speech stage and the size table of the released configs; on a CUDA machine the real run passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"
#: runs the script as __main__ with verl, ray and vllm unimportable (``import verl`` raises ImportError)
WITHOUT_VERL = (
    "import runpy, sys\n"
    "for name in ('verl', 'ray', 'vllm'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
#: placeholders of the 100 s clip, and the audio items it becomes
WHOLE_AUDIO = {"qwen2_5_omni": (2500, 1), "qwen2_audio": (2500, 4), "qwen3_omni": (1300, 1)}


def run_check(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-c", WITHOUT_VERL, str(SCRIPT), "--json", str(out), *args]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        pytest.fail(f"no report written (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    return run_check(tmp_path_factory.mktemp("gpu_check") / "dry_run.json", "--device", "cpu", "--quick",
                     timeout=900)


def test_dry_run_passes_without_verl_ray_vllm(dry_run: tuple) -> None:
    proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert report["failed"] == [] and "all checks passed" in proc.stdout
    assert (report["device"], report["dtype"], report["gpu"]) == ("cpu", "bfloat16", None)
    # speech/config.py imports verl's BaseConfig: the script stands in for it when verl is absent
    assert report["sections"]["speech"]["verl_base_config"] == "stand-in (verl absent)"


@pytest.mark.parametrize("family", sorted(WHOLE_AUDIO))
def test_dry_run_whole_audio_and_positions(dry_run: tuple, family: str) -> None:
    proc, report = dry_run
    checks = report["sections"][family]["checks"]
    tokens, items = WHOLE_AUDIO[family]
    assert checks["placeholders"]["ok"]
    assert (checks["placeholders"]["placeholders"], checks["placeholders"]["items"]) == (tokens, items)
    assert checks["placeholders"]["encoder_rows"] == [tokens, tokens]
    assert checks["positions"]["identical"]
    assert f"placeholders           {tokens} for 100 s" in proc.stdout


@pytest.mark.parametrize("family", sorted(WHOLE_AUDIO))
def test_dry_run_bf16_within_tolerance(dry_run: tuple, family: str) -> None:
    _, report = dry_run
    checks, tol = report["sections"][family]["checks"], report["tolerances"]
    assert 0 < checks["logprobs"]["max_abs_diff"] <= tol["logprobs_atol"]  # bf16 really ran: not bit-equal to fp32
    assert checks["audio_encoder"]["max_rel_diff"] <= tol["encoder_rtol"]
    assert checks["gradients"]["cosine"] >= tol["grad_cosine_min"] and checks["gradients"]["frozen_with_grads"] == 0
    items = WHOLE_AUDIO[family][1]
    assert checks["encoder_cache"]["counts"] == [[items, 0], [0, items]]
    assert checks["lora"]["params"] == checks["lora"]["computed"] > 0 and checks["lora"]["init_diff"] == 0


def test_dry_run_speech_stage(dry_run: tuple) -> None:
    _, report = dry_run
    checks = report["sections"]["speech"]["checks"]
    assert checks["speech_fp32"]["same_tokens"] and checks["speech_fp32"]["codec_tokens"] > 0
    assert checks["speech_low_precision"]["finite"] and checks["speech_low_precision"]["samples"] > 0


def test_dry_run_size_table(dry_run: tuple) -> None:
    proc, report = dry_run
    sizes = report["sections"]["sizes"]
    assert sizes["checks"]["qwen3_omni_lm_params"]["ok"]
    assert 8.9e9 < sizes["models"]["qwen2_5_omni"]["total"] < 9.0e9  # docs/models.md: "about 9 B"
    assert 8.3e9 < sizes["models"]["qwen2_audio"]["total"] < 8.5e9
    rows = {(r["family"], r["mode"]): r for r in sizes["rows"]}
    assert set(rows) == {(f, m) for f in WHOLE_AUDIO for m in ("full", "lora8")}
    for (family, mode), row in rows.items():
        total = sizes["models"][family]["total"]
        assert row["param_gb"] == pytest.approx((total + (0 if mode == "full" else row["trainable_b"] * 1e9)) * 4 / 8e9)
        assert row["adamw_gb"] == pytest.approx(2 * row["grad_gb"])
        assert row["offload_rollout_gb"] == 0 and row["offload_update_gb"] <= row["no_offload_gb"]
        assert (row["ref_gb"] == 0) == (mode == "lora8")
        assert f"  {family:<13}{mode:<7}" in proc.stdout


@pytest.mark.gpu
def test_cuda_run(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (the CPU dry run is tested above)")
    proc, report = run_check(tmp_path / "cuda.json", "--device", "cuda", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert report["gpu"] and report["failed"] == []
    calls = [c for s in report["sections"].values() for c in s["calls"].values()]
    assert calls and all(c["peak_mib"] is not None for c in calls)
