import numpy as np
import pytest

from omniflex.common.voices import voice
from omniflex.data.speech import add_noise, change_speed, reverberate, synthesize
from omniflex.media import SAMPLE_RATE


def test_synthesis_is_16k_deterministic_and_voice_dependent():
    a = synthesize("hello there", voice("aria"))
    assert a.dtype == np.float32 and 0.3 * SAMPLE_RATE < len(a) < 3 * SAMPLE_RATE
    assert np.array_equal(a, synthesize("hello there", voice("aria")))
    assert not np.array_equal(a, synthesize("hello there", voice("dax")))
    assert not np.array_equal(a, synthesize("hello there", voice("aria"), pitch_shift=8))
    with pytest.raises(ValueError, match="empty"):
        synthesize("  ", voice("aria"))


def test_augmentations_do_what_they_say():
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    clean = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert abs(len(change_speed(clean, 1.25)) - SAMPLE_RATE / 1.25) < 5
    noisy = add_noise(clean, 10.0, rng)
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)
    wet = reverberate(clean, 0.3, rng)
    assert wet.shape == clean.shape and not np.allclose(wet, clean)
