"""One Realtime response as the server events that stream it, in the order OpenAI's server sends
them: ``response.created``, the assistant item added, a content part per kind as it first
appears (audio with its transcript, or text), the deltas, then each part's ``done`` events, the
item's and ``response.done`` with the status and token usage.

``ResponseStream`` only shapes and sends events; the connection decides what the answer is (the
model's events through the output guard) and how it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from omniflex.serve.realtime_config import PCM_FORMAT

__all__ = ["ResponseStream", "new_id"]

Send = Callable[[dict[str, Any]], Awaitable[None]]


def new_id(prefix: str) -> str:
    """An id as OpenAI's server writes them: ``item_`` + 20 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ResponseStream:
    """The events of one response. ``voice`` is the preset it speaks in, or ``None`` for text."""

    def __init__(self, send: Send, *, conversation_id: str, voice: str | None, budget: int,
                 previous_item: str | None) -> None:  # fmt: skip
        self._send = send
        self.response_id, self.item_id = new_id("resp"), new_id("item")
        self.previous_item = previous_item
        self.voice = voice
        self.response: dict[str, Any] = {
            "id": self.response_id, "object": "realtime.response", "status": "in_progress",
            "status_details": None, "output": [], "conversation_id": conversation_id,
            "output_modalities": ["audio"] if voice else ["text"],
            "audio": {"output": {"format": dict(PCM_FORMAT), "voice": voice}} if voice else None,
            "max_output_tokens": budget, "usage": None, "metadata": None,
        }  # fmt: skip
        self.item: dict[str, Any] = {
            "id": self.item_id, "object": "realtime.item", "type": "message",
            "role": "assistant", "status": "in_progress", "content": [],
        }  # fmt: skip
        self._ids = {"response_id": self.response_id, "item_id": self.item_id, "output_index": 0}
        self.parts: list[dict[str, Any]] = []  # in order: {"type", "transcript" or "text"}
        self._index: dict[str, int] = {}

    async def open(self) -> None:
        await self._send({"type": "response.created", "response": dict(self.response)})
        await self._send({"type": "response.output_item.added", "response_id": self.response_id,
                          "output_index": 0, "item": dict(self.item)})  # fmt: skip
        await self._send({"type": "conversation.item.added", "item": dict(self.item),
                          "previous_item_id": self.previous_item})  # fmt: skip
        if self.voice:
            await self._part("audio")

    async def _part(self, kind: str) -> int:
        """The index of the ``kind`` part (``audio`` or ``text``), added on first use."""
        if kind not in self._index:
            self._index[kind] = len(self.parts)
            self.parts.append({"type": "audio", "transcript": ""} if kind == "audio"
                              else {"type": "text", "text": ""})  # fmt: skip
            await self._send({"type": "response.content_part.added", **self._ids,
                              "content_index": self._index[kind],
                              "part": dict(self.parts[-1])})  # fmt: skip
        return self._index[kind]

    async def text(self, delta: str, *, spoken: bool) -> None:
        """Words of the answer: the spoken audio's transcript, or written text."""
        if spoken and self.voice:
            k = await self._part("audio")
            self.parts[k]["transcript"] += delta
            await self._send({"type": "response.output_audio_transcript.delta", **self._ids,
                              "content_index": k, "delta": delta})  # fmt: skip
        else:
            k = await self._part("text")
            self.parts[k]["text"] += delta
            await self._send({"type": "response.output_text.delta", **self._ids,
                              "content_index": k, "delta": delta})  # fmt: skip

    async def audio(self, pcm16_base64: str) -> None:
        k = await self._part("audio")
        await self._send({"type": "response.output_audio.delta", **self._ids,
                          "content_index": k, "delta": pcm16_base64})  # fmt: skip

    async def close(self, status: str, details: dict[str, Any] | None,
                    usage: dict[str, int]) -> dict[str, Any]:  # fmt: skip
        """Send every ``done`` event and ``response.done``; return the final response."""
        for k, p in enumerate(self.parts):
            at = {**self._ids, "content_index": k}
            if p["type"] == "audio":
                await self._send({"type": "response.output_audio.done", **at})
                await self._send({"type": "response.output_audio_transcript.done", **at,
                                  "transcript": p["transcript"]})  # fmt: skip
            else:
                await self._send({"type": "response.output_text.done", **at, "text": p["text"]})
            await self._send({"type": "response.content_part.done", **at, "part": dict(p)})
        self.item["status"] = "completed" if status == "completed" else "incomplete"
        self.item["content"] = [
            {"type": "output_audio", "transcript": p["transcript"]} if p["type"] == "audio"
            else {"type": "output_text", "text": p["text"]} for p in self.parts
        ]  # fmt: skip
        await self._send({"type": "response.output_item.done", "response_id": self.response_id,
                          "output_index": 0, "item": dict(self.item)})  # fmt: skip
        await self._send({"type": "conversation.item.done", "item": dict(self.item),
                          "previous_item_id": self.previous_item})  # fmt: skip
        self.response.update(status=status, status_details=details, output=[self.item],
                             usage=usage)  # fmt: skip
        await self._send({"type": "response.done", "response": self.response})
        return self.response
