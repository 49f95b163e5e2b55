"""Blends in the Hugging Face `datasets` layout: `load_dataset("parquet", …)` sees every
`segments[].image` as a `datasets.Image` that decodes to the right picture, while the trainer,
eval and blending a blend read the same shards — and blends written before (plain binary images)
still read. Built on a small workspace of its own (no demo run): pairs, interleaved documents
and text-only samples registered with `vilactl register samples`, blended with `vilactl blend`."""
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli, sql
from PIL import Image

from vilactl.curation.hf_layout import feature, hf_samples, hf_segments, plain_samples
from vilactl.curation.records import HF_IMAGE, SAMPLE_SCHEMA, sample_table, segment
from vilactl.pipeline.jobs.eval import _rows
from vilactl.pipeline.jobs.register import register_samples
from vilactl.train.data import BlendStream
from vilactl.train.evaluate import items
from vilactl.train.sequences import SequenceBuilder
from vilactl.train.tokenizer import image_token_id, load_tokenizer, train_demo_tokenizer


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (size[0] * 3 % 256, 40, size[1] * 5 % 256)).save(buf, format="PNG")
    return buf.getvalue()


def _sources() -> dict[str, list[dict]]:
    """Every image has its own size, so a decoded image says which one it is."""
    pairs = [{"sample_id": f"p{i}", "source": "pairs",
              "segments": [segment("user", image=_png((16 + i, 9))),
                           segment("user", f"a red square number {i}")]} for i in range(12)]
    docs = [{"sample_id": f"d{j}", "source": "docs",
             "segments": [segment("user", f"document {j} begins"),
                          segment("user", image=_png((40 + j, 20))),
                          segment("user", "then more prose about circles"),
                          segment("user", image=_png((40 + j, 21))),
                          segment("user", "and the end")]} for j in range(6)]
    texts = [{"sample_id": f"t{k}", "source": "texts",
              "segments": [segment("user", f"what is {k} plus one"),
                           segment("assistant", f"{k + 1}")]} for k in range(6)]
    return {"pairs": pairs, "docs": docs, "texts": texts}


def _sizes(segs: list[dict]) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(s["image"])).size for s in segs if s["image"] is not None]


@pytest.fixture(scope="module")
def hf_ws(tmp_path_factory):
    """(workspace, blend folder, expected image sizes by sample_id)."""
    root = tmp_path_factory.mktemp("blend_hf")
    ws, expected = root / "ws", {}
    for name, rows in _sources().items():
        (root / name).mkdir()
        pq.write_table(sample_table(rows), root / name / "part-0.parquet")
        register_samples(ws, str(root / name / "*.parquet"), name, quiet=True)
        expected.update({r["sample_id"]: _sizes(r["segments"]) for r in rows})
    run_cli("blend", "--component", "pairs=0.4", "--component", "docs=0.4",
            "--component", "texts=0.2", "--name", "mix", "--shard-size", "7",
            "--row-group-size", "3", workspace=ws, check=True)
    return ws, ws / "blends" / "mix", expected


def _files(folder) -> list[str]:
    return sorted(str(p) for p in folder.glob("part-*.parquet"))


def test_hf_datasets_loads_blend_images_as_image_feature(hf_ws):
    import datasets

    ws, folder, expected = hf_ws
    hf = datasets.load_dataset("parquet", data_files=_files(folder), split="train",
                               cache_dir=str(ws / "hf-cache"))
    segments = hf.features["segments"]
    assert isinstance(segments, datasets.List)
    assert isinstance(segments.feature["image"], datasets.Image)
    assert segments.feature["text"] == datasets.Value("string")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert hf.num_rows == manifest["num_samples"] > 10
    images, sources = 0, set()
    for row in hf:
        pictures = [s["image"] for s in row["segments"] if s["image"] is not None]
        assert all(isinstance(p, Image.Image) for p in pictures)
        assert [p.size for p in pictures] == expected[row["sample_id"]], row["sample_id"]
        # a segment is text or image, never both
        assert all((s["image"] is None) != (s["text"] is None) for s in row["segments"])
        images += len(pictures)
        sources.add(row["source"])
    assert images == manifest["num_images"] and sources == {"pairs", "docs", "texts"}
    # the layout DuckDB's samples_<name> view sees: an image is a struct, null on text segments
    counted = sql(ws, "SELECT sum(len(list_filter(segments, lambda s: s.image IS NOT NULL))) "
                      "AS n, count(*) FILTER (WHERE segments[1].image.bytes IS NOT NULL) AS "
                      "first_is_image FROM samples_mix")[0]
    assert counted["n"] == images and counted["first_is_image"] == \
        sum(r["source"] == "pairs" for r in hf)


def test_feature_json_is_what_datasets_writes(hf_ws):
    import datasets

    _, folder, _ = hf_ws
    schema = pq.read_schema(_files(folder)[0])
    ours = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    want = datasets.Features({
        "sample_id": datasets.Value("string"), "source": datasets.Value("string"),
        "segments": datasets.List({"role": datasets.Value("string"),
                                   "text": datasets.Value("string"),
                                   "image": datasets.Image()}),
        "component": datasets.Value("string"), "epoch": datasets.Value("int32")})
    assert datasets.Features.from_dict(ours) == want
    assert want.arrow_schema.remove_metadata().equals(schema.remove_metadata())
    prims = pa.schema([(str(t), t) for t in (pa.float32(), pa.float64(), pa.int64(),
                                             pa.bool_(), pa.binary(), pa.uint8())])
    assert datasets.Features.from_dict({f.name: feature(f.type) for f in prims}) == \
        datasets.Features.from_arrow_schema(prims)


def test_layouts_round_trip_on_sliced_and_chunked_columns():
    rows = [r for rs in _sources().values() for r in rs]
    plain = sample_table(rows)
    hf = hf_samples(plain)
    assert hf.schema.field("segments").type.value_type.field("image").type.equals(HF_IMAGE)
    assert plain_samples(hf).equals(plain) and plain_samples(plain).equals(plain)
    assert plain_samples(hf).schema.metadata is None
    chunked = pa.chunked_array([plain["segments"].combine_chunks().slice(3, 9),
                                plain["segments"].combine_chunks().slice(14, 4)])
    assert hf_segments(chunked).to_pylist() == \
        [[{**s, "image": None if s["image"] is None else {"bytes": s["image"], "path": None}}
          for s in r["segments"]] for r in rows[3:12] + rows[14:18]]


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    texts = [" ".join(s["text"] or "" for r in rs for s in r["segments"])
             for rs in _sources().values()] * 20 + ["USER: ASSISTANT: a b c"] * 10
    tok = load_tokenizer(train_demo_tokenizer(texts, tmp_path_factory.mktemp("tok") / "t"))
    return SequenceBuilder(tok, image_token_id(tok), 4, 96)


def _examples(paths: list[str], builder) -> list[tuple]:
    stream = BlendStream(paths, builder, seed=0)
    return [(ex.sample_id, ex.input_ids.tolist(), ex.images) for ex in stream.epoch_examples(0)]


def test_trainer_reads_new_and_old_blend_layouts_alike(hf_ws, builder, tmp_path):
    _, folder, expected = hf_ws
    new = _examples(_files(folder), builder)
    assert len(new) == sum(pq.ParquetFile(p).metadata.num_rows for p in _files(folder))
    for sample_id, _, images in new:
        assert all(isinstance(b, bytes) for b in images)
        assert [Image.open(io.BytesIO(b)).size for b in images] == expected[sample_id]
    # the same blend as written before the HF layout: plain binary images, no metadata
    old = []
    for k, p in enumerate(_files(folder)):
        old.append(str(tmp_path / f"part-{k:05d}.parquet"))
        pq.write_table(plain_samples(pq.read_table(p)), old[-1])
    assert pq.read_schema(old[0]).field("segments").type.equals(SAMPLE_SCHEMA.field(
        "segments").type)
    assert _examples(old, builder) == new


def test_eval_rows_and_blend_of_a_blend_read_hf_images(hf_ws):
    ws, folder, expected = hf_ws
    rows = _rows(ws, "mix", None)
    its = items(rows)
    assert len(its) == len(rows) and {it.sample_id[0] for it in its} == {"p", "d", "t"}
    for it in its:
        assert _sizes(it.context) == expected[it.sample_id]
    run_cli("blend", "--component", "mix=1", "--name", "again", "--seed", "3",
            workspace=ws, check=True)
    again = pq.read_table(_files(ws / "blends" / "again"))
    assert again.schema.metadata[b"huggingface"] == \
        pq.read_schema(_files(folder)[0]).metadata[b"huggingface"]
    got = {r["sample_id"]: _sizes(r["segments"]) for r in plain_samples(again).to_pylist()}
    assert got == {r["sample_id"]: expected[r["sample_id"]] for r in rows}
    assert np.array_equal(sorted(got), sorted(r["sample_id"] for r in rows))
    # and a blend's shards register as samples, images counted from the structs
    registered = register_samples(ws, str(folder / "part-*.parquet"), "mix_again", quiet=True)
    assert registered.num_images == json.loads((folder / "manifest.json").read_text())[
        "num_images"] == sum(len(v) for v in got.values())
