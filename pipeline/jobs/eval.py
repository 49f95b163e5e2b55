"""`vilactl eval --checkpoint REF`: a trained VLM on held-out sets, results into the catalog.

Loads the checkpoint with the model config saved beside it, then for each dataset (default: the
demo's eval_vqa, eval_caption, eval_text; any training-sample-schema dataset works) runs
0-shot and k-shot evaluation (train/evaluate.py). VQA is scored twice: `accuracy` (exact match
after lower-casing) and `vqa_accuracy` (the VQAv2 metric), and gets the two controls that show the
model reads the image: the same model given a blank grey image, and the image-blind majority
answer per question type (from the training VQA set). Every number lands in `evals`;
predictions go to <workspace>/evals/<checkpoint>/<dataset>-<shots>shot.json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.paths import contained
from vilactl.base.progress import Phase
from vilactl.catalog import jobs
from vilactl.catalog.rows import dataset_shards, record_evals
from vilactl.curation.hf_layout import plain_samples
from vilactl.pipeline.jobs import checkpoints
from vilactl.train.evaluate import Evaluator, items, majority_baseline, qa_turns, task_of

DEMO_EVAL = ("eval_vqa", "eval_caption", "eval_text")


@dataclass
class EvalRequest:
    checkpoint: str | None = None      # id, run/stage name, folder; None: the newest SFT one
    shots: list[int] = field(default_factory=lambda: [0, 4])
    datasets: list[str] = field(default_factory=lambda: list(DEMO_EVAL))
    baseline: str | None = "vqa"       # training VQA set for the majority-answer baseline
    limit: int | None = None           # first N examples of each set (quick looks)


def _rows(workspace: Path, name: str, limit: int | None) -> list[dict]:
    _, paths = dataset_shards(workspace, name)
    # any sample dataset, a blend (HF `Image` structs) included: images as bytes either way
    rows = (pa.concat_tables(plain_samples(pq.read_table(p)) for p in paths).to_pylist()
            if paths else [])
    return rows[:limit] if limit else rows


def evaluate(workspace: Path, req: EvalRequest, console: Console,
             show_table: bool = True) -> list[dict]:
    """Every set × shot count of `req`, recorded in `evals`; progress on `console` and, with
    `show_table`, the results table (the demo and ablate print their own summaries)."""
    if any(k < 0 for k in req.shots):
        raise VilactlError(f"--shots must be ≥ 0, got {req.shots}")
    row, folder, model, tok, _ = checkpoints.load(workspace, req.checkpoint)
    if row is None:
        raise VilactlError(f"checkpoint {folder} is not in the catalog: eval records its results "
                           "by catalog checkpoint id")
    ev = Evaluator(model, tok, model.vision.preprocess)
    ck, results = row["id"], []
    out = contained(workspace, Path(workspace) / "evals" / ck.replace("@", "-"))
    with jobs.job(workspace, "vilactl eval", {"checkpoint": ck, "shots": req.shots,
                                              "datasets": req.datasets},
                  target=f"evals/{ck}") as job:
        predictions: dict[str, str] = {}      # written once every set is evaluated
        sets = {name: _items(workspace, name, req) for name in req.datasets}
        passes = sum(len(req.shots) + (task_of(its) == "vqa") for its in sets.values())
        with Phase(console, "eval", passes, "passes") as progress:
            for name, its in sets.items():
                results += _dataset(workspace, ev, name, its, ck, predictions, req, progress)
        for file, text in predictions.items():
            atomic.write_text(out / file, text)
        job.counts.update({f"{r['dataset']}:{r['metric']}:{r['shots']}": r["value"]
                           for r in results})
        job.commit(lambda con: record_evals(con, results, job.run.id))
    if show_table:
        console.print(table(results, ck))
    return results


def _items(workspace: Path, name: str, req: EvalRequest) -> list:
    its = items(_rows(workspace, name, req.limit))
    if not its:
        raise VilactlError(f"dataset {name!r} has no samples ending in an answer")
    return its


def _dataset(workspace: Path, ev: Evaluator, name: str, its: list, ck: str,
             predictions: dict[str, str], req: EvalRequest, progress: Phase) -> list[dict]:
    """Every shot count of one eval set (and the VQA controls); its predictions (JSON, by
    file name) added to `predictions`; one `progress` step per pass over the set."""
    task, results = task_of(its), []
    base = {"checkpoint": ck, "dataset": name, "task": task, "n": len(its)}
    for k in req.shots:
        r = ev.run(its, task, k)
        progress.advance(status=f"{name} {k}-shot {r['metric']} {r['value']:.3f}")
        results.append({**base, "shots": k, "metric": r["metric"], "value": r["value"]})
        for metric, m in [(r["metric"], r), *r.get("also", {}).items()]:
            if metric != r["metric"]:
                results.append({**base, "shots": k, "metric": metric, "value": m["value"]})
            results += [{**base, "shots": k, "metric": f"{metric}:{kind}", "value": v}
                        for kind, v in m["by_kind"].items()]
        predictions[f"{name}-{k}shot.json"] = json.dumps(
            [{"sample_id": it.sample_id, "kind": it.kind, "answer": it.answer,
              "prediction": p} for it, p in zip(its, r["predictions"])], indent=1)
    if task == "vqa":
        results += _controls(workspace, ev, its, base, req)
        progress.advance(status=f"{name} blank-image control")
    return results


def _controls(workspace: Path, ev: Evaluator, its, base: dict, req: EvalRequest) -> list[dict]:
    blank = ev.run(its, "vqa", 0, blank=True)
    out = [{**base, "shots": 0, "metric": "accuracy_blank_image", "value": blank["value"]}]
    out += [{**base, "shots": 0, "metric": f"accuracy_blank_image:{k}", "value": v}
            for k, v in blank["by_kind"].items()]
    if req.baseline:
        try:
            train = qa_turns(_rows(workspace, req.baseline, None), its)
        except VilactlError:
            return out          # no training set to take majorities from
        maj = majority_baseline(train, its)
        out.append({**base, "shots": 0, "metric": "majority_baseline", "value": maj["value"]})
        out += [{**base, "shots": 0, "metric": f"majority_baseline:{k}", "value": v}
                for k, v in maj["by_kind"].items()]
    return out


def table(results: list[dict], checkpoint_id: str) -> Table:
    t = Table(title=f"eval of {checkpoint_id}")
    for c in ("dataset", "task", "metric", "shots", "value", "n"):
        t.add_column(c, justify="right" if c in ("shots", "value", "n") else "left")
    for r in results:
        t.add_row(r["dataset"], r["task"], r["metric"], str(r["shots"]), f"{r['value']:.3f}",
                  str(r["n"]))
    return t
