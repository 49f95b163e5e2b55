"""`vilactl export --checkpoint CKPT --out DIR`: a trained checkpoint as a Hugging Face LLaVA
folder, with a model card, recorded in the catalog's `exports`.

Order: the output path is checked (pipeline/jobs/out_paths.py) and the checkpoint loaded (LoRA
merged) and checked exportable before anything is recorded — a refusal leaves nothing. Then, as
a job (lock, `runs` row): the folder is written to a temp folder beside DIR (weights, config,
tokenizer + chat template, image processor), loaded back with transformers and compared with
vilactl's own forward on a probe image and prompt (`--no-verify` skips that for models too
large to hold twice), the card and `vilactl-export.json` (source, checksums) written, and in
one catalog transaction the `exports` row is recorded and the temp folder renamed to DIR.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from vilactl.base import atomic
from vilactl.base.errors import VilactlError
from vilactl.catalog import jobs
from vilactl.catalog.exports import lineage, record_export
from vilactl.pipeline.jobs import checkpoints, model_card
from vilactl.pipeline.jobs.out_paths import EXPORT_MARKER, check_folder
from vilactl.train import hf_export, hf_processor

FORMAT = "llava-hf"


@dataclass
class ExportRequest:
    out: str
    checkpoint: str | None = None      # id, run or stage name, folder; None: the newest SFT one
    replace: bool = False
    verify: bool = True


def write_folder(model, tok, folder: Path) -> str | None:
    """Weights, configs, tokenizer and processor into `folder`; returns the chat template's
    tokenisation problem, if the tokenizer has one (train/hf_processor.py)."""
    hf_export.save_llava(model, tok, folder)
    proc = hf_processor.processor(model, tok)
    proc.save_pretrained(folder)
    return hf_processor.template_mismatch(proc, model, tok)


def probe_image(size: int):
    """A deterministic test card: colour gradients and a square, at the tower's size."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1)
    rgb[size // 4: size // 2, size // 4: size // 2] = (220, 30, 30)
    return Image.fromarray(rgb.astype(np.uint8))


@torch.no_grad()
def verify(folder: Path, model, template: str | None) -> dict:
    """The exported folder through transformers vs vilactl's forward, same ids and image."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    hf = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    proc = AutoProcessor.from_pretrained(folder, backend="pil")
    image = probe_image(model.vision.image_size)
    msgs = [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "Describe the image."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    ref = hf(**inputs).logits.float()
    ours = model(inputs["input_ids"], model.vision.preprocess(image)[None]).float()
    diff = float((ours - ref).abs().max())
    scale = max(1.0, float(ours.abs().max()))
    if not diff <= 1e-3 * scale:
        raise VilactlError(f"export check failed: transformers' logits differ from vilactl's by "
                           f"{diff:.3g} on the probe prompt; the folder was not written")
    return {"max_abs_logit_diff": diff, "template": "reproduces vilactl's prompt ids" if
            template is None else f"does not: {template}"}


def _manifest(folder: Path) -> tuple[dict, str, int]:
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size,
                                                "sha256": atomic.sha256_file(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != EXPORT_MARKER}
    lines = "".join(f"{f['sha256']}  {name}\n" for name, f in files.items())
    return files, hashlib.sha256(lines.encode()).hexdigest(), sum(f["bytes"]
                                                                   for f in files.values())


def export(workspace: Path, req: ExportRequest, console: Console) -> dict:
    out = check_folder(workspace, req.out, "--out", req.replace)
    _, folder = checkpoints.find(workspace, req.checkpoint)
    try:                         # refuse an unsupported projector before building the model
        hf_export.check_projector(json.loads((folder / "meta.json").read_text())
                                  ["config"]["model"]["projector"])
    except (OSError, ValueError, KeyError, TypeError):
        pass                     # a broken meta.json: `load` below says what is wrong
    row, folder, model, tok, meta = checkpoints.load(workspace, str(folder), merge_lora=True)
    hf_export.check_exportable(model)
    source = row["id"] if row else str(folder)
    lin = lineage(workspace, row and row["id"])
    args = {"checkpoint": source, "out": str(out), "replace": req.replace, "verify": req.verify}
    key = hashlib.sha256(str(out).encode()).hexdigest()[:12]
    swapped: list[Path | None] = []
    try:
        with jobs.job(workspace, "vilactl export", args, target=f"exports/{out.name}-{key}") as job:
            rec = _write(out, model, tok, meta, lin, source, folder, row, req, job, swapped)
    except BaseException:
        if swapped:                 # renamed into place, but the catalog did not commit
            atomic.remove(out)
            if swapped[0] is not None:
                os.replace(swapped[0], out)
        raise
    atomic.remove(swapped[0] if swapped else None)      # the export it replaced
    _report(console, rec)
    return rec


def _write(out: Path, model, tok, meta, lin, source, folder, row, req, job, swapped) -> dict:
    for stale in atomic.stale_temps(out):        # temps of a killed export of this folder
        atomic.remove(stale)
    tmp = atomic.temp_dir(out)
    try:
        template = write_folder(model, tok, tmp)
        checked = verify(tmp, model, template) if req.verify else None
        (tmp / "README.md").write_text(model_card.render(source, meta, lin, checked))
        files, checksum, size = _manifest(tmp)
        rec = {"path": str(out), "checkpoint": row and row["id"], "source_path": str(folder),
               "format": FORMAT, "checksum": checksum, "files": files, "num_bytes": size,
               "checkpoints": [c["id"] for c in lin["checkpoints"]],
               "blends": list(lin["blends"]),
               "params": {"projector": model.spec.projector, "tower": model.spec.tower.kind,
                          "lora_merged": int(meta.get("lora") or 0), "verify": checked,
                          "template_problem": template}}
        (tmp / EXPORT_MARKER).write_text(json.dumps(rec, indent=1, default=str))
        _shared(tmp)
        job.counts.update(files=len(files), bytes=size, checksum=checksum,
                          max_abs_logit_diff=checked and checked["max_abs_logit_diff"])

        def commit(con) -> None:
            record_export(con, rec, job.run.id)
            swapped.append(atomic.swap_in(tmp, out))     # last: a failure above rolls back
        job.commit(commit)
    except BaseException:
        atomic.remove(tmp)
        raise
    return rec


def _shared(folder: Path) -> None:
    """The umask's normal permissions on every file (safetensors writes 0600): an export is
    shared data, like every vilactl output."""
    for p in folder.rglob("*"):
        if p.is_file():
            atomic.shared_mode(p)


def _report(console: Console, rec: dict) -> None:
    mb = rec["num_bytes"] / 1e6
    console.print(f"exported {escape(str(rec['checkpoint'] or rec['source_path']))} → "
                  f"[bold]{escape(rec['path'])}[/bold] ({len(rec['files'])} files, {mb:.1f} MB, "
                  f"sha256 {rec['checksum'][:16]}…)")
    check = rec["params"]["verify"]
    if check:
        console.print(f"  transformers reloads it: logits within {check['max_abs_logit_diff']:.1e}"
                      " of vilactl's on a probe prompt")
    if rec["params"]["template_problem"]:
        console.print(f"  [yellow]warning:[/yellow] {escape(rec['params']['template_problem'])}")
