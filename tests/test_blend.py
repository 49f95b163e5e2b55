"""`vilactl blend` on the tiny demo: image shares measured by SQL over the written Parquet,
byte-identical reruns, readers (DuckDB, HF datasets), SIGKILL then rerun, grouping, upsampling,
and one clear line for each kind of bad input."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import catalog_snapshot, run_cli, sql, workspace_copy

from vilactl.curation.records import sample_table, segment
from vilactl.pipeline.jobs.demo_blends import DEMO_BLENDS


@pytest.fixture(scope="module")
def ws(demo_ws, tmp_path_factory):
    return workspace_copy(demo_ws, tmp_path_factory.mktemp("blend") / "ws")


def blend(ws, *args, check=True):
    return run_cli("blend", *args, workspace=ws, check=check)


IMAGES_BY_COMPONENT = ("SELECT component, count(*) AS samples, "
                       "sum(len(list_filter(segments, lambda s: s.image IS NOT NULL))) AS images "
                       "FROM read_parquet('{}/*.parquet') GROUP BY ALL ORDER BY component")


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*.parquet"))}


def test_demo_pretrain_blend_has_requested_image_shares(demo_ws):
    """Shares measured by SQL over the written shards: within 0.5 pp, or exact to one document
    (the largest document's image count) on a blend this small."""
    rows = sql(demo_ws, IMAGES_BY_COMPONENT.format(demo_ws / "blends" / "blend_pretrain"))
    got = {r["component"]: r["images"] for r in rows}
    total = sum(got.values())
    max_doc = sql(demo_ws, "SELECT max(len(list_filter(segments, lambda s: s.image IS NOT NULL)))"
                           " AS m FROM samples_mmc4_interleaved")[0]["m"]
    assert set(got) == {"mmc4_interleaved", "coyo_curated"}
    assert abs(got["mmc4_interleaved"] - total / 2) <= max(0.005 * total, max_doc / 2), got
    # catalog and manifest agree with the data
    comps = sql(demo_ws, "SELECT dataset, weight, achieved_share, num_images, repeats, unit "
                         "FROM blend_components WHERE blend = 'blend_pretrain'")
    for c in comps:
        assert c["num_images"] == got[c["dataset"]] and c["repeats"] == 0
        assert c["achieved_share"] == pytest.approx(got[c["dataset"]] / total)
        assert c["weight"] == 0.5 and c["unit"] == "images"
    # COYO pairs were grouped 4 to a sample
    coyo = sql(demo_ws, "SELECT len(segments) AS n, sample_id FROM samples_blend_pretrain "
                        "WHERE component = 'coyo_curated'")
    assert max(r["n"] for r in coyo) == 8 and all(r["sample_id"].count("+") == r["n"] // 2 - 1
                                                  for r in coyo)


def test_sft_blend_counts_text_only_component_in_samples(demo_ws):
    rows = sql(demo_ws, IMAGES_BY_COMPONENT.format(demo_ws / "blends" / "blend_sft"))
    by = {r["component"]: r for r in rows}
    assert by["text_instruct"]["images"] == 0
    units = by["vqa"]["images"] + by["caption_instruct"]["images"] + \
        by["text_instruct"]["samples"]
    # one unit of the smallest component is 1/units of the blend: exact to one sample
    for name, share in DEMO_BLENDS["blend_sft"]["weights"].items():
        got = by[name]["images"] or by[name]["samples"]
        assert abs(got / units - share) <= max(0.005, 1 / units), (name, got, units)


def test_same_seed_identical_bytes_other_seed_other_order(ws):
    args = ["--mmc4", "0.5", "--coyo", "0.5", "--shard-size", "16"]
    blend(ws, *args, "--name", "a")
    blend(ws, *args, "--name", "b")
    blend(ws, *args, "--name", "c", "--seed", "7")
    # a scatter buffer of 1 byte spills every source shard to disk: same bytes out
    blend(ws, *args, "--name", "spilled", "--memory-gb", "1e-9")
    a, b, c = (ws / "blends" / n for n in "abc")
    assert digests(a) == digests(b) == digests(ws / "blends" / "spilled") and len(digests(a)) > 1
    order = {n: [r["sample_id"] for r in sql(ws, f"SELECT sample_id FROM samples_{n}")]
             for n in "ac"}
    assert order["a"] != order["c"]
    shares = {n: sql(ws, IMAGES_BY_COMPONENT.format(ws / "blends" / n)) for n in "ac"}
    # the same shares, to one document (another seed draws other documents)
    assert all(abs(x["images"] - y["images"]) <= 6 for x, y in zip(shares["a"], shares["c"]))
    # no sample drawn twice without --allow-upsample
    assert len(set(order["a"])) == len(order["a"])


def test_duckdb_and_hf_datasets_read_a_blend(ws):
    import datasets

    blend(ws, "--component", "vqa=0.7", "--component", "text_instruct=0.3", "--name", "hf",
          "--shard-size", "40", "--row-group-size", "8")
    folder = ws / "blends" / "hf"
    manifest = json.loads((folder / "manifest.json").read_text())
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    assert [s["file"] for s in manifest["shards"]] == [os.path.basename(f) for f in files]
    hf = datasets.load_dataset("parquet", data_files=files, split="train",
                               cache_dir=str(ws / "hf-cache"))
    n = sql(ws, f"SELECT count(*) AS n FROM read_parquet('{folder}/*.parquet')")[0]["n"]
    assert hf.num_rows == n == manifest["num_samples"]
    assert isinstance(hf.features["segments"].feature["image"], datasets.Image)
    first = hf[0]
    assert {"sample_id", "source", "segments", "component", "epoch"} <= set(first)
    assert pq.ParquetFile(files[0]).metadata.row_group(0).num_rows == 8


def test_upsample_counts_repeats(ws):
    have = sql(ws, "SELECT num_images FROM datasets WHERE name = 'coyo_curated'")[0]["num_images"]
    bad = blend(ws, "--coyo", "1", "--images", str(2 * have + 3), "--name", "up", check=False)
    assert bad.returncode == 1 and "--allow-upsample" in bad.stderr
    blend(ws, "--coyo", "1", "--images", str(2 * have + 3), "--name", "up", "--allow-upsample")
    rows = sql(ws, "SELECT sample_id, epoch FROM samples_up")
    assert len(rows) == 2 * have + 3
    per_epoch = {}
    for r in rows:
        per_epoch.setdefault(r["epoch"], []).append(r["sample_id"])
    assert sorted(len(v) for v in per_epoch.values()) == [3, have, have]
    assert all(len(set(v)) == len(v) for v in per_epoch.values())
    assert sql(ws, "SELECT repeats FROM blend_components WHERE blend = 'up'") == \
        [{"repeats": have + 3}]


@pytest.mark.parametrize("args, message", [
    (["--component", "nope=1"], "unknown dataset 'nope'"),
    (["--mmc4", "-0.5", "--coyo", "1.5"], "--mmc4 must be a finite number ≥ 0, got -0.5"),
    (["--mmc4", "0", "--coyo", "0"], "all weights are zero"),
    (["--mmc4", "0.3", "--coyo", "0.3"], "weights sum to 0.6, not 1 (pass --normalize"),
    (["--coyo", "1", "--coyo-dataset", "coyo_meta"], "'coyo_meta' (coyo-metadata) has no images"),
    (["--coyo", "1", "--images", "100000"], "has 55 images, the blend needs 100000"),
    (["--component", "vqa"], "--component takes DATASET=WEIGHT"),
])
def test_bad_input_one_line_nothing_written(ws, args, message):
    before = catalog_snapshot(ws)
    before.pop("runs")
    proc = blend(ws, *args, "--name", "bad", check=False)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    after = catalog_snapshot(ws)
    after.pop("runs")
    assert after == before and not (ws / "blends" / "bad").exists()


def test_normalize_rescales(ws):
    blend(ws, "--mmc4", "3", "--coyo", "3", "--normalize", "--name", "norm")
    assert sql(ws, "SELECT weight FROM blend_components WHERE blend = 'norm'") == \
        [{"weight": 0.5}, {"weight": 0.5}]


def test_sigkill_midway_leaves_nothing_then_rerun_completes(tmp_path):
    """A blend big enough to kill midway: 3000 samples of 24 KB in 6 source shards."""
    ws, src = tmp_path / "ws", tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        rows = [{"sample_id": f"{k}-{i}", "source": "synthetic",
                 "segments": [segment("user", image=rng.bytes(24_000)),
                              segment("user", text=f"caption {k} {i}")]} for i in range(500)]
        pq.write_table(sample_table(rows), src / f"part-{k}.parquet")
    run_cli("register", "samples", "--data", str(src / "*.parquet"), "--name", "big",
            workspace=ws, check=True)
    cmd = [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace", str(ws), "blend",
           "--component", "big=1", "--name", "killed", "--shard-size", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((ws / "blends").glob(".killed~*/part-*.parquet")):
        assert time.monotonic() < deadline and proc.poll() is None, "blend ended before kill"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ws / "blends" / "killed").exists()
    assert sql(ws, "SELECT count(*) AS n FROM datasets WHERE name = 'killed'") == [{"n": 0}]
    assert sql(ws, "SELECT count(*) AS n FROM blends") == [{"n": 0}]
    run_cli(*cmd[3:], workspace=ws, check=True)
    assert sql(ws, "SELECT num_samples FROM blends WHERE name = 'killed'") == \
        [{"num_samples": 3000}]
    assert [p.name for p in (ws / "blends").iterdir()] == ["killed"]   # stale temp removed
    ids = pa.concat_tables(pq.read_table(p, columns=["sample_id"])
                           for p in sorted((ws / "blends" / "killed").glob("*.parquet")))
    assert ids.num_rows == len(set(ids["sample_id"].to_pylist())) == 3000
