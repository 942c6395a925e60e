"""``validate_media``: what a media file is, judged by its bytes, and proof that it decodes.

The kind comes from the file's magic bytes, not its extension, so a JPEG saved as ``.png`` is
reported as ``jpeg`` and a text file named ``.wav`` is refused. The file is then decoded in full
by the matching reader, with that reader's limits, so a file that passes will also load.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from omniflex.media import video
from omniflex.media._source import check_source
from omniflex.media.audio import MAX_AUDIO_BYTES, SAMPLE_RATE, read_audio
from omniflex.media.errors import MediaError
from omniflex.media.image import MAX_IMAGE_BYTES, read_image

__all__ = ["MEDIA_KINDS", "MediaInfo", "detect_kind", "validate_media"]

MEDIA_KINDS = ("wav", "flac", "png", "jpeg", "mp4")

_EXPECTED = "expected WAV, FLAC, PNG, JPEG or MP4"
# ISO media files that start like an MP4 but hold still images (HEIF, AVIF).
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
_MAX_BYTES = {
    "wav": MAX_AUDIO_BYTES,
    "flac": MAX_AUDIO_BYTES,
    "png": MAX_IMAGE_BYTES,
    "jpeg": MAX_IMAGE_BYTES,
    "mp4": video.MAX_VIDEO_BYTES,
}


@dataclass(frozen=True)
class MediaInfo:
    """A media file that decoded cleanly, and what it holds.

    ``duration_s`` and ``sample_rate`` (the file's own rate, before any resampling) are set for
    audio and for video with an audio track (``sample_rate`` only then); ``width``, ``height``
    for images and video; ``frames`` (video frames in the file) for video; ``bytes`` always.
    """

    kind: str  # one of MEDIA_KINDS
    path: Path
    duration_s: float | None
    sample_rate: int | None
    width: int | None
    height: int | None
    frames: int | None
    bytes: int


def detect_kind(head: bytes) -> str | None:
    """The kind in ``MEDIA_KINDS`` that a file's first 12+ bytes announce, or None."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS:
        return "mp4"
    return None


def validate_media(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> MediaInfo:
    """Detect a file's kind from its content, decode it in full, and describe it.

    ``max_bytes`` overrides the size limit of the kind's reader. Raises ``MediaError`` naming
    the file if it is missing, empty, too large, of an unknown kind, or does not decode.
    """
    path = Path(path)
    size = check_source(
        path,
        kind="media",
        label=str(path),
        max_bytes=max_bytes if max_bytes is not None else max(_MAX_BYTES.values()),
        expected="a WAV, FLAC, PNG, JPEG or MP4 file",
    )
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        raise MediaError(f"cannot read media file {path}: {err.strerror}") from None
    kind = detect_kind(head)
    if kind is None:
        raise MediaError(
            f"media file {path} is of an unknown kind (it starts with {head[:12]!r}); {_EXPECTED}"
        )
    limit = max_bytes if max_bytes is not None else _MAX_BYTES[kind]
    if kind in ("wav", "flac"):
        audio = read_audio(path, max_bytes=limit)
        return MediaInfo(
            kind=kind,
            path=path,
            duration_s=len(audio) / SAMPLE_RATE,
            sample_rate=sf.info(str(path)).samplerate,
            width=None,
            height=None,
            frames=None,
            bytes=size,
        )
    if kind in ("png", "jpeg"):
        image = read_image(path, max_bytes=limit)
        return MediaInfo(kind, path, None, None, image.shape[1], image.shape[0], None, size)
    decoded = video._decode(
        path,
        label=str(path),
        fps=None,
        max_seconds=video.MAX_VIDEO_SECONDS,
        max_frames=sys.maxsize,  # frames are counted, not kept: only the duration limit applies
        max_bytes=limit,
        keep_frames=False,
    )
    return MediaInfo(
        kind=kind,
        path=path,
        duration_s=decoded.duration_s,
        sample_rate=decoded.audio_rate,
        width=decoded.width,
        height=decoded.height,
        frames=decoded.native_frames,
        bytes=size,
    )
