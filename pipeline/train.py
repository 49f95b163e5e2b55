"""`vilactl train --stage projector|pretrain|sft`: one stage of the VILA recipe on a blend.

Resolves the config, the blend and the previous stage's checkpoint from the catalog, applies
the stage's freeze policy (logged with parameter counts), and runs train/loop.py — under
torchrun too (rank 0 alone writes checkpoints and catalog rows). Checkpoints land in
<workspace>/checkpoints/<name>/step-NNNNNN/ and in the catalog as `<name>@<step>`; `--resume`
continues from the newest one exactly.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from vilactl.base.errors import VilactlError
from vilactl.catalog import db
from vilactl.catalog.register import (
    Run,
    find_checkpoint,
    forget_checkpoints,
    now,
    record_checkpoint,
    record_failure,
    record_run,
)
from vilactl.pipeline import train_setup
from vilactl.train import checkpoint, config, distributed
from vilactl.train.data import BlendStream
from vilactl.train.loop import LoopArgs, train_loop
from vilactl.train.sequences import SequenceBuilder
from vilactl.train.stages import STAGES, add_lora, apply_freeze, describe


@dataclass
class TrainRequest:
    stage: str
    config: str | None = None
    blend: str | None = None
    steps: int | None = None
    lora: int | None = None
    init: str | None = None            # checkpoint to start from instead of the parent stage's
    name: str | None = None            # run name (checkpoint folder); default: the stage
    resume: bool = False

    @property
    def out_name(self) -> str:
        return self.name or self.stage


def _parent(workspace: Path, req: TrainRequest) -> dict | None:
    stage = STAGES[req.stage]
    if req.init:
        row = find_checkpoint(workspace, req.init)
        if row is None:
            raise VilactlError(f"--init {req.init!r}: no such checkpoint in the catalog")
        return row
    if stage.parent is None:
        return None
    row = find_checkpoint(workspace, stage=stage.parent)
    if row is None:
        raise VilactlError(f"stage {req.stage} starts from a {stage.parent} checkpoint and the "
                           f"catalog has none: run `vilactl train --stage {stage.parent}` first")
    return row


def _latest_step(out: Path) -> Path | None:
    steps = sorted(out.glob("step-*")) if out.exists() else []
    return steps[-1] if steps else None


def prepare(workspace: Path, req: TrainRequest):
    """(cfg, stage cfg, model, tokenizer, paths, parent row) — every input checked first."""
    if req.stage not in STAGES:
        raise VilactlError(f"--stage must be one of {', '.join(STAGES)}, got {req.stage!r}")
    cfg = config.load(req.config)
    scfg = cfg.stages[req.stage]
    blend = req.blend or scfg.blend
    if not blend:
        raise VilactlError(f"no blend for stage {req.stage}: pass --blend or set "
                           f"stages.{req.stage}.blend in {cfg.source}")
    paths = train_setup.blend_paths(workspace, blend)
    parent = _parent(workspace, req)
    torch.manual_seed(cfg.train.seed)
    tokenizer = train_setup.tokenizer_for(workspace, cfg)
    model = train_setup.build_model(workspace, cfg, tokenizer)
    if parent is not None:
        _load_parent(Path(parent["path"]), model)
    if model.tokens_per_image + 2 > cfg.data.max_length:
        raise VilactlError(f"data.max_length {cfg.data.max_length} cannot hold one image "
                           f"({model.tokens_per_image} tokens)")
    return cfg, scfg, blend, model, tokenizer, paths, parent


def _load_parent(folder: Path, model) -> None:
    """Weights of the previous stage; a LoRA run's adapters are merged into the LLM."""
    import json

    lora = json.loads((folder / "meta.json").read_text()).get("lora", 0)
    if lora:
        add_lora(model, lora)
    checkpoint.load_model(folder, model)
    if lora:
        model.llm = model.llm.merge_and_unload()


def train(workspace: Path, req: TrainRequest, console: Console) -> dict:
    d = distributed.setup()
    cfg, scfg, blend, model, tok, paths, parent = prepare(workspace, req)
    stage = STAGES[req.stage]
    lora = scfg.lora if req.lora is None else req.lora
    if lora:
        add_lora(model, lora)
    counts = apply_freeze(model, stage, lora)
    if d.main:
        console.print(f"[bold]{req.stage}[/bold] on {blend}: {describe(counts)}")
    if cfg.train.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable()
    out = workspace / "checkpoints" / req.out_name
    resume_from = _latest_step(out) if req.resume else None
    if resume_from is not None:
        checkpoint.load_model(resume_from, model)     # then optimizer, scheduler, RNG in the loop
        if d.main:
            console.print(f"resuming from {resume_from}")
    model.to(d.device)
    if d.main and not req.resume:     # a fresh run of this name starts its logs over
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    builder = SequenceBuilder(tok, model.image_token_id, model.tokens_per_image,
                              cfg.data.max_length, sft=stage.sft, overflow=cfg.data.overflow)
    stream = BlendStream(paths, builder, model.vision.preprocess, seed=cfg.train.seed)
    # flash-attention takes packed rows as varlen sequences from the restarting position ids;
    # SDPA (CPU, and GPU without flash) needs the block-diagonal mask
    varlen = cfg.model.attn_implementation == "flash_attention_2"
    batches = stream.batches(cfg.train.micro_batch_size, cfg.data.max_length, tok.pad_token_id,
                             cfg.data.packing, cfg.data.buffer, with_mask=not varlen)
    steps = req.steps or scfg.steps
    args = _loop_args(cfg, scfg.lr, steps)
    run = Run(command=f"vilactl train --stage {req.stage}",
              args={"name": req.out_name, "blend": blend, "config": cfg.source, "steps": steps,
                    "lora": lora, "parent": parent and parent["id"], "world": d.world})
    meta = {"stage": req.stage, "config": cfg.to_dict(), "blend": blend, "lora": lora,
            "parent": parent and parent["id"], "tokenizer": str(_tokenizer_path(workspace, cfg))}

    fresh = [not req.resume]

    def on_save(step: int, folder: Path, metrics: dict) -> None:
        with db.writer(workspace) as con:
            if fresh[0]:      # the previous run of this name is replaced only once this one
                fresh[0] = False          # has a checkpoint of its own
                forget_checkpoints(con, req.out_name)
                for stale in out.glob("step-*"):
                    if stale != folder:
                        shutil.rmtree(stale)
            record_checkpoint(con, f"{req.out_name}@{step}", req.stage, run.id, str(folder),
                              step, metrics, blend, parent and parent["id"])

    def log(rec: dict) -> None:
        console.print(f"  step {rec['step']:>5}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
                      f"{rec['tokens_per_s']:,.0f} tok/s  padding {rec['padding_share']:.1%}")

    fwd = distributed.wrap(model, d, cfg.train.strategy)
    try:
        summary = train_loop(model, fwd, batches, args, d, out, resume_from, on_save, meta, log)
    except BaseException as e:
        if d.main:
            record_failure(workspace, run, e)
        raise
    summary.update(skipped=dict(stream.skipped), trainable=counts, world=d.world)
    if d.main:
        run.status, run.finished_at, run.counts = "ok", now(), summary
        with db.writer(workspace) as con:
            record_run(con, run)
    return summary


def _loop_args(cfg, lr: float, steps: int) -> LoopArgs:
    t = cfg.train
    return LoopArgs(steps=steps, lr=lr, grad_accum=t.grad_accum, warmup_ratio=t.warmup_ratio,
                    weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
                    log_every=t.log_every, save_every=t.save_every)


def _tokenizer_path(workspace: Path, cfg) -> Path | str:
    return workspace / train_setup.DEMO_TOKENIZER if cfg.model.tokenizer == "demo" \
        else cfg.model.tokenizer
