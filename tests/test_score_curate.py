"""`vilactl score` and `vilactl curate` end to end on a real Ray head: scores equal plain
open_clip, the top-K equals a lexsort reference on tied data, dedup, bad input, and no actor
left on the cluster."""
import glob
import io
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import catalog_snapshot, run_cli, sql

from vilactl.curation.world import DEFAULT_BASE_URL, PRESETS, generate
from vilactl.pipeline.services.mirror import Mirror


def cli(ws, ray_head, *args, check=True):
    return run_cli("--ray-address", ray_head, *args, workspace=ws, check=check)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    """A demo CLIP after a few steps: the equality test needs weights, not quality."""
    from vilactl.curation.demo_clip import WEIGHTS_FILE, train_demo_clip

    out = tmp_path_factory.mktemp("clip")
    train_demo_clip(out, steps=3, pairs=512, batch_size=64)
    return out / WEIGHTS_FILE


@pytest.fixture(scope="module")
def scored(tmp_path_factory, ray_head, clip_weights):
    ws = tmp_path_factory.mktemp("score") / "ws"
    world = ws.parent / "world"
    generate(world, replace(PRESETS["tiny"], coyo_rows=90, coyo_shard_rows=30, broken_rate=0.0))
    with Mirror(world) as m:
        cli(ws, ray_head, "download", "coyo", "--metadata", str(world / "coyo" / "*.parquet"),
            "--image-size", "64", "--allow-private-network", "--url-map",
            f"{DEFAULT_BASE_URL}={m.url}")
    cli(ws, ray_head, "score", "coyo", "--model", "vilactl-demo-clip", "--pretrained",
        str(clip_weights), "--batch-size", "32")
    return ws


ALIVE_ACTORS = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
alive = state.actors(actor_state_name="ALIVE").values()
print(json.dumps(sorted(a["Name"] or a["ActorClassName"] for a in alive)))
"""


def test_score_leaves_no_actor_alive_on_the_cluster(scored, ray_head):
    """Ray Data's detached helpers (its stats actor, actor-location tracker, autoscaling
    coordinator) outlive the job that started them; score stops them when it ends."""
    out = subprocess.run([sys.executable, "-c", ALIVE_ACTORS, ray_head], capture_output=True,
                         text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stdout


def test_scores_equal_plain_open_clip(scored, clip_weights):
    import open_clip
    import torch
    from PIL import Image

    from vilactl.curation.clip_scorer import DEMO_CLIP, ensure_model_config

    ensure_model_config(DEMO_CLIP)
    model, _, preprocess = open_clip.create_model_and_transforms(DEMO_CLIP,
                                                                 pretrained=str(clip_weights))
    tokenizer = open_clip.get_tokenizer(DEMO_CLIP)
    model.eval()
    rows = pq.read_table(glob.glob(str(scored / "datasets" / "coyo" / "part-*.parquet")),
                         columns=["key", "image", "text"]).to_pylist()
    ours = {r["key"]: r["score"] for r in sql(scored, "SELECT key, score FROM "
                                                      "samples_coyo_scores")}
    assert len(ours) == len(rows) == 90
    with torch.no_grad():
        for r in rows:  # one pair at a time: no batching effects in the reference
            img = model.encode_image(preprocess(Image.open(io.BytesIO(r["image"])))[None],
                                     normalize=True)
            txt = model.encode_text(tokenizer([r["text"]]), normalize=True)
            assert abs(float((img * txt).sum()) - ours[r["key"]]) < 1e-5
    ds = sql(scored, "SELECT kind, parents, params->>'weights_sha256' AS h, "
                     "params->>'precision' AS p FROM datasets WHERE name = 'coyo_scores'")[0]
    assert ds["kind"] == "clip-scores" and ds["parents"] == ["coyo"] and len(ds["h"]) == 64
    assert ds["p"] == "fp32"
    # Resumable per shard: a rerun with the same model scores nothing new.
    before = sql(scored, "SELECT count(*) AS n FROM shards WHERE dataset = 'coyo_scores'")
    assert before == [{"n": 3}]


@pytest.mark.parametrize("model", ["vilactl-demo-clip", "ViT-B-32"])
def test_split_preprocess_gives_the_same_pixels(model):
    """uint8 after the PIL stage + batched ToTensor/Normalize == the model's own transform,
    bit for bit, whatever the input size or mode (resized, cropped, converted)."""
    import torch
    from PIL import Image

    from vilactl.curation.clip_scorer import ScorerSpec, SplitPreprocess
    from vilactl.curation.shapes import random_scene, render

    _, preprocess, _, _ = ScorerSpec(model).build("cpu")
    split = SplitPreprocess.split(preprocess)
    rng = np.random.default_rng(0)
    images = [Image.open(io.BytesIO(render(random_scene(rng), size=n))) for n in (64, 97, 40)]
    images += [Image.new("L", (70, 50), 128), Image.new("RGBA", (64, 64), (9, 99, 199, 10))]
    full = torch.stack([preprocess(im.convert("RGB")) for im in images])
    assert torch.equal(split.tensor(np.stack([split.pil(im.convert("RGB")) for im in images])),
                       full)


def test_a_batch_of_only_undecodable_images_scores_nan():
    """A last batch holding one broken image used to stack a 1×1 blank and crash the forward."""
    from vilactl.curation.clip_scorer import DEMO_CLIP, ScorerSpec
    from vilactl.pipeline.jobs.score import _ScoreActor

    actor = _ScoreActor(ScorerSpec(DEMO_CLIP), 1, True)
    out = actor({"image": [b"not an image", b"\x89PNG"], "text": np.array(["a", "b"]),
                 "key": np.array(["k1", "k2"]), "id": np.array([1, 2]),
                 "path": np.array(["p", "p"])})
    assert np.isnan(out["score"]).all() and len(out["score"]) == 2


def test_curate_clip_scores_selects_exactly_k(scored, ray_head):
    cli(scored, ray_head, "curate", "coyo", "--top-k", "40", "--name", "top40")
    scores = sql(scored, "SELECT id, score FROM samples_coyo_scores")
    want = sorted(scores, key=lambda r: (-r["score"], r["id"]))[:40]
    got = sql(scored, "SELECT id FROM samples_top40 ORDER BY score DESC, id")
    assert [r["id"] for r in got] == [r["id"] for r in want]
    sel = sql(scored, "SELECT k, num_selected, num_candidates, cutoff, score_expr, params "
                      "FROM selections")[0]
    assert (sel["k"], sel["num_selected"], sel["num_candidates"]) == (40, 40, 90)
    assert abs(sel["cutoff"] - want[-1]["score"]) < 1e-6
    params = json.loads(sel["params"])
    assert params["tie_id"] == want[-1]["id"] and params["model"] == "vilactl-demo-clip"
    assert sql(scored, "SELECT count(*) AS n FROM samples_top40 WHERE image IS NOT NULL") == \
        [{"n": 40}]  # images carried along


@pytest.fixture(scope="module")
def tied_meta(tmp_path_factory):
    """COYO metadata in 6 files with scores rounded to 3 decimals (heavy ties) and nulls."""
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("tied")
    n = 3000
    ids = rng.choice(10**12, size=n, replace=False).astype(np.int64)
    s = np.round(rng.normal(0.3, 0.04, n), 3)
    s[:20] = np.nan
    phash = [f"{rng.integers(0, 400):016x}" for _ in range(n)]  # many shared hashes
    for k, part in enumerate(np.array_split(np.arange(n), 6)):
        pq.write_table(pa.table({
            "id": ids[part], "url": [f"https://img.example/{i}.jpg" for i in ids[part]],
            "text": ["x"] * len(part), "image_phash": [phash[i] for i in part],
            "clip_similarity_vitb32": pa.array(s[part], pa.float32()).cast(pa.float64()),
            "clip_similarity_vitl14": np.round(rng.normal(0.2, 0.04, len(part)), 3)}),
            folder / f"part-{k:05d}.parquet")
    return folder, ids, s, phash


def test_curate_expression_equals_lexsort_on_ties(tied_meta, ray_head, tmp_path):
    folder, ids, s, _ = tied_meta
    ws = tmp_path / "ws"
    run_cli("register", "coyo", "--metadata", str(folder / "*.parquet"), "--name", "meta",
            workspace=ws, check=True)
    ok = ~np.isnan(s)
    order = np.lexsort((ids[ok], -s[ok]))
    ranked = ids[ok][order]
    n = len(ids)
    for k in (1, n // 2, n - 1, n, n + 5):
        out = cli(ws, ray_head, "curate", "coyo", "--dataset", "meta", "--top-k", str(k),
                  "--score", "clip_similarity_vitb32", "--name", f"t{k}")
        got = sorted(r["id"] for r in sql(ws, f"SELECT id FROM samples_t{k}"))
        assert got == sorted(ranked[:k].tolist()), k
        if k > ok.sum():
            assert "only 2980 eligible rows" in out.stdout
    excluded = json.loads(sql(ws, "SELECT params FROM selections WHERE name = 't1'")[0]
                          ["params"])["excluded"]
    assert excluded["excluded_non_finite"] == 20


def test_dedup_keeps_the_best_of_each_group(tied_meta, ray_head, tmp_path):
    folder, ids, s, phash = tied_meta
    ws = tmp_path / "ws"
    run_cli("register", "coyo", "--metadata", str(folder / "*.parquet"), "--name", "meta",
            workspace=ws, check=True)
    expr = "clip_similarity_vitb32 + clip_similarity_vitl14"
    cli(ws, ray_head, "curate", "coyo", "--dataset", "meta", "--top-k", "150", "--score", expr,
        "--dedup", "phash,url", "--name", "d")
    rows = sql(ws, f"SELECT id, {expr} AS score, image_phash FROM samples_meta "
                   f"WHERE NOT isnan({expr})")
    ranked = sorted(rows, key=lambda r: (-r["score"], r["id"]))
    seen, want = set(), []
    for r in ranked:  # global dedup reference, then top 150
        if r["image_phash"] not in seen:
            seen.add(r["image_phash"])
            want.append(r["id"])
    got = sql(ws, "SELECT id, image_phash FROM samples_d")
    assert sorted(r["id"] for r in got) == sorted(want[:150])
    assert len({r["image_phash"] for r in got}) == 150
    params = json.loads(sql(ws, "SELECT params FROM selections")[0]["params"])
    assert params["excluded"]["duplicate_phash"] > 0


def one_line(proc, needle):
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_bad_input(scored, ray_head, tmp_path):
    before = catalog_snapshot(scored)
    cases = [
        (["curate", "coyo", "--top-k", "5", "--score", "clip_similarity_vitb64"],
         "has no column 'clip_similarity_vitb64'"),
        (["curate", "coyo", "--top-k", "0"], "--top-k must be a positive integer"),
        (["curate", "coyo", "--top-k", "5", "--dedup", "md5"], "--dedup takes url, phash"),
        (["score", "coyo", "--model", "ViT-Nope-99"], "unknown open_clip model 'ViT-Nope-99'"),
        (["score", "coyo", "--model", "vilactl-demo-clip", "--pretrained",
          str(tmp_path / "missing.safetensors")], "missing.safetensors: checkpoint file not found"),
        (["score", "nope"], "unknown dataset 'nope'"),
    ]
    for args, needle in cases:
        one_line(cli(scored, ray_head, *args, check=False), needle)
    assert catalog_snapshot(scored) == before


def test_metadata_only_dataset_cannot_be_rescored(tied_meta, ray_head, tmp_path):
    """Metadata has no images to score; curate without --score selects by COYO's own
    similarities instead (VILA's sum), and says so."""
    folder, ids, s, _ = tied_meta
    ws = tmp_path / "ws"
    run_cli("register", "coyo", "--metadata", str(folder / "*.parquet"), "--name", "meta",
            workspace=ws, check=True)
    before = catalog_snapshot(ws)
    one_line(cli(ws, ray_head, "score", "meta", "--model", "vilactl-demo-clip",
                 "--pretrained", "", check=False), "has no images to score")
    assert catalog_snapshot(ws) == before
    out = cli(ws, ray_head, "curate", "coyo", "--dataset", "meta", "--top-k", "5")
    assert "selecting by COYO's precomputed CLIP similarities" in out.stdout
    expr = "clip_similarity_vitb32 + clip_similarity_vitl14"
    want = sql(ws, f"SELECT id FROM samples_meta WHERE isfinite({expr}) ORDER BY {expr} DESC, "
                   "id LIMIT 5")
    assert sorted(r["id"] for r in sql(ws, "SELECT id FROM samples_meta_top5")) == \
        sorted(r["id"] for r in want)
