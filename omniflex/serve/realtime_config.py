"""A Realtime session's configuration, as ``session.created`` and ``session.updated`` carry it:
OpenAI's defaults, a ``session.update`` merged into it, and the checks of what the server serves
(16-bit PCM at 24 kHz, ``server_vad`` turn detection, the preset voices and OpenAI's names for
them). The event's field types were validated before (``realtime_events``); these checks are
about meaning, each answered with its own error code.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from omniflex.safety.voices import resolve_voice
from omniflex.serve.audio import WIRE_RATE
from omniflex.serve.realtime_events import EventError
from omniflex.serve.vad import VadConfig

__all__ = [
    "PCM_FORMAT",
    "check_max_tokens",
    "default_session",
    "event_voice",
    "updated_session",
    "vad_config",
]

PCM_FORMAT = {"type": "audio/pcm", "rate": WIRE_RATE}


def default_session(session_id: str, model: str, voice: str) -> dict[str, Any]:
    """The configuration a new connection starts with (``session.created``)."""
    return {
        "type": "realtime", "object": "realtime.session", "id": session_id, "model": model,
        "output_modalities": ["audio"], "instructions": "", "max_output_tokens": "inf",
        "tools": [], "tool_choice": "auto",
        "audio": {
            "input": {
                "format": dict(PCM_FORMAT), "transcription": None, "noise_reduction": None,
                "turn_detection": _default_turn_detection(),
            },
            "output": {"format": dict(PCM_FORMAT), "voice": voice, "speed": 1.0},
        },
    }  # fmt: skip


def _default_turn_detection() -> dict[str, Any]:
    return {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
        "silence_duration_ms": 500, "create_response": True, "interrupt_response": True,
        "idle_timeout_ms": None,
    }  # fmt: skip


def vad_config(turn_detection: dict[str, Any] | None) -> VadConfig:
    """The VAD options of a ``turn_detection`` object (``VadConfig`` checks their ranges)."""
    td = turn_detection or {}
    return VadConfig(
        threshold=float(td.get("threshold") or 0.5),
        prefix_padding_ms=int(td.get("prefix_padding_ms") or 0),
        silence_duration_ms=int(td.get("silence_duration_ms") or 0),
    )


def updated_session(config: dict[str, Any], update: Any, voices: Sequence[str]) -> dict[str, Any]:
    """``config`` with a ``session.update``'s ``session`` merged in, checked; ``config`` itself
    is left as it was, so a refused update changes nothing."""
    if not isinstance(update, dict):
        raise EventError("session.update needs a 'session' object", "session")
    if update.get("type", "realtime") != "realtime":
        raise EventError("only 'realtime' sessions are served (not transcription)",
                         "session.type")  # fmt: skip
    new = copy.deepcopy(config)
    for key in ("instructions", "max_output_tokens", "output_modalities"):
        if key in update:
            new[key] = update[key]
    audio = update.get("audio") or {}
    for side in ("input", "output"):
        for key, value in (audio.get(side) or {}).items():
            new["audio"][side][key] = value
    _check(new, voices)
    td = new["audio"]["input"]["turn_detection"]
    if "turn_detection" in (audio.get("input") or {}) and td is not None:
        defaults = _default_turn_detection()
        if td.get("type") == "semantic_vad":  # served by silero-vad with its defaults
            td = {**defaults, "create_response": td.get("create_response", True),
                  "interrupt_response": td.get("interrupt_response", True)}  # fmt: skip
        new["audio"]["input"]["turn_detection"] = {**defaults, **td}
    return new


def event_voice(voice: Any, voices: Sequence[str], param: str) -> str:
    """The preset a session or response voice (a name or ``{"id": name}``) speaks in."""
    if isinstance(voice, dict):
        voice = voice.get("id")
    try:
        return resolve_voice(voice, tuple(voices))
    except ValueError as err:
        raise EventError(str(err), param, "invalid_voice") from None


def check_max_tokens(cap: Any, param: str) -> None:
    """``max_output_tokens`` is ``"inf"`` or a whole number >= 1 (not a bool, a float, a string
    of digits, or Infinity)."""
    if cap != "inf" and not (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1):
        raise EventError(f"max_output_tokens must be a positive integer or 'inf', got {cap!r}",
                         param)  # fmt: skip


def _check(c: dict[str, Any], voices: Sequence[str]) -> None:
    modalities = c.get("output_modalities")
    if (not isinstance(modalities, list) or not modalities
            or set(modalities) - {"text", "audio"}):  # fmt: skip
        raise EventError("output_modalities must be ['audio'] or ['text']",
                         "session.output_modalities")  # fmt: skip
    for side in ("input", "output"):
        fmt = c["audio"][side].get("format") or PCM_FORMAT
        if fmt.get("type", "audio/pcm") != "audio/pcm" or fmt.get("rate", WIRE_RATE) != WIRE_RATE:
            raise EventError(
                f"audio format {fmt} is not served; use {{'type': 'audio/pcm', 'rate': "
                f"{WIRE_RATE}}} (16-bit PCM, 24 kHz)",
                f"session.audio.{side}.format", "unsupported_audio_format",
            )  # fmt: skip
    # The session keeps the name it was given; answers speak its preset.
    event_voice(c["audio"]["output"].get("voice"), voices, "session.audio.output.voice")
    td = c["audio"]["input"].get("turn_detection")
    if td is not None:
        param = "session.audio.input.turn_detection"
        if not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad"):
            raise EventError("turn_detection.type must be 'server_vad' (or null)", param)
        try:
            vad_config(td)
        except (TypeError, ValueError) as err:
            raise EventError(str(err), param) from None
    check_max_tokens(c.get("max_output_tokens"), "session.max_output_tokens")
