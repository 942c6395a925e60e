import numpy as np
import pytest
import torch

from omniflex.media.video import video_bytes
from omniflex.tokenizers import AudioCodec, special
from omniflex.tokenizers.video import VideoTokenizer, VideoTokens, VocabSlots
from tests.tokenizers.test_audio import SMALL


class BlockImageTokenizer:
    """A transparent stand-in: each 16x16 block's mean grey level, quantised to 8 codes."""

    cardinality = 8
    grid = 4

    def encode(self, images: np.ndarray) -> torch.Tensor:
        grey = images.astype(np.float32).mean(-1)  # (N, 64, 64)
        blocks = grey.reshape(len(images), 4, 16, 4, 16).mean((2, 4))
        return torch.from_numpy(np.clip(blocks // 32, 0, 7).astype(np.int64))

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        grey = (codes.numpy() * 32 + 16).astype(np.uint8)
        big = np.repeat(np.repeat(grey, 16, axis=1), 16, axis=2)
        return np.repeat(big[..., None], 3, axis=-1)


NUM_SPECIAL = len(special.SPECIAL_TOKENS)
SLOTS = VocabSlots(
    special_id=special.special_index,
    image_offset=NUM_SPECIAL,
    image_cardinality=8,
    audio_offset=NUM_SPECIAL + 8,
    audio_cardinality=1000,
    audio_codebooks=2,
)


@pytest.fixture(scope="module")
def video() -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(BlockImageTokenizer(), AudioCodec(SMALL).eval(), fps=2.0)


def _clip(seconds: float, fps: int = 10) -> tuple[np.ndarray, np.ndarray]:
    n = int(seconds * fps)
    frames = np.zeros((n, 64, 64, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, :, : (i * 6) % 64] = 200  # a bar that grows with time
    t = np.arange(int(seconds * 16_000)) / 16_000
    audio = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return frames, audio


def test_interleaving_order_and_spans(video: VideoTokenizer) -> None:
    frames, audio = _clip(2.0, fps=2)
    tokens = video.encode_arrays(frames, audio)
    assert tokens.image_codes.shape == (4, 4, 4)
    assert tokens.audio_codes is not None and tokens.audio_codes.shape == (2, 50)
    assert tokens.times == [0.0, 0.5, 1.0, 1.5]
    spans = [tokens.audio_span(i) for i in range(4)]
    assert spans == [(0, 12), (12, 25), (25, 38), (38, 50)]  # each image's half second
    ids = tokens.to_sequence(SLOTS)
    assert ids[0] == special.special_index(special.VIDEO)
    assert ids[-1] == special.special_index(special.VIDEO_END)
    times = [special.token_time(special.SPECIAL_TOKENS[i]) for i in ids if i < NUM_SPECIAL
             and special.SPECIAL_TOKENS[i].startswith("<|t:")]  # fmt: skip
    assert times == [0.0, 0.5, 1.0, 1.5]
    image_ids = [i for i in ids if SLOTS.image_offset <= i < SLOTS.audio_offset]
    audio_ids = [i for i in ids if i >= SLOTS.audio_offset]
    assert len(image_ids) == 4 * 16 and len(audio_ids) == 2 * 50


def test_sequence_roundtrip(video: VideoTokenizer) -> None:
    frames, audio = _clip(3.0, fps=2)
    tokens = video.encode_arrays(frames, audio)
    ids = tokens.to_sequence(SLOTS)
    back = VideoTokens.from_sequence(ids, SLOTS, fps=2.0, grid=4, audio_frame_rate=25.0)
    assert torch.equal(back.image_codes, tokens.image_codes)
    assert tokens.audio_codes is not None and back.audio_codes is not None
    assert torch.equal(back.audio_codes, tokens.audio_codes)


def test_sequence_errors(video: VideoTokenizer) -> None:
    frames, audio = _clip(1.0, fps=2)
    ids = video.encode_arrays(frames, audio).to_sequence(SLOTS)
    with pytest.raises(ValueError, match="expected"):
        VideoTokens.from_sequence(ids[1:], SLOTS, fps=2.0, grid=4, audio_frame_rate=25.0)
    with pytest.raises(ValueError, match="expected"):
        VideoTokens.from_sequence(ids[:-1], SLOTS, fps=2.0, grid=4, audio_frame_rate=25.0)
    with pytest.raises(ValueError, match="is not 5x5"):
        VideoTokens.from_sequence(ids, SLOTS, fps=2.0, grid=5, audio_frame_rate=25.0)


def test_mp4_roundtrip_samples_at_fps(video: VideoTokenizer, tmp_path) -> None:
    frames, audio = _clip(2.0, fps=10)
    mp4 = video_bytes(frames, fps=10, audio=audio)
    tokens = video.encode(mp4)
    assert tokens.image_codes.shape[0] == 4  # 2 s at 2 fps
    # The frame at t = 0.5 s is source frame 5: its bar covers 30 columns -> blocks 0 and 1 lit.
    assert tokens.image_codes[1, 0, :2].min() >= 2 and tokens.image_codes[1, 0, 3] == 0
    decoded, decoded_audio = video.decode(tokens)
    assert decoded.shape == (4, 64, 64, 3)
    assert decoded_audio is not None and abs(len(decoded_audio) - 32_000) <= 640
    out = video.decode_to_file(tokens, tmp_path / "clip.mp4")
    from omniflex.media.video import read_video

    back, back_audio, _ = read_video(out)
    assert back.shape[1:] == (64, 64, 3) and back_audio is not None


def test_video_without_audio(video: VideoTokenizer) -> None:
    frames, _ = _clip(1.0, fps=2)
    tokens = video.encode_arrays(frames, None)
    assert tokens.audio_codes is None
    ids = tokens.to_sequence(SLOTS)
    assert special.special_index(special.AUDIO) not in ids


def test_too_long_and_bad_frames(video: VideoTokenizer) -> None:
    frames = np.zeros((2 * 62, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="time markers cover"):
        video.encode_arrays(frames, None)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        video.encode_arrays(np.zeros((2, 64, 64), dtype=np.uint8), None)
    with pytest.raises(ValueError, match="fps"):
        VideoTokenizer(BlockImageTokenizer(), None, fps=0)
