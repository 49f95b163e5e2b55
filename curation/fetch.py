"""Fetch one work unit of images with img2dataset's own downloader, resizer and writer.

vilactl replaces only img2dataset's *distributor* (its Ray distributor drops failed shards and
never retries URLs); the per-URL work — urllib with a thread pool, X-Robots-Tag opt-outs,
retries, decoding, resizing, re-encoding, hashing — is img2dataset's `Downloader`, called
in-process on one shard. This module has no Ray in it: pipeline/jobs/download.py runs `fetch` inside
Ray tasks. Importing it has no side effects (img2dataset's workers may be spawned).
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from vilactl.curation.fetch_results import failure_reason
from vilactl.curation.images import (
    DEFAULT_MAX_PIXELS,
    ImageProblem,
    aspect_problem,
    header_size,
    set_limit,
    upright_bytes,
)
from vilactl.curation.netpolicy import url_refusal
from vilactl.curation.safe_http import Policy, guarded

JPEG_MAX_SIDE = 65500          # libjpeg's limit on either side of an encoded image
OPT_OUT_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")  # img2dataset's default

RESULT_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("reason", pa.string()),          # null on success (curation/fetch_results.py)
    ("error", pa.string()),
    ("image", pa.binary()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("sha256", pa.string()),
])


@dataclass(frozen=True)
class FetchOptions:
    image_size: int = 336
    resize_mode: str = "keep_ratio"      # img2dataset: keep aspect, short side = image_size
    resize_only_if_bigger: bool = True   # never upscale small images
    encode_format: str = "jpg"
    encode_quality: int = 95
    timeout: float = 10.0
    retries: int = 0                     # per-URL retries inside img2dataset
    threads: int = 64
    respect_opt_outs: bool = True
    allow_private_network: bool = False
    allow_hosts: tuple[str, ...] = ()    # host[:port] allowed even when private
    deadline: float | None = None        # total seconds per URL (None: 3 × timeout)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are not decoded: `too_large`
    url_map: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (prefix, replacement)

    def policy(self) -> Policy:
        return Policy(self.allow_private_network, self.allow_hosts,
                      self.deadline or 3 * self.timeout)

    def fetch_url(self, url: str) -> str:
        for prefix, repl in self.url_map:
            if url.startswith(prefix):
                return repl + url[len(prefix):]
        return url


def _downloader(opts: FetchOptions, out: Path):
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.downloader import Downloader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import ParquetSampleWriter

    class LimitedResizer(Resizer):
        """img2dataset's resizer checks max_image_area only after decoding (a 20000² PNG of
        1 MB then takes GBs): read the size from the header first, and refuse extreme aspect
        ratios (curation/images.py) and outputs over the pixel limit (an --upscale'd banner)
        there too. Its OpenCV decoder ignores EXIF orientation: an image with a turning tag
        is handed over upright."""

        def __call__(self, img_stream, blurring_bbox_list=None):
            try:
                size = header_size(img_stream)
            except ImageProblem:
                size = (self.max_image_area + 1, 1)
            if size is not None:
                why = _shape_refusal(size, self)
                if why:
                    return None, None, None, None, None, why
            pos = img_stream.tell()
            turned = upright_bytes(img_stream.read())
            img_stream.seek(pos)
            if turned is not None:
                img_stream = io.BytesIO(turned)
            return super().__call__(img_stream, blurring_bbox_list)

    resizer = LimitedResizer(image_size=opts.image_size, resize_mode=opts.resize_mode,
                             resize_only_if_bigger=opts.resize_only_if_bigger,
                             encode_format=opts.encode_format,
                             encode_quality=opts.encode_quality,
                             max_image_area=opts.max_pixels)
    return Downloader(
        sample_writer_class=ParquetSampleWriter, resizer=resizer, thread_count=opts.threads,
        save_caption=False, extract_exif=False, output_folder=str(out),
        column_list=["url", "vkey"], timeout=opts.timeout, number_sample_per_shard=10**9,
        oom_shard_count=5, compute_hash="sha256", verify_hash_type=None,
        encode_format=opts.encode_format, retries=opts.retries, user_agent_token=None,
        disallowed_header_directives=list(OPT_OUT_DIRECTIVES) if opts.respect_opt_outs else None)


def _shape_refusal(size: tuple[int, int], resizer) -> str | None:
    """Why an image of this (header) size is not decoded, or None: over the pixel limit,
    an extreme aspect ratio, or an output (once resized) over the pixel limit or wider than
    JPEG allows."""
    w, h = size
    if w * h > resizer.max_image_area:
        return "image area too large (read from its header; not decoded)"
    if why := aspect_problem(w, h):
        return f"{why}; not decoded"
    mode, target = resizer.resize_mode.name, resizer.image_size
    side = min(w, h) if mode in ("keep_ratio", "center_crop") else max(w, h)
    ow, oh = w, h
    if mode != "no" and (side > target or not resizer.resize_only_if_bigger):
        scale = target / side
        ow, oh = ((target, target) if mode in ("center_crop", "border")
                  else (round(w * scale), round(h * scale)))
    if ow * oh > resizer.max_image_area or max(ow, oh) > JPEG_MAX_SIDE:
        return (f"image area too large as output ({w}x{h} → {ow}x{oh} by {mode} {target}; "
                "not decoded)")
    return None


def fetch(keys: list[str], urls: list[str], opts: FetchOptions, workdir: Path) -> pa.Table:
    """Download `urls` (keyed by `keys`); one RESULT_SCHEMA row per key, in key order."""
    refused, todo_keys, todo_urls = {}, [], []
    for key, url in zip(keys, urls):
        target = opts.fetch_url(url) if url else url
        why = url_refusal(target, opts.allow_private_network, opts.allow_hosts)
        if why:
            refused[key] = why
        else:
            todo_keys.append(key)
            todo_urls.append(target)
    rows = {k: _failed(k, "rejected_url", why) for k, why in refused.items()}
    if todo_keys:
        rows.update(_run_img2dataset(todo_keys, todo_urls, opts, workdir))
    return pa.Table.from_pylist([rows[k] for k in keys], schema=RESULT_SCHEMA)


def _failed(key: str, reason: str, error: str | None) -> dict:
    return {"key": key, "reason": reason, "error": error}


def _run_img2dataset(keys: list[str], urls: list[str], opts: FetchOptions,
                     workdir: Path) -> dict[str, dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    set_limit(opts.max_pixels)
    tmp = Path(tempfile.mkdtemp(prefix="img2dataset-", dir=workdir))
    try:
        shard = tmp / "input.feather"
        feather.write_feather(pa.table({"url": urls, "vkey": keys}), shard,
                              compression="uncompressed")
        with guarded(opts.policy()):
            ok, _ = _downloader(opts, tmp)((0, str(shard)))
        if not ok:
            raise RuntimeError("img2dataset failed on this shard (see worker log)")
        out = pq.read_table(tmp / "00000.parquet")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    image_col = opts.encode_format if opts.encode_format in out.column_names else "jpg"
    result = {}
    for r in out.select(["vkey", "status", "error_message", image_col, "width", "height",
                         "original_width", "original_height", "sha256"]).to_pylist():
        reason = failure_reason(r["status"], r["error_message"])
        if reason:
            result[r["vkey"]] = _failed(r["vkey"], reason, r["error_message"])
        else:
            result[r["vkey"]] = {"key": r["vkey"], "reason": None, "error": None,
                                 "image": r[image_col], "width": r["width"],
                                 "height": r["height"], "original_width": r["original_width"],
                                 "original_height": r["original_height"], "sha256": r["sha256"]}
    return result
