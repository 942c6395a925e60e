"""Image I/O: RGB uint8 arrays (H, W, 3), read from and written to PNG or JPEG.

Reading checks the file size before reading and the pixel count before decoding (a small file
can declare a huge image), verifies PNG chunk checksums so a cut-off file is caught rather than
half-decoded, and converts every mode to RGB. Writing picks PNG or JPEG by the extension.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from omniflex.media._source import (
    Source,
    check_source,
    label_of,
    read_source,
    suffix_of,
    write_atomic,
)
from omniflex.media.errors import MediaError

__all__ = [
    "JPEG_QUALITY",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "read_image",
    "to_jpeg_bytes",
    "to_png_bytes",
    "write_image",
]

MAX_PIXELS = 4096 * 4096
MAX_IMAGE_BYTES = 200_000_000
JPEG_QUALITY = 95

_EXPECTED = "a PNG or JPEG file"
# Pillow's format names; MPO is the multi-picture JPEG that many cameras write.
_READ_FORMATS = frozenset({"PNG", "JPEG", "MPO"})
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
# What Pillow raises on bad data: OSError (truncated, unidentified), SyntaxError (bad PNG chunk),
# EOFError, ValueError and DecompressionBombError for headers it will not trust.
_PIL_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)


def read_image(
    source: Source,
    *,
    size: int | None = None,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> np.ndarray:
    """Read a PNG or JPEG file (path or bytes) as RGB uint8 (H, W, 3).

    ``size`` resizes to ``size`` x ``size`` (bicubic). ``name`` labels ``source`` in error
    messages (default: the path). Alpha is dropped; greyscale, palette, CMYK and 16-bit images
    become 8-bit RGB. Raises ``MediaError`` for a missing, empty, oversized (``max_bytes``),
    truncated or undecodable file, another format, or more than ``max_pixels`` pixels.
    """
    if size is not None and (int(size) != size or size <= 0):
        raise MediaError(f"read_image: size must be a positive whole number, got {size!r}")
    label = label_of(source, name)
    check_source(source, kind="image", label=label, max_bytes=max_bytes, expected=_EXPECTED)
    raw = read_source(source, kind="image", label=label)
    fmt, width, height = _inspect(raw, label)
    if fmt not in _READ_FORMATS:
        raise MediaError(f"image file {label} is {fmt}; expected {_EXPECTED}")
    if width * height > max_pixels:
        raise MediaError(
            f"image file {label} is {width}x{height} = {width * height:,} pixels, over the "
            f"{max_pixels:,} pixel limit; downscale it or pass a larger max_pixels"
        )
    try:
        with warnings.catch_warnings():
            # Our max_pixels check above is the guard; Pillow's own bomb warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if fmt == "PNG":
                with Image.open(io.BytesIO(raw)) as img:
                    img.verify()  # chunk CRCs up to IEND: catches a cut-off file load() accepts
            with Image.open(io.BytesIO(raw)) as img:
                img.load()
                rgb = _to_rgb(img)
    except _PIL_ERRORS as err:
        raise MediaError(_decode_failure(label, err)) from None
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def _inspect(raw: bytes, label: str) -> tuple[str, int, int]:
    """(format, width, height) from the header alone: nothing is decompressed yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                return str(img.format), img.width, img.height
    except _PIL_ERRORS as err:
        raise MediaError(_decode_failure(label, err)) from None


def _decode_failure(label: str, err: BaseException) -> str:
    reason = str(err).replace("<_io.BytesIO object", "<bytes").strip() or type(err).__name__
    if isinstance(err, Image.DecompressionBombError):
        reason = "it declares an implausibly large image"
    return f"cannot decode image file {label} ({reason}); expected {_EXPECTED}, whole and intact"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB."""
    if img.mode.startswith("I"):
        # 16-bit greyscale PNG: convert("RGB") would clip every value above 255 to white.
        grey = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))
    return img.convert("RGB")


def _check_rgb(image: np.ndarray, fmt: str) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] == 0
        or image.shape[1] == 0
    ):
        got = (
            f"{image.dtype} {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise MediaError(
            f"cannot encode image as {fmt}: expected an (H, W, 3) uint8 RGB array with H, W >= 1, "
            f"got {got}; convert floats in [0, 1] with (x * 255).round().astype(np.uint8) and "
            f"stack greyscale to 3 channels"
        )


def to_png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 RGB image (deterministic)."""
    _check_rgb(image, "PNG")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def to_jpeg_bytes(image: np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image at ``quality`` (1-100; default 95)."""
    _check_rgb(image, "JPEG")
    if int(quality) != quality or not 1 <= quality <= 100:
        raise MediaError(f"cannot encode image as JPEG: quality must be 1 to 100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def write_image(
    path: str | os.PathLike[str], image: np.ndarray, *, quality: int = JPEG_QUALITY
) -> Path:
    """Write an (H, W, 3) uint8 image as PNG or JPEG, chosen by the extension.

    .png is lossless; .jpg/.jpeg use ``quality``. The file appears whole or not at all.
    """
    fmt = _WRITE_FORMATS.get(suffix_of(path))
    if fmt is None:
        raise MediaError(
            f"cannot write image file {path}: extension {suffix_of(path) or '(none)'!r} is not "
            f"supported; use .png, .jpg or .jpeg"
        )
    data = to_png_bytes(image) if fmt == "PNG" else to_jpeg_bytes(image, quality=quality)
    return write_atomic(path, data, kind="image")
