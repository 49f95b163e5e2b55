"""Published instruction formats → training samples (pure functions, no I/O but image reads).

- LLaVA-1.5 / ShareGPT records: `{"id", "image"?, "conversations": [{"from", "value"}]}`.
  `from` is human | gpt (| system); `<image>` in a turn marks where an image goes, and the
  record's images (`image`: one relative path, or a list) fill those marks in order.
- FLAN-style rows: an input field and a target field → [user input, assistant target].
Problems raise RecordError with what is wrong; callers add the file and record id.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vilactl.base.errors import RecordError
from vilactl.curation.records import segment

ROLE_OF = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
           "system": "system"}
IMAGE_MARK = "<image>"


def llava_sample(record: dict, read_image: Callable[[str], bytes], source: str = "llava") -> dict:
    """One LLaVA-format record as a sample (multi-turn kept, images at their marks)."""
    if not isinstance(record, dict) or "id" not in record:
        raise RecordError("record has no id")
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RecordError("record has no conversations")
    image = record.get("image")
    paths = [] if image is None else [image] if isinstance(image, str) else list(image)
    marks = sum(str(t.get("value", "")).count(IMAGE_MARK) for t in conv if isinstance(t, dict))
    if marks != len(paths):
        raise RecordError(f"{marks} {IMAGE_MARK} mark(s) for {len(paths)} image(s)")
    images = iter(paths)
    segments = []
    for turn in conv:
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError("a turn needs 'from' and 'value'")
        role = ROLE_OF.get(turn["from"])
        if role is None:
            raise RecordError(f"unknown role from={turn['from']!r} (human, gpt or system)")
        parts = str(turn["value"]).split(IMAGE_MARK)
        for i, text in enumerate(parts):
            if i:
                segments.append(segment(role, image=read_image(next(images))))
            if text.strip():
                segments.append(segment(role, text=text.strip()))
    return {"sample_id": str(record["id"]), "source": source, "segments": segments}


def image_reader(root: Path) -> Callable[[str], bytes]:
    root = Path(root)

    def read(rel: str) -> bytes:
        path = root / rel
        if not path.is_file():
            raise RecordError(f"image {rel!r} not found under {root}")
        return path.read_bytes()
    return read


def text_sample(row: dict, sample_id: str, input_field: str, target_field: str,
                source: str = "text-instruct") -> dict:
    for f in (input_field, target_field):
        if row.get(f) is None:
            raise RecordError(f"missing field {f!r}")
    return {"sample_id": sample_id, "source": source,
            "segments": [segment("user", text=str(row[input_field])),
                         segment("assistant", text=str(row[target_field]))]}
