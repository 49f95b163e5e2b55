"""The training loop: token-weighted gradient accumulation over sharded data, logging,
checkpoints, exact resume.

Rank r runs micro-batches r, r + world, r + 2·world, … of one deterministic stream
(train/loader.py); an optimizer step takes `grad_accum` of them on every rank, `grad_accum ×
world` in all. Before any backward the step's trained-token count T is summed over the ranks
(one all_reduce), and every micro-batch contributes (sum of its token losses) / T — so a step's
gradient is the mean over tokens of the whole global batch, however it is split across
micro-batches and ranks (DDP's and FSDP's gradient averaging is undone by scaling with the world
size). 1 rank × accumulation 2 and 2 ranks × accumulation 1 train on the same global batch and
differ only in the order of float sums.

Resume continues at the micro-batch position saved in the checkpoint (state.json "batches"),
and refuses a checkpoint whose batch layout (world size, accumulation, micro batch, length)
differs from the run's: the position and the step size would silently mean other data.

A stop request (SIGTERM — how Slurm and Kubernetes preempt — or SIGINT, noted by `StopSignals`)
takes effect at the next step boundary: the flag rides in the all_reduce every step already
makes (no extra collective), so every rank stops after the same step, the checkpoint of that
step is saved (a collective) and recorded, and `--resume` loses nothing.
"""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vilactl.base.errors import Stopped, VilactlError
from vilactl.train import checkpoint
from vilactl.train.distributed import Dist, Parallel, clip_grad_norm
from vilactl.train.model import token_losses
from vilactl.train.packing import Batch

PREFIX = "vlm."                 # state-dict names under TrainForward are "vlm." + the VLM's
LAYOUT_KEYS = ("world", "grad_accum", "micro_batch_size", "max_length")


@dataclass
class LoopArgs:
    steps: int
    lr: float
    grad_accum: int = 1
    micro_batch_size: int = 1          # recorded in checkpoints (resume checks the layout)
    max_length: int = 0
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    log_every: int = 10
    save_every: int = 0
    betas: tuple[float, float] = (0.9, 0.999)   # HF Trainer's AdamW defaults, which VILA uses


class StopSignals:
    """While active, SIGTERM and SIGINT only note a stop request (`signum`); the loop acts on it
    at the next step boundary. A second signal stops at once (the usual double Ctrl-C)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = 0
        self._old: dict = {}

    def _note(self, signum, _frame) -> None:
        if self.signum:
            raise Stopped(signum, f"stopped by a second {signal.Signals(signum).name} before "
                                  "the checkpoint was written")
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def optimizer_for(model: torch.nn.Module, args: LoopArgs):
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=tuple(args.betas),
                            weight_decay=args.weight_decay)
    warmup = int(round(args.warmup_ratio * args.steps))
    return opt, get_cosine_schedule_with_warmup(opt, warmup, args.steps)


def _micro_step(fwd, b: Batch, target: int, world: int, device) -> float:
    b = b.to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    with autocast:
        logits, touch = fwd(b.input_ids, b.pixels, b.attention_mask, b.position_ids)
    loss_sum = token_losses(logits, b.labels).sum()
    (loss_sum * world / target + touch).backward()
    return float(loss_sum.detach())


def layout_record(args: LoopArgs, world: int) -> dict:
    return {"world": world, "grad_accum": args.grad_accum,
            "micro_batch_size": args.micro_batch_size, "max_length": args.max_length}


def check_layout(saved: dict, now: dict, folder: Path) -> None:
    """One line if the run would resume with another batch layout than the checkpoint's."""
    was = saved.get("layout", {})
    diff = [k for k in LAYOUT_KEYS if k in was and was[k] != now[k]]
    if diff:
        what = ", ".join(f"{k} {was[k]} → {now[k]}" for k in diff)
        raise VilactlError(f"cannot resume from {folder}: the batch layout changed ({what}); "
                           "resume with the same number of processes and batch config")


def _resume(par: Parallel, opt, sched, args: LoopArgs, d: Dist, out: Path,
            folder: Path) -> tuple[int, int]:
    saved = checkpoint.read_state(folder)
    check_layout(saved, layout_record(args, d.world), folder)
    checkpoint.load_training(folder, par.root, opt, sched, PREFIX)
    if d.main:
        _truncate_log(out, saved["step"])
    return saved["step"], saved["batches"]


def train_loop(par: Parallel, data: Callable[[int], Iterator[Batch]], args: LoopArgs, d: Dist,
               out: Path, resume_from: Path | None = None,
               on_save: Callable[[int, Path, dict], None] | None = None,
               meta: dict | None = None, log: Callable[[dict], None] | None = None,
               stop: StopSignals | None = None) -> dict:
    """Train `args.steps` optimizer steps on `data(position)` (this rank's micro-batches from
    stream position `position`); returns summary metrics. On a stop request (`stop`) the loop
    ends at the next step boundary with that step's checkpoint saved; the summary then holds
    `stopped_at` (the steps done) and `saved_step`."""
    params = [p for p in par.model.parameters() if p.requires_grad]
    opt, sched = optimizer_for(par.model, args)
    start = position = 0
    if resume_from is not None:
        start, position = _resume(par, opt, sched, args, d, out, resume_from)
    batches = data(position)
    writer = _tensorboard(out) if d.main else None
    history, counts, t_run = [], Counter(), time.perf_counter()
    saved, stopped_at = start if resume_from is not None else None, None
    for step in range(start, args.steps):
        t0 = time.perf_counter()
        mine = [next(batches) for _ in range(args.grad_accum)]
        wait = time.perf_counter() - t0
        # the stop flag rides in the step's all_reduce: every rank stops after the same step
        target, real, total, stopping = d.all_sum(sum(b.target_tokens for b in mine),
                                                  sum(b.real_tokens for b in mine),
                                                  sum(b.tokens for b in mine),
                                                  float(bool(stop and stop.signum)))
        if stopping:
            stopped_at = step
            break
        if not target:
            raise VilactlError(f"step {step + 1}: no trained token in the global batch (every "
                               "sample dropped: undecodable images?)")
        local = 0.0
        for i, b in enumerate(mine):
            with par.sync(last=i == len(mine) - 1):
                local += _micro_step(par.fwd, b, int(target), d.world, d.device)
        grad_norm = clip_grad_norm(params, args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        position += args.grad_accum * d.world
        counts.update(images_decoded=sum(b.images_decoded for b in mine),
                      undecodable_image=sum(b.undecodable for b in mine))
        dt = time.perf_counter() - t0
        rec = {"step": step + 1, "loss": d.all_sum(local)[0] / target,
               "lr": sched.get_last_lr()[0], "grad_norm": grad_norm, "tokens_per_s": real / dt,
               "padding_share": 1 - real / total, "target_tokens": int(target),
               "data_wait_s": wait}
        history.append(rec)
        last = step + 1 == args.steps
        if d.main:
            _log(out, rec, writer)
            if log and ((step + 1) % args.log_every == 0 or last):
                log(rec)
        if last or (args.save_every and (step + 1) % args.save_every == 0):
            _save(par, opt, sched, args, d, out, rec, position, meta, on_save, last)
            saved = step + 1
    if stopped_at is not None and history and saved != stopped_at:
        _save(par, opt, sched, args, d, out, history[-1], position, meta, on_save, False)
        saved = stopped_at
    if writer:
        writer.close()
    summary = _summary(history, time.perf_counter() - t_run)
    if stopped_at is not None:
        summary.update(stopped_at=stopped_at, saved_step=saved)
    summary["images_decoded"] = d.all_gather(counts["images_decoded"])     # per rank
    summary["undecodable_image"] = int(d.all_sum(counts["undecodable_image"])[0])
    return summary


def _save(par: Parallel, opt, sched, args: LoopArgs, d: Dist, out: Path, rec: dict,
          position: int, meta: dict | None, on_save, last: bool) -> None:
    """Every rank gathers (FSDP shards); rank 0 writes and records."""
    step = rec["step"]
    folder = out / f"step-{step:06d}"
    metrics = {"loss": rec["loss"], "final": last}
    state = {"step": step, "batches": position, "layout": layout_record(args, d.world),
             "metrics": metrics}
    checkpoint.save(folder, par.root, opt, sched, state, meta, PREFIX, write=d.main)
    if d.main and on_save:
        on_save(step, folder, metrics)


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
            # time blocked on the next micro-batches after the first step (start-up aside):
            # near 0 when the decoding workers keep ahead of the model
            "data_wait_share": sum(r["data_wait_s"] for r in history[1:]) / seconds,
            "seconds": seconds}
