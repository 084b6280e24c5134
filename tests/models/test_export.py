"""Export of verl actor checkpoints (FSDP1 / FSDP2, world size 1 and 2) to a full Qwen2.5-Omni directory.

The checkpoints are written by verl's ``FSDPCheckpointManager`` from the tiny thinker wrapped in FSDP1
or FSDP2 on gloo, after a "training" step that moves every weight; this file is also the torchrun
script that writes them (``python -m torch.distributed.run ... tests/models/test_export.py WRITE ...``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ENV = {**os.environ, "VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONWARNINGS": "ignore"}


def _write_checkpoint(base: str, out: str, strategy: str, contents: str) -> None:
    """torchrun entry: perturbed tiny thinker -> FSDP1/FSDP2 -> verl's FSDPCheckpointManager.save_checkpoint."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration
    from verl.utils import hf_processor
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    dist.init_process_group("gloo")
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    # the saved hf_model is rebuilt from config.architectures, which a thinker loaded this way lacks
    model.config.architectures = ["Qwen2_5OmniThinkerForConditionalGeneration"]
    torch.manual_seed(123)  # the same "update" on every rank
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("fsdp",))
    if strategy == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = FullyShardedDataParallel(model, device_mesh=mesh, use_orig_params=True, device_id=torch.device("cpu"))
    manager = FSDPCheckpointManager(model=model, optimizer=None, lr_scheduler=None, processing_class=hf_processor(base),
                                    checkpoint_config={"save_contents": contents.split(","), "load_contents": ["model"]})
    manager.save_checkpoint(out, global_step=1)
    dist.barrier()
    dist.destroy_process_group()


def write_checkpoint(base: Path, out: Path, *, strategy: str, world_size: int, contents: str = "model") -> Path:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
           str(Path(__file__).resolve()), "WRITE", str(base), str(out), strategy, contents]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"checkpoint writer failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return out


def merged_by_hand(ckpt: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's full tensors, from the rank shards directly (not through verl's merger)."""
    from torch.distributed.tensor import DTensor

    world = json.loads((ckpt / "fsdp_config.json").read_text())["world_size"]
    shards = [torch.load(ckpt / f"model_world_size_{world}_rank_{r}.pt", weights_only=False) for r in range(world)]
    full = {}
    for name, first in shards[0].items():
        if isinstance(first, DTensor):
            (placement,) = first.placements
            full[name] = torch.cat([s[name]._local_tensor for s in shards], dim=placement.dim)
        else:
            full[name] = first
    return full


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verl_audio.models.tiny import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "base", talker=True)


def _check_export(out: Path, base: Path, expected_thinker: dict[str, torch.Tensor]) -> set[str]:
    """Thinker = the checkpoint's (bf16), the rest = the base's, loads cleanly; returns the thinker names that changed."""
    from verl_audio.models.export import verify_export

    exported, original = read_safetensors(out), read_safetensors(base)
    assert set(exported) == set(original)
    thinker = {k for k in exported if k.startswith("thinker.")}
    assert {k.removeprefix("thinker.") for k in thinker} == set(expected_thinker)
    for name in thinker:
        want = expected_thinker[name.removeprefix("thinker.")].to(torch.bfloat16)
        assert exported[name].dtype == torch.bfloat16
        assert torch.equal(exported[name], want), f"{name} is not the checkpoint's weight"
    for name in set(exported) - thinker:  # talker.* and token2wav.*: the base's, untouched
        assert name.startswith(("talker.", "token2wav.")) and torch.equal(exported[name], original[name])
    for file in ("config.json", "spk_dict.pt", "tokenizer.json", "preprocessor_config.json", "chat_template.jinja"):
        assert (out / file).read_bytes() == (base / file).read_bytes()
    verify_export(out)  # no missing, unexpected or mismatched keys
    return {name for name in thinker if not torch.equal(exported[name], original[name].to(torch.bfloat16))}


@pytest.mark.parametrize("strategy,world_size",
                         [("fsdp", 1), ("fsdp2", 1), ("fsdp2", 2), pytest.param("fsdp", 2, marks=pytest.mark.slow)])
def test_export_sharded_checkpoint(base: Path, tmp_path: Path, strategy: str, world_size: int) -> None:
    from verl_audio.models.export import export_model

    ckpt = write_checkpoint(base, tmp_path / "actor", strategy=strategy, world_size=world_size)
    assert len(list(ckpt.glob("model_world_size_*_rank_*.pt"))) == world_size
    summary = export_model(ckpt, base, tmp_path / "out")
    assert summary["trained_tensors"] == 88 and summary["files"] == 1
    changed = _check_export(tmp_path / "out", base, merged_by_hand(ckpt))
    assert len(changed) == 88  # every weight moved in the "training" step, and the export has them all


@pytest.mark.parametrize("strategy,world_size", [("fsdp2", 1), pytest.param("fsdp", 2, marks=pytest.mark.slow)])
def test_export_verl_engine_checkpoint(base: Path, tmp_path: Path, strategy: str, world_size: int) -> None:
    """A checkpoint from verl's TrainingWorker with the Omni thinker engine after one PPO step."""
    from helpers.engine_run import make_actor_checkpoint
    from verl_audio.models.export import export_model

    ckpt = make_actor_checkpoint(base, tmp_path / "actor", strategy=strategy, world_size=world_size)
    export_model(ckpt, base, tmp_path / "out")
    changed = _check_export(tmp_path / "out", base, merged_by_hand(ckpt))
    assert any(name.startswith("thinker.model.layers.") for name in changed)  # the trained decoder
    assert not any(name.startswith("thinker.audio_tower.") for name in changed)  # frozen by default


def test_export_hf_model_folder_and_generate_audio(base: Path, tmp_path: Path) -> None:
    """Without shards the full model in huggingface/ is used; the export speaks with the base's talker."""
    from transformers import Qwen2_5OmniForConditionalGeneration

    from verl_audio.models.export import main

    ckpt = write_checkpoint(base, tmp_path / "actor", strategy="fsdp2", world_size=1, contents="hf_model")
    assert not list(ckpt.glob("model_world_size_*"))
    # the processor verl saved next to the thinker config loads back through verl as the Omni processor
    from verl.utils import hf_processor

    saved, original = hf_processor(str(ckpt / "huggingface")), hf_processor(str(base))
    text = original.apply_chat_template([{"role": "user", "content": [{"type": "audio", "audio": "a"}]}], tokenize=False)
    clip = torch.randn(16000).numpy() * 0.1
    assert torch.equal(saved(text=[text], audio=[clip], return_tensors="pt")["input_ids"],
                       original(text=[text], audio=[clip], return_tensors="pt")["input_ids"])
    # ~2 MB files: the thinker and the talker + token2wav (6.4 MB in all) spread over several shards
    main(["--ckpt", str(ckpt), "--base", str(base), "--out", str(tmp_path / "out"), "--verify", "--max-shard-gb", "0.002"])
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == len(list((tmp_path / "out").glob("model-*.safetensors"))) > 2
    assert len(_check_export(tmp_path / "out", base, read_safetensors(ckpt / "huggingface"))) == 88

    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[7, 8, 9, 10]])
    torch.manual_seed(0)
    text_ids, wav = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), return_audio=True,
                                   thinker_max_new_tokens=6, talker_max_new_tokens=12, speaker="Ethan")
    assert text_ids.shape[1] > ids.shape[1]
    assert wav.ndim == 1 and wav.numel() > 0 and torch.isfinite(wav).all()


@pytest.mark.parametrize("family_name", ["qwen2_audio", "qwen3_omni"])
def test_export_other_families(family_name: str, tmp_path: Path) -> None:
    """A trained model's in-memory state (Qwen3's experts fused) -> the released names and layout, loads cleanly."""
    from safetensors.torch import save_file

    from verl_audio.models.export import export_model, verify_export
    from verl_audio.models.families import family_named

    family = family_named(family_name)
    base = family.build_tiny(tmp_path / "base")
    model = family.load_trainable(base, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    (tmp_path / "actor" / "huggingface").mkdir(parents=True)
    save_file(state, tmp_path / "actor" / "huggingface" / "model.safetensors")
    summary = export_model(tmp_path / "actor", base, tmp_path / "out")
    verify_export(tmp_path / "out")
    exported, original = read_safetensors(tmp_path / "out"), read_safetensors(base)
    assert set(exported) == set(original) and summary["family"] == family_name
    full = getattr(__import__("transformers"), family.full_class).from_pretrained(tmp_path / "out", dtype=torch.float32)
    loaded = family.module(full, family.part_prefix.rstrip(".")) if family.part_prefix else full
    for name, tensor in loaded.state_dict().items():  # the export loads back as the trained model
        assert torch.equal(tensor, state[name].to(torch.bfloat16).float()), name


class _NotAWeight:
    """Stands for anything a pickle may carry besides tensors."""


def test_export_refuses_what_it_cannot_do(base: Path, tmp_path: Path) -> None:
    from verl_audio.models.export import export_model

    empty = tmp_path / "actor"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no model weights"):
        export_model(empty, base, tmp_path / "out")
    from safetensors.torch import save_file

    (empty / "huggingface").mkdir()  # adapter tensors without verl's lora_train_meta.json (their rank and alpha)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 4)},
              empty / "huggingface" / "model.safetensors")
    with pytest.raises(ValueError, match="lora_train_meta.json"):
        export_model(empty, base, tmp_path / "out")
    pickled = tmp_path / "pickled"  # a shard holding an arbitrary object is refused before anything runs
    pickled.mkdir()
    (pickled / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 1}')
    torch.save({"weight": torch.zeros(2), "payload": _NotAWeight()}, pickled / "model_world_size_1_rank_0.pt")
    with pytest.raises(ValueError, match="weights_only"):
        export_model(pickled, base, tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(FileExistsError):
        export_model(empty, base, busy)


if __name__ == "__main__" and sys.argv[1:2] == ["WRITE"]:
    import verl  # noqa: F401  (the plugin: CPU platform, processor patch)

    _write_checkpoint(*sys.argv[2:6])
