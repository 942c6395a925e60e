"""``omniflex chat``: talk to an omni model in the terminal — text, speech, images and video in;
text as it is generated, speech (WAV) and images (PNG) out.

One ``Session`` holds the whole conversation (its KV cache), so each answer costs only the new
turn. Lines are read from stdin, so a script can drive it (``printf 'hi\\n/quit\\n' | omniflex
chat``). Commands::

    /audio PATH   attach a WAV/FLAC file (any rate; resampled to 16 kHz) to the next message
    /image PATH   attach a PNG/JPEG file (resized to 64x64)
    /video PATH   attach an MP4 clip (its frames are resized to 64x64 if need be)
    /send         send the attachments without text
    /voice NAME   speak in this preset voice (and switch to spoken answers)
    /speak        spoken answers (text leads, then the speech; saved as WAV)
    /text         written answers only
    /reset        forget the conversation
    /help         this list
    /quit         leave (so does end of input)

A bad command or file prints a line starting ``error:`` and the chat goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from omniflex.common.voices import PRESET_VOICE_NAMES

__all__ = ["ChatShell", "add_parser", "run_chat"]

COMMANDS_HELP = """commands:
  /audio PATH   attach a WAV/FLAC file to the next message
  /image PATH   attach a PNG/JPEG file (resized to 64x64)
  /video PATH   attach an MP4 clip
  /send         send the attachments without text
  /voice NAME   speak in this preset voice ({voices})
  /speak        spoken answers      /text   written answers only
  /reset        new conversation    /help   this list     /quit   leave"""


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "chat"
HELP = "talk to an omni model in the terminal (text, speech, images, video)"


class ChatShell:
    """The chat's state over one ``Session``: pending attachments, voice, answer mode.

    Args:
        assistant: a loaded ``Assistant``.
        out: folder for answers' WAV and PNG files.
        voice: preset voice for spoken answers.
        speak: start with spoken answers.
        stdout: where answers are written.
        max_new_tokens: the longest answer.
    """

    def __init__(
        self,
        assistant: Any,
        out: str | Path = "runs/chat",
        *,
        voice: str = "aria",
        speak: bool = False,
        stdout: TextIO | None = None,
        max_new_tokens: int = 800,
    ) -> None:
        self.assistant = assistant
        self.out = Path(out)
        self.voice = assistant.check_voice(voice)
        self.speak = speak
        self.stdout = stdout or sys.stdout
        self.max_new_tokens = max_new_tokens
        self.session = assistant.session()
        self.parts: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.saved = 0

    def say(self, text: str = "", end: str = "\n") -> None:
        self.stdout.write(text + end)
        self.stdout.flush()

    # ------------------------------------------------------------------ input
    def handle(self, line: str) -> bool:
        """Act on one input line; ``False`` when the chat should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            try:
                self.send(line)
            except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat
                self.say("\n[interrupted]")
            return True
        command, _, arg = line.partition(" ")
        arg = arg.strip()
        try:
            return self._command(command, arg)
        except (ValueError, FileNotFoundError, OSError) as err:
            self.say(f"error: {err}")
            return True

    def _command(self, command: str, arg: str) -> bool:
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            self.say(COMMANDS_HELP.format(voices=", ".join(self.assistant.voices)))
        elif command in ("/audio", "/image", "/video"):
            if not arg:
                raise ValueError(f"{command} needs a file path, e.g. `{command} clip`")
            self.attach(command[1:], arg)
        elif command == "/send":
            if not self.parts:
                raise ValueError("nothing to send: attach a file first (/audio, /image, /video)")
            self.send("")
        elif command == "/voice":
            if not arg:
                raise ValueError(f"/voice needs a name: one of {', '.join(self.assistant.voices)}")
            self.voice = self.assistant.check_voice(arg)
            self.speak = True
            self.say(f"[spoken answers in {self.voice}]")
        elif command == "/speak":
            self.speak = True
            self.say(f"[spoken answers in {self.voice}]")
        elif command == "/text":
            self.speak = False
            self.say("[written answers]")
        elif command == "/reset":
            self.session = self.assistant.session()
            self.parts, self.files = [], {}
            self.say("[new conversation]")
        else:
            raise ValueError(f"unknown command {command}; /help lists them")
        return True

    def attach(self, kind: str, path: str) -> None:
        """Read ``path`` now (so a bad file fails here, not at the answer) and hold it for the
        next message."""
        from omniflex.media import read_audio, read_image, to_png_bytes, to_wav_bytes

        index = len(self.parts)
        if kind == "audio":
            samples = read_audio(path)  # any rate, channels averaged -> 16 kHz mono
            name, data = f"audio_{index}.wav", to_wav_bytes(samples)
            detail = f"{len(samples) / 16_000:.1f} s"
        elif kind == "image":
            name, data = f"image_{index}.png", to_png_bytes(read_image(path, size=64))
            detail = "64x64"
        else:
            name, data, detail = f"video_{index}.mp4", *_video_64(path)
        self.files[name] = data
        self.parts.append({"type": kind, "file": name})
        self.say(f"[attached {kind} {path} ({detail}); it goes with your next message]")

    # ------------------------------------------------------------------ output
    def send(self, text: str) -> None:
        """Send the pending attachments and ``text`` as one user turn and stream the answer."""
        parts = [*self.parts, *([{"type": "text", "text": text}] if text else [])]
        files = self.files
        self.parts, self.files = [], {}
        before = len(self.session.tokens)
        try:
            self.session.add_message({"messages": [{"role": "user", "content": parts}]}, files)
            self._answer()
        except (ValueError, RuntimeError) as err:  # an unreadable file; a full context
            self.session.generator.truncate(min(before, len(self.session.tokens)))
            hint = " — /reset to start a new conversation" if "capacity" in str(err) else ""
            self.say(f"error: {err}{hint}")

    def _answer(self) -> None:
        from omniflex.model.assistant import AudioDelta, ImageOutput, TextDelta

        voice = self.voice if self.speak else None
        modalities = ("text", "audio", "image") if self.speak else ("text", "image")
        audio, images, spoken_voice = [], [], voice
        self.say("assistant: ", end="")
        for event in self.session.respond(
            voice=voice, modalities=modalities, max_new_tokens=self.max_new_tokens
        ):
            if isinstance(event, TextDelta):
                self.say(event.text, end="")
            elif isinstance(event, AudioDelta):
                audio.append(event.samples)
                spoken_voice = event.voice or spoken_voice
            elif isinstance(event, ImageOutput):
                images.append(event.pixels)
        self.say()
        self._save(audio, images, spoken_voice)
        if self.session.stop_reason == "max_seq_len":
            self.say("[the conversation fills the model's context: /reset to start over]")
        elif self.session.stop_reason == "max_new_tokens":
            self.say(f"[answer cut at {self.max_new_tokens} tokens]")

    def _save(self, audio: list[Any], images: list[Any], voice: str | None) -> None:
        import numpy as np

        from omniflex.media import write_audio, write_image

        if audio or images:
            self.out.mkdir(parents=True, exist_ok=True)
        if audio:
            samples = np.concatenate(audio)
            self.saved += 1
            path = write_audio(self.out / f"answer_{self.saved:03d}.wav", samples)
            self.say(f"[audio: {path} ({len(samples) / 16_000:.1f} s, voice {voice})]")
        for pixels in images:
            self.saved += 1
            path = write_image(self.out / f"answer_{self.saved:03d}.png", pixels)
            self.say(f"[image: {path}]")


def _video_64(path: str) -> tuple[bytes, str]:
    """The MP4's bytes, re-encoded at 64x64 if its frames are another size."""
    import numpy as np
    from PIL import Image

    from omniflex.media import read_video, video_bytes

    raw = Path(path).read_bytes() if Path(path).is_file() else None
    frames, audio, fps = read_video(path)  # raises MediaError (a ValueError) naming the file
    detail = f"{len(frames)} frames at {fps:g} fps"
    if frames.shape[1:3] == (64, 64) and raw is not None:
        return raw, detail
    small = np.stack(
        [np.asarray(Image.fromarray(f).resize((64, 64), Image.Resampling.BICUBIC)) for f in frames]
    )
    rate = max(1, round(fps))
    return video_bytes(small, rate, audio), detail + ", resized to 64x64"


def run_chat(
    model: str = "tiny",
    *,
    voice: str = "aria",
    out: str | Path = "runs/chat",
    precision: str | None = None,
    speak: bool = False,
    max_new_tokens: int = 800,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    compile: bool = False,
) -> int:
    """Load ``model`` and chat over ``stdin``/``stdout`` until ``/quit`` or end of input
    (``compile``: decode through the compiled forward)."""
    from omniflex.model.assistant import Assistant

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    interactive = stdin.isatty()
    assistant = Assistant.from_pretrained(model, precision=precision, compile=compile)
    shell = ChatShell(
        assistant, out, voice=voice, speak=speak, stdout=stdout, max_new_tokens=max_new_tokens
    )
    if interactive:
        import readline  # noqa: F401 — line editing and history for input()-style reading

        shell.say(f"omniflex chat with {assistant.name} — /help for commands, /quit to leave")
    while True:
        if interactive:
            shell.say("you: ", end="")
        line = stdin.readline()
        if not line or not shell.handle(line):
            break
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return run_chat(
        args.model, voice=args.voice, out=args.out, precision=args.precision, speak=args.speak,
        max_new_tokens=args.max_new_tokens, compile=args.compile,
    )  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex chat`` on the top-level parser's subparsers."""
    chat = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "An interactive chat over one conversation with a shipped model (default tiny) or a "
            "model folder. Type text; /audio, /image and /video PATH attach files to the next "
            "message; /speak and /text switch between spoken and written answers; /voice NAME "
            "picks the preset voice; /reset, /help, /quit. Answers stream as they are "
            "generated; speech is saved as WAV and images as PNG under --out. Reads stdin, so "
            "it can be scripted: printf 'hello\\n/quit\\n' | omniflex chat"
        ),
    )  # fmt: skip
    chat.add_argument("--model", default="tiny", help="model name or folder (default: tiny)")
    chat.add_argument(
        "--voice", default="aria", choices=list(PRESET_VOICE_NAMES),
        help="preset voice for spoken answers (default: aria)",
    )  # fmt: skip
    chat.add_argument("--speak", action="store_true", help="start with spoken answers")
    chat.add_argument("--out", default="runs/chat", help="where WAV/PNG answers go (runs/chat)")
    chat.add_argument(
        "--precision", choices=["float32"],
        help="run the weights in float32 (default: as trained, flex16+5)",
    )  # fmt: skip
    chat.add_argument("--max-new-tokens", type=int, default=800, help="longest answer (800)")
    chat.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    chat.add_argument(
        "--compile", action="store_true",
        help="decode through the torch.compile'd forward (faster per token after a one-off "
        "compilation, quick once inductor's cache holds it)",
    )  # fmt: skip
    chat.set_defaults(func=_cmd_chat)
    return chat
