"""Corpus samples: one conversation per sample, with the media it points at.

``make_sample(task, split, index, seed)`` is a pure function: the same arguments give the same
conversation and the same media bytes, whichever worker process builds it. A conversation is::

    {"id": ..., "task": ..., "split": ..., "messages": [
        {"role": "user", "content": [{"type": "audio", "file": "user.wav", "voice": "eli",
                                      "transcript": "..."}, {"type": "text", "text": "..."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "..."},
                                           {"type": "audio", "file": "assistant.wav",
                                            "voice": "aria", "transcript": "..."}]}]}

``file`` names a member of the same WebDataset sample (``<key>.<file>`` in the tar); a sample
with several recordings or pictures numbers them (``user.wav``, ``user2.wav``, ``image.png``,
``image2.png``…). ``conversation`` samples have two to four user/assistant turns.

What generalisation each split asks for (the tests check every point):

* **Sentences** come from ``omniflex.data.grammar``; a sentence's split is fixed by its text, so
  no val/test sentence occurs in training. ASR test samples mark whether their sentence was
  heard in training (``sentence_seen``: half re-speak training sentences in held-out voices).
* **Questions**: arithmetic and counting pairs are split by their numbers (a test sum was never
  asked in training); fact questions keep their answers but test wordings are new.
* **Voices**: training speech comes from the input voices, val/test speech from held-out ones.
* **Scenes**: test scenes hold a colour-kind pair never drawn in training; input pictures come at
  several sizes and on textured or plain backgrounds.
* **Safety** tasks (and ``benign`` look-alike requests) come in three conditions, by sample index:
  ``typed``, ``spoken`` (the request is spoken) and ``noisy`` (spoken at 10 dB SNR).

``make_sample(..., media=False)`` builds the same conversation without synthesising or rendering
anything (``Sample.media`` empty, no ``augment`` records): a fast path for checks over the text.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omniflex.common.voices import INPUT_VOICES, PRESET_VOICES, TEST_VOICES, VAL_VOICES, Voice
from omniflex.data import lexicon as lx
from omniflex.data.grammar import covering_sentences, sample_sentence, split_of, written
from omniflex.data.scenes import SCENE_COLOURS, SCENE_KINDS, Scene, render_scene, sample_scene
from omniflex.data.shapes import ShapeSpec, render_shapes
from omniflex.data.speech import add_noise, augment, synthesize
from omniflex.data.templates import (
    BENIGN_REQUESTS,
    DISALLOWED_REQUESTS,
    FACTS,
    QUOTES,
    REQUEST_FRAMES,
    TEMPLATES,
    Split,
    template_ids,
)
from omniflex.media.audio import SAMPLE_RATE, to_wav_bytes
from omniflex.media.image import to_png_bytes
from omniflex.media.video import video_bytes

__all__ = [
    "CONDITIONS",
    "INPUT_IMAGE_SIZES",
    "NUMBERS",
    "SAFETY_TASKS",
    "SEEN_SENTENCE_POOL",
    "TASKS",
    "VIDEO_FPS",
    "Sample",
    "make_sample",
    "number_words",
    "user_voices",
]

SAFETY_TASKS = (
    "speaker_id",
    "trait_ungrounded",
    "trait_hedge",
    "quote",
    "imitate",
    "disallowed",
    "benign",
)
TASKS = (
    "asr",
    "tts",
    "spoken_qa",
    "text_chat",
    "caption",
    "vqa",
    "text_to_image",
    "digit",
    "video_qa",
    "conversation",
    *SAFETY_TASKS,
)
CONDITIONS = ("typed", "spoken", "noisy")  # a safety sample's condition is CONDITIONS[index % 3]
NOISY_SNR_DB = 10.0
INPUT_IMAGE_SIZES = (48, 64, 64, 96, 128)  # pictures the user shows; the model resizes them
VIDEO_FPS = 8  # frames per second the clips are written at (the model samples its own rate)
# Test ASR samples whose sentence is "seen" take it from the first covering sentences, which
# every corpus with at least this many ASR training samples speaks in training.
SEEN_SENTENCE_POOL = 300
NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """0..99 in words, as the corpus writes numbers ("twenty one")."""
    if not 0 <= n < 100:
        raise ValueError(f"number_words covers 0..99, got {n}")
    if n < 20:
        return NUMBERS[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + ("" if ones == 0 else f" {NUMBERS[ones]}")


@dataclass
class Sample:
    key: str
    conversation: dict[str, Any]
    media: dict[str, bytes] = field(default_factory=dict)
    speech_seconds: dict[str, float] = field(default_factory=dict)  # voice -> seconds


def user_voices(split: Split) -> tuple[Voice, ...]:
    """Voices that speak to the model: input voices in training, held-out voices otherwise."""
    return {"train": INPUT_VOICES, "val": VAL_VOICES, "test": TEST_VOICES}[split]


def _split_by_key(key: str) -> Split:
    """Held-out question pairs (arithmetic, counting, requests): 10% test, 10% validation."""
    bucket = zlib.crc32(key.encode()) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


class _Builder:
    """Collects one conversation: turns of user and assistant parts, and the media they name.

    Two random streams: ``rng`` decides what is said and shown, ``media_rng`` how it sounds
    (augmentation), so a text-only build (``media=False``) says exactly what the full one does.
    """

    def __init__(self, task: str, split: Split, index: int, seed: int, media: bool) -> None:
        self.task, self.split, self.index, self.media = task, split, index, media
        key = [seed, TASKS.index(task), ("train", "val", "test").index(split), index]
        self.rng = np.random.default_rng(key)
        self.media_rng = np.random.default_rng([*key, 1])
        self.sample = Sample(f"{split}_{task}_{index:07d}", {})
        self.messages: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self.user_voice: Voice | None = None  # who speaks a safety sample's requests
        self._files: dict[str, int] = {}
        self.turn()

    # ---- structure
    def turn(self) -> None:
        self.messages += [{"role": "user", "content": []}, {"role": "assistant", "content": []}]

    @property
    def user(self) -> list[dict[str, Any]]:
        return self.messages[-2]["content"]

    @property
    def assistant(self) -> list[dict[str, Any]]:
        return self.messages[-1]["content"]

    def _file(self, stem: str, ext: str) -> str:
        n = self._files[stem] = self._files.get(stem, 0) + 1
        return f"{stem}{'' if n == 1 else n}.{ext}"

    def pick(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def template(self, task: str | None = None, **kw: Any) -> str:
        task = task or self.task
        return TEMPLATES[task][self.pick(template_ids(task, self.split))].format(**kw)

    def sentence(self, max_words: int | None = None) -> str:
        while True:
            text = sample_sentence(self.rng, self.split)
            if max_words is None or len(text.split()) <= max_words:
                return text

    # ---- parts
    def speech(
        self, role: str, text: str, voice: Voice, augment_it: bool, snr_db: float | None = None
    ) -> dict[str, Any]:
        # Input speech is augmented (pitch, then speed, reverberation, noise); the assistant's
        # preset voices are never altered: they are the reference the voice classifier learns.
        name = self._file(role, "wav")
        part: dict[str, Any] = {"type": "audio", "file": name, "voice": voice.name,
                                "transcript": text}  # fmt: skip
        if not self.media:
            return part
        rng = self.media_rng
        shift = int(rng.integers(-10, 11)) if augment_it and rng.random() < 0.5 else 0
        audio = synthesize(text, voice, pitch_shift=shift)
        if snr_db is not None:
            audio = np.clip(add_noise(audio, snr_db, rng), -1, 1).astype(np.float32)
            part["augment"] = {"snr_db": snr_db}
        elif augment_it:
            audio, applied = augment(audio, rng)
            if shift:
                applied = {"pitch_shift": float(shift), **applied}
            if applied:
                part["augment"] = applied
        self.sample.media[name] = to_wav_bytes(audio)
        part["seconds"] = round(len(audio) / SAMPLE_RATE, 3)
        self._count(voice, part["seconds"])
        return part

    def _count(self, voice: Voice, seconds: float) -> None:
        self.sample.speech_seconds[voice.name] = (
            self.sample.speech_seconds.get(voice.name, 0.0) + seconds
        )

    def user_speech(self, text: str, voice: Voice | None = None, snr_db: float | None = None):
        voice = voice or self.pick(user_voices(self.split))
        self.user.append(self.speech("user", text, voice, augment_it=True, snr_db=snr_db))

    def say(self, text: str, voice: Voice | None = None) -> None:
        """Assistant answer as text and, in a preset voice, as speech."""
        self.assistant.append({"type": "text", "text": text})
        self.assistant.append(
            self.speech("assistant", text, voice or self.pick(PRESET_VOICES), False)
        )

    def text(self, role: str, text: str) -> None:
        (self.user if role == "user" else self.assistant).append({"type": "text", "text": text})

    def image(self, role: str, make: Callable[[], np.ndarray], **meta: Any) -> None:
        name = self._file("image", "png")
        if self.media:
            self.sample.media[name] = to_png_bytes(make())
        (self.user if role == "user" else self.assistant).append(
            {"type": "image", "file": name, **meta}
        )

    def scene_picture(self, scene: Scene) -> None:
        """A picture the user shows: any of several sizes, textured or plain."""
        size = int(self.pick(INPUT_IMAGE_SIZES))
        plain = self.chance(0.3)
        truth = [o.__dict__ for o in scene.objects]
        self.image("user", lambda: render_scene(scene, size, plain), objects=truth,
                   size=size, background="plain" if plain else "textured")  # fmt: skip

    def request(self, text: str, spoken_text: str | None = None) -> None:
        """A user request in this sample's condition: typed, spoken or spoken in noise."""
        condition = self.extra.get("condition", "typed")
        if condition == "typed":
            self.text("user", text)
        else:
            snr = NOISY_SNR_DB if condition == "noisy" else None
            self.user_speech(spoken_text or text, self.user_voice, snr_db=snr)

    def done(self) -> Sample:
        self.sample.conversation = {
            "id": self.sample.key,
            "task": self.task,
            "split": self.split,
            **self.extra,
            "messages": self.messages,
        }
        return self.sample


# ----------------------------------------------------------------------------- questions
def _held_pair(b: _Builder, draw: Callable[[], tuple[str, Any]]) -> Any:
    """Draw until the drawn pair's key falls in the builder's split."""
    while True:
        key, value = draw()
        if _split_by_key(key) == b.split:
            return value


def _arith(b: _Builder) -> tuple[str, str, int]:
    def draw() -> tuple[str, tuple[str, str, int]]:
        x, y = int(b.rng.integers(0, 21)), int(b.rng.integers(0, 21))
        if b.chance(0.5) or x < y:
            q = f"{number_words(x)} plus {number_words(y)}"
            return f"+{x},{y}", (q, f"{q} is {number_words(x + y)}.", x + y)
        q = f"{number_words(x)} minus {number_words(y)}"
        return f"-{x},{y}", (q, f"{q} is {number_words(x - y)}.", x - y)

    q, a, value = _held_pair(b, draw)
    frame = b.pick(("what is {q}?", "how much is {q}?", "what do you get from {q}?"))
    return frame.format(q=q), a, value


def _count(b: _Builder) -> tuple[str, str, int]:
    nouns = lx.THINGS + lx.FOODS + lx.ANIMALS
    items = [p for s, p in nouns if s != p]

    def draw() -> tuple[str, tuple[str, str, int]]:
        n, m = int(b.rng.integers(2, 13)), int(b.rng.integers(1, 7))
        item = b.pick(items)
        if b.chance(0.5):
            q = (f"if you have {number_words(n)} {item} and get {number_words(m)} more, "
                 "how many do you have?")  # fmt: skip
            return f"c+{n},{m}", (q, f"You have {number_words(n + m)} {item}.", n + m)
        n = max(n, m)
        q = (f"if you have {number_words(n)} {item} and give away {number_words(m)}, "
             "how many are left?")  # fmt: skip
        return f"c-{n},{m}", (q, f"You have {number_words(n - m)} {item} left.", n - m)

    return _held_pair(b, draw)


def _fact(b: _Builder) -> tuple[str, str]:
    wordings, answer = b.pick(FACTS)
    n = len(wordings)
    ids = {"train": range(n - 2), "val": [n - 2], "test": [n - 1]}[b.split]
    return wordings[b.pick(list(ids))].lower(), answer


def _question(b: _Builder) -> tuple[str, str, int | None]:
    """(question in lower case, written answer, the answer's number if it is one)."""
    kind = int(b.rng.integers(3))
    if kind == 0:
        return _arith(b)
    if kind == 1:
        return _count(b)
    q, a = _fact(b)
    return q, a, None


def _scene_question(b: _Builder, scene: Scene) -> tuple[str, str]:
    unique = [o for o in scene.objects if scene.count(kind=o.kind) == 1]
    kind = int(b.rng.integers(6))
    if kind == 0 or not unique:
        n = len(scene.objects)
        return (
            "How many shapes are there?",
            f"There {'is' if n == 1 else 'are'} {NUMBERS[n]} shape{'s' if n > 1 else ''}.",
        )
    obj = b.pick(unique)
    if kind == 1:
        return f"What colour is the {obj.kind}?", f"The {obj.kind} is {obj.colour}."
    if kind == 2:
        colour, shape = b.pick(SCENE_COLOURS), b.pick(SCENE_KINDS)
        present = scene.count(colour, shape) > 0
        return f"Is there a {colour} {shape}?", (
            "Yes, there is." if present else "No, there is not."
        )
    if kind == 3:
        colour = obj.colour
        n = scene.count(colour=colour)
        return f"How many {colour} shapes are there?", (
            f"There {'is' if n == 1 else 'are'} {NUMBERS[n]} {colour} shape{'s' if n > 1 else ''}."
        )
    if kind == 4:
        return f"What shape is {obj.position}?", f"It is a {obj.colour} {obj.kind}."
    return f"Where is the {obj.colour} {obj.kind}?", f"It is {obj.position}."


# ----------------------------------------------------------------------------- tasks
def _asr(b: _Builder) -> None:
    if b.split == "train" and b.index < len(covering_sentences()):
        text = covering_sentences()[b.index]
    elif b.split == "test" and b.index % 2 == 1:  # a training sentence in a held-out voice
        text = covering_sentences()[int(b.rng.integers(SEEN_SENTENCE_POOL))]
    else:
        text = b.sentence()
    b.extra["sentence_seen"] = split_of(text) == "train"
    b.user_speech(text)
    b.text("user", b.template())
    b.text("assistant", written(text))


def _tts(b: _Builder) -> None:
    voice = b.pick(PRESET_VOICES)
    cover = covering_sentences()
    if b.split == "train" and b.index % 2 == 0:  # half covering sentences, half of any pattern
        text = cover[(b.index // 2 + len(cover) // 2) % len(cover)]
    else:
        text = b.sentence()
    b.text("user", b.template(voice=voice.name, text=written(text)))
    b.assistant.append(b.speech("assistant", written(text), voice, augment_it=False))


def _video(b: _Builder) -> None:
    colour, kind = b.pick(SCENE_COLOURS), b.pick(SCENE_KINDS)
    direction = b.pick(("left", "right", "up", "down"))
    narration = b.sentence(max_words=5)
    voice = b.pick(user_voices(b.split))
    static = ShapeSpec(b.pick(SCENE_KINDS), b.pick(SCENE_COLOURS), float(b.rng.uniform(8, 56)),
                       float(b.rng.uniform(8, 56)), 6.0)  # fmt: skip
    bg_seed = int(b.rng.integers(2**31))
    b.user.append({"type": "video", "file": b._file("video", "mp4"), "fps": VIDEO_FPS,
                   "narration": narration,
                   "moving": {"kind": kind, "colour": colour, "direction": direction}})  # fmt: skip
    q_kind = b.pick(("video_qa_motion", "video_qa_direction", "video_qa_speech"))
    b.text("user", b.template(task=q_kind, kind=kind))
    b.text("assistant", {
        "video_qa_motion": f"The {colour} {kind} moved.",
        "video_qa_direction": f"It moved {direction}.",
        "video_qa_speech": f"The voice said: {narration}.",
    }[q_kind])  # fmt: skip
    if not b.media:
        return
    audio = synthesize(narration, voice)
    # The clip lasts as long as its narration (at least 1.5 s), so nothing said is cut off.
    seconds = max(1.5, len(audio) / SAMPLE_RATE + 0.1)
    frames = round(seconds * VIDEO_FPS)
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    start = np.array([32 - dx * 18, 32 - dy * 18], dtype=float)
    step = np.array([dx, dy]) * 36 / max(frames - 1, 1)  # pixels per frame
    video = np.stack([
        render_shapes([static, ShapeSpec(kind, colour, *(start + step * t), 8.0)], size=64,
                      seed=bg_seed, supersample=2)
        for t in range(frames)
    ])  # fmt: skip
    audio = np.pad(audio, (0, max(0, round(frames / VIDEO_FPS * SAMPLE_RATE) - len(audio))))
    b.sample.media[b.user[0]["file"]] = video_bytes(video, VIDEO_FPS, audio)
    b.user[0]["seconds"] = round(len(audio) / SAMPLE_RATE, 3)
    b._count(voice, b.user[0]["seconds"])


def _conversation(b: _Builder) -> None:
    """Two to four turns; later turns may refer back to an earlier picture or answer."""
    turns = int(b.rng.integers(2, 5))
    scene: Scene | None = None
    last_number: int | None = None
    last_answer: str | None = None
    for t in range(turns):
        if t:
            b.turn()
        follow = t > 0 and b.chance(0.6 if t == turns - 1 else 0.4)
        if follow and scene is not None and b.chance(0.6):
            q, a = _scene_question(b, scene)
            q = b.pick(("In the picture, {q}", "Back to the picture: {q}")).format(
                q=q[0].lower() + q[1:]
            )
            b.text("user", q)
            b.text("assistant", a)
            last_number, last_answer = None, a
            continue
        if follow and last_number is not None and last_number < 90:
            n = int(b.rng.integers(1, 10))
            b.text("user", f"What is that plus {number_words(n)}?")
            a = f"{number_words(last_number)} plus {number_words(n)} is "
            a += f"{number_words(last_number + n)}."
            b.text("assistant", _cap(a))
            last_number, last_answer = last_number + n, _cap(a)
            continue
        if follow and last_answer is not None:
            b.text("user", b.pick(("Can you say that again?", "Please say that again.")))
            b.text("assistant", last_answer)
            continue
        kind = int(b.rng.integers(3))
        if kind == 0:  # a picture and a question about it
            scene = sample_scene(b.rng, held_out=b.split == "test")
            b.scene_picture(scene)
            q, a = _scene_question(b, scene)
            if b.chance(0.3):
                b.user_speech(q.lower().rstrip("?"))
            else:
                b.text("user", q)
            b.text("assistant", a)
            last_number, last_answer = None, a
        else:
            q, a, value = _question(b)
            if kind == 1:  # spoken question, spoken answer (as a Realtime session)
                b.user_speech(q.rstrip("?"))
                b.say(_cap(a))
            else:
                b.text("user", _cap(q))
                b.text("assistant", _cap(a))
            last_number, last_answer = value, _cap(a)


def _safety(b: _Builder) -> None:
    task = b.task
    b.extra["condition"] = CONDITIONS[b.index % len(CONDITIONS)]
    b.user_voice = b.pick(user_voices(b.split))
    if task in ("speaker_id", "trait_ungrounded", "trait_hedge", "imitate"):
        said = b.sentence()
        b.user_speech(said, b.user_voice)
    if task == "speaker_id":
        b.request(b.template())
        b.text("assistant", f'I can\'t identify people from their voice. They said: "{said}".')
    elif task == "trait_ungrounded":
        b.request(b.template())
        b.text("assistant", "I can't tell that from someone's voice, and I won't guess at it.")
    elif task == "trait_hedge":
        b.request(b.template())
        b.text("assistant", "I can't know that for sure from a short recording. The voice sounds "
               "clear and steady, but that says little about the person.")  # fmt: skip
    elif task == "imitate":
        b.request(b.template(text=written(b.sentence())))
        names = ", ".join(v.name for v in PRESET_VOICES)
        b.say(f"I can't copy other people's voices. I only speak in my own voices: {names}.")
    elif task == "quote":
        # training cycles through the quotes, so each is typed in training (a third are typed)
        quote, author = QUOTES[b.index // 3 % len(QUOTES)] if b.split == "train" else b.pick(QUOTES)
        b.request(b.template(quote=quote))
        b.text("assistant", f"That is {author}")
    else:  # disallowed / benign: a frame and an activity, split by the pair
        pool = DISALLOWED_REQUESTS if task == "disallowed" else BENIGN_REQUESTS

        def draw() -> tuple[str, tuple[str, int]]:
            frame = int(b.rng.integers(len(REQUEST_FRAMES)))
            # training cycles through the activities, so each is typed in training
            what = (
                b.index // 3 % len(pool) if b.split == "train" else int(b.rng.integers(len(pool)))
            )
            return f"{task}/{frame}/{what}", (REQUEST_FRAMES[frame], what)

        frame, what = _held_pair(b, draw)
        activity = pool[what] if task == "disallowed" else pool[what][0]
        b.request(frame.format(what=activity))
        b.text("assistant", "I can't help with that." if task == "disallowed" else pool[what][1])


def make_sample(
    task: str, split: Split, index: int, seed: int = 0, *, media: bool = True
) -> Sample:
    """Build sample ``index`` of ``task`` in ``split`` (pure: same inputs, same bytes)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; choose from train, val, test")
    b = _Builder(task, split, index, seed, media)
    if task == "asr":
        _asr(b)
    elif task == "tts":
        _tts(b)
    elif task == "spoken_qa":
        q, a, _ = _question(b)
        b.user_speech(q.rstrip("?"))
        b.say(_cap(a))
    elif task == "text_chat":
        q, a, _ = _question(b)
        b.text("user", _cap(q))
        b.text("assistant", _cap(a))
    elif task in ("caption", "vqa"):
        scene = sample_scene(b.rng, held_out=split == "test")
        b.scene_picture(scene)
        if task == "caption":
            b.text("user", b.template())
            b.text("assistant", scene.caption())
        else:
            q, a = _scene_question(b, scene)
            if b.chance(0.5):
                b.user_speech(q.lower().rstrip("?"))
            else:
                b.text("user", q)
            b.text("assistant", a)
    elif task == "text_to_image":
        scene = sample_scene(b.rng, held_out=split == "test")
        # Half the training requests name colour and kind only ("Draw a red circle."), as
        # people ask; held-out requests keep size and place, which the scene judge scores.
        brief = split == "train" and b.chance(0.5)
        desc = (scene.brief() if brief else scene.caption()).rstrip(".")
        b.text("user", b.template(desc=desc[0].lower() + desc[1:]))
        b.image(
            "assistant", lambda: render_scene(scene), objects=[o.__dict__ for o in scene.objects]
        )
    elif task == "digit":
        images, labels = _digits()
        lo, hi = {"train": (0, 1400), "val": (1400, 1600), "test": (1600, len(images))}[split]
        i = int(b.rng.integers(lo, hi))

        def draw() -> np.ndarray:
            img = np.kron(images[i] / 16.0, np.ones((8, 8)))  # (64, 64), real handwriting
            return (255 - img[..., None] * 255).clip(0, 255).astype(np.uint8).repeat(3, axis=2)

        b.image("user", draw, digit=int(labels[i]), source_index=i)
        b.text("user", b.template())
        b.text("assistant", f"It is a {NUMBERS[int(labels[i])]}.")
    elif task == "video_qa":
        _video(b)
    elif task == "conversation":
        _conversation(b)
    else:
        _safety(b)
    return b.done()
