"""MMC4's image↔sentence assignment, from an images × sentences similarity matrix.

MMC4 (Zhu et al., 2023) places each image by: drop images whose best similarity is below a
threshold (0.15); solve a linear assignment on −S so that each sentence gets at most one image
and the total similarity is maximal; if there are more images than sentences, the images left
over take their own highest-similarity sentence. scipy's solver accepts rectangular matrices,
so no padding is needed.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

MMC4_MIN_SIM = 0.15


def assign(sim: np.ndarray, min_sim: float = MMC4_MIN_SIM) -> np.ndarray:
    """Sentence index per image, or -1 for an image dropped for low similarity."""
    sim = np.asarray(sim, dtype=np.float64)
    n_img = sim.shape[0]
    out = np.full(n_img, -1, dtype=np.int64)
    if n_img == 0 or sim.shape[1] == 0:
        return out
    kept = np.flatnonzero(sim.max(axis=1) >= min_sim)
    if kept.size == 0:
        return out
    rows, cols = linear_sum_assignment(-sim[kept])
    out[kept[rows]] = cols
    leftover = kept[np.isin(kept, kept[rows], invert=True)]
    out[leftover] = sim[leftover].argmax(axis=1)
    return out
