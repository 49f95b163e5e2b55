"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint folder holds model.safetensors (the whole VLM, full tensors), optimizer.safetensors
+ optimizer.json (AdamW state by parameter name, and param groups), rng.safetensors (torch
CPU/CUDA generator states), state.json (step, micro-batches consumed, the batch layout,
scheduler state, metrics) and meta.json (model spec, tokenizer, stage). Written to a temp folder
and renamed: a checkpoint is whole or absent.

Sharded models (FSDP) are saved whole: `torch.distributed.checkpoint.state_dict` gathers the
full model and optimizer state to rank 0 (a collective — every rank calls `save`; rank 0
writes), and on resume rank 0 reads the optimizer state and broadcasts it, each rank keeping its
shard. The files are the same whatever the strategy or world size, so any stage can start from
any checkpoint and a single process reloads an FSDP one.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file

from vilactl.base import atomic
from vilactl.base.errors import VilactlError

OPTIMIZER_FORMAT = "by_name"       # optimizer state keyed "<parameter name>/<state key>"


def _several() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # with several ranks the full tensors go to rank 0's CPU only (no full copy per rank)
    return StateDictOptions(full_state_dict=True, cpu_offload=_several(), **kw)


def gather(root: torch.nn.Module, optimizer=None, prefix: str = "") -> tuple[dict, dict | None]:
    """Full model and optimizer state by parameter name, `prefix` stripped. A collective under
    torchrun: every rank calls it; with several ranks only rank 0 gets the tensors."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    cut = len(prefix)
    model = {k[cut:]: v for k, v in get_model_state_dict(root, options=_options()).items()}
    if optimizer is None:
        return model, None
    osd = get_optimizer_state_dict(root, optimizer, options=_options())
    if not osd:
        return model, {}
    groups = [{**g, "params": [p[cut:] for p in g["params"]]} for g in osd["param_groups"]]
    return model, {"state": {k[cut:]: v for k, v in osd["state"].items()},
                   "param_groups": groups}


def _optimizer_parts(osd: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for name, s in osd["state"].items():
        for k, v in s.items():
            if torch.is_tensor(v):
                tensors[f"{name}/{k}"] = v.detach().contiguous().cpu().clone()
            else:
                scalars[f"{name}/{k}"] = v
    return tensors, {"format": OPTIMIZER_FORMAT, "param_groups": osd["param_groups"],
                     "scalars": scalars}


def save(folder: Path, root: torch.nn.Module, optimizer=None, scheduler=None,
         state: dict | None = None, meta: dict | None = None, prefix: str = "",
         write: bool = True) -> Path:
    """Gather (every rank) and write (where `write`, i.e. rank 0) one checkpoint."""
    model, osd = gather(root, optimizer, prefix)
    if not write:
        return folder
    with atomic.atomic_dir(folder) as tmp:
        # tied or shared tensors are stored once per name (contiguous clones), as safetensors
        # wants
        atomic.save_tensors({k: v.detach().contiguous().cpu().clone()
                             for k, v in model.items()}, tmp / "model.safetensors")
        if optimizer is not None:
            tensors, rest = _optimizer_parts(osd)
            atomic.save_tensors(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(rest))
            rng = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            atomic.save_tensors(rng, tmp / "rng.safetensors")
        full = dict(state or {})
        if scheduler is not None:
            full["scheduler"] = {k: v for k, v in scheduler.state_dict().items()
                                 if k != "lr_lambdas"}
        (tmp / "state.json").write_text(json.dumps(full, indent=2, default=float))
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
    return folder


def check_present(folder: Path, *files: str) -> None:
    """One clear line when a checkpoint folder or one of its files is gone."""
    for name in files or ("model.safetensors",):
        if not (Path(folder) / name).is_file():
            raise VilactlError(f"checkpoint {folder}: {name} is missing (moved or deleted?)")


def _header_shapes(folder: Path, lora_names: bool) -> dict[str, tuple]:
    """Tensor shapes from model.safetensors' header (no tensor is read). With `lora_names`, a
    LoRA run's names are mapped to the plain model's (adapters left out: they merge away)."""
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if lora_names:
        have = {k.replace("base_model.model.", "", 1).replace(".base_layer", ""): v
                for k, v in have.items() if "lora_" not in k}
    return have


def shape_problem(folder: Path, want: dict[str, tuple], lora_names: bool = False) -> str | None:
    """What makes the checkpoint unfit for a model with tensor shapes `want`, or None."""
    if not (Path(folder) / "model.safetensors").is_file():
        return f"{Path(folder) / 'model.safetensors'} is missing"
    have = _header_shapes(Path(folder), lora_names)
    diff = [k for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    if diff:
        k = diff[0]
        return (f"{k} is {list(have[k])} there, {list(want[k])} here ({len(diff)} tensor(s) "
                "differ)")
    missing = sorted(set(want) - set(have))
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"
    return None


def check_shapes(folder: Path, model: torch.nn.Module) -> None:
    """One clear line if the checkpoint was saved from a model of another shape."""
    check_present(folder)
    problem = shape_problem(folder, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if problem and "missing, e.g." in problem:
        raise VilactlError(f"checkpoint {folder} is from another model: {problem}")
    if problem:
        raise VilactlError(f"checkpoint {folder} is from another model shape: {problem}")


def load_model(folder: Path, model: torch.nn.Module) -> None:
    """Weights into an unwrapped (not yet sharded) model."""
    check_shapes(folder, model)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)


def read_state(folder: Path) -> dict:
    check_present(folder, "state.json")
    return json.loads((folder / "state.json").read_text())


def _read_optimizer(folder: Path, prefix: str) -> dict:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    rest = json.loads((folder / "optimizer.json").read_text())
    if rest.get("format") != OPTIMIZER_FORMAT:
        raise VilactlError(f"checkpoint {folder} has an optimizer state of an older vilactl "
                           "(by index); it cannot be resumed by this version")
    state: dict = {}
    for key, v in {**tensors, **rest["scalars"]}.items():
        name, k = key.rsplit("/", 1)
        state.setdefault(prefix + name, {})[k] = v
    groups = [{**g, "params": [prefix + p for p in g["params"]]} for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_training(folder: Path, root: torch.nn.Module, optimizer, scheduler,
                  prefix: str = "") -> dict:
    """Restore optimizer (into the wrapped/sharded model's optimizer), scheduler and RNG state;
    returns state.json. A collective under torchrun: rank 0 reads, every rank gets its part."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    several = _several()
    osd = _read_optimizer(folder, prefix) if not several or dist.get_rank() == 0 else {}
    set_optimizer_state_dict(root, optimizer, osd,
                             options=_options(broadcast_from_rank0=several))
    saved = read_state(folder)
    if scheduler is not None and "scheduler" in saved:
        scheduler.load_state_dict({**saved["scheduler"], "lr_lambdas": [None] * len(
            optimizer.param_groups)})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    return saved
