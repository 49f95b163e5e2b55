"""`vilactl demo`: the whole pipeline on the embedded world, as a list of named steps.

Each step is recorded as a run (`vilactl demo:<step>`) with its counts; a rerun skips the steps
whose run finished with the same arguments, so an interrupted demo resumes where it stopped.
Later capabilities (download, score, curate, build, blend, train, eval) append steps here.
"""
from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind
from vilactl.catalog import db, jobs
from vilactl.catalog.rows import finished_run
from vilactl.curation.world import PRESETS, WorldConfig, generate
from vilactl.pipeline.jobs import register
from vilactl.pipeline.jobs.demo_blends import step_blends
from vilactl.pipeline.jobs.demo_train import (
    step_eval,
    step_pretrain,
    step_projector,
    step_report,
    step_sft,
)
from vilactl.pipeline.services.mirror import Mirror

# Demo datasets: catalog name → (world file key, kind).
SAMPLE_SETS = {
    "vqa": ("vqa", Kind.INSTRUCT_VQA),
    "caption_instruct": ("caption_instruct", Kind.INSTRUCT_CAPTION),
    "text_instruct": ("text_instruct", Kind.INSTRUCT_TEXT),
    "eval_vqa": ("eval_vqa", Kind.EVAL_VQA),
    "eval_caption": ("eval_caption", Kind.EVAL_CAPTION),
    "eval_text": ("eval_text", Kind.EVAL_TEXT),
}
COYO_META, MMC4_DOCS = "coyo_meta", "mmc4_docs"


@dataclass
class DemoContext:
    workspace: Path
    config: WorldConfig
    console: Console
    mirror: Mirror | None = None
    ray_address: str | None = None
    size: str = "demo"
    state: dict = field(default_factory=dict)

    @property
    def world(self) -> Path:
        return self.workspace / "world"


@dataclass
class Step:
    name: str
    run: Callable[[DemoContext], dict]
    resumable: bool = True  # False: runs every time (e.g. services)
    needs_ray: bool = False


def refuse_foreign(out: Path, flag: str) -> None:
    """A world folder is replaced whole: never replace something that is not a demo world."""
    if out.is_symlink() or out.is_file() or (out.is_dir() and any(out.iterdir())
                                             and not (out / "world.json").is_file()):
        raise VilactlError(f"{flag} {out}: exists and is not a demo world; give a new or empty "
                           "folder (a world folder is replaced)")


def step_world(ctx: DemoContext) -> dict:
    refuse_foreign(ctx.world, "world folder")
    with atomic.atomic_dir(ctx.world) as tmp:
        manifest = generate(tmp, ctx.config)
    return {name: c["samples"] for name, c in manifest["counts"].items()}


def step_mirror(ctx: DemoContext) -> dict:
    """Start the loopback mirror for the rest of the demo and check that it serves and faults."""
    ctx.mirror = Mirror(ctx.world, slow_s=2.0).start()
    manifest = json.loads((ctx.world / "world.json").read_text())
    import pyarrow.parquet as pq

    first = pq.read_table(ctx.world / manifest["files"]["coyo"][0], columns=["url"])
    url = next(u for u in first.column("url").to_pylist() if "/fault/" not in u)
    with urllib.request.urlopen(ctx.mirror.rewrite(url), timeout=5) as r:
        ok = r.status == 200 and r.read(8).startswith(b"\x89PNG")
    try:
        urllib.request.urlopen(ctx.mirror.url + "/fault/404/x.png", timeout=5)
        fault_ok = False
    except urllib.error.HTTPError as e:
        fault_ok = e.code == 404
    if not (ok and fault_ok):
        raise RuntimeError("loopback mirror did not serve the world as expected")
    ctx.console.print(f"  mirror serving {ctx.world} at {ctx.mirror.url}")
    return {"port": ctx.mirror.port, "image_ok": ok, "fault_ok": fault_ok}


def step_register_coyo(ctx: DemoContext) -> dict:
    ds = register.register_coyo(ctx.workspace, str(ctx.world / "coyo" / "*.parquet"), COYO_META,
                                replace=True, quiet=True)
    return {"samples": ds.num_samples}


def step_register_mmc4(ctx: DemoContext) -> dict:
    ds = register.register_mmc4(ctx.workspace, str(ctx.world / "mmc4" / "*.jsonl.zip"),
                                MMC4_DOCS, replace=True, quiet=True)
    return {"samples": ds.num_samples, "images": ds.num_images}


def step_register_sets(ctx: DemoContext) -> dict:
    counts = {}
    for name, (key, kind) in SAMPLE_SETS.items():
        pattern = str(ctx.world / "instruct" / f"{key}.parquet")
        ds = register.register_samples(ctx.workspace, pattern, name, replace=True, quiet=True,
                                       kind=kind)
        counts[name] = ds.num_samples
    return counts


def _download(ctx: DemoContext, kind: str, source: str, name: str) -> dict:
    from vilactl.curation.fetch import FetchOptions
    from vilactl.pipeline.jobs.download import DownloadRequest, download

    # The world's URLs point at mirror.vilactl.test; fetch them from the loopback mirror, whose
    # slow URLs (2 s) outlast the 1 s timeout.
    opts = FetchOptions(image_size=ctx.config.image_size, timeout=1.0, threads=32,
                        allow_private_network=True,
                        url_map=((ctx.config.base_url, ctx.mirror.url),))
    req = DownloadRequest(kind=kind, name=name, from_dataset=source, opts=opts,
                          shard_size=500 if kind == "coyo" else 100)
    ds = download(ctx.workspace, req, ctx.ray_address, ctx.console, quiet=False)
    return {"samples": ds.num_samples, "images": ds.num_images}


def step_download_coyo(ctx: DemoContext) -> dict:
    return _download(ctx, "coyo", COYO_META, "coyo")


def step_download_mmc4(ctx: DemoContext) -> dict:
    return _download(ctx, "mmc4", MMC4_DOCS, "mmc4")


def clip_dir(ctx: DemoContext) -> Path:
    """Absolute: the catalog's checkpoint path must work from any working directory."""
    return (ctx.workspace / "models" / "demo-clip").resolve()


def step_train_clip(ctx: DemoContext) -> dict:
    from vilactl.base.progress import Phase
    from vilactl.catalog.rows import record_checkpoint
    from vilactl.curation.demo_clip import train_demo_clip

    steps, pairs, batch = (200, 16000, 256) if ctx.size == "demo" else (120, 4000, 128)
    args = {"seed": ctx.config.seed, "steps": steps, "pairs": pairs, "batch_size": batch}
    with jobs.job(ctx.workspace, "vilactl demo-clip", args,
                  target="checkpoints/demo-clip") as job, \
            Phase(ctx.console, "demo CLIP", steps, "steps") as bar:
        meta = train_demo_clip(clip_dir(ctx), seed=ctx.config.seed, steps=steps, pairs=pairs,
                               batch_size=batch,
                               progress=lambda s, loss: bar.update(s, status=f"loss {loss:.3f}"))
        job.counts.update(steps=steps, final_loss=meta["final_loss"])
        job.commit(lambda con: record_checkpoint(
            con, "demo-clip", "clip", job.run.id, meta["weights"], steps,
            {"final_loss": meta["final_loss"], "weights_sha256": meta["weights_sha256"]}))
    return dict(job.counts)


def step_score_coyo(ctx: DemoContext) -> dict:
    from vilactl.curation.clip_scorer import DEMO_CLIP, ScorerSpec
    from vilactl.curation.demo_clip import WEIGHTS_FILE
    from vilactl.pipeline.jobs.score import ScoreRequest, score

    spec = ScorerSpec(DEMO_CLIP, str(clip_dir(ctx) / WEIGHTS_FILE))
    ds = score(ctx.workspace, ScoreRequest("coyo", spec, replace=True), ctx.ray_address,
               ctx.console)
    return {"scored": ds.num_samples}


def step_curate_coyo(ctx: DemoContext) -> dict:
    from vilactl.catalog.rows import dataset_shards
    from vilactl.pipeline.jobs.curate import CurateRequest, curate

    n = dataset_shards(ctx.workspace, "coyo", check=False)[0]["num_samples"]
    # Keep the best half of the downloaded pairs (the world corrupts 30% of captions).
    req = CurateRequest(top_k=max(1, n // 2), dataset="coyo", dedup=["url"],
                        name="coyo_curated", replace=True)
    ds = curate(ctx.workspace, req, ctx.ray_address, ctx.console)
    return {"selected": ds.num_samples, "of": n}


def step_build_mmc4(ctx: DemoContext) -> dict:
    from vilactl.curation.mmc4_variants import VARIANTS
    from vilactl.pipeline.jobs.build import BuildRequest, build_variant

    counts = {}
    for variant in VARIANTS:
        ds = build_variant(ctx.workspace, BuildRequest(variant, seed=ctx.config.seed,
                                                       replace=True), ctx.ray_address)
        counts[variant] = ds.num_samples
    return counts


STEPS: list[Step] = [
    Step("world", step_world),
    Step("mirror", step_mirror, resumable=False),
    Step("register-coyo", step_register_coyo),
    Step("register-mmc4", step_register_mmc4),
    Step("register-sets", step_register_sets),
    Step("download-coyo", step_download_coyo, needs_ray=True),
    Step("download-mmc4", step_download_mmc4, needs_ray=True),
    Step("train-clip", step_train_clip),
    Step("score-coyo", step_score_coyo, needs_ray=True),
    Step("curate-coyo", step_curate_coyo, needs_ray=True),
    Step("build-mmc4", step_build_mmc4, needs_ray=True),
    Step("blends", step_blends),
    Step("train-projector", step_projector),
    Step("train-pretrain", step_pretrain),
    Step("train-sft", step_sft),
    Step("eval", step_eval),
    Step("report", step_report, resumable=False),
]


def _is_done(ctx: DemoContext, step: Step, args: dict) -> bool:
    if not step.resumable or not (ctx.world / "world.json").exists():
        return False
    with db.reader(ctx.workspace) as con:
        return finished_run(con, f"vilactl demo:{step.name}", args) is not None


def run_demo(workspace: Path, seed: int, size: str, force: bool, console: Console,
             ray_address: str | None = None, until: str | None = None) -> dict:
    """Run every step (skipping finished ones unless `force`) up to `until`; returns counts
    per step."""
    from vilactl.pipeline.services.ray_runtime import ray_session

    names = [s.name for s in STEPS]
    if until is not None and until not in names:
        raise VilactlError(f"--until must be a demo step: {', '.join(names)}")
    steps = STEPS[:names.index(until) + 1] if until else STEPS

    db.init(workspace)
    ctx = DemoContext(workspace, _config(seed, size), console, ray_address=ray_address,
                      size=size)
    args = {"seed": seed, "size": size}
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: ctx.mirror and ctx.mirror.stop())
        ray_started = False
        for step in steps:
            if not force and _is_done(ctx, step, args):
                console.print(f"[dim]✓ {step.name} (done earlier, skipped)[/dim]")
                continue
            if step.needs_ray and not ray_started:  # one Ray for all the steps that need it
                stack.enter_context(ray_session(ray_address))
                ray_started = True
            results[step.name] = _run_step(ctx, step, args)
    return results


def _run_step(ctx: DemoContext, step: Step, args: dict) -> dict:
    t0 = time.monotonic()
    with jobs.job(ctx.workspace, f"vilactl demo:{step.name}", args,
                  target=f"demo/{step.name}") as job, \
            contextlib.nullcontext() if step.needs_ray else ctx.console.status(f"{step.name} …"):
        job.counts.update(step.run(ctx))
    ctx.console.print(f"[green]✓[/green] {step.name} [dim]({time.monotonic() - t0:.1f} s)[/dim] "
                      + ", ".join(f"{k}={v}" for k, v in job.counts.items()))
    return job.counts


def _config(seed: int, size: str) -> WorldConfig:
    from dataclasses import replace

    if size not in PRESETS:
        raise VilactlError(f"unknown demo size {size!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[size], seed=seed)
