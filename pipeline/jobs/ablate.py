"""`vilactl ablate --study data|freeze|sft-text --seeds N`: one of the paper's ablations in
miniature, each variant trained and evaluated once per seed.

The studies and their variants are in ablate_plans.py. Every variant of a seed gets the same
steps, the same starting checkpoint and the same evaluation (0-shot and 4-shot VQA, captioning
CIDEr, text-only accuracy, recorded in `evals` per checkpoint); a seed changes the blends'
draws and `train.seed`. The run's counts hold the study, every (variant, seed) row, and the
mean and sample standard deviation (ddof 1; 0 for one seed) per variant × column, which
`vilactl report` lays out as the paper's table. Whatever comes out is reported as it is: the
paper's orderings are hypotheses.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from vilactl.base.console import heading
from vilactl.base.errors import VilactlError
from vilactl.base.vocab import ABLATE_STUDIES
from vilactl.catalog import jobs
from vilactl.catalog.rows import dataset_shards, find_checkpoint
from vilactl.pipeline.jobs.ablate_plans import (
    DATA_BLENDS,
    FIRST_COLUMN,
    HEADS,
    KEYS,
    TITLES,
    Variant,
    cell,
    run_name,
    variants,
)
from vilactl.pipeline.jobs.blend import BlendRequest, blend
from vilactl.pipeline.jobs.demo_blends import DEMO_BLENDS
from vilactl.pipeline.jobs.eval import EvalRequest, evaluate
from vilactl.pipeline.jobs.train import TrainRequest, train


@dataclass
class AblateRequest:
    study: str = "data"
    seeds: int = 3
    seed: int = 0                      # the first seed; the others follow it
    pretrain_steps: int = 80
    sft_steps: int = 80
    projector_steps: int | None = None  # freeze: stage-0 steps (None: the config's)
    config: str | None = None
    eval_limit: int | None = None      # first N examples of each eval set (quick looks, tests)


def _image_budget(workspace: Path) -> int:
    """Images per data-study blend: what the smallest single-source blend can hold."""
    names = {d for w in DATA_BLENDS.values() for d in w}
    return min(dataset_shards(workspace, n, check=False)[0]["num_images"] for n in names)


def _start(workspace: Path, study: str) -> dict | None:
    """The demo checkpoint every variant starts from (data: projector, sft-text: pretrain;
    freeze trains its own projectors): the final one of the run named as the stage, else the
    newest of the stage not trained by an ablation; one line when the catalog has none."""
    stage = {"data": "projector", "sft-text": "pretrain"}.get(study)
    if stage is None:
        return None
    # the demo's run of that name first: the newest of the stage may be an ablation's own
    # (a freeze study's linear projector), which is no common start
    row = find_checkpoint(workspace, stage) or find_checkpoint(workspace, stage=stage)
    if row is not None and row["id"].startswith("ablate_"):
        row = None
    if row is None:
        raise VilactlError(f"ablate --study {study} starts every run from a {stage} checkpoint: "
                           f"run `vilactl demo` (or `vilactl train --stage {stage}`) first")
    return row


def ablate(workspace: Path, console: Console, req: AblateRequest) -> dict:
    if req.study not in ABLATE_STUDIES:
        raise VilactlError(f"--study must be one of {', '.join(ABLATE_STUDIES)}, "
                           f"got {req.study!r}")
    if req.seeds < 1:
        raise VilactlError(f"--seeds must be a positive integer, got {req.seeds}")
    start = _start(workspace, req.study)
    seeds = list(range(req.seed, req.seed + req.seeds))
    args = {"study": req.study, "seeds": seeds, "pretrain_steps": req.pretrain_steps,
            "sft_steps": req.sft_steps, "projector_steps": req.projector_steps,
            "config": req.config, "eval_limit": req.eval_limit, "start": start and start["id"]}
    if req.study == "data":
        args["images"] = _image_budget(workspace)
    with jobs.job(workspace, "vilactl ablate", args, target="ablate") as job:
        rows = []
        for seed in seeds:
            runner = _Seed(workspace, console, req, seed, start, args.get("images"))
            rows += [runner.variant(v) for v in variants(req.study)]
        job.counts.update(study=req.study, seeds=seeds, columns=KEYS, rows=rows,
                          summary=summarize(rows), seconds=round(sum(r["seconds"]
                                                                     for r in rows), 1))
    console.print(summary_table(req.study, job.counts["summary"]))
    console.print(f"ablation took {job.counts['seconds']:.0f} s (study {req.study}, "
                  f"{len(seeds)} seed(s))")
    return job.counts


class _Seed:
    """The runs of one seed: its blends (made once each) and, for freeze, its projectors."""

    def __init__(self, workspace: Path, console: Console, req: AblateRequest, seed: int,
                 start: dict | None, images: int | None):
        self.ws, self.console, self.req, self.seed = workspace, console, req, seed
        self.start, self.images, self.made = start, images, {}

    def _blend(self, part: str, spec: dict) -> str:
        name = run_name(self.req.study, part, self.seed)
        if name not in self.made:
            blend(self.ws, BlendRequest(seed=self.seed, name=name, replace=True, **spec),
                  quiet=True)
            self.made[name] = True
        return name

    def _train(self, stage: str, name: str, blend_name: str, init: str | None,
               steps: int | None, sets: tuple[str, ...]) -> str:
        train(self.ws, TrainRequest(stage, config=self.req.config, blend=blend_name,
                                    steps=steps, init=init, name=name, replace=True,
                                    replace_dependents=True,
                                    overrides=(f"train.seed={self.seed}", *sets)), self.console)
        return name

    def _projector(self, kind: str) -> str:
        """The stage-0 checkpoint of projector `kind` for this seed (trained once)."""
        name = run_name(self.req.study, f"{kind}", self.seed) + "-projector"
        if name not in self.made:
            pairs = self._blend("projector", DEMO_BLENDS["blend_projector"])
            self._train("projector", name, pairs, None, self.req.projector_steps,
                        (f"model.projector={kind}",))
            self.made[name] = True
        return name

    def variant(self, v: Variant) -> dict:
        t, req = time.monotonic(), self.req
        prefix = run_name(req.study, v.key, self.seed)
        heading(self.console, f"ablation {req.study}: {v.key}, seed {self.seed}")
        sets = (f"model.projector={v.projector}",) if v.projector else ()
        init = self.start and self.start["id"]
        if v.pretrain is not None:
            spec = dict(v.pretrain)
            if req.study == "data":      # one blend per variant, all of the same image count
                part, spec["images"] = v.key, self.images
            else:
                part = "pretrain"
            if v.projector:
                init = self._projector(v.projector)
            frozen = ("stages.pretrain.freeze_llm=true",) if v.freeze_llm else ()
            init = self._train("pretrain", f"{prefix}-pretrain", self._blend(part, spec), init,
                               req.pretrain_steps, sets + frozen)
        sft_part = f"sft_{v.key}" if req.study == "sft-text" else "sft"
        sft_blend = self._blend(sft_part, {"weights": v.sft})
        ck = self._train("sft", f"{prefix}-sft", sft_blend, init, req.sft_steps, sets)
        res = evaluate(self.ws, EvalRequest(checkpoint=ck, limit=req.eval_limit), self.console,
                       show_table=False)
        got = {f"{r['dataset']}:{r['metric']}:{r['shots']}": r["value"] for r in res}
        return {"variant": v.key, "seed": self.seed, **{k: got.get(k) for k in KEYS},
                "checkpoint": find_checkpoint(self.ws, ck)["id"],
                "seconds": round(time.monotonic() - t, 1)}


def summarize(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{variant: {column: {mean, std, n}}} over the seeds' values (None values left out); std
    is the sample standard deviation (ddof 1), 0 for a single seed."""
    out: dict[str, dict[str, dict]] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        out[variant] = {}
        for key in KEYS:
            vals = np.array([r[key] for r in rows if r["variant"] == variant
                             and r.get(key) is not None], dtype=float)
            n = len(vals)
            out[variant][key] = {
                "mean": float(vals.mean()) if n else None,
                "std": float(vals.std(ddof=1)) if n > 1 else (0.0 if n else None), "n": n}
    return out


def summary_table(study: str, summary: dict) -> Table:
    t = Table(title=f"ablation {study}: {TITLES[study]} — mean ± std over seeds")
    t.add_column(FIRST_COLUMN[study])
    for h in HEADS:
        t.add_column(h, justify="right")
    for variant, cols in summary.items():
        t.add_row(variant, *[cell(cols[k]) for k in KEYS])
    return t
