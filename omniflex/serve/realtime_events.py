"""The Realtime client events the server serves, as pydantic models: every event is validated
before a handler reads it, so a field of the wrong type or size is the client's ``error``
event, never an exception inside the connection.

The shapes follow the ``openai`` package's client events (``openai.types.realtime``), narrowed to
what is served: strict types (``5.0`` is not an integer, ``true`` is not a number, ``Infinity``
and ``NaN`` are refused), bounds where the server has them, and unknown fields allowed and
ignored, as OpenAI's server ignores fields it does not use. What a value *means* (a voice name,
an audio format, the message content) is checked by the connection, which answers with a
specific error code (``invalid_voice``, ``unsupported_audio_format``, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omniflex.serve.errors import validation_message

__all__ = ["CLIENT_EVENTS", "EventError", "validate_client_event"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


PositiveTokens = Annotated[int, Field(ge=1)] | Literal["inf"]


class AudioFormat(_Model):
    type: str = "audio/pcm"
    rate: int | None = None


class TurnDetection(_Model):
    type: Literal["server_vad", "semantic_vad"]
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    prefix_padding_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None
    silence_duration_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: Annotated[int, Field(ge=0)] | None = None
    eagerness: str | None = None


class AudioInput(_Model):
    format: AudioFormat | None = None
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    turn_detection: TurnDetection | None = None


class VoiceId(_Model):
    id: str


class AudioOutput(_Model):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: Annotated[float, Field(gt=0.0, le=4.0)] | None = None


class AudioConfig(_Model):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class SessionConfig(_Model):
    type: Literal["realtime"] = "realtime"
    model: str | None = None
    instructions: str | None = None
    max_output_tokens: PositiveTokens | None = None
    output_modalities: Annotated[list[Literal["text", "audio"]], Field(min_length=1)] | None = None
    audio: AudioConfig | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None


class ResponseAudio(_Model):
    output: AudioOutput | None = None


class ResponseParams(_Model):
    instructions: str | None = None
    max_output_tokens: PositiveTokens | None = None
    output_modalities: Annotated[list[Literal["text", "audio"]], Field(min_length=1)] | None = None
    audio: ResponseAudio | None = None
    conversation: str | None = None
    metadata: dict[str, Any] | None = None


class ContentPart(_Model):
    type: str
    text: str | None = None
    audio: str | None = None
    image_url: str | None = None
    transcript: str | None = None


class MessageItem(_Model):
    type: Literal["message"] = "message"
    id: Annotated[str, Field(max_length=64)] | None = None
    role: Literal["user", "system", "assistant"]
    content: Annotated[list[ContentPart], Field(min_length=1, max_length=64)]


class _Event(_Model):
    event_id: Annotated[str, Field(max_length=64)] | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: SessionConfig


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    item: MessageItem
    previous_item_id: str | None = None


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: Annotated[str, Field(max_length=64)]
    content_index: Annotated[int, Field(ge=0)] = 0
    audio_end_ms: Annotated[int, Field(ge=0)]


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]


#: Every client event the server serves, by its ``type``.
CLIENT_EVENTS: dict[str, type[_Event]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (
        SessionUpdate, InputAudioBufferAppend, InputAudioBufferCommit, InputAudioBufferClear,
        ConversationItemCreate, ConversationItemTruncate, ResponseCreate, ResponseCancel,
        OutputAudioBufferClear,
    )
}  # fmt: skip


class EventError(ValueError):
    """A client event the server cannot serve: answered with an ``error`` event carrying
    ``code`` (``invalid_value`` for a field that does not fit its model, or a specific one such
    as ``invalid_voice``); ``param`` is the dotted path of the bad field
    (``session.audio.input.turn_detection.threshold``). The connection stays open."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def validate_client_event(event: dict[str, Any]) -> None:
    """Check ``event`` (a parsed JSON object with a string ``type`` the server serves) against
    its model; raise ``EventError`` naming the first bad field."""
    try:
        CLIENT_EVENTS[event["type"]].model_validate(event)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        message, param = validation_message(list(errors))
        given = errors[0].get("input")
        shown = type(given).__name__ if isinstance(given, dict | list) else repr(given)[:80]
        raise EventError(f"{event['type']}: {message} (got {shown})", param) from None
