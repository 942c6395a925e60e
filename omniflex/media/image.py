"""Image I/O: RGB uint8 arrays (H, W, 3)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from omniflex.media.errors import MediaError

__all__ = ["read_image", "to_png_bytes", "write_image"]

MAX_PIXELS = 4096 * 4096


def read_image(
    source: str | Path | bytes, *, size: int | None = None, name: str | None = None
) -> np.ndarray:
    """Read PNG/JPEG (path or bytes) as RGB uint8, optionally resized to ``size`` x ``size``."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise MediaError(f"image file {label} does not exist")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise MediaError(
                    f"image {label} has {img.width}x{img.height} pixels, over the limit"
                )
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise MediaError(
            f"cannot decode image {label}: {err}; expected a PNG or JPEG file"
        ) from None
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def to_png_bytes(image: np.ndarray) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_image(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.write_bytes(to_png_bytes(image))
    return path
