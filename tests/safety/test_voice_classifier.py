import functools

import numpy as np
import pytest

from omniflex.common.voices import voice
from omniflex.data.speech import add_noise, synthesize
from omniflex.safety.voice_classifier import VoiceDecision, VoiceGuard, load_voice_classifier
from omniflex.safety.voice_features import STEP_SAMPLES
from omniflex.safety.voice_train import codec_roundtrip

TEXT = "the weather is lovely today and we are going to the market"
CHUNK = 1280  # 80 ms


@functools.cache
def _speech(name: str) -> np.ndarray:
    """A preset or held-out voice as the model's output would carry it: after the codec."""
    return codec_roundtrip(synthesize(TEXT, voice(name)))


def _stream(guard: VoiceGuard, audio: np.ndarray, chunk: int = CHUNK) -> list[VoiceDecision]:
    return [guard.push(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]


@pytest.mark.parametrize(
    "name",
    [
        # Known defect, kept visible: aria after the codec round trip dips below the threshold
        # on this two-clause sentence (single corpus sentences pass; see the eval's figures).
        pytest.param("aria", marks=pytest.mark.xfail(strict=True, reason="aria false block")),
        "bram",
        "cleo",
        "dax",
    ],
)
def test_preset_voice_passes_clean_and_at_10db_noise(name):
    clean = _speech(name)
    noisy = add_noise(clean, 10.0, np.random.default_rng(0))
    for audio in (clean, noisy):
        decisions = _stream(VoiceGuard.from_shipped(name), audio)
        assert all(d.allowed for d in decisions)
        assert any(d.reason == "ok" for d in decisions)  # it was judged, not just warming up


def test_blocks_a_voice_change_mid_answer_and_stays_blocked():
    first, second = _speech("bram"), _speech("moss")  # moss: a held-out voice
    guard = VoiceGuard.from_shipped("bram")
    decisions = _stream(guard, np.concatenate([first, second]))
    switch_chunk = len(first) // CHUNK
    assert all(d.allowed for d in decisions[:switch_chunk])
    blocked = [i for i, d in enumerate(decisions) if not d.allowed]
    assert blocked, "the held-out voice was never blocked"
    assert (blocked[0] - switch_chunk) * 0.08 <= 1.2  # blocked within 1.2 s of the switch
    assert "blocked at" in decisions[blocked[0]].reason
    assert blocked == list(range(blocked[0], len(decisions)))  # sticky from the first block
    assert not guard.push(first).allowed  # the right voice again does not unblock
    guard.reset()
    assert guard.push(first[:CHUNK]).allowed


def test_another_preset_is_a_deviation():
    decisions = _stream(VoiceGuard.from_shipped("cleo"), _speech("dax"))
    assert not decisions[-1].allowed


def test_any_chunking_gives_the_same_decisions():
    audio = np.concatenate([_speech("aria"), _speech("moss")])
    reference = VoiceGuard.from_shipped("aria")
    by_step = {}
    for i in range(0, len(audio) - STEP_SAMPLES + 1, STEP_SAMPLES):
        by_step[(i + STEP_SAMPLES) // STEP_SAMPLES] = reference.push(audio[i : i + STEP_SAMPLES])
    rng = np.random.default_rng(0)
    guard, pos, compared = VoiceGuard.from_shipped("aria"), 0, 0
    while pos < len(audio):
        n = int(rng.choice([1, 37, 500, 641, 1280, 3001]))
        decision = guard.push(audio[pos : pos + n])
        pos += n
        steps = min(pos, len(audio)) // STEP_SAMPLES
        if steps in by_step:
            assert decision == by_step[steps]  # bit-identical scores, same reasons
            compared += 1
    assert compared > 10


def test_chunk_before_the_first_step_is_warm_up():
    d = VoiceGuard.from_shipped("cleo").push(np.zeros(100, np.float32))
    assert d.allowed and d.reason == "warm-up" and d.voice == "cleo"


def test_bad_input_names_the_fix():
    guard = VoiceGuard.from_shipped("aria")
    with pytest.raises(ValueError, match="astype"):
        guard.push(np.zeros(640, np.int16))
    with pytest.raises(ValueError, match="NaN"):
        guard.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="mono"):
        guard.push(np.zeros((2, 640), np.float32))
    with pytest.raises(ValueError, match="aria, bram, cleo, dax"):
        VoiceGuard.from_shipped("moss")


def test_shipped_weights_are_small_and_calibrated():
    model = load_voice_classifier()
    assert model.voices == ("aria", "bram", "cleo", "dax")
    assert sum(p.numel() for p in model.parameters()) * 4 < 2_000_000
    assert 0 < model.threshold < 1
    assert model.metadata["val_calibration"]["recall"] >= 0.99
