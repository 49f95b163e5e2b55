"""Hostile inputs, round 2: workspaces that cannot be used (a file, a symlink loop, under a file,
a missing parent, read-only), numbers out of range on every command, images stored sideways
(EXIF orientation) or of extreme aspect ratio on every decode path, and a task that fails on a
full disk during curate. Every refusal is one `error:` line, exit 1, with the workspace, the
catalog and a sentinel folder beside them untouched."""
import io
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Untouched, failed_runs, one_line_error, run_cli, sql
from PIL import Image

DOCS = "mmc4_v1.1_doc.jsonl"


# ------------------------------------------------------------------ workspaces
@pytest.fixture
def root(tmp_path):
    return tmp_path


def refused_everywhere(ws, needle, env=None, commands=None):
    """Every kind of command — creating, writing, reading — refuses `ws` with one line."""
    from conftest import REPO

    docs = REPO.parent / "shared" / "data" / DOCS
    commands = commands or [["init"], ["register", "mmc4", "--docs", str(docs), "--name", "m"],
                            ["catalog"], ["sql", "SELECT 1"], ["report"]]
    for args in commands:
        proc = run_cli(*args, workspace=ws, env=env)
        one_line_error(proc, needle)


def test_a_workspace_that_is_a_file(root):
    guard = Untouched(root)
    guard.ws.write_text("not a folder")
    guard.snap()
    refused_everywhere(guard.ws, "is not a folder")
    assert guard.ws.read_text() == "not a folder"
    guard.check()


def test_a_workspace_under_a_file(root):
    guard = Untouched(root)
    (root / "afile").write_text("x")
    guard.snap()
    refused_everywhere(root / "afile" / "ws", f"{root / 'afile'} is a file, not a folder")
    guard.check()


def test_vilactl_workspace_a_symlink_loop(root, shared_data):
    guard = Untouched(root)
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    guard.snap()
    env = {"VILACTL_WORKSPACE": str(root / "loop_a")}
    for args in (["init"], ["catalog"], ["sql", "SELECT 1"],
                 ["register", "mmc4", "--docs", str(shared_data / DOCS), "--name", "m"]):
        cmd = [sys.executable, "-m", "vilactl.pipeline.cli", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "COLUMNS": "200", **env})
        one_line_error(proc, "is a symlink loop")
    guard.check()


def test_a_symlink_loop_inside_the_workspace(root, shared_data):
    guard = Untouched(root)
    run_cli("init", workspace=guard.ws, check=True)
    (guard.ws / "datasets").symlink_to(guard.ws / "datasets")
    guard.snap()
    proc = run_cli("register", "mmc4", "--docs", str(shared_data / DOCS), "--name", "m",
                   workspace=guard.ws)
    one_line_error(proc, "refused, cannot resolve it")
    guard.check()


@pytest.mark.parametrize("create", ["init", "register"])
def test_a_workspace_whose_parent_is_missing_is_not_created(root, shared_data, create):
    guard = Untouched(root)
    ws = root / "typo" / "deeper" / "ws"
    args = ["init"] if create == "init" else ["register", "mmc4", "--docs",
                                              str(shared_data / DOCS), "--name", "m"]
    one_line_error(run_cli(*args, workspace=ws), f"its parent folder {ws.parent} does not exist")
    assert not (root / "typo").exists()
    guard.check()
    # a missing workspace whose parent exists is still created, as before
    run_cli("init", workspace=guard.ws, check=True)
    assert (guard.ws / "catalog.duckdb").is_file()


def test_a_dangling_workspace_symlink(root):
    guard = Untouched(root)
    (root / "ws_link").symlink_to(root / "gone")
    guard.snap()
    one_line_error(run_cli("init", workspace=root / "ws_link"), "which does not exist")
    assert not (root / "gone").exists()
    guard.check()


def unprivileged() -> list[str]:
    """A command prefix under which file modes bind: none for a normal user; for root, the
    capabilities that bypass them dropped (setpriv), since chmod does not stop root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable"]


def run_unprivileged(ws, *args):
    cmd = unprivileged() + [sys.executable, "-m", "vilactl.pipeline.cli", "--workspace",
                            str(ws), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def read_only_ws(root, shared_data):
    guard = Untouched(root)
    run_cli("register", "mmc4", "--docs", str(shared_data / DOCS), "--name", "m",
            workspace=guard.ws, check=True)
    guard.snap()
    mode = guard.ws.stat().st_mode
    guard.ws.chmod(0o555)
    try:
        yield guard
    finally:
        guard.ws.chmod(mode)
        (guard.ws / "catalog.duckdb").chmod(0o644)


def test_a_read_only_workspace_refuses_writers_and_serves_readers(read_only_ws, shared_data):
    guard = read_only_ws
    for args in (["init"], ["register", "mmc4", "--docs", str(shared_data / DOCS), "--name",
                            "m2"],
                 ["blend", "--component", "m=1"], ["report"]):
        one_line_error(run_unprivileged(guard.ws, *args), "is read-only for this user")
    out = run_unprivileged(guard.ws, "sql", "SELECT name FROM datasets", "--format", "csv")
    assert out.returncode == 0 and out.stdout.split() == ['"name"', '"m"'], out.stderr
    assert run_unprivileged(guard.ws, "catalog").returncode == 0
    guard.check()


def test_a_read_only_catalog_file(read_only_ws, shared_data):
    guard = read_only_ws
    guard.ws.chmod(0o755)
    (guard.ws / "catalog.duckdb").chmod(0o444)
    proc = run_unprivileged(guard.ws, "register", "mmc4", "--docs", str(shared_data / DOCS),
                            "--name", "m2")
    one_line_error(proc, "catalog.duckdb is read-only for this user")
    guard.check()


def test_a_read_only_managed_folder(read_only_ws, shared_data):
    guard = read_only_ws
    guard.ws.chmod(0o755)
    (guard.ws / "datasets").chmod(0o555)
    try:
        proc = run_unprivileged(guard.ws, "register", "mmc4", "--docs",
                                str(shared_data / DOCS), "--name", "m2")
    finally:
        (guard.ws / "datasets").chmod(0o755)
    one_line_error(proc, f"{guard.ws / 'datasets'}: cannot write here: Permission denied")
    guard.check()


# ------------------------------------------------------------------ numeric options
@pytest.fixture(scope="module")
def numbers(tmp_path_factory, coyo_rows, shared_data):
    root = tmp_path_factory.mktemp("numbers")
    pq.write_table(pa.Table.from_pylist(coyo_rows), root / "coyo.parquet")
    ws = root / "ws"
    run_cli("register", "coyo", "--metadata", str(root / "coyo.parquet"), "--name", "meta",
            workspace=ws, check=True)
    return root


def out_of_range(root):
    meta, docs = str(root / "coyo.parquet"), str(root / "nothing.jsonl")
    big = str(2**63)
    return [
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--seed", "-1"],
         "--seed must be a non-negative integer below 2^63, got -1"),
        (["blend", "--coyo", "nan", "--coyo-dataset", "meta"], "--coyo must be a finite number"),
        (["blend", "--mmc4", "inf"], "--mmc4 must be a finite number"),
        (["blend", "--component", "meta=nan"], "--component meta's weight must be a finite"),
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--memory-gb", "0"],
         "--memory-gb must be a number in (0, 8000000000], got 0.0"),
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--images", "0"], "--images must"),
        (["blend", "--coyo", "1", "--coyo-dataset", "meta", "--coyo-group", big],
         "--coyo-group must be a positive integer below 2^63"),
        (["download", "coyo", "--metadata", meta, "--retries", "-1"],
         "--retries must be an integer from 0 to 100, got -1"),
        (["download", "coyo", "--metadata", meta, "--shard-retries", "-1"], "--shard-retries"),
        (["download", "coyo", "--metadata", meta, "--timeout", "nan"], "--timeout must be"),
        (["download", "coyo", "--metadata", meta, "--timeout", "10", "--deadline", "5"],
         "--deadline must be ≥ --timeout (10), got 5.0"),
        (["download", "coyo", "--metadata", meta, "--threads", "0"], "--threads must be"),
        (["download", "coyo", "--metadata", meta, "--image-size", "100000"], "--image-size"),
        (["download", "coyo", "--metadata", meta, "--max-pixels", big], "--max-pixels must"),
        (["score", "meta", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["curate", "coyo", "--top-k", big], "--top-k must be a positive integer below 2^63"),
        (["build", "mmc4", "--variant", "pairs", "--seed", "-3"], "--seed must be"),
        (["build", "mmc4", "--variant", "pairs", "--min-sentences", "5", "--max-sentences", "4"],
         "--max-sentences must be ≥ --min-sentences (5), got 4"),
        (["build", "mmc4", "--variant", "pairs", "--min-strong-share", "1.5"],
         "--min-strong-share must be a number in [0, 1], got 1.5"),
        (["build", "mmc4", "--variant", "pairs", "--max-aspect", "0.5"],
         "--max-aspect must be 0 (any) or ≥ 1"),
        (["train", "--stage", "sft", "--steps", "0"], "--steps must be a positive integer"),
        (["train", "--stage", "sft", "--lora", "-1"], "--lora must be a non-negative integer"),
        (["eval", "--limit", "-3"], "--limit must be a positive integer"),
        (["eval", "--shots", f"0,{big}"], "--shots must be a non-negative integer below 2^63"),
        (["generate", "--prompt", "hi", "--temperature", "nan"], "--temperature must be"),
        (["generate", "--prompt", "hi", "--top-p", "0"], "--top-p must be a number in (0, 1]"),
        (["generate", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be"),
        (["ablate", "--sft-steps", "0"], "--sft-steps must be"),
        (["demo", "--seed", "-1"], "--seed must be"),
        (["world", "--out", str(root / "w"), "--seed", big], "--seed must be"),
        (["mirror", "serve", "--port", "70000"], "--port must be an integer from 0 to 65535"),
        (["register", "llava", "--json", docs, "--images", str(root), "--shard-size", "0"],
         "--shard-size must be"),
        (["register", "text-instruct", "--data", docs, "--sample", "0"], "--sample must be"),
        (["register", "text-instruct", "--data", docs, "--sample", "5", "--seed", "-1"],
         "--seed must be"),
    ]


def test_every_numeric_option_is_range_checked(numbers):
    guard = Untouched(numbers)
    for args, needle in out_of_range(numbers):
        one_line_error(run_cli(*args, workspace=guard.ws), needle)
    for env, needle in [({"VILACTL_MAX_PIXELS": "abc"}, "VILACTL_MAX_PIXELS='abc' is not an "),
                        ({"VILACTL_MAX_ASPECT_RATIO": "0.5"}, "VILACTL_MAX_ASPECT_RATIO must be"),
                        ({"VILACTL_LOCK_WAIT": "nan"}, "VILACTL_LOCK_WAIT must be a number"),
                        ({"VILACTL_JSON_MAX_DEPTH": "0"}, "VILACTL_JSON_MAX_DEPTH must be"),
                        ({"VILACTL_CHECK_HASH_BYTES": "-1"},
                         "VILACTL_CHECK_HASH_BYTES must be a non-negative integer")]:
        one_line_error(run_cli("download", "coyo", "--from-dataset", "meta", "--name", "d",
                               workspace=guard.ws, env=env), needle)
    guard.check()
    assert failed_runs(guard.ws) == []         # refused before any run started
    assert not (numbers / "w").exists()


# ------------------------------------------------------------------ images
UPRIGHT = np.zeros((32, 64, 3), np.uint8)            # 64 wide, 32 high: four colour blocks
UPRIGHT[:16, :32], UPRIGHT[:16, 32:] = (230, 30, 30), (30, 200, 30)
UPRIGHT[16:, :32], UPRIGHT[16:, 32:] = (30, 30, 230), (240, 240, 240)
# How a camera stores the upright picture for each EXIF orientation (the inverse of the turn a
# viewer applies, ImageOps.exif_transpose).
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
          8: Image.Transpose.ROTATE_270}


def sideways_jpeg(orientation: int, fmt: str = "JPEG") -> bytes:
    stored = Image.fromarray(UPRIGHT).transpose(STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, fmt, quality=95, exif=exif.tobytes())
    return buf.getvalue()


def assert_upright(pixels) -> None:
    a = np.asarray(pixels, dtype=float)
    if a.shape[0] == 3 and a.ndim == 3 and a.shape[-1] != 3:      # CHW tensors
        a = a.transpose(1, 2, 0)
    if a.max() <= 1.0:
        a = a * 255
    assert a.shape[:2] == (32, 64), a.shape                       # landscape, as shown
    for (y, x) in ((8, 16), (8, 48), (24, 16), (24, 48)):
        assert np.abs(a[y, x] - UPRIGHT[y, x]).max() < 40, (y, x, a[y, x], UPRIGHT[y, x])


def png(size, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "red").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied_on_every_decode_path(orientation):
    import functools

    from vilactl.curation.images import check_image, open_image
    from vilactl.pipeline.jobs.score import _Preprocess
    from vilactl.train import generate
    from vilactl.train.loader import Decoder
    from vilactl.train.vision_tower import image_uint8

    data = sideways_jpeg(orientation)
    assert Image.open(io.BytesIO(data)).size != (64, 32) or orientation == 3   # as stored
    assert_upright(open_image(data))                       # report, build --rescore, checks
    assert check_image(data) == (64, 32)                   # register llava, generate --image
    assert_upright(_Preprocess._one(SimpleNamespace(_pixels=np.asarray), data))   # score
    assert_upright(generate._open(data))                   # generate, eval
    decoder = Decoder(functools.partial(image_uint8, size=64), 64, 0)             # training
    (pixels,) = decoder._decode([data])
    assert pixels.shape == (3, 64, 64)                     # squashed square, so compare halves
    top, bottom = pixels[:, :32].float().mean((1, 2)), pixels[:, 32:].float().mean((1, 2))
    upright = image_uint8(Image.fromarray(UPRIGHT), 64)
    assert torch_close(top, upright[:, :32].float().mean((1, 2)))
    assert torch_close(bottom, upright[:, 32:].float().mean((1, 2)))


def torch_close(a, b, tol=20.0) -> bool:
    return float((a - b).abs().max()) < tol


@pytest.fixture(scope="module")
def served(tmp_path_factory, ray_head):
    """The images on a loopback mirror. (`ray_head` first: img2dataset's downloader imports
    Ray, which reads the session head's settings — loopback, token auth — from the environment
    on its first import, for every later in-process `ray.init` of the session.)"""
    from vilactl.pipeline.services.mirror import Mirror

    root = tmp_path_factory.mktemp("served")
    (root / "sideways.jpg").write_bytes(sideways_jpeg(6))
    (root / "sideways.png").write_bytes(sideways_jpeg(8, "PNG"))     # an eXIf chunk
    (root / "sideways.webp").write_bytes(sideways_jpeg(3, "WEBP"))
    (root / "strip.png").write_bytes(png((1, 100_000)))          # valid, 1×100000
    (root / "banner.png").write_bytes(png((2000, 10)))          # 200:1
    (root / "ok.png").write_bytes(png((120, 40)))               # 3:1
    with Mirror(root) as m:
        yield m


def test_download_stores_images_upright_and_refuses_extreme_aspect_ratios(served, tmp_path):
    from vilactl.curation.fetch import FetchOptions, fetch

    names = ["strip.png", "banner.png", "ok.png", "sideways.jpg", "sideways.png",
             "sideways.webp"]
    res = fetch([str(i) for i in range(len(names))], [f"{served.url}/{n}" for n in names],
                FetchOptions(image_size=64, allow_private_network=True),
                tmp_path / "work").to_pylist()
    assert [r["reason"] for r in res] == ["aspect_ratio", "aspect_ratio"] + [None] * 4, res
    assert "1x100000" in res[0]["error"] and "not decoded" in res[0]["error"]
    assert (res[2]["width"], res[2]["height"]) == (120, 40)
    for side in res[3:]:
        assert (side["original_width"], side["original_height"]) == (64, 32)
        stored = Image.open(io.BytesIO(side["image"]))
        assert stored.getexif().get(0x0112, 1) == 1               # upright, no turning tag
        assert_upright(stored.convert("RGB"))


def test_download_refuses_outputs_over_the_limit_when_upscaling(served, tmp_path):
    from vilactl.curation.fetch import FetchOptions, fetch

    # 120×40 upscaled to a short side of 16384 is 805 Mpx: refused from the header
    res = fetch(["0"], [f"{served.url}/ok.png"],
                FetchOptions(image_size=16384, resize_only_if_bigger=False,
                             allow_private_network=True), tmp_path / "work").to_pylist()
    assert res[0]["reason"] == "too_large" and "as output" in res[0]["error"], res


def test_register_llava_refuses_an_extreme_aspect_ratio_by_name(tmp_path):
    guard = Untouched(tmp_path)
    images = tmp_path / "img"
    images.mkdir()
    (images / "strip.png").write_bytes(png((1, 100_000)))
    (images / "photo.jpg").write_bytes(sideways_jpeg(6))
    rec = {"id": "r1", "image": "strip.png", "conversations": [
        {"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "red"}]}
    (tmp_path / "one.json").write_text(json.dumps([rec]))
    run_cli("init", workspace=guard.ws, check=True)
    guard.snap()
    proc = run_cli("register", "llava", "--json", str(tmp_path / "one.json"), "--images",
                   str(images), "--name", "lv", workspace=guard.ws)
    one_line_error(proc, "record r1", "image aspect ratio too extreme: 1x100000 pixels")
    guard.check()
    ok = {**rec, "image": "photo.jpg"}          # a sideways photo is fine: decoded upright
    (tmp_path / "two.json").write_text(json.dumps([ok]))
    run_cli("register", "llava", "--json", str(tmp_path / "two.json"), "--images", str(images),
            "--name", "lv", workspace=guard.ws, check=True)
    assert sql(guard.ws, "SELECT num_images FROM datasets WHERE name = 'lv'") == \
        [{"num_images": 1}]


# ------------------------------------------------------------------ a task on a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_full_disk_during_curate_is_the_one_error_line(tmp_path, small_disk, ray_head,
                                                         coyo_rows):
    rows = [{**coyo_rows[i % len(coyo_rows)], "id": 10**12 + i, "url": f"http://x.test/{i}",
             "clip_similarity_vitb32": (i * 7919 % 1000) / 1000.0,
             "clip_similarity_vitl14": (i * 104729 % 1000) / 1000.0} for i in range(20_000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "meta.parquet")
    guard = Untouched(tmp_path)
    run_cli("register", "coyo", "--metadata", str(tmp_path / "meta.parquet"), "--name", "meta",
            workspace=guard.ws, check=True)
    (guard.ws / "datasets").symlink_to(small_disk)   # an administrator's other disk, full
    guard.snap()
    proc = run_cli("--ray-address", ray_head, "curate", "coyo", "--dataset", "meta", "--top-k",
                   "15000", "--name", "top", workspace=guard.ws)
    one_line_error(proc, "curate failed (write) on part 0", "No space left on device")
    assert "Traceback" not in proc.stdout and "Ray:" not in proc.stdout, proc.stdout
    assert "retr" not in proc.stdout.lower(), proc.stdout
    guard.check()
    assert list(small_disk.iterdir()) == []          # the temp output is gone
    assert failed_runs(guard.ws)[-1]["target"] == "datasets/top"
