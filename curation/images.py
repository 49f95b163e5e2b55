"""Decoding untrusted image bytes with a pixel limit checked before any pixel is decoded.

An image's size is in its header: a 20000×20000 PNG of about 1 MB decodes to 1.2 GB of RGB
(3 GB in some decoders). PIL opens lazily (header only), so the size is read and compared with
the limit first; only then are the pixels decoded. PIL's own guard is the backstop for code
that opens images directly: `MAX_IMAGE_PIXELS` is set to the same limit and its warning made an
error, so PIL refuses any larger image in this process. The limit is VILACTL_MAX_PIXELS
(default 64 Mpx, an 8k × 8k image); download takes `--max-pixels` and counts larger images as
`too_large`.

Every decode applies the EXIF orientation (a phone's portrait photo is stored sideways with an
Orientation tag that viewers honour): `open_image` — what scoring, training, eval, generate and
the report decode with — returns the image upright, and download hands img2dataset, whose
OpenCV decoder ignores the tag, an upright copy of any image that has one (`upright_bytes`), so
downloaded images are upright without the tag.

Images whose long side is more than MAX_ASPECT_RATIO (VILACTL_MAX_ASPECT_RATIO, default 100)
times their short side are refused as `aspect_ratio` (a 1×100000 spacer or banner): resizing
one to a model's square input is meaningless, and its short side scaled to 224 or 336 pixels
makes tens of gigapixels.
"""
from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from PIL import Image, ImageOps

from vilactl.base.errors import RecordError
from vilactl.base.ranges import env_number

DEFAULT_MAX_PIXELS = env_number("VILACTL_MAX_PIXELS", 64_000_000, 1, integer=True)
MAX_ASPECT_RATIO = env_number("VILACTL_MAX_ASPECT_RATIO", 100.0, 1.0)
ORIENTATION = 0x0112          # the EXIF tag; 1 is upright, 2-8 flip and/or rotate
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
_BOMB = (Image.DecompressionBombWarning, Image.DecompressionBombError)


def set_limit(max_pixels: int) -> None:
    """The pixel limit for PIL in this process (a download's --max-pixels)."""
    Image.MAX_IMAGE_PIXELS = max_pixels


class ImageProblem(RecordError):
    """Bytes that are not an image, or an image over the pixel or aspect-ratio limit."""


def aspect_problem(width: int, height: int) -> str | None:
    """Why an image of this size is refused for its shape, or None. (Download counts it under
    the reason `aspect_ratio`: curation/fetch_results.py looks for "aspect ratio".)"""
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"image aspect ratio too extreme: {width}x{height} pixels, long side more "
                f"than {MAX_ASPECT_RATIO:g} times the short one (VILACTL_MAX_ASPECT_RATIO)")
    return None


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 — a broken EXIF block: show the pixels as stored
        return 1


def upright(im: Image.Image) -> Image.Image:
    """A loaded image with its EXIF orientation applied (the same image if it has none)."""
    if _orientation(im) in range(2, 9):
        return ImageOps.exif_transpose(im)
    return im


def upright_bytes(data: bytes) -> bytes | None:
    """For an image (within the pixel limit) whose EXIF orientation is not upright: the upright
    pixels as a fast PNG, for decoders that ignore the tag (img2dataset's OpenCV). None when
    the bytes need no turning — almost always, found without decoding: no EXIF marker."""
    tiff = data[:4] in (b"II*\x00", b"MM\x00*")            # orientation is a TIFF tag
    if not tiff and not any(m in data for m in (b"xif", b"XIf", b"XIF")):   # Exif, eXIf, EXIF
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if _orientation(im) not in range(2, 9):   # JPEG, WebP: from the header, undecoded
                return None
            im.load()
            turned = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 — not decodable here: the decoder reports it
        return None
    if turned.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        turned = turned.convert("RGB")                     # CMYK, YCbCr: no PNG mode
    buf = io.BytesIO()
    turned.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


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
    if why := aspect_problem(w, h):
        raise ImageProblem(why)
    try:
        im.load()
        im = upright(im)
        return im if mode is None else im.convert(mode)
    except Exception as e:  # noqa: BLE001
        raise ImageProblem(f"not a decodable image ({type(e).__name__}: {e})") from e


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height), upright, of bytes that decode as an image within the limits; else
    ImageProblem."""
    im = open_image(data, max_pixels, mode=None)
    return im.size
