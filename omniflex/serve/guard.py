"""``OutputGuard``: what every answer passes before it leaves the server.

``check_audio`` sees each output audio chunk (float32, 16 kHz) before it is sent; ``check_text``
sees the answer's text and the transcript of its speech. A ``GuardDecision`` that is not
``allowed`` stops the answer: the server sends what it has, then an ``incomplete`` status with
the reason.

``make_output_guard`` uses ``omniflex.safety`` (the streaming ``VoiceGuard`` for the preset voice
and the moderation ``Policy`` on text) when that package and its shipped weights load, and a
pass-through guard otherwise, so the server runs while the safety layer is being built.

``check_input`` moderates the request before anything is generated: its typed words and, with
``hear``, what the user *said*. Spoken requests are transcribed by the independent speech judge
(``omniflex.safety.speech_judge``: a CTC recogniser trained on espeak-ng speech apart from the
model) rather than by the model itself, whose own recognition is not yet good enough to decide
on (both WERs are in the README's evaluation).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GuardDecision",
    "OutputGuard",
    "SafetyOutputGuard",
    "SafetyUnavailableError",
    "make_output_guard",
    "require_safety",
    "safety_status",
]


class SafetyUnavailableError(RuntimeError):
    """The voice guard was asked for but ``omniflex.safety`` cannot load it."""


log = logging.getLogger("omniflex.serve")


@dataclass(frozen=True)
class GuardDecision:
    allowed: bool
    reason: str = "ok"


_ALLOW = GuardDecision(True)


class OutputGuard:
    """Pass-through guard: allows everything. One instance per answer (``start`` resets it)."""

    name = "pass-through"

    def start(self, voice: str | None) -> None:
        """A new answer begins, spoken in ``voice`` (None: text only)."""

    def check_audio(self, samples: np.ndarray) -> GuardDecision:
        return _ALLOW

    def check_text(self, text: str) -> GuardDecision:
        return _ALLOW

    def check_input(self, text: str) -> GuardDecision:
        """The user's request (typed words and heard speech), before anything is generated."""
        return _ALLOW

    def hear(self, clips: Sequence[np.ndarray]) -> str:
        """What the user said in ``clips`` (16 kHz mono float32), for ``check_input``; the
        pass-through guard hears nothing."""
        return ""

    refusal = "I can't help with that."


class SafetyOutputGuard(OutputGuard):
    """``omniflex.safety``: the streaming voice classifier on audio, moderation on text."""

    name = "omniflex.safety"

    def __init__(
        self, voice_guard_factory: Any, policy: Any | None, judge: Any | None = None
    ) -> None:
        self._factory = voice_guard_factory
        self._policy = policy
        self._judge = judge
        self._voice: Any = None

    def start(self, voice: str | None) -> None:
        use = voice is not None and self._factory is not None
        self._voice = self._factory(voice) if use else None

    def check_audio(self, samples: np.ndarray) -> GuardDecision:
        if self._voice is None:
            return _ALLOW
        decision = self._voice.push(np.asarray(samples, dtype=np.float32).reshape(-1))
        return GuardDecision(bool(decision.allowed), str(decision.reason))

    def check_text(self, text: str) -> GuardDecision:
        if self._policy is None or not text.strip():
            return _ALLOW
        verdict = self._policy.check_output(text)
        if verdict.allowed:
            return _ALLOW
        category = (verdict.event or {}).get("category", "disallowed")
        return GuardDecision(False, f"moderation flagged the answer ({category})")

    def check_input(self, text: str) -> GuardDecision:
        if self._policy is None or not text.strip():
            return _ALLOW
        verdict = self._policy.check_input(text)
        if verdict.allowed:
            return _ALLOW
        log.info("safety.blocked %s", verdict.event)  # the event names no user text
        self.refusal = str(verdict.refusal)
        category = (verdict.event or {}).get("category", "disallowed")
        return GuardDecision(False, f"moderation flagged the request ({category})")

    def hear(self, clips: Sequence[np.ndarray]) -> str:
        clips = [c for c in clips if c.size >= _MIN_HEARD]  # shorter holds no word
        if self._policy is None or self._judge is None or not clips:
            return ""
        with _JUDGE_LOCK:  # one transcription at a time: the judge memoises as it decodes
            return " ".join(t for t in self._judge.transcribe(clips) if t)


def make_output_guard(enabled: bool = True, *, moderation: bool = True) -> OutputGuard:
    """A fresh guard for one answer: ``SafetyOutputGuard`` when ``omniflex.safety`` loads — with
    the voice classifier if ``enabled`` (the voice guard), moderation of requests and answers if
    ``moderation`` — else the pass-through ``OutputGuard``."""
    factory, policy = _safety()
    factory = factory if enabled else None
    policy = policy if moderation else None
    if factory is None and policy is None:
        return OutputGuard()
    return SafetyOutputGuard(factory, policy, _speech_judge() if policy else None)


_SAFETY: tuple[Any, Any] | None = None
_SAFETY_ERRORS: dict[str, str] = {}
_JUDGE: list[Any] = []  # [judge or None] once loaded
_JUDGE_LOAD_LOCK = threading.Lock()
_JUDGE_LOCK = threading.Lock()  # held while the judge transcribes, never while it loads
_MIN_HEARD = 1_600  # samples at 16 kHz: 0.1 s


def _speech_judge() -> Any | None:
    """The shipped speech judge, loaded once; None (logged once) if it cannot load, and then
    spoken requests go unmoderated, which ``/healthz`` says."""
    # Its own lock: a guard made on the event loop must not wait for another turn's hearing.
    with _JUDGE_LOAD_LOCK:
        if not _JUDGE:
            try:  # imported here: a broken install is reported by /healthz, not a crash
                from omniflex.safety.speech_judge import SpeechJudge

                judge = SpeechJudge.load()
                judge.snap("warm up")  # phonemises the vocabulary now, not in a request
                _JUDGE.append(judge)
            except Exception as err:
                log.warning("speech judge unavailable (%s); spoken requests are not moderated",
                            err)  # fmt: skip
                _SAFETY_ERRORS["input_speech"] = f"{type(err).__name__}: {err}"
                _JUDGE.append(None)
        return _JUDGE[0]


def _safety() -> tuple[Any, Any]:
    """(VoiceGuard factory, Policy) from ``omniflex.safety``, loaded once; (None, None) if it
    is missing or its weights do not load (logged once)."""
    global _SAFETY
    if _SAFETY is None:
        try:  # imported here: a broken install is refused or reported, not a crash on import
            from omniflex.safety import Policy, VoiceGuard

            VoiceGuard.from_shipped("aria")  # loads the shipped classifier now, not mid-answer
            try:
                policy: Any = Policy()
            except Exception as err:  # moderation weights missing: voice guard alone
                log.warning("moderation unavailable (%s); output text is not moderated", err)
                _SAFETY_ERRORS["moderation"] = f"{type(err).__name__}: {err}"
                policy = None
            _SAFETY = (VoiceGuard.from_shipped, policy)
        except Exception as err:
            log.warning("omniflex.safety unavailable (%s); output guard passes through", err)
            _SAFETY_ERRORS["voice_guard"] = f"{type(err).__name__}: {err}"
            _SAFETY = (None, None)
    return _SAFETY


def safety_status(voice_guard: bool = True) -> dict[str, Any]:
    """What guards the output (``/healthz`` reports it): each of the voice guard and moderation
    ``"on"``, ``"off"`` (not asked for) or ``"unavailable"``, with the load error if any."""
    factory, policy = _safety()
    status: dict[str, Any] = {
        "voice_guard": ("on" if factory else "unavailable") if voice_guard else "off",
        "moderation": "on" if policy else "unavailable",
        "input_speech_moderation": "on" if policy and _speech_judge() else "unavailable",
    }
    if _SAFETY_ERRORS:
        status["errors"] = dict(_SAFETY_ERRORS)
    return status


def require_safety(voice_guard: bool) -> None:
    """Fail closed: refuse to serve when the voice guard is asked for and cannot load."""
    status = safety_status(voice_guard)
    if status["voice_guard"] == "unavailable":
        raise SafetyUnavailableError(
            "the voice guard is on but cannot load "
            f"({status.get('errors', {}).get('voice_guard', 'unknown error')}); the server "
            "will not speak unguarded. Reinstall omniflex (its safety weights ship in "
            "omniflex/assets/safety) or start it with --no-voice-guard"
        )
