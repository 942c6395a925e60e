"""``Assistant``: a loaded omni model that answers conversations as streams of text, speech and
images — the one inference path that ``omniflex chat``, ``omniflex eval`` and the server share.

``Assistant.from_pretrained("tiny")`` loads a model folder (``omniflex.model.pretrained``) with the
shipped tokenizers. A ``Session`` is one conversation with its own KV cache:

* ``add_message(message, files)`` appends a whole turn (text, audio, image, video parts, in the
  corpus format of ``omniflex.model.chat``);
* ``begin_user_audio()`` / ``push_user_audio(samples)`` / ``end_user_audio()`` append a spoken
  user turn *while it is spoken*: each push runs the streaming codec encoder and prefills the new
  audio tokens (incremental prefill), so when the user stops little is left to compute;
* ``respond(voice=…, modalities=…)`` yields ``TextDelta``, ``AudioDelta`` and ``ImageOutput``
  events as the tokens arrive — speech is decoded frame by frame by the streaming codec decoder,
  so the first audio is out one text chunk and one codec frame after the answer starts —, stops
  when ``cancel`` is set, and leaves the answer in the conversation;
* ``interrupt(played_seconds)`` (barge-in) cuts the last answer at what was played and closes it
  with ``<|interrupt|>``, as the corpus's interrupted turns are.

All model forwards of all sessions of one ``Assistant`` take ``Assistant.lock`` (each session's
``Generator`` takes it per forward): two CPU forwards at once only slow each other. With
``batch_decoding`` the decode steps of sessions answering at once share forwards
(``DecodeBatcher``).
Each session has its own copy of the audio codec, whose streaming state is per stream.
"""

from __future__ import annotations

import codecs
import copy
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from omniflex.model.answer_shape import AnswerShape
from omniflex.model.chat import ChatTemplate
from omniflex.model.compiled import CompiledForward
from omniflex.model.decode_batcher import DecodeBatcher
from omniflex.model.encoders import InputFeatures
from omniflex.model.generate import ConstraintFn, Generator, ModalityConstraint, StopReason
from omniflex.model.grammar import TokenGrammar
from omniflex.model.kv_cache import CacheStorage
from omniflex.model.pretrained import DEFAULT_MODEL, PretrainedInfo, load_pretrained
from omniflex.model.sampling import SamplingConfig
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import special

__all__ = [
    "Answer",
    "Assistant",
    "AudioDelta",
    "Event",
    "ImageOutput",
    "Modality",
    "Session",
    "TextDelta",
]

Modality = Literal["text", "audio", "image"]


@dataclass(frozen=True)
class TextDelta:
    """New text of the answer. ``spoken``: the transcript of speech being produced (it leads
    the audio that says it), else written text."""

    text: str
    spoken: bool = False


@dataclass(frozen=True)
class AudioDelta:
    """New speech samples (float32 mono, ``sample_rate`` Hz) in the answer's preset ``voice``."""

    samples: np.ndarray
    sample_rate: int
    voice: str


@dataclass(frozen=True)
class ImageOutput:
    """A generated image: ``pixels`` (H, W, 3) uint8 and its ``codes`` (grid, grid)."""

    pixels: np.ndarray
    codes: torch.Tensor


Event = TextDelta | AudioDelta | ImageOutput


@dataclass
class Answer:
    """A whole answer, collected from the events (``Session.answer`` / ``Assistant.answer``)."""

    text: str = ""
    transcript: str = ""
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    sample_rate: int = 16_000
    voice: str | None = None
    images: list[np.ndarray] = field(default_factory=list)
    tokens: int = 0
    stop_reason: StopReason | None = None
    seconds: float = 0.0
    first_audio_seconds: float | None = None  # from the call to the first AudioDelta

    @property
    def modalities(self) -> list[str]:
        out = ["text"] if self.text.strip() else []
        if self.audio.size:
            out.append("audio")
        if self.images:
            out.append("image")
        return out


class Assistant:
    """An omni model + its chat template, ready to answer.

    Args:
        model: a trained ``OmniModel`` (any precision).
        template: the chat template over the tokenizers the model was trained with.
        cache_storage: KV cache storage for every session (``"float32"`` or ``"flex16"``).
        info: the model folder's config (name, training summary), when loaded from one.
        compile: decode through one ``CompiledForward`` shared by all sessions (faster per
            token; the first answers of a process pay the compilation, a minute or two on a
            small CPU, less once inductor's on-disk cache holds the graphs).
        answer_shape: force every answer that may speak into this layout (benchmarks and
            protocol tests only: ``omniflex.model.answer_shape``).
        batch_decoding: run the decode steps of sessions that answer at the same time in one
            forward (``omniflex.model.decode_batcher``; through the compiled forward with
            ``compile``, else its eager reference).
    """

    def __init__(
        self,
        model: OmniModel,
        template: ChatTemplate,
        *,
        cache_storage: CacheStorage = "float32",
        info: PretrainedInfo | None = None,
        compile: bool = False,
        answer_shape: AnswerShape | None = None,
        batch_decoding: bool = False,
    ) -> None:
        if template.input_features != model.config.input_encoders:
            raise ValueError(
                "the model reads media as "
                f"{'features' if model.config.input_encoders else 'code ids'} but the template "
                f"gives {'features' if template.input_features else 'code ids'}; build it with "
                f"ChatTemplate.from_shipped(input_features={model.config.input_encoders})"
            )
        if template.layout != model.config.vocab:
            raise ValueError(
                f"the model's vocabulary {model.config.vocab.to_dict()} differs from the "
                f"tokenizers' {template.layout.to_dict()}; retokenize the corpus and retrain"
            )
        self.model = model.eval()
        self.template = template
        self.cache_storage: CacheStorage = cache_storage
        self.fast = CompiledForward(self.model) if compile else None
        self.info = info
        self.answer_shape = answer_shape
        self.lock = threading.RLock()
        self.batcher = (
            DecodeBatcher(self.fast or CompiledForward(self.model, compile=False), self.lock)
            if batch_decoding
            else None
        )
        self.layout = model.config.vocab
        self.sample_rate = int(template.audio.sample_rate)
        self.voices: tuple[str, ...] = special.PRESET_VOICE_NAMES
        self._sid = {name: special.special_index(name) for name in special.SPECIAL_TOKENS}
        self._voice_of = {self._sid[special.voice_token(v)]: v for v in self.voices}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        precision: str | None = None,
        cache_storage: CacheStorage = "float32",
        threads: int | None = None,
        compile: bool = False,
        batch_decoding: bool = False,
    ) -> Assistant:
        """Load a shipped model by name (``"tiny"``) or a model folder; ``precision="float32"``
        runs flex-trained weights dequantised (exact values, faster on a CPU); ``compile``
        decodes through the compiled forward."""
        if threads is not None:
            torch.set_num_threads(threads)
        model, info = load_pretrained(name_or_path, precision=precision)
        # A model with input encoders reads media as features, whatever an old config says.
        options = {**info.template, "input_features": model.config.input_encoders}
        template = ChatTemplate.from_shipped(**options)
        return cls(model, template, cache_storage=cache_storage, info=info, compile=compile,
                   batch_decoding=batch_decoding)  # fmt: skip

    @property
    def name(self) -> str:
        return str(self.info.get("name", "omni")) if self.info is not None else "omni"

    def with_answer_shape(self, shape: AnswerShape | None) -> Assistant:
        """A view of this assistant over the same model, lock and compiled forward whose
        spoken answers take ``shape`` (``None``: the model's own)."""
        view = copy.copy(self)
        view.answer_shape = shape
        return view

    def session(self) -> Session:
        """A new, empty conversation."""
        return Session(self)

    def answer(
        self,
        conversation: dict[str, Any],
        files: dict[str, bytes] | None = None,
        **options: Any,
    ) -> Answer:
        """Answer the last user turn of ``conversation`` in a fresh session (``Session.answer``
        options: ``voice``, ``modalities``, ``sampling``, ``max_new_tokens``)."""
        session = self.session()
        for m in range(len(conversation.get("messages", []))):
            session.add_message(conversation, files, m)
        return session.answer(**options)

    def check_voice(self, voice: str | None) -> str | None:
        if voice is not None and voice not in self.voices:
            raise ValueError(
                f"unknown voice {voice!r}: the model speaks only in its preset voices "
                f"{', '.join(self.voices)}"
            )
        return voice


class Session:
    """One conversation with an ``Assistant``: its token history and KV cache."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        a = assistant
        self.generator = Generator(
            a.model, a.layout, cache_storage=a.cache_storage,
            image_grid=int(a.template.image.grid), fast=a.fast, lock=a.lock,
            batcher=a.batcher,
        )  # fmt: skip
        self._codec = copy.deepcopy(a.template.audio).eval()  # per-session streaming state
        self._spf = int(self._codec.config.samples_per_frame)
        # How user speech is read: log-mel rows (models with input encoders) or codec codes.
        self._listener = (
            copy.deepcopy(a.template.speech_features).eval() if a.template.input_features else None
        )
        self._user_audio: dict[str, Any] | None = None
        self._answer_start: int | None = None
        self._prompt_end = 0
        # Where the answer being written stands (open span, count in it): read by the decoder
        # of the answer's tokens, and by the closing of an answer that stops early.
        self.grammar = TokenGrammar(a.layout, int(a.template.image.grid))
        self.generated = 0
        self._frame_ends: list[int] = []  # sequence position after each answer audio frame
        self.generator.tokens.append(a._sid[special.BOS])

    @property
    def answer_start(self) -> int | None:
        """Sequence position where the latest answer's turn starts (its ``<|assistant|>``
        token): everything before it is the answer's input. ``None`` before any answer."""
        return self._answer_start

    # ---------------------------------------------------------------- input
    @property
    def tokens(self) -> list[int]:
        return self.generator.tokens

    def _prefill(self, ids: Sequence[int], features: InputFeatures | None = None) -> None:
        # Not under the lock: the generator takes it for each forward, and a one-token step
        # may wait for the decode batcher, which needs it.
        self.generator.prefill(ids, features=features)

    def add_message(
        self, conversation: dict[str, Any], files: dict[str, bytes] | None = None, m: int = -1
    ) -> None:
        """Append message ``m`` of ``conversation`` (default the last) and prefill it."""
        if self._user_audio is not None:
            raise RuntimeError("a spoken user turn is open: end_user_audio() first")
        encoded = self.assistant.template.encode_message(conversation, files, m)
        self._prefill(encoded.ids, encoded.features())

    def add_text(self, text: str, role: str = "user") -> None:
        """Append a text-only turn."""
        self.add_message({"messages": [{"role": role, "content": text}]})

    def begin_user_audio(self) -> None:
        """Open a spoken user turn; ``push_user_audio`` feeds it as it is spoken."""
        if self._user_audio is not None:
            raise RuntimeError("a spoken user turn is already open")
        sid = self.assistant._sid
        reader = self._listener if self._listener is not None else self._codec
        reader.reset_streaming()
        stack = reader.streaming()
        stack.__enter__()
        self._user_audio = {"stack": stack, "samples": 0, "start": len(self.tokens)}
        self._prefill([sid[special.USER], sid[special.AUDIO]])

    def push_user_audio(self, samples: np.ndarray) -> int:
        """Encode and prefill the whole codec frames (or 40 ms log-mel positions, for a model
        with input encoders) in ``samples`` (float32, 16 kHz, any length; a partial frame
        waits for the next push). Returns the tokens added."""
        if self._user_audio is None:
            raise RuntimeError("no spoken user turn is open: begin_user_audio() first")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return 0
        if not np.isfinite(x).all():
            raise ValueError("user audio holds NaN or Inf samples")
        self._user_audio["samples"] += x.size
        if self._listener is not None:
            rows = self._listener(torch.from_numpy(np.clip(x, -1.0, 1.0))[None])[0]  # (n, 320)
            if rows.shape[0] == 0:
                return 0
            empty = InputFeatures.empty()
            mel = self.assistant._sid[special.MEL]
            self._prefill([mel] * rows.shape[0], InputFeatures(rows, empty.patches, empty.place))
            return int(rows.shape[0])
        codes = self._codec.encode(torch.from_numpy(np.clip(x, -1.0, 1.0)))  # (1, K, F)
        if codes.shape[-1] == 0:
            return 0
        ids = self.assistant.layout.audio_ids(codes[0]).tolist()
        self._prefill(ids)
        return len(ids)

    def end_user_audio(self) -> None:
        """Close the spoken turn: the last partial frame (zero-padded), ``<|/audio|>``, and the
        end of the turn."""
        if self._user_audio is None:
            raise RuntimeError("no spoken user turn is open")
        rest = (-self._user_audio["samples"]) % self._spf
        if rest and self._listener is None:  # log-mel: a partial position is dropped, as whole
            self.push_user_audio(np.zeros(rest, dtype=np.float32))
        self._user_audio["stack"].__exit__(None, None, None)
        self._user_audio = None
        sid = self.assistant._sid
        self._prefill([sid[special.AUDIO_END], sid[special.END_OF_TURN]])

    def discard_user_audio(self) -> None:
        """Drop the open spoken turn (the client cleared its input buffer): the conversation
        and its KV cache are as they were before ``begin_user_audio``."""
        if self._user_audio is None:
            raise RuntimeError("no spoken user turn is open")
        self._user_audio["stack"].__exit__(None, None, None)
        start = self._user_audio["start"]
        self._user_audio = None
        with self.assistant.lock:
            self.generator.truncate(start)

    def add_user_audio(self, samples: np.ndarray) -> None:
        """A whole spoken user turn at once."""
        self.begin_user_audio()
        self.push_user_audio(samples)
        self.end_user_audio()

    # ---------------------------------------------------------------- output
    def _constraint(self, modalities: Sequence[str]) -> ConstraintFn:
        a = self.assistant
        base = ModalityConstraint(a.layout, int(a.template.image.grid), outputs=modalities)
        if a.answer_shape is None or "audio" not in modalities:
            return base
        return a.answer_shape.constrain(base, self._prompt_end, a.layout)

    def respond(
        self,
        *,
        voice: str | None = None,
        modalities: Sequence[str] = ("text", "audio", "image"),
        sampling: SamplingConfig | None = None,
        max_new_tokens: int = 800,
        cancel: threading.Event | None = None,
        audio_chunk_frames: int = 1,
    ) -> Iterator[Event]:
        """Generate the assistant's turn, yielding events as they are produced.

        ``voice`` (a preset voice) asks for a spoken answer: the turn starts with that voice's
        token. ``modalities`` limits what the answer may contain. ``audio_chunk_frames`` codec
        frames (40 ms each) are decoded per ``AudioDelta``.
        """
        a = self.assistant
        a.check_voice(voice)
        if self._user_audio is not None:
            raise RuntimeError("a spoken user turn is open: end_user_audio() first")
        bad = set(modalities) - {"text", "audio", "image"}
        if bad or not modalities:
            raise ValueError(f"modalities must be among text, audio, image; got {modalities!r}")
        if voice is not None and "audio" not in modalities:
            raise ValueError("a voice was asked for but 'audio' is not among the modalities")
        sid = a._sid
        prompt = [sid[special.ASSISTANT]]
        if voice is not None:
            prompt.append(sid[special.voice_token(voice)])
        self._answer_start = len(self.tokens)
        self._prompt_end = self._answer_start + len(prompt)
        self._frame_ends = []
        stops = (sid[special.END_OF_TURN], sid[special.EOS])
        self.generator.tokens.extend(prompt)  # pending: part of the turn even if cancelled now
        stream = self.generator.stream(
            (), max_new_tokens=max_new_tokens, sampling=sampling or SamplingConfig(0.0),
            stop_tokens=stops, constraint_fn=self._constraint(modalities), cancel=cancel,
        )  # fmt: skip
        self.generated = 0  # tokens the model produced for this answer
        try:
            yield from self._decode(stream, voice, audio_chunk_frames)
        finally:
            if self.generator.stop_reason != "stop_token":
                self._close_turn(cancelled=self.generator.stop_reason == "cancelled")

    def _close_turn(self, *, cancelled: bool) -> None:
        """Close an answer that stopped early (length, cancel): its open span as the grammar
        says (a partial audio frame or image is dropped), then the turn."""
        sid = self.assistant._sid
        drop, closing = self.grammar.closing()
        if drop:
            with self.assistant.lock:
                self.generator.truncate(len(self.tokens) - drop)
        tail = [*closing, sid[special.INTERRUPT]] if cancelled else [*closing]
        self.generator.tokens.extend([*tail, sid[special.END_OF_TURN]])  # pending
        self.grammar.reset()  # the turn is closed

    def _decode(self, stream: Iterator[Any], voice: str | None, chunk: int) -> Iterator[Event]:
        a = self.assistant
        layout, codec = a.layout, self._codec
        k = layout.audio_codebooks
        grid = int(a.template.image.grid)
        # A BPE id can end inside a character: incremental decoders hold the partial bytes.
        utf8 = codecs.getincrementaldecoder("utf-8")
        text_out, spoken_out = utf8(errors="replace"), utf8(errors="replace")
        grammar = self.grammar  # where the answer stands, after each token
        grammar.reset()
        speaking_voice = voice
        frame: list[int] = []  # codes of the audio frame being written
        frames: list[torch.Tensor] = []  # whole frames not yet decoded to sound
        image: list[int] = []
        codec.reset_streaming()
        with codec.streaming():
            while True:
                event = next(stream, None)  # the generator locks each forward itself
                if event is None:
                    break
                self.generated += 1
                t, before = event.token_id, grammar.state
                grammar.feed(t)
                state = grammar.state
                if state == "audio" and event.modality == "audio":
                    frame.append(t)
                    if grammar.count % k == 0:  # a whole frame
                        codes = torch.tensor(frame) - layout.audio_offset
                        codes = codes - torch.arange(k) * layout.audio_size
                        frames.append(codes.view(k, 1))
                        self._frame_ends.append(event.position + 1)
                        frame = []
                        if len(frames) >= chunk:
                            yield self._audio(frames, speaking_voice)
                    continue
                if state == "image" and event.modality == "image":
                    image.append(t)
                    if grammar.count == grid * grid:
                        codes = layout.image_codes(torch.tensor(image), grid)
                        pixels = np.asarray(a.template.image.decode(codes))
                        yield ImageOutput(pixels, codes)
                    continue
                frame, image = [], []  # a marker or text: any span content before it is over
                if before == "audio" and frames:
                    yield self._audio(frames, speaking_voice)
                if t in a._voice_of:
                    speaking_voice = a._voice_of[t]
                elif event.modality == "text":
                    data = a.template.text.decode_bytes([t])
                    spoken = state == "spoken"
                    out = (spoken_out if spoken else text_out).decode(data)
                    if out:
                        yield TextDelta(out, spoken=spoken)
            if frames:
                yield self._audio(frames, speaking_voice)
            if self._frame_ends:
                tail = codec.flush()[0].numpy()
                if tail.size:
                    yield AudioDelta(tail.astype(np.float32), a.sample_rate, speaking_voice or "")
        for decoder, spoken in ((text_out, False), (spoken_out, True)):
            out = decoder.decode(b"", final=True)
            if out:
                yield TextDelta(out, spoken=spoken)

    def _audio(self, frames: list[torch.Tensor], voice: str | None) -> AudioDelta:
        codes = torch.cat(frames, dim=1).unsqueeze(0)  # (1, K, F)
        frames.clear()
        samples = self._codec.decode(codes)[0].numpy().astype(np.float32)
        return AudioDelta(samples, self.assistant.sample_rate, voice or "")

    @property
    def stop_reason(self) -> StopReason | None:
        return self.generator.stop_reason

    def answer(self, **options: Any) -> Answer:
        """``respond`` collected into one ``Answer``."""
        start = time.perf_counter()
        out = Answer(sample_rate=self.assistant.sample_rate, voice=options.get("voice"))
        audio: list[np.ndarray] = []
        for event in self.respond(**options):
            if isinstance(event, TextDelta):
                if event.spoken:
                    out.transcript += event.text
                else:
                    out.text += event.text
            elif isinstance(event, AudioDelta):
                if out.first_audio_seconds is None:
                    out.first_audio_seconds = time.perf_counter() - start
                audio.append(event.samples)
                out.voice = event.voice or out.voice
            else:
                out.images.append(event.pixels)
        if audio:
            out.audio = np.concatenate(audio)
        out.tokens = self.generated
        out.stop_reason = self.stop_reason
        out.seconds = time.perf_counter() - start
        return out

    def interrupt(self, played_seconds: float) -> int:
        """Barge-in: keep the last answer up to the audio frames actually played, close it with
        ``<|interrupt|>`` and the end of the turn. Returns the frames kept."""
        if self._answer_start is None:
            raise RuntimeError("no answer to interrupt")
        sid = self.assistant._sid
        spf_s = self._spf / self.assistant.sample_rate
        kept = min(len(self._frame_ends), max(0, int(played_seconds / spf_s)))
        cut = self._frame_ends[kept - 1] if kept else self._prompt_end
        cut = min(cut, len(self.tokens))
        self.grammar.reset()  # where the kept answer stands: inside an audio span, or none
        drop, closing = self.grammar.read(self.tokens[self._answer_start : cut]).closing()
        self.grammar.reset()  # the turn is closed
        with self.assistant.lock:
            self.generator.truncate(cut - drop)
            tail = [*closing, sid[special.INTERRUPT], sid[special.END_OF_TURN]]
            self.generator.tokens.extend(tail)  # pending: run with the next prefill
        self._frame_ends = self._frame_ends[:kept]
        return kept
