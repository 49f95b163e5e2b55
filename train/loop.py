"""The training loop: token-weighted gradient accumulation, logging, checkpoints, exact resume.

Every rank replays the same deterministic batch stream; an optimizer step takes
`grad_accum × world` micro-batches, rank r runs every world-th one. Because all ranks see the
whole step's batches, each knows the step's trained-token count T without communication, and
every micro-batch contributes (sum of its token losses) / T — so a step's gradient is the mean
over tokens of the whole global batch, however it is split across micro-batches and ranks
(DDP's gradient averaging is undone by scaling with the world size).
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vilactl.train import checkpoint
from vilactl.train.distributed import Dist
from vilactl.train.model import token_losses
from vilactl.train.packing import Batch


@dataclass
class LoopArgs:
    steps: int
    lr: float
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    log_every: int = 10
    save_every: int = 0


def optimizer_for(model: torch.nn.Module, args: LoopArgs):
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=args.weight_decay)
    warmup = int(round(args.warmup_ratio * args.steps))
    return opt, get_cosine_schedule_with_warmup(opt, warmup, args.steps)


def _micro_step(fwd, b: Batch, target: int, world: int, device) -> float:
    b = b.to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        logits = fwd(b.input_ids, b.pixels, b.attention_mask, b.position_ids)
    loss_sum = token_losses(logits, b.labels).sum()
    (loss_sum * world / target).backward()
    return float(loss_sum.detach())


def train_loop(model: torch.nn.Module, fwd: torch.nn.Module, batches: Iterator[Batch],
               args: LoopArgs, d: Dist, out: Path, resume_from: Path | None = None,
               on_save: Callable[[int, Path, dict], None] | None = None,
               meta: dict | None = None, log: Callable[[dict], None] | None = None) -> dict:
    """Train `args.steps` optimizer steps; returns summary metrics."""
    opt, sched = optimizer_for(model, args)
    start = 0
    if resume_from is not None:
        start = checkpoint.load_training(resume_from, opt, sched)["step"]
        if d.main:
            _truncate_log(out, start)
    per_step = args.grad_accum * d.world
    for _ in range(start * per_step):           # replay the stream to where the run stopped
        next(batches)
    writer = _tensorboard(out) if d.main else None
    history, t_run = [], time.perf_counter()
    for step in range(start, args.steps):
        t0 = time.perf_counter()
        group = [next(batches) for _ in range(per_step)]
        target = sum(b.target_tokens for b in group)
        mine = group[d.rank::d.world]
        local = 0.0
        for i, b in enumerate(mine):
            sync = i == len(mine) - 1 or not hasattr(fwd, "no_sync")
            with contextlib.nullcontext() if sync else fwd.no_sync():
                local += _micro_step(fwd, b, target, d.world, d.device)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        real, total = sum(b.real_tokens for b in group), sum(b.tokens for b in group)
        rec = {"step": step + 1, "loss": d.all_sum(local) / target, "lr": sched.get_last_lr()[0],
               "grad_norm": float(grad_norm), "tokens_per_s": real / dt,
               "padding_share": 1 - real / total, "target_tokens": target}
        history.append(rec)
        last = step + 1 == args.steps
        if d.main:
            _log(out, rec, writer)
            if log and ((step + 1) % args.log_every == 0 or last):
                log(rec)
        if d.main and (last or (args.save_every and (step + 1) % args.save_every == 0)):
            folder = out / f"step-{step + 1:06d}"
            metrics = {"loss": rec["loss"], "final": last}
            checkpoint.save(folder, model, opt, sched,
                            {"step": step + 1, "batches": (step + 1) * per_step,
                             "metrics": metrics}, meta)
            if on_save:
                on_save(step + 1, folder, metrics)
    if writer:
        writer.close()
    return _summary(history, time.perf_counter() - t_run)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:     # tensorboard is a dependency; a stripped install still trains
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _log(out: Path, rec: dict, writer) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if writer:
        for k in ("loss", "lr", "grad_norm", "tokens_per_s", "padding_share"):
            writer.add_scalar(f"train/{k}", rec[k], rec["step"])


def _truncate_log(out: Path, step: int) -> None:
    """Drop log lines past the checkpoint a run resumes from (the killed run wrote them)."""
    path = out / "metrics.jsonl"
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def _summary(history: list[dict], seconds: float) -> dict:
    if not history:
        return {"steps_run": 0}
    k = max(1, len(history) // 10)
    first = sum(r["loss"] for r in history[:k]) / k
    last = sum(r["loss"] for r in history[-k:]) / k
    return {"steps_run": len(history), "first_loss": first, "final_loss": last,
            "loss_drop": 1 - last / first if first else 0.0,
            "tokens_per_s": sum(r["tokens_per_s"] for r in history) / len(history),
            "padding_share": sum(r["padding_share"] for r in history) / len(history),
            "seconds": seconds}
