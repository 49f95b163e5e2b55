"""Writing to the catalog: runs, datasets with their shards, and a SQL view per dataset.

Callers pass a connection from `db.writer()`, so all rows of one command land in a single
transaction. Paths are stored absolute, so the catalog can be opened from any directory
(`duckdb <workspace>/catalog.duckdb`) and its views still find their Parquet files.
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from vilactl.base.errors import VilactlError
from vilactl.base.kinds import Kind


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_run_id() -> str:
    return f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def versions() -> dict[str, str]:
    """Versions of what shapes results, so a run can be reproduced."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("vilactl", "duckdb", "pyarrow", "numpy", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    for mod in ("torch", "open_clip", "transformers", "ray"):  # only if the run loaded them
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


@dataclass
class Run:
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_run_id)
    started_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    status: str = "running"
    error: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    target: str | None = None          # the output it writes: datasets/<name>, checkpoints/<run>


def record_run(con: duckdb.DuckDBPyConnection, run: Run) -> None:
    con.execute(
        "INSERT OR REPLACE INTO runs (id, command, args, started_at, finished_at, status, error, "
        "counts, versions, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run.id, run.command, json.dumps(run.args, sort_keys=True, default=str), run.started_at,
         run.finished_at, run.status, run.error,
         json.dumps(run.counts, sort_keys=True, default=str),
         json.dumps(versions(), sort_keys=True), run.target])


@dataclass
class Shard:
    path: str
    rows: int
    bytes: int
    checksum: str
    source: str | None = None
    status: str = "done"
    counts: dict[str, Any] | None = None


@dataclass
class Dataset:
    name: str
    kind: str
    format: str
    uri: str
    num_samples: int
    num_images: int
    num_texts: int
    num_bytes: int
    parents: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def view_name(dataset: str) -> str:
    return "samples_" + re.sub(r"\W", "_", dataset)


def dataset_row(con: duckdb.DuckDBPyConnection, name: str) -> dict | None:
    rel = con.sql("SELECT * FROM datasets WHERE name = ?", params=[name])
    rows = rel.fetchall()
    return dict(zip(rel.columns, rows[0])) if rows else None


def record_dataset(con: duckdb.DuckDBPyConnection, ds: Dataset, shards: list[Shard],
                   run_id: str, replace: bool = False, text_words: int | None = None) -> None:
    """Insert a dataset, its shards and its view (and its text words, when counted).
    Re-registering a name needs replace=True (jobs check names before they start)."""
    if dataset_row(con, ds.name) is not None:
        if not replace:
            raise VilactlError(f"dataset {ds.name!r} is already in the catalog "
                               "(pass --replace to register it again, or choose --name)")
        con.execute("DELETE FROM shards WHERE dataset = ?", [ds.name])
        con.execute("DELETE FROM datasets WHERE name = ?", [ds.name])
    view = view_name(ds.name) if any(s.path.endswith(".parquet") for s in shards) else None
    con.execute(
        "INSERT INTO datasets (name, kind, format, uri, parents, params, run_id, num_samples, "
        "num_images, num_texts, num_bytes, view_name, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [ds.name, ds.kind, ds.format, ds.uri, ds.parents, json.dumps(ds.params, sort_keys=True),
         run_id, ds.num_samples, ds.num_images, ds.num_texts, ds.num_bytes, view, now()])
    created = now()
    if shards:
        con.executemany(
            "INSERT INTO shards (dataset, path, rows, bytes, checksum, status, source, run_id, "
            "created_at, counts, mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[ds.name, s.path, s.rows, s.bytes, s.checksum, s.status, s.source, run_id, created,
              None if s.counts is None else json.dumps(s.counts, sort_keys=True),
              _mtime_ns(s.path)]
             for s in shards])
    if view:
        files = [s.path for s in shards if s.path.endswith(".parquet")]
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f'CREATE OR REPLACE VIEW "{view}" AS '
                    f"SELECT * FROM read_parquet([{listing}])")
    if text_words is not None:
        set_text_words(con, ds.name, text_words)


def _mtime_ns(path: str) -> int | None:
    """The file's mtime as it is committed (a rename keeps it), for catalog/integrity.py."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def dataset_shards(workspace, name: str, check: bool = True) -> tuple[dict, list[str]]:
    """A dataset's catalog row and its finished shard paths; one clear line if unknown.
    Every caller reads those files next, so each is first checked unchanged since it was
    recorded (size, mtime, Parquet footer; the sha256 of small files: catalog/integrity.py)
    unless `check=False` (callers that want the row only)."""
    from vilactl.catalog import db, integrity

    if not db.catalog_path(workspace).exists():
        raise VilactlError(f"unknown dataset {name!r}: no catalog in {workspace}")
    with db.reader(workspace) as con:
        row = dataset_row(con, name)
        if row is None:
            raise VilactlError(f"unknown dataset {name!r} (see `vilactl catalog`)")
        recorded = integrity.recorded_shards(con, name)
    if check:
        integrity.check_unchanged(name, recorded)
    return row, [s.path for s in recorded]


def record_failure(workspace, run: Run, error: BaseException) -> None:
    """Mark a run failed with the first line of its error, in its own transaction."""
    from vilactl.catalog import db

    run.status, run.finished_at = "failed", now()
    run.error = (str(error).strip().splitlines() or [type(error).__name__])[0]
    with db.writer(workspace) as con:
        record_run(con, run)


def finished_run(con: duckdb.DuckDBPyConnection, command: str, args: dict) -> dict | None:
    """The latest successful run of `command` with exactly these args, if any (for resume)."""
    rel = con.sql("SELECT id, counts FROM runs WHERE command = ? AND status = 'ok' "
                  "AND args = ?::JSON ORDER BY finished_at DESC LIMIT 1",
                  params=[command, json.dumps(args, sort_keys=True, default=str)])
    rows = rel.fetchall()
    return {"id": rows[0][0], "counts": json.loads(rows[0][1] or "{}")} if rows else None


def resolve(path: str | Path) -> str:
    return str(Path(path).resolve())


def mark_interrupted(con: duckdb.DuckDBPyConnection, target: str, by_run: str) -> None:
    """Runs of `target` still 'running' when a new one holds its lock were killed: mark them
    incomplete."""
    con.execute("UPDATE runs SET status = 'incomplete', finished_at = ?, error = ? "
                "WHERE status = 'running' AND target = ?",
                [now(), f"interrupted before finishing; followed by run {by_run}", target])


def set_text_words(con: duckdb.DuckDBPyConnection, dataset: str, tokens: int) -> None:
    con.execute("UPDATE datasets SET num_text_words = ? WHERE name = ?", [tokens, dataset])


def record_selection(con: duckdb.DuckDBPyConnection, name: str, dataset: str, score_expr: str,
                     k: int, cutoff: float | None, candidates: int, selected: int,
                     params: dict, run_id: str) -> None:
    con.execute("DELETE FROM selections WHERE name = ?", [name])
    con.execute("INSERT INTO selections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, dataset, score_expr, k, cutoff, candidates, selected,
                 json.dumps(params, sort_keys=True, default=str), run_id, now()])


def record_checkpoint(con: duckdb.DuckDBPyConnection, id: str, stage: str, run_id: str,
                      path: str, step: int, metrics: dict, blend: str | None = None,
                      parent: str | None = None) -> None:
    con.execute("DELETE FROM checkpoints WHERE id = ?", [id])
    con.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [id, stage, run_id, path, step, blend, parent,
                 json.dumps(metrics, sort_keys=True), now()])


def record_blend(con: duckdb.DuckDBPyConnection, manifest: dict, uri: str,
                 parents: list[str], run_id: str) -> None:
    """A blend and its components (requested weight vs achieved share) from its manifest."""
    name = manifest["name"]
    con.execute("DELETE FROM blend_components WHERE blend = ?", [name])
    con.execute("DELETE FROM blends WHERE name = ?", [name])
    con.execute("INSERT INTO blends (name, uri, seed, num_samples, num_images, num_text_words, "
                "params, run_id, created_at, parents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, uri, manifest["seed"], manifest["num_samples"], manifest["num_images"],
                 manifest["num_text_words"], json.dumps(manifest["params"], sort_keys=True),
                 run_id, now(), parents])
    con.executemany(
        "INSERT INTO blend_components (blend, dataset, weight, achieved_share, num_samples, "
        "num_images, repeats, unit, num_text_words) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[name, c["dataset"], c["weight"], c["achieved_share"], c["num_samples"],
          c["num_images"], c["repeats"], c["unit"], c["num_text_words"]]
         for c in manifest["components"]])


def clip_score_shards(workspace, dataset: str) -> list[tuple[str, dict, str, str]]:
    """(scores dataset, its params, source shard, score file) of the CLIP scores made from
    `dataset`, newest scores first."""
    from vilactl.catalog import db

    with db.reader(workspace) as con:
        rows = con.sql("SELECT d.name, d.params, s.source, s.path FROM datasets d JOIN shards s "
                       f"ON s.dataset = d.name WHERE d.kind = '{Kind.CLIP_SCORES}' AND "
                       "list_contains(d.parents, ?) ORDER BY d.created_at DESC",
                       params=[dataset]).fetchall()
    return [(n, json.loads(p or "{}"), src, path) for n, p, src, path in rows]


def find_checkpoint(workspace, ref: str | None = None, stage: str | None = None) -> dict | None:
    """A checkpoint row by id (`pretrain@120`, or a run name for its final checkpoint), or the
    newest final checkpoint of `stage`."""
    from vilactl.catalog import db

    if not db.catalog_path(workspace).exists():
        return None
    if ref is not None:
        q = ("SELECT * FROM checkpoints WHERE id = ? OR (split_part(id, '@', 1) = ? AND "
             "json_extract(metrics, '$.final')::BOOLEAN) ORDER BY created_at DESC LIMIT 1")
        params = [ref, ref]
    else:
        q = ("SELECT * FROM checkpoints WHERE stage = ? AND "
             "json_extract(metrics, '$.final')::BOOLEAN ORDER BY created_at DESC LIMIT 1")
        params = [stage]
    with db.reader(workspace) as con:
        rel = con.sql(q, params=params)
        rows, columns = rel.fetchall(), rel.columns
    return dict(zip(columns, rows[0])) if rows else None


def record_evals(con: duckdb.DuckDBPyConnection, rows: list[dict], run_id: str) -> None:
    """Eval results (one row per checkpoint, dataset, metric and shots); reruns replace."""
    created = now()
    for r in rows:
        rid = f"{r['checkpoint']}:{r['dataset']}:{r['metric']}:{r['shots']}"
        con.execute("DELETE FROM evals WHERE id = ?", [rid])
        con.execute("INSERT INTO evals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [rid, r["checkpoint"], r["dataset"], r["task"], r["shots"], r["metric"],
                     r["value"], r["n"], run_id, created])


def forget_checkpoints(con: duckdb.DuckDBPyConnection, run_name: str) -> None:
    """Drop the checkpoint rows of a training run that starts over (its folder is replaced)."""
    con.execute("DELETE FROM checkpoints WHERE split_part(id, '@', 1) = ? AND stage <> 'clip'",
                [run_name])


def newest_dataset(workspace, kind: str, selected: bool = False) -> str | None:
    """The newest dataset of `kind` (with `selected`: the newest made by `vilactl curate`)."""
    from vilactl.catalog import db

    if not db.catalog_path(workspace).exists():
        return None
    q = ("SELECT d.name FROM datasets d JOIN selections s ON s.name = d.name WHERE d.kind = ? "
         "ORDER BY s.created_at DESC LIMIT 1" if selected else
         "SELECT name FROM datasets WHERE kind = ? ORDER BY created_at DESC LIMIT 1")
    with db.reader(workspace) as con:
        rows = con.sql(q, params=[str(kind)]).fetchall()
    return rows[0][0] if rows else None


def newest_source(workspace, kinds: list[str]) -> str | None:
    """The newest dataset of one of `kinds` that `vilactl curate` did not make (a source to
    select from, not an earlier selection)."""
    from vilactl.catalog import db

    if not db.catalog_path(workspace).exists():
        return None
    with db.reader(workspace) as con:
        rows = con.sql("SELECT name FROM datasets WHERE list_contains(?, kind) AND name NOT IN "
                       "(SELECT name FROM selections) ORDER BY created_at DESC LIMIT 1",
                       params=[kinds]).fetchall()
    return rows[0][0] if rows else None
