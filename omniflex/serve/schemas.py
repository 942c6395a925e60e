"""Pydantic models of the REST requests, in the OpenAI API's shapes, so that FastAPI validates
them and its OpenAPI schema (``/openapi.json``) describes the real API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AudioOutputParams",
    "ChatCompletionRequest",
    "ChatMessage",
    "ContentPart",
    "ImageGenerationRequest",
    "ImageURL",
    "ImageURLPart",
    "InputAudio",
    "InputAudioPart",
    "SpeechRequest",
    "TextPart",
]

MAX_TEXT = 20_000
MAX_TOKENS = 4096


class _Lenient(BaseModel):
    # Clients send fields this server does not use (user, metadata, ...): accept and ignore.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class ImageURL(_Lenient):
    url: str = Field(description="a data: URL (data:image/png;base64,...); http URLs are refused")
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Lenient):
    data: str = Field(description="base64 audio file")
    format: Literal["wav", "flac"] = "wav"


class InputAudioPart(_Lenient):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImageURLPart | InputAudioPart, Field(discriminator="type")]


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    # a plain string is capped like a text part: it is refused before it is tokenized
    content: Annotated[str, Field(max_length=MAX_TEXT)] | list[ContentPart] | None = None
    name: str | None = None


class AudioOutputParams(_Lenient):
    voice: str = Field(
        description="a preset voice (aria, bram, cleo, dax) or an OpenAI voice name, which "
        "speaks as one of them (alloy, ash, ballad, cedar, coral, echo, fable, marin, nova, "
        "onyx, sage, shimmer, verse)"
    )
    format: Literal["wav", "pcm16"] = "wav"


class ChatCompletionRequest(_Lenient):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    modalities: list[Literal["text", "audio"]] | None = Field(default=None, min_length=1)
    audio: AudioOutputParams | None = None
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] | None = None


class SpeechRequest(_Lenient):
    model: str | None = None
    input: str = Field(min_length=1, max_length=4096)
    voice: str = Field(description="a preset voice: aria, bram, cleo or dax")
    response_format: Literal["wav", "pcm"] = "wav"
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    instructions: str | None = None


class ImageGenerationRequest(_Lenient):
    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=4)
    size: Literal["64x64", "auto"] | None = None
    response_format: Literal["b64_json"] | None = None
