"""Which samples a blend takes from each component, and where each lands: pure numpy, seeded.

The unit rule: a component with images is measured in **images**, a text-only component in
**samples**; a weight is the component's share of the blend's units. So `--mmc4 0.5 --coyo 0.5`
gives equal image counts however many images a document holds, and a joint-SFT blend
`vqa=0.5 text_instruct=0.5` gives as many text-only samples as VQA images.

Each component draws without replacement: a seeded permutation of its samples, taken as a prefix
until its unit target is met (the last sample is kept only if that lands closer to the target,
so shares are exact to one document). Past the component's supply it needs `allow_upsample`:
further passes draw fresh permutations and are counted as repeats (epoch ≥ 1). Pairs can be
grouped G to a sample (VILA concatenates COYO pairs so they are not far shorter than MMC4
documents). Finally every sample gets a position from one seeded global permutation.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from vilactl.base.errors import VilactlError


@dataclass
class Supply:
    """One component as the planner sees it: per-sample image counts, in the dataset's order."""
    dataset: str
    weight: float
    images: np.ndarray                 # int, one entry per sample
    group: int = 1                     # consecutive drawn samples merged into one

    @property
    def text_only(self) -> bool:
        return int(self.images.sum()) == 0

    @property
    def units(self) -> np.ndarray:
        return np.ones_like(self.images) if self.text_only else self.images

    @property
    def unit(self) -> str:
        return "samples" if self.text_only else "images"


@dataclass
class Draw:
    """What one component contributes: source rows (with repeats) and how they group."""
    dataset: str
    rows: np.ndarray                   # index into the component's samples, in draw order
    epoch: np.ndarray                  # 0 for the first pass, k for the k-th repeat
    group: int
    target: int                        # units asked for
    units: int                         # units drawn
    images: int
    unit: str
    weight: float

    @property
    def num_samples(self) -> int:      # after grouping
        return -(-len(self.rows) // self.group)

    @property
    def repeats(self) -> int:
        return int((self.epoch > 0).sum())


@dataclass
class Plan:
    draws: list[Draw]
    # one entry per drawn source row, aligned over the concatenated draws
    component: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    member: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    num_samples: int = 0

    @property
    def total_units(self) -> int:
        return sum(d.units for d in self.draws)

    def achieved_share(self, d: Draw) -> float:
        return d.units / self.total_units if self.total_units else 0.0


def check_weights(weights: dict[str, float], normalize: bool) -> dict[str, float]:
    """Validated weights (normalised if asked): positive, and summing to 1 unless normalize."""
    if not weights:
        raise VilactlError("a blend needs at least one component (--mmc4, --coyo or --component)")
    for name, w in weights.items():
        if not np.isfinite(w) or w < 0:
            raise VilactlError(f"weight of {name!r} must be a non-negative number, got {w}")
    total = sum(weights.values())
    if total <= 0:
        raise VilactlError("all weights are zero: give at least one component a positive share")
    if not normalize and abs(total - 1.0) > 1e-6:
        raise VilactlError(f"weights sum to {total:g}, not 1 (pass --normalize to rescale them)")
    return {n: w / total for n, w in weights.items() if w > 0}


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per component, so adding a component does not reshuffle the others.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def total_units(supplies: list[Supply], images: int | None) -> int:
    """The blend's size in units: from --images, else the most reachable without repeats."""
    if images is None:
        return int(min(s.units.sum() / s.weight for s in supplies))
    if images <= 0:
        raise VilactlError(f"--images must be positive, got {images}")
    image_share = sum(s.weight for s in supplies if not s.text_only)
    if image_share == 0:
        raise VilactlError("--images needs a component with images (this blend is text-only)")
    return int(round(images / image_share))


def draw(s: Supply, target: int, seed: int, allow_upsample: bool) -> Draw:
    """Seeded draw without replacement of `target` units; repeats only with allow_upsample."""
    units = s.units
    have = int(units.sum())
    if target > have and not allow_upsample:
        raise VilactlError(f"component {s.dataset!r} has {have} {s.unit}, the blend needs "
                           f"{target}: lower --images or pass --allow-upsample")
    rng, rows, epochs, got, epoch = _rng(seed, s.dataset), [], [], 0, 0
    while got < target:
        perm = rng.permutation(len(units))
        cum = np.cumsum(units[perm])
        need = target - got
        k = int(np.searchsorted(cum, need, side="right"))    # samples fitting within the need
        if k < len(perm):
            below = cum[k - 1] if k else 0
            if cum[k] - need < need - below:                  # one more lands closer
                k += 1
        if k == 0:
            break
        rows.append(perm[:k])
        epochs.append(np.full(k, epoch, np.int32))
        got += int(cum[k - 1])
        epoch += 1
        if k < len(perm):                                     # target met inside this pass
            break
    rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    return Draw(s.dataset, rows_a, np.concatenate(epochs) if epochs else np.zeros(0, np.int32),
                s.group, target, got, int(s.images[rows_a].sum()), s.unit, s.weight)


def plan(supplies: list[Supply], seed: int, images: int | None = None,
         allow_upsample: bool = False) -> Plan:
    """Draw every component, group, and place all samples by one seeded global shuffle."""
    for s in supplies:
        if len(s.images) == 0:
            raise VilactlError(f"component {s.dataset!r} has no samples")
    total = total_units(supplies, images)
    draws = [draw(s, int(round(s.weight * total)), seed, allow_upsample) for s in supplies]
    sample_counts = [d.num_samples for d in draws]
    n = sum(sample_counts)
    # position[j] = where sample j (numbered over components in order) lands in the blend
    position = np.empty(n, np.int64)
    position[np.random.default_rng(seed).permutation(n)] = np.arange(n)
    comp, pos, member = [], [], []
    start = 0
    for i, d in enumerate(draws):
        j = np.arange(len(d.rows))
        comp.append(np.full(len(d.rows), i, np.int32))
        pos.append(position[start + j // d.group])
        member.append((j % d.group).astype(np.int32))
        start += d.num_samples
    cat = np.concatenate
    return Plan(draws, cat(comp) if comp else np.zeros(0, np.int32), cat(pos), cat(member), n)
