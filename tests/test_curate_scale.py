"""Curate at COYO scale, in small: the exact cutoff from two counting passes, reads that stream
record batches (never a whole shard), output row groups of ≥ 64k rows, the literal commands
with defaults, the score kept through `download --from-dataset`, and one line per Ray OOM kill.
(The figures at 100M rows come from benchmarks/bench_coyo_scale.py, not from tests.)"""
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import one_line_error, run_cli, sql

from vilactl.curation import histogram_select as hs
from vilactl.curation import shard_select
from vilactl.curation.shard_select import ShardSource

VILA = "clip_similarity_vitb32 + clip_similarity_vitl14"
SQL_SCORE = ("CAST(clip_similarity_vitb32 AS DOUBLE) + CAST(clip_similarity_vitl14 AS DOUBLE)")


def reference(scores: np.ndarray, ids: np.ndarray, k: int) -> set:
    ok = np.isfinite(scores)
    order = np.lexsort((ids[ok], -scores[ok]))
    return set(ids[ok][order][:k].tolist())


def kept(cutoff, scores, ids) -> set:
    return set(ids[cutoff.keep(scores, ids)].tolist()) if cutoff else set()


@pytest.mark.parametrize("k", [1, 7, 500, 2999, 3000, 5000])
def test_cutoff_equals_lexsort_with_ties_and_non_finite(k):
    rng = np.random.default_rng(k)
    scores = np.round(rng.normal(0.5, 0.05, 3100), 2)            # few values: heavy ties
    scores[:40] = np.nan
    scores[40:45], scores[45:50], scores[50:60] = np.inf, -np.inf, -0.0
    scores[60:70] = 0.0
    ids = rng.permutation(10**6)[:3100].astype(np.int64)
    batches = [(scores[i:i + 400], ids[i:i + 400]) for i in range(0, 3100, 400)]
    cutoff = hs.select_cutoff(batches, k)
    assert kept(cutoff, scores, ids) == reference(scores, ids, k)


def test_one_score_shared_by_every_row_keeps_the_smallest_ids():
    ids = np.random.default_rng(0).permutation(50_000).astype(np.int64)
    scores = np.full(50_000, 0.25)
    cutoff = hs.select_cutoff([(scores[:20_000], ids[:20_000]), (scores[20_000:], ids[20_000:])],
                              123)
    assert kept(cutoff, scores, ids) == set(range(123))


def test_the_histogram_does_not_grow_with_rows():
    """Memory of pass 1: one count per bucket, ~2^16 per binary exponent, whatever N."""
    rng = np.random.default_rng(0)
    hist = hs.Histogram()
    for _ in range(20):
        hist.add(rng.uniform(0.5, 1.0, 100_000))                # one exponent: [0.5, 1)
    assert hist.total == 2_000_000 and len(hist.buckets) <= 1 << 16
    assert hs.boundary(hist, 1).need == 1


@pytest.fixture(scope="module")
def big_meta(tmp_path_factory):
    """360k COYO rows in 3 files of 6 row groups: 4-decimal similarities (ties), NaN and null."""
    folder = tmp_path_factory.mktemp("bigmeta")
    rng = np.random.default_rng(3)
    ids = rng.permutation(10**7)[:360_000].astype(np.int64) + 10**12
    for f in range(3):
        part = ids[f * 120_000:(f + 1) * 120_000]
        n = len(part)
        b32 = np.round(rng.normal(0.3, 0.04, n), 4).astype(np.float32)
        b32[rng.random(n) < 0.001] = np.nan
        table = pa.table({
            "id": part, "url": [f"https://img.example/{i}.jpg" for i in part],
            "text": ["a photo"] * n, "image_phash": [f"{i % 9999:016x}" for i in part],
            "clip_similarity_vitb32": pa.array(b32, mask=rng.random(n) < 0.001),
            "clip_similarity_vitl14": np.round(rng.normal(0.25, 0.04, n), 4).astype(np.float32)})
        pq.write_table(table, folder / f"part-{f:05d}.parquet", row_group_size=20_000)
    return folder


def test_shard_passes_stream_record_batches(big_meta, tmp_path, monkeypatch):
    """Fails if any pass reads a whole shard: every read must be a record batch of at most
    BATCH_ROWS rows, and the counting passes read only the columns of the score (and id)."""
    reads = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        for batch in iter_batches(self, *a, **kw):
            reads.append((batch.num_rows, tuple(batch.schema.names)))
            yield batch

    def whole(*a, **kw):
        raise AssertionError("a whole shard was read")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    for name in ("read", "read_row_groups", "read_row_group"):
        monkeypatch.setattr(pq.ParquetFile, name, whole)
    monkeypatch.setattr(pq, "read_table", whole)
    monkeypatch.setattr(shard_select, "BATCH_ROWS", 5_000)
    src = ShardSource(str(big_meta / "part-00000.parquet"), expr=VILA)

    hist = shard_select.shard_histogram(src)
    assert {frozenset(cols) for _, cols in reads} == {frozenset(
        ("clip_similarity_vitb32", "clip_similarity_vitl14"))}
    b = hs.boundary(hist, 1000)
    reads.clear()
    _, keys, ids = shard_select.shard_boundary(src, b)
    assert {frozenset(cols) for _, cols in reads} == {frozenset(
        ("id", "clip_similarity_vitb32", "clip_similarity_vitl14"))}
    cutoff = hs.exact_cutoff([(keys, ids)], b.need)
    reads.clear()
    out = tmp_path / "part.parquet"
    assert shard_select.part_write([src], cutoff, np.empty(0, np.int64), str(out), 400) == 1000
    assert max(n for n, _ in reads) <= 5_000 and len(reads) == 120_000 // 5_000
    monkeypatch.undo()
    groups = pq.read_metadata(out)
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [400, 400, 200]


def duckdb_top(folder: Path, k: int) -> set:
    con = duckdb.connect()
    rows = con.sql(f"SELECT id FROM read_parquet('{folder}/*.parquet') WHERE isfinite("
                   f"{SQL_SCORE}) ORDER BY {SQL_SCORE} DESC, id LIMIT {k}").fetchall()
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def registered(big_meta, tmp_path_factory):
    ws = tmp_path_factory.mktemp("scalews") / "ws"
    out = run_cli("register", "coyo", "--metadata", str(big_meta / "*.parquet"), workspace=ws,
                  check=True)
    assert "registered coyo_meta: 360000 rows" in out.stdout
    return ws


def test_literal_commands_with_defaults(big_meta, registered, ray_head):
    """`register coyo` then `curate coyo --top-k K` with no other option: the newest COYO
    dataset, VILA's similarity sum (said first), exact in float64, row groups ≥ 64k rows."""
    ws, k = registered, 200_000
    out = run_cli("--ray-address", ray_head, "curate", "coyo", "--top-k", str(k), workspace=ws,
                  check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("curate: dataset coyo_meta (the newest COYO dataset")
    assert lines[1].startswith(f"curate: no `vilactl score` run for coyo_meta: selecting by "
                               f"COYO's precomputed CLIP similarities, {VILA}")
    assert any(line.startswith("curate: count: 3/3 shards") for line in lines)  # progress
    got = {r["id"] for r in sql(ws, "SELECT id FROM samples_coyo_meta_top200000")}
    assert got == duckdb_top(big_meta, k)
    files = sorted((ws / "datasets" / "coyo_meta_top200000").glob("part-*.parquet"))
    groups = [pq.read_metadata(f).row_group(i).num_rows for f in files
              for i in range(pq.read_metadata(f).num_row_groups)]
    assert sum(groups) == k and min(groups) >= 65_536, groups
    sel = sql(ws, "SELECT score_expr, num_candidates, params FROM selections")[0]
    assert sel["score_expr"] == VILA and sel["num_candidates"] == 360_000
    assert json.loads(sel["params"])["excluded"]["excluded_non_finite"] > 0


def test_curate_with_no_coyo_dataset_says_what_to_do(tmp_path):
    proc = run_cli("curate", "coyo", "--top-k", "5", workspace=tmp_path / "ws")
    one_line_error(proc, "no COYO dataset to curate", "vilactl register coyo")


def test_a_ray_oom_kill_is_one_line(registered):
    """Ray's memory monitor kills every task (threshold 2% of the node): each kill is one
    warning line, the failure one `error:` line — no Ray diagnostics, no traceback."""
    env = {"RAY_memory_usage_threshold": "0.02", "RAY_memory_monitor_refresh_ms": "100",
           "RAY_ADDRESS": ""}
    proc = run_cli("curate", "coyo", "--top-k", "10", "--name", "oom", workspace=registered,
                   env=env, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("error: curate failed (count) on "), \
        proc.stderr[-3000:]
    assert "Ray killed the task for lack of memory" in lines[-1]
    warnings = lines[:-1]
    assert warnings and all(w.startswith("warning: Ray killed a worker for lack of memory")
                            for w in warnings), proc.stderr[-3000:]
    assert sql(registered, "SELECT status FROM runs WHERE target = 'datasets/oom'") == \
        [{"status": "failed"}]


def test_score_is_kept_through_download(tiny_world, ray_head, tmp_path):
    from vilactl.curation.world import DEFAULT_BASE_URL
    from vilactl.pipeline.services.mirror import Mirror

    ws = tmp_path / "ws"
    run_cli("register", "coyo", "--metadata", str(tiny_world / "coyo" / "*.parquet"),
            workspace=ws, check=True)
    run_cli("--ray-address", ray_head, "curate", "coyo", "--top-k", "30", "--score",
            "clip_similarity_vitb32", "--name", "sel", workspace=ws, check=True)
    with Mirror(tiny_world) as mirror:
        run_cli("--ray-address", ray_head, "download", "coyo", "--from-dataset", "sel",
                "--name", "pairs", "--image-size", "32", "--allow-private-network",
                "--url-map", f"{DEFAULT_BASE_URL}={mirror.url}", workspace=ws, check=True)
    rows = sql(ws, "SELECT p.score AS got, s.score AS want FROM samples_pairs p JOIN "
                   "samples_sel s ON p.id = s.id")
    assert rows and all(r["got"] == r["want"] for r in rows)


def test_duplicate_check_has_a_memory_budget_and_spills_into_the_workspace(tmp_path):
    from vilactl.catalog import checks

    temp = tmp_path / "ws" / ".tmp" / "check"
    with checks._bounded(temp, None) as con:
        limit, where = con.sql("SELECT current_setting('memory_limit'), "
                               "current_setting('temp_directory')").fetchall()[0]
        assert temp.is_dir()
    assert limit in ("953.6 MiB", "1.0 GiB", "1000.0 MB") and where == str(temp)
    assert not temp.exists()  # spilled files go with it


def test_refusals_before_work_and_no_finite_score(registered, ray_head):
    """Out-of-range K, a score that divides by zero, an unreachable Ray: one line, fast, and
    nothing recorded; a score no row can have is refused after counting, not an empty set."""
    from conftest import catalog_snapshot

    before = catalog_snapshot(registered)
    for args, needle in [
        (["--top-k", str(10**20)], "--top-k must be a positive integer below 2^63"),
        (["--top-k", "5", "--score", "clip_similarity_vitb32 / 0"], "divides by zero"),
        (["--top-k", "5", "--score", "clip_similarity_vitb32 * 1e999"], "not a finite number"),
    ]:
        one_line_error(run_cli("curate", "coyo", *args, workspace=registered), needle)
    dead = run_cli("--ray-address", "127.0.0.1:9", "curate", "coyo", "--top-k", "5",
                   workspace=registered, timeout=60)
    one_line_error(dead, "cannot reach Ray at 127.0.0.1:9")
    assert catalog_snapshot(registered) == before
    zero = "clip_similarity_vitb32 / (clip_similarity_vitl14 - clip_similarity_vitl14)"
    nothing = run_cli("--ray-address", ray_head, "curate", "coyo", "--top-k", "5", "--score",
                      zero, "--name", "none", workspace=registered)
    one_line_error(nothing, "no row of 'coyo_meta' has a finite score", "360000 rows")
    assert not (registered / "datasets" / "none").exists()


def test_an_error_out_of_ray_reaches_the_user_as_one_line(monkeypatch, capsys):
    """Whatever command it comes from (score's Ray Data pipeline too), a Ray error is one
    line, not its remote traceback and memory advice."""
    import ray.exceptions

    import vilactl.pipeline.cli as cli

    def killed():
        raise ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on "
                                              "memory.\nMemory on the node …\n" * 20)

    monkeypatch.setattr(cli, "app", killed)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1, err
    assert err[0].startswith("error: Ray killed the task for lack of memory")
