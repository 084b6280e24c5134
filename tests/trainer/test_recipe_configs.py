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
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import CONFIG_DIR, REPO

RUN = REPO / "tests" / "helpers" / "recipe_config_run.py"
ROLLOUTS = ["hf", "vllm"] if importlib.util.find_spec("vllm") is not None else ["hf"]
MODES = [("audio", "text"), ("audio", "audio"), ("text", "audio")]
VARIANTS = [f"{preset}/{rollout}/{source}/{target}" for preset in ("tiny", "paper") for rollout in ROLLOUTS
            for source, target in MODES]
#: the audio multiple-choice task (recipes/audio_mcq.sh): audio in, text out, both presets and rollouts
MCQ_VARIANTS = [f"audio_mcq:{preset}/{rollout}/audio/text" for preset in ("tiny", "paper") for rollout in ROLLOUTS]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("recipe_configs")
    # the helper imports ``helpers.*``: run it with the tests folder on its path, as pytest has it
    paths = [str(REPO / "tests"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.run([sys.executable, str(RUN), str(out), *VARIANTS, *MCQ_VARIANTS], capture_output=True,
                          text=True, timeout=900, env=env)
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


@pytest.mark.parametrize("variant", MCQ_VARIANTS)
def test_audio_mcq_config_builds_in_every_worker(results: dict, variant: str) -> None:
    """The audio_mcq task: the choice reward, verl-audio's agent loop (it marks whether responses ended)."""
    result = results[variant]
    assert result["ok"], result.get("trace")
    assert result["reward"] == "pkg://reward_fns.choice" and result["agent_loop"] == "speech_single_turn_agent"
    assert result["speech"] is False and result["config_yaml"]


def test_audio_mcq_settings_and_overrides() -> None:
    from verl_audio.trainer.recipe import RecipeError, Settings, plan, settings_from_env

    settings = settings_from_env("audio_mcq", {"REWARD_PRESET": "audiomcq"}, gpu=False)
    assert (settings.preset, settings.experiment, settings.reward_preset) == ("tiny", "audio_mcq_tiny", "audiomcq")
    overrides = plan(settings, gpu=False).overrides
    assert overrides.index("reward.custom_reward_function.path=pkg://reward_fns.choice") < overrides.index(
        "data.max_response_length=32")  # the task's overrides first, then the preset's
    assert overrides[-1] == "++reward.custom_reward_function.reward_kwargs.preset=audiomcq"
    assert "reward_kwargs" not in " ".join(plan(settings_from_env("soundmind_alr", {}, gpu=False), gpu=False).overrides)
    with pytest.raises(RecipeError, match="INPUT_MODALITY=audio and OUTPUT_MODALITY=text only"):
        settings_from_env("audio_mcq", {"OUTPUT_MODALITY": "audio"}, gpu=False)
    missing = Settings("audio_mcq", "paper", "vllm", "audio", "text", Path("o"), "e", data_dir="/nonexistent")
    with pytest.raises(RecipeError, match=r"examples/data_preprocess/audio_mcq.py .* --split train"):
        plan(missing, gpu=True)


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
