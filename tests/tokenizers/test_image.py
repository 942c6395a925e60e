"""Image tokenizer: shape contracts, errors, save/load, flex16+5 training, shipped quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniflex.data.scenes import render_scene
from omniflex.tokenizers.base import load_tokenizer
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from omniflex.tokenizers.image_train import (
    digit_image,
    held_out_digit_images,
    held_out_scenes,
    psnr_db,
    train_image_tokenizer,
)

# The shipped tokenizer's held-out means (200 scenes, 100 digits) are 31.8 dB and 39.9 dB; on
# the 8 images below, 31.6 dB and 39.7 dB. Scenes assert the 30 dB target itself; digits assert
# far above their 24 dB target so that a regression shows.
SHIPPED_SCENES_MIN_DB = 30.0
SHIPPED_DIGITS_MIN_DB = 36.0


@pytest.fixture(scope="module")
def tiny() -> ImageTokenizer:
    torch.manual_seed(0)
    return ImageTokenizer(ImageTokenizerConfig.from_name("tiny")).eval()


@pytest.fixture(scope="module")
def shipped() -> ImageTokenizer:
    tok = load_tokenizer("image")
    assert isinstance(tok, ImageTokenizer)
    return tok


def _images(n: int) -> np.ndarray:
    return np.stack([render_scene(s) for s in held_out_scenes(n)])  # (n, 64, 64, 3) uint8


def test_config_checks() -> None:
    assert ImageTokenizerConfig().tokens_per_image == 256
    assert ImageTokenizerConfig().codebook_size == 8 * 5 * 5 * 5
    with pytest.raises(ValueError, match="multiple of grid"):
        ImageTokenizerConfig(grid=12)
    with pytest.raises(ValueError, match="power of two"):
        ImageTokenizerConfig(image_size=48, grid=16, channels=(8, 8), encoder_blocks=(0, 0))
    with pytest.raises(ValueError, match="channels needs one entry per resolution"):
        ImageTokenizerConfig(channels=(8, 16))
    with pytest.raises(ValueError, match="levels"):
        ImageTokenizerConfig(levels=(8, 1))
    with pytest.raises(ValueError, match="unknown image tokenizer preset"):
        ImageTokenizerConfig.from_name("huge")


def test_shapes_and_code_range(tiny: ImageTokenizer) -> None:
    images = _images(3)
    codes = tiny.encode(images)
    assert codes.shape == (3, 16, 16) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < tiny.cardinality == 1000
    assert tiny.num_codebooks == 1 and tiny.vocab_size == 1000
    one = tiny.encode(images[0])
    assert one.shape == (16, 16) and torch.equal(one, codes[0])
    assert torch.equal(tiny.encode(list(images)), codes)
    recon = tiny.decode(codes)
    assert recon.shape == (3, 64, 64, 3) and recon.dtype == np.uint8
    assert tiny.decode(codes[0]).shape == (64, 64, 3)
    assert np.array_equal(tiny.decode(codes.numpy()), recon)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(tiny.encode_tensor(x), codes)
    x_hat = tiny.decode_tensor(codes)
    assert x_hat.shape == (3, 3, 64, 64) and 0 <= float(x_hat.min()) <= float(x_hat.max()) <= 1
    assert tiny.encode(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 16, 16)


def test_other_sizes_are_resized(tiny: ImageTokenizer) -> None:
    big = np.kron(_images(1)[0], np.ones((2, 2, 1), np.uint8))  # (128, 128, 3)
    assert tiny.encode(big).shape == (16, 16)
    assert tiny.encode(np.zeros((30, 50, 3), np.uint8)).shape == (16, 16)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((64, 64, 3), np.float32), "uint8"),
        (np.zeros((64, 64), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((64, 64, 4), np.uint8), "alpha"),
        (np.zeros((2, 2, 64, 64, 3), np.uint8), r"\(H, W, 3\)"),
        (torch.zeros(64, 64, 3, dtype=torch.uint8), "np.ndarray"),
    ],
)
def test_bad_images(tiny: ImageTokenizer, bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny.encode(bad)  # type: ignore[arg-type]


def test_bad_codes_and_tensors(tiny: ImageTokenizer) -> None:
    with pytest.raises(ValueError, match="integers"):
        tiny.decode(torch.zeros(16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        tiny.decode(torch.full((16, 16), 1000))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        tiny.decode(torch.full((16, 16), -1))
    with pytest.raises(ValueError, match="shape"):
        tiny.decode(torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 16, 16\)"):
        tiny.decode_tensor(torch.zeros(16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        tiny.encode_tensor(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        tiny.encode_tensor(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_save_load_round_trip(tiny: ImageTokenizer, tmp_path) -> None:
    images = _images(4)
    tiny.metadata = {"note": "test"}
    first = load_tokenizer(tiny.save(tmp_path / "a"))
    assert isinstance(first, ImageTokenizer) and first.metadata == {"note": "test"}
    assert first.config == tiny.config
    # Saving stores flex16 weights: the first load is within rounding of the float32 model...
    assert psnr_db(tiny.decode(tiny.encode(images)), first.decode(tiny.encode(images))).min() > 45
    # ...and from then on the weights are exact, so codes and images are identical.
    second = load_tokenizer(first.save(tmp_path / "b"))
    assert isinstance(second, ImageTokenizer)
    codes = first.encode(images)
    assert torch.equal(second.encode(images), codes)
    assert np.array_equal(second.decode(codes), first.decode(codes))


def test_flex_training_steps_reduce_loss() -> None:
    tok = train_image_tokenizer(
        None,
        config=ImageTokenizerConfig.from_name("tiny"),
        steps=16,
        batch_size=4,
        lr=1e-2,
        precision="flex16+5",
        n_scenes=8,
        eval_images=0,
        progress=False,
    )
    curve = [loss for _, loss in tok.metadata["training"]["curve"]]
    assert len(curve) == 16
    assert np.mean(curve[-4:]) < 0.7 * np.mean(curve[:4])
    assert tok.metadata["precision"] == "flex16+5" and tok.metadata["steps"] == 16
    # The result is a plain float module that encodes and decodes.
    assert tok.decode(tok.encode(_images(1)[0])).shape == (64, 64, 3)


def test_training_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="precision"):
        train_image_tokenizer(None, precision="float16", steps=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        train_image_tokenizer(None, steps=0)


def test_digits_match_the_corpus_rendering() -> None:
    img = digit_image(1500)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img[:8, :8], np.broadcast_to(img[0, 0], (8, 8, 3)))  # 8x8 blocks
    assert np.array_equal(held_out_digit_images(2)[0], img)


def test_shipped_tokenizer_quality(shipped: ImageTokenizer) -> None:
    assert shipped.tokens_per_image == 256 and shipped.cardinality == 1000
    scenes = _images(8)
    assert psnr_db(scenes, shipped.decode(shipped.encode(scenes))).mean() >= SHIPPED_SCENES_MIN_DB
    digits = held_out_digit_images(8)
    assert psnr_db(digits, shipped.decode(shipped.encode(digits))).mean() >= SHIPPED_DIGITS_MIN_DB
