import json

import numpy as np
import pytest
import torch

from omniflex.tokenizers import AudioCodec, AudioCodecConfig, TokenizerError, load_tokenizer
from omniflex.tokenizers.audio_train import AudioTrainConfig, train_audio_codec

SMALL = AudioCodecConfig(
    n_mels=16,
    dim=32,
    latent_dim=48,
    encoder_blocks=(1, 2),
    encoder_latent_blocks=(1,),
    decoder_latent_blocks=(1,),
    decoder_blocks=(1, 2),
)
SPF = SMALL.samples_per_frame  # 640


@pytest.fixture(scope="module")
def codec() -> AudioCodec:
    torch.manual_seed(0)
    return AudioCodec(SMALL).eval()


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16_000) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    return (0.1 * x * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def test_interface_figures(codec: AudioCodec) -> None:
    assert codec.sample_rate == 16_000
    assert codec.frame_rate == 25.0
    assert codec.num_codebooks == 2
    assert codec.cardinality == 1000
    assert codec.vocab_size == 2000
    assert codec.frame_rate * codec.num_codebooks <= 50  # the token budget
    assert codec.config.latency_seconds == pytest.approx(0.070)


@pytest.mark.parametrize("n", [1, 639, 640, 641, 16_000])
def test_shapes_and_code_range(codec: AudioCodec, n: int) -> None:
    codes = codec.encode(np.zeros(n, dtype=np.float32) + 0.01)
    frames = -(-n // SPF)
    assert codes.shape == (1, 2, frames) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < codec.cardinality
    audio = codec.decode(codes)
    assert audio.shape == (1, frames * SPF) and audio.dtype == torch.float32
    batch = codec.encode(torch.zeros(3, n))
    assert batch.shape == (3, 2, frames)
    assert codec.decode(codes[0]).shape == (1, frames * SPF)  # (K, F) accepted


def test_streaming_encode_equals_full(codec: AudioCodec) -> None:
    audio = torch.from_numpy(_speechlike(1.3))
    full = codec.encode(audio[: int(1.3 * 16_000) // SPF * SPF])
    rng = np.random.default_rng(1)
    parts, i = [], 0
    with codec.streaming():
        while i < audio.shape[0]:
            step = int(rng.integers(1, 900))
            parts.append(codec.encode(audio[i : i + step]))
            i += step
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == full.shape
    assert torch.equal(streamed, full)


def test_streaming_decode_equals_full(codec: AudioCodec) -> None:
    codes = codec.encode(_speechlike(1.0))
    full = codec.decode(codes)
    for chunk in (1, 3, 7):
        with codec.streaming():
            outs = [
                codec.decode(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)
            ]
            outs.append(codec.flush())
        streamed = torch.cat(outs, dim=-1)
        assert streamed.shape == full.shape
        torch.testing.assert_close(streamed, full, atol=1e-5, rtol=1e-4)
    with codec.streaming():  # the first call holds back the open overlap (30 ms)
        first = codec.decode(codes[..., :1])
    assert first.shape[-1] == SPF - SMALL.delay


def test_encode_is_causal(codec: AudioCodec) -> None:
    audio = _speechlike(1.0)
    base = codec.encode(audio)
    cut = 7 * SPF + 100  # change everything from inside frame 7 on
    changed = audio.copy()
    changed[cut:] = np.random.default_rng(3).standard_normal(len(audio) - cut) * 0.3
    after = codec.encode(changed)
    assert torch.equal(after[..., :7], base[..., :7])
    assert not torch.equal(after[..., 7:], base[..., 7:])


def test_decode_is_causal(codec: AudioCodec) -> None:
    codes = codec.encode(_speechlike(1.0))
    f = 9
    other = codes.clone()
    other[..., f:] = torch.randint(0, codec.cardinality, other[..., f:].shape)
    a, b = codec.decode(codes), codec.decode(other)
    first_affected = f * SPF - SMALL.delay
    torch.testing.assert_close(a[..., :first_affected], b[..., :first_affected])
    assert not torch.allclose(a[..., first_affected:], b[..., first_affected:])


def test_streaming_state_is_scoped(codec: AudioCodec) -> None:
    with codec.streaming():
        codec.encode(np.zeros(100, dtype=np.float32))
        with pytest.raises(RuntimeError, match="already streaming"), codec.streaming():
            pass
    assert not codec.is_streaming
    with pytest.raises(RuntimeError, match=r"inside codec\.streaming"):
        codec.flush()


def test_bad_inputs(codec: AudioCodec) -> None:
    with pytest.raises(TypeError, match="float"):
        codec.encode(np.zeros(100, dtype=np.int16))
    with pytest.raises(ValueError, match=r"\(T,\) or \(B, T\)"):
        codec.encode(np.zeros((1, 1, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        codec.encode(np.full(100, np.nan, dtype=np.float32))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        codec.encode([0.0] * 100)
    with pytest.raises(ValueError, match=r"\(B, 2, F\)"):
        codec.decode(torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        codec.decode(torch.full((1, 2, 4), 1000))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="window"):
        AudioCodecConfig(window=500)
    with pytest.raises(ValueError, match="codebooks"):
        AudioCodecConfig(codebooks=0)


def test_save_load_roundtrip(codec: AudioCodec, tmp_path) -> None:
    codec.metadata = {"note": "test"}
    codec.save(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["kind"] == "audio" and cfg["metadata"] == {"note": "test"}
    loaded = load_tokenizer(tmp_path / "c")
    assert isinstance(loaded, AudioCodec) and loaded.config == SMALL
    # Stored in flex16: every weight within half a mantissa step of the float original.
    for (name, p), q in zip(codec.state_dict().items(), loaded.state_dict().values(), strict=True):
        step = p.abs().max() / 32767
        assert (p - q).abs().max() <= step, name
    audio = _speechlike(0.6)
    loaded.save(tmp_path / "c2")
    again = AudioCodec.load(tmp_path / "c2")
    assert torch.equal(again.encode(audio), loaded.encode(audio))
    assert torch.equal(again.decode(loaded.encode(audio)), loaded.decode(loaded.encode(audio)))


def test_load_errors(tmp_path) -> None:
    with pytest.raises(TokenizerError, match=r"no config\.json"):
        AudioCodec.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "audio", "config": {}}))
    with pytest.raises(TokenizerError, match=r"model\.safetensors"):
        AudioCodec.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "image", "config": {}}))
    with pytest.raises(TokenizerError, match="not 'audio'"):
        AudioCodec.load(tmp_path)


@pytest.mark.parametrize("precision", ["float32", "flex16+5"])
def test_training_reduces_loss(tmp_path, precision: str) -> None:
    clips = [_speechlike(1.0, seed=s) for s in range(4)]
    train = AudioTrainConfig(
        steps=12, batch_size=2, segment_seconds=0.32, lr=3e-3, warmup_steps=2,
        precision=precision, threads=1, val_every=6,
    )  # fmt: skip
    codec = train_audio_codec(
        "", tmp_path / "out", config=SMALL, train=train, clips=clips, val_clips=clips[:2],
        progress=False,
    )  # fmt: skip
    log = [
        json.loads(line)
        for line in (tmp_path / "out" / "train_log.jsonl").read_text().split("\n")
        if line
    ]
    assert len(log) == 12
    first = np.mean([r["loss"] for r in log[:3]])
    last = np.mean([r["loss"] for r in log[-3:]])
    assert last < first, (first, last)
    assert "val_loss" in log[5] and "val_loss" in log[11]
    assert codec.metadata["train"]["precision"] == precision
    reloaded = AudioCodec.load(tmp_path / "out")
    assert reloaded.encode(clips[0]).shape == (1, 2, 25)


def test_shipped_codec_quality() -> None:
    """The shipped codec on a sentence it never saw, in a held-out voice: the quality figures
    the benchmark reports (``omniflex bench tokenizers --only audio``) hold here too, with margin.
    """
    from omniflex.common.voices import voice
    from omniflex.data.speech import synthesize
    from omniflex.eval.audio_metrics import mel_cepstral_distortion, speaker_similarity

    codec = load_tokenizer("audio")
    assert isinstance(codec, AudioCodec)
    assert codec.frame_rate * codec.num_codebooks == 50
    audio = synthesize("the purple hexagon sits above a small green ring.", voice("moss"))
    recon = codec.decode(codec.encode(audio))[0].numpy()[: len(audio)]
    assert mel_cepstral_distortion(audio, recon) <= 3.5
    assert speaker_similarity(audio, recon) >= 0.7  # the benchmark's mean is 0.84; target 0.9
