"""Image I/O: PNG exact and JPEG close round trips, mode conversion, and every refusal."""

import io

import numpy as np
import pytest
from PIL import Image

from omniflex.media import (
    MediaError,
    read_image,
    to_jpeg_bytes,
    to_png_bytes,
    write_image,
)


def smooth_image(h: int = 48, w: int = 64) -> np.ndarray:
    """Gradients and a gentle wave: the kind of content JPEG keeps well."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([x, y, 0.5 + 0.4 * np.sin(3 * x + 2 * y)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def noisy_image(h: int = 20, w: int = 30) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_png_round_trip_is_exact(tmp_path):
    image = noisy_image()
    path = write_image(tmp_path / "a.png", image)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.read_bytes() == to_png_bytes(image)
    got = read_image(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, image)
    np.testing.assert_array_equal(read_image(path.read_bytes()), image)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".JPG"])
def test_jpeg_round_trip_is_close(tmp_path, ext):
    image = smooth_image()
    path = write_image(tmp_path / f"a{ext}", image)
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"
    assert path.read_bytes() == to_jpeg_bytes(image)  # deterministic, quality 95
    got = read_image(path)
    assert got.shape == image.shape
    assert psnr_db(got, image) > 35.0


def test_jpeg_quality_trades_size_for_fidelity():
    image = smooth_image()
    low, high = to_jpeg_bytes(image, quality=20), to_jpeg_bytes(image, quality=95)
    assert len(low) < len(high)
    assert psnr_db(read_image(low), image) < psnr_db(read_image(high), image)


def test_resize_on_read():
    got = read_image(to_png_bytes(smooth_image(48, 64)), size=32)
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_modes_become_rgb(mode):
    image = smooth_image()
    buf = io.BytesIO()
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    Image.fromarray(image).convert(mode).save(buf, format=fmt)
    got = read_image(buf.getvalue())
    assert got.shape == (*image.shape[:2], 3) and got.dtype == np.uint8


def test_16_bit_greyscale_keeps_its_contrast():
    grey16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, format="PNG")
    got = read_image(buf.getvalue())
    np.testing.assert_array_equal(got[..., 0], (grey16 >> 8).astype(np.uint8))
    assert got.min() == 0 and got.max() == 255  # not clipped to white


# --- refusals -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.png does not exist"):
        read_image(tmp_path / "nope.png")


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(MediaError, match=r"e\.png is empty \(0 bytes\).*PNG or JPEG"):
        read_image(tmp_path / "e.png")


def test_garbage_bytes():
    with pytest.raises(MediaError, match=r"cannot decode image file pic\.png.*PNG or JPEG"):
        read_image(b"not an image" * 20, name="pic.png")


def test_other_image_formats_are_refused():
    buf = io.BytesIO()
    Image.fromarray(smooth_image()).save(buf, format="GIF")
    with pytest.raises(MediaError, match=r"anim\.gif is GIF; expected a PNG or JPEG"):
        read_image(buf.getvalue(), name="anim.gif")


@pytest.mark.parametrize("cut", [40, 100, -30, -20, -12])
def test_truncated_png(tmp_path, cut):
    # -20 and -12 lose only the tail (checksums, IEND): Pillow's load() alone accepts them and
    # returns an image; verifying the chunks catches it.
    png = to_png_bytes(smooth_image())
    (tmp_path / "cut.png").write_bytes(png[:cut])
    with pytest.raises(MediaError, match=r"cannot decode image file .*cut\.png"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("cut", [40, 400, -200, -2])
def test_truncated_jpeg(cut):
    jpeg = to_jpeg_bytes(smooth_image())
    with pytest.raises(MediaError, match=r"cannot decode image file cut\.jpg.*whole and intact"):
        read_image(jpeg[:cut], name="cut.jpg")


def test_too_many_pixels_is_refused_before_decoding():
    png = to_png_bytes(smooth_image(48, 64))
    with pytest.raises(MediaError, match=r"big\.png is 64x48 = 3,072 pixels, over the 1,000"):
        read_image(png, max_pixels=1000, name="big.png")


def test_too_big_is_refused_before_reading(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"\0" * 3000)
    with pytest.raises(MediaError, match=r"big\.jpg is 3\.0 KB, over the 2\.0 KB limit"):
        read_image(tmp_path / "big.jpg", max_bytes=2000)


def test_bad_size_argument():
    with pytest.raises(MediaError, match="size must be a positive"):
        read_image(to_png_bytes(noisy_image()), size=0)


def test_write_refuses_other_extensions_and_leaves_nothing(tmp_path):
    for name in ("a.bmp", "a.gif", "noext"):
        with pytest.raises(MediaError, match=r"use \.png, \.jpg or \.jpeg"):
            write_image(tmp_path / name, noisy_image())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_write_refuses_anything_but_hw3_uint8(tmp_path, image, ext):
    with pytest.raises(MediaError, match=r"expected an \(H, W, 3\) uint8 RGB array"):
        write_image(tmp_path / f"a{ext}", image)
    assert not (tmp_path / f"a{ext}").exists()


def test_jpeg_quality_range():
    with pytest.raises(MediaError, match="quality must be 1 to 100"):
        to_jpeg_bytes(noisy_image(), quality=0)
