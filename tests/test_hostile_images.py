"""Hostile images on every decode path: photos stored sideways (EXIF orientation 3, 6, 8 in
JPEG, PNG and WebP) come out upright in scoring, training, eval, generate and downloads; extreme
aspect ratios (a valid 1×100000 PNG) are refused by name (`aspect_ratio`), never a decode error."""
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import Untouched, one_line_error, run_cli, sql
from PIL import Image

DOCS = "mmc4_v1.1_doc.jsonl"



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


