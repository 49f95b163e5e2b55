"""`vilactl eval`: the command-line face of pipeline/jobs/eval.py."""
from __future__ import annotations

from pathlib import Path

import typer

from vilactl.base.errors import VilactlError
from vilactl.base.ranges import check_range
from vilactl.pipeline.cli.context import COUNT


def eval_cmd(
    checkpoint: str | None = typer.Option(None, help="Catalog checkpoint id (sft@120) or run "
                                                     "name (its final one); default: the "
                                                     "newest SFT checkpoint."),
    shots: str = typer.Option("0,4", help="Comma-separated shot counts (k-shot prompts "
                                          "interleave k image+answer demonstrations)."),
    dataset: list[str] = typer.Option([], "--dataset", help="Held-out dataset(s) in the "
                                                            "training-sample schema (default: "
                                                            "eval_vqa, eval_caption, eval_text)."),
    limit: int | None = typer.Option(None, callback=COUNT,
                                     help="Only the first N examples of each set "
                                          "(default: all)."),
) -> None:
    """Evaluate a checkpoint: VQA exact match (with blank-image and majority-answer
    controls), captioning CIDEr, text-only accuracy; results into the catalog's evals."""
    from vilactl.pipeline.cli.context import console, state
    from vilactl.pipeline.jobs.eval import DEMO_EVAL, EvalRequest, evaluate

    try:
        ks = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError as e:
        raise VilactlError(f"--shots takes numbers like 0,4, got {shots!r}") from e
    for k in ks:
        check_range(k, "--shots", 0)
    req = EvalRequest(checkpoint=checkpoint, shots=ks, datasets=dataset or list(DEMO_EVAL),
                      limit=limit)
    evaluate(Path(state.workspace), req, console)
