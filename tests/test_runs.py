"""Every command records its runs the same way (catalog/jobs.py): for each command, a
succeeding and a failing invocation leave `runs` rows of one shape — command, args, start and
finish, counts, versions and target all set; `error` set exactly when the run failed."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import one_line_error, run_cli, run_shape, sql, workspace_copy

from vilactl.curation.records import sample_table, segment
from vilactl.train.config import CONFIG_DIR


@pytest.fixture(scope="module")
def ws(demo_ws, tmp_path_factory):
    return workspace_copy(demo_ws, tmp_path_factory.mktemp("runs") / "ws")


def newest(ws, status: str) -> dict:
    return sql(ws, "SELECT * FROM runs WHERE status = ? ORDER BY started_at DESC LIMIT 1"
               .replace("?", f"'{status}'"))[0]


def samples_file(path, segments) -> str:
    pq.write_table(sample_table([{"sample_id": "s", "source": "t", "segments": segments}]), path)
    return str(path)


def test_the_demo_recorded_every_command_in_one_shape(demo_ws):
    rows = sql(demo_ws, "SELECT * FROM runs")
    commands = {r["command"].split(" --")[0].split(":")[0] for r in rows}
    assert {"vilactl register coyo", "vilactl register mmc4", "vilactl register samples",
            "vilactl download coyo", "vilactl download mmc4", "vilactl score coyo",
            "vilactl curate coyo", "vilactl build mmc4", "vilactl blend",
            "vilactl train", "vilactl eval", "vilactl demo"} <= commands, commands
    shapes = {json.dumps(run_shape(r), sort_keys=True) for r in rows}
    assert len(shapes) == 1 and all(r["status"] == "ok" for r in rows), shapes


def _failures(ws, tmp_path, coyo_rows, ray_head):
    """(command, args, the one-line error it must stop with) — each fails while working."""
    meta = tmp_path / "meta.parquet"
    pq.write_table(pa.Table.from_pylist(coyo_rows + coyo_rows[:1]), meta)      # a repeated id
    bad_json = tmp_path / "docs.jsonl"
    bad_json.write_text('{"text_list": [\n')
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"x": [1]}), wrong)
    clip = sql(ws, "SELECT path FROM checkpoints WHERE id = 'demo-clip'")[0]["path"]
    (ws / "datasets" / "sc2").mkdir(parents=True)            # scores of something else
    (ws / "datasets" / "sc2" / "score.json").write_text("{}")
    cfg = yaml.safe_load((CONFIG_DIR / "debug.yaml").read_text())
    cfg["data"].update(max_length=70, overflow="error")
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(cfg))
    ray = ["--ray-address", ray_head]
    return [
        (["register", "coyo", "--metadata", str(meta), "--name", "c2"], "occur more than once"),
        (["register", "mmc4", "--docs", str(bad_json), "--name", "m2"], "malformed JSON"),
        (["register", "samples", "--data", str(wrong), "--name", "s2"], "missing column"),
        (["download", "coyo", "--metadata", str(meta), "--name", "d2"], "occur more than once"),
        (["score", "coyo_curated", "--name", "sc2", "--model", "vilactl-demo-clip",
          "--pretrained", clip], "holds scores from another model or input"),
        ([*ray, "build", "mmc4", "--variant", "pairs", "--dataset", "not_mmc4", "--name", "b2"],
         "build failed on shard"),
        (["blend", "--coyo", "1", "--images", "100000", "--name", "bl2"], "the blend needs"),
        (["train", "--stage", "pretrain", "--steps", "1", "--config",
          str(tmp_path / "strict.yaml"), "--name", "t2"], "longer than max_length 70"),
        (["eval", "--checkpoint", "sft@6", "--dataset", "no_answers", "--shots", "0"],
         "has no samples ending in an answer"),
        (["ablate", "--pretrain-steps", "1", "--sft-steps", "1", "--config",
          str(tmp_path / "missing.yaml")], "not found"),
    ]


def test_failing_and_succeeding_runs_have_one_shape(ws, tmp_path, coyo_rows, ray_head):
    run_cli("register", "samples", "--kind", "mmc4-images", "--name", "not_mmc4", "--data",
            samples_file(tmp_path / "x.parquet", [segment("user", text="hi")]), workspace=ws,
            check=True)
    run_cli("register", "samples", "--name", "no_answers", "--data",     # ends in an image
            samples_file(tmp_path / "q.parquet", [segment("user", text="q?"),
                                                  segment("user", image=b"\x89PNG")]),
            workspace=ws, check=True)
    ok = run_shape(newest(ws, "ok"))
    for args, needle in _failures(ws, tmp_path, coyo_rows, ray_head):
        one_line_error(run_cli(*args, workspace=ws), needle)
        failed = newest(ws, "failed")
        assert failed["error"] and needle in failed["error"], (args, failed)
        assert run_shape(failed) == ok, (args, failed)


def test_instruction_imports_and_demo_steps_fail_in_the_same_shape(ws, tmp_path):
    (tmp_path / "img").mkdir()
    good = [{"id": "1", "conversations": [{"from": "human", "value": "hi"},
                                          {"from": "gpt", "value": "ho"}]}]
    bad = [{"id": "2", "conversations": [{"from": "bot", "value": "hi"}]}]
    for name, records in (("l_ok", good), ("l_bad", bad)):
        (tmp_path / f"{name}.json").write_text(json.dumps(records))
        run_cli("register", "llava", "--json", str(tmp_path / f"{name}.json"), "--images",
                str(tmp_path / "img"), "--name", name, workspace=ws)
    (tmp_path / "ok.jsonl").write_text(json.dumps({"inputs": "a", "targets": "b"}) + "\n")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"inputs": "a"}) + "\n")
    for name in ("ok", "bad"):
        run_cli("register", "text-instruct", "--data", str(tmp_path / f"{name}.jsonl"),
                "--name", f"t_{name}", workspace=ws)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "world").write_text("not a world")
    one_line_error(run_cli("demo", "--size", "tiny", "--until", "world", workspace=fresh),
                   "exists and is not a demo world")
    rows = sql(ws, "SELECT * FROM runs WHERE target IN ('datasets/l_ok', 'datasets/l_bad', "
                   "'datasets/t_ok', 'datasets/t_bad')") + sql(fresh, "SELECT * FROM runs")
    assert sorted(r["status"] for r in rows) == ["failed"] * 3 + ["ok"] * 2, rows
    assert len({json.dumps(run_shape(r), sort_keys=True) for r in rows}) == 1
