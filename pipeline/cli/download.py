"""`vilactl download coyo|mmc4`: the command-line face of pipeline/jobs/download.py."""
from __future__ import annotations

from pathlib import Path

import typer

from vilactl.base.errors import VilactlError
from vilactl.base.ranges import check_range
from vilactl.pipeline.cli.choices import Corpus, DownloadFormat, ResizeMode
from vilactl.pipeline.cli.context import COUNT, in_range

SECONDS = in_range(0, 86400, lo_open=True)     # a day at most per URL


def _url_map(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for p in pairs:
        if "=" not in p:
            raise VilactlError(f"--url-map takes PREFIX=REPLACEMENT, got {p!r}")
        prefix, repl = p.split("=", 1)
        out.append((prefix, repl))
    return tuple(out)


def download(
    corpus: Corpus = typer.Argument(..., help="coyo (image-text pairs) or mmc4 (documents)."),
    metadata: str | None = typer.Option(None, help="coyo: glob of COYO metadata Parquet."),
    docs: str | None = typer.Option(None, help="mmc4: glob of MMC4 .jsonl / .jsonl.zip."),
    from_dataset: str | None = typer.Option(
        None, help="A catalog dataset to download instead of a glob (e.g. a registered or "
                   "curated metadata selection: select first, download only what was kept)."),
    name: str | None = typer.Option(None, help="Output dataset name (default: the corpus)."),
    shard_size: int = typer.Option(10_000, callback=COUNT,
                                   help="Rows (pairs or documents) per work unit."),
    image_size: int = typer.Option(336, callback=in_range(1, 16384),
                                   help="Target size (short side with keep_ratio)."),
    resize_mode: ResizeMode = typer.Option("keep_ratio", help="img2dataset resize mode."),
    upscale: bool = typer.Option(False, "--upscale", help="Also enlarge smaller images."),
    fmt: DownloadFormat = typer.Option("parquet", "--format",
                                       help="Output of each unit (webdataset: coyo only)."),
    retries: int = typer.Option(0, callback=in_range(0, 100),
                                help="Per-URL retries inside img2dataset."),
    shard_retries: int = typer.Option(2, callback=in_range(0, 100),
                                      help="Ray retries of a unit whose task failed."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Re-attempt URLs that failed transiently (timeouts, "
                                           "5xx, cut transfers) in an earlier run."),
    timeout: float = typer.Option(10.0, callback=SECONDS,
                                  help="Seconds a connection or read may stall before the URL "
                                       "counts as timed out."),
    deadline: float | None = typer.Option(None, callback=SECONDS,
                                          help="Total seconds per URL, redirects and slow "
                                               "bodies included, at least --timeout (default: "
                                               "3 × --timeout)."),
    max_pixels: int | None = typer.Option(None, callback=COUNT,
                                          help="Larger images are not decoded and count as "
                                               "too_large (default: VILACTL_MAX_PIXELS, else "
                                               "64000000)."),
    threads: int = typer.Option(64, callback=in_range(1, 1024),
                                help="Download threads per unit."),
    keep_partial: bool = typer.Option(False, "--keep-partial-docs",
                                      help="mmc4: keep documents that lost images (dropping "
                                           "those images); default requires all images (VILA)."),
    ignore_opt_outs: bool = typer.Option(False, "--ignore-opt-outs",
                                         help="Download despite X-Robots-Tag noai/noimageai."),
    allow_private_network: bool = typer.Option(
        False, "--allow-private-network",
        help="Allow loopback/private/link-local hosts (the demo's 127.0.0.1 mirror)."),
    allow_host: list[str] = typer.Option(
        [], "--allow-host", help="HOST or HOST:PORT fetched even if private (e.g. an "
                                 "internal mirror), repeatable; narrower than "
                                 "--allow-private-network."),
    url_map: list[str] = typer.Option([], "--url-map",
                                      help="PREFIX=REPLACEMENT: fetch URLs starting with PREFIX "
                                           "from REPLACEMENT instead (records keep the original)."),
    replace: bool = typer.Option(False, "--replace", help="Start the dataset over."),
) -> None:
    """Download images with img2dataset as Ray tasks, one per unit; resumable, exactly-once.

    Failed URLs are counted by reason (http_<code>, timeout, incomplete_read, decode_error,
    opt_out, rejected_url, …) per shard and per dataset in the catalog."""
    from vilactl.curation.fetch import FetchOptions
    from vilactl.pipeline.cli.context import console, state
    from vilactl.pipeline.jobs.download import DownloadRequest
    from vilactl.pipeline.jobs.download import download as run

    if corpus == "coyo" and docs:
        raise VilactlError("--docs is for mmc4; COYO takes --metadata")
    if corpus == "mmc4" and metadata:
        raise VilactlError("--metadata is for coyo; MMC4 takes --docs")
    check_range(deadline, "--deadline", timeout, lo_name="--timeout")
    from vilactl.curation.images import DEFAULT_MAX_PIXELS

    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    opts = FetchOptions(image_size=image_size, resize_mode=resize_mode.value,
                        resize_only_if_bigger=not upscale, timeout=timeout, retries=retries,
                        threads=threads, respect_opt_outs=not ignore_opt_outs,
                        allow_private_network=allow_private_network,
                        allow_hosts=tuple(allow_host), url_map=_url_map(url_map),
                        deadline=deadline, max_pixels=max_pixels)
    req = DownloadRequest(kind=corpus.value, name=name or corpus.value,
                          pattern=metadata or docs, from_dataset=from_dataset, fmt=fmt.value,
                          shard_size=shard_size, shard_retries=shard_retries,
                          retry_failed=retry_failed, require_all=not keep_partial,
                          replace=replace, opts=opts)
    ds = run(Path(state.workspace), req, state.ray_address, console)
    console.print(f"downloaded [bold]{ds.name}[/bold]: {ds.num_samples} "
                  f"{'pairs' if corpus == 'coyo' else 'documents'}, {ds.num_images} images")
