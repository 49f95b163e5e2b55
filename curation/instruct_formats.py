"""Published instruction formats → training samples (pure functions, no I/O but image reads).

- LLaVA-1.5 / ShareGPT records: `{"id", "image"?, "conversations": [{"from", "value"}]}`.
  `from` is human | gpt (| system, first only), alternating human/gpt and ending with gpt;
  `<image>` in a turn marks where an image goes, and the record's images (`image`: one
  relative path, or a list) fill those marks in order.
- FLAN-style rows: an input field and a target field → [user input, assistant target];
  `chosen_rows` picks which rows a `--sample N` keeps.
Problems raise RecordError with what is wrong; callers add the file and record id.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vilactl.base.errors import RecordError, VilactlError
from vilactl.curation.images import ImageProblem, check_image
from vilactl.curation.records import segment

ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
           "system": "system"}
IMAGE_MARK = "<image>"


def llava_sample(record: dict, read_image: Callable[[str], bytes], source: str = "llava") -> dict:
    """One LLaVA-format record as a sample (multi-turn kept, images at their marks)."""
    if not isinstance(record, dict) or "id" not in record:
        raise RecordError("record has no id")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise RecordError(f"id must be a string, got {type(record['id']).__name__}")
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RecordError("record has no conversations")
    paths = _image_paths(record.get("image"))
    for t in conv:
        if not isinstance(t, dict) or not isinstance(t.get("from"), str) \
                or not isinstance(t.get("value"), str):
            raise RecordError("a turn needs 'from' and 'value' strings")
    check_roles([t["from"] for t in conv])
    marks = sum(t["value"].count(IMAGE_MARK) for t in conv)
    if marks != len(paths):
        raise RecordError(f"{marks} {IMAGE_MARK} mark(s) for {len(paths)} image(s)")
    images = iter(paths)
    segments = []
    for turn in conv:
        role = ROLE_OF[turn["from"]]
        parts = turn["value"].split(IMAGE_MARK)
        for i, text in enumerate(parts):
            if i:
                segments.append(segment(role, image=read_image(next(images))))
            if text.strip():
                segments.append(segment(role, text=text.strip()))
    return {"sample_id": str(record["id"]), "source": source, "segments": segments}


def check_roles(froms: list[str]) -> None:
    """A conversation is (an optional system turn, then) human, gpt, human, gpt, … ending with
    a gpt answer: a question without its answer, two questions in a row or an answer to
    nothing would train the model on the wrong speaker."""
    roles = []
    for i, f in enumerate(froms):
        role = ROLE_OF.get(f)
        if role is None:
            raise RecordError(f"unknown role from={f!r} (human, gpt or system)")
        if role == "system" and i:
            raise RecordError(f"turn {i + 1} is a system turn; only the first turn may be one")
        roles.append(role)
    talk = roles[1:] if roles[0] == "system" else roles
    if not talk:
        raise RecordError("record has a system turn but no conversation")
    for i, role in enumerate(talk):
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            n = i + 1 + (len(roles) - len(talk))
            raise RecordError(f"turn {n} is from={froms[n - 1]!r} where a "
                              f"{'human question' if want == 'user' else 'gpt answer'} belongs "
                              "(turns alternate human, gpt, …)")
    if talk[-1] != "assistant":
        raise RecordError("the conversation ends without a gpt answer")


def _image_paths(image: Any) -> list[str]:
    if image is None:
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and all(isinstance(p, str) for p in image):
        return image
    raise RecordError(f"image must be a path or a list of paths, got {type(image).__name__}")


def image_reader(root: Path) -> Callable[[str], bytes]:
    """Reads a record's image: the path, symlinks resolved, must lie inside `root`, and the
    bytes must decode as an image within the pixel limit."""
    root = Path(root).resolve()

    def read(rel: str) -> bytes:
        try:
            path = (root / rel).resolve()
        except (OSError, ValueError) as e:         # a NUL byte, a symlink loop …
            raise RecordError(f"image {rel!r}: not a usable path ({e})") from e
        if not path.is_relative_to(root) or path == root:
            raise RecordError(f"image {rel!r} is outside the images folder {root}")
        if not path.is_file():
            raise RecordError(f"image {rel!r} not found under {root}")
        data = path.read_bytes()
        try:
            check_image(data)
        except ImageProblem as e:
            raise RecordError(f"image {rel!r}: {e}") from e
        return data
    return read


def text_sample(row: dict, sample_id: str, input_field: str, target_field: str,
                source: str = "text-instruct") -> dict:
    for f in (input_field, target_field):
        if row.get(f) is None:
            raise RecordError(f"missing field {f!r}")
    return {"sample_id": sample_id, "source": source,
            "segments": [segment("user", text=str(row[input_field])),
                         segment("assistant", text=str(row[target_field]))]}


def chosen_rows(total: int, n: int | None, seed: int | None) -> np.ndarray | None:
    """Row numbers to keep: all (None), evenly spaced, or a seeded sample without replacement."""
    if n is None:
        return None
    if not 0 < n <= total:
        raise VilactlError(f"--sample {n}: the data has {total} rows")
    if seed is None:
        return np.unique((np.arange(n) * total) // n)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
