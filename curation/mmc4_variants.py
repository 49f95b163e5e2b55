"""MMC4 documents → training samples: core filters and the four variants of the paper's ablation.

  interleaved  each image right *before* its matched sentence — the paper's MMC4
  after        each image right after its matched sentence
  shuffled     the same texts and images, images at seeded random sentence boundaries
               (breaks the image↔text correspondence: a control)
  pairs        MMC4-pairs: one sample per assigned image, the image and its matched sentence

At most `max_images` images of a document are kept (VILA: 6): by default the first ones in page
order, as VILA does (`image_order="page"`); `"sentence"` keeps those matched to the earliest
sentences instead.

Assignments come from the document's own similarity matrix via MMC4's algorithm
(curation/assignment.py), so they reproduce MMC4's published `matched_text_index`; documents
without a matrix keep their `matched_text_index`. Images dropped by the 0.15 threshold are left
out. All segments are role "user": pretraining trains on all text (DESIGN.md §Records).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from vilactl.base.kinds import Kind
from vilactl.base.vocab import MMC4_VARIANTS
from vilactl.curation.assignment import assign
from vilactl.curation.records import segment

VARIANTS = MMC4_VARIANTS              # base/vocab.py: also the CLI's choices


@dataclass(frozen=True)
class CoreFilter:
    """mmc4-core-style document filters; a document failing one is counted under its name."""
    min_sentences: int = 4
    max_sentences: int = 40
    min_images: int = 2
    max_images: int = 15
    strong_sim: float = 0.25        # an assignment is "strong" above this similarity
    min_strong_share: float = 0.75  # share of a document's assignments that must be strong
    min_side: int = 0               # smallest allowed image side in pixels (0: no limit)
    max_aspect: float = 0.0         # largest allowed long/short side ratio (0: no limit)

    def reason(self, doc: dict, matched: np.ndarray, sims: np.ndarray) -> str | None:
        n_s, n_i = len(doc["text_list"]), len(doc["image_info"])
        if not self.min_sentences <= n_s <= self.max_sentences:
            return "sentences_out_of_range"
        if not self.min_images <= n_i <= self.max_images:
            return "images_out_of_range"
        kept = matched >= 0
        if kept.any() and (sims[kept] > self.strong_sim).mean() < self.min_strong_share:
            return "weak_assignments"
        for info in doc["image_info"]:
            w, h = info.get("width") or 0, info.get("height") or 0
            if self.min_side and min(w, h) < self.min_side:
                return "image_too_small"
            if self.max_aspect and min(w, h) and max(w, h) / min(w, h) > self.max_aspect:
                return "aspect_ratio"
        return None


def assignment(doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """(sentence index per image or -1, similarity of that assignment)."""
    sim = doc.get("similarity_matrix")
    if sim:
        sim = np.asarray(sim, dtype=np.float64)
        matched = assign(sim)
        sims = np.array([sim[i, j] if j >= 0 else np.nan for i, j in enumerate(matched)])
        return matched, sims
    matched = np.array([i.get("matched_text_index") if i.get("matched_text_index") is not None
                        else -1 for i in doc["image_info"]], dtype=np.int64)
    sims = np.array([i.get("matched_sim") or np.nan for i in doc["image_info"]])
    return matched, sims


def _placed(matched: np.ndarray, max_images: int, image_order: str = "page") -> list[int]:
    """Indices of the assigned images to keep, at most max_images: the first in page order, or
    (image_order="sentence") those matched to the earliest sentences (ties by image index)."""
    if image_order == "page":
        return [i for i, j in enumerate(matched) if j >= 0][:max_images]
    order = sorted((int(j), i) for i, j in enumerate(matched) if j >= 0)
    return [i for _, i in order[:max_images]]


def _doc_sample(doc: dict, variant: str, by_sentence: dict[int, list[int]]) -> dict:
    segs = []
    images = doc["image_info"]
    for j, text in enumerate(doc["text_list"]):
        before = variant != "after"
        imgs = [segment("user", image=images[i]["image"]) for i in by_sentence.get(j, [])]
        segs.extend(imgs if before else [])
        segs.append(segment("user", text))
        segs.extend([] if before else imgs)
    segs.extend(segment("user", image=images[i]["image"]) for i in by_sentence.get(-1, []))
    return {"sample_id": doc["doc_id"], "source": str(Kind.mmc4_variant(variant)), "segments": segs}


def doc_seed(seed: int, doc_id: str) -> int:
    """A per-document seed, independent of document order and of other documents."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "little")


def build(doc: dict, variant: str, max_images: int = 6, seed: int = 0,
          image_order: str = "page") -> list[dict]:
    """The samples one document gives in a variant (empty if no image was assigned)."""
    matched, _ = assignment(doc)
    keep = _placed(matched, max_images, image_order)
    if not keep:
        return []
    if variant == "pairs":
        return [{"sample_id": f"{doc['doc_id']}#{i}", "source": "mmc4-pairs",
                 "segments": [segment("user", image=doc["image_info"][i]["image"]),
                              segment("user", doc["text_list"][int(matched[i])])]}
                for i in keep]
    by_sentence: dict[int, list[int]] = {}
    if variant == "shuffled":
        # Boundary b = before sentence b; b == n puts the image after the last sentence.
        rng = np.random.default_rng(doc_seed(seed, doc["doc_id"]))
        n = len(doc["text_list"])
        for i in keep:
            b = int(rng.integers(0, n + 1))
            by_sentence.setdefault(b if b < n else -1, []).append(i)
    elif variant in ("interleaved", "after"):
        for i in keep:
            by_sentence.setdefault(int(matched[i]), []).append(i)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return [_doc_sample(doc, "interleaved" if variant == "shuffled" else variant, by_sentence)
            | {"source": str(Kind.mmc4_variant(variant))}]


def count(samples: list[dict]) -> dict:
    """images, text segments and whitespace words of a list of samples."""
    segs = [s for smp in samples for s in smp["segments"]]
    return {"samples": len(samples), "images": sum(s["image"] is not None for s in segs),
            "sentences": sum(s["text"] is not None for s in segs),
            "text_words": sum(len(s["text"].split()) for s in segs if s["text"] is not None)}
