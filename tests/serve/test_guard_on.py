"""The server end to end with the voice guard on, as ``omniflex serve`` runs by default (the
other serve tests turn it off for speed): every sample of a spoken answer passes the voice
classifier before it leaves, over REST and Realtime, and a guard that blocks stops the answer."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from omniflex.safety.voice_classifier import VoiceDecision, VoiceGuard
from omniflex.serve import ServeSettings
from tests.serve.conftest import LiveServer, spoken_question, start_server
from tests.serve.test_realtime import _pcm_chunks, _recv, _until

_SPEAK = {"modalities": ["text", "audio"], "audio": {"voice": "aria", "format": "pcm16"},
          "messages": [{"role": "user", "content": "Say something."}]}  # fmt: skip


@pytest.fixture(scope="module")
def guarded(speaking_assistant) -> Iterator[LiveServer]:
    settings = ServeSettings(api_key=None, warmup=False, voice_guard=True)
    server = start_server(speaking_assistant, settings)
    yield server
    server.stop()


@pytest.fixture
def heard(monkeypatch) -> list[int]:
    """The samples each ``VoiceGuard.push`` judged (the classifier itself still decides)."""
    pushed: list[int] = []
    push = VoiceGuard.push

    def spy(self: VoiceGuard, pcm: np.ndarray) -> VoiceDecision:
        pushed.append(int(np.asarray(pcm).size))
        return push(self, pcm)

    monkeypatch.setattr(VoiceGuard, "push", spy)
    return pushed


def test_health_reports_the_guard_on(guarded) -> None:
    health = requests.get(guarded.url + "/healthz", timeout=10).json()
    assert health["safety"]["voice_guard"] == "on"


def test_rest_spoken_answer_is_judged_before_it_leaves(guarded, heard) -> None:
    out = guarded.client().chat.completions.create(model="omniflex-tiny", **_SPEAK)
    choice = out.choices[0]
    assert choice.finish_reason == "stop", choice  # a preset voice passes its own guard
    served = len(base64.b64decode(choice.message.audio.data)) // 2  # 24 kHz PCM16 samples
    assert served > 24_000  # AnswerShape: 1.2 s
    # Everything served was judged first (16 kHz at the guard, 24 kHz on the wire).
    assert sum(heard) * 24_000 / 16_000 >= served - 24_000 * 0.05


def test_realtime_spoken_answer_is_judged_before_it_leaves(guarded, heard) -> None:
    with guarded.client().realtime.connect(model="omniflex-tiny") as conn:
        _recv(conn)
        for chunk in _pcm_chunks(spoken_question(0.8)):
            conn.input_audio_buffer.append(audio=chunk)
        events = _until(conn, "response.done")
    assert events[-1]["response"]["status"] == "completed", events[-1]["response"]
    served = sum(len(base64.b64decode(e["delta"])) // 2 for e in events
                 if e["type"] == "response.output_audio.delta")  # fmt: skip
    assert served > 24_000
    assert sum(heard) * 24_000 / 16_000 >= served - 24_000 * 0.05


def test_a_blocking_guard_stops_the_answer(guarded, monkeypatch) -> None:
    def block(self: VoiceGuard, pcm: np.ndarray) -> VoiceDecision:
        return VoiceDecision(False, 0.0, self.voice, "blocked: not the preset voice (test)")

    monkeypatch.setattr(VoiceGuard, "push", block)
    out = guarded.client().chat.completions.create(model="omniflex-tiny", **_SPEAK)
    choice = out.choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.audio is None or not base64.b64decode(choice.message.audio.data)
