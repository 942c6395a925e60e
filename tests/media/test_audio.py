"""Audio I/O: WAV/FLAC round trips, resampling to 16 kHz mono, and every refusal."""

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from omniflex.media import (
    SAMPLE_RATE,
    MediaError,
    read_audio,
    resample,
    to_flac_bytes,
    to_wav_bytes,
    write_audio,
)

LSB = 1 / 32768  # one step of 16-bit PCM


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


def speechlike(n: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.3 * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_round_trip_is_within_one_16_bit_step(tmp_path, ext):
    audio = np.concatenate([speechlike(), np.array([-1.0, 1.0, 0.0], np.float32)])
    path = write_audio(tmp_path / f"clip{ext}", audio)
    assert path == tmp_path / f"clip{ext}"
    got = read_audio(path)
    assert got.dtype == np.float32 and got.shape == audio.shape
    assert np.abs(got - audio).max() <= LSB + 1e-7


def test_extension_picks_the_container_and_bytes_are_deterministic(tmp_path):
    audio = speechlike(4000)
    wav = write_audio(tmp_path / "a.WAV", audio).read_bytes()
    flac = write_audio(tmp_path / "a.flac", audio).read_bytes()
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert flac[:4] == b"fLaC"
    assert wav == to_wav_bytes(audio) == to_wav_bytes(audio.copy())
    assert flac == to_flac_bytes(audio) == to_flac_bytes(audio.copy())
    assert len(flac) < len(wav)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must not be left behind"


def test_bytes_and_paths_read_the_same(tmp_path):
    audio = speechlike(3000)
    path = write_audio(tmp_path / "a.flac", audio)
    np.testing.assert_array_equal(read_audio(path), read_audio(path.read_bytes()))
    np.testing.assert_array_equal(read_audio(path), read_audio(str(path)))


@pytest.mark.parametrize("rate", [44_100, 48_000, 8_000])
def test_stereo_at_any_rate_becomes_16k_mono_and_keeps_its_pitch(tmp_path, rate):
    left = tone(1000.0, rate, 1.0, amplitude=0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # (N, 2): right channel silent
    sf.write(tmp_path / "s.wav", stereo, rate, subtype="PCM_16")
    got = read_audio(tmp_path / "s.wav")
    assert got.dtype == np.float32 and got.ndim == 1
    assert len(got) == SAMPLE_RATE  # exactly one second
    assert peak_hz(got, SAMPLE_RATE) == pytest.approx(1000.0, abs=1.0)
    # Channels are averaged: a 0.5 sine beside silence becomes a 0.25 sine.
    assert np.abs(got[1000:-1000]).max() == pytest.approx(0.25, abs=0.01)


def test_resample_keeps_frequency_and_length():
    audio = tone(440.0, 48_000, 0.5)
    got = resample(audio, 48_000, 16_000)
    assert got.dtype == np.float32 and len(got) == 8000
    assert peak_hz(got, 16_000) == pytest.approx(440.0, abs=2.0)
    same = resample(audio.astype(np.float64), 16_000, 16_000)
    assert same.dtype == np.float32


@pytest.mark.parametrize(("rate_in", "rate_out"), [(0, 16_000), (16_000, 0), (-8000, 16_000)])
def test_resample_refuses_non_positive_rates(rate_in, rate_out):
    with pytest.raises(MediaError, match="positive"):
        resample(np.zeros(10, np.float32), rate_in, rate_out)


def test_resample_refuses_fractional_rates():
    with pytest.raises(MediaError, match="whole number"):
        resample(np.zeros(10, np.float32), 44_100.5, 16_000)


def test_pipe_written_wav_with_unknown_length_still_reads():
    # espeak-ng --stdout cannot seek back, so its header claims 0x7FFFF000 bytes of samples.
    wav = bytearray(to_wav_bytes(tone(300.0, SAMPLE_RATE, 0.25)))
    data = wav.find(b"data")
    wav[4:8] = struct.pack("<I", 0x7FFFF024)
    wav[data + 4 : data + 8] = struct.pack("<I", 0x7FFFF000)
    assert len(read_audio(bytes(wav), name="espeak-ng output")) == 4000


# --- refusals: each names the input and says what is wrong ------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.wav does not exist"):
        read_audio(tmp_path / "nope.wav")


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(MediaError, match="not a regular file"):
        read_audio(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.wav is empty \(0 bytes\)"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(MediaError, match="my-clip is empty"):
        read_audio(b"", name="my-clip")


def test_garbage_bytes_name_the_input_and_the_expected_formats():
    with pytest.raises(MediaError, match=r"cannot decode audio file clip\.wav.*WAV or FLAC"):
        read_audio(b"this is not audio at all" * 10, name="clip.wav")
    with pytest.raises(MediaError, match=r"<240 bytes in memory>"):
        read_audio(b"this is not audio at all" * 10)


def test_other_sound_formats_are_refused():
    buf = io.BytesIO()
    sf.write(buf, tone(440.0, SAMPLE_RATE, 0.1), SAMPLE_RATE, format="OGG")
    with pytest.raises(MediaError, match=r"x\.ogg is .*OGG.*expected a WAV or FLAC"):
        read_audio(buf.getvalue(), name="x.ogg")


def test_truncated_wav(tmp_path):
    wav = to_wav_bytes(speechlike())
    (tmp_path / "cut.wav").write_bytes(wav[: len(wav) // 2])
    with pytest.raises(MediaError, match=r"cut\.wav is truncated: .*declares 32000 bytes"):
        read_audio(tmp_path / "cut.wav")


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_flac(keep):
    flac = to_flac_bytes(speechlike())
    with pytest.raises(MediaError, match=r"cut\.flac"):
        read_audio(flac[: int(len(flac) * keep)], name="cut.flac")


def test_too_long():
    with pytest.raises(MediaError, match=r"long\.wav lasts 1\.0 s, over the 0\.5 s limit"):
        read_audio(to_wav_bytes(speechlike()), max_seconds=0.5, name="long.wav")


def test_too_big_is_refused_before_decoding(tmp_path):
    (tmp_path / "big.wav").write_bytes(b"\0" * 5000)  # garbage: only the size check can see it
    with pytest.raises(MediaError, match=r"big\.wav is 5\.0 KB, over the 4\.0 KB limit.*max_bytes"):
        read_audio(tmp_path / "big.wav", max_bytes=4000)


def test_nan_and_inf_samples():
    audio = speechlike(1600).astype(np.float32)
    audio[800], audio[900] = np.nan, np.inf
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    with pytest.raises(
        MediaError, match=r"nan\.wav has 2 NaN or Inf samples \(first at 0\.050 s\)"
    ):
        read_audio(buf.getvalue(), name="nan.wav")


def test_zero_samples():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    with pytest.raises(MediaError, match=r"silence\.wav has no samples"):
        read_audio(buf.getvalue(), name="silence.wav")


@pytest.mark.parametrize("encode", [to_wav_bytes, to_flac_bytes])
def test_zero_sample_rate_in_the_header(encode):
    data = bytearray(encode(speechlike(1600)))
    if data[:4] == b"RIFF":
        fmt = data.find(b"fmt ")
        data[fmt + 12 : fmt + 16] = b"\0\0\0\0"
    else:  # FLAC STREAMINFO: 20-bit rate at byte 18
        data[18], data[19], data[20] = 0, 0, data[20] & 0x0F
    with pytest.raises(MediaError, match=r"zero\.x declares a sample rate of 0 Hz"):
        read_audio(bytes(data), name="zero.x")


def test_write_refuses_other_extensions_and_leaves_nothing(tmp_path):
    for name in ("a.mp3", "a.ogg", "noext"):
        with pytest.raises(MediaError, match=r"use \.wav or \.flac"):
            write_audio(tmp_path / name, speechlike(100))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (np.zeros(100, np.int16), "expected a float numpy array"),
        ([0.0, 0.1], "expected a float numpy array"),
        (np.zeros((2, 3, 4), np.float32), r"shape \(N,\)"),
        (np.zeros(0, np.float32), r"N >= 1"),
        (np.array([0.0, np.nan], np.float32), "NaN or Inf"),
    ],
)
def test_write_refuses_bad_arrays(tmp_path, audio, match):
    with pytest.raises(MediaError, match=match):
        write_audio(tmp_path / "a.wav", audio)
    assert not (tmp_path / "a.wav").exists()


def test_write_refuses_bad_rate_and_missing_folder(tmp_path):
    with pytest.raises(MediaError, match="rate must be > 0"):
        to_flac_bytes(speechlike(100), rate=0)
    with pytest.raises(MediaError, match="does not exist; create it first"):
        write_audio(tmp_path / "no" / "a.wav", speechlike(100))


def test_rate_and_channel_bombs_are_refused_from_the_header():
    """A few KB of FLAC can declare minutes at 192 kHz x 8 channels: refused before decoding
    where the header says too much, and decoded block by block (mono) where it does not."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((400, 16), np.float32), 16000, format="WAV", subtype="PCM_16")
    with pytest.raises(MediaError, match=r"16 channels, over the 8-channel limit"):
        read_audio(buf.getvalue(), name="wide.wav")
    buf = io.BytesIO()
    sf.write(buf, np.zeros(400, np.float32), 384000, format="WAV", subtype="PCM_16")
    with pytest.raises(MediaError, match=r"384000 Hz, over the 192000 Hz limit"):
        read_audio(buf.getvalue(), name="fast.wav")
    stereo = np.stack([speechlike(1600), -speechlike(1600)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.tile(stereo, (100, 1)), 16000, format="FLAC")  # several decode blocks
    got = read_audio(buf.getvalue(), name="stereo.flac")
    assert got.shape == (160_000,) and np.abs(got).max() < 1e-3  # the channels cancel
