"""Models out, on the demo's own trained model (the tiny demo of conftest's `demo_ws`): the
exported folder equals vilactl on a world image through plain transformers, carries a model
card and an `exports` row with its lineage, `vilactl generate` answers the eval questions
exactly as `vilactl eval` did, and outputs onto recorded things are refused."""
import io
import json

import pytest
import torch
from conftest import one_line_error, run_cli, sql, workspace_copy
from PIL import Image

from vilactl.base.errors import VilactlError
from vilactl.train.evaluate import normalise


@pytest.fixture(scope="module")
def exported(demo_ws, tmp_path_factory):
    ws = workspace_copy(demo_ws, tmp_path_factory.mktemp("export") / "ws")
    out = ws / "exports" / "demo-llava"
    (ws / "exports").mkdir()
    proc = run_cli("export", "--checkpoint", "sft", "--out", str(out), workspace=ws, check=True)
    return ws, out, proc.stdout


def _eval_rows(ws):
    import pyarrow.parquet as pq

    from vilactl.catalog.rows import dataset_shards

    _, paths = dataset_shards(ws, "eval_vqa")
    return [r for p in paths for r in pq.read_table(p).to_pylist()]


def test_demo_export_equals_vilactl_through_transformers(exported):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vilactl.pipeline.jobs.checkpoints import load

    ws, out, stdout = exported
    assert "logits within" in stdout and "warning" not in stdout
    row = _eval_rows(ws)[0]
    image = Image.open(io.BytesIO(row["segments"][0]["image"]))      # a raw world image
    question = row["segments"][1]["text"]
    _, _, model, tok, _ = load(ws, "sft")
    ids = model.tokens_per_image
    hf = LlavaForConditionalGeneration.from_pretrained(out).eval()
    proc = AutoProcessor.from_pretrained(out)              # the default a user gets
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    assert int((inputs["input_ids"] == model.image_token_id).sum()) == ids
    with torch.no_grad():
        diff = (model(inputs["input_ids"], model.vision.preprocess(image)[None])
                - hf(**inputs).logits).abs().max()
        assert float(diff) < 1e-4
        greedy = hf.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(greedy[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    ours = run_cli("generate", "--image", str(_image_file(ws, row, 0)), "--prompt", question,
                   "--max-new-tokens", "12", "--checkpoint", "sft", workspace=ws, check=True)
    assert ours.stdout.strip() == answer.strip()


def test_demo_export_card_and_catalog_lineage(exported):
    ws, out, _ = exported
    card = (out / "README.md").read_text()
    for needle in ("vilactl-demo-clip", "mlp2x_gelu", "blend_sft", "blend_pretrain",
                   "blend_projector", "eval_vqa", "coyo_curated ← coyo"):
        assert needle in card, needle
    rows = sql(ws, "SELECT checkpoint, checksum, checkpoints, params FROM exports")
    assert len(rows) == 1 and rows[0]["checkpoint"].startswith("sft@")
    marker = json.loads((out / "vilactl-export.json").read_text())
    assert marker["checksum"] == rows[0]["checksum"]
    blends = sql(ws, "SELECT DISTINCT b.dataset FROM exports e, unnest(e.blends) AS u(blend) "
                     "JOIN blend_components b ON b.blend = u.blend ORDER BY 1")
    assert {"vqa", "coyo_curated"} <= {r["dataset"] for r in blends}
    assert not [p for p in (ws / "exports").iterdir() if p.name.startswith(".")]  # no temps
    import os

    umask = os.umask(0)
    os.umask(umask)                       # shared data: no 0600 weights
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}


def _image_file(ws, row, i):
    path = ws / "q" / f"{row['sample_id']}.png"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(row["segments"][0]["image"])
    return path


def test_generate_answers_eval_questions_as_eval_does(exported, demo_ws, tmp_path):
    ws, out, _ = exported
    rows = _eval_rows(ws)
    lines = [json.dumps({"id": r["sample_id"], "image": str(_image_file(ws, r, i)),
                         "prompt": r["segments"][1]["text"]}) for i, r in enumerate(rows)]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    ck = sql(ws, "SELECT checkpoint, value FROM evals WHERE dataset = 'eval_vqa' AND "
                 "metric = 'accuracy' AND shots = 0")[0]
    recorded = json.loads((demo_ws / "evals" / ck["checkpoint"].replace("@", "-") /
                           "eval_vqa-0shot.json").read_text())
    for backend in (["--checkpoint", ck["checkpoint"]], ["--model", str(out)]):
        run_cli("generate", "--input", str(tmp_path / "q.jsonl"), "--out",
                str(tmp_path / "a.jsonl"), "--force", "--max-new-tokens", "12", *backend,
                workspace=ws, check=True)
        answers = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
        assert [a["id"] for a in answers] == [r["sample_id"] for r in rows]
        hits = [normalise(a["answer"]) == normalise(r["segments"][2]["text"])
                for a, r in zip(answers, rows)]
        assert sum(hits) / len(hits) == pytest.approx(ck["value"], abs=1e-12), backend
        assert [a["answer"] for a in answers] == [p["prediction"] for p in recorded], backend


def test_export_refuses_outputs_onto_recorded_things(exported, tmp_path):
    from vilactl.pipeline.jobs.out_paths import check_folder

    ws, out, _ = exported
    ck = sql(ws, "SELECT path FROM checkpoints WHERE stage = 'sft'")[0]["path"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    for target, needle in [(ws / "catalog.duckdb", "only exports/"),
                           (ws / "new", "only exports/"),
                           (ck, "would write onto checkpoint"),
                           (ck + "/sub", "would write onto checkpoint"),
                           (tmp_path / "full", "not empty"),
                           (tmp_path / "link", "symlink"),
                           (tmp_path / "no" / "such", "does not exist"),
                           (out, "--replace")]:
        with pytest.raises(VilactlError, match=needle):
            check_folder(ws, str(target))
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    proc = run_cli("export", "--out", str(ws / "catalog.duckdb"), workspace=ws)
    one_line_error(proc, "only exports/")
