"""A Realtime event fuzzer: every field of every served client event given values of the wrong
type and size, deep JSON and unknown events. The connection must survive each one, answer a bad
event with an ``error`` naming the field, and never fail with a ``server_error`` of its own."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

from omniflex.serve.realtime_events import CLIENT_EVENTS, EventError, validate_client_event
from tests.serve.test_realtime import _recv

_SILENCE = base64.b64encode(bytes(4_800)).decode()  # 100 ms of 24 kHz PCM16 silence

#: One valid event of each served type, every optional field given, so every field is fuzzed.
VALID: dict[str, dict[str, Any]] = {
    "session.update": {"type": "session.update", "event_id": "e1", "session": {
        "type": "realtime", "model": "omniflex-tiny", "instructions": "Be brief.",
        "max_output_tokens": 40, "output_modalities": ["text"], "tools": [], "tool_choice": "auto",
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24_000}, "transcription": None,
                      "noise_reduction": None,
                      "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                         "prefix_padding_ms": 300, "silence_duration_ms": 500,
                                         "create_response": False, "interrupt_response": True,
                                         "idle_timeout_ms": None}},
            "output": {"format": {"type": "audio/pcm", "rate": 24_000}, "voice": "alloy",
                       "speed": 1.0},
        },
    }},
    "input_audio_buffer.append": {"type": "input_audio_buffer.append", "audio": _SILENCE},
    "input_audio_buffer.commit": {"type": "input_audio_buffer.commit"},
    "input_audio_buffer.clear": {"type": "input_audio_buffer.clear"},
    "conversation.item.create": {"type": "conversation.item.create", "previous_item_id": None,
                                 "item": {"type": "message", "id": "item_fuzz", "role": "user",
                                          "content": [{"type": "input_text", "text": "Hi."}]}},
    "conversation.item.truncate": {"type": "conversation.item.truncate", "item_id": "item_x",
                                   "content_index": 0, "audio_end_ms": 100},
    "response.create": {"type": "response.create", "response": {
        "instructions": "Be brief.", "max_output_tokens": 4, "output_modalities": ["text"],
        "audio": {"output": {"voice": "alloy"}}, "conversation": "auto", "metadata": {}}},
    "response.cancel": {"type": "response.cancel", "response_id": "resp_x"},
    "output_audio_buffer.clear": {"type": "output_audio_buffer.clear"},
}  # fmt: skip

_DEEP = json.loads("[" * 400 + "]" * 400)  # nested 400 deep: valid JSON, no valid field
BAD_VALUES: list[Any] = [None, True, -1, 1.5, 10**30, "", "x" * 20_000, [], {}, [1, "a"], _DEEP]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every field path of ``value`` (dict keys and list positions), leaves and inner nodes."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _paths(sub, (*path, i))


def _mutated(event: dict[str, Any], path: tuple[Any, ...], bad: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    return out


def _cases() -> list[tuple[str, str]]:
    """(label, JSON text) of every mutation, and of the raw texts no JSON parser should crash on."""
    cases = []
    for kind, event in VALID.items():
        for path in _paths(event):
            if path == ("type",):
                continue
            for bad in BAD_VALUES:
                label = f"{kind}:{'.'.join(map(str, path))}={type(bad).__name__}"
                cases.append((label, json.dumps(_mutated(event, path, bad))))
    cases += [
        ("deep array", "[" * 100_000 + "]" * 100_000),
        ("deep object", '{"type": "session.update", "session": ' + '{"a": ' * 50_000 + "1"
         + "}" * 50_001),
        ("Infinity", '{"type": "response.create", "response": {"max_output_tokens": Infinity}}'),
        ("NaN", '{"type": "session.update", "session": {"audio": {"output": {"speed": NaN}}}}'),
        ("type not a string", '{"type": 5}'),
        ("unknown type", '{"type": "session.delete"}'),
        ("not an object", '"session.update"'),
        ("bad event_id", '{"type": "input_audio_buffer.clear", "event_id": {"a": 1}}'),
    ]  # fmt: skip
    return cases


CASES = _cases()


def test_the_valid_events_are_valid_and_every_served_type_is_fuzzed() -> None:
    assert set(VALID) == set(CLIENT_EVENTS)
    for event in VALID.values():
        validate_client_event(event)
    assert len(CASES) > 500


_MARKS = iter(range(10**9))


def _sync(conn: Any, ws: Any) -> list[dict[str, Any]]:
    """Everything the server says up to its answer to a marker (an unknown event, answered with
    an error naming the marker's id): the events one fuzz case caused. An answer the case
    started is cancelled and waited for."""
    mark = f"sync-{next(_MARKS)}"
    ws.send(json.dumps({"type": "omniflex.fuzz.sync", "event_id": mark}))
    seen: list[dict[str, Any]] = []
    marked, running = False, 0
    while not marked or running:
        event = _recv(conn, timeout=60)
        if event["type"] == "error" and event["error"]["event_id"] == mark:
            marked = True
            continue
        seen.append(event)
        if event["type"] == "response.created":
            running += 1
            ws.send(json.dumps({"type": "response.cancel"}))
        elif event["type"] == "response.done":
            running -= 1
    return seen


def test_fuzzed_events_are_answered_and_the_connection_lives(live) -> None:
    refused = 0
    with live.client().realtime.connect(model="omniflex-tiny") as conn:
        assert _recv(conn)["type"] == "session.created"
        ws = conn._connection
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": None}}}}))  # fmt: skip
        assert _recv(conn)["type"] == "session.updated"
        for label, text in CASES:
            ws.send(text)
            seen = _sync(conn, ws)
            errors = [e["error"] for e in seen if e["type"] == "error"]
            assert not [e for e in errors if e["code"] == "server_error"], (label, errors)
            errors = [e for e in errors if e["code"] != "response_cancel_not_active"]
            try:
                event = json.loads(text)
                validate_client_event(event)
            except (EventError, KeyError, TypeError, AttributeError, ValueError, RecursionError):
                # refused by the model (or not an event at all): the client hears why
                assert errors, f"{label}: no error event for an invalid event"
                refused += 1
            else:
                if event["type"] == "input_audio_buffer.append":  # keep the buffer empty
                    ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
                    _sync(conn, ws)
        # Still the same live connection, still answering.
        ws.send(json.dumps(VALID["session.update"]))
        assert _until_type(conn, "session.updated")
    assert refused > 400


def _until_type(conn: Any, kind: str) -> dict[str, Any]:
    for _ in range(100):
        event = _recv(conn)
        if event["type"] == kind:
            return event
    raise AssertionError(f"no {kind}")


def test_a_bad_field_is_named(live) -> None:
    with live.client().realtime.connect(model="omniflex-tiny") as conn:
        _recv(conn)
        ws = conn._connection
        bad = _mutated(VALID["session.update"], ("session", "audio", "input", "turn_detection",
                                                 "threshold"), "high")  # fmt: skip
        ws.send(json.dumps(bad))
        error = _until_type(conn, "error")["error"]
        assert error["code"] == "invalid_value" and error["event_id"] == "e1"
        assert error["param"] == "session.audio.input.turn_detection.threshold"
        assert "'high'" in error["message"]
