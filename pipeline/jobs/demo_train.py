"""The demo's training steps: the three stages of the VILA recipe on the demo blends, with the
debug config (train/configs/debug.yaml). The `tiny` size runs a few steps of each, for tests."""
from __future__ import annotations

from vilactl.pipeline.jobs.train import TrainRequest, train

TINY_STEPS = 6


def _stage(ctx, stage: str) -> dict:
    steps = TINY_STEPS if ctx.size == "tiny" else None
    # a demo step runs when it has not finished (or with --force): it (re)makes the demo's own
    # chain of checkpoints, the later stages and the eval after it
    s = train(ctx.workspace, TrainRequest(stage=stage, steps=steps, replace=True,
                                          replace_dependents=True), ctx.console)
    # the mean loss of the first and of the last 10% of steps (a single step's loss is noisy)
    return {"loss_first10%": round(s["first_loss"], 3), "loss_last10%": round(s["final_loss"], 3),
            "loss_drop": round(s["loss_drop"], 3), "tok_per_s": round(s["tokens_per_s"]),
            "padding": round(s["padding_share"], 4)}


def step_projector(ctx) -> dict:
    return _stage(ctx, "projector")


def step_pretrain(ctx) -> dict:
    return _stage(ctx, "pretrain")


def step_sft(ctx) -> dict:
    return _stage(ctx, "sft")


def step_eval(ctx) -> dict:

    from vilactl.pipeline.jobs.eval import EvalRequest, evaluate

    res = evaluate(ctx.workspace, EvalRequest(), ctx.console, show_table=False)
    pick = {("eval_vqa", "accuracy", 0): "vqa_0shot", ("eval_vqa", "accuracy", 4): "vqa_4shot",
            ("eval_vqa", "accuracy_blank_image", 0): "vqa_blank_image",
            ("eval_vqa", "majority_baseline", 0): "vqa_majority",
            ("eval_caption", "cider", 0): "cider_0shot", ("eval_text", "accuracy", 0): "text_0shot"}
    # and 0-shot VQA per question type: every type must be read from the image (the report has
    # each beside its blank-image and majority controls)
    pick.update({("eval_vqa", f"accuracy:{t}", 0): f"vqa_0shot_{t}"
                 for t in ("color", "shape", "position", "count")})
    return {pick[k]: round(r["value"], 3) for r in res
            if (k := (r["dataset"], r["metric"], r["shots"])) in pick}


def step_report(ctx) -> dict:
    from vilactl.pipeline.jobs.report import build

    path = build(ctx.workspace)
    ctx.console.print(f"  report: {path}")
    return {"report": str(path)}


def generate_hint(workspace) -> str | None:
    """The one `vilactl generate` line that asks the demo's SFT model about a world image (what
    `vilactl demo` prints last), or None before the SFT stage exists."""
    import shlex
    from pathlib import Path

    from vilactl.catalog.rows import find_checkpoint
    from vilactl.curation.images import open_image

    row = find_checkpoint(workspace, stage="sft")
    if row is None:
        return None
    for image in sorted((Path(workspace) / "world" / "images" / "coyo").glob("*.png")):
        try:
            open_image(image.read_bytes())
        except Exception:          # the world serves a few broken images on purpose
            continue
        ws = Path(workspace).resolve()
        return (f"vilactl --workspace {shlex.quote(str(ws))} generate --checkpoint "
                f"{shlex.quote(row['id'])} --image {shlex.quote(str(image.resolve()))} "
                f"--prompt {shlex.quote('How many shapes are in the image?')}")
    return None
