"""verl's v0 ``TaskRunner`` building ``AudioPPOTrainer`` instead of ``RayPPOTrainer``.

verl's ``main_ppo_v0.TaskRunner`` is a Ray actor class whose ``run`` constructs ``RayPPOTrainer``
directly, so it cannot be subclassed; ``run`` below is its body (verl 0.9.1) with the trainer class
swapped, the validation dataset set to leave rows with bad audio out of its batches
(``on_skip="drop"``, collated by ``collate_skipping_bad``) where the training dataset replaces them, and the
config's pretty-print left out (the driver writes it to ``<output_dir>/config.yaml``).
The role/resource-pool helpers are inherited from verl's ``BaseTaskRunner`` unchanged.
"""

from __future__ import annotations

import os
import socket

import ray
from omegaconf import DictConfig, OmegaConf
from verl.trainer.main_ppo_v0 import BaseTaskRunner


@ray.remote(num_cpus=1)
class AudioTaskRunner(BaseTaskRunner):
    """Ray actor that sets up workers, datasets and the trainer, then trains (see module doc)."""

    def run(self, config: DictConfig) -> None:
        from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler, need_critic, need_reference_policy
        from verl.utils.config import omega_conf_to_dataclass, validate_config
        from verl.workers.config import HFModelConfig

        from verl_audio.data.rl_dataset import collate_skipping_bad
        from verl_audio.trainer.ppo_trainer import AudioPPOTrainer

        # verl pretty-prints the whole config here (~700 lines); the driver wrote it to <output_dir>/config.yaml
        print(f"AudioTaskRunner on {socket.gethostname()} (pid {os.getpid()}), config in "
              f"{config.verl_audio.output_dir}/config.yaml")
        OmegaConf.resolve(config)

        actor_rollout_cls, ray_worker_group_cls = self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        self.add_ref_policy_worker(config, actor_rollout_cls)
        validate_config(config=config, use_reference_policy=need_reference_policy(config),
                        use_critic=need_critic(config))

        model_config: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        tokenizer, processor = model_config.tokenizer, model_config.processor
        resource_pool_manager = self.init_resource_pool_mgr(config)

        datasets = {
            split: create_rl_dataset(files, config.data, tokenizer, processor, is_train=split == "train",
                                     max_samples=config.data.get(f"{split}_max_samples", -1))
            for split, files in (("train", config.data.train_files), ("val", config.data.val_files))
        }
        if hasattr(datasets["val"], "on_skip"):
            datasets["val"].on_skip, datasets["val"].phase = "drop", "val"
        trainer = AudioPPOTrainer(
            config=config,
            tokenizer=tokenizer,
            processor=processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=resource_pool_manager,
            ray_worker_group_cls=ray_worker_group_cls,
            train_dataset=datasets["train"],
            val_dataset=datasets["val"],
            collate_fn=collate_skipping_bad,
            train_sampler=create_rl_sampler(config.data, datasets["train"]),
        )
        trainer.init_workers()
        trainer.fit()
