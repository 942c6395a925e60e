"""``omniflex generate``: one prompt to a trained omni model, answers saved as text, WAV and PNG.

The model and media code are imported when the command runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omniflex.common.voices import PRESET_VOICE_NAMES

__all__ = ["add_parser", "generate"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "generate"
HELP = "one prompt to a trained omni model; answers saved as WAV/PNG"


def _user_message(text: str | None, audio: str | None, image: str | None) -> tuple[dict, dict]:
    from omniflex.media.audio import read_audio, to_wav_bytes
    from omniflex.media.image import read_image, to_png_bytes

    content: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    if audio:
        files["user.wav"] = to_wav_bytes(read_audio(audio))
        content.append({"type": "audio", "file": "user.wav"})
    if image:
        files["image.png"] = to_png_bytes(read_image(image, size=64))
        content.append({"type": "image", "file": "image.png"})
    if text:
        content.append({"type": "text", "text": text})
    if not content:
        raise ValueError("give a prompt: text, --audio FILE and/or --image FILE")
    return {"messages": [{"role": "user", "content": content}]}, files


def load_assistant(model: str, *, precision: str | None = None) -> Any:
    """An ``Assistant`` from a shipped model's name, a model folder, or a training run folder
    (its latest checkpoint, exported on the fly)."""
    import tempfile

    from omniflex.model.assistant import Assistant

    path = Path(model)
    if (path / "checkpoints").is_dir() or (path / "meta.json").is_file():
        from omniflex.train.export import export_run

        folder = export_run(path, Path(tempfile.mkdtemp(prefix="omniflex-model-")) / path.name)
        return Assistant.from_pretrained(folder, precision=precision)
    return Assistant.from_pretrained(model, precision=precision)


def generate(
    model: str,
    text: str | None,
    *,
    audio: str | None = None,
    image: str | None = None,
    voice: str | None = None,
    out: str = "runs/generate",
    max_new_tokens: int = 400,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    precision: str | None = None,
) -> dict[str, Any]:
    """Answer one user turn with ``model`` (a shipped name, model folder or training run)."""
    from omniflex.model import SamplingConfig

    assistant = load_assistant(model, precision=precision)
    conversation, files = _user_message(text, audio, image)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    modalities = ("text", "audio", "image") if voice else ("text", "image")
    answer = assistant.answer(
        conversation, files, voice=voice, modalities=modalities, sampling=sampling,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save_answer(answer, out_dir) | {
        "tokens": answer.tokens,
        "seconds": round(answer.seconds, 2),
        "tokens_per_second": round(answer.tokens / max(answer.seconds, 1e-9), 1),
        "stop_reason": answer.stop_reason,
    }


def _save_answer(answer: Any, out_dir: Path) -> dict[str, Any]:
    from omniflex.media.audio import write_audio
    from omniflex.media.image import write_image

    result: dict[str, Any] = {"text": answer.text, "transcript": answer.transcript, "files": []}
    if answer.audio.size:
        path = write_audio(out_dir / "answer.wav", answer.audio, answer.sample_rate)
        result["files"].append(str(path))
        result["voice"] = answer.voice
    for i, pixels in enumerate(answer.images):
        result["files"].append(str(write_image(out_dir / f"answer_{i}.png", pixels)))
    (out_dir / "answer.json").write_text(json.dumps(result, indent=2))
    return result


def _cmd_generate(args: argparse.Namespace) -> int:
    result = generate(
        args.model, args.prompt, audio=args.audio, image=args.image, voice=args.voice,
        out=args.out, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, precision=args.precision,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex generate`` on the top-level subparsers."""
    gen = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "Send one user turn (text, and optionally an audio and/or an image file) to an omni "
            "model (the shipped default, a model folder or a training run) and print its "
            "answer. Spoken answers (--voice) and generated images are decoded and written to "
            "OUT; the result, with tokens/s, is printed as JSON."
        ),
    )  # fmt: skip
    gen.add_argument("prompt", nargs="?", help="the user's text")
    gen.add_argument(
        "--model", default="tiny",
        help="shipped model name, model folder, or training run folder (default: tiny)",
    )  # fmt: skip
    gen.add_argument(
        "--precision", choices=["float32"],
        help="run flex-trained weights dequantised in float32 (default: as trained)",
    )  # fmt: skip
    gen.add_argument("--audio", help="a WAV/FLAC file the user says")
    gen.add_argument("--image", help="a PNG/JPEG file the user shows")
    gen.add_argument("--voice", choices=list(PRESET_VOICE_NAMES), help="answer aloud in this voice")
    gen.add_argument("--out", default="runs/generate", help="where answers go (runs/generate)")
    gen.add_argument("--max-new-tokens", type=int, default=400)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=_cmd_generate)
    return gen
