"""Hostile integrity: JSON that would exhaust memory (deep nesting, huge records), LLaVA
conversations with the wrong speakers or repeated ids, and registered files changed, replaced
or deleted behind the catalog's back. Each refusal is one line (exit 1) and leaves the
workspace, the catalog (but for a failed run) and a sentinel beside them untouched;
`vilactl verify` says which files changed."""
import json
import os
import resource
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import failed_runs, one_line_error, run_cli, sql

from vilactl.curation.records import sample_table, segment


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "inputs" / "img"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "a.png")
    return folder


def turns(*froms: str) -> list[dict]:
    return [{"from": f, "value": ("<image> " if i == 0 else "") + f"turn {i}"}
            for i, f in enumerate(froms)]


def record(rid: str, *froms: str) -> dict:
    return {"id": rid, "image": "a.png", "conversations": turns(*froms)}


def register_llava(guard, src, images, **kw):
    return run_cli("register", "llava", "--json", str(src), "--images", str(images),
                   "--name", "ll", workspace=guard.ws, **kw)


# ---- JSON bounds -------------------------------------------------------------------------

# Address space for one `vilactl register llava`: a normal run peaks near 1.5 GB of virtual
# memory (Python, pyarrow, DuckDB, PIL, rich mapped in); the nested file grew it to 17.6 GB.
MEMORY_CAP = 3 << 30


def capped(*args: str, workspace) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    cmd = [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace", str(workspace), *args]
    return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_a_normal_register_fits_the_memory_cap(guard, images):
    src = images.parent / "ok.json"
    src.write_text(json.dumps([record(f"r{i}", "human", "gpt") for i in range(50)]))
    proc = capped("register", "llava", "--json", str(src), "--images", str(images),
                  "--name", "ll", workspace=guard.ws)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("depth", [100_000])
def test_deeply_nested_llava_json_is_one_line_under_a_memory_cap(guard, images, depth):
    src = images.parent / "nested.json"
    src.write_text("[" + "[" * depth + "]" * depth + "]")          # 200 KB
    guard.snap()
    proc = capped("register", "llava", "--json", str(src), "--images", str(images),
                  "--name", "ll", workspace=guard.ws)
    one_line_error(proc, f"{src}: record 1: JSON nested deeper than 64 levels",
                   "VILACTL_JSON_MAX_DEPTH")
    guard.check()
    assert not list(guard.ws.glob("datasets/.*"))                 # no temp folder left
    assert sql(guard.ws, "SELECT count(*) AS n FROM runs WHERE status = 'running'") == \
        [{"n": 0}]
    assert failed_runs(guard.ws)[-1]["target"] == "datasets/ll"


def test_a_huge_llava_record_stops_at_the_byte_budget(guard, images):
    src = images.parent / "huge.json"
    big = record("big", "human", "gpt")
    big["conversations"][1]["value"] = "x" * (8 << 20)            # one 8 MB string
    src.write_text(json.dumps([record("r0", "human", "gpt"), big]))
    guard.snap()
    proc = run_cli("register", "llava", "--json", str(src), "--images", str(images), "--name",
                   "ll", workspace=guard.ws, env={"VILACTL_JSON_MAX_RECORD_BYTES": str(1 << 20)})
    one_line_error(proc, f"{src}: record 2: record larger than 1 MiB",
                   "VILACTL_JSON_MAX_RECORD_BYTES")
    guard.check()
    ok = run_cli("register", "llava", "--json", str(src), "--images", str(images), "--name",
                 "ll", workspace=guard.ws, env={"VILACTL_JSON_MAX_RECORD_BYTES": str(16 << 20)})
    assert ok.returncode == 0, ok.stderr


def test_a_huge_jsonl_line_and_a_deep_line_are_one_line(guard, tmp_path):
    src = tmp_path / "flan.jsonl"
    good = json.dumps({"inputs": "q", "targets": "a"}) + "\n"
    src.write_text(good + json.dumps({"inputs": "q" * (2 << 20), "targets": "a"}) + "\n")
    guard.snap()
    one_line_error(run_cli("register", "text-instruct", "--data", str(src), "--name", "t",
                           workspace=guard.ws, env={"VILACTL_JSON_MAX_RECORD_BYTES": "1000000"}),
                   f"{src}:2: record larger than 1000000 bytes")
    src.write_text(good + '{"inputs": ' + "[" * 5000 + "]" * 5000 + ', "targets": "a"}\n')
    one_line_error(run_cli("register", "text-instruct", "--data", str(src), "--name", "t",
                           workspace=guard.ws),
                   f"{src}:2: JSON nested deeper than 64 levels")
    guard.check()


def test_deep_mmc4_line_is_one_line(guard, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text_list": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    guard.snap()
    one_line_error(run_cli("register", "mmc4", "--docs", str(src), "--name", "m",
                           workspace=guard.ws), f"{src}:1: JSON nested deeper than 64 levels")
    guard.check()


def test_a_huge_line_inside_an_mmc4_zip_is_one_line(guard, tmp_path):
    import zipfile

    src = tmp_path / "docs_shard_0_v3.jsonl.zip"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("docs.jsonl", json.dumps({"text_list": ["x" * (4 << 20)]}) + "\n")
    guard.snap()
    one_line_error(run_cli("register", "mmc4", "--docs", str(src), "--name", "m",
                           workspace=guard.ws, env={"VILACTL_JSON_MAX_RECORD_BYTES": "1000000"}),
                   f"{src}!docs.jsonl:1: record larger than 1000000 bytes")
    guard.check()


def test_generate_input_rows_are_bounded(tmp_path, monkeypatch):
    from vilactl.base.errors import VilactlError
    from vilactl.pipeline.jobs.generate import read_input

    src = tmp_path / "q.jsonl"
    src.write_text('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(VilactlError, match=f"{src} line 1: JSON nested deeper than 64"):
        read_input(src)
    monkeypatch.setenv("VILACTL_JSON_MAX_RECORD_BYTES", "1000")
    src.write_text('{"prompt": "hi"}\n' + json.dumps({"prompt": "x" * 5000}) + "\n")
    with pytest.raises(VilactlError, match=f"{src} line 2: record larger than 1000 bytes"):
        read_input(src)


def test_brackets_inside_strings_do_not_count_as_nesting():
    from vilactl.base import json_bounds

    text = json.dumps({"caption": "[" * 500 + '\\"{' * 200, "n": [[1]]})
    json_bounds.check_depth(text, "x")                       # no error: strings are skipped
    with pytest.raises(Exception, match="x: JSON nested deeper than 3 levels"):
        json_bounds.check_depth("[[[[1]]]]", "x", limit=3)


def test_array_reader_reads_no_further_than_the_budget(tmp_path, monkeypatch):
    """A record of one 100 MB string is refused after about the budget, not read whole."""
    import io

    from vilactl.base import json_bounds

    monkeypatch.setenv("VILACTL_JSON_MAX_RECORD_BYTES", str(1 << 20))
    data = b'[{"id": "a"}, {"id": "' + b"y" * (100 << 20) + b'"}]'
    f = io.BytesIO(data)
    items = json_bounds.array_items(f, "big.json")
    assert next(items) == {"id": "a"}
    with pytest.raises(Exception, match="big.json: record 2: record larger than 1 MiB"):
        next(items)
    assert f.tell() < 3 << 20


# ---- LLaVA conversations -----------------------------------------------------------------

@pytest.mark.parametrize("froms, needle", [
    (("gpt", "human"), "turn 1 is from='gpt' where a human question belongs"),
    (("human", "human", "gpt"), "turn 2 is from='human' where a gpt answer belongs"),
    (("human", "gpt", "human"), "the conversation ends without a gpt answer"),
    (("human",), "the conversation ends without a gpt answer"),
    (("human", "gpt", "system", "human", "gpt"), "turn 3 is a system turn"),
])
def test_llava_conversations_with_the_wrong_speakers(guard, images, froms, needle):
    src = images.parent / "l.json"
    src.write_text(json.dumps([record("ok", "human", "gpt"), record("bad", *froms)]))
    guard.snap()
    one_line_error(register_llava(guard, src, images), f"{src}: record bad: {needle}")
    guard.check()


def test_llava_system_turn_first_and_several_rounds_are_accepted(guard, images):
    src = images.parent / "l.json"
    rec = record("s", "system", "human", "gpt", "human", "gpt")
    rec["conversations"][0]["value"] = "be brief"
    rec["conversations"][1]["value"] = "<image> what?"
    src.write_text(json.dumps([rec, record("t", "human", "gpt")]))
    register_llava(guard, src, images, check=True)
    assert sql(guard.ws, "SELECT num_samples FROM datasets WHERE name = 'll'") == \
        [{"num_samples": 2}]


def test_duplicate_llava_ids_are_refused_with_a_count(guard, images):
    src = images.parent / "l.json"
    recs = [record(rid, "human", "gpt") for rid in ("a", "b", "a", "c", "b", "a")]
    src.write_text(json.dumps(recs))
    guard.snap()
    line = one_line_error(register_llava(guard, src, images),
                          f"{src}: 2 id(s) occur more than once", "'a' at records 1, 3, 6",
                          "'b' at records 2, 5", "every LLaVA id must be unique")
    assert "records 2, 5" in line
    guard.check()
    assert not list(guard.ws.glob("datasets/.*"))


# ---- files changed behind the catalog's back ---------------------------------------------

def samples_file(path, tag: str, n: int = 20) -> None:
    rng = np.random.default_rng(len(tag))
    rows = [{"sample_id": f"{tag}-{i}", "source": tag,
             "segments": [segment("user", image=rng.bytes(64)),
                          segment("user", text=f"{tag} caption {i}")]} for i in range(n)]
    pq.write_table(sample_table(rows), path)


@pytest.fixture
def registered(guard, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(2):
        samples_file(src / f"part-{k}.parquet", f"s{k}")
    run_cli("register", "samples", "--data", str(src / "*.parquet"), "--name", "pairs",
            workspace=guard.ws, check=True)
    guard.snap()
    return guard, src


def blend(guard):
    return run_cli("blend", "--component", "pairs=1", "--name", "b", workspace=guard.ws)


def test_verify_says_ok_for_untouched_files(registered):
    guard, _ = registered
    proc = run_cli("verify", workspace=guard.ws, check=True)
    assert "pairs: ok (2 files)" in proc.stdout
    assert "verified 2 files" in proc.stdout
    guard.check()


def test_a_replaced_shard_stops_blend_and_verify_names_it(registered):
    guard, src = registered
    target = src / "part-1.parquet"
    samples_file(target, "other-data", n=25)                      # another valid Parquet file
    guard.snap()
    one_line_error(blend(guard), str(target), "dataset 'pairs'", "changed since the catalog "
                   "recorded it", "`vilactl verify`")
    guard.check()
    proc = run_cli("verify", "pairs", workspace=guard.ws)
    one_line_error(proc, "1 recorded file(s) changed in 1 dataset(s) (pairs)")
    assert "pairs: 1 of 2 files changed" in proc.stdout
    assert f"{target}:" in proc.stdout.replace("\n  ", " ").replace("\n", " ") or \
        str(target) in proc.stdout
    guard.check()


def test_same_size_same_rows_other_bytes_is_caught(registered):
    """A rewrite that keeps size, row count and mtime: the sha256 of a small file catches it,
    and with hashing off the mtime does."""
    guard, src = registered
    target = src / "part-0.parquet"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0xFF                # a data page byte: footer and size unchanged
    target.write_bytes(bytes(data))
    guard.snap()
    one_line_error(blend(guard), str(target), "its sha256 differs")
    one_line_error(run_cli("blend", "--component", "pairs=1", "--name", "b",
                           workspace=guard.ws, env={"VILACTL_CHECK_HASH_BYTES": "0"}),
                   str(target), "modified after it was recorded (mtime)")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    one_line_error(blend(guard), str(target), "its sha256 differs")
    guard.check()


def test_a_touched_file_is_accepted_after_verify(registered):
    guard, src = registered
    target = src / "part-0.parquet"
    os.utime(target, ns=(1, 10**18))
    env = {"VILACTL_CHECK_HASH_BYTES": "0"}                       # as if the file were large
    one_line_error(run_cli("blend", "--component", "pairs=1", "--name", "b",
                           workspace=guard.ws, env=env), "modified after it was recorded")
    proc = run_cli("verify", workspace=guard.ws, check=True)
    assert "pairs: ok (2 files)" in proc.stdout
    assert sql(guard.ws, f"SELECT mtime_ns FROM shards WHERE path = '{target}'") == \
        [{"mtime_ns": 10**18}]
    run_cli("blend", "--component", "pairs=1", "--name", "b", workspace=guard.ws, env=env,
            check=True)


def test_a_deleted_shard_is_one_line(registered, tmp_path):
    guard, src = registered
    gone = src / "part-0.parquet"
    gone.rename(tmp_path / "away.parquet")
    one_line_error(blend(guard), str(gone), "it is gone", "vilactl verify")
    one_line_error(run_cli("train", "--stage", "projector", "--blend", "pairs",
                           workspace=guard.ws), str(gone), "it is gone")
    proc = run_cli("verify", workspace=guard.ws)
    one_line_error(proc, "1 recorded file(s) changed")
    assert "it is gone" in proc.stdout
    (tmp_path / "away.parquet").rename(gone)    # the snapshot reads the views over the files
    guard.check()


def test_verify_refuses_an_unknown_dataset(registered):
    guard, _ = registered
    one_line_error(run_cli("verify", "nope", workspace=guard.ws), "unknown dataset(s) 'nope'")
    guard.check()


def test_a_truncated_blend_file_stops_training_data(registered):
    """Blends are datasets too: a blend file truncated after `vilactl blend` is refused."""
    guard, _ = registered
    run_cli("blend", "--component", "pairs=1", "--name", "b", workspace=guard.ws, check=True)
    part = sorted((guard.ws / "blends" / "b").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    one_line_error(run_cli("blend", "--component", "b=1", "--name", "b2", workspace=guard.ws),
                   str(part), "bytes, recorded")
