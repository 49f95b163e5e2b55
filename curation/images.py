"""Decoding untrusted image bytes with a pixel limit checked before any pixel is decoded.

An image's size is in its header: a 20000×20000 PNG of about 1 MB decodes to 1.2 GB of RGB
(3 GB in some decoders). PIL opens lazily (header only), so the size is read and compared with
the limit first; only then are the pixels decoded. PIL's own guard is the backstop for code
that opens images directly: `MAX_IMAGE_PIXELS` is set to the same limit and its warning made an
error, so PIL refuses any larger image in this process. The limit is VILACTL_MAX_PIXELS
(default 64 Mpx, an 8k × 8k image); download takes `--max-pixels` and counts larger images as
`too_large`.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO

from PIL import Image

from vilactl.base.errors import RecordError

DEFAULT_MAX_PIXELS = int(os.environ.get("VILACTL_MAX_PIXELS", 64_000_000))
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
_BOMB = (Image.DecompressionBombWarning, Image.DecompressionBombError)


def set_limit(max_pixels: int) -> None:
    """The pixel limit for PIL in this process (a download's --max-pixels)."""
    Image.MAX_IMAGE_PIXELS = max_pixels


class ImageProblem(RecordError):
    """Bytes that are not an image, or an image over the pixel limit."""


def header_size(stream: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None if PIL cannot read it (the stream is
    rewound either way); ImageProblem if it is over PIL's limit."""
    pos = stream.tell()
    try:
        with Image.open(stream) as im:
            return im.size
    except _BOMB as e:
        raise ImageProblem(f"image too large ({e})") from e
    except Exception:  # noqa: BLE001 — not an image PIL knows; the decoder decides
        return None
    finally:
        stream.seek(pos)


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str | None = "RGB"
               ) -> Image.Image:
    """The decoded image in `mode` (None: as stored); ImageProblem if it is not an image or
    too large."""
    try:
        im = Image.open(io.BytesIO(data))
    except _BOMB as e:
        w_h = str(e).split("(")[1].split(" ")[0] if "(" in str(e) else "?"
        raise ImageProblem(f"image too large: {w_h} pixels, more than {max_pixels:,}") from e
    except Exception as e:  # noqa: BLE001 — PIL raises many kinds for bad bytes
        raise ImageProblem(f"not a decodable image ({type(e).__name__})") from e
    w, h = im.size
    if w * h > max_pixels:
        raise ImageProblem(f"image too large: {w}x{h} pixels, more than {max_pixels:,}")
    try:
        if mode is None:
            im.load()
            return im
        return im.convert(mode)
    except Exception as e:  # noqa: BLE001
        raise ImageProblem(f"not a decodable image ({type(e).__name__}: {e})") from e


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of bytes that decode as an image within the limit; else ImageProblem."""
    im = open_image(data, max_pixels, mode=None)
    return im.size
