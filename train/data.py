"""Streaming a blend's Parquet shards into micro-batch plans, deterministically and resumably.

Shards are read a row group at a time (the blend is shuffled already, so epoch 0 reads them in
order; later epochs permute the shards with the seed). Each sample becomes token ids and labels
here, its images kept as encoded bytes; packing (or length grouping) then cuts the example
stream into *plans*: micro-batch number i is a list of rows of examples. The plan stream depends
only on the data, the seed and the layout (micro batch, max length), never on the world size,
so every rank computes the same one — cheaply, nothing is decoded — and train/loader.py decodes
the images of only the micro-batches a rank runs. The position in the stream is the number of
micro-batches consumed: resuming skips that many plans, again without decoding anything.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from vilactl.base.errors import VilactlError
from vilactl.curation.hf_layout import plain_segments
from vilactl.train.packing import packed_rows, padded_groups
from vilactl.train.sequences import Example, SequenceBuilder


@dataclass
class Plan:
    """Micro-batch `index` of the stream: rows of examples whose images are still bytes (one
    example per row when not packing)."""
    index: int
    rows: list[list[Example]]

    @property
    def images(self) -> int:
        return sum(len(ex.images) for row in self.rows for ex in row)


class BlendStream:
    def __init__(self, paths: list[str], builder: SequenceBuilder, seed: int = 0):
        self.paths, self.builder = list(paths), builder
        self.seed = seed
        self.skipped: Counter = Counter()

    def epoch_examples(self, epoch: int) -> Iterator[Example]:
        order = (np.arange(len(self.paths)) if epoch == 0 else
                 np.random.default_rng([self.seed, epoch]).permutation(len(self.paths)))
        for k in order:
            pf = pq.ParquetFile(self.paths[k])
            for batch in pf.iter_batches(batch_size=256, columns=["sample_id", "segments"]):
                # blends hold HF `Image` structs (older ones plain bytes): bytes either way
                segments = plain_segments(batch.column("segments")).to_pylist()
                for sample_id, segs in zip(batch.column("sample_id").to_pylist(), segments):
                    ex = self.builder.build(sample_id, segs)
                    if ex is None:
                        self.skipped["no_trained_tokens"] += 1
                        continue
                    yield ex

    def examples(self) -> Iterator[Example]:
        """Epoch after epoch, forever (the loop decides when to stop)."""
        epoch = 0
        while True:
            n = 0
            for ex in self.epoch_examples(epoch):
                n += 1
                yield ex
            if n == 0:
                raise VilactlError(f"the blend has no usable samples ({dict(self.skipped)}): "
                                   "none has a token to train on")
            epoch += 1

    def plans(self, micro_batch_size: int, max_length: int, packing: bool,
              buffer: int = 256) -> Iterator[Plan]:
        """Every micro-batch of the run, in order, from the start of the stream."""
        if packing:
            groups = packed_rows(self.examples(), max_length, micro_batch_size, buffer)
        else:
            groups = ([[ex] for ex in g] for g in
                      padded_groups(self.examples(), micro_batch_size, self.seed, buffer))
        for i, rows in enumerate(groups):
            yield Plan(i, rows)
