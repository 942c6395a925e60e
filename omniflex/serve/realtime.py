"""The Realtime API over a websocket (``/v1/realtime``), as the ``openai`` package types it
(``openai.types.realtime``): speech in, speech out, one conversation per connection.

Audio arrives as base64 16-bit PCM at 24 kHz (``input_audio_buffer.append``), is resampled to
16 kHz as it streams and, with ``server_vad`` turn detection, scored by silero-vad. While the
user speaks, each chunk is encoded and prefilled into the session at once (incremental prefill),
so when ``speech_stopped`` fires only the last partial frame is left to compute before the
answer starts. The answer streams back as ``response.output_audio.delta`` (each chunk passed
through the ``OutputGuard`` first) with its transcript.

Speech that starts while an answer is playing cancels the answer (barge-in) and cuts it in the
conversation at what the client has played (``Session.interrupt``); ``conversation.item.truncate``
from the client does the same with the client's own count.

Threads: each connection has one worker thread for its model work (pushes, commits, answers run
in order there); the event loop only parses, resamples and sends. ``Assistant.lock``
serialises forwards across connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from omniflex.media.audio import to_wav_bytes
from omniflex.model.assistant import AudioDelta, Session, TextDelta
from omniflex.model.generate import ContextFullError
from omniflex.model.sampling import SamplingConfig
from omniflex.serve.audio import (
    MODEL_RATE,
    WIRE_RATE,
    StreamResampler,
    b64_to_pcm16,
    float_to_pcm16,
    pcm16_to_float,
)
from omniflex.serve.auth import check_api_key
from omniflex.serve.errors import ApiError, error_event
from omniflex.serve.guard import make_output_guard
from omniflex.serve.messages import decode_image_url, last_user_audio, last_user_text
from omniflex.serve.realtime_config import (
    check_max_tokens,
    default_session,
    event_voice,
    updated_session,
    vad_config,
)
from omniflex.serve.realtime_events import CLIENT_EVENTS, EventError, validate_client_event
from omniflex.serve.realtime_response import ResponseStream, new_id
from omniflex.serve.runner import Blocked, TurnTiming, guarded_respond, iterate_in_thread
from omniflex.serve.state import ServerState
from omniflex.serve.vad import StreamingVad

__all__ = ["RealtimeConnection", "serve_realtime"]

log = logging.getLogger("omniflex.serve")

_TURN_RESERVE = 48  # tokens kept free after a user turn, besides the answer's own budget


async def serve_realtime(websocket: WebSocket, state: ServerState) -> None:
    """Authenticate, admit (or refuse at capacity), then run one Realtime connection."""
    protocols = websocket.headers.get("sec-websocket-protocol", "")
    try:
        check_api_key(state.settings, websocket.headers.get("authorization"), protocols)
    except ApiError as err:
        try:
            await websocket.send_denial_response(err.response())
        except RuntimeError:  # server without the denial extension
            await websocket.close(code=1008, reason="invalid API key")
        return
    offered = [p.strip() for p in protocols.split(",")]
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    if not state.sessions.try_acquire():
        message = (
            f"the server is at capacity ({state.sessions.limit} concurrent sessions); "
            "try again later"
        )
        log.info("session refused", extra={"reason": "session_limit"})
        await websocket.send_text(
            json.dumps(error_event(message, type="server_error", code="session_limit"))
        )
        await websocket.close(code=1013, reason="session limit")
        return
    connection = RealtimeConnection(websocket, state)
    try:
        await connection.run()
    finally:
        await connection.close()
        state.sessions.release()


class RealtimeConnection:
    """One websocket conversation: session config, input buffer, the answer in flight."""

    def __init__(self, websocket: WebSocket, state: ServerState) -> None:
        self.ws = websocket
        self.state = state
        self.assistant = state.assistant
        self.settings = state.settings
        self.loop = asyncio.get_running_loop()
        self.session_id = new_id("sess")
        self.config = default_session(self.session_id, state.model_name, self.assistant.voices[0])
        self.vad: StreamingVad | None = StreamingVad(vad_config(self._turn_detection))
        self.session: Session = self.assistant.session()
        self._user_text = ""  # typed words of the user's last item, for input moderation
        self._user_audio: list[np.ndarray] = []  # 16 kHz speech of the user's last turn, too
        self.worker = ThreadPoolExecutor(1, thread_name_prefix=f"rt-{self.session_id[-6:]}")
        self._send_lock = asyncio.Lock()
        self._in = StreamResampler(WIRE_RATE, MODEL_RATE)
        self._received = 0  # 16 kHz samples received since the connection opened
        self._allowance = self.settings.audio_burst_seconds  # seconds of audio that may arrive
        self._allowance_at = self.loop.time()
        self._recent = np.zeros(0, np.float32)  # the last few seconds, for the VAD's prefix
        self._turn_open = False  # a spoken user turn is being prefilled
        self._turn_item: str | None = None
        self._turn_samples = 0
        self._pending_timing: dict[str, float] = {}  # compute times of the committed turn
        self._last_item: str | None = None
        self._response: asyncio.Task[None] | None = None
        self._cancel = threading.Event()
        self._cancel_reason = "client_cancelled"
        self._answer_item: str | None = None  # the last assistant item, while it may be cut
        self._audio_sent = 0.0  # seconds of answer audio sent
        self._first_sent: float | None = None  # when its first chunk left
        self._speech_stopped_at: float | None = None
        self._closed = False

    # ------------------------------------------------------------------ config
    @property
    def _turn_detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]

    # ------------------------------------------------------------------ sending
    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", new_id("event"))
        if self._closed or self.ws.application_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True

    async def send_error(self, message: str, code: str, param: str | None = None,
                         event_id: str | None = None) -> None:  # fmt: skip
        await self.send(error_event(message, code=code, param=param, event_id=event_id))

    def _post_error(self, message: str, code: str) -> None:
        """From a worker thread: send an ``error`` event."""
        asyncio.run_coroutine_threadsafe(self.send_error(message, code), self.loop)

    def _submit(self, fn: Callable[[], Any], what: str) -> None:
        """Queue model work on this connection's worker; failures become ``error`` events."""

        def job() -> None:
            try:
                fn()
            except Exception as err:
                log.exception("realtime %s failed", what, extra={"session": self.session_id})
                self._post_error(f"{what} failed: {err}", "server_error")

        self.worker.submit(job)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        log.info("session open", extra={"session": self.session_id})
        await self.send({"type": "session.created", "session": self.config})
        opened = self.loop.time()
        idle, longest = self.settings.session_idle_seconds, self.settings.session_max_seconds
        while True:
            left = longest - (self.loop.time() - opened)
            try:
                message = await asyncio.wait_for(self.ws.receive(), max(0.0, min(idle, left)))
            except TimeoutError:
                if left > idle and self._response is not None and not self._response.done():
                    continue  # quiet while the answer plays: not idle
                await self._expire(idle_for=None if left <= idle else idle)
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                size = len(message.get("bytes") or b"")
                await self.send_error(
                    f"binary websocket frames are not part of the Realtime protocol ({size} "
                    "bytes received); send JSON text events, audio as base64",
                    "invalid_frame",
                )
                continue
            if len(text) > self.settings.max_event_bytes:
                await self.send_error(
                    f"event of {len(text):,} bytes is over the {self.settings.max_event_bytes:,} "
                    "byte limit; send audio in smaller appends", "event_too_large",
                )  # fmt: skip
                continue
            try:
                event = json.loads(text)
            except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
                await self.send_error(f"the event is not valid JSON ({err})", "invalid_json")
                continue
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                await self.send_error("an event must be a JSON object with a 'type'",
                                      "invalid_event", "type")  # fmt: skip
                continue
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            try:
                if event["type"] in CLIENT_EVENTS:
                    validate_client_event(event)
                await self.handle(event)
            except EventError as err:
                await self.send_error(err.message, err.code, err.param, event_id)
            except Exception as err:  # a bug of ours: say so, keep the connection
                log.exception("realtime event %s failed", event["type"],
                              extra={"session": self.session_id})  # fmt: skip
                await self.send_error(f"{event['type']} failed: {type(err).__name__}",
                                      "server_error", None, event_id)  # fmt: skip

    async def _expire(self, idle_for: float | None) -> None:
        """End a session that sent nothing for ``idle_for`` s, or reached its longest life."""
        if idle_for is not None:
            message = (f"no event for {idle_for:g} s: the session was closed to free its place; "
                       "reconnect to go on")  # fmt: skip
            code = "session_idle_timeout"
        else:
            message = (f"the session reached its {self.settings.session_max_seconds:g} s limit; "
                       "reconnect to go on")  # fmt: skip
            code = "session_expired"
        log.info("session ended", extra={"session": self.session_id, "reason": code})
        await self.send_error(message, code)
        await self.ws.close(code=1000, reason=code)

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        handler = self._handlers().get(kind)
        if handler is None:
            raise EventError(
                f"unknown or unsupported event type {kind!r}; supported: "
                f"{', '.join(sorted(self._handlers()))}",
                "type",
                "unknown_event_type",
            )
        await handler(event)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_clear,
        }

    async def close(self) -> None:
        """The client left (or the loop ended): stop the answer, finish the worker."""
        self._closed = True
        self._cancel.set()
        if self._response is not None:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._response), timeout=10)
        await asyncio.get_running_loop().run_in_executor(None, self.worker.shutdown, True)
        log.info("session closed", extra={"session": self.session_id})

    # ------------------------------------------------------------------ input audio
    async def _on_session_update(self, event: dict[str, Any]) -> None:
        self.config = updated_session(self.config, event.get("session"), self.assistant.voices)
        td = self._turn_detection
        self.vad = StreamingVad(vad_config(td)) if td is not None else None
        await self.send({"type": "session.updated", "session": self.config})

    async def _on_append(self, event: dict[str, Any]) -> None:
        data = event.get("audio")
        if not isinstance(data, str):
            raise EventError("input_audio_buffer.append needs 'audio': base64 PCM16", "audio")
        self._take_audio(len(data) * 3 / 4 / 2 / WIRE_RATE)  # seconds, from the length alone
        x = await asyncio.to_thread(self._decode_append, data)  # (N,) float32 16 kHz
        start = self._received
        self._received += x.size
        keep = MODEL_RATE * 6
        self._recent = np.concatenate([self._recent, x])[-keep:]
        if self.vad is None:
            if not self._turn_open:
                self._open_turn()
            self._push(x)
            return
        vad = self.vad
        events = await asyncio.to_thread(vad.push, x)
        pushed_to = start  # samples of this chunk already in the turn
        for ev in events:
            if ev.kind == "start":
                await self._speech_started(ev.ms)
                first = max(ev.sample, self._received - self._recent.size)
                self._push(self._recent[first - self._received + self._recent.size :])
                pushed_to = self._received
            elif self._turn_open:
                if pushed_to < self._received:
                    self._push(x[pushed_to - start :])
                    pushed_to = self._received
                await self._speech_stopped(ev.ms)
        if self._turn_open and pushed_to < self._received:
            self._push(x[pushed_to - start :])

    def _take_audio(self, seconds: float) -> None:
        """Charge ``seconds`` of appended audio to the connection's allowance: it refills at
        ``max_audio_rate`` seconds per second up to ``audio_burst_seconds``; an append over
        what is left is refused (and costs nothing)."""
        rate, burst = self.settings.max_audio_rate, self.settings.audio_burst_seconds
        now = self.loop.time()
        self._allowance = min(burst, self._allowance + (now - self._allowance_at) * rate)
        self._allowance_at = now
        if seconds > self._allowance:
            raise EventError(
                f"audio arrives faster than this server takes it: this append holds "
                f"{seconds:.1f} s, {self._allowance:.1f} s may arrive now ({rate:g} s per second "
                f"after a {burst:g} s burst); send audio as it is spoken, in smaller appends",
                "audio", "rate_limit_exceeded",
            )  # fmt: skip
        self._allowance -= seconds

    def _decode_append(self, data: str) -> np.ndarray:
        """Base64 PCM16 at 24 kHz -> float32 at 16 kHz (on a thread: not the event loop's
        work; appends are handled one at a time, so the resampler's state stays in order)."""
        try:
            raw = b64_to_pcm16(data, what="'audio'")
        except ValueError as err:
            raise EventError(str(err), "audio", "invalid_audio") from None
        return self._in.push(pcm16_to_float(raw))

    async def _speech_started(self, audio_start_ms: int) -> None:
        td = self._turn_detection or {}
        if td.get("interrupt_response", True):
            await self._barge_in()
        self._open_turn()
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": self._turn_item,
            }
        )

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        self._speech_stopped_at = time.perf_counter()
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": audio_end_ms,
                "item_id": self._turn_item,
            }
        )
        await self._commit()
        td = self._turn_detection or {}
        if td.get("create_response", True) and self._response is None:
            await self._start_response({})

    def _open_turn(self) -> None:
        """Open a spoken user turn in the session (on the worker, in order)."""
        if self._turn_open:
            return
        self._turn_open = True
        self._turn_item = new_id("item")
        self._turn_samples = 0
        self._user_audio = []  # here, on the loop, before any of the turn's audio is pushed
        self._answer_item = None  # a new turn: the last answer can no longer be cut
        self._submit(self._begin_turn, "opening the spoken turn")

    def _capacity(self) -> int:
        return int(self.assistant.model.config.max_seq_len)

    def _answer_budget(self) -> int:
        cap = self.config.get("max_output_tokens", "inf")
        budget = self.settings.max_new_tokens if cap == "inf" else int(cap)
        return min(budget, self.settings.max_new_tokens)

    def _begin_turn(self) -> None:
        room = self._capacity() - len(self.session.tokens) - self._answer_budget()
        if room < self._capacity() // 4:
            log.info("context full: history dropped", extra={"session": self.session_id})
            self.session = self.assistant.session()
        self.session.begin_user_audio()

    def _push(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        self._turn_samples += x.size
        if self._turn_samples > self.settings.max_audio_seconds * MODEL_RATE:
            return  # over the turn limit: the rest of the turn is not heard
        self._user_audio.append(x)

        def push() -> None:
            session = self.session
            room = (self._capacity() - len(session.tokens) - self._answer_budget()
                    - _TURN_RESERVE)  # fmt: skip
            spf = int(self.assistant.template.audio.config.samples_per_frame)
            per_frame = self.assistant.layout.audio_codebooks
            fits = max(0, room // per_frame) * spf
            if fits < x.size:
                log.info("spoken turn cut at the context limit", extra={"session": self.session_id})
            if fits:
                session.push_user_audio(x[:fits])

        self._submit(push, "prefilling speech")

    async def _commit(self) -> None:
        if not self._turn_open:
            raise EventError(
                "the input audio buffer is empty: append audio before commit",
                code="input_audio_buffer_commit_empty",
            )
        self._turn_open = False
        item_id, previous = self._turn_item, self._last_item
        timing: dict[str, float] = {}

        def end() -> None:
            start = time.perf_counter()
            self.session.end_user_audio()
            timing["end_user_audio"] = time.perf_counter() - start

        self._submit(end, "closing the spoken turn")
        self._pending_timing = timing
        self._last_item = item_id
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": previous})  # fmt: skip
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.send({"type": "conversation.item.added", "item": item,
                         "previous_item_id": previous})  # fmt: skip
        await self.send({"type": "conversation.item.done", "item": item,
                         "previous_item_id": previous})  # fmt: skip

    async def _on_commit(self, event: dict[str, Any]) -> None:
        self._speech_stopped_at = time.perf_counter()
        await self._commit()

    async def _on_clear(self, event: dict[str, Any]) -> None:
        if self._turn_open:
            self._turn_open = False

            # self.session is read on the worker: an earlier job may have replaced it
            self._submit(
                lambda: self.session.discard_user_audio(), "clearing the input audio buffer"
            )
        if self.vad is not None:
            self.vad.reset()
        await self.send({"type": "input_audio_buffer.cleared"})

    # ------------------------------------------------------------------ items
    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise EventError("conversation.item.create serves message items only", "item.type")
        role = item.get("role")
        if role not in ("user", "system", "assistant"):
            raise EventError("item.role must be user, system or assistant", "item.role")
        if self._turn_open:
            raise EventError(
                "a spoken turn is in the input buffer: commit or clear it first",
                code="input_audio_buffer_open",
            )
        parts, files = await asyncio.to_thread(self._item_parts, item)
        conversation = {"messages": [{"role": role, "content": parts}]}
        item_id = item.get("id") or new_id("item")

        if role == "user":
            self._user_text = last_user_text(conversation)
            self._user_audio = await asyncio.to_thread(last_user_audio, conversation, files)

        def add() -> None:
            try:
                self.session.add_message(conversation, files)
            except ContextFullError:  # drop the history, as a spoken turn does; then alone
                self.session = self.assistant.session()
                try:
                    self.session.add_message(conversation, files)
                except ContextFullError as err:
                    self.session = self.assistant.session()
                    message = f"the item does not fit the model's context ({err})"
                    self._post_error(message, "context_length_exceeded")
                    return
                log.info("context full: history dropped", extra={"session": self.session_id})

        self._answer_item = None
        self._submit(add, "adding the item")
        previous, self._last_item = self._last_item, item_id
        out = {**item, "id": item_id, "object": "realtime.item", "type": "message",
               "status": "completed"}  # fmt: skip
        await self.send({"type": "conversation.item.added", "item": out,
                         "previous_item_id": previous})  # fmt: skip
        await self.send({"type": "conversation.item.done", "item": out,
                         "previous_item_id": previous})  # fmt: skip

    def _item_parts(self, item: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise EventError("item.content must be a non-empty list", "item.content")
        parts: list[dict[str, Any]] = []
        files: dict[str, bytes] = {}
        for i, part in enumerate(content):
            param = f"item.content.{i}"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text", "output_text"):
                parts.append({"type": "text", "text": str(part.get("text") or "")})
            elif kind == "input_image":
                try:
                    png = decode_image_url(str(part.get("image_url") or ""), param=param)
                except ApiError as err:
                    raise EventError(err.message, param, err.code or "invalid_image") from None
                files[f"image{i}.png"] = png
                parts.append({"type": "image", "file": f"image{i}.png"})
            elif kind == "input_audio":
                try:
                    raw = b64_to_pcm16(str(part.get("audio") or ""), what=param + ".audio")
                except ValueError as err:
                    raise EventError(str(err), param + ".audio", "invalid_audio") from None
                x = StreamResampler(WIRE_RATE, MODEL_RATE).push(pcm16_to_float(raw))
                files[f"audio{i}.wav"] = to_wav_bytes(x)
                parts.append({"type": "audio", "file": f"audio{i}.wav"})
            else:
                raise EventError(
                    f"content type {kind!r} is not served; use input_text, input_image "
                    "(data URL) or input_audio",
                    param + ".type",
                )
        if item.get("role") == "assistant":
            parts = [p for p in parts if p["type"] == "text"]
        return parts, files

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        end_ms = event.get("audio_end_ms")
        if not isinstance(end_ms, int) or end_ms < 0:
            raise EventError("audio_end_ms must be a whole number >= 0", "audio_end_ms")
        if item_id is None or item_id != self._answer_item:
            if item_id is not None and item_id == self._last_item:
                # Already cut at barge-in, or a later turn began: nothing left to change.
                await self.send({"type": "conversation.item.truncated", "item_id": item_id,
                                 "content_index": event.get("content_index", 0),
                                 "audio_end_ms": end_ms})  # fmt: skip
                return
            raise EventError(
                f"no assistant item {item_id!r} to truncate", "item_id", "item_not_found"
            )
        if self._response is not None:
            self._cancel_reason = "client_cancelled"
            self._cancel.set()
        self._interrupt(end_ms / 1000.0)
        await self.send({"type": "conversation.item.truncated", "item_id": item_id,
                         "content_index": event.get("content_index", 0),
                         "audio_end_ms": end_ms})  # fmt: skip

    def _interrupt(self, played_seconds: float) -> None:
        self._answer_item = None

        def cut() -> None:
            if self.session.answer_start is not None:
                kept = self.session.interrupt(played_seconds)
                log.info(
                    "answer cut",
                    extra={
                        "session": self.session_id,
                        "frames_kept": kept,
                        "played_s": round(played_seconds, 3),
                    },
                )

        self._submit(cut, "cutting the answer")

    async def _barge_in(self) -> None:
        """User speech while an answer runs or plays: stop it, cut it at what was played."""
        if self._answer_item is None:
            return
        now = time.perf_counter()
        played = 0.0 if self._first_sent is None else now - self._first_sent
        playing = self._first_sent is not None and played < self._audio_sent
        if self._response is None and not playing:
            return
        if self._response is not None:
            self._cancel_reason = "turn_detected"
            self._cancel.set()
        self._interrupt(min(played, self._audio_sent))

    async def _on_output_clear(self, event: dict[str, Any]) -> None:
        await self.send({"type": "output_audio_buffer.cleared", "response_id": None})

    # ------------------------------------------------------------------ responses
    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._response is not None:
            raise EventError(
                "a response is already in progress; cancel it first",
                code="conversation_already_has_active_response",
            )
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise EventError("'response' must be an object", "response")
        if self._turn_open:  # uncommitted speech: it is the turn being answered
            await self._commit()
        await self._start_response(params)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        if self._response is None:
            raise EventError("no response in progress to cancel", code="response_cancel_not_active")
        self._cancel_reason = "client_cancelled"
        self._cancel.set()

    async def _start_response(self, params: dict[str, Any]) -> None:
        modalities = params.get("output_modalities") or self.config["output_modalities"]
        voice = ((params.get("audio") or {}).get("output") or {}).get("voice")
        voice = voice or self.config["audio"]["output"]["voice"]
        voice = event_voice(voice, self.assistant.voices, "response.audio.output.voice")
        cap = params.get("max_output_tokens", self.config.get("max_output_tokens", "inf"))
        check_max_tokens(cap, "response.max_output_tokens")
        budget = self._answer_budget() if cap == "inf" else min(int(cap), self._answer_budget())
        spoken = "audio" in modalities
        self._cancel = threading.Event()
        self._cancel_reason = "client_cancelled"
        self._response = asyncio.create_task(
            self._respond(voice if spoken else None, budget, list(modalities))
        )

    async def _respond(self, voice: str | None, budget: int, modalities: list[str]) -> None:
        try:
            await self._run_response(voice, budget, modalities)
        except Exception as err:  # never leave the client waiting for response.done
            log.exception("response failed", extra={"session": self.session_id})
            await self.send_error(f"the response failed: {err}", "server_error")
        finally:
            self._response = None

    async def _run_response(self, voice: str | None, budget: int, modalities: list[str]) -> None:
        cancel = self._cancel
        timing = TurnTiming()
        asked_at: dict[str, int] = {}  # the sequence length when the request reached the worker
        turn, self._pending_timing = self._pending_timing, {}
        stopped_at = self._speech_stopped_at
        stream = ResponseStream(self.send, conversation_id=self.session_id, voice=voice,
                                budget=budget, previous_item=self._last_item)  # fmt: skip
        self._last_item = stream.item_id
        self._answer_item = stream.item_id
        self._audio_sent, self._first_sent = 0.0, None
        out = StreamResampler(MODEL_RATE, WIRE_RATE)
        guard = make_output_guard(self.settings.voice_guard)
        options = {
            "voice": voice, "modalities": ("text", "audio") if voice else ("text",),
            "max_new_tokens": budget, "cancel": cancel,
            "sampling": SamplingConfig(self.settings.temperature),
            "audio_chunk_frames": self.settings.audio_chunk_frames,
        }  # fmt: skip

        def work() -> Iterator[Any]:
            timing.start = time.perf_counter()
            asked_at["tokens"] = len(self.session.tokens)
            user_text, self._user_text = self._user_text, ""  # each turn is moderated once
            spoken, self._user_audio = self._user_audio, []
            heard = [np.concatenate(spoken)] if spoken else []  # the turn's chunks as one clip
            yield from guarded_respond(self.session, guard, timing, user_text=user_text,
                                       user_audio=heard, **options)  # fmt: skip

        await stream.open()
        blocked: str | None = None
        first_sent_at: float | None = None
        async for event in iterate_in_thread(work, self.worker):
            if isinstance(event, Blocked):
                blocked = event.reason
                log.warning(
                    "output guard stopped the answer",
                    extra={"session": self.session_id, "reason": blocked},
                )
            elif isinstance(event, TextDelta):
                await stream.text(event.text, spoken=event.spoken)
            elif isinstance(event, AudioDelta) and voice:
                if cancel.is_set():
                    continue  # cancelled: the rest is not sent
                wire = out.push(event.samples)
                if wire.size == 0:
                    continue
                await stream.audio(base64.b64encode(float_to_pcm16(wire)).decode())
                if self._first_sent is None:
                    self._first_sent = first_sent_at = time.perf_counter()
                self._audio_sent += wire.size / WIRE_RATE
            # an ImageOutput is dropped: the Realtime API has no image output
        session = self.session
        if blocked:
            status = "incomplete"
            details: dict[str, Any] | None = {
                "type": "incomplete", "reason": "content_filter",
                "error": {"type": "content_filter", "code": "output_guard", "message": blocked},
            }  # fmt: skip
        elif cancel.is_set() or session.stop_reason == "cancelled":
            status = "cancelled"
            details = {"type": "cancelled", "reason": self._cancel_reason}
        elif session.stop_reason in ("max_new_tokens", "max_seq_len"):
            status, details = "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}
        else:
            status, details = "completed", {"type": "completed"}
        # A refused request never reaches the model: its answer starts before this response.
        start, total = session.answer_start, len(session.tokens)
        asked = asked_at.get("tokens", total)
        read, written = asked, 0
        if start is not None and start >= asked:
            read, written = start, total - start
        usage = {"total_tokens": total, "input_tokens": read, "output_tokens": written}
        await stream.close(status, details, usage)
        entry = {
            "session": self.session_id, "response": stream.response_id, "status": status,
            "end_user_audio_s": turn.get("end_user_audio"),
            "first_audio_compute_s": timing.first_audio,
            "compute_s": timing.compute_seconds, "audio_s": timing.audio_seconds,
            "stopped_to_first_sent_s": (first_sent_at - stopped_at
                                        if first_sent_at and stopped_at else None),
        }  # fmt: skip
        self.state.record_turn(entry)
        log.info("response", extra={k: (round(v, 4) if isinstance(v, float) else v)
                                    for k, v in entry.items()})  # fmt: skip
