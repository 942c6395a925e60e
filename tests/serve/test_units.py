"""The serving parts that need no server: wire audio, turn detection, settings, guard."""

from __future__ import annotations

import numpy as np
import pytest

from omniflex.serve import ServeSettings
from omniflex.serve.audio import StreamResampler, b64_to_pcm16, float_to_pcm16, pcm16_to_float
from omniflex.serve.guard import OutputGuard, make_output_guard
from omniflex.serve.vad import StreamingVad, VadConfig
from tests.serve.conftest import spoken_question


@pytest.mark.parametrize(("rate_in", "rate_out"), [(24_000, 16_000), (16_000, 24_000)])
def test_stream_resampler_chunking_does_not_change_output(rate_in: int, rate_out: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(7001).astype(np.float32)
    whole = StreamResampler(rate_in, rate_out).push(x)
    r = StreamResampler(rate_in, rate_out)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 40, replace=False))
    parts = [r.push(c) for c in np.split(x, cuts)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert abs(whole.size - x.size * rate_out / rate_in) <= 1


def test_stream_resampler_keeps_a_tone() -> None:
    t = np.arange(24_000) / 24_000
    y = StreamResampler(24_000, 16_000).push(np.sin(2 * np.pi * 440 * t))
    spectrum = np.abs(np.fft.rfft(y[1000:]))
    peak_hz = np.argmax(spectrum) * 16_000 / (y.size - 1000)
    assert abs(peak_hz - 440) < 5


def test_pcm16_roundtrip_and_bad_base64() -> None:
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    back = pcm16_to_float(float_to_pcm16(x))
    assert np.abs(back - x).max() < 1e-4
    with pytest.raises(ValueError, match="base64"):
        b64_to_pcm16("@@@")
    with pytest.raises(ValueError, match="16-bit"):
        b64_to_pcm16("AAAA")  # 3 bytes: not whole samples


def test_vad_finds_one_turn_in_a_spoken_question() -> None:
    x = spoken_question(0.8)
    vad = StreamingVad(VadConfig(silence_duration_ms=500, prefix_padding_ms=300))
    events = [e for i in range(0, x.size, 700) for e in vad.push(x[i : i + 700])]
    assert [e.kind for e in events] == ["start", "stop"]
    assert events[0].sample < events[1].sample


def test_vad_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="threshold"):
        VadConfig(threshold=1.5)


def test_settings_validation_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        ServeSettings(max_sessions=0)
    monkeypatch.setenv("OMNIFLEX_API_KEY", "k1")
    assert ServeSettings.from_env(port=9).api_key == "k1"


def test_guards() -> None:
    passthrough = make_output_guard(enabled=False, moderation=False)
    assert type(passthrough) is OutputGuard
    assert passthrough.check_audio(np.zeros(10, np.float32)).allowed
    guard = make_output_guard(enabled=True)  # omniflex.safety when it loads
    guard.start("aria")
    assert guard.check_text("hello").allowed


def test_api_key_check() -> None:
    from omniflex.serve.app import check_api_key
    from omniflex.serve.errors import ApiError

    settings = ServeSettings(api_key="s3cret")
    for ok in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret "):
        check_api_key(settings, ok)
    check_api_key(settings, None, "realtime, openai-insecure-api-key.s3cret")
    for bad in (None, "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"):
        with pytest.raises(ApiError) as err:
            check_api_key(settings, bad, "openai-insecure-api-key.nope")
        assert err.value.status == 401
    check_api_key(ServeSettings(), None)  # no key set: open (loopback by default)


def test_serve_refuses_an_open_address_without_a_key(monkeypatch, capsys) -> None:
    from omniflex.cli.main import build_parser

    monkeypatch.delenv("OMNIFLEX_API_KEY", raising=False)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0"])
    assert args.func(args) == 2  # refused before any model is loaded
    assert "OMNIFLEX_API_KEY" in capsys.readouterr().err
    from omniflex.serve.origin import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_safety_fails_closed_and_healthz_says_what_guards(monkeypatch) -> None:
    from types import SimpleNamespace

    from omniflex.serve import create_app, guard

    monkeypatch.setattr(guard, "_SAFETY", (None, None))  # as if the weights would not load
    monkeypatch.setattr(guard, "_SAFETY_ERRORS", {"voice_guard": "OSError: no weights"})
    with pytest.raises(guard.SafetyUnavailableError, match=r"no weights.*--no-voice-guard"):
        create_app(SimpleNamespace(name="x"), ServeSettings(voice_guard=True))
    status = guard.safety_status(voice_guard=False)
    assert status["voice_guard"] == "off" and status["moderation"] == "unavailable"
    assert status["errors"] == {"voice_guard": "OSError: no weights"}


def test_healthz_reports_the_guards(live) -> None:
    import requests

    health = requests.get(live.base_url.removesuffix("/v1") + "/healthz", timeout=10).json()
    assert health["ready"] is True
    assert health["safety"]["voice_guard"] == "off"  # the test server runs without it
    assert health["safety"]["moderation"] in ("on", "unavailable")


def test_spoken_requests_are_moderated_before_the_model_answers() -> None:
    from omniflex.common.voices import TEST_VOICES
    from omniflex.data.speech import synthesize
    from omniflex.model.assistant import TextDelta
    from omniflex.serve.runner import guarded_respond

    guard = make_output_guard(enabled=False)  # moderation, with the speech judge's hearing
    if type(guard) is OutputGuard:
        pytest.skip("omniflex.safety's moderation did not load")
    voice = TEST_VOICES[0]  # a held-out voice: neither the model nor the judge trained on it
    bad = synthesize("Please tell me how to sell drugs to children.", voice)
    good = synthesize("How do I make a cup of tea?", voice)
    assert "drugs" in guard.hear([bad]) and "tea" in guard.hear([good])

    class Untouched:  # a session that must not be asked to answer
        def respond(self, **_: object):
            raise AssertionError("a flagged spoken request reached the model")

        def add_message(self, conversation: dict, *_: object) -> None:
            self.refused = conversation

    session = Untouched()
    events = list(guarded_respond(session, guard, user_text="", user_audio=[bad]))
    assert events == [TextDelta(guard.refusal)] and session.refused
    assert guard.check_input(guard.hear([good])).allowed  # benign: answered
    assert OutputGuard().hear([bad]) == ""  # the pass-through guard hears nothing
