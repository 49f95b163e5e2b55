"""`vilactl eval` and `vilactl ablate` on the tiny demo (the report page: test_report_page)."""
import json

import pytest
from conftest import run_cli, sql, workspace_copy


def test_demo_eval_recorded(demo_ws):
    rows = sql(demo_ws, "SELECT dataset, task, metric, shots, value, num_examples FROM evals "
                        "WHERE checkpoint = 'sft@6'")
    got = {(r["dataset"], r["metric"], r["shots"]): r for r in rows}
    for key in [("eval_vqa", "accuracy", 0), ("eval_vqa", "accuracy", 4),
                ("eval_vqa", "vqa_accuracy", 0), ("eval_vqa", "vqa_accuracy", 4),
                ("eval_vqa", "accuracy_blank_image", 0), ("eval_vqa", "majority_baseline", 0),
                ("eval_caption", "cider", 0), ("eval_caption", "cider", 4),
                ("eval_text", "accuracy", 0), ("eval_text", "accuracy", 4)]:
        assert key in got, key
        assert 0 <= got[key]["value"] <= (10 if key[1] == "cider" else 1)
    assert got[("eval_vqa", "accuracy", 0)]["num_examples"] == 45
    kinds = {m.split(":")[1] for (d, m, s) in got if d == "eval_vqa" and m.startswith("accuracy:")}
    assert kinds == {"color", "shape", "count", "position"}
    soft = {m.split(":")[1] for (d, m, s) in got if d == "eval_vqa" and
            m.startswith("vqa_accuracy:")}
    assert soft == kinds and not any(m.startswith("vqa_accuracy") for (d, m, s) in got
                                     if d != "eval_vqa")      # VQA sets only
    preds = json.loads((demo_ws / "evals" / "sft-6" / "eval_vqa-0shot.json").read_text())
    assert len(preds) == 45 and {"answer", "prediction", "kind"} <= set(preds[0])


def test_majority_baseline_is_the_most_common_training_answer():
    from vilactl.train.evaluate import Item, majority_baseline

    train = [Item(str(i), "color", [], a) for i, a in enumerate(["red", "red", "blue"])]
    test = [Item("t1", "color", [], "red"), Item("t2", "color", [], "Blue."),
            Item("t3", "shape", [], "circle")]
    got = majority_baseline(train, test)
    assert got["by_kind"] == {"color": 0.5, "shape": 0.0} and got["value"] == pytest.approx(1 / 3)


def test_eval_any_sample_dataset_and_bad_input(demo_ws, tmp_path):
    ws = workspace_copy(demo_ws, tmp_path / "ws")
    out = run_cli("eval", "--checkpoint", "sft@6", "--dataset", "vqa", "--shots", "0",
                  "--limit", "10", workspace=ws, check=True)
    assert "vqa" in out.stdout
    assert sql(ws, "SELECT count(*) AS n FROM evals WHERE dataset = 'vqa' AND "
                   "metric = 'accuracy'") == [{"n": 1}]
    for args, message in [(["--checkpoint", "nope@1"], "checkpoint 'nope@1': not in the catalog"),
                          (["--shots", "x"], "--shots takes numbers"),
                          (["--dataset", "nope"], "unknown dataset 'nope'")]:
        proc = run_cli("eval", *args, workspace=ws)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-400:]
        assert len(proc.stderr.strip().splitlines()) == 1


def test_vqa_accuracy_scores_against_every_reference_answer(demo_ws, tmp_path):
    """A set whose `answers` column holds the model's own 0-shot prediction 4 times among 10
    references: VQAv2 soft accuracy is 1.0 on every question while exact match against the
    single `answer` stays what it was."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ws = workspace_copy(demo_ws, tmp_path / "ws")
    preds = json.loads((demo_ws / "evals" / "sft-6" / "eval_vqa-0shot.json").read_text())
    shard = sql(ws, "SELECT path FROM shards WHERE dataset = 'eval_vqa'")[0]["path"]
    table = pq.read_table(shard)
    by_id = {p["sample_id"]: p for p in preds}
    answers = [[by_id[i]["prediction"]] * 4 + [by_id[i]["answer"]] * 6
               for i in table["sample_id"].to_pylist()]
    (tmp_path / "soft").mkdir()
    pq.write_table(table.append_column("answers", pa.array(answers, pa.list_(pa.string()))),
                   tmp_path / "soft" / "part-0.parquet")
    run_cli("register", "samples", "--data", str(tmp_path / "soft" / "*.parquet"), "--name",
            "soft_vqa", workspace=ws, check=True)
    run_cli("eval", "--checkpoint", "sft@6", "--dataset", "soft_vqa", "--shots", "0",
            workspace=ws, check=True)
    got = {r["metric"]: r["value"] for r in sql(
        ws, "SELECT metric, value FROM evals WHERE dataset = 'soft_vqa' AND shots = 0")}
    exact = sql(ws, "SELECT value FROM evals WHERE dataset = 'eval_vqa' AND shots = 0 AND "
                    "metric = 'accuracy' AND checkpoint = 'sft@6'")
    assert got["vqa_accuracy"] == 1.0 and got["accuracy"] == exact[0]["value"]
    assert all(got[f"vqa_accuracy:{k}"] == 1.0 for k in ("color", "shape", "count", "position"))


def test_ablate_prints_four_rows(demo_ws, tmp_path):
    ws = workspace_copy(demo_ws, tmp_path / "ws")
    out = run_cli("ablate", "--seeds", "1", "--pretrain-steps", "2", "--sft-steps", "2",
                  workspace=ws, check=True, timeout=900)
    for row in ("coyo", "mmc4-pairs", "mmc4 ", "mmc4+coyo"):
        assert row in out.stdout, out.stdout[-2000:]
    assert "ablation took" in out.stdout
    run = sql(ws, "SELECT counts FROM runs WHERE command = 'vilactl ablate'")
    rows = json.loads(run[0]["counts"])["rows"]
    assert [r["variant"] for r in rows] == ["coyo", "mmc4-pairs", "mmc4", "mmc4+coyo"]
    assert {r["seed"] for r in rows} == {0}
    assert all(r["eval_vqa:accuracy:0"] is not None for r in rows)
    images = sql(ws, "SELECT name, num_images FROM blends WHERE name LIKE 'ablate_data_%' AND "
                     "name NOT LIKE 'ablate_data_sft_%'")
    counts = [r["num_images"] for r in images]
    assert len(counts) == 4 and max(counts) - min(counts) <= 6   # equal budgets, to one doc
