"""Flatten MMC4 documents to image URLs and re-attach the downloaded images.

Each image gets a stable key `<doc_id>#<image index>`, so a rerun fetches and attaches exactly
the same images. Two policies for documents that lost images:
  * require_all (VILA's rule, default): keep a document only if every image downloaded;
  * partial: keep it, dropping the lost images, their assignments and their rows of the
    similarity matrix (the sentences stay).
"""
from __future__ import annotations

from collections import Counter


def image_key(doc_id: str, index: int) -> str:
    return f"{doc_id}#{index}"


def flatten(docs: list[dict]) -> tuple[list[str], list[str]]:
    """(keys, urls) of every image of every document, in document order."""
    keys, urls = [], []
    for d in docs:
        for i, info in enumerate(d["image_info"]):
            keys.append(image_key(d["doc_id"], i))
            urls.append(info["raw_url"])
    return keys, urls


IMAGE_COLUMNS = ("image", "width", "height", "original_width", "original_height", "sha256")


def attach(docs: list[dict], fetched: dict[str, dict], require_all: bool = True
           ) -> tuple[list[dict], Counter]:
    """Documents with image bytes in their image_info slots, and what happened to them.

    `fetched` maps image key → a fetch result row (reason None on success)."""
    out, counts = [], Counter()
    for d in docs:
        ok = [fetched[image_key(d["doc_id"], i)]["reason"] is None
              for i in range(len(d["image_info"]))]
        counts["docs_in"] += 1
        counts["images_in"] += len(ok)
        if not all(ok) and require_all:
            counts["docs_dropped_missing_images"] += 1
            continue
        if not any(ok):
            counts["docs_dropped_no_images"] += 1
            continue
        if not all(ok):
            counts["docs_partial"] += 1
            counts["images_dropped"] += ok.count(False)
        infos = []
        for i, info in enumerate(d["image_info"]):
            if ok[i]:
                res = fetched[image_key(d["doc_id"], i)]
                infos.append({**info, **{c: res[c] for c in IMAGE_COLUMNS}})
        sim = d.get("similarity_matrix")
        out.append({**d, "image_info": infos,
                    "similarity_matrix": None if sim is None else
                    [row for row, keep in zip(sim, ok) if keep]})
        counts["docs_kept"] += 1
        counts["images_kept"] += len(infos)
    return out, counts
