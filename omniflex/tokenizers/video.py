"""Video as tokens: frames at a low rate as image codes, interleaved in time with the audio track.

An MP4 becomes, for each sampled frame ``i`` at time ``t_i = i / fps``::

    <|t:t_i|> <|image|> (grid x grid image codes) <|/image|>
              <|audio|> (audio codes of [t_i, t_i + 1/fps)) <|/audio|>

so that a model reading left to right has seen everything up to ``t_i + 1/fps`` and nothing
later (the same order a live camera and microphone would deliver). ``VideoTokenizer`` does the
media side (``encode`` -> ``VideoTokens``, ``decode`` -> frames + audio); ``VideoTokens``
flattens to one id sequence and back given where each kind of code lives in the model's
vocabulary (``VocabSlots``), which the model layer owns.

Time markers come from ``special.time_token`` (0.5 s grid up to 60 s): at the default 2 fps every
frame gets its own marker; clips longer than the marker range are refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniflex.media.errors import MediaError
from omniflex.media.video import read_video, write_video
from omniflex.tokenizers import special
from omniflex.tokenizers.audio import AudioCodec

__all__ = ["VideoTokenizer", "VideoTokens", "VocabSlots"]


@dataclass(frozen=True)
class VocabSlots:
    """Where codes live in a model vocabulary: ``special_id(token_string) -> id``, the first id
    of the image codes, and the first id of audio codebook 0 (codebook ``k`` follows at
    ``audio_offset + k * audio_cardinality``)."""

    special_id: Callable[[str], int]
    image_offset: int
    image_cardinality: int
    audio_offset: int
    audio_cardinality: int
    audio_codebooks: int


@dataclass
class VideoTokens:
    """Codes of one clip. ``image_codes``: ``(N, g, g)``; ``audio_codes``: ``(K, F)`` or None."""

    fps: float
    image_codes: torch.Tensor
    audio_codes: torch.Tensor | None
    audio_frame_rate: float

    @property
    def times(self) -> list[float]:
        return [i / self.fps for i in range(self.image_codes.shape[0])]

    def audio_span(self, i: int) -> tuple[int, int]:
        """Audio code frames ``[start, stop)`` that belong after image ``i``."""
        if self.audio_codes is None:
            return 0, 0
        per = self.audio_frame_rate / self.fps
        total = self.audio_codes.shape[-1]
        last = i == self.image_codes.shape[0] - 1
        start, stop = round(i * per), total if last else round((i + 1) * per)
        return min(start, total), min(stop, total)

    def to_sequence(self, slots: VocabSlots) -> list[int]:
        """One flat id sequence, time-interleaved as in the module docstring."""
        sid = slots.special_id
        ids: list[int] = [sid(special.VIDEO)]
        for i, t in enumerate(self.times):
            ids.append(sid(special.time_token(t)))
            ids.append(sid(special.IMAGE))
            ids.extend((self.image_codes[i].reshape(-1) + slots.image_offset).tolist())
            ids.append(sid(special.IMAGE_END))
            start, stop = self.audio_span(i)
            if stop > start and self.audio_codes is not None:
                chunk = self.audio_codes[:, start:stop]  # (K, n)
                book = torch.arange(chunk.shape[0]).unsqueeze(1) * slots.audio_cardinality
                ids.append(sid(special.AUDIO))
                ids.extend((chunk + book + slots.audio_offset).T.reshape(-1).tolist())
                ids.append(sid(special.AUDIO_END))
        ids.append(sid(special.VIDEO_END))
        return ids

    @classmethod
    def from_sequence(
        cls, ids: list[int], slots: VocabSlots, fps: float, grid: int, audio_frame_rate: float
    ) -> VideoTokens:
        """Inverse of ``to_sequence``; raises ``ValueError`` naming the first misplaced id."""
        sid = slots.special_id
        markers = {sid(special.IMAGE), sid(special.IMAGE_END), sid(special.AUDIO)}
        markers |= {sid(special.AUDIO_END), sid(special.VIDEO), sid(special.VIDEO_END)}
        images: list[torch.Tensor] = []
        audio: list[torch.Tensor] = []
        k = slots.audio_codebooks
        pos, n = 0, len(ids)

        def expect(token: str) -> None:
            nonlocal pos
            if pos >= n or ids[pos] != sid(token):
                got = ids[pos] if pos < n else "end of sequence"
                raise ValueError(f"video token sequence: expected {token} at {pos}, got {got}")
            pos += 1

        expect(special.VIDEO)
        while pos < n and ids[pos] != sid(special.VIDEO_END):
            pos += 1  # time marker: the position in the sequence already fixes the time
            expect(special.IMAGE)
            body = ids[pos : pos + grid * grid]
            if len(body) != grid * grid or any(i in markers for i in body):
                raise ValueError(f"video token sequence: image {len(images)} is not {grid}x{grid}")
            images.append(torch.tensor(body).reshape(grid, grid) - slots.image_offset)
            pos += grid * grid
            expect(special.IMAGE_END)
            if pos < n and ids[pos] == sid(special.AUDIO):
                pos += 1
                stop = ids.index(sid(special.AUDIO_END), pos)
                flat = torch.tensor(ids[pos:stop]) - slots.audio_offset
                if flat.numel() % k:
                    raise ValueError(f"video token sequence: audio chunk at {pos} is not {k}-wide")
                chunk = flat.reshape(-1, k).T  # (K, n)
                audio.append(chunk - torch.arange(k).unsqueeze(1) * slots.audio_cardinality)
                pos = stop + 1
        expect(special.VIDEO_END)
        if not images:
            raise ValueError("video token sequence holds no frames")
        return cls(
            fps, torch.stack(images), torch.cat(audio, dim=-1) if audio else None, audio_frame_rate
        )


class VideoTokenizer:
    """MP4 <-> ``VideoTokens`` with an image tokenizer and an audio codec."""

    def __init__(self, image: Any, audio: AudioCodec | None, fps: float = 2.0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.image, self.audio, self.fps = image, audio, fps

    @property
    def max_seconds(self) -> float:
        return special.TIME_CAP_SECONDS + 1 / self.fps

    def encode_arrays(self, frames: np.ndarray, audio: np.ndarray | None) -> VideoTokens:
        """``frames``: ``(N, H, W, 3)`` uint8 already at ``fps``; ``audio``: 16 kHz mono."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be (N, H, W, 3) uint8, got {frames.dtype} {frames.shape}"
            )
        if (len(frames) - 1) / self.fps > special.TIME_CAP_SECONDS:
            raise ValueError(
                f"video of {len(frames) / self.fps:.1f} s is longer than the "
                f"{special.TIME_CAP_SECONDS:.0f} s the time markers cover; cut it first"
            )
        image_codes = torch.as_tensor(self.image.encode(frames))  # (N, g, g)
        if image_codes.dim() == 2:
            image_codes = image_codes.unsqueeze(0)
        audio_codes = None
        if audio is not None and self.audio is not None and len(audio):
            audio_codes = self.audio.encode(audio)[0]  # (K, F)
        rate = self.audio.frame_rate if self.audio is not None else 0.0
        return VideoTokens(self.fps, image_codes, audio_codes, rate)

    def encode(self, source: str | Path | bytes) -> VideoTokens:
        """Read an MP4 (path or bytes), sample frames at ``fps``, tokenize frames and audio."""
        frames, audio, _ = read_video(source, fps=self.fps)
        name = source if not isinstance(source, bytes) else "<bytes>"
        if (len(frames) - 1) / self.fps > special.TIME_CAP_SECONDS:
            raise MediaError(
                f"video {name} lasts over {special.TIME_CAP_SECONDS:.0f} s, the longest the "
                f"time markers cover; cut it into clips first"
            )
        return self.encode_arrays(frames, audio)

    def decode(self, tokens: VideoTokens) -> tuple[np.ndarray, np.ndarray | None]:
        """``VideoTokens`` -> (frames ``(N, 64, 64, 3)`` uint8, 16 kHz audio or None)."""
        frames = np.asarray(self.image.decode(tokens.image_codes))
        if frames.ndim == 3:
            frames = frames[None]
        audio = None
        if tokens.audio_codes is not None and self.audio is not None:
            audio = self.audio.decode(tokens.audio_codes.unsqueeze(0))[0].numpy()
        return frames, audio

    def decode_to_file(self, tokens: VideoTokens, path: str | Path) -> Path:
        """Write the decoded clip as MP4 at ``fps`` (frames are repeated to a 10 fps stream)."""
        frames, audio = self.decode(tokens)
        repeat = max(1, round(10 / tokens.fps))
        return write_video(
            path, np.repeat(frames, repeat, axis=0), fps=round(tokens.fps * repeat), audio=audio
        )
