"""OpenAI chat messages -> omniflex conversations (``omniflex.model.chat``'s corpus format).

Text parts stay text; ``image_url`` data URLs become 64x64 PNG files; ``input_audio`` base64
WAV/FLAC becomes a 16 kHz WAV file. Every decoding failure is an ``ApiError`` (400) naming the
message and part that failed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from omniflex.media.audio import read_audio, to_wav_bytes
from omniflex.media.errors import MediaError
from omniflex.media.image import read_image, to_png_bytes
from omniflex.serve.errors import ApiError
from omniflex.serve.schemas import ChatMessage, ImageURLPart, InputAudioPart, TextPart

__all__ = [
    "IMAGE_SIZE",
    "decode_audio_file",
    "decode_b64",
    "decode_image_url",
    "last_user_audio",
    "last_user_text",
    "request_texts",
    "to_conversation",
]

IMAGE_SIZE = 64
_ROLE = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def decode_b64(data: str, *, param: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, f"'{param}' is not valid base64", param=param, code="invalid_base64"
        ) from None


def decode_image_url(url: str, *, param: str) -> bytes:
    """A ``data:image/...;base64,...`` URL -> 64x64 PNG bytes (the model's image size)."""
    if not url.startswith("data:"):
        raise ApiError(
            400,
            f"'{param}' must be a data: URL (data:image/png;base64,...); this server does not "
            "fetch remote images",
            param=param, code="invalid_image_url",
        )  # fmt: skip
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        raise ApiError(400, f"'{param}' must be a base64 data: URL", param=param,
                       code="invalid_image_url")  # fmt: skip
    raw = decode_b64(payload, param=param)
    try:
        pixels = read_image(raw, size=IMAGE_SIZE, name=param)
    except MediaError as err:
        raise ApiError(400, str(err), param=param, code="invalid_image") from None
    return to_png_bytes(pixels)


def decode_audio_file(raw: bytes, *, param: str, max_seconds: float) -> bytes:
    """WAV/FLAC bytes -> 16 kHz mono WAV bytes (checked: decodable, finite, not too long)."""
    try:
        samples = read_audio(raw, name=param, max_seconds=max_seconds)
    except MediaError as err:
        raise ApiError(400, str(err), param=param, code="invalid_audio") from None
    return to_wav_bytes(samples)


def to_conversation(
    messages: list[ChatMessage], *, max_audio_seconds: float, max_images: int = 8
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(conversation, files) for ``Session.add_message``; more than ``max_images`` pictures
    are refused before any is decoded."""
    images = sum(isinstance(part, ImageURLPart) for message in messages
                 if isinstance(message.content, list) for part in message.content)  # fmt: skip
    if images > max_images:
        raise ApiError(
            400, f"the request holds {images} images; at most {max_images} are served per "
            "request (the model reads each as 64 positions of its context)",
            param="messages", code="too_many_images",
        )  # fmt: skip
    out: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for m, message in enumerate(messages):
        content = message.content
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        for p, part in enumerate(content if isinstance(content, list) else []):
            param = f"messages.{m}.content.{p}"
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImageURLPart):
                name = f"m{m}_p{p}.png"
                files[name] = decode_image_url(part.image_url.url, param=param + ".image_url.url")
                parts.append({"type": "image", "file": name})
            elif isinstance(part, InputAudioPart):
                name = f"m{m}_p{p}.wav"
                raw = decode_b64(part.input_audio.data, param=param + ".input_audio.data")
                files[name] = decode_audio_file(
                    raw, param=param + ".input_audio.data", max_seconds=max_audio_seconds
                )
                parts.append({"type": "audio", "file": name})
        if message.role == "assistant":
            # Earlier spoken answers come back as text: the model reads its own words.
            parts = [x for x in parts if x["type"] == "text"]
        if not parts:
            continue
        out.append({"role": _ROLE[message.role], "content": parts})
    if not out or out[-1]["role"] != "user":
        raise ApiError(
            400, "the last message must be a user message with some content", param="messages",
            code="invalid_messages",
        )  # fmt: skip
    return {"messages": out}, files


def last_user_audio(conversation: dict[str, Any], files: dict[str, bytes]) -> list[Any]:
    """The speech of the conversation's last user message, each clip 16 kHz mono float32 (what
    input moderation hears)."""
    for message in reversed(conversation.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        names = [p.get("file") for p in content if isinstance(p, dict) and p.get("type") == "audio"
                 ] if isinstance(content, list) else []  # fmt: skip
        return [read_audio(files[n], name=n) for n in names if n in files]
    return []


def request_texts(conversation: dict[str, Any]) -> list[str]:
    """The typed text of every system and user message, in order (what input moderation reads:
    a request cannot hide in the system prompt or in made-up earlier turns)."""
    out = []
    for message in conversation.get("messages", []):
        if message.get("role") in ("system", "user"):
            text = _typed(message.get("content"))
            if text.strip():
                out.append(text)
    return out


def _typed(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(
        str(p.get("text", "")) for p in content or [] if isinstance(p, dict)
        and p.get("type") == "text"
    )  # fmt: skip


def last_user_text(conversation: dict[str, Any]) -> str:
    """The typed text of the conversation's last user message (what input moderation reads)."""
    for message in reversed(conversation.get("messages", [])):
        if message.get("role") == "user":
            return _typed(message.get("content"))
    return ""
