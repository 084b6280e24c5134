"""The recipes' presets: a few environment variables -> what to prepare, then verl's overrides for the trainer.

    python -m verl_audio.trainer.recipe soundmind_alr [verl overrides...]   (what recipes/soundmind_alr.sh runs)
    python -m verl_audio.trainer.recipe audio_mcq [verl overrides...]       (what recipes/audio_mcq.sh runs)

The first argument is the task (``TASKS``): ``soundmind_alr`` (SoundMind's GRPO on ALR: the Hydra config
``soundmind_alr`` as it is) or ``audio_mcq`` (GRPO on audio multiple-choice questions in the MMAU / MMAR / AVQA
layout, R1-AQA / AudioMCQ style: the same config with ``TASK_OVERRIDES["audio_mcq"]`` first: the reward
``reward_fns/choice.py``, the evaluation's response budget, AudioMCQ's optimisation). Both share every preset and
variable below.

Environment (each read once, here):

* ``PRESET``: ``tiny`` (default when no GPU is visible and ``MODEL_PATH`` is unset): a random tiny model on
  built-in data (ALR: the bundled demo sample; audio_mcq: 8 + 4 tone questions written and prepared on the
  spot), a few GRPO steps, checkpoint, export, reward curve (``MODEL_PATH`` / ``DATA_DIR``, when given, replace
  the tiny model / data); ``paper``: the paper's settings on 8 GPUs (``MODEL_PATH``, ``DATA_DIR`` with prepared
  parquet files), refused without a GPU.
* ``ROLLOUT``: ``hf`` or ``vllm`` (default ``hf`` for tiny, ``vllm`` for paper).
* ``MODEL_FAMILY``: ``qwen2_5_omni`` (default), ``qwen2_audio`` or ``qwen3_omni``: the tiny preset builds that
  family's tiny model, the paper preset takes its released checkpoint and 8-GPU settings (``PAPER_MODELS``);
  with ``MODEL_PATH`` (a local checkpoint) the family is read from its ``config.json``.
* ``INPUT_MODALITY`` (``audio``/``text``) and ``OUTPUT_MODALITY`` (``text``/``audio``): the paper's mode.
* ``LORA_RANK`` (default 0: full fine-tuning): train LoRA adapters of this rank (alpha twice the rank) on the
  language model (verl's ``model.lora_rank`` / ``lora_alpha``; docs/lora.md); the experiment name ends ``_lora<R>``.
* ``OUTPUTS`` (default ``outputs``), ``EXPERIMENT`` (default from task, preset, mode and rollout).
* ``DATA_DIR``: the folder with ``train.parquet`` and ``dev.parquet`` (default: the tiny preset's own data;
  ``outputs/alr_data[_<mode>]`` / ``outputs/audio_mcq_data`` for the paper preset).
* ``REWARD_PRESET`` (default: the reward's own, ``soundmind`` for ALR, ``r1_aqa`` for audio_mcq): the reward mix
  (``reward.custom_reward_function.reward_kwargs.preset``; ``reward_fns/presets.py``, ``reward_fns/choice.py``).
* ``DRY_RUN=1``: prepare and check the whole config (every config object the workers build), write it to the
  output folder, and stop before Ray starts; runs without a GPU for every preset.

The preparation steps (tiny model, demo data) are skipped when their outputs exist, so rerunning a command
resumes it. Then the trainer runs in a fresh interpreter (``python -m verl_audio.trainer.main``) with the
preset's overrides followed by the user's, which win.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: per task, the overrides of the Hydra config (verl_audio/trainer/config/soundmind_alr.yaml) that make it that
#: task's config; the preset's overrides and the user's come after them
TASK_OVERRIDES: dict[str, list[str]] = {
    "soundmind_alr": [],
    "audio_mcq": [
        "trainer.experiment_name=audio_mcq",
        # the multiple-choice rewards: the benchmarks' string match + format / end-of-turn / shaping components
        "reward.custom_reward_function.path=pkg://reward_fns.choice",
        "reward.custom_reward_function.name=compute_score",
        # a 30 s clip is 750 audio tokens, plus the question and the choices
        "data.max_prompt_length=2048",
        # the evaluation CLI's default budget (python -m verl_audio.eval)
        "data.max_response_length=1024",
        # AudioMCQ's ms-swift GRPO run: lr 1e-6, 8 generations, KL 0.001 (its sampling temperature 1.5 and
        # top-k 4 are left out: verl trains on the rollout as the actor's own distribution scores it)
        "actor_rollout_ref.actor.optim.lr=1e-6",
        "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
    ],
}
TASKS = tuple(TASK_OVERRIDES)
RECIPES = TASKS
#: per family: the released checkpoint the paper preset trains, and the overrides its size needs on 8 GPUs
PAPER_MODELS: dict[str, tuple[str, list[str]]] = {
    # 7B dense (Qwen2.5 decoder): the paper's layout, FSDP with parameter and optimizer offload, vLLM at 0.6
    "qwen2_5_omni": ("Qwen/Qwen2.5-Omni-7B", []),
    # 7B dense (Qwen2 decoder + Whisper encoder): the same layout as Qwen2.5-Omni-7B
    "qwen2_audio": ("Qwen/Qwen2-Audio-7B-Instruct", []),
    # 30B mixture of experts (3B active): bf16 weights are ~60 GB, so vLLM shards them over 2 GPUs per replica
    # and keeps half of each GPU; the FSDP actor offloads parameters and optimizer state to host memory
    "qwen3_omni": ("Qwen/Qwen3-Omni-30B-A3B-Instruct",
                   ["actor_rollout_ref.rollout.tensor_model_parallel_size=2",
                    "actor_rollout_ref.rollout.gpu_memory_utilization=0.5"]),
}
PRESETS = ("tiny", "paper")
ROLLOUTS = ("hf", "vllm")
INPUT_MODALITIES = ("audio", "text")
OUTPUT_MODALITIES = ("text", "audio")
TRAINER = "verl_audio.trainer.main"


class RecipeError(ValueError):
    """A setting the recipe cannot run with (the message says which and why)."""


def gpu_visible() -> bool:
    """Whether ``nvidia-smi`` lists a GPU (what the recipes have always asked)."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@dataclass(frozen=True)
class Settings:
    """The recipe's choices, read from the environment by ``settings_from_env``."""

    recipe: str
    preset: str
    rollout: str
    input_modality: str
    output_modality: str
    outputs: Path
    experiment: str
    model_path: str | None = None
    data_dir: str | None = None
    dry_run: bool = False
    family: str = "qwen2_5_omni"
    lora_rank: int = 0
    reward_preset: str | None = None

    @property
    def mode_suffix(self) -> str:
        """``""`` for audio->text (the original names), else ``_<in>_to_<out>``."""
        mode = f"{self.input_modality}_to_{self.output_modality}"
        return "" if mode == "audio_to_text" else f"_{mode}"

    @property
    def run_dir(self) -> Path:
        return self.outputs / self.experiment


def _choice(env: Mapping[str, str], key: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(key) or default
    if value not in choices:
        raise RecipeError(f"{key} must be one of {'|'.join(choices)}, got {value!r}")
    return value


def settings_from_env(recipe: str, env: Mapping[str, str], *, gpu: bool | None = None) -> Settings:
    """The ``Settings`` of ``recipe`` under ``env`` (see the module doc); ``gpu``: whether a GPU is visible."""
    if recipe not in RECIPES:
        raise RecipeError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    gpu = gpu_visible() if gpu is None else gpu
    model_path = env.get("MODEL_PATH") or None
    preset = env.get("PRESET") or ("tiny" if not gpu and model_path is None else "paper")
    preset = _choice({"PRESET": preset}, "PRESET", PRESETS, preset)
    rollout = _choice(env, "ROLLOUT", ROLLOUTS, "hf" if preset == "tiny" else "vllm")
    source = _choice(env, "INPUT_MODALITY", INPUT_MODALITIES, "audio")
    target = _choice(env, "OUTPUT_MODALITY", OUTPUT_MODALITIES, "text")
    dry_run = env.get("DRY_RUN", "0") not in ("", "0")
    family = _family(env.get("MODEL_FAMILY") or None, model_path)
    rank = env.get("LORA_RANK") or "0"
    if not rank.isdigit():
        raise RecipeError(f"LORA_RANK must be a whole number (0: full fine-tuning), got {rank!r}")
    if recipe == "audio_mcq" and (source, target) != ("audio", "text"):
        raise RecipeError("audio_mcq asks about the audio and scores a text answer: INPUT_MODALITY=audio and "
                          f"OUTPUT_MODALITY=text only, got {source} -> {target}")
    settings = Settings(recipe, preset, rollout, source, target, Path(env.get("OUTPUTS") or "outputs"), "",
                        model_path, env.get("DATA_DIR") or None, dry_run, family, int(rank),
                        env.get("REWARD_PRESET") or None)
    name = f"{recipe}_{preset}" + ("" if family == "qwen2_5_omni" else f"_{family}") + settings.mode_suffix + (
        f"_{rollout}" if preset == "tiny" and rollout != "hf" else "") + (f"_lora{rank}" if int(rank) else "")
    return Settings(**{**settings.__dict__, "experiment": env.get("EXPERIMENT") or name})


def _family(named: str | None, model_path: str | None) -> str:
    """The model family: from a local checkpoint's config.json (which must agree with ``MODEL_FAMILY``), else
    ``MODEL_FAMILY``, else Qwen2.5-Omni."""
    from verl_audio.models.families import FAMILIES, UnknownFamily, family_of_path

    if named is not None and named not in FAMILIES:
        raise RecipeError(f"MODEL_FAMILY must be one of {'|'.join(FAMILIES)}, got {named!r}")
    try:
        found = family_of_path(Path(model_path).expanduser()) if model_path else None
    except UnknownFamily as err:
        raise RecipeError(str(err)) from err
    if model_path and found is None and Path(model_path).expanduser().is_dir():
        raise RecipeError(f"MODEL_PATH {model_path} is no checkpoint of a verl-audio family ({', '.join(FAMILIES)})")
    if found is not None and named is not None and found.name != named:
        raise RecipeError(f"MODEL_FAMILY={named} but {model_path} is a {found.name} checkpoint")
    return found.name if found is not None else (named or "qwen2_5_omni")


@dataclass
class Plan:
    """What runs before the trainer (each step skips itself when its output exists) and the trainer's overrides."""

    settings: Settings
    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        for description, step in self.steps:
            print(f"recipe: {description}", flush=True)
            step()

    def command(self, extra: list[str]) -> list[str]:
        """The trainer's command line: the task's and preset's overrides, then ``extra`` (the user's, which win)."""
        dry = ["verl_audio.dry_run=true"] if self.settings.dry_run else []
        return [sys.executable, "-m", TRAINER, *self.overrides, *dry, *extra]


def _build_tiny_model(family: str, path: Path) -> None:
    if (path / "config.json").is_file():
        return
    from verl_audio.models.families import family_named
    from verl_audio.patches import patch_quiet_talker_token_ids

    patch_quiet_talker_token_ids()  # as in every process that imports verl
    options: dict = {"vocab": "small"}
    if family == "qwen2_5_omni":
        # talker: audio output needs talker + token2wav weights; head dim 32: vLLM's CPU attention has no
        # kernel for the builder's default 16 (the other families' tiny models have 32)
        options.update(talker=True, head_dim=32)
    family_named(family).build_tiny(path, **options)


def _prepare_demo_data(settings: Settings, data: Path) -> None:
    if (data / "train.parquet").is_file():
        return
    from verl_audio.data.alr import format_report, prepare_alr
    from verl_audio.data.demo import DEMO_SAMPLE

    # the rows name their audio by absolute path: prepare from a copy in the outputs, so that they never point
    # into a Ray job's temporary working_dir (which a resubmitted job does not have)
    sample = settings.run_dir / "demo_sample"
    if not sample.is_dir():
        shutil.copytree(DEMO_SAMPLE, sample)
    reports = prepare_alr(sample, data, input_modality=settings.input_modality,
                          output_modality=settings.output_modality, splits=["train", "dev"], progress=False)
    print(format_report(reports), flush=True)


#: the tiny audio_mcq preset's questions: tone clips in the MMAU layout (verl_audio.data.tones.generate_tone_mcq)
TINY_MCQ_SPLITS = {"train": 8, "dev": 4}


def _prepare_tone_mcq(settings: Settings, data: Path) -> None:
    """Write a few tone questions as MMAU-style annotation files + clips and prepare them as the benchmarks'
    files are (``verl_audio.data.mcq``), into ``data``."""
    if (data / "train.parquet").is_file():
        return
    from verl_audio.data.mcq import format_mcq_report, prepare_mcq
    from verl_audio.data.tones import generate_tone_mcq, write_annotation

    source = settings.run_dir / "tone_mcq"
    for seed, (split, n) in enumerate(TINY_MCQ_SPLITS.items()):
        annotation = write_annotation(generate_tone_mcq(source, n, seed=seed, audio_folder=f"{split}_audio"),
                                      source / f"{split}.json")
        print(format_mcq_report(prepare_mcq(annotation, data, split)), flush=True)


def _tiny(settings: Settings) -> Plan:
    folder = "tiny_omni" if settings.family == "qwen2_5_omni" else f"tiny_{settings.family}"
    run = settings.run_dir
    model = Path(settings.model_path) if settings.model_path else run / folder
    data = Path(settings.data_dir) if settings.data_dir else run / "data"
    plan = Plan(settings)
    if not settings.model_path:
        plan.steps.append((f"tiny {settings.family} model in {model}",
                           lambda: _build_tiny_model(settings.family, model)))
    if settings.data_dir:
        _require_data(settings, data)
    elif settings.recipe == "audio_mcq":
        plan.steps.append((f"tone questions (MMAU layout, prepared by verl_audio.data.mcq) in {data}",
                           lambda: _prepare_tone_mcq(settings, data)))
    else:
        plan.steps.append((f"demo data ({settings.input_modality} -> {settings.output_modality}) in {data}",
                           lambda: _prepare_demo_data(settings, data)))
    plan.overrides = [
        f"trainer.experiment_name={settings.experiment}", f"verl_audio.output_dir={run}",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'dev.parquet'}",
        "data.train_batch_size=2", "data.max_prompt_length=1024", "data.max_response_length=32",
        "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-4",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32",
        f"actor_rollout_ref.rollout.name={settings.rollout}", "actor_rollout_ref.rollout.max_model_len=2048",
        "actor_rollout_ref.rollout.dtype=float32", "actor_rollout_ref.rollout.engine_kwargs.hf.batch_window_ms=200",
        "actor_rollout_ref.rollout.agent.num_workers=1", "reward.num_workers=1",
        "trainer.n_gpus_per_node=2", "trainer.total_training_steps=3", "trainer.save_freq=1", "trainer.test_freq=3",
        "trainer.val_before_train=false", "verl_audio.export_verify=true",
    ]
    if settings.output_modality == "audio":  # a random talker rarely ends on its own: 100 codec tokens = 2 s
        plan.overrides.append("actor_rollout_ref.rollout.engine_kwargs.speech.talker_max_new_tokens=100")
    return plan


def _paper(settings: Settings, gpu: bool) -> Plan:
    if not gpu and not settings.dry_run:
        raise RecipeError("PRESET=paper needs 8 GPUs and none is visible (nvidia-smi); use PRESET=tiny on CPU "
                          "(or DRY_RUN=1 to check the paper config)")
    default = "outputs/audio_mcq_data" if settings.recipe == "audio_mcq" else f"outputs/alr_data{settings.mode_suffix}"
    data = Path(settings.data_dir or default)
    _require_data(settings, data)
    plan = Plan(settings)
    default_model, family_overrides = PAPER_MODELS[settings.family]
    plan.overrides = [
        f"trainer.experiment_name={settings.experiment}", f"verl_audio.output_dir={settings.run_dir}",
        f"actor_rollout_ref.model.path={settings.model_path or default_model}",
        f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'dev.parquet'}",
        f"actor_rollout_ref.rollout.name={settings.rollout}", "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
        "actor_rollout_ref.actor.fsdp_config.param_offload=true",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true",
        "actor_rollout_ref.ref.fsdp_config.param_offload=true", "trainer.n_gpus_per_node=8", "verl_audio.device=gpu",
        *family_overrides,
    ]
    return plan


def _require_data(settings: Settings, data: Path) -> None:
    """Stop with the preparation command when ``data`` lacks ``train.parquet`` or ``dev.parquet``."""
    missing = [name for name in ("train.parquet", "dev.parquet") if not (data / name).is_file()]
    if not missing:
        return
    if settings.recipe == "audio_mcq":
        how = "; ".join(f"python examples/data_preprocess/audio_mcq.py --src FILE --audio-root DIR --out {data} "
                        f"--split {name.split('.')[0]}" for name in missing)
    else:
        how = (f"python examples/data_preprocess/alr.py --src SRC --out {data} --input-modality "
               f"{settings.input_modality} --output-modality {settings.output_modality} --splits train,dev")
    raise RecipeError(f"no {', '.join(str(data / name) for name in missing)}; prepare it with: {how}")


def plan(settings: Settings, *, gpu: bool | None = None) -> Plan:
    """The preparation steps and trainer overrides of ``settings`` (raises ``RecipeError`` for a bad setting)."""
    from verl_audio.models.families import family_named

    if settings.output_modality == "audio" and not family_named(settings.family).can_speak:
        raise RecipeError(f"OUTPUT_MODALITY=audio needs a model that speaks; {settings.family} has no talker the "
                          "speech stage drives (Qwen2.5-Omni only)")
    preset = _tiny(settings) if settings.preset == "tiny" else _paper(settings, gpu_visible() if gpu is None else gpu)
    if settings.lora_rank:
        preset.overrides += [f"actor_rollout_ref.model.lora_rank={settings.lora_rank}",
                             f"actor_rollout_ref.model.lora_alpha={2 * settings.lora_rank}"]
    preset.overrides[:0] = TASK_OVERRIDES[settings.recipe]
    if settings.reward_preset:
        preset.overrides.append(f"++reward.custom_reward_function.reward_kwargs.preset={settings.reward_preset}")
    return preset


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in RECIPES:
        print(f"usage: python -m verl_audio.trainer.recipe {{{','.join(RECIPES)}}} [verl overrides...]",
              file=sys.stderr)
        return 2
    from verl_audio.plugin_state import excluded_by_policy

    excluded = excluded_by_policy()
    if excluded:  # the trainer would refuse too, after the preparation: say it before preparing anything
        print(f"recipe: verl-audio's plugin would not load ({excluded}); the trainer refuses to start without it "
              "(audio prompts would become text). Unset VERL_USE_EXTERNAL_PLUGINS, or list verl_audio in it.",
              file=sys.stderr)
        return 2
    try:
        gpu = gpu_visible()
        settings = settings_from_env(argv[0], os.environ, gpu=gpu)
        if not os.environ.get("PRESET"):
            why = "no GPU visible and MODEL_PATH unset" if settings.preset == "tiny" else "GPU visible or MODEL_PATH set"
            print(f"recipe: {why} -> PRESET={settings.preset}", flush=True)
        recipe_plan = plan(settings, gpu=gpu)
    except RecipeError as err:
        print(f"recipe: {err}", file=sys.stderr)
        return 2
    recipe_plan.prepare()
    command = recipe_plan.command(argv[1:])
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
