"""MP4 I/O with PyAV: RGB frames (T, H, W, 3) uint8 plus a 16 kHz mono audio track.

Writing is deterministic (FFmpeg's bit-exact MPEG-4 Part 2 encoder, AAC audio, no timestamps in
the container), so equal inputs give equal bytes and corpus shards hash the same on every run.

Reading checks the file size, the container kind and the declared duration before decoding,
decodes video and audio in one pass, and can resample frames in time: with ``fps`` the k-th
returned frame is the one on screen at ``k / fps`` seconds, so the returned rate is exactly
``fps`` whether that drops frames or repeats them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.context import Flags

from omniflex.media._source import Source, check_source, label_of, write_atomic
from omniflex.media.audio import SAMPLE_RATE, resample
from omniflex.media.errors import MediaError

__all__ = [
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_FRAMES",
    "MAX_VIDEO_SECONDS",
    "frame_times",
    "read_video",
    "video_bytes",
    "write_video",
]

MAX_VIDEO_SECONDS = 600.0
MAX_VIDEO_FRAMES = 10_000  # frames returned; bounds memory (10k frames of 224x224 RGB = 1.5 GB)
MAX_VIDEO_BYTES = 2_000_000_000

# FFmpeg's own MPEG-4 Part 2 encoder: bit-exact and deterministic. (libx264 gave run-to-run
# different bytes for the same frames once an audio stream was muxed beside it.)
_VIDEO_CODEC = "mpeg4"
# A constant quantiser of 2 (near lossless), set the way `ffmpeg -q:v 2` sets it: the qscale flag
# plus global_quality in lambda units (FF_QP2LAMBDA = 118). A {"qscale": "2"} stream option is
# silently ignored: the encoder falls back to its 200 kb/s default and P-frames drift (mean abs
# error 6 to 10 on 64x64 frames instead of about 2.5).
_QSCALE = 2
_FF_QP2LAMBDA = 118
_EXPECTED = "an MP4 file"
# AAC pads its last frame to 1024 samples; trim up to this much beyond the declared duration.
_AAC_PADDING = 2048


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Start time in seconds of each of ``num_frames`` frames at ``fps``: (T,) float64."""
    if int(num_frames) != num_frames or num_frames < 0:
        raise MediaError(f"frame_times: num_frames must be a whole number >= 0, got {num_frames}")
    if not np.isfinite(fps) or fps <= 0:
        raise MediaError(f"frame_times: fps must be a positive number, got {fps}")
    return np.arange(int(num_frames), dtype=np.float64) / float(fps)


def _check_frames_and_audio(frames: np.ndarray, fps: int, audio: np.ndarray | None) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
        or 0 in frames.shape
    ):
        got = getattr(frames, "dtype", type(frames).__name__), getattr(frames, "shape", "")
        raise MediaError(
            f"cannot encode video: frames must be a (T, H, W, 3) uint8 RGB array with "
            f"T, H, W >= 1, got {got[0]} {got[1]}"
        )
    if int(fps) != fps or fps <= 0:
        raise MediaError(f"cannot encode video: fps must be a positive whole number, got {fps}")
    if audio is None:
        return
    if (
        not isinstance(audio, np.ndarray)
        or not np.issubdtype(audio.dtype, np.floating)
        or audio.ndim != 1
    ):
        got = getattr(audio, "dtype", type(audio).__name__), getattr(audio, "shape", "")
        raise MediaError(
            f"cannot encode video: audio must be 16 kHz mono float samples, shape (N,), "
            f"got {got[0]} {got[1]}"
        )
    if not np.isfinite(audio).all():
        raise MediaError("cannot encode video: audio has NaN or Inf samples; expected finite")


def video_bytes(frames: np.ndarray, fps: int, audio: np.ndarray | None = None) -> bytes:
    """Encode ``frames`` (T, H, W, 3) uint8 and optional mono 16 kHz ``audio`` as MP4 bytes.

    MPEG-4 Part 2 (yuv420p, qscale 2) and AAC, bit-exact and with container metadata stripped,
    so equal inputs give equal bytes. Audio is clipped to [-1, 1].
    """
    _check_frames_and_audio(frames, fps, audio)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        v = container.add_stream(_VIDEO_CODEC, rate=int(fps))
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        v.codec_context.flags |= int(Flags.bitexact) | int(Flags.qscale)
        v.codec_context.global_quality = _QSCALE * _FF_QP2LAMBDA
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
    path: str | os.PathLike[str], frames: np.ndarray, fps: int, audio: np.ndarray | None = None
) -> Path:
    """Write ``frames`` and optional 16 kHz mono ``audio`` to an .mp4 file (see ``video_bytes``).

    The file appears whole or not at all.
    """
    if Path(path).suffix.lower() not in (".mp4", ".m4v"):
        raise MediaError(
            f"cannot write video file {path}: extension {Path(path).suffix or '(none)'!r} is not "
            f"supported; use .mp4"
        )
    return write_atomic(path, video_bytes(frames, fps, audio), kind="video")


def read_video(
    source: Source,
    *,
    fps: float | None = None,
    name: str | None = None,
    max_seconds: float = MAX_VIDEO_SECONDS,
    max_frames: int = MAX_VIDEO_FRAMES,
    max_bytes: int = MAX_VIDEO_BYTES,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Decode an MP4 (path or bytes): (frames (T, H, W, 3) uint8, audio or None, frame rate).

    Audio is the first audio track as 16 kHz mono float32 (channels averaged), or None if
    there is none. With ``fps`` the frames are resampled in time (e.g. 2 a second for the
    tokenizer): frame k is the one on screen at ``k / fps`` s, and the returned rate is ``fps``
    exactly; without it, every frame comes back at the file's average rate.

    Raises ``MediaError`` for a missing, empty, oversized (``max_bytes``), non-MP4, truncated or
    undecodable file, one with no video stream, one longer than ``max_seconds``, or one that
    would return more than ``max_frames`` frames (lower ``fps`` to read long videos).
    """
    decoded = _decode(
        source,
        label=label_of(source, name),
        fps=fps,
        max_seconds=max_seconds,
        max_frames=max_frames,
        max_bytes=max_bytes,
        keep_frames=True,
    )
    return decoded.frames, decoded.audio, decoded.rate


@dataclass(frozen=True)
class _Decoded:
    """What one decoding pass learns; ``read_video`` returns part, ``validate_media`` the rest."""

    frames: np.ndarray  # (T, H, W, 3) uint8 at ``rate``; T = 0 when frames were not kept
    audio: np.ndarray | None  # (N,) float32 at 16 kHz
    rate: float  # of ``frames``
    width: int
    height: int
    native_frames: int  # frames in the file
    duration_s: float  # of the video stream
    audio_rate: int | None  # the file's audio sample rate


class _FrameSampler:
    """Collects frames; with ``fps``, for each output time k / fps the frame on screen then.

    A frame is on screen from its timestamp until the next frame's, so output time t gets the
    last frame that starts at or before t: dropping frames when ``fps`` is below the file's rate
    and repeating them when above. Times are Fractions so no frame is lost to rounding.
    """

    def __init__(self, fps: Fraction | None, *, max_frames: int, keep: bool, label: str) -> None:
        self.fps, self.max_frames, self.keep, self.label = fps, max_frames, keep, label
        self.out: list[np.ndarray] = []
        self.count = 0  # frames emitted, kept or not
        self._prev: av.VideoFrame | None = None
        self._prev_rgb: np.ndarray | None = None  # converted once, even if repeated
        self._k = 0  # index of the next output time

    def add(self, t: Fraction, frame: av.VideoFrame) -> None:
        """Take the next decoded frame, which starts at ``t`` seconds."""
        if self.fps is None:
            self._emit(frame)
            return
        self._emit_until(t)
        self._prev, self._prev_rgb = frame, None

    def finish(self, end: Fraction) -> None:
        """Emit the last frame for the output times before ``end`` (when it leaves the screen)."""
        self._emit_until(end)

    def _emit_until(self, t: Fraction) -> None:
        while self.fps is not None and self._prev is not None and self._k / self.fps < t:
            self._emit(self._prev)
            self._k += 1

    def _emit(self, frame: av.VideoFrame) -> None:
        self.count += 1
        if self.count > self.max_frames:
            raise MediaError(
                f"video file {self.label} gives more than max_frames={self.max_frames} frames; "
                f"pass a lower fps or a larger max_frames"
            )
        if not self.keep:
            return
        if frame is not self._prev:  # without fps: every frame once
            self.out.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
            return
        if self._prev_rgb is None:
            self._prev_rgb = frame.to_ndarray(format="rgb24")
        self.out.append(self._prev_rgb)


def _decode(
    source: Source,
    *,
    label: str,
    fps: float | None,
    max_seconds: float,
    max_frames: int,
    max_bytes: int,
    keep_frames: bool,
) -> _Decoded:
    """Open, check and decode an MP4 in one pass over its packets."""
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise MediaError(f"read_video: fps must be a positive number or None, got {fps}")
    check_source(source, kind="video", label=label, max_bytes=max_bytes, expected=_EXPECTED)
    if isinstance(source, bytes | bytearray | memoryview):
        opened: io.BytesIO | str = io.BytesIO(bytes(source))
    else:
        opened = os.fspath(source)
    try:
        container = av.open(opened, mode="r")
    except (av.error.FFmpegError, OSError) as err:
        raise MediaError(_decode_failure(label, err)) from None
    with container:
        if "mp4" not in container.format.name.split(","):
            raise MediaError(
                f"video file {label} is {container.format.long_name} "
                f"({container.format.name}); expected {_EXPECTED}"
            )
        if not container.streams.video:
            found = ", ".join(s.type for s in container.streams) or "no streams"
            raise MediaError(
                f"video file {label} has no video stream (found: {found}); "
                f"expected an MP4 with a video track"
            )
        vs = container.streams.video[0]
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        native_rate = Fraction(vs.average_rate or vs.guessed_rate or 25)
        out_rate = Fraction(fps) if fps is not None else None
        if container.duration is not None:  # from the header: fail before decoding anything
            header_s = container.duration / av.time_base
            _check_seconds(label, header_s, max_seconds)
            if header_s * float(out_rate or native_rate) > max_frames + 1:
                raise MediaError(
                    f"video file {label} lasts {header_s:.1f} s, which gives more than "
                    f"max_frames={max_frames} frames at {float(out_rate or native_rate):g} fps; "
                    f"pass a lower fps or a larger max_frames"
                )
        sampler = _FrameSampler(out_rate, max_frames=max_frames, keep=keep_frames, label=label)
        chunks: list[np.ndarray] = []  # (n,) float32 each, at audio_rate
        audio_rate: int | None = None
        audio_samples = 0
        native_frames = 0
        first_pts: int | None = None
        last_t = Fraction(0)
        streams = [vs] if audio_stream is None else [vs, audio_stream]
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        if frame.pts is None:  # no timestamp: assume a constant rate
                            t = Fraction(native_frames) / native_rate
                        else:
                            first_pts = frame.pts if first_pts is None else first_pts
                            t = (frame.pts - first_pts) * vs.time_base
                        _check_seconds(label, float(t), max_seconds)
                        sampler.add(t, frame)
                        native_frames += 1
                        last_t = max(last_t, t)
                    elif isinstance(frame, av.AudioFrame):
                        audio_rate = audio_rate or frame.sample_rate
                        chunks.append(_to_mono(frame))
                        audio_samples += frame.samples
                        if audio_samples > (max_seconds + 1.0) * audio_rate:  # 1 s of slack
                            _check_seconds(label, audio_samples / audio_rate, max_seconds)
        except (av.error.FFmpegError, OSError) as err:
            raise MediaError(_decode_failure(label, err)) from None
        if native_frames == 0:
            raise MediaError(
                f"video file {label} has no decodable frames; it is truncated or corrupt"
            )
        end = last_t + 1 / native_rate  # the last frame stays on screen one frame period
        sampler.finish(end)
        _check_complete(vs, label, end, native_rate)
        audio = _join_audio(chunks, audio_stream, audio_rate)
        h, w = vs.codec_context.height, vs.codec_context.width
    frames = np.stack(sampler.out) if sampler.out else np.zeros((0, h, w, 3), np.uint8)
    return _Decoded(
        frames=frames,
        audio=audio,
        rate=float(out_rate if out_rate is not None else native_rate),
        width=w,
        height=h,
        native_frames=native_frames,
        duration_s=float(end),
        audio_rate=audio_rate,
    )


def _check_seconds(label: str, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise MediaError(
            f"video file {label} lasts {seconds:.1f} s or more, over the {max_seconds:g} s "
            f"limit; cut it shorter or pass a larger max_seconds"
        )


def _decode_failure(label: str, err: BaseException) -> str:
    reason = getattr(err, "strerror", None) or str(err)
    return (
        f"cannot decode video file {label} ({reason}); expected {_EXPECTED}, whole and intact "
        f"(a cut-off MP4 usually loses the index at its end)"
    )


def _check_complete(vs: av.VideoStream, label: str, end: Fraction, rate: Fraction) -> None:
    """Raise if decoding stopped well before the end the header declares.

    A file cut at a packet boundary decodes without an error, just shorter. Two frame periods
    of slack allow for edit lists and rounding in the declared duration.
    """
    if vs.duration is None or vs.time_base is None:
        return
    declared = Fraction(vs.duration) * vs.time_base
    if end < declared - 2 / rate:
        raise MediaError(
            f"video file {label} is truncated: its header declares {float(declared):.2f} s of "
            f"video but frames stop at {float(end):.2f} s; re-download or re-export it"
        )


def _to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded audio frame as mono float32 in [-1, 1]: (samples,)."""
    pcm = frame.to_ndarray()  # planar: (C, n); packed: (1, n * C), channels interleaved
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        pcm = pcm.reshape(-1, channels).T
    if pcm.dtype == np.uint8:
        x = (pcm.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(pcm.dtype, np.integer):
        x = pcm.astype(np.float32) / float(np.iinfo(pcm.dtype).max + 1)
    else:
        x = pcm.astype(np.float32)
    return x.mean(axis=0)


def _join_audio(
    chunks: list[np.ndarray], stream: av.AudioStream | None, rate: int | None
) -> np.ndarray | None:
    """Concatenate, drop the encoder's end padding, resample to 16 kHz."""
    if stream is None or not chunks or rate is None:
        return None
    audio = np.concatenate(chunks)
    if stream.duration is not None and stream.time_base is not None:
        declared = round(stream.duration * stream.time_base * rate)
        if 0 < len(audio) - declared <= _AAC_PADDING:
            audio = audio[:declared]
    return resample(audio, rate)
