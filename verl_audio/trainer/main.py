"""``python -m verl_audio.trainer.main [overrides]``: verl's PPO trainer for audio, on GPU or CPU.

verl's own entry (``verl.trainer.main_ppo``) with:

* the config ``config/soundmind_alr.yaml`` (verl's ``ppo_trainer`` plus what differs; any verl key
  can be overridden as usual);
* verl's legacy trainer path (``trainer.use_v1=False``: ``RayPPOTrainer``), because the v1 trainer
  imports ``transfer_queue``, which verl does not install; our ``AudioTaskRunner`` builds
  ``AudioPPOTrainer`` (reward components per step, resumable ``metrics.jsonl``);
* CPU mode when no accelerator is visible (``cpu_mode``), said so in the log;
* an existing Ray cluster joined instead of a local Ray started when ``RAY_ADDRESS`` is set (as
  ``ray job submit`` does) or ``ray_kwargs.ray_init.address`` is given, with its resources and, on
  more than one node, every node's view of the run's paths checked before any worker starts
  (``cluster``, docs/cluster.md);
* everything a run writes under ``verl_audio.output_dir``: ``metrics.jsonl`` (verl's file logger,
  kept across resumes), ``tensorboard/``, ``checkpoints/``, ``bad_audio.jsonl`` and
  ``audio_warnings.jsonl`` (``verl_audio.data.bad_audio``), then ``hf_export/`` (the last checkpoint
  exported with ``verl_audio.models.export``) and ``reward_curve.png``.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import hydra
import verl  # noqa: F401  (first: loads the verl-audio plugin before anything imports verl_audio.platform)
from omegaconf import DictConfig, OmegaConf, open_dict

from verl_audio.data import bad_audio, decode_cache
from verl_audio.plugin_state import require_plugin
from verl_audio.trainer import cluster, cpu_mode, metrics_log

logger = logging.getLogger("verl_audio.trainer")

CHECKPOINT_TRACKER = "latest_checkpointed_iteration.txt"
#: the composed config as the workers receive it, written at start
CONFIG_FILE = "config.yaml"
#: what the run did and where its outputs are, printed last
SUMMARY_FILE = "summary.txt"
#: glibc's fixed mmap threshold (bytes), set for every Ray process from verl_audio.host_mmap_threshold_kb
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def prepare(config: DictConfig) -> Path:
    """Resolve paths, route verl's loggers into the output folder, pick CPU mode; return the output folder."""
    if config.trainer.use_v1:
        raise ValueError("trainer.use_v1=True runs verl's v1 trainer, which needs the `transfer_queue` package and "
                         "skips verl-audio's trainer hooks; verl_audio.trainer.main runs trainer.use_v1=False")
    with open_dict(config):
        # Ray processes may start elsewhere: every path they read or write is made absolute here
        config.verl_audio.output_dir = _absolute(config.verl_audio.output_dir)
        config.trainer.default_local_dir = _absolute(config.trainer.default_local_dir)
        for key in ("train_files", "val_files"):
            files = config.data[key]
            config.data[key] = [_absolute(f) for f in files] if not isinstance(files, str) else _absolute(files)
        if Path(config.actor_rollout_ref.model.path).expanduser().exists():
            config.actor_rollout_ref.model.path = _absolute(config.actor_rollout_ref.model.path)
    out = Path(config.verl_audio.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    va = config.verl_audio
    if va.on_bad_audio not in bad_audio.POLICIES:
        raise ValueError(f"verl_audio.on_bad_audio must be one of {bad_audio.POLICIES}, got {va.on_bad_audio!r}")
    if config.data.get("audio_root"):
        with open_dict(config):
            config.data.audio_root = _absolute(config.data.audio_root)
    env = {metrics_log.PATH_ENV: str(out / "metrics.jsonl"), metrics_log.APPEND_ENV: "1",
           "TENSORBOARD_DIR": str(out / "tensorboard"),
           # every process that reads audio (trainer, agent-loop workers) follows the same policy
           bad_audio.ON_BAD_AUDIO_ENV: va.on_bad_audio, bad_audio.REJECT_FLAGGED_ENV: "1" if va.reject_flagged_audio else "0",
           bad_audio.REPORT_DIR_ENV: str(out), decode_cache.CACHE_MB_ENV: str(va.decode_cache_mb)}
    threshold_kb = int(va.get("host_mmap_threshold_kb", 1024) or 0)
    if threshold_kb and not os.environ.get(MMAP_THRESHOLD_ENV):
        # glibc raises its mmap threshold after freeing large blocks, so later feature arrays (1.5 MB per clip for
        # Qwen2-Audio's 30 s windows) land on the heap and their memory stays with the process after they are freed:
        # a fixed threshold keeps them mmapped (read by glibc at process start, so it reaches the Ray workers)
        env[MMAP_THRESHOLD_ENV] = str(threshold_kb * 1024)
    os.environ.update(env)
    cpu_mode.set_env_vars(config, env)

    from verl_audio.trainer.lora_setup import configure as configure_lora
    from verl_audio.trainer.speech_setup import configure as configure_speech

    configure_speech(config)  # speech stage on when rows ask for audio output; checks the checkpoint
    configure_lora(config)  # LoRA: adapters or merged weights to the rollout (after speech: it decides too)
    use_cpu, why = cpu_mode.wants_cpu(config)
    if use_cpu:
        changes = cpu_mode.apply(config, joining=cluster.address(config) is not None)
        logger.warning("verl-audio: CPU mode, because %s:\n  %s", why, "\n  ".join(changes))
    else:
        logger.warning("verl-audio: accelerator mode, because %s", why)
    return out


def latest_checkpoint(config: DictConfig) -> Path | None:
    """The actor folder of the newest checkpoint under ``trainer.default_local_dir``, if any."""
    root = Path(config.trainer.default_local_dir)
    tracker = root / CHECKPOINT_TRACKER
    if not tracker.exists():
        return None
    return root / f"global_step_{int(tracker.read_text().strip())}" / "actor"


def export(config: DictConfig, out: Path) -> Path:
    """Export the newest checkpoint to ``out/hf_export`` with the export CLI (replacing an older export)."""
    from verl_audio.models import export as export_cli

    ckpt = latest_checkpoint(config)
    if ckpt is None:
        raise FileNotFoundError(f"verl_audio.export=true but {config.trainer.default_local_dir} holds no checkpoint "
                                "(set trainer.save_freq > 0, or verl_audio.export=false)")
    base = config.verl_audio.export_base or config.actor_rollout_ref.model.path
    if not Path(base).is_dir():  # a Hub id: the weights verl trained from are in the local cache
        from huggingface_hub import snapshot_download

        base = snapshot_download(base)
    target, staging = out / "hf_export", out / "hf_export.partial"
    shutil.rmtree(staging, ignore_errors=True)
    argv = ["--ckpt", str(ckpt), "--base", str(base), "--out", str(staging)]
    export_cli.main(argv + (["--verify"] if config.verl_audio.export_verify else []))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    logger.warning("verl-audio: exported %s to %s", ckpt, target)
    return target


def finish(config: DictConfig, out: Path) -> None:
    """After training: export the last checkpoint, draw the reward curve (as configured), print the summary."""
    from verl_audio.trainer.summary import summarize

    exported = export(config, out) if config.verl_audio.export else None
    curve = None
    if config.verl_audio.plot:
        from verl_audio.trainer.plot import plot_reward_curve

        curve = plot_reward_curve(out / "metrics.jsonl", out / "reward_curve.png")
    text = summarize(config, out, latest_checkpoint(config), exported, curve)
    (out / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)


def check(config: DictConfig) -> Path:
    """Everything before Ray starts: the plugin, paths and modes (``prepare``), verl's checks, every config object
    the workers build from ``config`` (``config_check``), and ``<output_dir>/config.yaml``. Returns the output folder."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from verl_audio.trainer.config_check import build_worker_configs

    require_plugin("verl_audio.trainer.main")
    out = prepare(config)
    auto_set_device(config)
    with warnings.catch_warnings():  # "Disabled critic as algorithm.adv_estimator != gae": GRPO has no critic
        warnings.filterwarnings("ignore", message="Disabled critic", category=UserWarning)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    built = build_worker_configs(config)
    OmegaConf.save(config, out / CONFIG_FILE, resolve=True)
    logger.warning("verl-audio: config checked (%s) and written to %s", ", ".join(built), out / CONFIG_FILE)
    return out


def run(config: DictConfig) -> None:
    """Check, train with verl's run function and our task runner, then export, plot and summarise."""
    from verl.trainer.main_ppo import run_ppo

    from verl_audio.trainer.task_runner import AudioTaskRunner

    out = check(config)
    if config.verl_audio.dry_run:
        logger.warning("verl-audio: verl_audio.dry_run=true: nothing started")
        return
    address = cluster.address(config)
    if address is not None:  # verl's run_ppo then finds Ray initialized and starts nothing
        lines = cluster.join(config, address, cpu_mode=config.trainer.device == "cpu")
        logger.warning("verl-audio: cluster mode:\n  %s", "\n  ".join(lines))
    run_ppo(config, task_runner_class=AudioTaskRunner)
    import ray

    if ray.is_initialized():  # flushes the workers' last log lines now, so that the summary comes last
        ray.shutdown()
    finish(config, out)


@hydra.main(config_path="config", config_name="soundmind_alr", version_base=None)
def main(config: DictConfig) -> None:
    """Hydra entry (see module doc)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(config)


if __name__ == "__main__":
    main()
