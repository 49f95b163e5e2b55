"""Record schemas and validators: the one place that names the columns of every format.

Three shapes travel through vilactl:
  * COYO-700M metadata (17 columns; only id, url, text are required),
  * MMC4 documents (text_list, image_info[], similarity_matrix, url, could_have_url_duplicate),
  * the training sample (DESIGN.md §Records): sample_id, source, segments[role, text, image].
Every later stage imports these names instead of restating them, so a format change is one edit.
Validators raise `RecordError` whose message is one line naming the file and row.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from vilactl.base.errors import RecordError

# ---------------------------------------------------------------- COYO-700M metadata
COYO_SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("url", pa.string()),
    ("text", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("image_phash", pa.string()),
    ("text_length", pa.int32()),
    ("word_count", pa.int32()),
    ("num_tokens_bert", pa.int32()),
    ("num_tokens_gpt", pa.int32()),
    ("num_faces", pa.int32()),
    ("clip_similarity_vitb32", pa.float32()),
    ("clip_similarity_vitl14", pa.float32()),
    ("nsfw_score_opennsfw2", pa.float32()),
    ("nsfw_score_gantman", pa.float32()),
    ("watermark_score", pa.float32()),
    ("aesthetic_score_laion_v2", pa.float32()),
])
COYO_REQUIRED = ("id", "url", "text")
COYO_COLUMNS = tuple(COYO_SCHEMA.names)

# ---------------------------------------------------------------- MMC4 documents
# face_detections varies by MMC4 release (null, list of boxes, dicts); it is kept as JSON text.
MMC4_IMAGE_INFO = pa.struct([
    ("image_name", pa.string()),
    ("raw_url", pa.string()),
    ("matched_text_index", pa.int32()),
    ("matched_sim", pa.float64()),
    ("face_detections", pa.string()),
])
MMC4_SCHEMA = pa.schema([
    ("doc_id", pa.string()),  # vilactl's stable key: "<file stem>:<line>" unless given
    ("url", pa.string()),
    ("text_list", pa.list_(pa.string())),
    ("image_info", pa.list_(MMC4_IMAGE_INFO)),
    ("similarity_matrix", pa.list_(pa.list_(pa.float64()))),
    ("could_have_url_duplicate", pa.int32()),
])
MMC4_REQUIRED = ("text_list", "image_info")

# ---------------------------------------------------------------- downloaded images
# Columns `vilactl download` adds to a record for each image it fetched (img2dataset's names).
IMAGE_FIELDS = [
    ("image", pa.binary()),            # encoded bytes (jpg unless --encode-format says otherwise)
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("sha256", pa.string()),           # of the downloaded (original) bytes
]
# COYO pairs with their image: the sample key, the COYO columns, then the image fields. The COYO
# `width`/`height` columns describe the original image; the image's own are `image_width` etc.
COYO_IMAGES_SCHEMA = pa.schema(
    [("key", pa.string())] + list(COYO_SCHEMA)
    + [(f"image_{n}" if n in ("width", "height") else n, t) for n, t in IMAGE_FIELDS])
# MMC4 documents with images: each image_info entry carries its bytes.
MMC4_IMAGE_INFO_WITH_BYTES = pa.struct(list(MMC4_IMAGE_INFO) + [pa.field(n, t)
                                                                 for n, t in IMAGE_FIELDS])
MMC4_IMAGES_SCHEMA = pa.schema([
    f if f.name != "image_info" else pa.field("image_info", pa.list_(MMC4_IMAGE_INFO_WITH_BYTES))
    for f in MMC4_SCHEMA
])
FAILURES_SCHEMA = pa.schema([
    ("key", pa.string()), ("url", pa.string()), ("reason", pa.string()), ("error", pa.string()),
])

# ---------------------------------------------------------------- training samples
ROLES = ("user", "assistant", "system")
SEGMENT = pa.struct([("role", pa.string()), ("text", pa.string()), ("image", pa.binary())])
SAMPLE_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("source", pa.string()),
    ("segments", pa.list_(SEGMENT)),
])
# The same samples as Hugging Face `datasets` stores an `Image` feature: struct<bytes, path>
# (path always null here). Blends are written this way (curation/hf_layout.py); readers accept
# both layouts, so blends written with plain binary images still read.
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_SEGMENT = pa.struct([("role", pa.string()), ("text", pa.string()), ("image", HF_IMAGE)])
HF_SAMPLE_SCHEMA = pa.schema([f if f.name != "segments" else pa.field("segments",
                                                                      pa.list_(HF_SEGMENT))
                              for f in SAMPLE_SCHEMA])


# ---------------------------------------------------------------- COYO validation
def coyo_schema_problem(schema: pa.Schema) -> str | None:
    """Why a COYO metadata file's schema is unusable, or None. Extra columns are allowed."""
    missing = [c for c in COYO_REQUIRED if c not in schema.names]
    if missing:
        return f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    for name in COYO_COLUMNS:
        if name not in schema.names:
            continue
        have, want = schema.field(name).type, COYO_SCHEMA.field(name).type
        if not _castable(have, want):
            return f"column {name} has type {have}, expected {want}"
    return None


def _castable(have: pa.DataType, want: pa.DataType) -> bool:
    if have == want or pa.types.is_null(have):
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)
    if pa.types.is_floating(want):
        return pa.types.is_floating(have) or pa.types.is_integer(have)
    if pa.types.is_string(want):
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    return False


def coyo_batch_problem(batch: pa.RecordBatch | pa.Table, first_row: int) -> str | None:
    """Row-level check of a batch of COYO rows: id and url must be present, url http(s)."""
    import pyarrow.compute as pc

    for col in ("id", "url"):
        nulls = pc.is_null(batch.column(col))
        if pc.any(nulls).as_py():
            row = pc.index(nulls, True).as_py()
            return f"row {first_row + row}: {col} is null"
    urls = batch.column("url").cast(pa.string())
    ok = pc.or_(pc.starts_with(urls, "http://"), pc.starts_with(urls, "https://"))
    if not pc.all(ok).as_py():
        row = pc.index(ok, False).as_py()
        return f"row {first_row + row} (id {batch.column('id')[row].as_py()}): " \
               f"url {urls[row].as_py()!r} is not http(s)"
    return None


def conform_coyo(table: pa.Table) -> pa.Table:
    """Cast a validated COYO table to COYO_SCHEMA order and types; absent columns become null."""
    cols = []
    for field in COYO_SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    extra = [c for c in table.column_names if c not in COYO_COLUMNS]
    return pa.Table.from_arrays(cols + [table.column(c) for c in extra],
                                names=list(COYO_COLUMNS) + extra)


# ---------------------------------------------------------------- MMC4 validation
def parse_mmc4_doc(obj: Any, doc_id: str) -> dict:
    """Check one decoded MMC4 document and return it in MMC4_SCHEMA's shape.

    Raises RecordError with the problem (the caller prefixes file and line)."""
    if not isinstance(obj, dict):
        raise RecordError(f"document is a {type(obj).__name__}, expected an object")
    for key in MMC4_REQUIRED:
        if key not in obj:
            raise RecordError(f"missing field {key}")
    texts = obj["text_list"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise RecordError("text_list must be a list of strings")
    infos = obj["image_info"]
    if not isinstance(infos, list):
        raise RecordError("image_info must be a list")
    images = [_parse_image_info(info, i, len(texts)) for i, info in enumerate(infos)]
    sim = obj.get("similarity_matrix")
    if sim is not None:
        _check_matrix(sim, len(images), len(texts))
    given = obj.get("doc_id")
    if given is not None and (not isinstance(given, (str, int)) or isinstance(given, bool)
                              or str(given) == ""):
        raise RecordError(f"doc_id {given!r} is not a non-empty string")
    url = obj.get("url")
    if url is not None and not isinstance(url, str):
        raise RecordError(f"url must be a string, got {type(url).__name__}")
    return {
        "doc_id": doc_id if given is None else str(given),
        "url": url,
        "text_list": texts,
        "image_info": images,
        "similarity_matrix": sim,
        "could_have_url_duplicate": _flag(obj.get("could_have_url_duplicate")),
    }


def _parse_image_info(info: Any, i: int, n_texts: int) -> dict:
    if not isinstance(info, dict):
        raise RecordError(f"image_info[{i}] is not an object")
    url = info.get("raw_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise RecordError(f"image_info[{i}].raw_url {url!r} is not an http(s) URL")
    name = info.get("image_name")
    if name is not None and not isinstance(name, str):
        raise RecordError(f"image_info[{i}].image_name must be a string")
    idx = info.get("matched_text_index")
    if idx is not None and (not isinstance(idx, int) or isinstance(idx, bool)
                            or not 0 <= idx < n_texts):
        raise RecordError(f"image_info[{i}].matched_text_index {idx!r} outside 0..{n_texts - 1}")
    sim = info.get("matched_sim")
    if sim is not None and not _number(sim):
        raise RecordError(f"image_info[{i}].matched_sim {sim!r} is not a number")
    faces = info.get("face_detections")
    return {
        "image_name": name,
        "raw_url": url,
        "matched_text_index": idx,
        "matched_sim": None if sim is None else float(sim),
        "face_detections": None if faces is None else json.dumps(faces),
    }


def _check_matrix(sim: Any, rows: int, cols: int) -> None:
    if not isinstance(sim, list) or len(sim) != rows:
        raise RecordError(f"similarity_matrix must have {rows} rows (one per image)")
    for r, row in enumerate(sim):
        if not isinstance(row, list) or len(row) != cols:
            raise RecordError(
                f"similarity_matrix row {r} must have {cols} values (one per sentence)")
        if not all(_number(v) for v in row):
            raise RecordError(f"similarity_matrix row {r} holds a value that is not a finite "
                              "number")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _flag(v: Any) -> int | None:
    """could_have_url_duplicate: 0/1 (MMC4 writes ints; booleans are accepted)."""
    if v is None:
        return None
    if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
        return int(v)
    raise RecordError(f"could_have_url_duplicate {v!r} is not 0 or 1")


def mmc4_table(docs: Iterable[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(docs), schema=MMC4_SCHEMA)


# ---------------------------------------------------------------- training samples
def sample_schema_problem(schema: pa.Schema) -> str | None:
    """Why a Parquet schema is not the training-sample schema, or None. Images may be plain
    binary or HF `Image` structs (HF_SAMPLE_SCHEMA)."""
    for field in SAMPLE_SCHEMA:
        if field.name not in schema.names:
            return f"missing column {field.name}"
        have = schema.field(field.name).type
        if not (have.equals(field.type) or have.equals(HF_SAMPLE_SCHEMA.field(field.name).type)):
            return f"column {field.name} has type {schema.field(field.name).type}, " \
                   f"expected {field.type}"
    return None


def segment(role: str, text: str | None = None, image: bytes | None = None) -> dict:
    """One segment of a sample: exactly one of text or image."""
    if role not in ROLES:
        raise RecordError(f"unknown role {role!r}")
    if (text is None) == (image is None):
        raise RecordError("a segment holds exactly one of text or image")
    return {"role": role, "text": text, "image": image}


def sample_table(rows: Iterable[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SAMPLE_SCHEMA)


def segment_counts(segments: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Images and whitespace words per sample of a `segments` column, computed columnar."""
    import pyarrow.compute as pc

    if isinstance(segments, pa.ChunkedArray):
        segments = segments.combine_chunks()
    n = len(segments)
    flat = segments.flatten()
    owner = pc.list_parent_indices(segments).to_numpy()
    # Read with only the text leaf (no image bytes), a segment without text is an image.
    has_image = (flat.field("image").is_valid() if flat.type.get_field_index("image") >= 0
                 else flat.field("text").is_null()).to_numpy(zero_copy_only=False)
    words = pc.list_value_length(pc.utf8_split_whitespace(flat.field("text")))
    words = words.fill_null(0).to_numpy(zero_copy_only=False)
    return (np.bincount(owner[has_image], minlength=n).astype(np.int64),
            np.bincount(owner, weights=words, minlength=n).astype(np.int64))
