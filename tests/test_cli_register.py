"""`vilactl register` and `vilactl sql` on real-format inputs and on bad input, via the CLI."""
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import catalog_snapshot, run_cli


@pytest.fixture
def ws(tmp_path):
    run_cli("init", workspace=tmp_path / "ws", check=True)
    return tmp_path / "ws"


def test_register_real_coyo_parquet(ws, coyo_parquet, coyo_rows):
    out = run_cli("register", "coyo", "--metadata", str(coyo_parquet.parent / "*.parquet"),
                  "--name", "coyo_real", workspace=ws, check=True)
    assert "registered coyo_real: 9 rows" in out.stdout
    res = run_cli("sql", "SELECT id, clip_similarity_vitl14 FROM samples_coyo_real ORDER BY id",
                  "--format", "json", workspace=ws, check=True)
    got = json.loads(res.stdout)
    assert [r["id"] for r in got] == sorted(r["id"] for r in coyo_rows)
    ds = json.loads(run_cli("sql", "SELECT kind, num_samples, num_images FROM datasets",
                            "--format", "json", workspace=ws, check=True).stdout)
    assert ds == [{"kind": "coyo-metadata", "num_samples": 9, "num_images": 9}]
    shard = json.loads(run_cli("sql", "SELECT rows, checksum, status FROM shards", "--format",
                               "json", workspace=ws, check=True).stdout)[0]
    assert shard["rows"] == 9 and len(shard["checksum"]) == 64 and shard["status"] == "done"


def test_register_real_mmc4_jsonl_and_zip(ws, shared_data, tmp_path):
    src = shared_data / "mmc4_v1.1_doc.jsonl"
    zipped = tmp_path / "docs_shard_7_v3.jsonl.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(src, "docs_shard_7_v3.jsonl")
    for name, pattern in (("mmc4_plain", str(src)), ("mmc4_zip", str(zipped))):
        out = run_cli("register", "mmc4", "--docs", pattern, "--name", name, workspace=ws)
        assert out.returncode == 0, out.stderr
        assert "1 documents, 2 images, 3 sentences" in out.stdout
    rows = json.loads(run_cli(
        "sql", "SELECT doc_id, image_info[1].matched_text_index AS m, len(text_list) AS n "
        "FROM samples_mmc4_zip", "--format", "json", workspace=ws, check=True).stdout)
    assert rows == [{"doc_id": "docs_shard_7_v3:1", "m": 2, "n": 3}]
    assert (ws / "datasets" / "mmc4_zip" / "part-00000.parquet").is_file()


def assert_one_line_failure(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_inputs_fail_with_one_line_and_leave_catalog_unchanged(ws, coyo_rows, tmp_path,
                                                                   shared_data):
    before = catalog_snapshot(ws)
    no_url = tmp_path / "bad" / "no_url.parquet"
    no_url.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(coyo_rows).drop_columns(["url"]), no_url)
    assert_one_line_failure(
        run_cli("register", "coyo", "--metadata", str(no_url), workspace=ws),
        str(no_url), "missing required column url")

    lines = (shared_data / "mmc4_v1.1_doc.jsonl").read_text().splitlines()
    bad_json = tmp_path / "bad" / "docs.jsonl"
    bad_json.write_text(lines[0] + "\n" + lines[0][:-20] + "\n")
    assert_one_line_failure(
        run_cli("register", "mmc4", "--docs", str(bad_json), "--name", "m", workspace=ws),
        f"{bad_json}:2: malformed JSON")
    assert not (ws / "datasets" / "m").exists()

    empty = tmp_path / "bad" / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(coyo_rows).slice(0, 0), empty)
    assert_one_line_failure(
        run_cli("register", "coyo", "--metadata", str(empty), "--name", "e", workspace=ws),
        str(empty), "1 file(s) with no rows; nothing to register")
    assert_one_line_failure(
        run_cli("register", "coyo", "--metadata", str(tmp_path / "nothing" / "*.parquet"),
                workspace=ws),
        "no COYO Parquet files match")
    assert_one_line_failure(run_cli("sql", "SELEC * FROM datasets", workspace=ws),
                            "SQL error: Parser Error")
    assert_one_line_failure(run_cli("sql", "DELETE FROM datasets", workspace=ws),
                            "refused", "DELETE")
    assert catalog_snapshot(ws) == before


def test_newer_catalog_is_refused_unchanged(ws, coyo_parquet):
    import duckdb

    from vilactl.catalog.schema import SCHEMA_VERSION

    newer = SCHEMA_VERSION + 1
    con = duckdb.connect(str(ws / "catalog.duckdb"))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [newer])
    con.close()
    before = catalog_snapshot(ws)
    assert_one_line_failure(
        run_cli("register", "coyo", "--metadata", str(coyo_parquet), workspace=ws),
        f"catalog schema version {newer} is newer than this vilactl knows ({SCHEMA_VERSION})")
    assert catalog_snapshot(ws) == before


def test_duplicate_name_needs_replace(ws, coyo_parquet):
    run_cli("register", "coyo", "--metadata", str(coyo_parquet), workspace=ws, check=True)
    assert_one_line_failure(
        run_cli("register", "coyo", "--metadata", str(coyo_parquet), workspace=ws),
        "'coyo_meta' is already in the catalog")
    run_cli("register", "coyo", "--metadata", str(coyo_parquet), "--replace", workspace=ws,
            check=True)
    n = json.loads(run_cli("sql", "SELECT count(*) AS n FROM shards", "--format", "json",
                           workspace=ws, check=True).stdout)
    assert n == [{"n": 1}]  # replaced, not duplicated


def test_sql_output_formats(ws, coyo_parquet, tmp_path):
    run_cli("register", "coyo", "--metadata", str(coyo_parquet), workspace=ws, check=True)
    q = "SELECT id, text FROM samples_coyo_meta ORDER BY id LIMIT 3"
    csv = run_cli("sql", q, "--format", "csv", workspace=ws, check=True).stdout.splitlines()
    assert csv[0] == '"id","text"' and len(csv) == 4
    out = tmp_path / "r.parquet"
    run_cli("sql", q, "--format", "parquet", "--out", str(out), workspace=ws, check=True)
    assert pq.read_table(out).num_rows == 3
    table = run_cli("sql", q, workspace=ws, check=True).stdout
    assert "3 row(s)" in table
    assert_one_line_failure(run_cli("sql", q, "--format", "parquet", workspace=ws),
                            "--format parquet needs --out FILE")


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["similarity_matrix"][0].pop(), "similarity_matrix row 0 must have 3 values"),
    (lambda d: d["image_info"][1].update(matched_text_index=3),
     "image_info[1].matched_text_index 3 outside 0..2"),
    (lambda d: d.pop("image_info"), "missing field image_info"),
])
def test_bad_mmc4_documents_name_file_and_line(ws, shared_data, tmp_path, mutate, needle):
    good = (shared_data / "mmc4_v1.1_doc.jsonl").read_text().splitlines()[0]
    bad = json.loads(good)
    mutate(bad)
    path = tmp_path / "docs_shard_3_v3.jsonl"
    path.write_text(good + "\n" + good + "\n" + json.dumps(bad) + "\n")
    before = catalog_snapshot(ws)
    assert_one_line_failure(run_cli("register", "mmc4", "--docs", str(path), "--name", "bad",
                                    workspace=ws), f"{path}:3: {needle}")
    assert catalog_snapshot(ws) == before and not (ws / "datasets" / "bad").exists()
