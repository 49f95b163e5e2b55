"""What `vilactl report` shows, read from the catalog with SQL (catalog/ owns the SQL).

Every function takes an open read-only connection and returns plain Python data; a part of the
pipeline that has not run yet gives an empty result, so a report can be made at any point.
"""
from __future__ import annotations

import json

import duckdb

from vilactl.base.kinds import Kind
from vilactl.catalog.rows import view_name


def _dicts(rel: duckdb.DuckDBPyRelation) -> list[dict]:
    cols = rel.columns
    return [dict(zip(cols, r)) for r in rel.fetchall()]


def datasets(con) -> list[dict]:
    return _dicts(con.sql("SELECT name, kind, num_samples, num_images, num_text_words, parents "
                          "FROM datasets ORDER BY created_at"))


def stage_counts(con) -> list[dict]:
    """Runs of the pipeline's commands with their status and counts (download failures by
    reason, documents dropped by reason, …), oldest first."""
    rows = _dicts(con.sql("SELECT id, command, status, counts, error, started_at, finished_at "
                          "FROM runs WHERE command NOT LIKE 'vilactl demo:%' ORDER BY started_at"))
    for r in rows:
        r["counts"] = json.loads(r["counts"] or "{}")
    return rows


_SELECTIONS = (
    "SELECT s.name, s.dataset, s.score_expr, s.k, s.cutoff, s.num_candidates, s.num_selected, "
    "       s.created_at, "
    f"       (SELECT d.name FROM datasets d WHERE d.kind = '{Kind.CLIP_SCORES}' AND "
    "        list_contains(d.parents, s.dataset) ORDER BY d.created_at DESC LIMIT 1) AS scores"
    " FROM selections s ORDER BY s.created_at")


def selections(con) -> list[dict]:
    """Every COYO selection, oldest first, each with its scores dataset (kind clip-scores of
    the same source; None when the source has none)."""
    return _dicts(con.sql(_SELECTIONS))


def scores_with_kept(con, sel: dict) -> list[tuple[float, bool]]:
    q = (f'SELECT s.score, s.id IN (SELECT id FROM "{view_name(sel["name"])}") AS kept '
         f'FROM "{view_name(sel["scores"])}" s WHERE s.score IS NOT NULL')
    return con.sql(q).fetchall()


def pairs_by_score(con, sel: dict, where: str, n: int = 8) -> list[dict]:
    """Downloaded pairs with score and kept flag: where = top | bottom | cutoff."""
    order = {"top": "s.score DESC", "bottom": "s.score ASC",
             "cutoff": f"abs(s.score - {float(sel['cutoff'] or 0)}), s.score DESC"}[where]
    q = (f'SELECT c.image, c.text, s.score, c.id IN (SELECT id FROM "{view_name(sel["name"])}")'
         f' AS kept FROM "{view_name(sel["dataset"])}" c JOIN "{view_name(sel["scores"])}" s '
         f"USING (id) ORDER BY {order}, c.id LIMIT {int(n)}")
    return _dicts(con.sql(q))


VARIANT_KINDS = [Kind.MMC4_INTERLEAVED, Kind.MMC4_AFTER, Kind.MMC4_SHUFFLED, Kind.MMC4_PAIRS]


def first_samples(con) -> list[dict]:
    """The first sample of each MMC4 variant dataset, for rendering as documents."""
    out = []
    for (name, kind) in con.sql("SELECT name, kind FROM datasets WHERE list_contains(?, kind) "
                                "ORDER BY name", params=[[str(k) for k in VARIANT_KINDS]]
                                ).fetchall():
        rows = _dicts(con.sql(f'SELECT sample_id, segments FROM "{view_name(name)}" '
                              "ORDER BY sample_id LIMIT 1"))
        if rows:
            out.append({"dataset": name, "kind": kind, **rows[0]})
    return out


def blend_components(con) -> list[dict]:
    return _dicts(con.sql("SELECT blend, dataset, unit, weight, achieved_share, num_samples, "
                          "num_images, repeats FROM blend_components ORDER BY blend, dataset"))


def training_runs(con) -> list[dict]:
    """The newest final checkpoint of each training run (stage, path), oldest first."""
    return _dicts(con.sql(
        "SELECT id, stage, path, blend, parent, metrics FROM checkpoints WHERE stage IN "
        "('projector', 'pretrain', 'sft') AND json_extract(metrics, '$.final')::BOOLEAN "
        "ORDER BY created_at"))


def evals(con) -> list[dict]:
    return _dicts(con.sql("SELECT checkpoint, dataset, task, metric, shots, value, num_examples "
                          "FROM evals ORDER BY checkpoint, dataset, metric, shots"))


def eval_samples(con, dataset: str, sample_ids: list[str]) -> dict[str, list[dict]]:
    """The segments (text, image) of some samples of an eval set, by sample id."""
    if not sample_ids or not con.sql("SELECT 1 FROM datasets WHERE name = ?",
                                     params=[dataset]).fetchall():
        return {}
    rows = con.sql(f'SELECT sample_id, segments FROM "{view_name(dataset)}" '
                   "WHERE list_contains(?, sample_id)", params=[sample_ids]).fetchall()
    return dict(rows)


def ablate_runs(con) -> list[dict]:
    """The newest finished `vilactl ablate` run of each study (its counts: study, seeds, rows,
    summary), oldest first; runs from before studies were recorded are left out."""
    rows = _dicts(con.sql(
        "SELECT id, finished_at, counts FROM runs WHERE command = 'vilactl ablate' AND "
        "status = 'ok' AND json_extract_string(counts, '$.study') IS NOT NULL AND "
        "json_extract(counts, '$.summary') IS NOT NULL QUALIFY row_number() OVER (PARTITION "
        "BY json_extract_string(counts, '$.study') ORDER BY finished_at DESC) = 1 "
        "ORDER BY finished_at"))
    return [{**json.loads(r.pop("counts")), **r} for r in rows]
