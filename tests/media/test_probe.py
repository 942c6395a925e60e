"""validate_media: kind by content, full decode, MediaInfo fields; and the package surface."""

import dataclasses
import inspect

import numpy as np
import pytest
import soundfile as sf

import omniflex.media as media
from omniflex.media import (
    MEDIA_KINDS,
    MediaError,
    MediaInfo,
    detect_kind,
    to_jpeg_bytes,
    to_png_bytes,
    validate_media,
    write_audio,
    write_image,
    write_video,
)


def image(h: int = 24, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 10, (x + y) * 4], axis=-1).astype(np.uint8)


def test_wav_at_its_own_rate(tmp_path):
    stereo = np.zeros((22_050, 2), np.float32)
    stereo[:, 0] = 0.1
    sf.write(tmp_path / "a.wav", stereo, 44_100, subtype="PCM_16")
    info = validate_media(tmp_path / "a.wav")
    assert info == MediaInfo(
        kind="wav",
        path=tmp_path / "a.wav",
        duration_s=0.5,
        sample_rate=44_100,
        width=None,
        height=None,
        frames=None,
        bytes=(tmp_path / "a.wav").stat().st_size,
    )


def test_flac(tmp_path):
    path = write_audio(tmp_path / "a.flac", np.zeros(8000, np.float32))
    info = validate_media(str(path))
    assert (info.kind, info.sample_rate, info.duration_s) == ("flac", 16_000, 0.5)
    assert info.bytes == path.stat().st_size


@pytest.mark.parametrize(("ext", "kind"), [(".png", "png"), (".jpg", "jpeg")])
def test_images(tmp_path, ext, kind):
    path = write_image(tmp_path / f"a{ext}", image())
    info = validate_media(path)
    assert (info.kind, info.width, info.height) == (kind, 40, 24)
    assert info.duration_s is info.sample_rate is info.frames is None


def test_mp4(tmp_path):
    frames = np.full((12, 32, 48, 3), 100, np.uint8)
    path = write_video(tmp_path / "v.mp4", frames, 8, np.zeros(24_000, np.float32))
    info = validate_media(path)
    assert info.kind == "mp4" and (info.width, info.height, info.frames) == (48, 32, 12)
    assert info.duration_s == pytest.approx(1.5) and info.sample_rate == 16_000
    silent = validate_media(write_video(tmp_path / "s.mp4", frames[:2], 8))
    assert silent.sample_rate is None and silent.frames == 2


def test_kind_comes_from_content_not_extension(tmp_path):
    (tmp_path / "photo.png").write_bytes(to_jpeg_bytes(image()))
    (tmp_path / "sound.mp4").write_bytes(to_png_bytes(image()))
    assert validate_media(tmp_path / "photo.png").kind == "jpeg"
    assert validate_media(tmp_path / "sound.mp4").kind == "png"


def test_unknown_kind(tmp_path):
    (tmp_path / "notes.wav").write_text("just some text, not a wave file")
    with pytest.raises(
        MediaError, match=r"notes\.wav is of an unknown kind.*expected WAV, FLAC, PNG"
    ):
        validate_media(tmp_path / "notes.wav")


def test_decodes_in_full_so_truncation_is_caught(tmp_path):
    png = to_png_bytes(image())
    (tmp_path / "cut.png").write_bytes(png[:-20])
    with pytest.raises(MediaError, match=r"cut\.png"):
        validate_media(tmp_path / "cut.png")


def test_missing_empty_and_too_big(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        validate_media(tmp_path / "gone.png")
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(MediaError, match=r"e\.jpg is empty"):
        validate_media(tmp_path / "e.jpg")
    path = write_image(tmp_path / "a.png", image())
    with pytest.raises(MediaError, match=r"a\.png is .* over the 100 bytes limit"):
        validate_media(path, max_bytes=100)


def test_media_info_is_frozen(tmp_path):
    info = validate_media(write_image(tmp_path / "a.png", image()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.kind = "jpeg"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d", "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x00\x00\x00\x1cftypisom\x00\x00", "mp4"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00", None),  # HEIF still image
        (b"RIFF\x24\x00\x00\x00AVI LIST", None),
        (b"GIF89a", None),
        (b"", None),
    ],
)
def test_detect_kind(head, kind):
    assert detect_kind(head) == kind
    assert kind is None or kind in MEDIA_KINDS


def test_public_api_is_listed_and_documented():
    assert len(media.__all__) == len(set(media.__all__))
    for name in media.__all__:
        obj = getattr(media, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
    assert issubclass(MediaError, ValueError)
