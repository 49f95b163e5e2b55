"""`vilactl register llava|text-instruct`: exact segments, roles and image placement from
generated LLaVA / FLAN files, bad records (one line, nothing registered, or --skip-bad), and an
SFT blend of both imports trained with `vilactl train --stage sft`."""
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import catalog_snapshot, run_cli, sql, workspace_copy
from PIL import Image

from vilactl.curation.instruct_formats import chosen_rows
from vilactl.train.config import CONFIG_DIR


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


RECORDS = [
    {"id": "a1", "image": "img/red.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the square?"},
        {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "And its shape?"},
        {"from": "gpt", "value": "A square."}]},
    {"id": "b2", "image": ["img/red.png", "img/blue.png"], "conversations": [
        {"from": "human", "value": "Compare <image> with <image> please"},
        {"from": "gpt", "value": "The first is red, the second blue."}]},
    {"id": "c3", "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Green."}]},
]


@pytest.fixture
def llava_files(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(png("red"))
    (tmp_path / "img" / "blue.png").write_bytes(png("blue"))
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(RECORDS))
    return path, tmp_path


def samples(ws, name):
    files = sorted((ws / "datasets" / name).glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files).to_pylist()


def test_llava_records_convert_exactly(llava_files, tmp_path):
    path, root = llava_files
    ws = tmp_path / "ws"
    out = run_cli("register", "llava", "--json", str(path), "--images", str(root),
                  "--name", "llava", workspace=ws, check=True)
    assert "3 samples, 3 images, 9 turns" in out.stdout
    got = {s["sample_id"]: [(g["role"], g["text"], g["image"]) for g in s["segments"]]
           for s in samples(ws, "llava")}
    red, blue = png("red"), png("blue")
    assert got["a1"] == [("user", None, red), ("user", "What colour is the square?", None),
                         ("assistant", "Red.", None), ("user", "And its shape?", None),
                         ("assistant", "A square.", None)]
    assert got["b2"] == [("user", "Compare", None), ("user", None, red), ("user", "with", None),
                         ("user", None, blue), ("user", "please", None),
                         ("assistant", "The first is red, the second blue.", None)]
    assert got["c3"] == [("system", "Be brief.", None), ("user", "Name a colour.", None),
                         ("assistant", "Green.", None)]
    row = sql(ws, "SELECT kind, num_samples, num_images, num_text_words, "
                  "params->>'turns' AS turns FROM datasets")
    assert row == [{"kind": "instruct-llava", "num_samples": 3, "num_images": 3,
                    "num_text_words": 27, "turns": "9"}]
    shard = sql(ws, "SELECT counts->>'turns' AS turns, counts->>'images' AS images FROM shards")
    assert shard == [{"turns": "9", "images": "3"}]


@pytest.mark.parametrize("change, message", [
    (lambda r: r[0].update(image="img/missing.png"),
     "record a1: image 'img/missing.png' not found"),
    (lambda r: r[1].update(image=["img/red.png"]), "record b2: 2 <image> mark(s) for 1 image(s)"),
    (lambda r: r[2]["conversations"][1].update({"from": "bot"}),
     "record c3: unknown role from='bot'"),
])
def test_bad_llava_record_one_line_nothing_registered(llava_files, tmp_path, change, message):
    path, root = llava_files
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records))
    ws = tmp_path / "ws"
    run_cli("init", workspace=ws, check=True)
    before = catalog_snapshot(ws)
    proc = run_cli("register", "llava", "--json", str(path), "--images", str(root),
                   workspace=ws)
    assert proc.returncode == 1 and message in proc.stderr and str(path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert catalog_snapshot(ws) == before and not (ws / "datasets" / "llava").exists()
    ok = run_cli("register", "llava", "--json", str(path), "--images", str(root), "--skip-bad",
                 workspace=ws, check=True)
    assert "2 samples" in ok.stdout and "skipped 1" in ok.stdout


def test_text_instruct_jsonl_parquet_sampling_and_missing_target(tmp_path):
    rows = [{"inputs": f"question {i}", "targets": f"answer {i}"} for i in range(10)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    pq.write_table(pa.Table.from_pylist(rows[6:]), tmp_path / "b.parquet")
    ws = tmp_path / "ws"
    run_cli("register", "text-instruct", "--data", str(tmp_path / "*.*"), "--name", "all",
            workspace=ws, check=True)
    got = samples(ws, "all")
    assert [s["segments"] for s in got][7] == [
        {"role": "user", "text": "question 7", "image": None},
        {"role": "assistant", "text": "answer 7", "image": None}]
    assert [s["sample_id"] for s in got][:2] == ["a.jsonl:1", "a.jsonl:2"]
    run_cli("register", "text-instruct", "--data", str(tmp_path / "*.*"), "--name", "even",
            "--sample", "4", workspace=ws, check=True)
    assert [s["segments"][0]["text"] for s in samples(ws, "even")] == \
        ["question 0", "question 2", "question 5", "question 7"]
    assert chosen_rows(10, 4, seed=3).tolist() == chosen_rows(10, 4, seed=3).tolist() != \
        chosen_rows(10, 4, seed=4).tolist()
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": "q9", "inputs": "no answer"}) + "\n")
    proc = run_cli("register", "text-instruct", "--data", str(tmp_path / "c.jsonl"),
                   "--name", "bad", workspace=ws)
    assert proc.returncode == 1 and "c.jsonl: record q9: missing field 'targets'" in proc.stderr
    assert sql(ws, "SELECT count(*) AS n FROM datasets WHERE name = 'bad'") == [{"n": 0}]


def test_sft_blend_of_imports_trains(demo_ws, llava_files, tmp_path):
    path, root = llava_files
    ws = workspace_copy(demo_ws, tmp_path / "ws")
    run_cli("register", "llava", "--json", str(path), "--images", str(root), "--name", "my_llava",
            workspace=ws, check=True)
    flan = tmp_path / "flan.jsonl"
    flan.write_text("".join(json.dumps({"inputs": f"Say {w}.", "targets": w}) + "\n"
                            for w in ("yes", "no", "maybe", "red", "blue")))
    run_cli("register", "text-instruct", "--data", str(flan), "--name", "my_flan",
            workspace=ws, check=True)
    run_cli("blend", "--component", "my_llava=0.5", "--component", "my_flan=0.5",
            "--name", "my_sft", workspace=ws, check=True)
    cfg = yaml.safe_load((CONFIG_DIR / "debug.yaml").read_text())
    cfg["train"].update(micro_batch_size=2, log_every=1)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = run_cli("train", "--stage", "sft", "--blend", "my_sft", "--steps", "2", "--config",
                  str(tmp_path / "cfg.yaml"), "--name", "my_sft_run", workspace=ws, check=True)
    assert "trained sft" in out.stdout
    assert sql(ws, "SELECT id, blend FROM checkpoints WHERE id = 'my_sft_run@2'") == \
        [{"id": "my_sft_run@2", "blend": "my_sft"}]
