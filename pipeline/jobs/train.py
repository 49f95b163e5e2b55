"""`vilactl train --stage projector|pretrain|sft`: one stage of the VILA recipe on a blend.

Resolves the config, the blend and the previous stage's checkpoint from the catalog, applies
the stage's freeze policy (logged with parameter counts), and runs train/loop.py — under
torchrun too (each rank trains on its share of the data; rank 0 alone writes checkpoints and
catalog rows). The stage's batch layout (global batch, micro batch, max length) comes from the
config and the world size. Checkpoints land in <workspace>/checkpoints/<name>/step-NNNNNN/ and
in the catalog as `<name>@<step>`; `--resume` continues from the newest one exactly, with the
same layout only.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from vilactl.base import atomic
from vilactl.base.errors import Stopped, VilactlError
from vilactl.base.paths import contained, output_dir
from vilactl.base.progress import duration
from vilactl.catalog import db, jobs
from vilactl.catalog.rows import (
    Run,
    find_checkpoint,
    forget_checkpoints,
    record_checkpoint,
)
from vilactl.pipeline.jobs import train_setup
from vilactl.train import checkpoint, config, distributed
from vilactl.train.loop import LoopArgs, StopSignals, check_layout, layout_record, train_loop
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
    parents: bool = False              # train earlier stages first when none fits
    replace: bool = False              # train a run name again whose checkpoints exist
    replace_dependents: bool = False   # (demo --force, ablate: they redo the whole chain)
    overrides: tuple[str, ...] = ()    # `--set KEY=VALUE`s applied to the config, in order

    @property
    def out_name(self) -> str:
        return self.name or self.stage


class NoParent(VilactlError):
    """No checkpoint of the parent stage fits the model being trained."""


def _parent(workspace: Path, req: TrainRequest, cfg, model, console: Console | None
            ) -> dict | None:
    """The checkpoint this stage starts from: `--init`'s, or the newest final checkpoint of
    the parent stage whose tensors have this model's shapes (vision tower, LLM dimensions,
    projector type), announced with the ones skipped."""
    stage = STAGES[req.stage]
    if req.init:
        row = find_checkpoint(workspace, req.init)
        if row is None:
            raise VilactlError(f"--init {req.init!r}: no such checkpoint in the catalog")
        if console:
            console.print(f"starting from [bold]{row['id']}[/bold] (--init)")
        return row
    if stage.parent is None:
        return None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    misfits, why = [], None
    for row in final_checkpoints(workspace, stage.parent):
        problem = checkpoint.shape_problem(Path(row["path"]), want, lora_names=True)
        if problem is None:
            if console:
                skipped = f"; skipped {', '.join(misfits)}: another model shape" if misfits \
                    else ""
                console.print(f"starting from [bold]{row['id']}[/bold] (the newest "
                              f"{stage.parent} checkpoint of this model shape{skipped})")
            return row
        misfits.append(row["id"])
        why = why or problem
    if not misfits:
        raise NoParent(f"stage {req.stage} starts from a {stage.parent} checkpoint and the "
                       f"catalog has none: run `vilactl train --stage {stage.parent}` first "
                       "(or pass --parents)")
    raise NoParent(f"stage {req.stage} starts from a {stage.parent} checkpoint of the model "
                   f"shape of {cfg.source} and the catalog has none ({_few(misfits)}: another "
                   f"shape; {misfits[0]}: {why}): train one with `vilactl train --stage "
                   f"{stage.parent} --config {cfg.source} --name NAME`, or pass --init")


def final_checkpoints(workspace: Path, stage: str) -> list[dict]:
    """The final checkpoints of `stage`, newest first."""
    if not db.catalog_path(workspace).exists():
        return []
    with db.reader(workspace) as con:
        rel = con.sql("SELECT * FROM checkpoints WHERE stage = ? AND "
                      "json_extract(metrics, '$.final')::BOOLEAN ORDER BY created_at DESC",
                      params=[stage])
        rows, cols = rel.fetchall(), rel.columns
    return [dict(zip(cols, r)) for r in rows]


def _latest_step(out: Path) -> Path | None:
    steps = sorted(out.glob("step-*")) if out.exists() else []
    return steps[-1] if steps else None


def _train_parent(workspace: Path, req: TrainRequest, console: Console,
                  missing: NoParent) -> None:
    """--parents: the earlier stage, trained first (with the same config, on its own blend)
    under its default name — or, when that name is taken (by a run of another model shape),
    the one line saying what is missing."""
    parent = STAGES[req.stage].parent
    if taken(workspace, parent, output_dir(workspace, "checkpoints", parent)):
        raise missing
    console.print(f"[bold]{req.stage}[/bold] starts from a {parent} checkpoint and the catalog "
                  f"has none of this model shape: training {parent} first")
    train(workspace, TrainRequest(stage=parent, config=req.config, parents=True,
                                  overrides=req.overrides), console)


def taken(workspace: Path, name: str, out: Path) -> list[str]:
    """The checkpoints of run `name`: catalog ids, and step folders the catalog lacks."""
    ids = []
    if db.catalog_path(workspace).exists():
        with db.reader(workspace) as con:
            ids = [i for (i,) in con.sql("SELECT id FROM checkpoints WHERE split_part(id, '@', 1)"
                                         " = ? AND stage <> 'clip' ORDER BY step",
                                         params=[name]).fetchall()]
    if not ids and _latest_step(out) is not None:
        ids = [p.name for p in sorted(out.glob("step-*"))]
    return ids


def check_name(workspace: Path, req: TrainRequest, out: Path) -> None:
    """A run name is like a dataset name: one whose checkpoints exist is trained again only with
    --replace, and never when one of them is what other records were made from (a later
    stage's parent, an eval, an export) — those would silently describe other weights."""
    if req.resume:
        return
    ids = taken(workspace, req.out_name, out)
    if not ids:
        return
    name = req.out_name
    if not req.replace:
        raise VilactlError(f"checkpoints of run {name!r} exist ({_few(ids)}): pass --replace to "
                           "train it again, --resume to continue it, or --name to name another "
                           "run (make … NAME=…)")
    dep = None if req.replace_dependents else dependent(workspace, name, ids)
    if dep:
        raise VilactlError(f"--replace: {dep}, which would then describe other weights under the "
                           f"same id; name this run another way with --name (make … NAME=…)")


def _few(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def dependent(workspace: Path, name: str, ids: list[str]) -> str | None:
    """What the catalog made from these checkpoints of run `name`, in words, or None."""
    checks = [
        ("SELECT parent, id FROM checkpoints WHERE list_contains(?, parent) AND "
         "split_part(id, '@', 1) <> ?", [ids, name], "{0} is the parent of checkpoint {1}"),
        ("SELECT checkpoint, dataset FROM evals WHERE list_contains(?, checkpoint)", [ids],
         "{0} has evals (on {1})"),
        ("SELECT checkpoint, path FROM exports WHERE list_contains(?, checkpoint) OR "
         "list_has_any(?::VARCHAR[], checkpoints)", [ids, ids], "{0} was exported to {1}")]
    with db.reader(workspace) as con:
        for sql, params, what in checks:
            rows = con.sql(sql, params=params).fetchall()
            if rows:
                return what.format(*rows[0])
    return None


def prepare(workspace: Path, req: TrainRequest, world: int = 1,
            console: Console | None = None):
    """(cfg, stage cfg, blend, batch layout, model, tokenizer, paths, parent row) — every input
    checked first; the parent checkpoint chosen announced on `console`."""
    cfg = config.load(req.config, req.overrides)
    scfg = cfg.stages[req.stage]
    layout = config.layout(cfg, req.stage, world)
    blend = req.blend or scfg.blend
    if not blend:
        raise VilactlError(f"no blend for stage {req.stage}: pass --blend or set "
                           f"stages.{req.stage}.blend in {cfg.source}")
    paths = train_setup.blend_paths(workspace, blend)
    torch.manual_seed(cfg.train.seed)
    tokenizer = train_setup.tokenizer_for(workspace, cfg)
    model = train_setup.build_model(workspace, cfg, tokenizer)
    parent = _parent(workspace, req, cfg, model, console)
    if parent is not None:
        _load_parent(Path(parent["path"]), model)
    if model.tokens_per_image + 2 > layout.max_length:
        raise VilactlError(f"max_length {layout.max_length} of stage {req.stage} cannot hold "
                           f"one image ({model.tokens_per_image} tokens)")
    return cfg, scfg, blend, layout, model, tokenizer, paths, parent


def _load_parent(folder: Path, model) -> None:
    """Weights of the previous stage; a LoRA run's adapters are merged into the LLM."""
    from vilactl.base import json_bounds

    checkpoint.check_present(folder, "meta.json", "model.safetensors")
    meta = json_bounds.load_file(folder / "meta.json")
    lora = meta.get("lora", 0) if isinstance(meta, dict) else 0
    if lora:
        add_lora(model, lora)
    checkpoint.load_model(folder, model)
    if lora:
        model.llm = model.llm.merge_and_unload()


def train(workspace: Path, req: TrainRequest, console: Console) -> dict:
    if req.stage not in STAGES:
        raise VilactlError(f"--stage must be one of {', '.join(STAGES)}, got {req.stage!r}")
    _check_numbers(req)
    out = output_dir(workspace, "checkpoints", req.out_name)
    check_name(workspace, req, out)
    d = distributed.setup()
    shown = console if d.main else None
    try:
        prepared = prepare(workspace, req, d.world, shown)
    except NoParent as missing:
        if not req.parents:
            raise
        _train_parent(workspace, req, console, missing)
        prepared = prepare(workspace, req, d.world, shown)
    cfg, scfg, blend, layout, model, tok, paths, parent = prepared
    stage = STAGES[req.stage]
    lora = scfg.lora if req.lora is None else req.lora
    if lora:
        add_lora(model, lora)
    counts = apply_freeze(model, stage, lora, scfg.freeze_llm)
    if d.main:
        _announce(console, req.stage, blend, counts, layout, d.world, cfg.data.workers)
        if cfg.overrides:
            console.print(f"  config: {cfg.source} with --set {' --set '.join(cfg.overrides)}",
                          highlight=False, markup=False)
    if cfg.train.gradient_checkpointing:
        # non-reentrant: works under DDP/FSDP and with a frozen embedding's inputs
        model.llm.gradient_checkpointing_enable({"use_reentrant": False})
    steps = req.steps or scfg.steps
    args = {"name": req.out_name, "blend": blend, "config": cfg.source, "steps": steps,
            "lora": lora, "freeze_llm": scfg.freeze_llm, "parent": parent and parent["id"],
            "world": d.world,
            "global_batch": layout.global_batch, "grad_accum": layout.grad_accum,
            "micro_batch_size": layout.micro_batch_size, "max_length": layout.max_length,
            "strategy": cfg.train.strategy, "set": cfg.overrides}
    # SIGTERM/SIGINT from here on: noted, acted on at the next step boundary; still noted
    # while the stopped run is recorded (torchrun's agent signals the ranks again then)
    with StopSignals() as stop, jobs.job(workspace, f"vilactl train --stage {req.stage}", args,
                                         target=f"checkpoints/{req.out_name}",
                                         record=d.main) as job:
        if d.main:
            check_name(workspace, req, out)     # again, under the run's lock
        resume_from = _resume(workspace, req, out, cfg, scfg, layout, model, d, console)
        model.to(d.device)
        stream, data = train_setup.data_source(cfg, layout, stage.sft, model, tok, paths, d)
        meta = {"stage": req.stage, "config": cfg.to_dict(), "set": cfg.overrides,
                "blend": blend, "lora": lora,
                "parent": parent and parent["id"],
                "tokenizer": str(train_setup.tokenizer_path(workspace, cfg))}
        summary = train_loop(distributed.wrap(model, d, cfg.train.strategy), data,
                             _loop_args(cfg, scfg.lr, steps, layout), d, out, resume_from,
                             _on_save(workspace, req, job.run, out, blend, parent), meta,
                             _StepLog(console, steps), stop)
        if "stopped_at" in summary:
            raise _stopped(stop.signum, req.out_name, summary, steps)
        summary.update(skipped={**stream.skipped,
                                "undecodable_image": summary.pop("undecodable_image")},
                       trainable=counts, world=d.world)
        job.counts.update(summary)
    if d.main:
        _where(workspace, console, req.out_name)
    return summary


def _check_numbers(req: TrainRequest) -> None:
    if req.steps is not None and not 1 <= req.steps < 2 ** 63:
        raise VilactlError(f"--steps must be a positive integer, got {req.steps}")
    if req.lora is not None and not 0 <= req.lora < 2 ** 31:
        raise VilactlError(f"--lora must be 0 (full weights) or a positive rank, got {req.lora}")


def _stopped(signum: int, name: str, summary: dict, steps: int) -> Stopped:
    """The one line a run stopped by a signal ends with (and its run's error)."""
    signum = signum or signal.SIGTERM          # a rank that got no signal stops with the rest
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    sig = signal.Signals(signum).name
    saved = summary.get("saved_step")
    if not saved:
        return Stopped(signum, f"{how} by {sig} before the first step finished: nothing saved")
    return Stopped(signum, f"{how} by {sig} after step {summary['stopped_at']} of {steps}: "
                           f"checkpoint {name}@{saved} saved; --resume continues from it")


def _announce(console: Console, stage: str, blend: str, counts: dict, layout, world: int,
              workers: int) -> None:
    console.print(f"[bold]{stage}[/bold] on {blend}: {describe(counts)}")
    console.print(f"  batch: {layout.global_batch} rows of {layout.max_length} tokens = "
                  f"{layout.micro_batch_size} × accumulation {layout.grad_accum} × "
                  f"{world} rank(s); {workers} decoding worker(s) per rank")


def _resume(workspace: Path, req: TrainRequest, out: Path, cfg, scfg, layout, model, d,
            console: Console) -> Path | None:
    """The checkpoint --resume continues from (its weights loaded; a changed batch layout
    refused first), or None for a fresh run, whose old logs are cleared."""
    resume_from = _latest_step(out) if req.resume else None
    if resume_from is not None:
        now_layout = layout_record(_loop_args(cfg, scfg.lr, 1, layout), d.world)
        check_layout(checkpoint.read_state(resume_from), now_layout, resume_from)
        checkpoint.load_model(resume_from, model)     # then optimizer, scheduler, RNG in the loop
        if d.main:
            console.print(f"resuming from {resume_from}")
            _changed_overrides(resume_from, cfg.overrides, console)
    if d.main and not req.resume:     # a fresh run of this name starts its logs over
        atomic.remove(contained(workspace, out / "tensorboard") if out.exists() else None)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    return resume_from


def _changed_overrides(folder: Path, now: list[str], console: Console) -> None:
    """--resume honours the --set values given now, as it honours an edited config file (only
    a changed batch layout is refused); it says so when they differ from the checkpoint's."""
    from vilactl.base import json_bounds

    meta = json_bounds.load_file(folder / "meta.json") if (folder / "meta.json").exists() else {}
    was = meta.get("set", []) if isinstance(meta, dict) else []
    if was != now:
        console.print(f"  --set differs from the checkpoint's ({' '.join(was) or 'none'}): "
                      f"continuing with {' '.join(now) or 'none'}", highlight=False, markup=False)


def _where(workspace: Path, console: Console, name: str) -> None:
    row = find_checkpoint(workspace, name)
    if row is not None:
        console.print(f"checkpoint [bold]{row['id']}[/bold] at {row['path']}")


def _on_save(workspace: Path, req: TrainRequest, run: Run, out: Path, blend: str,
             parent: dict | None):
    fresh = [not req.resume]

    def on_save(step: int, folder: Path, metrics: dict) -> None:
        with db.writer(workspace) as con:
            if fresh[0]:      # the previous run of this name is replaced only once this one
                fresh[0] = False          # has a checkpoint of its own
                forget_checkpoints(con, req.out_name)
                for stale in out.glob("step-*"):
                    if stale != folder:
                        atomic.remove(contained(workspace, stale))
            record_checkpoint(con, f"{req.out_name}@{step}", req.stage, run.id, str(folder),
                              step, metrics, blend, parent and parent["id"])
    return on_save


class _StepLog:
    """The step lines (every train.log_every steps): `step 40/120`, the step's loss, lr and
    throughput, and the time left at the pace since the first line — a log reader's progress
    line for the longest phase of all."""

    def __init__(self, console: Console, steps: int):
        self.console, self.steps, self.first = console, steps, None

    def __call__(self, rec: dict) -> None:
        now, step = time.monotonic(), rec["step"]
        self.first = self.first or (now, step)
        t0, s0 = self.first
        eta = f"  eta {duration((now - t0) / (step - s0) * (self.steps - step))}" \
            if step > s0 and step < self.steps else ""
        self.console.print(f"  step {step:>5}/{self.steps}  loss {rec['loss']:.4f}  "
                           f"lr {rec['lr']:.2e}  {rec['tokens_per_s']:,.0f} tok/s  "
                           f"padding {rec['padding_share']:.1%}{eta}", highlight=False)


def _loop_args(cfg, lr: float, steps: int, layout: config.Layout) -> LoopArgs:
    t = cfg.train
    return LoopArgs(steps=steps, lr=lr, grad_accum=layout.grad_accum,
                    micro_batch_size=layout.micro_batch_size, max_length=layout.max_length,
                    warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                    max_grad_norm=t.max_grad_norm, log_every=t.log_every,
                    save_every=t.save_every, betas=tuple(t.betas))
