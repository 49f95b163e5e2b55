"""Duplicate removal over a ranked candidate list: keep the best row of each url / pHash group.

Called on the candidates of a top-K selection, best first. A row whose url (or image pHash) was
already seen higher in the ranking is a duplicate. Because every group's best row ranks above
the rest of its group, deduplicating the candidates gives exactly the selection a global dedup
would — without holding all N urls in memory.
"""
from __future__ import annotations

from collections import Counter

DEDUP_FIELDS = {"url": "url", "phash": "image_phash"}


def check_fields(fields: list[str]) -> list[str]:
    from vilactl.base.errors import VilactlError

    bad = [f for f in fields if f not in DEDUP_FIELDS]
    if bad:
        raise VilactlError(f"--dedup takes {', '.join(DEDUP_FIELDS)}; got {', '.join(bad)}")
    return fields


def dedup_ranked(ranked_ids: list, meta: dict, fields: list[str]) -> tuple[list, list, Counter]:
    """(kept ids, dropped ids, drops per field) for ids ranked best first.

    `meta[id]` maps a column name (url, image_phash) to its value; null values never match."""
    seen = {f: set() for f in fields}
    kept, dropped, counts = [], [], Counter()
    for i in ranked_ids:
        row = meta.get(i, {})
        hit = next((f for f in fields if row.get(DEDUP_FIELDS[f]) is not None
                    and row[DEDUP_FIELDS[f]] in seen[f]), None)
        if hit:
            dropped.append(i)
            counts[hit] += 1
            continue
        kept.append(i)
        for f in fields:
            if row.get(DEDUP_FIELDS[f]) is not None:
                seen[f].add(row[DEDUP_FIELDS[f]])
    return kept, dropped, counts
