"""Compose the recipe's config for each variant and run the trainer's checks on it, in one process; prints JSON.

    python tests/recipe_config_run.py OUTPUTS VARIANT [VARIANT ...]     (VARIANT: [task:]preset/rollout/input/output)

For each variant: the recipe's plan (``verl_audio.trainer.recipe``: preparation steps and overrides, as
``recipes/soundmind_alr.sh`` runs them) -> the config Hydra composes from those overrides -> the trainer's
``check`` (plugin, paths, CPU mode, verl's validation, every config object the workers build). The paper preset
runs as ``DRY_RUN=1`` does (no GPU needed) on the tiny model and data of the tiny variants. Used by
``tests/trainer/test_recipe_configs.py``; a subprocess because ``check`` sets the process environment as a driver does.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from helpers.paths import CONFIG_DIR


def main(outputs: Path, variants: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from verl_audio.trainer.main import check
    from verl_audio.trainer.recipe import Settings, plan

    results = {}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for variant in variants:
            task, _, rest = variant.rpartition(":")
            task = task or "soundmind_alr"
            preset, rollout, source, target = rest.split("/")
            tiny = Settings(task, "tiny", rollout, source, target, outputs, f"{task}_tiny_{source}_{target}")
            settings = tiny if preset == "tiny" else Settings(
                task, "paper", rollout, source, target, outputs, f"{task}_paper_{rollout}_{source}_{target}",
                model_path=str(tiny.run_dir / "tiny_omni"), data_dir=str(tiny.run_dir / "data"), dry_run=True)
            try:
                plan(tiny, gpu=False).prepare()  # the tiny model and data (each step skips itself once done)
                recipe_plan = plan(settings, gpu=False)
                config = compose(config_name="soundmind_alr",
                                 overrides=[*recipe_plan.overrides, "verl_audio.dry_run=true"])
                check(config)
                rollout_cfg = config.actor_rollout_ref.rollout
                results[variant] = {"ok": True, "speech": bool(rollout_cfg.engine_kwargs.speech.enable),
                                    "rollout": rollout_cfg.name, "device": config.trainer.device,
                                    "reward": config.reward.custom_reward_function.path,
                                    "agent_loop": rollout_cfg.agent.default_agent_loop,
                                    "config_yaml": (Path(config.verl_audio.output_dir) / "config.yaml").is_file()}
            except Exception as err:  # noqa: BLE001 - reported per variant
                results[variant] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                                    "trace": traceback.format_exc()[-3000:]}
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
