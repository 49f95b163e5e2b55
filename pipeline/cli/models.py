"""`vilactl export` and `vilactl generate`: the command-line faces of pipeline/jobs/export.py
and pipeline/jobs/generate.py — models out of vilactl."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from vilactl.pipeline.cli.context import COUNT, SEED, in_range

CKPT_HELP = ("Checkpoint: a catalog id (sft@120), a run or stage name (its newest final "
             "checkpoint) or a checkpoint folder; default: the newest SFT checkpoint.")


def export(
    out: str = typer.Option(..., "--out", help="Folder to write (new or empty; inside the "
                                               "workspace only under exports/)."),
    checkpoint: str | None = typer.Option(None, help=CKPT_HELP),
    replace: bool = typer.Option(False, "--replace", help="Replace an earlier export at --out."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Reload the folder with transformers and compare logits "
                                     "with vilactl's (holds the model twice in memory)."),
) -> None:
    """Export a checkpoint as a Hugging Face LLaVA folder (LlavaForConditionalGeneration +
    AutoProcessor, no remote code): LoRA merged, open_clip tower converted, chat template,
    model card; recorded in the catalog's exports."""
    from vilactl.pipeline.cli.context import console, state
    from vilactl.pipeline.jobs.export import ExportRequest
    from vilactl.pipeline.jobs.export import export as run

    run(Path(state.workspace), ExportRequest(out=out, checkpoint=checkpoint, replace=replace,
                                             verify=verify), console)


def generate(
    prompt: str | None = typer.Option(None, help="The question; `<image>` marks place the "
                                                 "images (default: images first)."),
    image: list[str] = typer.Option([], "--image", help="Image file (repeat for several)."),
    input: str | None = typer.Option(None, "--input", help="Batch: JSONL or Parquet with "
                                                           "image, prompt[, id] (default: "
                                                           "one --prompt)."),
    out: str | None = typer.Option(None, "--out", help="With --input: JSONL answers file "
                                                       "(default: stdout)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
    checkpoint: str | None = typer.Option(None, help=CKPT_HELP),
    model: str | None = typer.Option(None, "--model", help="An exported folder, loaded with "
                                                           "transformers instead (default: "
                                                           "--checkpoint's)."),
    max_new_tokens: int = typer.Option(32, callback=COUNT,
                                       help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, callback=in_range(0, 100),
                                      help="0 = greedy; else sample at this temperature."),
    top_p: float = typer.Option(1.0, callback=in_range(0, 1, lo_open=True),
                                help="Nucleus sampling mass (with --temperature)."),
    seed: int = typer.Option(0, callback=SEED, help="Seed of sampling."),
    batch_size: int = typer.Option(32, callback=COUNT, help="Prompts per forward pass (--input)."),
) -> None:
    """Answer a prompt about images with a trained model, in the prompt format it was trained
    and evaluated with (USER: <image> question ASSISTANT:)."""
    from vilactl.base.errors import VilactlError
    from vilactl.pipeline.cli.context import state
    from vilactl.pipeline.jobs import generate as job
    from vilactl.train.generate import Decoding

    decoding = Decoding(max_new_tokens, temperature, top_p, seed).check()
    workspace = Path(state.workspace)
    if input is not None:
        if prompt is not None or image:
            raise VilactlError("--input takes the prompts and images from the file; drop "
                               "--prompt and --image")
        _batch(workspace, input, out, force, checkpoint, model, decoding, batch_size)
        return
    if prompt is None:
        raise VilactlError("give --prompt (with --image) or --input FILE")
    if out is not None:
        raise VilactlError("--out goes with --input; one answer is printed")
    images = [job.read_image(p, "--image") for p in image]
    segs = job.segments(prompt, images, "--prompt")
    gen = job.load_generator(workspace, checkpoint, model)
    print(gen.answers([segs], decoding, batch_size=1)[0])


def _batch(workspace: Path, input: str, out: str | None, force: bool, checkpoint: str | None,
           model: str | None, decoding, batch_size: int) -> None:
    from vilactl.base import atomic
    from vilactl.base.progress import Phase
    from vilactl.pipeline.cli.context import err_console
    from vilactl.pipeline.cli.output import write_stdout
    from vilactl.pipeline.jobs import generate as job
    from vilactl.pipeline.jobs.out_paths import check_file, write_errors

    rows = job.read_input(input)
    target = check_file(workspace, out, "--out", inputs=(Path(input),), force=force) \
        if out else None
    gen = job.load_generator(workspace, checkpoint, model)
    with Phase(err_console, "generate", len(rows), "answers") as bar:
        answers = job.answer_rows(gen, rows, decoding, batch_size, progress=bar.advance)
    text = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
    if target is None:
        write_stdout(text.encode("utf-8"))
        return
    with write_errors(target):
        atomic.write_text(target, text)
    err_console.print(f"{len(answers)} answers written to {target}", markup=False,
                      highlight=False)
