"""Record schemas and validators on the real COYO-700M and MMC4 formats."""
import json

import numpy as np
import pyarrow as pa
import pytest

from vilactl.base.errors import RecordError
from vilactl.curation.assignment import assign
from vilactl.curation.records import (
    COYO_COLUMNS,
    SAMPLE_SCHEMA,
    conform_coyo,
    coyo_batch_problem,
    coyo_schema_problem,
    parse_mmc4_doc,
    sample_schema_problem,
    segment,
)


def test_real_coyo_rows_have_the_17_columns_and_validate(coyo_rows):
    assert len(coyo_rows) == 9
    assert set(coyo_rows[0]) == set(COYO_COLUMNS) and len(COYO_COLUMNS) == 17
    table = pa.Table.from_pylist(coyo_rows)
    assert coyo_schema_problem(table.schema) is None
    assert coyo_batch_problem(table, 0) is None
    conformed = conform_coyo(table)
    assert conformed.column_names == list(COYO_COLUMNS)
    assert conformed.column("id").to_pylist()[0] == 4896263451343


def test_coyo_only_id_url_text_required(coyo_rows):
    minimal = pa.Table.from_pylist([{k: r[k] for k in ("id", "url", "text")} for r in coyo_rows])
    assert coyo_schema_problem(minimal.schema) is None
    assert conform_coyo(minimal).column("width").null_count == 9


@pytest.mark.parametrize("drop,expect", [("url", "missing required column url"),
                                         ("id", "missing required column id")])
def test_coyo_missing_required_column(coyo_rows, drop, expect):
    table = pa.Table.from_pylist(coyo_rows).drop_columns([drop])
    assert coyo_schema_problem(table.schema) == expect


def test_coyo_wrong_type_and_bad_rows(coyo_rows):
    table = pa.Table.from_pylist(coyo_rows)
    bad_type = table.set_column(1, "url", pa.array(range(9)))
    assert coyo_schema_problem(bad_type.schema) == "column url has type int64, expected string"
    urls = table.column("url").to_pylist()
    urls[3] = None
    assert coyo_batch_problem(table.set_column(1, "url", pa.array(urls)), 100) == \
        "row 103: url is null"
    urls[3] = "ftp://example.com/x.jpg"
    problem = coyo_batch_problem(table.set_column(1, "url", pa.array(urls)), 0)
    assert problem.startswith("row 3 (id ") and "is not http(s)" in problem


def test_real_mmc4_doc_parses_and_assignment_reproduces_mmc4(shared_data):
    doc = json.loads((shared_data / "mmc4_v1.1_doc.jsonl").read_text().splitlines()[0])
    parsed = parse_mmc4_doc(doc, "doc:1")
    assert parsed["doc_id"] == "doc:1" and len(parsed["text_list"]) == 3
    published = [i["matched_text_index"] for i in doc["image_info"]]
    assert assign(np.array(doc["similarity_matrix"])).tolist() == published == [2, 1]
    sims = [i["matched_sim"] for i in doc["image_info"]]
    ours = [doc["similarity_matrix"][i][j] for i, j in enumerate(published)]
    assert ours == sims


@pytest.mark.parametrize("mutate,expect", [
    (lambda d: d.pop("text_list"), "missing field text_list"),
    (lambda d: d["image_info"][0].update(matched_text_index=7),
     "matched_text_index 7 outside 0..2"),
    (lambda d: d["image_info"][1].update(raw_url="file:///etc/passwd"), r"is not an http\(s\) URL"),
    (lambda d: d["similarity_matrix"].pop(), "similarity_matrix must have 2 rows"),
    (lambda d: d["similarity_matrix"][0].pop(), "similarity_matrix row 0 must have 3 values"),
])
def test_bad_mmc4_docs(shared_data, mutate, expect):
    doc = json.loads((shared_data / "mmc4_v1.1_doc.jsonl").read_text().splitlines()[0])
    mutate(doc)
    with pytest.raises(RecordError, match=expect):
        parse_mmc4_doc(doc, "doc:1")


def test_sample_schema_and_segments():
    assert sample_schema_problem(SAMPLE_SCHEMA) is None
    assert sample_schema_problem(pa.schema([("sample_id", pa.string())])) == "missing column source"
    assert segment("user", image=b"x") == {"role": "user", "text": None, "image": b"x"}
    with pytest.raises(RecordError):
        segment("user", text="a", image=b"x")
    with pytest.raises(RecordError, match="unknown role"):
        segment("bot", text="a")
