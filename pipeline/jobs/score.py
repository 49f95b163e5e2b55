"""`vilactl score DATASET`: CLIP image–text scores on Ray Data, resumable per shard.

Ray Data reads the downloaded shards in small blocks and scores them in an actor pool. On a GPU
node, one actor per GPU, fed by a pool of CPU actors that decode, preprocess and tokenise. On a
CPU node, actors of up to 8 torch threads that decode their own batches (see _actors; actors
take fractional CPUs — whole CPUs have deadlocked a 2-CPU Ray). The model's preprocessing is cut
where it leaves PIL (clip_scorer.SplitPreprocess): uint8 pixels travel, ToTensor + Normalize run
per batch. The driver streams the scores back and writes one score file per input shard
(`part-<shard>.parquet`, curation/score_files.py layout: key, id, score, model, weights_sha256)
atomically as soon as the shard is complete, so a rerun skips finished shards.
"""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.base.paths import check_name, contained
from vilactl.base.progress import Phase
from vilactl.catalog import jobs
from vilactl.catalog.rows import Dataset, dataset_shards, resolve
from vilactl.curation.clip_scorer import ClipScorer, ScorerSpec
from vilactl.curation.images import open_image
from vilactl.curation.score_files import write_score_file
from vilactl.pipeline.services.ray_runtime import ray_session

SCORABLE = {Kind.COYO_IMAGES}
SCORES_SCHEMA = pa.schema([("key", pa.string()), ("id", pa.int64()), ("score", pa.float32()),
                           ("model", pa.string()), ("weights_sha256", pa.string())])


@dataclass
class ScoreRequest:
    dataset: str
    spec: ScorerSpec
    name: str | None = None
    batch_size: int = 256
    replace: bool = False

    @property
    def out_name(self) -> str:
        return self.name or f"{self.dataset}_scores"


def _source(workspace: Path, req: ScoreRequest) -> list[Path]:
    import pyarrow.parquet as pq

    row, found = dataset_shards(workspace, req.dataset)
    paths = [Path(p) for p in found]
    if row["kind"] not in SCORABLE or row["format"] != "parquet":
        raise VilactlError(f"dataset {req.dataset!r} ({row['kind']}, {row['format']}) has no "
                           "images to score; download it first (vilactl download coyo "
                           f"--from-dataset {req.dataset})")
    for p in paths[:1]:
        missing = {"key", "id", "image", "text"} - set(pq.read_schema(p).names)
        if missing:
            raise VilactlError(f"{p}: no column {', '.join(sorted(missing))}: not COYO pairs "
                               "with images")
    return paths


def out_path(out: Path, shard: Path) -> Path:
    return out / f"part-{shard.stem.removeprefix('part-')}.parquet"


class _Preprocess:
    """Ray Data actor: decode image bytes, run the model's per-image preprocessing, tokenise the
    captions — everything but the forward pass, off the scoring actor's critical path."""

    def __init__(self, spec: ScorerSpec, preprocess):
        import open_clip

        from vilactl.curation.clip_scorer import SplitPreprocess, ensure_model_config

        ensure_model_config(spec.model)
        self.tokenizer = open_clip.get_tokenizer(spec.model)
        self.preprocess = preprocess
        # uint8 after the PIL stage where the transform allows it (ToTensor + Normalize then run
        # once per batch in the scoring actor), the full float32 transform otherwise.
        self.split = SplitPreprocess.split(preprocess)
        # What an undecodable image scores on (then NaN): the model's input shape even when a
        # whole batch is undecodable, e.g. a last batch of one broken image.
        self.blank = np.zeros_like(self._pixels(_blank_image()))

    def _pixels(self, image):
        return self.split.pil(image) if self.split else self.preprocess(image).numpy()

    def _one(self, data: bytes):
        return self._pixels(open_image(data))

    def __call__(self, batch: dict) -> dict:
        pixels, ok = [], []
        for data in batch["image"]:
            try:
                pixels.append(self._one(data))
                ok.append(True)
            except Exception:  # noqa: BLE001 — an undecodable image gets a NaN score, counted
                pixels.append(None)
                ok.append(False)
        tokens = self.tokenizer([str(t) for t in batch["text"]]).numpy()
        return {"key": batch["key"], "id": batch["id"], "path": batch["path"], "tokens": tokens,
                "pixels": np.stack([self.blank if p is None else p for p in pixels]),
                "ok": np.array(ok)}


def _blank_image():
    from PIL import Image

    return Image.new("RGB", (32, 32))


class _ScoreActor:
    """Ray Data actor: the forward pass. With `decode`, it also preprocesses its own batches
    (CPU nodes: the cores run the forward anyway, and shipping pixels between processes costs
    more than it saves); without, it takes _Preprocess output (GPU: CPUs decode, GPU scores)."""

    def __init__(self, spec: ScorerSpec, threads: int, decode: bool):
        import torch

        self.scorer = ClipScorer(spec)
        self.decoder = _Preprocess(spec, self.scorer.preprocess) if decode else None
        if self.scorer.device == "cpu":
            torch.set_num_threads(threads)  # see _actors: one thread per actor, one per core

    def __call__(self, batch: dict) -> dict:
        if self.decoder:
            batch = self.decoder(batch)
        pixels = batch["pixels"]
        if pixels.dtype == np.uint8:  # the split preprocessing: normalise the whole batch here
            pixels = self.scorer.split.tensor(pixels, self.scorer.device)
        scores = self.scorer.score_tokens(pixels, batch["tokens"])
        scores = np.where(batch["ok"], scores, np.nan).astype(np.float32)
        return {"key": batch["key"], "id": batch["id"], "path": batch["path"], "score": scores}


def _expected_rows(paths: list[Path]) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {str(p): pq.ParquetFile(p).metadata.num_rows for p in paths}


def _stream_scores(paths: list[Path], out: Path, spec: ScorerSpec, preprocess, info: dict,
                   batch_size: int, device: str, progress: Phase) -> dict:
    import logging

    import ray.data
    from ray.data import ActorPoolStrategy

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own bar; no operator lines
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    expected = _expected_rows(paths)
    # Blocks of about one batch, not Ray's 128 MiB: every actor gets work at once (1,500 small
    # images were one block, and one actor scored them all), and scoring starts after the first
    # batch is read, not after the first 128 MiB.
    per_row = sum(p.stat().st_size for p in paths) / max(1, sum(expected.values()))
    ctx.target_max_block_size = int(min(64 << 20, max(64 << 10, batch_size * per_row)))
    gpu = device == "cuda"
    actors, threads = _actors(gpu)
    ds = ray.data.read_parquet([str(p) for p in paths], columns=["key", "id", "image", "text"],
                               include_paths=True, num_cpus=0.25)
    # Fractional CPUs are scheduling tokens only (threads are set in the actors): whole CPUs
    # left Ray's file-listing task without a slot on a 2-CPU node, and it deadlocked.
    if gpu:  # CPU actors decode in parallel and feed the GPU (each uses one core whatever its
        # token; half a CPU each leaves slots for Ray's own tasks, as above)
        with _no_restart_warning():
            ds = ds.map_batches(_Preprocess, fn_constructor_args=(spec, preprocess),
                                batch_size=batch_size, num_cpus=0.5, batch_format="numpy",
                                compute=ActorPoolStrategy(min_size=1, max_size=_decoders()),
                                max_restarts=0)
    with _no_restart_warning():
        ds = ds.map_batches(_ScoreActor, fn_constructor_args=(spec, threads, not gpu),
                            batch_size=batch_size, compute=ActorPoolStrategy(size=actors),
                            num_cpus=1 if gpu else 0.25, num_gpus=1 if gpu else 0,
                            batch_format="numpy", max_restarts=0)
    pending: dict[str, list[dict]] = defaultdict(list)
    counts = {"scored": 0, "undecodable": 0, "shards_written": 0}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        progress.advance(0, rows=len(batch["key"]))
        for path in np.unique(batch["path"]):
            sel = batch["path"] == path
            pending[path].append({k: batch[k][sel] for k in ("key", "id", "score")})
            if sum(len(b["key"]) for b in pending[path]) == expected[_norm(path, expected)]:
                _write_shard(out, Path(_norm(path, expected)), pending.pop(path), info, counts)
                progress.advance()
    if pending:
        raise RuntimeError(f"scores incomplete for {len(pending)} shard(s)")
    return counts


@contextlib.contextmanager
def _no_restart_warning():
    """Scoring actors are not restarted (max_restarts=0): a crash fails the command, and its
    rerun resumes from the score files already written. With restarts on, Ray logs at every
    actor that a restart could lose the constructor arguments Ray Data keeps in the object
    store. Ray 2.60 deprecates passing actor options as extra keyword arguments, with no named
    replacement for max_restarts yet: that warning is silenced here, and only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        yield


def _decoders() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)


def _actors(gpu: bool) -> tuple[int, int]:
    """(scoring actors, torch threads each): one actor per GPU; on CPUs, actors of up to 8
    threads (intra-op scaling flattens past that), so one actor on this 2-core machine. Two
    1-thread actors were measured too: ViT-B-32 then ran at 0.80x the 2-thread forward instead
    of ~0.9x, and the demo CLIP gained nothing once decoding shared the cores."""
    import ray

    if gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 1))), 1
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    threads = min(cpus, 8)
    return max(1, cpus // threads), threads


def _norm(path: str, expected: dict[str, int]) -> str:
    """Ray Data may report paths without the leading slash; map back to our spelling."""
    if path in expected:
        return path
    return next(p for p in expected if p.endswith(path.lstrip("/")))


def _write_shard(out: Path, shard: Path, parts: list[dict], info: dict, counts: dict) -> None:
    keys = np.concatenate([p["key"] for p in parts]).astype(str)
    scores = np.concatenate([p["score"] for p in parts])
    n = len(keys)
    table = pa.table({"key": keys, "id": np.concatenate([p["id"] for p in parts]),
                      "score": scores.astype(np.float32),
                      "model": pa.array([info["model"]] * n),
                      "weights_sha256": pa.array([info["weights_sha256"]] * n)},
                     schema=SCORES_SCHEMA)
    # Sorted best first (score desc, id asc: independent of Ray's order), NaN stored as null.
    write_score_file(out_path(out, shard), table)
    counts["scored"] += int(np.isfinite(scores).sum())
    counts["undecodable"] += int((~np.isfinite(scores)).sum())
    counts["shards_written"] += 1


def score(workspace: Path, req: ScoreRequest, ray_address: str | None, console,
          quiet: bool = False) -> Dataset:
    check_name(req.out_name)
    if req.batch_size <= 0:
        raise VilactlError(f"--batch-size must be positive, got {req.batch_size}")
    paths = _source(workspace, req)
    scorer = ClipScorer(req.spec)  # validates model and weights before any work
    info = req.spec.describe(scorer.model, scorer.preprocess, scorer.device)
    args = {"dataset": req.dataset, "model": req.spec.model, "pretrained": req.spec.pretrained,
            "name": req.out_name}
    # Score files are written in place shard by shard so that a rerun resumes; the job holds
    # the output's lock and records the run.
    with jobs.dataset_job(workspace, f"vilactl score {req.dataset} --model {req.spec.model}",
                          args, req.out_name, Kind.CLIP_SCORES, req.replace,
                          fresh=False) as job:
        out = job.folder
        _prepare(workspace, out, {"dataset": req.dataset,
                                  "shards": [resolve(p) for p in paths], **info}, req)
        todo = [p for p in paths if not out_path(out, p).exists()]
        t0 = time.monotonic()
        counts = {"scored": 0, "undecodable": 0, "shards_written": 0}
        if todo:
            if not quiet:
                console.print(f"scoring {len(todo)} of {len(paths)} shard(s) with "
                              f"{req.spec.model} on {scorer.device}")
            with ray_session(ray_address), \
                    Phase(console, "score", len(todo), "shards", quiet=quiet) as bar:
                counts = _stream_scores(todo, out, req.spec, scorer.preprocess, info,
                                        req.batch_size, scorer.device, bar)
        return _dataset(job, req, paths, info, counts, time.monotonic() - t0)


def _prepare(workspace: Path, out: Path, identity: dict, req: ScoreRequest) -> None:
    """Resume only scores of the same model, weights and input; --replace starts over."""
    marker = out / "score.json"
    if out.is_dir() and any(out.iterdir()) and not marker.exists():
        raise VilactlError(f"dataset {req.out_name!r} was not made by `vilactl score` ({out}); "
                           "choose another --name")
    if req.replace:                       # recompute every shard
        for f in out.glob("part-*.parquet"):
            atomic.remove(contained(workspace, f))
    elif marker.exists() and json.loads(marker.read_text()) != identity:
        raise VilactlError(f"{req.out_name!r} holds scores from another model or input "
                           f"({marker}); pass --replace or choose --name")
    atomic.write_text(marker, json.dumps(identity, indent=1, sort_keys=True))


def _dataset(job: jobs.Job, req: ScoreRequest, paths: list[Path], info: dict, counts: dict,
             seconds: float) -> Dataset:
    import pyarrow.parquet as pq

    shards, total, nan = [], 0, 0
    for p in paths:
        f = out_path(job.folder, p)
        col = pq.read_table(f, columns=["score"]).column("score")
        n = len(col)
        bad = col.null_count + int(pc.sum(pc.invert(pc.is_finite(col))).as_py() or 0)
        total, nan = total + n, nan + bad
        shards.append(job.shard(f, n, source=resolve(p),
                                counts={"scored": n - bad, "undecodable": bad}))
    ds = Dataset(name=req.out_name, kind=Kind.CLIP_SCORES, format="parquet",
                 uri=resolve(job.folder), num_samples=total, num_images=0, num_texts=0,
                 num_bytes=sum(s.bytes for s in shards), parents=[req.dataset],
                 params=dict(info))
    job.counts.update({**counts, "rows": total, "undecodable_total": nan,
                       "seconds": round(seconds, 2),
                       "pairs_per_s": round(counts["scored"] / seconds, 1) if seconds else None})
    job.dataset(ds, shards)
    return ds
