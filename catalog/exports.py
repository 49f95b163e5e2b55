"""The catalog side of `vilactl export`: the `exports` row, a checkpoint's lineage (the
checkpoints it grew from, their blends, those blends' datasets back to the raw ones, its evals)
for the model card, and every path the catalog records (an export never writes onto one).
"""
from __future__ import annotations

import json
from pathlib import Path

import duckdb

from vilactl.catalog import db
from vilactl.catalog.rows import now


def record_export(con: duckdb.DuckDBPyConnection, row: dict, run_id: str) -> None:
    """One row per exported folder; exporting again to the same folder replaces it."""
    con.execute("DELETE FROM exports WHERE path = ?", [row["path"]])
    con.execute(
        "INSERT INTO exports (path, checkpoint, source_path, format, checksum, files, num_bytes, "
        "checkpoints, blends, params, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?)",
        [row["path"], row["checkpoint"], row["source_path"], row["format"], row["checksum"],
         json.dumps(row["files"], sort_keys=True), row["num_bytes"], row["checkpoints"],
         row["blends"], json.dumps(row["params"], sort_keys=True, default=str), run_id, now()])


def _rows(con, sql: str, params: list) -> list[dict]:
    rel = con.sql(sql, params=params)
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def checkpoint_chain(con, checkpoint_id: str | None) -> list[dict]:
    """The checkpoint and each one it started from (sft → pretrain → projector), newest first."""
    chain, seen = [], set()
    while checkpoint_id and checkpoint_id not in seen:
        seen.add(checkpoint_id)
        rows = _rows(con, "SELECT id, stage, step, blend, parent, path, metrics FROM checkpoints "
                          "WHERE id = ?", [checkpoint_id])
        if not rows:
            break
        chain.append(rows[0])
        checkpoint_id = rows[0]["parent"]
    return chain


def blend_lineage(con, blends: list[str]) -> dict[str, dict]:
    """Per blend: its components (dataset, unit, weight, achieved share) and, per component,
    the datasets it was made from back to the registered ones (`a ← b ← c`)."""
    parents = {r["name"]: list(r["parents"] or []) for r in
               _rows(con, "SELECT name, parents FROM datasets", [])}

    def ancestry(name: str, depth: int = 0) -> str:
        ups = parents.get(name) or []
        if not ups or depth > 10:
            return name
        return f"{name} ← " + ", ".join(ancestry(p, depth + 1) for p in ups)

    out = {}
    for b in blends:
        comps = _rows(con, "SELECT dataset, unit, weight, achieved_share, num_samples, "
                           "num_images FROM blend_components WHERE blend = ? ORDER BY dataset",
                      [b])
        out[b] = {"components": [{**c, "lineage": ancestry(c["dataset"])} for c in comps]}
    return out


def evals_of(con, checkpoint_id: str | None) -> list[dict]:
    """The checkpoint's headline eval numbers (per-type breakdowns left out)."""
    if not checkpoint_id:
        return []
    return _rows(con, "SELECT dataset, task, metric, shots, value, num_examples FROM evals WHERE "
                      "checkpoint = ? AND metric NOT LIKE '%:%' ORDER BY dataset, metric, shots",
                 [checkpoint_id])


def lineage(workspace: Path, checkpoint_id: str | None) -> dict:
    """Everything the model card says about where a checkpoint came from."""
    if not checkpoint_id or not db.catalog_path(workspace).exists():
        return {"checkpoints": [], "blends": {}, "evals": []}
    with db.reader(workspace) as con:
        chain = checkpoint_chain(con, checkpoint_id)
        blends = list(dict.fromkeys(c["blend"] for c in chain if c["blend"]))
        return {"checkpoints": chain, "blends": blend_lineage(con, blends),
                "evals": evals_of(con, checkpoint_id)}


def recorded_paths(workspace: Path) -> list[tuple[str, str]]:
    """(what, absolute path) of everything the catalog records: the catalog itself and its
    write-ahead log, dataset locations (a glob's fixed folder), shards, blends, checkpoints and
    earlier exports."""
    catalog = db.catalog_path(workspace).resolve()
    out = [("the catalog", str(catalog)),
           ("the catalog's write-ahead log", str(catalog.with_name(catalog.name + ".wal")))]
    if not db.catalog_path(workspace).exists():
        return out
    queries = [("dataset", "SELECT name, uri FROM datasets"),
               ("shard of", "SELECT dataset, path FROM shards"),
               ("blend", "SELECT name, uri FROM blends"),
               ("checkpoint", "SELECT id, path FROM checkpoints"),
               ("export", "SELECT path, path FROM exports")]
    with db.reader(workspace) as con:
        for what, q in queries:
            for name, path in con.sql(q).fetchall():
                if path:
                    out.append((f"{what} {name}", _fixed_part(path)))
    return out


def _fixed_part(uri: str) -> str:
    """The folder a glob lives in (`/data/coyo/*.parquet` → `/data/coyo`), else the path."""
    parts = Path(uri).parts
    for i, p in enumerate(parts):
        if any(ch in p for ch in "*?["):
            return str(Path(*parts[:i]))
    return uri
