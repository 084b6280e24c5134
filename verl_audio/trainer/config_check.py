"""Every config object the workers build from the run config, built once in the driver before Ray starts.

A key that one of verl's config classes does not declare fails only in the worker that builds that class,
minutes into a run: the vLLM server once built verl's ``HFModelConfig`` from a model section carrying
``AudioModelConfig``'s keys and died at start. ``build_worker_configs`` builds each object the way its worker
does (same function, same section), so such a config stops the run at once, naming the object. The sections
verl-audio adds keys to are all here (model, rollout and its engine_kwargs, the vLLM server's model config); the
reference and critic sections are verl's own, reshaped by its worker before they are built, and left to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig


class WorkerConfigError(ValueError):
    """A config object a worker would build from the run config cannot be built."""


def _builders(config: DictConfig) -> list[tuple[str, Callable[[], Any]]]:
    from verl.utils.config import omega_conf_to_dataclass

    from verl_audio.models.audio_engine import worker_model_config
    from verl_audio.rollout.hf.config import HFRolloutOptions
    from verl_audio.speech.config import SpeechOptions

    arr = config.actor_rollout_ref
    rollout = arr.rollout
    builders: list[tuple[str, Callable[[], Any]]] = [
        # ActorRolloutRefWorker and AgentLoopWorker: omega_conf_to_dataclass(model), its `_target_` class
        ("model", lambda: worker_model_config(arr.model)),
        ("actor", lambda: omega_conf_to_dataclass(arr.actor)),
        ("rollout", lambda: omega_conf_to_dataclass(rollout)),  # the replica's, handed to its servers as built
        ("rollout.checkpoint_engine", lambda: omega_conf_to_dataclass(rollout.checkpoint_engine)),
        ("rollout.engine_kwargs.speech", lambda: SpeechOptions.from_engine_kwargs(rollout.engine_kwargs)),
    ]
    if rollout.name == "hf":
        builders.append(("rollout.engine_kwargs.hf", lambda: HFRolloutOptions.from_engine_kwargs(rollout.engine_kwargs)))
    elif rollout.name == "vllm":
        def vllm_model_config() -> Any:
            from verl_audio.rollout.vllm.server import server_model_config

            return server_model_config(arr.model)

        builders.append(("model (as the vLLM server builds it)", vllm_model_config))
    return builders


def build_worker_configs(config: DictConfig) -> dict[str, Any]:
    """Build every worker config object of ``config``; returns them by name, raises ``WorkerConfigError``."""
    built = {}
    for name, build in _builders(config):
        try:
            built[name] = build()
        except Exception as err:  # noqa: BLE001 - re-raised with the object named
            raise WorkerConfigError(f"the {name} config cannot be built from this run config: "
                                    f"{type(err).__name__}: {err}") from err
    return built
