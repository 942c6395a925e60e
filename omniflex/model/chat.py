"""The conversation format: a corpus conversation <-> one token stream, with a loss mask.

A conversation (``omniflex.data.tasks``: messages of role ``system``/``user``/``assistant``,
content parts of type ``text``, ``audio``, ``image`` and ``video``, media bytes named by
``file``) becomes one id sequence over ``VocabLayout``::

    <|bos|>
      <|user|>      parts … <|end_of_turn|>            loss 0
      <|assistant|> parts … <|end_of_turn|>            loss 1 (all but <|assistant|> itself)
      …
    <|eos|>                                            loss of the last turn (1 after assistant)

Parts, in the order the message lists them:

* text:   ``t t t`` — plain text ids, no markers (``TextTokenizer.encode`` never yields a
  special id, so typed markers cannot forge a turn);
* audio:  ``<|audio|> a a … <|/audio|>`` — codec codes, frame-major (``f0k0 f0k1 f1k0 …``);
* image:  ``<|image|> i i … <|/image|>`` — ``grid * grid`` VQ codes, row-major (input, or
  assistant output for text-to-image);
* video:  ``<|video|> <|t:0.0|> <|image|>…<|/image|> <|audio|>…<|/audio|> <|t:0.5|> … <|/video|>``
  (``VideoTokens.to_sequence``: frames at ``video_fps``, each followed by its audio);
* with ``input_features=True`` (models with input encoders), what the *user* gives is read as
  continuous features instead of codes: audio ``<|audio|> <|mel|> … <|/audio|>`` (one
  ``<|mel|>`` per 40 ms of log-mel frames), pictures ``<|image|> <|patch|>×64 <|/image|>``
  (8x8-pixel patches of the picture at 64x64), and video frames and soundtrack the same way
  inside the video markers. The rows go to ``EncodedConversation.features()``, in placeholder
  order; the assistant still writes codes;
* spoken answer (an assistant ``audio`` part with a preset ``voice`` and a ``transcript``; the
  corpus writes it as a text part followed by that audio part, and the text part is folded in)::

      <|voice:NAME|> <|text|> t t t t <|/text|> <|audio|> a a … <|/audio|>
                     <|text|> t t t t <|/text|> <|audio|> a a … <|/audio|> …

  text chunk ``i`` (``text_chunk_tokens`` ids) is followed by the audio frames that speak it,
  so the first audio can be decoded after one text chunk (text leads, as in GLM-4-Voice). The
  grammar is strict: every ``<|/text|>`` is followed by an ``<|audio|>`` span, which may be empty.

**Alignment without word timings.** The corpus has no word timings, so chunk ``i`` is given
the audio frames in proportion to the UTF-8 bytes its text spans: with ``c_i`` the bytes of
chunks ``0..i`` out of ``C``, chunk ``i`` ends at frame ``v0 + round((v1 - v0) * c_i / C)``, where
``[v0, v1)`` are the voiced frames (frame RMS within 35 dB of the loudest). Leading silence goes
to the first chunk, trailing silence to the last, so the split is not skewed by espeak-ng's
~0.3 s of trailing silence. Limitation: speaking rate is assumed even within the voiced region;
pauses between words and slow long words shift the cut by up to a few hundred ms, so an audio
chunk may start a word early or late. Word timings from a forced aligner (or the synthesiser's
word events) would make the cuts exact; ``audio_chunk_frames`` gives the other common choice, a
fixed number of frames per text chunk (GLM-4-Voice's 13:26), where text and speech drift apart.

``decode`` is the inverse at the code level: audio, image and video come back as the codes
``encode`` wrote (and, optionally, as decoded media). What the tokens do not hold is not
restored — conversation ids, input voices and transcripts, file names, augmentation metadata —
``canonical`` gives the form ``decode`` returns, for comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from omniflex.common.voices import check_preset_voice
from omniflex.media.audio import read_audio
from omniflex.media.errors import MediaError
from omniflex.media.image import read_image
from omniflex.media.video import read_video
from omniflex.model.encoders import PATCHES, InputFeatures, SpeechFeatures, image_patches
from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers import load_tokenizer, special
from omniflex.tokenizers.video import VideoTokenizer, VideoTokens

__all__ = [
    "ROLES",
    "ChatFormatError",
    "ChatTemplate",
    "DecodedConversation",
    "EncodedConversation",
    "Span",
    "SpanKind",
    "canonical",
]

SpanKind = Literal["text", "audio", "image", "video"]

ROLES: dict[str, str] = {
    "system": special.SYSTEM,
    "user": special.USER,
    "assistant": special.ASSISTANT,
}
_PART_TYPES = ("text", "audio", "image", "video")
_SILENCE_DB = -35.0  # frames quieter than this, relative to the loudest, count as silence
_FORMAT_VERSION = 1


class ChatFormatError(ValueError):
    """A conversation or a token sequence does not fit the format; the message says where."""


@dataclass(frozen=True)
class Span:
    """``ids[start:stop]`` (markers included) hold one modality run of message ``message``,
    content part ``part``. A spoken answer gives one span per text chunk and per audio chunk."""

    kind: SpanKind
    role: str
    message: int
    part: int
    start: int
    stop: int


@dataclass
class EncodedConversation:
    """One token stream: ``ids``, ``loss_mask`` (1 = train on predicting this id) and spans."""

    ids: list[int]
    loss_mask: list[int]
    spans: list[Span] = field(default_factory=list)
    mel: list[np.ndarray] = field(default_factory=list)  # (n, 320) float32 per audio run
    patches: list[np.ndarray] = field(default_factory=list)  # (64, 192) uint8 per picture

    def __len__(self) -> int:
        return len(self.ids)

    def features(self) -> InputFeatures | None:
        """The rows of the ``<|mel|>``/``<|patch|>`` placeholders, in order (None: none)."""
        if not self.mel and not self.patches:
            return None
        empty = InputFeatures.empty()
        mel = torch.from_numpy(np.concatenate(self.mel)).float() if self.mel else empty.mel
        patches = torch.from_numpy(np.concatenate(self.patches)) if self.patches else empty.patches
        return InputFeatures(mel, patches, InputFeatures.places(len(patches)))


@dataclass
class DecodedConversation:
    """What ``ChatTemplate.decode`` reads back.

    ``conversation``: ``{"messages": [...]}`` in the corpus format; each media part has a
    ``file`` naming its entry in ``codes`` and ``media``:

    * audio: codes ``(K, F)`` int64; media float32 ``(F * 640,)`` at 16 kHz;
    * image: codes ``(grid, grid)`` int64; media uint8 ``(S, S, 3)``;
    * video: codes a ``VideoTokens``; media ``(frames (N, S, S, 3) uint8, audio or None)``.

    ``media`` is empty when decoded with ``media=False``. ``truncated`` is set when a non-strict
    decode met an unfinished stream (no ``<|eos|>``, an open span or turn).
    """

    conversation: dict[str, Any]
    codes: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False


# ----------------------------------------------------------------------------- the plan
# A message becomes a list of items before it becomes tokens; ``canonical`` reads the same plan,
# so the form it returns is exactly what ``decode(encode(c))`` gives.
@dataclass
class _Item:
    kind: Literal["text", "audio", "image", "video", "speech"]
    part: int  # index of the content part the item came from
    text: str = ""  # text, or the transcript of speech
    voice: str = ""  # speech only
    file: str = ""  # media items


def _where(
    conversation: dict[str, Any], message: int | None = None, part: int | None = None
) -> str:
    where = f"conversation {conversation.get('id', '<no id>')!r}"
    if message is not None:
        role = _messages(conversation)[message].get("role", "?")
        where += f", message {message} ({role})"
    if part is not None:
        where += f", part {part}"
    return where


def _messages(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(conversation, dict):
        raise ChatFormatError(
            f"a conversation must be a dict with a 'messages' list, got {type(conversation)}"
        )
    messages = conversation.get("messages")
    if not isinstance(messages, list):
        raise ChatFormatError(
            f"conversation {conversation.get('id', '<no id>')!r} has no 'messages' list; "
            "expected {'messages': [{'role': ..., 'content': [...]}, ...]}"
        )
    return messages


def _content(conversation: dict[str, Any], m: int) -> list[dict[str, Any]]:
    message = _messages(conversation)[m]
    if not isinstance(message, dict):
        raise ChatFormatError(f"{_where(conversation)}: message {m} is not a dict")
    role = message.get("role")
    if role not in ROLES:
        raise ChatFormatError(
            f"{_where(conversation)}: message {m} has role {role!r}; expected one of "
            f"{', '.join(ROLES)}"
        )
    content = message.get("content")
    if isinstance(content, str):  # OpenAI-style shorthand for one text part
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ChatFormatError(
            f"{_where(conversation, m)}: 'content' must be a list of parts or a string, "
            f"got {type(content).__name__}"
        )
    return content


def _plan_message(conversation: dict[str, Any], m: int) -> list[_Item]:
    """Validate message ``m`` and turn its parts into items (speech folds its text part in)."""
    content = _content(conversation, m)
    role = _messages(conversation)[m]["role"]
    items: list[_Item] = []
    for p, part in enumerate(content):
        where = _where(conversation, m, p)
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_TYPES:
            raise ChatFormatError(
                f"{where}: unknown part type {kind!r}; expected one of {', '.join(_PART_TYPES)}"
            )
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ChatFormatError(f"{where}: text part needs a string 'text'")
            if text:
                items.append(_Item("text", p, text=text))
            continue
        file = part.get("file")
        if not isinstance(file, str) or not file:
            raise ChatFormatError(f"{where}: {kind} part needs a 'file' naming its media bytes")
        if kind == "audio" and role == "assistant":
            items.append(_speech_item(part, p, where, items))
        elif kind == "video" and role == "assistant":
            raise ChatFormatError(
                f"{where}: the assistant cannot write video (it writes text, speech and "
                "images); move the video to a user turn"
            )
        else:
            items.append(_Item(kind, p, file=file))
    return items


def _speech_item(part: dict[str, Any], p: int, where: str, items: list[_Item]) -> _Item:
    voice = part.get("voice")
    try:
        check_preset_voice(voice)
    except ValueError as err:
        raise ChatFormatError(f"{where}: assistant audio: {err}; set its 'voice'") from None
    transcript = part.get("transcript")
    if not isinstance(transcript, str) or not transcript:
        raise ChatFormatError(
            f"{where}: assistant audio needs a non-empty 'transcript' (the text it speaks, "
            "which leads the audio in the token stream)"
        )
    # The corpus writes a spoken answer as text + audio with the same words: one stream.
    if items and items[-1].kind == "text" and items[-1].text == transcript:
        items.pop()
    return _Item("speech", p, text=transcript, voice=voice, file=part["file"])


def canonical(conversation: dict[str, Any]) -> dict[str, Any]:
    """The form ``ChatTemplate.decode`` returns for ``conversation``, without ``file`` names.

    Keeps only what the tokens hold: roles; text (adjacent text parts joined, empty ones
    dropped); user audio, image and video as bare ``{"type": ...}``; a spoken answer as a text
    part with its transcript followed by ``{"type": "audio", "voice", "transcript"}``; and
    ``"interrupted": True`` on interrupted assistant turns.
    """
    messages = []
    for m, message in enumerate(_messages(conversation)):
        parts: list[dict[str, Any]] = []
        for item in _plan_message(conversation, m):
            # Plain text parts meet in one run of text ids; a spoken answer's text part is
            # always followed by its audio part, so nothing merges into it.
            if item.kind == "text" and parts and parts[-1]["type"] == "text":
                parts[-1]["text"] += item.text
            elif item.kind == "text":
                parts.append({"type": "text", "text": item.text})
            elif item.kind == "speech":
                parts.append({"type": "text", "text": item.text})
                parts.append({"type": "audio", "voice": item.voice, "transcript": item.text})
            else:
                parts.append({"type": item.kind})
        out: dict[str, Any] = {"role": message["role"], "content": parts}
        if message.get("interrupted") and message["role"] == "assistant":
            out["interrupted"] = True
        messages.append(out)
    return {"messages": messages}


# ----------------------------------------------------------------------------- the template
class ChatTemplate:
    """Conversation <-> token ids over ``layout``, with the text, image and audio tokenizers.

    Args:
        layout: the model vocabulary; must match the tokenizers' sizes.
        text: ``TextTokenizer``; image: ``ImageTokenizer``; audio: ``AudioCodec``.
        video_fps: frames per second sampled from videos (each becomes ``grid * grid`` ids).
        text_chunk_tokens: text ids per chunk of a spoken answer: the text that must be written
            before the first audio (smaller: earlier audio, more marker tokens).
        audio_chunk_frames: ``None`` (default) splits a spoken answer's audio in proportion to
            its text (see the module docstring); an integer gives each text chunk exactly this
            many frames instead, the last chunk taking the rest.
        input_features: read the user's audio, pictures and video as continuous features
            (``<|mel|>``/``<|patch|>`` placeholders; for models with input encoders) instead
            of codec and VQ codes.
    """

    def __init__(
        self,
        layout: VocabLayout,
        text: Any,
        image: Any,
        audio: Any,
        *,
        video_fps: float = 1.0,
        text_chunk_tokens: int = 4,
        audio_chunk_frames: int | None = None,
        input_features: bool = False,
    ) -> None:
        if not (isinstance(text_chunk_tokens, int) and text_chunk_tokens >= 1):
            raise ValueError(
                f"ChatTemplate.text_chunk_tokens must be an integer >= 1, got {text_chunk_tokens!r}"
            )
        if audio_chunk_frames is not None and not (
            isinstance(audio_chunk_frames, int) and audio_chunk_frames >= 1
        ):
            raise ValueError(
                "ChatTemplate.audio_chunk_frames must be None (proportional split) or an "
                f"integer >= 1, got {audio_chunk_frames!r}"
            )
        if not (isinstance(video_fps, (int, float)) and math.isfinite(video_fps) and video_fps > 0):
            raise ValueError(f"ChatTemplate.video_fps must be a positive number, got {video_fps!r}")
        expected = VocabLayout.from_tokenizers(text, image, audio)
        if expected != layout:
            raise ValueError(
                f"ChatTemplate: layout {layout.to_dict()} does not match the tokenizers "
                f"{expected.to_dict()}; build it with VocabLayout.from_tokenizers(text, image, "
                "audio)"
            )
        self.layout, self.text, self.image, self.audio = layout, text, image, audio
        self.video_fps = float(video_fps)
        self.text_chunk_tokens = text_chunk_tokens
        self.audio_chunk_frames = audio_chunk_frames
        self.input_features = bool(input_features)
        self.speech_features = SpeechFeatures().eval()
        self.video = VideoTokenizer(image, audio, fps=self.video_fps)
        self._slots = layout.slots()
        self._sid = {token: layout.special_id(token) for token in special.SPECIAL_TOKENS}
        self._voice_of = {self._sid[special.voice_token(v)]: v for v in special.PRESET_VOICE_NAMES}

    @classmethod
    def from_tokenizers(cls, text: Any, image: Any, audio: Any, **kwargs: Any) -> ChatTemplate:
        """The template over ``VocabLayout.from_tokenizers(text, image, audio)``."""
        return cls(VocabLayout.from_tokenizers(text, image, audio), text, image, audio, **kwargs)

    @classmethod
    def from_shipped(cls, **kwargs: Any) -> ChatTemplate:
        """The template over the tokenizers shipped in ``omniflex/assets/tokenizers``."""
        text, image, audio = (load_tokenizer(k) for k in ("text", "image", "audio"))
        return cls.from_tokenizers(text, image, audio, **kwargs)

    def config(self) -> dict[str, Any]:
        """JSON-able description of the format (stored beside token caches)."""
        return {
            "format_version": _FORMAT_VERSION,
            "layout": self.layout.to_dict(),
            "image_grid": int(self.image.grid),
            "video_fps": self.video_fps,
            "text_chunk_tokens": self.text_chunk_tokens,
            "audio_chunk_frames": self.audio_chunk_frames,
            "audio_frame_rate": float(self.audio.frame_rate),
            "input_features": self.input_features,
        }

    # ------------------------------------------------------------------ encode
    def encode(
        self, conversation: dict[str, Any], files: dict[str, bytes] | None = None
    ) -> EncodedConversation:
        """Conversation + its media bytes (``file`` name -> bytes) -> ids, loss mask, spans."""
        out, last = self._encode_turns(conversation, files)
        self._emit(out, [self._sid[special.EOS]], last)
        return out

    def _encode_turns(
        self, conversation: dict[str, Any], files: dict[str, bytes] | None
    ) -> tuple[EncodedConversation, int]:
        """``<|bos|>`` and every turn; with the last turn's loss flag (what ``<|eos|>`` takes)."""
        out = EncodedConversation([], [], [])
        self._emit(out, [self._sid[special.BOS]], 0)
        last = 0
        for m in range(len(_messages(conversation))):
            last = self._encode_turn(out, conversation, files or {}, m)
        return out, last

    def encode_prompt(
        self,
        conversation: dict[str, Any],
        files: dict[str, bytes] | None = None,
        *,
        voice: str | None = None,
    ) -> EncodedConversation:
        """What to generate the next assistant turn from: ``<|bos|> turns… <|assistant|>``,
        plus ``<|voice:NAME|>`` when ``voice`` asks for a spoken answer (preset voices only)."""
        out, _ = self._encode_turns(conversation, files)
        self._emit(out, [self._sid[special.ASSISTANT]], 0)
        if voice is not None:
            try:
                self._emit(out, [self._sid[special.voice_token(voice)]], 0)
            except ValueError as err:
                raise ChatFormatError(f"prompt for {_where(conversation)}: {err}") from None
        return out

    def prompt(
        self,
        conversation: dict[str, Any],
        files: dict[str, bytes] | None = None,
        *,
        voice: str | None = None,
    ) -> list[int]:
        """The ids of ``encode_prompt`` (a template without ``input_features`` only: the
        features would be lost)."""
        return self._ids_only(self.encode_prompt(conversation, files, voice=voice))

    def encode_message(
        self, conversation: dict[str, Any], files: dict[str, bytes] | None = None, m: int = -1
    ) -> EncodedConversation:
        """Message ``m`` alone (its role token … ``<|end_of_turn|>``), as ``encode`` writes
        it: for a running session that appends one turn at a time."""
        n = len(_messages(conversation))
        if not -n <= m < n:
            raise ChatFormatError(f"{_where(conversation)}: no message {m} in {n} messages")
        out = EncodedConversation([], [], [])
        self._encode_turn(out, conversation, files or {}, m % n)
        return out

    def message_ids(
        self, conversation: dict[str, Any], files: dict[str, bytes] | None = None, m: int = -1
    ) -> list[int]:
        """The ids of ``encode_message`` (a template without ``input_features`` only)."""
        return self._ids_only(self.encode_message(conversation, files, m))

    @staticmethod
    def _ids_only(encoded: EncodedConversation) -> list[int]:
        if encoded.features() is not None:
            raise ChatFormatError(
                "this conversation's media are read as features: use encode_prompt / "
                "encode_message and pass their features() along with the ids"
            )
        return encoded.ids

    def _emit(self, out: EncodedConversation, ids: list[int], loss: int) -> None:
        out.ids.extend(ids)
        out.loss_mask.extend([loss] * len(ids))

    def _encode_turn(
        self, out: EncodedConversation, conv: dict[str, Any], files: dict[str, bytes], m: int
    ) -> int:
        """Append message ``m``; returns its loss flag (1 for the assistant)."""
        items = _plan_message(conv, m)
        message = _messages(conv)[m]
        role = message["role"]
        loss = int(role == "assistant")
        self._emit(out, [self._sid[ROLES[role]]], 0)  # the role is given, never predicted
        for item in items:
            where = _where(conv, m, item.part)
            if item.kind == "speech":
                codes, wave = self._audio_codes_and_wave(files, item.file, where)
                self._encode_speech(out, item, codes, wave, role, m, loss)
                continue
            start = len(out.ids)
            if self.input_features and role != "assistant" and item.kind != "text":
                self._emit(out, self._feature_ids(out, item, files, where), loss)
            else:
                self._emit(out, self._part_ids(item, files, where), loss)
            out.spans.append(Span(item.kind, role, m, item.part, start, len(out.ids)))
        if message.get("interrupted") and role == "assistant":
            self._emit(out, [self._sid[special.INTERRUPT]], 0)  # the user's barge-in, not ours
            self._emit(out, [self._sid[special.END_OF_TURN]], 0)
            return 0
        self._emit(out, [self._sid[special.END_OF_TURN]], loss)
        return loss

    def _part_ids(self, item: _Item, files: dict[str, bytes], where: str) -> list[int]:
        """Ids of one text, audio, image or video item, markers included."""
        if item.kind == "text":
            return self.text.encode(item.text)
        if item.kind == "audio":
            codes = self._audio_codes_and_wave(files, item.file, where)[0]
            return self._wrap(special.AUDIO, self._audio_ids(codes))
        if item.kind == "image":
            codes = self._image_codes(files, item.file, where)
            return self._wrap(special.IMAGE, self.layout.image_ids(codes).tolist())
        return self._video_tokens(files, item.file, where).to_sequence(self._slots)

    def _feature_ids(
        self, out: EncodedConversation, item: _Item, files: dict[str, bytes], where: str
    ) -> list[int]:
        """Placeholder ids of one user audio, image or video item; its rows go to ``out``."""
        mel, patch = self._sid[special.MEL], self._sid[special.PATCH]
        if item.kind == "audio":
            rows = self._mel_rows(self._wave(files, item.file, where))
            out.mel.append(rows)
            return self._wrap(special.AUDIO, [mel] * len(rows))
        if item.kind == "image":
            out.patches.append(self._patch_rows(self._pixels(files, item.file, where)))
            return self._wrap(special.IMAGE, [patch] * PATCHES)
        try:
            frames, audio, _ = read_video(self._file(files, item.file, where), fps=self.video_fps)
        except MediaError as err:
            raise ChatFormatError(f"{where} {item.file!r}: {err}") from None
        if (len(frames) - 1) / self.video_fps > special.TIME_CAP_SECONDS:
            raise ChatFormatError(
                f"{where} {item.file!r}: video lasts over {special.TIME_CAP_SECONDS:.0f} s, the "
                "longest the time markers cover; cut it into clips first"
            )
        rows = self._mel_rows(audio) if audio is not None and len(audio) else None
        mel_config = self.speech_features.config
        per_second = mel_config.sample_rate / mel_config.samples_per_position  # 25 rows a second
        ids = [self._sid[special.VIDEO]]
        for i, frame in enumerate(frames):
            t = i / self.video_fps
            ids.append(self._sid[special.time_token(t)])
            out.patches.append(self._patch_rows(frame))
            ids.extend(self._wrap(special.IMAGE, [patch] * PATCHES))
            if rows is not None:
                lo = round(t * per_second)
                last = i == len(frames) - 1
                hi = len(rows) if last else round((i + 1) / self.video_fps * per_second)
                chunk = rows[lo:hi]
                if len(chunk):
                    out.mel.append(chunk)
                    ids.extend(self._wrap(special.AUDIO, [mel] * len(chunk)))
        ids.append(self._sid[special.VIDEO_END])
        return ids

    def _mel_rows(self, wave: np.ndarray) -> np.ndarray:
        """16 kHz samples -> ``(positions, 320)`` float32 log-mel rows."""
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).unsqueeze(0)
        return self.speech_features(x)[0].numpy()

    @staticmethod
    def _patch_rows(pixels: np.ndarray) -> np.ndarray:
        return image_patches(pixels)[0].numpy()  # (64, 192) uint8

    def _wave(self, files: dict[str, bytes], name: str, where: str) -> np.ndarray:
        try:
            return read_audio(self._file(files, name, where), name=f"{where} {name!r}")
        except MediaError as err:
            raise ChatFormatError(str(err)) from None

    def _pixels(self, files: dict[str, bytes], name: str, where: str) -> np.ndarray:
        try:
            return read_image(self._file(files, name, where), name=f"{where} {name!r}")
        except MediaError as err:
            raise ChatFormatError(str(err)) from None

    def _wrap(self, open_token: str, body: list[int]) -> list[int]:
        close = {special.AUDIO: special.AUDIO_END, special.IMAGE: special.IMAGE_END}
        close[special.TEXT] = special.TEXT_END
        return [self._sid[open_token], *body, self._sid[close[open_token]]]

    def _audio_ids(self, codes: torch.Tensor) -> list[int]:
        return self.layout.audio_ids(codes).tolist()  # (K, F) -> F * K ids, frame-major

    def _encode_speech(
        self,
        out: EncodedConversation,
        item: _Item,
        codes: torch.Tensor,  # (K, F)
        wave: np.ndarray,  # (T,) at 16 kHz
        role: str,
        m: int,
        loss: int,
    ) -> None:
        self._emit(out, [self._sid[special.voice_token(item.voice)]], loss)
        text_ids = self.text.encode(item.text)
        n = self.text_chunk_tokens
        chunks = [text_ids[i : i + n] for i in range(0, len(text_ids), n)]
        cuts = self._audio_cuts(chunks, codes.shape[-1], wave)
        for i, chunk in enumerate(chunks):
            start = len(out.ids)
            self._emit(out, self._wrap(special.TEXT, chunk), loss)
            out.spans.append(Span("text", role, m, item.part, start, len(out.ids)))
            start = len(out.ids)
            body = self._audio_ids(codes[:, cuts[i] : cuts[i + 1]])
            self._emit(out, self._wrap(special.AUDIO, body), loss)
            out.spans.append(Span("audio", role, m, item.part, start, len(out.ids)))

    def _audio_cuts(self, chunks: list[list[int]], frames: int, wave: np.ndarray) -> list[int]:
        """Frame boundaries ``[0, c_1, …, frames]``: audio chunk ``i`` is ``[c_i, c_{i+1})``."""
        n = len(chunks)
        if self.audio_chunk_frames is not None:
            inner = [min(i * self.audio_chunk_frames, frames) for i in range(1, n)]
            return [0, *inner, frames]
        sizes = [len(self.text.decode_bytes(chunk)) for chunk in chunks]
        total = sum(sizes)
        v0, v1 = _voiced_frames(wave, frames, self.audio.config.samples_per_frame)
        inner, done = [], 0
        for size in sizes[:-1]:
            done += size
            inner.append(v0 + round((v1 - v0) * done / total))
        return [0, *inner, frames]

    # ------------------------------------------------------------------ media
    def _file(self, files: dict[str, bytes], name: str, where: str) -> bytes:
        if name not in files:
            have = ", ".join(sorted(files)) or "none"
            raise ChatFormatError(
                f"{where}: media file {name!r} is missing (files given: {have}); pass the "
                "sample's files (ShardSample.files or Sample.media) to encode"
            )
        return files[name]

    def _audio_codes_and_wave(
        self, files: dict[str, bytes], name: str, where: str
    ) -> tuple[torch.Tensor, np.ndarray]:
        wave = self._wave(files, name, where)
        return self.audio.encode(wave)[0].cpu(), wave  # (K, F), (T,)

    def _image_codes(self, files: dict[str, bytes], name: str, where: str) -> torch.Tensor:
        pixels = self._pixels(files, name, where)
        return torch.as_tensor(self.image.encode(pixels)).cpu()  # (g, g)

    def _video_tokens(self, files: dict[str, bytes], name: str, where: str) -> VideoTokens:
        try:
            return self.video.encode(self._file(files, name, where))
        except MediaError as err:
            raise ChatFormatError(f"{where} {name!r}: {err}") from None

    # ------------------------------------------------------------------ decode
    def decode(
        self, ids: list[int] | torch.Tensor, *, media: bool = True, strict: bool = True
    ) -> DecodedConversation:
        """Ids -> conversation, codes and (``media=True``) decoded audio, images and video.

        ``strict`` requires a whole stream (``<|bos|>`` … ``<|eos|>``); with ``strict=False`` a
        prefix decodes too (a prompt, or an answer still being generated): an open turn is kept,
        an unfinished audio span keeps its whole frames, an unfinished image or video is
        dropped, and ``truncated`` is set.
        """
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        result = DecodedConversation({"messages": []})
        reader = _Reader(self, ids, strict, result)
        reader.run()
        if media:
            self._decode_media(result)
        return result

    def _decode_media(self, result: DecodedConversation) -> None:
        for name, codes in result.codes.items():
            if isinstance(codes, VideoTokens):
                result.media[name] = self.video.decode(codes)
            elif name.endswith("_audio"):
                if codes.shape[-1] == 0:
                    result.media[name] = np.zeros(0, dtype=np.float32)
                else:
                    result.media[name] = self.audio.decode(codes.unsqueeze(0))[0].cpu().numpy()
            else:
                result.media[name] = np.asarray(self.image.decode(codes))


def _voiced_frames(wave: np.ndarray, frames: int, samples_per_frame: int) -> tuple[int, int]:
    """``[first, stop)`` code frames louder than ``_SILENCE_DB`` below the loudest frame."""
    padded = np.zeros(frames * samples_per_frame, dtype=np.float32)
    n = min(len(wave), len(padded))
    padded[:n] = wave[:n]
    rms = np.sqrt((padded.reshape(frames, samples_per_frame) ** 2).mean(axis=1))  # (F,)
    if frames == 0 or rms.max() <= 0:
        return 0, frames
    voiced = np.nonzero(rms >= rms.max() * 10 ** (_SILENCE_DB / 20))[0]
    return int(voiced[0]), int(voiced[-1]) + 1


class _Reader:
    """A recursive-descent reader of one token stream (the grammar of the module docstring)."""

    def __init__(
        self, template: ChatTemplate, ids: list[int], strict: bool, out: DecodedConversation
    ) -> None:
        self.t, self.ids, self.strict, self.out = template, ids, strict, out
        self.sid = template._sid
        self.pos = 0
        layout = template.layout
        self.text_lo, self.text_hi = special.NUM_SPECIAL, layout.text_size
        self.role_of = {self.sid[token]: role for role, token in ROLES.items()}

    # -- helpers
    def peek(self) -> int | None:
        return self.ids[self.pos] if self.pos < len(self.ids) else None

    def name(self, token_id: int | None) -> str:
        if token_id is None:
            return "the end of the sequence"
        if 0 <= token_id < special.NUM_SPECIAL:
            return special.special_name(token_id)
        if not 0 <= token_id < self.t.layout.size:
            return f"id {token_id} (outside the vocabulary [0, {self.t.layout.size}))"
        return f"{self.t.layout.kind_of(token_id)} id {token_id}"

    def audio_codes(self, body: list[int], start: int) -> torch.Tensor:
        """Frame-major audio ids -> ``(K, F)`` codes; a trailing partial frame is dropped."""
        try:
            return self.t.layout.audio_codes(torch.tensor(body, dtype=torch.long))
        except ValueError as err:
            raise ChatFormatError(
                f"token sequence: audio span from position {start}: {err}"
            ) from None

    def fail(self, expected: str) -> ChatFormatError:
        return ChatFormatError(
            f"token sequence: expected {expected} at position {self.pos}, got "
            f"{self.name(self.peek())}"
        )

    def end_early(self, what: str) -> bool:
        """At the end of the ids: raise in strict mode, else mark truncated and say so."""
        if self.peek() is not None:
            return False
        if self.strict:
            raise self.fail(what)
        self.out.truncated = True
        return True

    def until(self, close: str) -> tuple[list[int], bool]:
        """Ids up to ``close`` (consumed); the bool says whether ``close`` was found."""
        close_id = self.sid[close]
        try:
            stop = self.ids.index(close_id, self.pos)
        except ValueError:
            if self.strict:
                raise ChatFormatError(
                    f"token sequence: the span opened before position {self.pos} is never "
                    f"closed by {close}"
                ) from None
            body, self.pos = self.ids[self.pos :], len(self.ids)
            self.out.truncated = True
            return body, False
        body, self.pos = self.ids[self.pos : stop], stop + 1
        return body, True

    def check_range(self, body: list[int], kind: str, start: int) -> None:
        layout = self.t.layout
        lo, hi = (
            (self.text_lo, self.text_hi)
            if kind == "text"
            else (layout.image_offset, layout.audio_offset)
            if kind == "image"
            else (layout.audio_offset, layout.size)
        )
        for j, token_id in enumerate(body):
            if not lo <= token_id < hi:
                raise ChatFormatError(
                    f"token sequence: {self.name(token_id)} at position {start + j} inside the "
                    f"{kind} span opened at {start - 1}; expected ids in [{lo}, {hi})"
                )

    # -- grammar
    def run(self) -> None:
        if self.end_early(special.BOS):
            return
        if self.peek() != self.sid[special.BOS]:
            raise self.fail(special.BOS)
        self.pos += 1
        while True:
            token = self.peek()
            if token == self.sid[special.EOS]:
                self.pos += 1
                if self.pos != len(self.ids):
                    raise ChatFormatError(
                        f"token sequence: {len(self.ids) - self.pos} ids after <|eos|> at "
                        f"position {self.pos - 1}"
                    )
                return
            if self.end_early(f"a role token or {special.EOS}"):
                return
            if token not in self.role_of:
                raise self.fail(f"a role token ({', '.join(ROLES.values())}) or {special.EOS}")
            self.pos += 1
            self.turn(self.role_of[token])

    def turn(self, role: str) -> None:
        m = len(self.out.conversation["messages"])
        message: dict[str, Any] = {"role": role, "content": []}
        self.out.conversation["messages"].append(message)
        parts: list[dict[str, Any]] = message["content"]
        text: list[int] = []  # plain text ids not yet closed into a part

        def flush_text() -> None:
            if text:
                parts.append({"type": "text", "text": self.t.text.decode(text)})
                text.clear()

        sid = self.sid
        while True:
            token = self.peek()
            if token is None:
                flush_text()
                self.end_early(special.END_OF_TURN)
                return
            if token == sid[special.END_OF_TURN]:
                self.pos += 1
                flush_text()
                return
            if self.text_lo <= token < self.text_hi:
                text.append(token)
                self.pos += 1
                continue
            flush_text()
            self.pos += 1
            if token == sid[special.INTERRUPT] and role == "assistant":
                message["interrupted"] = True
            elif token in self.t._voice_of:
                self.speech(m, parts, self.t._voice_of[token])
            elif token == sid[special.AUDIO]:
                self.audio(m, parts)
            elif token == sid[special.IMAGE]:
                self.image(m, parts)
            elif token == sid[special.VIDEO]:
                self.video(m, parts)
            elif token == sid[special.TEXT]:
                start = self.pos
                body, _ = self.until(special.TEXT_END)
                self.check_range(body, "text", start)
                text.extend(body)
            else:
                self.pos -= 1
                raise self.fail(f"text, a media span or {special.END_OF_TURN}")

    def _file(self, m: int, parts: list[dict[str, Any]], kind: str) -> str:
        return f"m{m}_p{len(parts)}_{kind}"

    def placeholders(self, body: list[int], token: str, start: int) -> bool:
        """Whether ``body`` is a run of input placeholders (``token``) rather than codes."""
        pid = self.sid[token]
        if not body or body[0] != pid:
            return False
        for j, token_id in enumerate(body):
            if token_id != pid:
                raise ChatFormatError(
                    f"token sequence: {self.name(token_id)} at position {start + j} inside a "
                    f"span of {token} placeholders opened at {start - 1}"
                )
        return True

    def audio(self, m: int, parts: list[dict[str, Any]]) -> None:
        start = self.pos
        body, _ = self.until(special.AUDIO_END)
        if self.placeholders(body, special.MEL, start):  # the user's speech, read as features
            parts.append({"type": "audio", "file": self._file(m, parts, "audio")})
            return
        self.check_range(body, "audio", start)
        name = self._file(m, parts, "audio")
        self.out.codes[name] = self.audio_codes(body, start)
        parts.append({"type": "audio", "file": name})

    def image(self, m: int, parts: list[dict[str, Any]]) -> None:
        start = self.pos
        body, closed = self.until(special.IMAGE_END)
        if self.placeholders(body, special.PATCH, start):  # a picture read as features
            if closed:
                parts.append({"type": "image", "file": self._file(m, parts, "image")})
            return
        grid = int(self.t.image.grid)
        if not closed and len(body) < grid * grid:
            return  # an image still being written: nothing to show yet
        self.check_range(body, "image", start)
        if len(body) != grid * grid:
            raise ChatFormatError(
                f"token sequence: image span at position {start} holds {len(body)} ids; "
                f"expected {grid}x{grid} = {grid * grid}"
            )
        name = self._file(m, parts, "image")
        self.out.codes[name] = self.t.layout.image_codes(torch.tensor(body), grid)
        parts.append({"type": "image", "file": name})

    def video(self, m: int, parts: list[dict[str, Any]]) -> None:
        start = self.pos - 1
        _, closed = self.until(special.VIDEO_END)
        if not closed:
            return
        if self.sid[special.PATCH] in self.ids[start : self.pos]:  # read as features
            parts.append({"type": "video", "file": self._file(m, parts, "video")})
            return
        try:
            tokens = VideoTokens.from_sequence(
                self.ids[start : self.pos],
                self.t._slots,
                fps=self.t.video_fps,
                grid=int(self.t.image.grid),
                audio_frame_rate=float(self.t.audio.frame_rate),
            )
        except ValueError as err:
            raise ChatFormatError(
                f"token sequence: video span at position {start}: {err}"
            ) from None
        name = self._file(m, parts, "video")
        self.out.codes[name] = tokens
        parts.append({"type": "video", "file": name})

    def speech(self, m: int, parts: list[dict[str, Any]], voice: str) -> None:
        """``<|voice:V|> (<|text|> … <|/text|> <|audio|> … <|/audio|>)*`` -> text + audio."""
        sid = self.sid
        first = self.pos
        text: list[int] = []
        audio: list[int] = []
        while self.peek() in (sid[special.TEXT], sid[special.AUDIO]):
            kind = "text" if self.peek() == sid[special.TEXT] else "audio"
            self.pos += 1
            start = self.pos
            body, _ = self.until(special.TEXT_END if kind == "text" else special.AUDIO_END)
            self.check_range(body, kind, start)
            (text if kind == "text" else audio).extend(body)
        transcript = self.t.text.decode(text)
        if transcript:  # empty only in a prefix that stops right after the voice token
            parts.append({"type": "text", "text": transcript})
        name = self._file(m, parts, "audio")
        self.out.codes[name] = self.audio_codes(audio, first)
        parts.append({"type": "audio", "voice": voice, "transcript": transcript, "file": name})
