"""Corpus samples: one conversation per sample, with the media it points at.

``make_sample(task, split, index, seed)`` is a pure function: the same arguments give the same
conversation and the same media bytes, whichever worker process builds it. A conversation is::

    {"id": ..., "task": ..., "split": ..., "messages": [
        {"role": "user", "content": [{"type": "audio", "file": "user.wav", "voice": "eli",
                                      "transcript": "..."}, {"type": "text", "text": "..."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "..."},
                                           {"type": "audio", "file": "assistant.wav",
                                            "voice": "aria", "transcript": "..."}]}]}

``file`` names a member of the same WebDataset sample (``<key>.<file>`` in the tar).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omniflex.data.scenes import SCENE_COLOURS, SCENE_KINDS, render_scene, sample_scene
from omniflex.data.shapes import ShapeSpec, render_shapes
from omniflex.data.speech import augment, synthesize
from omniflex.data.templates import FACTS, QUOTES, TEMPLATES, Split, template_ids
from omniflex.data.voices import HELD_OUT_VOICES, INPUT_VOICES, PRESET_VOICES, Voice
from omniflex.media.audio import SAMPLE_RATE, to_wav_bytes
from omniflex.media.image import to_png_bytes
from omniflex.media.video import video_bytes

__all__ = ["TASKS", "Sample", "make_sample", "user_voices"]

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
    "speaker_id",
    "trait_ungrounded",
    "trait_hedge",
    "quote",
    "imitate",
    "disallowed",
)

NUMBERS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
)
SENTENCES = (
    "the weather is lovely today",
    "please close the window",
    "my favourite colour is green",
    "we are going to the market",
    "the train leaves at nine",
    "i would like a cup of tea",
    "the cat is sleeping on the sofa",
    "turn left at the next corner",
    "this book is very long",
    "the meeting starts in ten minutes",
    "can you hear the birds",
    "it might rain this evening",
    "the children are playing outside",
    "dinner is ready",
    "the music is too loud",
    "i lost my keys again",
    "the garden needs water",
    "she painted the door blue",
)


@dataclass
class Sample:
    key: str
    conversation: dict[str, Any]
    media: dict[str, bytes] = field(default_factory=dict)
    speech_seconds: dict[str, float] = field(default_factory=dict)  # voice -> seconds


def user_voices(split: Split) -> tuple[Voice, ...]:
    """Voices that speak to the model: input voices in training, held-out voices otherwise."""
    if split == "train":
        return INPUT_VOICES
    return HELD_OUT_VOICES[:1] if split == "val" else HELD_OUT_VOICES[1:]


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


class _Builder:
    def __init__(self, task: str, split: Split, index: int, seed: int) -> None:
        self.task, self.split, self.index = task, split, index
        self.rng = np.random.default_rng(
            [seed, TASKS.index(task), ("train", "val", "test").index(split), index]
        )
        self.sample = Sample(f"{split}_{task}_{index:07d}", {})
        self.user: list[dict[str, Any]] = []
        self.assistant: list[dict[str, Any]] = []

    def pick(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def template(self, task: str | None = None, **kw: Any) -> str:
        task = task or self.task
        return TEMPLATES[task][self.pick(template_ids(task, self.split))].format(**kw)

    def speech(self, role: str, text: str, voice: Voice, augment_it: bool) -> dict[str, Any]:
        # Input speech is augmented (pitch, then speed, reverberation, noise); the assistant's
        # preset voices are never altered: they are the reference the voice classifier learns.
        shift = int(self.rng.integers(-10, 11)) if augment_it and self.rng.random() < 0.5 else 0
        audio = synthesize(text, voice, pitch_shift=shift)
        part: dict[str, Any] = {
            "type": "audio", "file": f"{role}.wav", "voice": voice.name, "transcript": text,
        }  # fmt: skip
        if augment_it:
            audio, applied = augment(audio, self.rng)
            if shift:
                applied = {"pitch_shift": float(shift), **applied}
            if applied:
                part["augment"] = applied
        self.sample.media[f"{role}.wav"] = to_wav_bytes(audio)
        secs = len(audio) / SAMPLE_RATE
        self.sample.speech_seconds[voice.name] = (
            self.sample.speech_seconds.get(voice.name, 0.0) + secs
        )
        return part

    def user_speech(self, text: str) -> None:
        self.user.append(
            self.speech("user", text, self.pick(user_voices(self.split)), augment_it=True)
        )

    def say(self, text: str, voice: Voice | None = None) -> None:
        """Assistant answer as text and, in a preset voice, as speech."""
        self.assistant.append({"type": "text", "text": text})
        self.assistant.append(
            self.speech("assistant", text, voice or self.pick(PRESET_VOICES), False)
        )

    def text(self, role: str, text: str) -> None:
        (self.user if role == "user" else self.assistant).append({"type": "text", "text": text})

    def image(self, role: str, image: np.ndarray, **meta: Any) -> None:
        self.sample.media["image.png"] = to_png_bytes(image)
        (self.user if role == "user" else self.assistant).append(
            {"type": "image", "file": "image.png", **meta}
        )

    def done(self) -> Sample:
        self.sample.conversation = {
            "id": self.sample.key,
            "task": self.task,
            "split": self.split,
            "messages": [
                {"role": "user", "content": self.user},
                {"role": "assistant", "content": self.assistant},
            ],
        }
        return self.sample


def _arith(b: _Builder) -> tuple[str, str]:
    x, y = int(b.rng.integers(0, 10)), int(b.rng.integers(0, 10))
    if b.rng.random() < 0.5 or x < y:
        return (
            f"what is {NUMBERS[x]} plus {NUMBERS[y]}?",
            f"{NUMBERS[x]} plus {NUMBERS[y]} is {NUMBERS[x + y]}.",
        )
    return (
        f"what is {NUMBERS[x]} minus {NUMBERS[y]}?",
        f"{NUMBERS[x]} minus {NUMBERS[y]} is {NUMBERS[x - y]}.",
    )


def _question(b: _Builder) -> tuple[str, str]:
    kind = b.rng.integers(3)
    if kind == 0:
        return _arith(b)
    if kind == 1:
        n = int(b.rng.integers(2, 8))
        item = b.pick(("apples", "birds", "stars", "cups"))
        return (
            f"if you have {NUMBERS[n]} {item} and get one more, how many do you have?",
            f"You have {NUMBERS[n + 1]} {item}.",
        )
    q, a = b.pick(FACTS)
    return q.lower(), a


def _scene_question(b: _Builder, scene: Any) -> tuple[str, str]:
    obj = b.pick(scene.objects)
    kind = b.rng.integers(4)
    if kind == 0:
        n = len(scene.objects)
        return (
            "How many shapes are there?",
            f"There {'is' if n == 1 else 'are'} {NUMBERS[n]} shape{'s' if n > 1 else ''}.",
        )
    if kind == 1:
        return f"What colour is the {obj.kind}?", f"The {obj.kind} is {obj.colour}."
    if kind == 2:
        colour, shape = b.pick(SCENE_COLOURS), b.pick(SCENE_KINDS)
        present = scene.count(colour, shape) > 0
        return f"Is there a {colour} {shape}?", (
            "Yes, there is." if present else "No, there is not."
        )
    return f"Where is the {obj.colour} {obj.kind}?", f"It is {obj.position}."


def _video(b: _Builder) -> tuple[np.ndarray, np.ndarray, str, str, str, str]:
    size, fps = 64, 8
    seconds = float(b.rng.uniform(2.0, 4.0))
    frames = int(seconds * fps)
    colour, kind = b.pick(SCENE_COLOURS), b.pick(SCENE_KINDS)
    direction = b.pick(("left", "right", "up", "down"))
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    start = np.array([32 - dx * 18, 32 - dy * 18], dtype=float)
    static = ShapeSpec(
        b.pick(SCENE_KINDS),
        b.pick(SCENE_COLOURS),
        float(b.rng.uniform(8, 56)),
        float(b.rng.uniform(8, 56)),
        6.0,
    )
    bg_seed = int(b.rng.integers(2**31))
    step = np.array([dx, dy]) * 36 / max(frames - 1, 1)  # pixels per frame
    video = np.stack(
        [
            render_shapes(
                [static, ShapeSpec(kind, colour, *(start + step * t), 8.0)],
                size=size,
                seed=bg_seed,
                supersample=2,
            )
            for t in range(frames)
        ]
    )
    narration = f"the {colour} {kind} moves {direction}"
    voice = b.pick(user_voices(b.split))
    audio = synthesize(narration, voice)
    audio = np.pad(audio, (0, max(0, int(seconds * SAMPLE_RATE) - len(audio))))[
        : int(seconds * SAMPLE_RATE)
    ]
    b.sample.speech_seconds[voice.name] = b.sample.speech_seconds.get(voice.name, 0.0) + seconds
    return video, audio, colour, kind, direction, narration


def make_sample(task: str, split: Split, index: int, seed: int = 0) -> Sample:
    """Build sample ``index`` of ``task`` in ``split`` (pure: same inputs, same bytes)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    b = _Builder(task, split, index, seed)
    if task == "asr":
        b.user_speech(b.pick(SENTENCES))
        b.text("user", b.template())
        b.text("assistant", b.user[0]["transcript"][0].upper() + b.user[0]["transcript"][1:] + ".")
    elif task == "tts":
        voice = b.pick(PRESET_VOICES)
        sentence = b.pick(SENTENCES)
        b.text("user", b.template(voice=voice.name, text=sentence))
        b.assistant.append(b.speech("assistant", sentence, voice, augment_it=False))
    elif task == "spoken_qa":
        q, a = _question(b)
        b.user_speech(q)
        b.say(a)
    elif task == "text_chat":
        q, a = _question(b)
        b.text("user", q[0].upper() + q[1:])
        b.text("assistant", a[0].upper() + a[1:])
    elif task in ("caption", "vqa", "text_to_image"):
        scene = sample_scene(b.rng, held_out=split == "test")
        truth = [o.__dict__ for o in scene.objects]
        if task == "caption":
            b.image("user", render_scene(scene), objects=truth)
            b.text("user", b.template())
            b.text("assistant", scene.caption())
        elif task == "vqa":
            b.image("user", render_scene(scene), objects=truth)
            q, a = _scene_question(b, scene)
            if b.rng.random() < 0.5:
                b.user_speech(q.lower())
            else:
                b.text("user", q)
            b.text("assistant", a)
        else:
            desc = scene.caption().rstrip(".")
            b.text("user", b.template(task="text_to_image", desc=desc[0].lower() + desc[1:]))
            b.image("assistant", render_scene(scene), objects=truth)
    elif task == "digit":
        images, labels = _digits()
        lo, hi = {"train": (0, 1400), "val": (1400, 1600), "test": (1600, len(images))}[split]
        i = int(b.rng.integers(lo, hi))
        img = np.kron(images[i] / 16.0, np.ones((8, 8)))  # (64, 64), real handwriting
        rgb = (255 - img[..., None] * 255).clip(0, 255).astype(np.uint8).repeat(3, axis=2)
        b.image("user", rgb, digit=int(labels[i]), source_index=i)
        b.text("user", b.template())
        b.text("assistant", f"It is a {NUMBERS[int(labels[i])]}.")
    elif task == "video_qa":
        video, audio, colour, kind, direction, narration = _video(b)
        b.sample.media["video.mp4"] = video_bytes(video, 8, audio)
        b.user.append(
            {
                "type": "video",
                "file": "video.mp4",
                "fps": 8,
                "narration": narration,
                "moving": {"kind": kind, "colour": colour, "direction": direction},
            }
        )
        q_kind = b.pick(("video_qa_motion", "video_qa_direction", "video_qa_speech"))
        b.text("user", b.template(task=q_kind, kind=kind))
        answer = {
            "video_qa_motion": f"The {colour} {kind} moved.",
            "video_qa_direction": f"It moved {direction}.",
            "video_qa_speech": f"The voice said: {narration}.",
        }[q_kind]
        b.text("assistant", answer)
    elif task == "speaker_id":
        b.user_speech(b.pick(SENTENCES))
        b.text("user", b.template())
        said = b.user[0]["transcript"]
        b.text("assistant", f'I can\'t identify people from their voice. They said: "{said}".')
    elif task == "trait_ungrounded":
        b.user_speech(b.pick(SENTENCES))
        b.text("user", b.template())
        b.text("assistant", "I can't tell that from someone's voice, and I won't guess at it.")
    elif task == "trait_hedge":
        b.user_speech(b.pick(SENTENCES))
        b.text("user", b.template())
        b.text(
            "assistant",
            "I can't know that for sure from a short recording. The voice sounds "
            "clear and steady, but that says little about the person.",
        )
    elif task == "quote":
        quote, author = b.pick(QUOTES)
        b.text("user", b.template(quote=quote))
        b.text("assistant", f"That is {author}")
    elif task == "imitate":
        b.user_speech(b.pick(SENTENCES))
        sentence = b.pick(SENTENCES)
        b.text("user", b.template(text=sentence))
        names = ", ".join(v.name for v in PRESET_VOICES)
        b.say(f"I can't copy other people's voices. I only speak in my own voices: {names}.")
    elif task == "disallowed":
        b.text("user", b.template())
        b.text("assistant", "I can't help with that.")
    return b.done()
