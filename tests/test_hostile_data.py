"""Hostile data: wrong field types, duplicate keys, empty archives, non-finite scores, a deep
--score, record-vs-line counting, read-only SQL that must stay read-only, and HTML in what the
report shows. Each refusal is one line (exit 1) and leaves the workspace, the catalog (but for
the failed run) and a sentinel folder beside them untouched."""
import hashlib
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import failed_runs, one_line_error, run_cli, sql


@pytest.fixture
def doc(shared_data) -> dict:
    return json.loads((shared_data / "mmc4_v1.1_doc.jsonl").read_text().splitlines()[0])


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(url=5), "url must be a string"),
    (lambda d: d["image_info"][0].update(image_name=5), "image_name must be a string"),
    (lambda d: d.update(could_have_url_duplicate="abc"), "could_have_url_duplicate 'abc'"),
    (lambda d: d["similarity_matrix"][0].__setitem__(0, "x"), "not a finite number"),
    (lambda d: d.update(doc_id={"a": 1}), "doc_id {'a': 1} is not a non-empty string"),
    (lambda d: d["image_info"][0].update(matched_text_index=True), "matched_text_index True"),
    (lambda d: d.update(text_list=[1, 2]), "text_list must be a list of strings"),
])
def test_mmc4_fields_of_the_wrong_type(guard, doc, tmp_path, change, needle):
    bad = dict(json.loads(json.dumps(doc)))
    change(bad)
    src = write_jsonl(tmp_path / "docs.jsonl", [doc, bad])
    guard.snap()
    one_line_error(run_cli("register", "mmc4", "--docs", str(src), "--name", "m",
                           workspace=guard.ws), f"{src}:2:", needle)
    guard.check()
    assert failed_runs(guard.ws)[-1]["target"] == "datasets/m"


def test_mmc4_duplicate_doc_ids_are_refused(guard, doc, tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl", [{**doc, "doc_id": "same"}, doc,
                                                {**doc, "doc_id": "same"}])
    guard.snap()
    one_line_error(run_cli("register", "mmc4", "--docs", str(src), "--name", "m",
                           workspace=guard.ws),
                   "1 MMC4 doc_id value(s) occur more than once", "'same'", f"{src} row 0",
                   f"{src} row 2")
    guard.check()


def test_zip_members_with_one_base_name_get_distinct_keys(guard, doc, tmp_path):
    zipped = tmp_path / "docs_shard_1_v3.jsonl.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for folder in ("a", "b"):
            zf.writestr(f"{folder}/docs.jsonl", json.dumps(doc) + "\n")
    run_cli("register", "mmc4", "--docs", str(zipped), "--name", "z", workspace=guard.ws,
            check=True)
    rows = sql(guard.ws, "SELECT doc_id FROM samples_z ORDER BY 1")
    assert rows == [{"doc_id": "a/docs:1"}, {"doc_id": "b/docs:1"}]


def test_a_zip_without_jsonl_is_refused(guard, tmp_path):
    empty = tmp_path / "docs_shard_2_v3.jsonl.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no documents here")
    guard.snap()
    one_line_error(run_cli("register", "mmc4", "--docs", str(empty), "--name", "m",
                           workspace=guard.ws), f"{empty}: the archive holds no .jsonl file")
    guard.check()


def test_duplicate_coyo_ids_are_refused_with_a_count(guard, coyo_rows, tmp_path):
    rows = coyo_rows * 6 + coyo_rows[:4]                   # 58 rows, 9 distinct ids
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dup.parquet")
    guard.snap()
    line = one_line_error(run_cli("register", "coyo", "--metadata", str(tmp_path / "dup.parquet"),
                                  "--name", "c", workspace=guard.ws),
                          "9 COYO id value(s) occur more than once")
    assert "dup.parquet row " in line and "every COYO id must be unique" in line
    guard.check()


@pytest.fixture
def registered(guard, coyo_rows, tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    rows = [{**r, "clip_similarity_vitb32": float(r["clip_similarity_vitb32"])}
            for r in coyo_rows]
    rows[0]["clip_similarity_vitb32"] = float("inf")
    rows[1]["clip_similarity_vitb32"] = float("nan")
    rows[2]["clip_similarity_vitb32"] = float("-inf")
    pq.write_table(pa.Table.from_pylist(rows), meta / "part-0.parquet")
    run_cli("register", "coyo", "--metadata", str(meta / "*.parquet"), "--name", "meta",
            workspace=guard.ws, check=True)
    guard.snap()
    return guard, meta, rows


def test_non_finite_scores_are_excluded_and_counted(registered, ray_head):
    guard, _, rows = registered
    run_cli("--ray-address", ray_head, "curate", "coyo", "--top-k", "3", "--dataset", "meta",
            "--score", "clip_similarity_vitb32", "--name", "top3", workspace=guard.ws,
            check=True)
    finite = sorted((r for r in rows[3:]), key=lambda r: (-r["clip_similarity_vitb32"],
                                                          r["id"]))
    got = sql(guard.ws, "SELECT id FROM samples_top3 ORDER BY score DESC, id")
    assert [r["id"] for r in got] == [r["id"] for r in finite[:3]]      # +inf did not win
    counts = json.loads(sql(guard.ws, "SELECT counts FROM runs WHERE target = "
                                      "'datasets/top3'")[0]["counts"])
    assert counts["excluded_non_finite"] == 3 and counts["selected"] == 3


def test_a_duplicate_id_at_the_cutoff_fails_cleanly(registered, ray_head):
    guard, meta, rows = registered
    # the metadata is registered in place; someone rewrites it with a repeated id afterwards
    rows = [{**r, "clip_similarity_vitb32": 0.5} for r in rows] + [{**rows[0],
                                                                    "clip_similarity_vitb32": 0.5}]
    part = meta / "part-0.parquet"
    pq.write_table(pa.Table.from_pylist(rows), part)
    # the pre-read check (catalog/integrity.py) notices the rewrite …
    one_line_error(run_cli("curate", "coyo", "--top-k", "1", "--dataset", "meta", "--score",
                           "clip_similarity_vitb32", "--name", "top", workspace=guard.ws),
                   str(part), "changed since the catalog recorded it", "vilactl verify")
    # … and curate's own id check stays for a rewrite it cannot see: the catalog row is made
    # to match the new file, as if size, mtime and footer had all been kept
    import duckdb

    con = duckdb.connect(str(guard.ws / "catalog.duckdb"))
    con.execute("UPDATE shards SET bytes = ?, checksum = ?, mtime_ns = ?, rows = ? "
                "WHERE path = ?", [part.stat().st_size, hashlib.sha256(part.read_bytes())
                                   .hexdigest(), part.stat().st_mtime_ns, len(rows),
                                   str(part.resolve())])
    con.close()
    guard.snap()
    ids = sorted({r["id"] for r in rows})
    for k in (ids.index(rows[0]["id"]) + 1, len(ids) + 1):  # one copy at the cutoff; both in
        one_line_error(run_cli("--ray-address", ray_head, "curate", "coyo", "--top-k", str(k),
                               "--dataset", "meta", "--score", "clip_similarity_vitb32",
                               "--name", "top", workspace=guard.ws),
                       "rows with the same id", "ids must be unique")
        guard.check()
        assert not list((guard.ws / "datasets").glob("*top*"))


def test_a_deeply_nested_score_is_one_line(registered):
    guard, _, _ = registered
    for expr in ("-" * 5000 + "clip_similarity_vitb32", "(" * 300 + "1" + ")" * 300,
                 "+".join(["clip_similarity_vitb32"] * 100)):
        one_line_error(run_cli("curate", "coyo", "--top-k", "3", "--dataset", "meta",
                               "--score", expr, workspace=guard.ws), "--score")
    guard.check()


def test_llava_image_field_of_the_wrong_type(guard, tmp_path):
    inputs = tmp_path / "inputs"
    (inputs / "img").mkdir(parents=True)
    records = [{"id": "r", "image": image, "conversations": [
        {"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "ho"}]}
        for image in (5, [1], {"a": "b.png"})]
    records += [{"id": "t", "conversations": [turn, {"from": "gpt", "value": "ho"}]}
                for turn in ({"from": {"x": 1}, "value": "hi"}, {"from": "human", "value": 5})]
    guard.snap()
    for rec in records:
        (inputs / "l.json").write_text(json.dumps([rec]))
        needle = ("record r: image must be a path or a list of paths" if rec["id"] == "r" else
                  "record t: a turn needs 'from' and 'value' strings")
        one_line_error(run_cli("register", "llava", "--json", str(inputs / "l.json"),
                               "--images", str(inputs / "img"), workspace=guard.ws), needle)
        guard.check()


def test_text_instruct_sample_counts_records_not_lines(guard, tmp_path):
    rows = [{"inputs": f"q{i}", "targets": f"a{i}"} for i in range(10)]
    (tmp_path / "flan.json").write_text(json.dumps(rows, indent=2))    # ~40 lines, 10 records
    out = run_cli("register", "text-instruct", "--data", str(tmp_path / "flan.json"),
                  "--sample", "5", "--name", "five", workspace=guard.ws, check=True)
    assert "5 samples" in out.stdout
    got = sql(guard.ws, "SELECT list_extract(segments, 1).text AS q FROM samples_five")
    assert [r["q"] for r in got] == ["q0", "q2", "q4", "q6", "q8"]
    guard.snap()
    one_line_error(run_cli("register", "text-instruct", "--data", str(tmp_path / "flan.json"),
                           "--sample", "11", "--name", "eleven", workspace=guard.ws),
                   "--sample 11: the data has 10 rows")
    guard.check()


def test_sql_stays_read_only(registered):
    guard, meta, _ = registered
    shard = meta / "part-0.parquet"
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()
    cases = [
        (f"EXPLAIN ANALYZE COPY (SELECT 1 AS id) TO '{shard}'", "EXPLAIN runs only as"),
        ("EXPLAIN ANALYZE INSTALL httpfs", "EXPLAIN runs only as"),
        ("INSTALL httpfs", "refused"),
        (f"COPY (SELECT 1) TO '{guard.ws}/x.parquet'", "refused"),
        ("SELECT * FROM 'http://127.0.0.1:9/x.parquet'", "Permission Error"),
        ("SELECT * FROM read_text('/etc/shadow')", "Permission Error"),
        ("SELECT * FROM glob('/root/*')", "Permission Error"),
        (f"SELECT * FROM read_text('{guard.sentinel}/keep.txt')", "Permission Error"),
        ("SET enable_external_access = true; SELECT * FROM read_text('/etc/hostname')",
         "refused"),
        ("ATTACH 'x.duckdb' AS x", "refused"),
    ]
    for query, needle in cases:
        one_line_error(run_cli("sql", query, workspace=guard.ws), needle)
    assert hashlib.sha256(shard.read_bytes()).hexdigest() == digest
    guard.check()
    assert sql(guard.ws, "SELECT count(*) AS n FROM samples_meta") == [{"n": 9}]


def test_report_escapes_what_it_shows(guard, coyo_rows, tmp_path):
    hostile = tmp_path / "<img src=x onerror=alert(1)>"
    hostile.mkdir()
    pq.write_table(pa.Table.from_pylist(coyo_rows), hostile / "part-0.parquet")
    run_cli("register", "coyo", "--metadata", str(hostile / "*.parquet"), "--name", "x",
            workspace=guard.ws, check=True)
    run_cli("report", "--out", str(guard.ws / "r.html"), workspace=guard.ws, check=True)
    page = (guard.ws / "r.html").read_text()
    assert "<img src=x onerror" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize("text, needle", [
    ("5\n", "a config is a mapping"),
    ("- model\n- data\n", "a config is a mapping"),
    ("train: {micro_batch_size: eight}\n", "train.micro_batch_size must be an integer"),
    ("data: {max_length: [1]}\n", "data.max_length must be an integer"),
    ("stages: {sft: 3}\n", "stages.sft must be a mapping"),
])
def test_configs_of_the_wrong_shape_are_one_line(guard, tmp_path, text, needle):
    cfg = tmp_path / "inputs" / "cfg.yaml"
    cfg.parent.mkdir()
    cfg.write_text(text)
    guard.snap()
    one_line_error(run_cli("train", "--stage", "projector", "--config", str(cfg),
                           workspace=guard.ws), str(cfg), needle)
    guard.check()
