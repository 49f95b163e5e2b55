"""A rank's micro-batches: its share of the plan stream, images decoded in worker processes.

Sharding: micro-batch i of the (world-independent) plan stream belongs to rank i mod world, so
an optimizer step's `grad_accum × world` consecutive micro-batches are split across the ranks
and the global batch is the same whatever the world size — 2 ranks × accumulation 1 train on
exactly what 1 rank × accumulation 2 does. Every rank plans the whole stream (tokens and
packing: cheap) but decodes only its own micro-batches' images (the expensive part).

Decoding: a torch DataLoader whose *sampler* is the rank's plan iterator (it runs in the
training process) and whose *dataset* is `Decoder`, called in `workers` processes on each plan:
decode + resize every image, drop samples whose images will not decode (counted), collate. The
DataLoader hands batches back in sampler order, so the result is deterministic for any number
of workers, and the next batches are decoded while the model trains on this one.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vilactl.train.data import Plan
from vilactl.train.packing import Batch, collate_packed, collate_padded
from vilactl.train.sequences import Example


@dataclass
class Decoder:
    """Plan → Batch (runs in DataLoader workers; small and picklable: no model inside)."""
    preprocess: Callable            # PIL image → [3, H, W] tensor (VisionTower.image_preprocessor)
    max_length: int
    pad_id: int
    packing: bool = True
    with_mask: bool = True

    def _decode(self, images: list[bytes]) -> list | None:
        from vilactl.curation.images import ImageProblem, open_image

        try:        # within the pixel limit, else dropped and counted like undecodable bytes
            return [self.preprocess(open_image(b)) for b in images]
        except ImageProblem:
            return None

    def __getitem__(self, plan: Plan) -> Batch:
        rows, dropped = [], 0
        for row in plan.rows:
            kept = []
            for ex in row:
                pixels = self._decode(ex.images)
                if pixels is None:
                    dropped += 1
                    continue
                kept.append(Example(ex.sample_id, ex.input_ids, ex.labels, pixels))
            rows.append(kept)
        if self.packing:
            batch = collate_packed(rows, self.max_length, self.pad_id, self.with_mask)
        else:
            batch = collate_padded([ex for row in rows for ex in row], self.pad_id)
        batch.images_decoded, batch.undecodable = plan.images, dropped
        return batch


class RankPlans:
    """The sampler: plans `start`, `start + 1`, … that belong to `rank` (i mod world)."""

    def __init__(self, plans: Callable[[], Iterator[Plan]], start: int, rank: int, world: int):
        self.plans, self.start, self.rank, self.world = plans, start, rank, world

    def __iter__(self) -> Iterator[Plan]:
        for plan in self.plans():
            if plan.index >= self.start and plan.index % self.world == self.rank:
                yield plan


def _identity(batch: Batch) -> Batch:
    return batch


def _worker_init(_: int) -> None:
    """Workers leave SIGTERM and SIGINT to the training process, which stops at a step
    boundary and then closes them (a signal sent to the whole process group would otherwise
    kill a worker mid-batch and fail the step the checkpoint is saved after)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def rank_batches(plans: Callable[[], Iterator[Plan]], decoder: Decoder, start: int, rank: int,
                 world: int, workers: int) -> Iterator[Batch]:
    """This rank's decoded micro-batches from stream position `start`, forever."""
    from torch.utils.data import DataLoader

    if workers:
        # Workers are forked after the tokenizer may have used its thread pool; saying so
        # up front keeps `tokenizers` from warning on every fork (it disables the pool anyway).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = DataLoader(decoder, batch_size=None, sampler=RankPlans(plans, start, rank, world),
                        num_workers=workers, collate_fn=_identity,
                        worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=2 if workers else None)
    it = iter(loader)
    try:
        yield from it
    finally:
        del it          # stops the worker processes now, not at garbage collection
