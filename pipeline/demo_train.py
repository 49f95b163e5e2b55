"""The demo's training steps: the three stages of the VILA recipe on the demo blends, with the
debug config (train/configs/debug.yaml). The `tiny` size runs a few steps of each, for tests."""
from __future__ import annotations

from vilactl.pipeline.train import TrainRequest, train

TINY_STEPS = 6


def _stage(ctx, stage: str) -> dict:
    steps = TINY_STEPS if ctx.size == "tiny" else None
    s = train(ctx.workspace, TrainRequest(stage=stage, steps=steps), ctx.console)
    return {"loss": f"{s['first_loss']:.3f}->{s['final_loss']:.3f}",
            "loss_drop": round(s["loss_drop"], 3), "tok_per_s": round(s["tokens_per_s"]),
            "padding": round(s["padding_share"], 4)}


def step_projector(ctx) -> dict:
    return _stage(ctx, "projector")


def step_pretrain(ctx) -> dict:
    return _stage(ctx, "pretrain")


def step_sft(ctx) -> dict:
    return _stage(ctx, "sft")
