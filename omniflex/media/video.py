"""MP4 I/O with PyAV: RGB frames plus a 16 kHz mono audio track."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.context import Flags

from omniflex.media.audio import SAMPLE_RATE, resample
from omniflex.media.errors import MediaError

__all__ = ["read_video", "video_bytes", "write_video"]

# FFmpeg's own MPEG-4 Part 2 encoder: bit-exact and deterministic. (libx264 gave run-to-run
# different bytes for the same frames once an audio stream was muxed beside it.)
_VIDEO_CODEC = "mpeg4"
_VIDEO_OPTIONS = {"qscale": "2"}


def video_bytes(frames: np.ndarray, fps: int, audio: np.ndarray | None = None) -> bytes:
    """Encode ``frames`` (T, H, W, 3) uint8 and optional mono 16 kHz ``audio`` as MP4 bytes.

    H.264 (yuv420p) and AAC, with container metadata stripped so equal inputs give equal bytes.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        v = container.add_stream(_VIDEO_CODEC, rate=fps, options=_VIDEO_OPTIONS)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        v.codec_context.flags |= int(Flags.bitexact)
        v.codec_context.thread_count = 1
        v.codec_context.thread_type = "NONE"
        a = None
        if audio is not None:
            a = container.add_stream("aac", rate=SAMPLE_RATE)
            a.layout = "mono"
            a.codec_context.flags |= int(Flags.bitexact)
        for frame in frames:
            for packet in v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in v.encode():
            container.mux(packet)
        if a is not None and audio is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None, :]  # (1, N)
            chunk = 1024
            for start in range(0, pcm.shape[1], chunk):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm[:, start : start + chunk]), format="s16", layout="mono"
                )
                af.sample_rate = SAMPLE_RATE
                af.pts = start
                af.time_base = Fraction(1, SAMPLE_RATE)
                for packet in a.encode(af):
                    container.mux(packet)
            for packet in a.encode():
                container.mux(packet)
    return buf.getvalue()


def write_video(
    path: str | Path, frames: np.ndarray, fps: int, audio: np.ndarray | None = None
) -> Path:
    path = Path(path)
    path.write_bytes(video_bytes(frames, fps, audio))
    return path


def read_video(
    source: str | Path | bytes, *, fps: float | None = None, name: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Decode an MP4: (frames (T, H, W, 3) uint8, 16 kHz mono audio or None, frame rate).

    ``fps`` resamples the frames in time (e.g. 2 frames a second for the tokenizer)."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise MediaError(f"video file {label} does not exist")
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            if not container.streams.video:
                raise MediaError(f"video {label} has no video stream")
            vs = container.streams.video[0]
            rate = float(vs.average_rate or 25)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            audio = None
            if container.streams.audio:
                container.seek(0)
                chunks, arate = [], SAMPLE_RATE
                for f in container.decode(audio=0):
                    arr = f.to_ndarray().astype(np.float32)
                    if f.format.name.startswith("s16"):
                        arr /= 32768.0
                    chunks.append(
                        arr.mean(axis=0)
                        if arr.ndim == 2 and not f.format.is_planar
                        else arr.reshape(len(f.layout.channels), -1).mean(axis=0)
                    )
                    arate = f.sample_rate
                audio = resample(np.concatenate(chunks), arate) if chunks else None
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(f"cannot decode video {label}: {err}; expected an MP4 file") from None
    if not frames:
        raise MediaError(f"video {label} has no frames (truncated?)")
    video = np.stack(frames)
    if fps is not None and fps < rate:
        idx = np.round(np.arange(0, len(video), rate / fps)).astype(int)
        video = video[idx[idx < len(video)]]
        rate = fps
    return video, audio, rate
