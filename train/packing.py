"""Batches from examples: sample packing with per-document isolation, or padded batches.

Packing puts several examples into each fixed-length row (first-fit decreasing over a buffer of
examples). Documents in a row must not see each other: position ids restart at 0 for every
document, and the attention mask is block-diagonal causal (a 4-D boolean mask, which SDPA takes
on CPU). On GPU with flash-attention, transformers derives the varlen boundaries from the
restarting position ids instead, so the mask can be left out. The unused tail of a row is padding
(its own block, never trained). Without packing, examples of similar length are batched together
and padded to the longest (length-grouped), in a seeded order.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vilactl.train.sequences import IGNORE, Example


@dataclass
class Batch:
    input_ids: torch.Tensor            # [B, L]
    labels: torch.Tensor               # [B, L]
    position_ids: torch.Tensor | None  # [B, L]
    attention_mask: torch.Tensor | None  # [B, 1, L, L] bool (packed) or [B, L] (padded)
    doc: torch.Tensor                  # [B, L] document index in the batch, -1 on padding
    pixels: torch.Tensor | None        # [n_images, 3, H, W] float in [0, 1] or uint8, in
                                       # sequence order
    sample_ids: list[str]
    images_decoded: int = 0            # set by the loader: images decoded for this batch
    undecodable: int = 0               # samples dropped because an image would not decode

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def real_tokens(self) -> int:
        return int((self.doc >= 0).sum())

    @property
    def target_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device) -> Batch:
        """On `device`, pixels as floats in [0, 1] (the loader ships uint8: 4× fewer bytes
        between processes and to the GPU; x / 255 in float32 equals preprocess_image's)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        pixels = move(self.pixels)
        if pixels is not None and pixels.dtype == torch.uint8:
            pixels = pixels.float().div_(255.0)
        return Batch(move(self.input_ids), move(self.labels), move(self.position_ids),
                     move(self.attention_mask), move(self.doc), pixels,
                     self.sample_ids, self.images_decoded, self.undecodable)


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of indices into lengths), longest items first, each into the first bin with
    room."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, r in enumerate(room):
            if lengths[i] <= r:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def block_causal_mask(doc: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] bool: token q sees token k iff same document and k ≤ q."""
    length = doc.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal).unsqueeze(1)


def collate_packed(rows: list[list[Example]], max_length: int, pad_id: int,
                   with_mask: bool = True) -> Batch:
    b = len(rows)
    ids = torch.full((b, max_length), pad_id, dtype=torch.long)
    labels = torch.full((b, max_length), IGNORE, dtype=torch.long)
    pos = torch.zeros((b, max_length), dtype=torch.long)
    doc = torch.full((b, max_length), -1, dtype=torch.long)
    images, sample_ids, d = [], [], 0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex)
            ids[r, at:at + n] = torch.from_numpy(ex.input_ids)
            labels[r, at:at + n] = torch.from_numpy(ex.labels)
            labels[r, at] = IGNORE      # never predict a document's first token from the last
            pos[r, at:at + n] = torch.arange(n)
            doc[r, at:at + n] = d
            images += ex.images
            sample_ids.append(ex.sample_id)
            at, d = at + n, d + 1
        pos[r, at:] = torch.arange(max_length - at)   # padding: its own block
    pixels = torch.stack(images) if images else None
    return Batch(ids, labels, pos, block_causal_mask(doc) if with_mask else None, doc, pixels,
                 sample_ids)


def collate_padded(examples: list[Example], pad_id: int) -> Batch:
    # every sample dropped (undecodable images): one padding row keeps the step's shapes
    length = max((len(e) for e in examples), default=1)
    b = max(1, len(examples))
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    doc = torch.full((b, length), -1, dtype=torch.long)
    images = []
    for r, ex in enumerate(examples):
        ids[r, :len(ex)] = torch.from_numpy(ex.input_ids)
        labels[r, :len(ex)] = torch.from_numpy(ex.labels)
        doc[r, :len(ex)] = r
        images += ex.images
    pixels = torch.stack(images) if images else None
    mask = (doc >= 0).long()
    mask[mask.sum(1) == 0] = 1          # an all-padding row attends to itself (no NaN rows)
    return Batch(ids, labels, None, mask, doc, pixels, [e.sample_id for e in examples])


def packed_rows(examples: Iterator[Example], max_length: int, rows: int, buffer: int = 256,
                fill: float = 0.98) -> Iterator[list[list[Example]]]:
    """Micro-batches of `rows` rows (lists of examples), packed a buffer at a time; rows filled
    below `fill` that could still take an example of the buffer's shortest length go back to
    the buffer, so padding stays low without holding the stream. Only lengths are looked at,
    so images may still be undecoded bytes here."""
    pending: list[Example] = []
    ready: list[list[Example]] = []
    exhausted = False
    while not exhausted or pending or ready:
        while not exhausted and len(pending) < buffer:
            try:
                pending.append(next(examples))
            except StopIteration:
                exhausted = True
        if pending:
            bins = first_fit_decreasing([len(e) for e in pending], max_length)
            shortest = min(len(e) for e in pending)
            keep = []
            for b in bins:
                row = [pending[i] for i in b]
                used = sum(map(len, row))
                # full enough, or no example of this length could still fit
                if exhausted or used >= fill * max_length or max_length - used < shortest:
                    ready.append(row)
                else:
                    keep += row
            if len(keep) == len(pending):       # nothing full enough: emit the fullest row
                best = max(bins, key=lambda b: sum(len(pending[i]) for i in b))
                ready.append([pending[i] for i in best])
                keep = [e for i, e in enumerate(pending) if i not in set(best)]
            pending = keep
        while len(ready) >= rows or (exhausted and not pending and ready):
            yield ready[:rows]
            ready = ready[rows:]


def packed_batches(examples: Iterator[Example], max_length: int, rows: int, pad_id: int,
                   buffer: int = 256, fill: float = 0.98, with_mask: bool = True
                   ) -> Iterator[Batch]:
    """`packed_rows`, collated (images already pixel tensors)."""
    for group in packed_rows(examples, max_length, rows, buffer, fill):
        yield collate_packed(group, max_length, pad_id, with_mask)


def padded_groups(examples: Iterator[Example], batch_size: int, seed: int,
                  buffer: int = 256) -> Iterator[list[Example]]:
    """Length-grouped: sort a buffer by length, cut into batches, yield them in seeded order."""
    rng = np.random.default_rng(seed)
    while True:
        chunk = [e for _, e in zip(range(buffer), examples)]
        if not chunk:
            return
        chunk.sort(key=len)
        groups = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        for i in rng.permutation(len(groups)):
            yield groups[i]


def padded_batches(examples: Iterator[Example], batch_size: int, pad_id: int, seed: int,
                   buffer: int = 256) -> Iterator[Batch]:
    for group in padded_groups(examples, batch_size, seed, buffer):
        yield collate_padded(group, pad_id)
