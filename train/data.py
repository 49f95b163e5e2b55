"""Streaming a blend's Parquet shards into examples, deterministically and resumably.

Shards are read a row group at a time (the blend is shuffled already, so epoch 0 reads them in
order; later epochs permute the shards with the seed). Images are decoded and preprocessed for
the vision tower here; a sample with an undecodable image is skipped and counted. The position
in the stream is the number of batches consumed: resuming replays the stream to that point
without running the model, so a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq

from vilactl.train.packing import Batch, packed_batches, padded_batches
from vilactl.train.sequences import Example, SequenceBuilder


class BlendStream:
    def __init__(self, paths: list[str], builder: SequenceBuilder, preprocess: Callable,
                 seed: int = 0):
        self.paths, self.builder, self.preprocess = list(paths), builder, preprocess
        self.seed = seed
        self.skipped: Counter = Counter()
        self.epoch = 0

    def _decode(self, images: list[bytes]) -> list | None:
        from PIL import Image

        try:
            return [self.preprocess(Image.open(io.BytesIO(b))) for b in images]
        except Exception:   # PIL raises many kinds for bad bytes; the sample is skipped, counted
            return None

    def epoch_examples(self, epoch: int) -> Iterator[Example]:
        order = (np.arange(len(self.paths)) if epoch == 0 else
                 np.random.default_rng([self.seed, epoch]).permutation(len(self.paths)))
        for k in order:
            pf = pq.ParquetFile(self.paths[k])
            for batch in pf.iter_batches(batch_size=256, columns=["sample_id", "segments"]):
                for row in batch.to_pylist():
                    ex = self.builder.build(row["sample_id"], row["segments"])
                    if ex is None:
                        self.skipped["no_trained_tokens"] += 1
                        continue
                    pixels = self._decode(ex.images)
                    if pixels is None:
                        self.skipped["undecodable_image"] += 1
                        continue
                    ex.images = pixels
                    yield ex

    def examples(self) -> Iterator[Example]:
        """Epoch after epoch, forever (the loop decides when to stop)."""
        while True:
            n = 0
            for ex in self.epoch_examples(self.epoch):
                n += 1
                yield ex
            if n == 0:
                raise ValueError("the blend has no usable samples")
            self.epoch += 1

    def batches(self, micro_batch_size: int, max_length: int, pad_id: int, packing: bool,
                buffer: int = 256, with_mask: bool = True) -> Iterator[Batch]:
        if packing:
            return packed_batches(self.examples(), max_length, micro_batch_size, pad_id,
                                  buffer=buffer, with_mask=with_mask)
        return padded_batches(self.examples(), micro_batch_size, pad_id, self.seed, buffer)
