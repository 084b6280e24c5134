"""Nothing trains, evaluates or serves without verl-audio's plugin, and correctness patches refuse other releases.

verl loads plugins at ``import verl`` and swallows their errors at debug level; ``VERL_USE_EXTERNAL_PLUGINS``
(``none``, or a list of entry-point names) can leave ours out. Without it audio prompts would silently become
text prompts. Each case runs in a fresh interpreter, as a user's command would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.paths import RECIPE, REPO

POLICIES = ["none", "some_other_plugin"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}
    return {**env, "PYTHON": sys.executable, "PYTHONWARNINGS": "ignore", **extra}


@pytest.mark.parametrize("policy", POLICIES)
def test_recipe_refuses_at_once(policy: str, tmp_path: Path) -> None:
    start = time.monotonic()
    result = subprocess.run(["bash", str(RECIPE)], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=_env(VERL_USE_EXTERNAL_PLUGINS=policy, OUTPUTS=str(tmp_path), PRESET="tiny"))
    assert result.returncode != 0
    assert "VERL_USE_EXTERNAL_PLUGINS" in result.stderr and "plugin" in result.stderr, result.stderr
    assert time.monotonic() - start < 30
    assert not any(tmp_path.iterdir()), "the recipe prepared or trained something"


@pytest.mark.parametrize("policy", ["none"])  # each interpreter start imports verl (~15 s): one policy here,
def test_trainer_refuses_before_ray(policy: str, tmp_path: Path) -> None:
    """The trainer itself (the recipe's check is only the early word): its first step is the plugin check."""
    result = subprocess.run([sys.executable, "-m", "verl_audio.trainer.main", f"verl_audio.output_dir={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=_env(VERL_USE_EXTERNAL_PLUGINS=policy))
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "PluginNotActive" in out and "VERL_USE_EXTERNAL_PLUGINS" in out, out[-3000:]
    assert "Started a local Ray instance" not in out


@pytest.mark.parametrize("policy", ["some_other_plugin"])  # the other one here
def test_eval_cli_refuses(policy: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "verl_audio.eval", "--model", str(tmp_path), "--data",
                             str(tmp_path / "x.parquet"), "--out", str(tmp_path / "out")], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env=_env(VERL_USE_EXTERNAL_PLUGINS=policy))
    assert result.returncode == 2
    assert "plugin" in result.stderr and "VERL_USE_EXTERNAL_PLUGINS" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


# The installed verl is made to look unsupported before `import verl`: the plugin's correctness patches raise,
# verl swallows the error, and require_plugin finds and names it.
UNSUPPORTED = r"""
import sys
from verl_audio import upstream
upstream.SUPPORTED_RELEASES["verl"] = "==0.0.1"
import verl
from verl_audio import plugin_state
print("active after import:", plugin_state.plugin_active())
try:
    plugin_state.require_plugin("probe")
except plugin_state.PluginNotActive as err:
    print("refused:", err)
    sys.exit(3)
from verl_audio import patches
print("applied:", patches.APPLIED)
"""


def test_unsupported_release_stops_correctness_patches() -> None:
    result = subprocess.run([sys.executable, "-c", UNSUPPORTED], capture_output=True, text=True, timeout=120,
                            env=_env())
    assert result.returncode == 3, result.stdout + result.stderr
    assert "active after import: False" in result.stdout
    assert "UnsupportedUpstream" in result.stdout and "VERL_AUDIO_ALLOW_UNSUPPORTED_UPSTREAM" in result.stdout


def test_unsupported_release_with_the_opt_in_applies_them_with_a_warning() -> None:
    result = subprocess.run([sys.executable, "-c", UNSUPPORTED], capture_output=True, text=True, timeout=120,
                            env=_env(VERL_AUDIO_ALLOW_UNSUPPORTED_UPSTREAM="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "active after import: True" in result.stdout
    applied = result.stdout.split("applied:")[1]
    for name in ("audio_hf_processor", "file_logger_append", "packed_position_ids"):  # correctness: applied
        assert name in applied
    for name in ("cpu_process_group_backend", "audio_continuous_token_family"):  # optional: skipped
        assert name not in applied
    assert "which it was not written for" in result.stderr and "optional patch" in result.stderr
