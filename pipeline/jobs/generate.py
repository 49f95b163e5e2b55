"""`vilactl generate`: answers about images from a checkpoint (vilactl's model) or an exported
folder (transformers), for one prompt or a file of them.

A prompt is text with optional `<image>` marks: with marks, the images (in the order given) take
their places, interleaved with the text; without, they come first (the VQA layout the demo
trains on: "USER: <image> question ASSISTANT:"). A batch file is JSONL (one object per line) or
Parquet with columns `image` (a path, or a list of paths, relative to the file's folder),
`prompt`, and optionally `id`; answers go to `--out` as JSONL in input order (atomically), or to
stdout. Every input problem is one line naming the file and line/row.
"""
from __future__ import annotations

import json
from pathlib import Path

from vilactl.base import json_bounds
from vilactl.base.errors import VilactlError
from vilactl.base.paths import shown
from vilactl.train.tokenizer import IMAGE_TOKEN

MAX_IMAGE_BYTES = 64 << 20


def read_image(path: str | Path, where: str) -> bytes:
    """The bytes of an image file, checked to decode (within the pixel limit)."""
    from vilactl.curation.images import open_image

    p = Path(path)
    if not p.is_file():
        raise VilactlError(f"{where}: image {shown(str(path))} is not a file")
    if p.stat().st_size > MAX_IMAGE_BYTES:
        raise VilactlError(f"{where}: image {p} is over {MAX_IMAGE_BYTES >> 20} MB")
    data = p.read_bytes()
    try:
        open_image(data)
    except Exception as e:         # ImageProblem, or whatever PIL raises on odd bytes
        raise VilactlError(f"{where}: image {p} cannot be decoded ({e})") from e
    return data


def segments(prompt: str, images: list[bytes], where: str) -> list[dict]:
    """The user turn: text pieces and images, in order."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise VilactlError(f"{where}: the prompt is empty")
    parts = prompt.split(IMAGE_TOKEN)
    marks = len(parts) - 1
    if marks and marks != len(images):
        raise VilactlError(f"{where}: the prompt has {marks} {IMAGE_TOKEN} mark(s) for "
                           f"{len(images)} image(s)")
    if not marks:
        parts = [""] * len(images) + [prompt]
    segs = []
    for i, text in enumerate(parts):
        if i:
            segs.append({"role": "user", "image": images[i - 1], "text": None})
        if text.strip():
            segs.append({"role": "user", "image": None, "text": text.strip()})
    return segs


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) of a JSONL or Parquet input file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise VilactlError(f"{path}: not a readable Parquet file ({e})") from e
        return [(f"{path} row {i}", r) for i, r in enumerate(table.to_pylist())]
    out = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for n, line in json_bounds.lines(f, str(path), at="{where} line {n}"):
                out.append((f"{path} line {n}", _json_object(line, f"{path} line {n}")))
        except UnicodeDecodeError as e:
            raise VilactlError(f"{path}: not UTF-8 text ({e.reason})") from e
    return out


def _json_object(line: str, where: str) -> dict:
    json_bounds.check_depth(line, where)
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise VilactlError(f"{where}: not JSON ({e.msg})") from e
    if not isinstance(row, dict):
        raise VilactlError(f"{where}: a line is an object with image and prompt")
    return row


def read_input(path: str | Path) -> list[dict]:
    """Validated batch rows: {id, images (paths), prompt, segments}."""
    path = Path(path)
    if not path.is_file():
        raise VilactlError(f"--input {shown(str(path))}: no such file")
    if path.suffix not in (".jsonl", ".parquet"):
        raise VilactlError(f"--input {path}: give a .jsonl or .parquet file")
    rows = []
    for where, r in _rows(path):
        unknown = sorted(set(r) - {"id", "image", "prompt"})
        if unknown:
            raise VilactlError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} "
                               "(fields: id, image, prompt)")
        paths = r.get("image") or []
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise VilactlError(f"{where}: image must be a path or a list of paths")
        full = [str(path.parent / p) for p in paths]
        images = [read_image(p, where) for p in full]
        rows.append({"id": r.get("id"), "images": full, "prompt": r.get("prompt"),
                     "segments": segments(r.get("prompt"), images, where)})
    if not rows:
        raise VilactlError(f"--input {path}: no prompts in it")
    return rows


def load_generator(workspace: Path, checkpoint: str | None, model_dir: str | None):
    """The backend: vilactl's model from a checkpoint, or an exported folder via transformers."""
    from vilactl.train.generate import HFGenerator, VilaGenerator

    if model_dir is not None:
        if checkpoint is not None:
            raise VilactlError("give --checkpoint or --model, not both")
        return HFGenerator(model_dir)
    from vilactl.pipeline.jobs import checkpoints

    _, _, model, tok, _ = checkpoints.load(workspace, checkpoint)
    return VilaGenerator(model, tok, model.vision.preprocess)


def answer_rows(gen, rows: list[dict], decoding, batch_size: int, progress=None) -> list[dict]:
    answers = gen.answers([r["segments"] for r in rows], decoding, batch_size=batch_size,
                          progress=progress)
    return [{**({"id": r["id"]} if r["id"] is not None else {}), "image": r["images"],
             "prompt": r["prompt"], "answer": a} for r, a in zip(rows, answers)]
