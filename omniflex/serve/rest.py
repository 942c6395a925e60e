"""The OpenAI REST routes: models, chat completions (text, image and audio in; text and audio
out; streamed as server-sent events), speech, transcriptions, image generation.

Each request runs in a fresh ``Session`` in a worker thread (never on the event loop), holds one
slot of the server's REST ``Capacity`` while it runs (none free: HTTP 429 at once), and passes its
output through the ``OutputGuard``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from omniflex.data.templates import TEMPLATES
from omniflex.media.audio import read_audio
from omniflex.media.image import to_png_bytes
from omniflex.model.assistant import AudioDelta, ImageOutput, Session, TextDelta
from omniflex.model.sampling import SamplingConfig
from omniflex.safety.voices import resolve_voice
from omniflex.serve.audio import WIRE_RATE, float_to_pcm16, resample, to_wav_bytes
from omniflex.serve.auth import check_api_key
from omniflex.serve.errors import ApiError
from omniflex.serve.guard import make_output_guard
from omniflex.serve.messages import (
    decode_audio_file,
    last_user_audio,
    request_texts,
    to_conversation,
)
from omniflex.serve.runner import Blocked, guarded_respond, iterate_in_thread
from omniflex.serve.schemas import ChatCompletionRequest, ImageGenerationRequest, SpeechRequest
from omniflex.serve.state import ServerState

__all__ = ["ASR_PROMPT", "TTS_PROMPT", "router"]

log = logging.getLogger("omniflex.serve")

# The corpus's own wording (omniflex.data.templates), so the model sees what it was trained on.
ASR_PROMPT = TEMPLATES["asr"][0]  # "Transcribe this recording."
TTS_PROMPT = TEMPLATES["tts"][0]  # "Say this in the {voice} voice: {text}"
AUDIO_EXPIRES_S = 3600


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _auth(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    check_api_key(_state(request).settings, authorization)


router = APIRouter(dependencies=[Depends(_auth)])
T = TypeVar("T")


def _acquire(state: ServerState) -> None:
    if not state.requests.try_acquire():
        raise ApiError(
            429,
            f"the server is at capacity ({state.requests.limit} concurrent requests); retry "
            "shortly (see Retry-After)",
            code="server_at_capacity",
        )


async def _decode_in_slot(state: ServerState, decode: Callable[..., T], *args: Any,
                          **kwargs: Any) -> T:  # fmt: skip
    """Take a request slot, then run ``decode`` (the request's media) on a worker thread: media
    is decoded only inside a slot, so decoding work is bounded like generation. The slot is
    given back if decoding fails; otherwise the caller releases it when the request ends."""
    _acquire(state)
    try:
        return await run_in_threadpool(decode, *args, **kwargs)
    except BaseException:
        state.requests.release()
        raise


def _voice(state: ServerState, voice: str, param: str) -> str:
    """The preset that speaks for ``voice`` (a preset or one of OpenAI's voice names)."""
    try:
        return resolve_voice(voice, tuple(state.assistant.voices))
    except ValueError as err:
        raise ApiError(400, str(err), param=param, code="invalid_voice") from None


def _sampling(temperature: float | None, top_p: float | None, seed: int | None,
              default: float) -> SamplingConfig:  # fmt: skip
    t = default if temperature is None else temperature
    return SamplingConfig(temperature=t, top_p=top_p, seed=seed)


def _session(state: ServerState, conversation: dict[str, Any], files: dict[str, bytes]) -> Session:
    session = state.assistant.session()
    try:
        for m in range(len(conversation["messages"])):
            session.add_message(conversation, files, m)
    except ValueError as err:  # too long for the context, or content the template refuses
        raise ApiError(400, f"cannot read the conversation: {err}", param="messages",
                       code="invalid_messages") from None  # fmt: skip
    return session


def _wire_audio(samples: np.ndarray, rate: int) -> np.ndarray:
    return resample(samples, rate, WIRE_RATE) if samples.size else samples


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": 0, "owned_by": "omniflex"}],
    }


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    if model_id != state.model_name:
        raise ApiError(404, f"no model {model_id!r}; this server has {state.model_name!r}",
                       param="model", code="model_not_found")  # fmt: skip
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "omniflex"}


# ---------------------------------------------------------------- chat completions
def _chat_options(state: ServerState, body: ChatCompletionRequest) -> dict[str, Any]:
    modalities = body.modalities or ["text"]
    voice = None
    if "audio" in modalities:
        if body.audio is None:
            raise ApiError(400, "modalities include 'audio': give audio={voice, format}",
                           param="audio", code="missing_audio_params")  # fmt: skip
        voice = _voice(state, body.audio.voice, "audio.voice")
    cap = body.max_completion_tokens or body.max_tokens or state.settings.max_new_tokens
    return {
        "voice": voice,
        "modalities": ("text", "audio") if voice else ("text",),
        "max_new_tokens": min(cap, state.settings.max_new_tokens),
        "sampling": _sampling(body.temperature, body.top_p, body.seed, state.settings.temperature),
        "audio_chunk_frames": state.settings.audio_chunk_frames,
    }


def _finish_reason(session: Session, blocked: bool) -> str:
    if blocked:
        return "content_filter"
    return "length" if session.stop_reason in ("max_new_tokens", "max_seq_len") else "stop"


def _usage(session: Session, prompt_tokens: int) -> dict[str, int]:
    done = session.generated  # the model's tokens (0 for a refused request)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": done,
            "total_tokens": prompt_tokens + done}  # fmt: skip


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    state = _state(request)
    options = _chat_options(state, body)
    conversation, files = await _decode_in_slot(
        state, to_conversation, body.messages, max_audio_seconds=state.settings.max_audio_seconds,
        max_images=state.settings.max_images,
    )  # fmt: skip
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if body.stream:
        return StreamingResponse(
            _chat_stream(state, cid, conversation, files, options, body.audio is not None),
            media_type="text/event-stream",
        )
    try:
        result = await run_in_threadpool(_chat_blocking, state, conversation, files, options)
    finally:
        state.requests.release()
    text, transcript, audio, session, prompt_tokens, blocked = result
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if options["voice"] is not None:
        fmt = body.audio.format if body.audio else "wav"
        wire = _wire_audio(audio, state.assistant.sample_rate)
        data = to_wav_bytes(wire, WIRE_RATE) if fmt == "wav" else float_to_pcm16(wire)
        message["audio"] = {
            "id": f"audio_{uuid.uuid4().hex[:24]}",
            "data": base64.b64encode(data).decode(),
            "transcript": transcript,
            "expires_at": int(time.time()) + AUDIO_EXPIRES_S,
        }
    elif transcript and not text:
        message["content"] = transcript
    if blocked:
        message["refusal"] = blocked
    return JSONResponse({
        "id": cid, "object": "chat.completion", "created": int(time.time()),
        "model": state.model_name,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish_reason(session, bool(blocked))}],
        "usage": _usage(session, prompt_tokens),
    })  # fmt: skip


def _chat_blocking(
    state: ServerState, conversation: dict[str, Any], files: dict[str, bytes],
    options: dict[str, Any],
) -> tuple[str, str, np.ndarray, Session, int, str | None]:  # fmt: skip
    session = _session(state, conversation, files)
    prompt_tokens = len(session.tokens)
    text, transcript, chunks, blocked = "", "", [], None
    guard = make_output_guard(state.settings.voice_guard)
    heard = last_user_audio(conversation, files)
    for event in guarded_respond(
        session, guard, user_text=request_texts(conversation), user_audio=heard, **options
    ):
        if isinstance(event, Blocked):
            blocked = event.reason
        elif isinstance(event, TextDelta):
            if event.spoken:
                transcript += event.text
            else:
                text += event.text
        elif isinstance(event, AudioDelta):
            chunks.append(event.samples)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return text, transcript, audio, session, prompt_tokens, blocked


async def _chat_stream(
    state: ServerState, cid: str, conversation: dict[str, Any], files: dict[str, bytes],
    options: dict[str, Any], audio_out: bool,
) -> AsyncIterator[bytes]:  # fmt: skip
    cancel = threading.Event()
    created = int(time.time())
    audio_id = f"audio_{uuid.uuid4().hex[:24]}"
    holder: dict[str, Any] = {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created,
                "model": state.model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}  # fmt: skip
        return f"data: {json.dumps(body)}\n\n".encode()

    def work() -> Iterator[Any]:
        session = _session(state, conversation, files)
        holder["session"], holder["prompt"] = session, len(session.tokens)
        guard = make_output_guard(state.settings.voice_guard)
        yield from guarded_respond(
            session, guard, cancel=cancel, user_text=request_texts(conversation),
            user_audio=last_user_audio(conversation, files), **options,
        )  # fmt: skip

    blocked = None
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in iterate_in_thread(work):
            if isinstance(event, Blocked):
                blocked = event.reason
            elif isinstance(event, TextDelta):
                if event.spoken and audio_out:
                    yield chunk({"audio": {"id": audio_id, "transcript": event.text}})
                else:
                    yield chunk({"content": event.text})
            elif isinstance(event, AudioDelta):
                wire = _wire_audio(event.samples, event.sample_rate)
                data = base64.b64encode(float_to_pcm16(wire)).decode()
                yield chunk({"audio": {"id": audio_id, "data": data}})
        session = holder["session"]
        finish = _finish_reason(session, blocked is not None)
        yield chunk({"refusal": blocked} if blocked else {}, finish)
        yield b"data: [DONE]\n\n"
    except ApiError as err:
        yield f"data: {json.dumps(err.body())}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        cancel.set()  # a client that left stops the generation at the next token
        state.requests.release()


# ---------------------------------------------------------------- audio
@router.post("/v1/audio/speech", response_model=None)
async def speech(body: SpeechRequest, request: Request) -> Response:
    state = _state(request)
    voice = _voice(state, body.voice, "voice")
    conversation = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": TTS_PROMPT.format(voice=voice, text=body.input)}]}]}  # fmt: skip
    options = {
        "voice": voice, "modalities": ("audio",),
        "max_new_tokens": state.settings.max_new_tokens,
        "sampling": SamplingConfig(state.settings.temperature),
        "audio_chunk_frames": 8,
    }  # fmt: skip
    _acquire(state)
    try:
        _, _, audio, _, _, blocked = await run_in_threadpool(
            _chat_blocking, state, conversation, {}, options
        )
    finally:
        state.requests.release()
    if blocked:
        raise ApiError(400, f"the speech was stopped by the output guard: {blocked}",
                       code="content_filter")  # fmt: skip
    wire = _wire_audio(audio, state.assistant.sample_rate)
    if body.response_format == "pcm":
        return Response(float_to_pcm16(wire), media_type="audio/pcm")
    return Response(to_wav_bytes(wire, WIRE_RATE), media_type="audio/wav")


@router.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File(description="a WAV or FLAC file")],
    model: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float | None, Form(ge=0.0, le=2.0)] = None,
) -> Response:
    state = _state(request)
    if response_format not in ("json", "text", "verbose_json"):
        raise ApiError(400, f"response_format {response_format!r}: use json, text or verbose_json",
                       param="response_format", code="invalid_value")  # fmt: skip
    raw = await file.read()
    wav = await _decode_in_slot(
        state, decode_audio_file, raw, param="file", max_seconds=state.settings.max_audio_seconds
    )
    conversation = {"messages": [{"role": "user", "content": [
        {"type": "audio", "file": "user.wav"}, {"type": "text", "text": ASR_PROMPT}]}]}  # fmt: skip
    options = {
        "voice": None, "modalities": ("text",),
        "max_new_tokens": min(200, state.settings.max_new_tokens),
        "sampling": _sampling(temperature, None, None, state.settings.temperature),
    }  # fmt: skip
    try:
        text, _, _, _, _, _ = await run_in_threadpool(
            _chat_blocking, state, conversation, {"user.wav": wav}, options
        )
    finally:
        state.requests.release()
    text = text.strip()
    if response_format == "text":
        return PlainTextResponse(text)
    out: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        seconds = read_audio(wav).size / state.assistant.sample_rate
        out |= {"task": "transcribe", "language": language or "english", "duration": seconds}
    return JSONResponse(out)


# ---------------------------------------------------------------- images
@router.post("/v1/images/generations")
async def images(body: ImageGenerationRequest, request: Request) -> dict[str, Any]:
    state = _state(request)
    conversation = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": body.prompt}]}]}  # fmt: skip
    options = {
        "voice": None, "modalities": ("text", "image"),
        "max_new_tokens": state.settings.max_new_tokens,
        "sampling": SamplingConfig(state.settings.temperature),
    }  # fmt: skip
    _acquire(state)
    try:
        out = await run_in_threadpool(_images_blocking, state, conversation, options, body.n)
    finally:
        state.requests.release()
    return {"created": int(time.time()), "data": out}


def _images_blocking(
    state: ServerState, conversation: dict[str, Any], options: dict[str, Any], n: int
) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = []
    guard = make_output_guard(state.settings.voice_guard)
    for i in range(n):
        session = _session(state, conversation, {})
        text = ""
        for event in guarded_respond(
            session, guard, user_text=request_texts(conversation), **options
        ):
            if isinstance(event, Blocked):
                raise ApiError(400, f"the output guard stopped the answer: {event.reason}",
                               code="content_filter")  # fmt: skip
            if isinstance(event, TextDelta):
                text += event.text
            elif isinstance(event, ImageOutput):
                png = base64.b64encode(to_png_bytes(event.pixels)).decode()
                data.append({"b64_json": png, "revised_prompt": text.strip() or None})
        if len(data) < i + 1:
            log.info("the model answered without an image", extra={"text": text[:200]})
    return data
