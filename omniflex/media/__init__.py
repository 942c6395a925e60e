"""Read, write and validate media: WAV/FLAC audio, PNG/JPEG images, MP4 video; resampling."""

from omniflex.media.audio import SAMPLE_RATE, read_audio, resample, to_wav_bytes, write_audio
from omniflex.media.errors import MediaError
from omniflex.media.image import read_image, to_png_bytes, write_image
from omniflex.media.video import read_video, write_video

__all__ = [
    "SAMPLE_RATE",
    "MediaError",
    "read_audio",
    "read_image",
    "read_video",
    "resample",
    "to_png_bytes",
    "to_wav_bytes",
    "write_audio",
    "write_image",
    "write_video",
]
