"""Training samples in the Hugging Face `datasets` layout: images that HF tooling sees as images.

`datasets` stores an `Image` feature in Arrow as struct<bytes: binary, path: string> and names
each column's feature in the schema metadata key `huggingface` as
{"info": {"features": {...}}}. A Parquet file with both loads through
`datasets.load_dataset("parquet", …)` (and shows in the Hub viewer) with `segments` as a list of
{role, text, image: Image()}, each image decoding to a PIL image. Blends are written this way.

vilactl does not depend on `datasets` at run time, so the feature JSON is written here by hand
(tests check it against the library). The readers (trainer, eval, blending a blend) go through
`plain_segments` / `plain_samples`, which turn either layout into the plain one of
DESIGN.md §Records (images as binary), so blends written before this layout still read.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vilactl.curation.records import HF_IMAGE, HF_SEGMENT, SEGMENT

# pyarrow's name → the `dtype` datasets' Value uses, where they differ
_DTYPES = {"halffloat": "float16", "float": "float32", "double": "float64"}


def feature(t: pa.DataType):
    """The `datasets` feature (as its JSON dict) for an Arrow type."""
    if t.equals(HF_IMAGE):
        return {"_type": "Image"}
    if pa.types.is_struct(t):
        return {f.name: feature(f.type) for f in t}
    if pa.types.is_list(t):
        # A one-item JSON list is how every `datasets` release (2.x to 5.x) spells "a list of
        # this feature"; the newer {"_type": "List"} form does not load in releases before 4.
        return [feature(t.value_type)]
    if pa.types.is_primitive(t) or pa.types.is_string(t) or pa.types.is_binary(t):
        return {"dtype": _DTYPES.get(str(t), str(t)), "_type": "Value"}
    raise ValueError(f"no datasets feature for Arrow type {t}")


def hf_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """The schema metadata entry that tells `datasets` the features of `schema`."""
    features = {f.name: feature(f.type) for f in schema}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def _image_type(segments: pa.Array) -> pa.DataType:
    return segments.type.value_type.field("image").type


def _with_images(segments: pa.Array, image: pa.Array, segment_type: pa.StructType) -> pa.Array:
    """`segments` (one combined list array) with its segments' image field replaced."""
    flat = segments.flatten()                   # honours the list array's offset
    role, text = flat.field("role"), flat.field("text")
    values = pa.StructArray.from_arrays([role, text, image], fields=list(segment_type),
                                        mask=flat.is_null())
    lengths = pc.list_value_length(segments).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=segments.is_null())


def _combined(segments: pa.Array | pa.ChunkedArray) -> pa.Array:
    return segments.combine_chunks() if isinstance(segments, pa.ChunkedArray) else segments


def hf_segments(segments: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A `segments` column with its images as HF `Image` structs (null where no image)."""
    segments = _combined(segments)
    if _image_type(segments).equals(HF_IMAGE):
        return segments
    data = segments.flatten().field("image")
    image = pa.StructArray.from_arrays([data, pa.nulls(len(data), pa.string())],
                                       fields=list(HF_IMAGE), mask=data.is_null())
    return _with_images(segments, image, HF_SEGMENT)


def plain_segments(segments: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A `segments` column with its images as plain binary, from either layout. An HF image
    given only as a `path` (never written by vilactl) has no bytes here: it is not read."""
    segments = _combined(segments)
    if not _image_type(segments).equals(HF_IMAGE):
        return segments
    image = segments.flatten().field("image")
    data = image.flatten()[HF_IMAGE.get_field_index("bytes")]   # null where the struct is
    return _with_images(segments, data, SEGMENT)


def _replace_segments(table: pa.Table, segments: pa.Array) -> pa.Table:
    i = table.schema.get_field_index("segments")
    return table.set_column(i, pa.field("segments", segments.type), segments)


def plain_samples(table: pa.Table) -> pa.Table:
    """A table of samples with plain binary images, from either layout (the `huggingface`
    metadata, which would now describe the wrong type, dropped)."""
    table = _replace_segments(table, plain_segments(table["segments"]))
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"huggingface"}
    return table.replace_schema_metadata(meta or None)


def hf_samples(table: pa.Table) -> pa.Table:
    """A table of samples with HF `Image` images and the `huggingface` schema metadata."""
    table = _replace_segments(table, hf_segments(table["segments"]))
    return table.replace_schema_metadata(hf_metadata(table.schema))
