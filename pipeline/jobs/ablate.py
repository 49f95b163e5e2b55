"""`vilactl ablate`: the paper's pretraining-data ablation (VILA Table 3) in miniature.

Pretrain on COYO pairs, MMC4-pairs, interleaved MMC4, and MMC4 + COYO — each blend holding the
same number of images, each run starting from the same projector checkpoint with the same
steps — then the identical joint SFT, then the same evaluation: 0-shot and k-shot VQA,
captioning CIDEr, text-only accuracy. The table is printed and recorded (the evals table, and
the run's counts). Whatever comes out is reported as it is: the paper's ordering is a hypothesis.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vilactl.base.console import heading
from vilactl.base.errors import VilactlError
from vilactl.catalog import jobs
from vilactl.catalog.rows import dataset_shards, find_checkpoint
from vilactl.pipeline.jobs.blend import BlendRequest, blend
from vilactl.pipeline.jobs.eval import EvalRequest, evaluate
from vilactl.pipeline.jobs.train import TrainRequest, train

ABLATIONS: dict[str, dict[str, float]] = {
    "coyo": {"coyo_curated": 1.0},
    "mmc4-pairs": {"mmc4_pairs": 1.0},
    "mmc4": {"mmc4_interleaved": 1.0},
    "mmc4+coyo": {"mmc4_interleaved": 0.5, "coyo_curated": 0.5},
}
COLUMNS = [("eval_vqa", "accuracy", 0), ("eval_vqa", "accuracy", 4),
           ("eval_caption", "cider", 0), ("eval_caption", "cider", 4),
           ("eval_text", "accuracy", 0)]


def _image_budget(workspace: Path) -> int:
    """Images per blend: what the smallest single-source ablation can hold."""
    sizes = {}
    for name in {d for w in ABLATIONS.values() for d in w}:
        sizes[name] = dataset_shards(workspace, name, check=False)[0]["num_images"]
    return min(sizes.values())


def ablate(workspace: Path, console: Console, pretrain_steps: int = 80, sft_steps: int = 80,
           config: str | None = None, seed: int = 0) -> list[dict]:
    projector = find_checkpoint(workspace, stage="projector")
    if projector is None:
        raise VilactlError("ablate starts every run from a projector checkpoint: run "
                           "`vilactl demo` (or `vilactl train --stage projector`) first")
    images = _image_budget(workspace)
    args = {"pretrain_steps": pretrain_steps, "sft_steps": sft_steps, "images": images,
            "projector": projector["id"], "seed": seed}
    with jobs.job(workspace, "vilactl ablate", args, target="ablate") as job:
        rows = _runs(workspace, console, images, projector["id"], pretrain_steps, sft_steps,
                     config, seed)
        job.counts.update(rows=rows, seconds=sum(r["seconds"] for r in rows))
    console.print(ablation_table(rows))
    console.print(f"ablation took {job.counts['seconds']:.0f} s")
    return rows


def _runs(workspace: Path, console: Console, images: int, projector: str, pretrain_steps: int,
          sft_steps: int, config: str | None, seed: int) -> list[dict]:
    rows = []
    for key, weights in ABLATIONS.items():
        t = time.monotonic()
        name = "ablate_" + key.replace("+", "_").replace("-", "_")
        blend(workspace, BlendRequest(weights=weights, images=images, seed=seed, name=name,
                                      coyo_group=4, replace=True), quiet=True)
        heading(console, f"ablation {key}: {images} images")
        train(workspace, TrainRequest("pretrain", config=config, blend=name,
                                      steps=pretrain_steps, init=projector,
                                      name=f"{name}-pretrain", replace=True,
                                      replace_dependents=True), console)
        train(workspace, TrainRequest("sft", config=config, steps=sft_steps,
                                      init=f"{name}-pretrain", name=f"{name}-sft",
                                      replace=True, replace_dependents=True), console)
        res = evaluate(workspace, EvalRequest(checkpoint=f"{name}-sft"), console,
                       show_table=False)
        got = {(r["dataset"], r["metric"], r["shots"]): r["value"] for r in res}
        rows.append({"pretraining": key, **{f"{d}:{m}:{k}": got.get((d, m, k))
                                            for d, m, k in COLUMNS},
                     "seconds": round(time.monotonic() - t, 1)})
    return rows


def ablation_table(rows: list[dict]) -> Table:
    t = Table(title="pretraining data ablation (same images, same steps, same SFT)")
    t.add_column("pretraining data")
    heads = ["VQA 0-shot", "VQA 4-shot", "CIDEr 0-shot", "CIDEr 4-shot", "text 0-shot"]
    for h in heads:
        t.add_column(h, justify="right")
    t.add_column("s", justify="right")
    for r in rows:
        t.add_row(r["pretraining"], *[f"{r[f'{d}:{m}:{k}']:.3f}" for d, m, k in COLUMNS],
                  str(r["seconds"]))
    return t
