"""The exact K-th best (score, id) of N rows from two cheap passes, in memory independent of K.

`vilactl curate` must keep exactly K rows by (score desc, id asc). Holding K candidates (25M for
VILA's COYO run: ~1 GB of keys and ids, plus merge copies) is what made the command grow with K.
It only needs the K-th row — the *cutoff* — because a final pass can then keep every row at or
above it. So:

  pass 1  each shard counts its scores per bucket: the top 28 bits of the order key (sign,
          exponent and 16 mantissa bits, ~1.5e-5 relative width). Summed over shards this
          histogram names the bucket that holds the K-th row, how many rows rank above that
          bucket, and so how many (`need`) must come from inside it.
  pass 2  each shard returns its best `need` rows of that one bucket (keys and ids); merged,
          their `need`-th row is the exact cutoff, ties broken by the smallest id.

Memory: the histogram (at most 2^16 buckets per binary exponent the scores span; ~100k for CLIP
similarities) plus the boundary bucket's rows, capped by `need`. Only when millions of rows share
one score does pass 2 hold that many. Non-finite scores (NaN, ±inf, null) are excluded and counted
everywhere, as in the top-K selector (curation/topk.py), whose keys and cutoff this reuses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vilactl.curation.topk import Cutoff, TopK, cutoff_of, order_key

SHIFT = np.uint64(36)  # bucket = key >> 36: 1 sign + 11 exponent + 16 mantissa bits


def finite_keys(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of finite scores, their order keys)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    return finite, order_key(scores[finite])


@dataclass
class Histogram:
    """Sparse counts of rows per bucket, plus rows seen and non-finite rows excluded."""
    buckets: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    seen: int = 0
    excluded: int = 0
    _parts: list = field(default_factory=list, repr=False)

    def add(self, scores: np.ndarray) -> None:
        finite, keys = finite_keys(scores)
        self.seen += len(finite)
        self.excluded += len(finite) - len(keys)
        self._parts.append(np.unique(keys >> SHIFT, return_counts=True))
        if len(self._parts) >= 16:  # fold now and then: parts never outgrow the histogram
            self.fold()

    def merge(self, other: Histogram) -> None:
        other.fold()
        self.seen += other.seen
        self.excluded += other.excluded
        self._parts.append((other.buckets, other.counts))
        self.fold()

    def fold(self) -> None:
        if not self._parts:
            return
        buckets = np.concatenate([self.buckets] + [b for b, _ in self._parts])
        counts = np.concatenate([self.counts] + [c for _, c in self._parts])
        self._parts = []
        if not len(buckets):
            self.buckets, self.counts = buckets, counts
            return
        order = np.argsort(buckets, kind="stable")
        buckets, counts = buckets[order], counts[order]
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        self.buckets = buckets[starts]
        self.counts = np.add.reduceat(counts, starts) if len(starts) else counts[:0]

    @property
    def total(self) -> int:
        self.fold()
        return int(self.counts.sum())


@dataclass(frozen=True)
class Boundary:
    """Where the K-th row lies: its bucket, rows ranked above the bucket, rows needed from it."""
    bucket: int
    above: int
    need: int

    def in_bucket(self, keys: np.ndarray) -> np.ndarray:
        return (keys >> SHIFT) == np.uint64(self.bucket)

    def above_bucket(self, keys: np.ndarray) -> np.ndarray:
        return (keys >> SHIFT) > np.uint64(self.bucket)


def boundary(hist: Histogram, k: int) -> Boundary | None:
    """The bucket of the min(K, eligible)-th best row, or None when no row is eligible."""
    hist.fold()
    if not len(hist.counts):
        return None
    k = min(k, hist.total)
    above = np.cumsum(hist.counts[::-1])  # rows in this bucket or better, best bucket first
    i = int(np.searchsorted(above, k))    # first bucket whose running total reaches k
    before = int(above[i - 1]) if i else 0
    return Boundary(int(hist.buckets[::-1][i]), before, k - before)


def boundary_candidates(scores: np.ndarray, ids: np.ndarray, b: Boundary) -> tuple[int, TopK]:
    """(rows of this batch above the bucket, its best `need` rows inside the bucket)."""
    finite, keys = finite_keys(scores)
    ids = np.asarray(ids)[finite]
    inside = b.in_bucket(keys)
    sel = TopK(b.need)
    sel.add_keys(keys[inside], ids[inside])
    return int(np.count_nonzero(b.above_bucket(keys))), sel


def exact_cutoff(candidates, need: int) -> Cutoff | None:
    """The cutoff from every shard's boundary candidates, (keys, ids) pairs: their `need`-th
    best row."""
    total = TopK(need)
    for keys, ids in candidates:
        total.add_keys(keys, ids)
    return cutoff_of(*total.result())


def select_cutoff(batches, k: int) -> Cutoff | None:
    """Both passes in one process over a re-iterable of (scores, ids) batches (tests, tools)."""
    hist = Histogram()
    for scores, _ in batches:
        hist.add(scores)
    b = boundary(hist, k)
    if b is None:
        return None
    parts = [boundary_candidates(s, i, b)[1].result() for s, i in batches]
    return exact_cutoff(parts, b.need)
