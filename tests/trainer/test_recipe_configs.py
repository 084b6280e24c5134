"""Every recipe variant composes a config that every worker can build, without starting an engine.

The recipe's presets (``tiny``, ``paper``) x rollout (``hf``, ``vllm``) x mode (audio->text, audio->audio,
text->audio) go through the trainer's own ``check`` (``tests/recipe_config_run.py``): plugin, paths, CPU mode,
verl's validation, and each config object the workers build from the config (the model config class the
recipe names, the rollout config, ``engine_kwargs.hf`` / ``engine_kwargs.speech``, and the vLLM server's model
config). A key one of them refuses fails here in seconds, not in a Ray worker minutes into a run (the vLLM
server once refused the recipe's ``freeze_audio_encoder``). One real ``ROLLOUT=vllm`` recipe run is in
``tests/trainer/test_trainer_e2e_on_cpu.py``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from helpers.paths import CONFIG_DIR, REPO

RUN = REPO / "tests" / "helpers" / "recipe_config_run.py"
ROLLOUTS = ["hf", "vllm"] if importlib.util.find_spec("vllm") is not None else ["hf"]
MODES = [("audio", "text"), ("audio", "audio"), ("text", "audio")]
VARIANTS = [f"{preset}/{rollout}/{source}/{target}" for preset in ("tiny", "paper") for rollout in ROLLOUTS
            for source, target in MODES]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("recipe_configs")
    proc = subprocess.run([sys.executable, str(RUN), str(out), *VARIANTS], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_config_builds_in_every_worker(results: dict, variant: str) -> None:
    result = results[variant]
    assert result["ok"], result.get("trace")
    preset, rollout, _, target = variant.split("/")
    assert result["rollout"] == rollout and result["config_yaml"]
    assert result["speech"] == (target == "audio")  # decided from the prepared rows
    assert result["device"] == ("cpu" if preset == "tiny" else "cuda")


def test_engine_kwargs_are_declared_with_the_options_defaults() -> None:
    """``engine_kwargs.hf`` / ``.speech`` overrides work without ``+``: every option is declared, at its default."""
    from dataclasses import MISSING, fields

    from omegaconf import OmegaConf

    from verl_audio.rollout.hf.config import HFRolloutOptions
    from verl_audio.speech.config import SpeechOptions

    yaml = CONFIG_DIR / "soundmind_alr.yaml"
    declared = OmegaConf.to_container(OmegaConf.load(yaml).actor_rollout_ref.rollout.engine_kwargs)
    for key, cls in (("hf", HFRolloutOptions), ("speech", SpeechOptions)):
        options = {f.name: f for f in fields(cls) if f.name != "_target_"}
        assert set(declared[key]) == set(options), key
        for name, f in options.items():
            default = f.default if f.default is not MISSING else f.default_factory()
            assert declared[key][name] == default, (key, name)
        assert cls.from_engine_kwargs(declared) == cls()
