"""verl's PPO trainer with verl-audio's pieces: the Hydra entry, CPU mode, metrics that survive resume.

* ``main``: ``python -m verl_audio.trainer.main`` (config ``config/soundmind_alr.yaml``), verl's
  ``main_ppo`` run function with our task runner, then export and reward plot;
* ``cpu_mode``: what changes when no accelerator is present (logical Ray GPU slots, ``trainer.device``);
* ``task_runner`` / ``ppo_trainer``: verl's v0 ``TaskRunner`` / ``RayPPOTrainer`` with reward-component
  metrics per step and a metrics history trimmed (not erased) on resume;
* ``metrics_log``: the resumable ``metrics.jsonl``; ``plot``: ``reward_curve.png``.
"""
