"""Read, write and validate media: WAV/FLAC audio, PNG/JPEG images, MP4 video; resampling.

Inside omniflex audio is 16 kHz mono float32 in [-1, 1], images are (H, W, 3) uint8 RGB and
video is (T, H, W, 3) uint8 frames. Readers take a path or the file's bytes, check size and
length limits before decoding, and raise ``MediaError`` (a ``ValueError``) naming the file.
"""

from omniflex.media._source import write_atomic
from omniflex.media.audio import (
    MAX_AUDIO_BYTES,
    MAX_SECONDS,
    SAMPLE_RATE,
    read_audio,
    resample,
    to_flac_bytes,
    to_wav_bytes,
    write_audio,
)
from omniflex.media.errors import MediaError
from omniflex.media.image import (
    JPEG_QUALITY,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    read_image,
    to_jpeg_bytes,
    to_png_bytes,
    write_image,
)
from omniflex.media.probe import MEDIA_KINDS, MediaInfo, detect_kind, validate_media
from omniflex.media.video import (
    MAX_VIDEO_BYTES,
    MAX_VIDEO_FRAMES,
    MAX_VIDEO_SECONDS,
    frame_times,
    read_video,
    video_bytes,
    write_video,
)

__all__ = [
    "JPEG_QUALITY",
    "MAX_AUDIO_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_SECONDS",
    "MAX_VIDEO_BYTES",
    "MAX_VIDEO_FRAMES",
    "MAX_VIDEO_SECONDS",
    "MEDIA_KINDS",
    "SAMPLE_RATE",
    "MediaError",
    "MediaInfo",
    "detect_kind",
    "frame_times",
    "read_audio",
    "read_image",
    "read_video",
    "resample",
    "to_flac_bytes",
    "to_jpeg_bytes",
    "to_png_bytes",
    "to_wav_bytes",
    "validate_media",
    "video_bytes",
    "write_atomic",
    "write_audio",
    "write_image",
    "write_video",
]
