"""`vilactl download` against the loopback mirror on a real Ray head: exact counts per fault,
images in the right slots, kill -9 and resume, --retry-failed, opt-outs and refused hosts."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import catalog_snapshot, run_cli, sql
from PIL import Image

from vilactl.curation.world import DEFAULT_BASE_URL, FAULTS, PRESETS, generate
from vilactl.pipeline.services.mirror import Mirror

REASON = {"404": "http_404", "500": "http_500", "slow": "timeout", "truncated": "incomplete_read",
          "notimage": "decode_error", "noai": "opt_out"}
HEALTHY = ("", "redirect")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("dlworld")
    cfg = replace(PRESETS["tiny"], seed=5, coyo_rows=300, coyo_shard_rows=100, broken_rate=0.3,
                  mmc4_docs=30, mmc4_shard_docs=15, mmc4_broken_rate=0.15)
    generate(out, cfg)
    truth = pq.read_table(out / "truth" / "coyo.parquet").to_pylist()
    assert {t["fault"] for t in truth} == set(FAULTS) | {""}  # every fault is injected
    return out


@pytest.fixture(scope="module")
def mirror(world):
    with Mirror(world, slow_s=2.0) as m:
        yield m


def dl_args(world, mirror, corpus="coyo", timeout="1"):
    src = ["--metadata", str(world / "coyo" / "*.parquet")] if corpus == "coyo" else \
        ["--docs", str(world / "mmc4" / "*.jsonl.zip")]
    return ["download", corpus, *src, "--image-size", "64", "--timeout", timeout,
            "--allow-private-network", "--url-map", f"{DEFAULT_BASE_URL}={mirror.url}"]


def download(ws, ray_head, *args, check=True):
    return run_cli("--ray-address", ray_head, *args, workspace=ws, check=check)


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64)), np.float32)


@pytest.fixture(scope="module")
def full_coyo(world, mirror, ray_head, tmp_path_factory):
    ws = tmp_path_factory.mktemp("full") / "ws"
    download(ws, ray_head, *dl_args(world, mirror), "--shard-size", "20")
    return ws


def test_coyo_counts_match_injected_faults_exactly(full_coyo, world):
    truth = pq.read_table(world / "truth" / "coyo.parquet").to_pylist()
    healthy = {str(t["id"]) for t in truth if t["fault"] in HEALTHY}
    counts = json.loads(sql(full_coyo, "SELECT counts FROM runs WHERE command LIKE "
                                       "'vilactl download%'")[0]["counts"])
    assert counts["attempted"] == 300 and counts["succeeded"] == len(healthy)
    expected = Counter(REASON[t["fault"]] for t in truth if t["fault"] not in HEALTHY)
    assert counts["failed"] == dict(expected) and len(expected) == 6
    keys = [r["key"] for r in sql(full_coyo, "SELECT key FROM samples_coyo")]
    assert len(keys) == len(set(keys)) and set(keys) == healthy
    per_shard = sql(full_coyo, "SELECT sum((counts->>'succeeded')::INT) AS ok, count(*) AS n "
                               "FROM shards WHERE dataset = 'coyo'")[0]
    assert per_shard == {"ok": len(healthy), "n": 15}
    ds = sql(full_coyo, "SELECT kind, num_samples, num_images, parents FROM datasets "
                        "WHERE name = 'coyo'")[0]
    assert ds == {"kind": "coyo-images", "num_samples": len(healthy),
                  "num_images": len(healthy), "parents": []}


def test_coyo_images_are_the_served_pictures(full_coyo, world):
    rows = pq.read_table(sorted((full_coyo / "datasets" / "coyo").glob("part-*.parquet"))[0]
                         ).to_pylist()
    for r in rows[:10]:
        original = decoded((world / "images" / "coyo" / f"{r['id']}.png").read_bytes())
        assert np.abs(decoded(r["image"]) - original).mean() < 8
        assert r["key"] == str(r["id"]) and r["image_width"] == 64 and r["text"]


def test_kill_midway_then_resume_equals_uninterrupted(full_coyo, world, mirror, ray_head,
                                                      tmp_path):
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace", str(ws),
           "--ray-address", ray_head, *dl_args(world, mirror), "--shard-size", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    out = ws / "datasets" / "coyo"
    deadline = time.monotonic() + 120
    while not list(out.glob("_stats/*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("_stats/*.json")))
    assert 1 <= done_before < 15, done_before
    assert sql(ws, "SELECT status FROM runs") == [{"status": "running"}]
    assert sql(ws, "SELECT count(*) AS n FROM datasets WHERE name = 'coyo'") == [{"n": 0}]

    download(ws, ray_head, *dl_args(world, mirror), "--shard-size", "20")
    assert sorted(r["status"] for r in sql(ws, "SELECT status FROM runs")) == \
        ["incomplete", "ok"]
    resumed = [r["key"] for r in sql(ws, "SELECT key FROM samples_coyo ORDER BY key")]
    reference = [r["key"] for r in sql(full_coyo, "SELECT key FROM samples_coyo ORDER BY key")]
    assert resumed == reference and len(set(resumed)) == len(resumed)
    assert not list(out.rglob("*.tmp"))


def test_retry_failed_recovers_timeouts_only(world, mirror, ray_head, tmp_path):
    ws = tmp_path / "ws"
    download(ws, ray_head, *dl_args(world, mirror), "--shard-size", "100")
    first = sql(ws, "SELECT counts FROM runs")[0]
    timeouts = json.loads(first["counts"])["failed"]["timeout"]
    download(ws, ray_head, *dl_args(world, mirror, timeout="5"), "--shard-size", "100",
             "--retry-failed")
    counts = json.loads(sql(ws, "SELECT counts FROM runs ORDER BY started_at DESC")[0]["counts"])
    assert "timeout" not in counts["failed"] and counts["failed"]["http_404"] > 0
    assert counts["succeeded"] == json.loads(first["counts"])["succeeded"] + timeouts
    keys = [r["key"] for r in sql(ws, "SELECT key FROM samples_coyo")]
    assert len(keys) == len(set(keys)) == counts["succeeded"]


def test_mmc4_policies_and_image_slots(world, mirror, ray_head, tmp_path):
    ws = tmp_path / "ws"
    truth = pq.read_table(world / "truth" / "mmc4.parquet").to_pylist()
    by_doc: dict[str, list[bool]] = {}
    for t in truth:
        by_doc.setdefault(t["doc_id"], []).append(t["fault"] in HEALTHY)
    download(ws, ray_head, *dl_args(world, mirror, "mmc4"))
    download(ws, ray_head, *dl_args(world, mirror, "mmc4"), "--keep-partial-docs",
             "--name", "mmc4_partial")
    strict = sql(ws, "SELECT num_samples, num_images FROM datasets WHERE name = 'mmc4'")[0]
    partial = sql(ws, "SELECT num_samples, num_images FROM datasets "
                      "WHERE name = 'mmc4_partial'")[0]
    complete = [d for d, ok in by_doc.items() if all(ok)]
    assert len(complete) < len(by_doc)  # some documents lost images
    assert strict == {"num_samples": len(complete),
                      "num_images": sum(len(by_doc[d]) for d in complete)}
    assert partial == {"num_samples": sum(any(ok) for ok in by_doc.values()),
                       "num_images": sum(sum(ok) for ok in by_doc.values())}
    docs = pq.read_table(sorted((ws / "datasets" / "mmc4").glob("part-*.parquet"))[0]).to_pylist()
    for d in docs[:5]:
        assert len(d["similarity_matrix"]) == len(d["image_info"])
        for info in d["image_info"]:
            rel = info["raw_url"].split("/images/", 1)[1]
            original = decoded((world / "images" / rel).read_bytes())
            assert np.abs(decoded(info["image"]) - original).mean() < 8


def test_opt_out_can_be_ignored_and_private_hosts_are_refused(world, mirror, ray_head,
                                                              tmp_path):
    one = str(world / "coyo" / "part-00000.parquet")
    ws = tmp_path / "ws"
    hits = sum(mirror.hits.values())
    args = ["download", "coyo", "--metadata", one, "--url-map",
            f"{DEFAULT_BASE_URL}={mirror.url}", "--name", "refused"]
    out = download(ws, ray_head, *args)
    assert "every URL was refused" in out.stdout
    counts = json.loads(sql(ws, "SELECT counts FROM runs")[0]["counts"])
    assert counts["failed"] == {"rejected_url": 100} and counts["succeeded"] == 0
    assert sum(mirror.hits.values()) == hits  # nothing was fetched
    download(ws, ray_head, *dl_args(world, mirror), "--ignore-opt-outs", "--name", "noopt")
    counts = json.loads(sql(ws, "SELECT counts FROM runs ORDER BY started_at DESC")[0]["counts"])
    assert "opt_out" not in counts["failed"]


def test_webdataset_format(world, mirror, ray_head, tmp_path):
    ws = tmp_path / "ws"
    args = dl_args(world, mirror)
    args[3] = str(world / "coyo" / "part-00000.parquet")
    download(ws, ray_head, *args, "--format", "webdataset")
    ok = sql(ws, "SELECT num_images FROM datasets")[0]["num_images"]
    tars = sorted((ws / "datasets" / "coyo").glob("part-*.tar"))
    names = [m.name for t in tars for m in tarfile.open(t).getmembers()]
    assert len(names) == 3 * ok and sum(n.endswith(".jpg") for n in names) == ok


def one_line_failure(proc, needle):
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_bad_input(world, tmp_path, coyo_rows, ray_head):
    import pyarrow as pa

    ws = tmp_path / "ws"
    run_cli("init", workspace=ws, check=True)
    before = catalog_snapshot(ws)
    no_url = tmp_path / "no_url.parquet"
    pq.write_table(pa.Table.from_pylist(coyo_rows).drop_columns(["url"]), no_url)
    bad_json = tmp_path / "docs.jsonl"
    bad_json.write_text('{"text_list": ["a"], "image_info": []}\n{"text_list": [\n')
    not_zip = tmp_path / "docs_shard_0_v3.jsonl.zip"
    not_zip.write_bytes(b"this is not a zip archive")
    cases = [
        (["coyo", "--metadata", str(no_url)], f"{no_url}: missing required column url"),
        (["coyo", "--metadata", str(tmp_path / "none" / "*.parquet")], "no COYO Parquet files"),
        (["mmc4", "--docs", str(bad_json)], f"{bad_json}:2: malformed JSON"),
        (["mmc4", "--docs", str(not_zip)], f"{not_zip}: not a readable zip archive"),
        (["coyo", "--from-dataset", "nope"], "unknown dataset 'nope'"),
        (["coyo", "--metadata", str(no_url), "--shard-size", "0"], "--shard-size must be"),
    ]
    for args, needle in cases:
        one_line_failure(run_cli("--ray-address", ray_head, "download", *args, workspace=ws),
                         needle)
    assert catalog_snapshot(ws) == before
    assert not (ws / "datasets").exists() or not any((ws / "datasets").iterdir())


def test_failed_units_are_retried_then_reported(ray_head, tmp_path):
    from vilactl.pipeline.services.ray_runtime import ray_session, run_tasks

    def flaky(marker: str, failures: int) -> int:  # nested: Ray ships it by value
        import pathlib

        p = pathlib.Path(marker)
        attempt = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(attempt))
        if attempt <= failures:
            raise RuntimeError(f"attempt {attempt} failed")
        return attempt

    calls = [("flaky", (str(tmp_path / "a"), 2)), ("broken", (str(tmp_path / "b"), 99))]
    with ray_session(ray_head):
        results, errors = run_tasks(flaky, calls, num_cpus=0.5, retries=2, describe="t",
                                    quiet=True)
    assert results == {"flaky": 3}  # failed twice, third attempt committed
    assert list(errors) == ["broken"] and "attempt 3 failed" in errors["broken"]
