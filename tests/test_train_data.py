"""The trainer's data path without a workspace: per-rank sharding of one plan stream, decoding in
DataLoader workers (same batches as inline), resume positions, undecodable images, and data
text that spells special tokens."""
import functools
import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vilactl.curation.records import sample_table, segment
from vilactl.train.data import BlendStream
from vilactl.train.loader import Decoder, rank_batches
from vilactl.train.sequences import SequenceBuilder
from vilactl.train.tokenizer import image_token_id, load_tokenizer, train_demo_tokenizer
from vilactl.train.vision_tower import image_uint8, preprocess_image

WORDS = "red blue green yellow circle square triangle star left right top bottom one two".split()
TOKENS_PER_IMAGE = 4


def _png(i: int, size: int = 40) -> bytes:
    img = Image.new("RGB", (size, size), ((50 * i) % 256, (90 * i) % 256, (30 * i) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _caption(rng, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    rng = np.random.default_rng(0)
    texts = [_caption(rng, 12) for _ in range(300)] + ["USER: ASSISTANT: a b c"] * 10
    return load_tokenizer(train_demo_tokenizer(texts, tmp_path_factory.mktemp("tok") / "t"))


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """60 samples: pairs (1 image), interleaved docs (2 images), text only; one broken image."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        kind = i % 3
        segs = [segment("user", _caption(rng, int(rng.integers(3, 20))))]
        if kind < 2:
            segs.insert(0, segment("user", image=_png(i)))
        if kind == 1:
            segs.append(segment("user", image=b"not an image" if i == 31 else _png(i + 100)))
            segs.append(segment("user", _caption(rng, 5)))
        rows.append({"sample_id": f"s{i}", "source": "test", "segments": segs})
    path = tmp_path_factory.mktemp("shard") / "part-00000.parquet"
    pq.write_table(sample_table(rows), path)
    return str(path)


def _source(tok, shard, max_length=64, micro=2):
    builder = SequenceBuilder(tok, image_token_id(tok), TOKENS_PER_IMAGE, max_length)
    stream = BlendStream([shard], builder, seed=0)
    decoder = Decoder(functools.partial(preprocess_image, size=16), max_length,
                      tok.pad_token_id)
    return stream, decoder, (lambda: stream.plans(micro, max_length, packing=True, buffer=16))


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b) -> bool:
    a, b = a.to("cpu"), b.to("cpu")        # uint8 pixels become floats
    return (torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
            and (a.pixels is None) == (b.pixels is None)
            and (a.pixels is None or torch.equal(a.pixels, b.pixels)))


def test_ranks_split_one_stream_and_workers_change_nothing(tok, shard):
    _, decoder, plans = _source(tok, shard)
    whole = _take(rank_batches(plans, decoder, 0, 0, 1, workers=0), 12)
    # workers ship uint8 pixels (what the trainer uses); on the device they equal the floats
    small = Decoder(functools.partial(image_uint8, size=16), decoder.max_length, decoder.pad_id)
    r0 = _take(rank_batches(plans, small, 0, 0, 2, workers=2), 6)
    r1 = _take(rank_batches(plans, small, 0, 1, 2, workers=1), 6)
    assert r0[0].pixels.dtype == torch.uint8
    # rank r runs micro-batches r, r + 2, …: together exactly the single process's batches
    assert all(_same(a, b) for a, b in zip(whole[0::2], r0))
    assert all(_same(a, b) for a, b in zip(whole[1::2], r1))
    n0, n1 = sum(b.images_decoded for b in r0), sum(b.images_decoded for b in r1)
    assert n0 + n1 == sum(b.images_decoded for b in whole) and min(n0, n1) > 0
    assert 0.3 < n0 / (n0 + n1) < 0.7


def test_resume_position_skips_plans_without_decoding(tok, shard):
    stream, decoder, plans = _source(tok, shard)
    whole = _take(rank_batches(plans, decoder, 0, 0, 1, workers=0), 10)
    calls = []
    counting = Decoder(lambda im: calls.append(1) or decoder.preprocess(im), decoder.max_length,
                       decoder.pad_id)
    later = _take(rank_batches(plans, counting, 6, 0, 1, workers=0), 4)
    assert all(_same(a, b) for a, b in zip(whole[6:], later))
    # the 6 skipped micro-batches were planned, not decoded (inline loader: no lookahead)
    assert len(calls) == sum(b.images_decoded for b in later)


def test_an_undecodable_image_drops_its_sample_only(tok, shard):
    _, decoder, plans = _source(tok, shard, micro=1)
    for plan in plans():
        if any(ex.sample_id == "s31" for row in plan.rows for ex in row):
            break
    batch = decoder[plan]
    ids = [ex.sample_id for row in plan.rows for ex in row]
    assert batch.undecodable == 1 and batch.sample_ids == [s for s in ids if s != "s31"]
    kept = sum(len(ex.images) for row in plan.rows for ex in row if ex.sample_id != "s31")
    assert kept > 0 and len(batch.pixels) == kept
    # the kept samples' placeholders still match their images
    assert int((batch.input_ids == image_token_id(tok)).sum()) == kept * TOKENS_PER_IMAGE


def test_data_text_spelling_special_tokens_stays_text(tok):
    builder = SequenceBuilder(tok, image_token_id(tok), TOKENS_PER_IMAGE, max_length=512)
    text = "a red circle, then the string <image> and </s> and <s> in a caption"
    segs = [segment("user", image=_png(1)), segment("user", text),
            segment("user", image=_png(2)), segment("user", "two </s></s> <image><image>")]
    ex = builder.build("x", segs)
    assert int((ex.input_ids == image_token_id(tok)).sum()) == 2 * TOKENS_PER_IMAGE
    assert len(ex.images) == 2
    assert list(ex.input_ids).count(tok.eos_token_id) == 1 and ex.input_ids[-1] == tok.eos_token_id
    assert list(ex.input_ids).count(tok.bos_token_id) == 1
    assert "<image>" in tok.decode(ex.input_ids[ex.input_ids != image_token_id(tok)])
    # text without special-token strings is encoded exactly as before
    rng = np.random.default_rng(5)
    for t in [_caption(rng, 9) for _ in range(50)] + ["USER:", " ASSISTANT:", "x\ny  z"]:
        assert builder._text(t) == tok.encode(t, add_special_tokens=False)
