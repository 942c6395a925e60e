"""MP4 I/O: frames and audio round trip, exact temporal resampling, stereo AAC, refusals."""

import io
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from omniflex.media import (
    SAMPLE_RATE,
    MediaError,
    frame_times,
    read_video,
    to_png_bytes,
    to_wav_bytes,
    video_bytes,
    write_video,
)
from omniflex.media.video import _to_mono

FPS = 8
T = 16  # 2 s at 8 fps


def moving_frames(t: int = T, h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth periodic patterns sliding 4 pixels a frame: (T, H, W, 3) uint8, no hard edges."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    frames = [
        np.stack(
            [
                0.5 + 0.35 * np.sin(2 * np.pi * (x - 4 * i / w)),
                0.15 + 0.5 * y,
                0.5 + 0.3 * np.cos(2 * np.pi * (x + y - 4 * i / w)),
            ],
            axis=-1,
        )
        for i in range(t)
    ]
    return (np.stack(frames) * 255).round().astype(np.uint8)


def tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    return (0.4 * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(
        np.float32
    )


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


def mux_mp4(
    path: Path,
    frames: np.ndarray | None,
    audio: np.ndarray | None = None,
    rate: int = 44_100,
    faststart: bool = False,
) -> Path:
    """An MP4 written the way other tools do: any audio rate and layout, index at the front."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        v = a = None
        if frames is not None:
            v = container.add_stream("mpeg4", rate=FPS)
            v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if audio is not None:  # (C, N) float32
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            a = container.add_stream("aac", rate=rate)
            a.layout = layout
        if v is not None and frames is not None:
            for frame in frames:
                container.mux(v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(v.encode())
        if a is not None and audio is not None:
            for start in range(0, audio.shape[1], 1024):
                chunk = np.ascontiguousarray(audio[:, start : start + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
                container.mux(a.encode(af))
            container.mux(a.encode())
    return path


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray, bytes]:
    frames, audio = moving_frames(), tone(440.0, SAMPLE_RATE, 2.0)
    return frames, audio, video_bytes(frames, FPS, audio)


def test_frames_and_audio_round_trip(tmp_path, clip):
    frames, audio, mp4 = clip
    path = write_video(tmp_path / "clip.mp4", frames, FPS, audio)
    assert path.read_bytes() == mp4  # deterministic
    got, got_audio, rate = read_video(path)
    assert rate == 8.0 and got.shape == frames.shape and got.dtype == np.uint8
    error = np.abs(got.astype(float) - frames).mean(axis=(1, 2, 3))  # (T,) per frame
    # qscale 2 is near lossless; what is left is mostly 4:2:0 chroma. No drift across P-frames.
    assert error.mean() < 3.0 and error.max() < 4.0, error
    assert got_audio is not None and got_audio.dtype == np.float32
    assert abs(len(got_audio) / SAMPLE_RATE - 2.0) <= 0.1
    assert peak_hz(got_audio, SAMPLE_RATE) == pytest.approx(440.0, abs=2.0)


def test_encoding_is_deterministic(clip):
    frames, audio, mp4 = clip
    assert video_bytes(frames.copy(), FPS, audio.copy()) == mp4
    assert video_bytes(frames, FPS) != mp4


def test_video_without_audio_reads_none(clip):
    frames, _, _ = clip
    got, audio, rate = read_video(video_bytes(frames[:4], FPS))
    assert audio is None and got.shape[0] == 4 and rate == 8.0


@pytest.mark.parametrize(
    ("fps", "expected_idx"),
    [
        (2, [0, 4, 8, 12]),  # what the tokenizer asks for
        (3, [0, 2, 5, 8, 10, 13]),
        (2.5, [0, 3, 6, 9, 12]),
        (0.5, [0]),
        (8, list(range(T))),
        (12, [math.floor(k * 8 / 12) for k in range(24)]),  # above the file's rate: repeats
    ],
)
def test_fps_resampling_picks_the_frame_on_screen(clip, fps, expected_idx):
    native, _, _ = read_video(clip[2])
    got, audio, rate = read_video(clip[2], fps=fps)
    assert rate == fps  # exactly what was asked for
    assert len(got) == math.ceil(2.0 * fps) == len(expected_idx)
    np.testing.assert_array_equal(got, native[expected_idx])
    assert audio is not None and len(audio) == len(read_video(clip[2])[1])


def test_frame_times():
    np.testing.assert_array_equal(frame_times(4, 2), [0.0, 0.5, 1.0, 1.5])
    assert frame_times(0, 8).shape == (0,)
    assert frame_times(3, 8).dtype == np.float64
    with pytest.raises(MediaError, match="fps must be a positive"):
        frame_times(3, 0)
    with pytest.raises(MediaError, match="num_frames must be"):
        frame_times(-1, 2)


def test_stereo_aac_at_44k_becomes_16k_mono(tmp_path):
    left = tone(1000.0, 44_100, 2.0)
    path = mux_mp4(tmp_path / "s.mp4", moving_frames(8), np.stack([left, left]))
    frames, audio, rate = read_video(path)
    assert frames.shape == (8, 64, 64, 3) and rate == 8.0
    assert audio is not None and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - 2.0) <= 0.1
    assert peak_hz(audio, SAMPLE_RATE) == pytest.approx(1000.0, abs=2.0)
    assert 0.3 < np.abs(audio[4000:-4000]).max() < 0.5  # same on both sides: amplitude kept


def test_packed_audio_frames_are_deinterleaved():
    # AAC decodes to planar samples; PCM tracks decode packed (L R L R ...).
    pcm = np.array([[1000, -1000, 2000, -2000, 3000, -3000]], np.int16)  # 3 stereo samples
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
    np.testing.assert_allclose(_to_mono(frame), [0.0, 0.0, 0.0])
    mono = av.AudioFrame.from_ndarray(np.array([[16384, -32768]], np.int16), "s16", "mono")
    np.testing.assert_allclose(_to_mono(mono), [0.5, -1.0])


# --- refusals -------------------------------------------------------------------------------


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.mp4 does not exist"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"e\.mp4 is empty \(0 bytes\); expected an MP4"):
        read_video(tmp_path / "e.mp4")


def test_garbage_bytes():
    with pytest.raises(MediaError, match=r"cannot decode video file v\.mp4.*expected an MP4"):
        read_video(b"certainly not a video" * 50, name="v.mp4")


@pytest.mark.parametrize("kind", ["png", "wav"])
def test_other_containers_are_refused(kind):
    data = (
        to_png_bytes(moving_frames(1)[0])
        if kind == "png"
        else to_wav_bytes(tone(440.0, SAMPLE_RATE, 0.2))
    )
    with pytest.raises(MediaError, match=rf"x\.mp4 is .*{kind}.*; expected an MP4 file"):
        read_video(data, name="x.mp4")


def test_mp4_with_only_audio(tmp_path):
    path = mux_mp4(tmp_path / "a.m4a", None, tone(440.0, 16_000, 0.5)[None], rate=16_000)
    with pytest.raises(MediaError, match=r"a\.m4a has no video stream \(found: audio\)"):
        read_video(path)


def test_truncated_mp4_loses_its_index(clip):
    mp4 = clip[2]
    with pytest.raises(MediaError, match=r"cannot decode video file cut\.mp4"):
        read_video(mp4[: len(mp4) // 2], name="cut.mp4")


def test_truncated_faststart_mp4(tmp_path):
    # Index first: the cut falls in the media data. Cutting mid-packet fails in the decoder;
    # cutting exactly between packets decodes cleanly but short, which the duration check sees.
    path = mux_mp4(tmp_path / "fs.mp4", moving_frames(), faststart=True)
    data = path.read_bytes()
    with av.open(str(path)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.pos is not None]
    for cut in (positions[8] + 7, positions[8]):
        with pytest.raises(MediaError, match=r"fs-cut\.mp4"):
            read_video(data[:cut], name="fs-cut.mp4")
    with pytest.raises(MediaError, match=r"truncated: its header declares 2\.00 s"):
        read_video(data[: positions[8]], name="fs-cut.mp4")


def test_limits(clip):
    mp4 = clip[2]
    with pytest.raises(MediaError, match=r"long\.mp4 lasts 2\.0 s or more, over the 1 s limit"):
        read_video(mp4, max_seconds=1.0, name="long.mp4")
    with pytest.raises(MediaError, match=r"more than max_frames=10 frames"):
        read_video(mp4, max_frames=10, name="many.mp4")
    assert len(read_video(mp4, fps=2, max_frames=10)[0]) == 4  # a lower fps fits the limit
    with pytest.raises(MediaError, match=r"big\.mp4 is .* over the 1\.0 KB limit"):
        read_video(mp4, max_bytes=1000, name="big.mp4")


@pytest.mark.parametrize("fps", [0, -2, float("nan")])
def test_bad_fps(clip, fps):
    with pytest.raises(MediaError, match="fps must be a positive"):
        read_video(clip[2], fps=fps)


@pytest.mark.parametrize(
    ("frames", "fps", "audio", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), 8, None, r"\(T, H, W, 3\) uint8"),
        (np.zeros((8, 8, 3), np.uint8), 8, None, r"\(T, H, W, 3\) uint8"),
        (np.zeros((0, 8, 8, 3), np.uint8), 8, None, r"T, H, W >= 1"),
        (np.zeros((2, 8, 8, 3), np.uint8), 0, None, "fps must be a positive whole number"),
        (np.zeros((2, 8, 8, 3), np.uint8), 8, np.zeros(10, np.int16), "mono float"),
        (np.zeros((2, 8, 8, 3), np.uint8), 8, np.full(10, np.nan, np.float32), "NaN"),
    ],
)
def test_write_refuses_bad_input(tmp_path, frames, fps, audio, match):
    with pytest.raises(MediaError, match=match):
        write_video(tmp_path / "v.mp4", frames, fps, audio)
    assert not (tmp_path / "v.mp4").exists()


def test_write_refuses_other_extensions(tmp_path):
    with pytest.raises(MediaError, match=r"'\.avi' is not supported; use \.mp4"):
        write_video(tmp_path / "v.avi", moving_frames(2), FPS)
    assert list(tmp_path.iterdir()) == []


def test_bytes_and_path_sources_agree(tmp_path, clip):
    path = tmp_path / "c.mp4"
    path.write_bytes(clip[2])
    a, b = read_video(path, fps=2), read_video(io.BytesIO(clip[2]).getvalue(), fps=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
