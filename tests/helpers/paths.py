"""Where the repository and its entry points are, for tests in any folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "soundmind_alr.sh"
SUBMIT = REPO / "recipes" / "submit.sh"
CONFIG_DIR = REPO / "verl_audio" / "trainer" / "config"
DEMO_SAMPLE = REPO / "verl_audio" / "data" / "demo_sample"
EXAMPLE = REPO / "examples" / "hear_tones"
