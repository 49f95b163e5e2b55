"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint folder holds model.safetensors (the whole VLM), optimizer.safetensors +
optimizer.json (AdamW state and param groups), rng.safetensors (torch CPU/CUDA generator
states), state.json (step, batches consumed, scheduler state, metrics) and meta.json (model
spec, tokenizer, stage). Written to a temp folder and renamed: a checkpoint is whole or absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vilactl.base import atomic
from vilactl.base.errors import VilactlError


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Tied or shared tensors are stored once per name (contiguous clones), as safetensors wants.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def _optimizer_parts(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, s in state["state"].items():
        for k, v in s.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save(folder: Path, model, optimizer=None, scheduler=None, state: dict | None = None,
         meta: dict | None = None) -> Path:
    with atomic.atomic_dir(folder) as tmp:
        save_file(_model_tensors(model), str(tmp / "model.safetensors"))
        if optimizer is not None:
            tensors, rest = _optimizer_parts(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(rest))
            rng = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            save_file(rng, str(tmp / "rng.safetensors"))
        full = dict(state or {})
        if scheduler is not None:
            full["scheduler"] = {k: v for k, v in scheduler.state_dict().items()
                                 if k != "lr_lambdas"}
        (tmp / "state.json").write_text(json.dumps(full, indent=2, default=float))
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2, default=str))
    return folder


def check_shapes(folder: Path, model: torch.nn.Module) -> None:
    """One clear line if the checkpoint was saved from a model of another shape."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing = sorted(set(want) - set(have))
    diff = [k for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    if diff:
        k = diff[0]
        raise VilactlError(f"checkpoint {folder} is from another model shape: {k} is "
                           f"{list(have[k])} there, {list(want[k])} here "
                           f"({len(diff)} tensor(s) differ)")
    if missing:
        raise VilactlError(f"checkpoint {folder} is from another model: {len(missing)} "
                           f"tensor(s) missing, e.g. {missing[0]}")


def load_model(folder: Path, model: torch.nn.Module) -> None:
    check_shapes(folder, model)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)


def load_training(folder: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG state; returns state.json."""
    tensors = load_file(str(folder / "optimizer.safetensors"))
    rest = json.loads((folder / "optimizer.json").read_text())
    state: dict = {}
    for key, v in {**tensors, **rest["scalars"]}.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
    saved = json.loads((folder / "state.json").read_text())
    if scheduler is not None and "scheduler" in saved:
        scheduler.load_state_dict({**saved["scheduler"], "lr_lambdas": [None] * len(
            optimizer.param_groups)})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(rng) if k.startswith("cuda")])
    return saved
