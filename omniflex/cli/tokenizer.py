"""``omniflex tokenizer train | roundtrip``: train a tokenizer; round-trip a media file through
one (``omniflex bench tokenizers`` measures the shipped ones).

The tokenizers and their trainers are imported when a command runs, so that building the parser
(every ``omniflex`` call, ``--help`` included) does not load them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "print_report", "roundtrip", "train"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "tokenizer"
HELP = "train tokenizers; round-trip a media file through one"


def train(
    kind: str,
    corpus: str,
    out: str | None,
    *,
    steps: int | None = None,
    precision: str = "float32",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one tokenizer on the corpus's train split; returns its metadata."""
    out = out or f"runs/tokenizers/{kind}"
    # Recipe defaults unless given on the command line.
    options = {k: v for k, v in (("steps", steps), ("threads", threads)) if v is not None}
    if kind == "text":
        from omniflex.tokenizers.text import train_text_tokenizer

        if precision != "float32":
            raise ValueError(
                "--precision applies to the neural tokenizers (image, audio), not text"
            )
        tok = train_text_tokenizer(Path(corpus), out=Path(out))
    elif kind == "audio":
        from omniflex.tokenizers.audio_train import AudioTrainConfig, train_audio_codec

        train_config = AudioTrainConfig(precision=precision, **options)
        tok = train_audio_codec(corpus, out, train=train_config)
    elif kind == "image":
        from omniflex.tokenizers.image_train import train_image_tokenizer

        tok = train_image_tokenizer(out, precision=precision, **options)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose text, image or audio")
    return {"out": out, **tok.metadata}


def _kind_of(path: Path) -> str:
    from omniflex.media.probe import validate_media

    kind = validate_media(path).kind
    return {"wav": "audio", "flac": "audio", "png": "image", "jpeg": "image", "mp4": "video"}[kind]


def roundtrip(path: str, tokenizer: str | None = None, out: str | None = None) -> dict[str, Any]:
    """Encode and decode one file; write the reconstruction beside it; return quality figures.

    WAV/FLAC go through the audio codec, PNG/JPEG through the image tokenizer, MP4 through the
    video tokenizer (both), and ``.txt`` through the text tokenizer."""
    from omniflex.tokenizers import load_tokenizer

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    kind = "text" if src.suffix.lower() == ".txt" else _kind_of(src)
    stem = src.with_name(src.stem + ".recon")
    report: dict[str, Any] = {"input": str(src), "kind": kind}
    if kind == "text":
        tok = load_tokenizer(tokenizer or "text")
        text = src.read_text(encoding="utf-8")
        ids = tok.encode(text)
        back = tok.decode(ids)
        dest = Path(out or f"{stem}.txt")
        dest.write_text(back, encoding="utf-8")
        report |= {
            "tokens": len(ids),
            "bytes_per_token": round(len(text.encode()) / max(1, len(ids)), 3),
            "exact": back == text,
        }
    elif kind == "audio":
        from omniflex.eval.audio_metrics import mel_cepstral_distortion, speaker_similarity
        from omniflex.media.audio import read_audio, write_audio

        codec = load_tokenizer(tokenizer or "audio")
        audio = read_audio(src)
        start = time.perf_counter()
        codes = codec.encode(audio)
        recon = codec.decode(codes)[0].numpy()[: len(audio)]
        elapsed = time.perf_counter() - start
        dest = write_audio(out or f"{stem}.wav", recon)
        report |= {
            "seconds": round(len(audio) / codec.sample_rate, 2),
            "tokens": int(codes.numel()),
            "tokens_per_second": codec.frame_rate * codec.num_codebooks,
            "x_realtime": round(len(audio) / codec.sample_rate / elapsed, 1),
            "mcd_db": round(mel_cepstral_distortion(audio, recon), 3),
            "speaker_similarity": round(speaker_similarity(audio, recon), 4),
        }
    elif kind == "image":
        from omniflex.media.image import read_image, write_image

        tok = load_tokenizer(tokenizer or "image")
        size = tok.config.image_size
        image = read_image(src, size=size)
        codes = tok.encode(image)
        recon = np.asarray(tok.decode(codes))
        dest = write_image(out or f"{stem}.png", recon)
        report |= {"tokens": int(np.prod(codes.shape)), "psnr_db": round(_psnr(image, recon), 2)}
        from omniflex.media.probe import validate_media

        info = validate_media(src)
        if (info.width, info.height) != (size, size):
            report["resized_from"] = [info.width, info.height]  # PSNR is at the tokenizer's size
    else:  # video
        from omniflex.media.video import read_video
        from omniflex.tokenizers.video import VideoTokenizer

        image_tok = load_tokenizer(tokenizer or "image")
        codec = load_tokenizer("audio")
        video = VideoTokenizer(image_tok, codec)
        tokens = video.encode(src)
        frames, _, _ = read_video(src, fps=video.fps)
        dest = video.decode_to_file(tokens, out or f"{stem}.mp4")
        recon_frames, _ = video.decode(tokens)
        small = np.stack([_resize(f, recon_frames.shape[1]) for f in frames])
        report |= {
            "frames": int(tokens.image_codes.shape[0]),
            "fps": video.fps,
            "image_tokens": int(tokens.image_codes.numel()),
            "audio_tokens": 0 if tokens.audio_codes is None else int(tokens.audio_codes.numel()),
            "psnr_db": round(_psnr(small, recon_frames), 2),
        }
    report["output"] = str(dest)
    return report


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if frame.shape[:2] == (size, size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key:<20} {value}")


def _cmd_train(args: argparse.Namespace) -> int:
    meta = train(
        args.kind, args.corpus, args.out, steps=args.steps, precision=args.precision,
        threads=args.threads,
    )  # fmt: skip
    print_report(meta, args.json)
    return 0


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    print_report(roundtrip(args.file, args.tokenizer, args.out), args.json)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex tokenizer train | roundtrip`` on the top-level subparsers."""
    # Imported here, not at the top: only `omniflex tokenizer ...` pays for it (torch).
    from omniflex.flex.config import RECIPES

    tok = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "Modality tokenizers: byte-level BPE for text, an FSQ VQ autoencoder for 64x64 "
            "images, a causal streaming audio codec (16 kHz, 25 frames/s, 2 codebooks), and "
            "video as time-interleaved image and audio codes."
        ),
    )  # fmt: skip
    tok_sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    ttrain = tok_sub.add_parser(
        "train", help="train a tokenizer on the corpus's train split",
        description=(
            "Train the text, image or audio tokenizer and save it as a folder (config.json + "
            "model.safetensors in flex16, or tokenizer.json for text). Text and audio read the "
            "corpus (build it with `omniflex data build`); the image tokenizer renders its own "
            "scenes and uses scikit-learn's digits. Losses go to OUT/train_log.jsonl."
        ),
    )  # fmt: skip
    ttrain.add_argument("kind", choices=["text", "image", "audio"])
    ttrain.add_argument("--corpus", default="data/tiny", help="corpus folder (default: data/tiny)")
    ttrain.add_argument("--out", help="output folder (default: runs/tokenizers/KIND)")
    ttrain.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    ttrain.add_argument(
        "--precision", default="float32", choices=["float32", *RECIPES],
        help="train in float32 or in a Flexpoint recipe (default: float32)",
    )  # fmt: skip
    ttrain.add_argument("--threads", type=int, help="CPU threads (default: the recipe's)")
    ttrain.add_argument("--json", action="store_true", help="print the result as JSON")
    ttrain.set_defaults(func=_cmd_train)
    trt = tok_sub.add_parser(
        "roundtrip", help="encode and decode a file, write the reconstruction, print figures",
        description=(
            "Encode FILE to tokens and back with the shipped tokenizer of its kind (WAV/FLAC: "
            "audio codec; PNG/JPEG: image; MP4: video; .txt: text). The reconstruction is "
            "written next to FILE as FILE.recon.EXT; the figures (tokens, PSNR, mel-cepstral "
            "distortion, speaker similarity, exactness) are printed."
        ),
    )  # fmt: skip
    trt.add_argument("file", help="a WAV, FLAC, PNG, JPEG, MP4 or UTF-8 .txt file")
    trt.add_argument("--tokenizer", help="tokenizer folder or shipped name (default: by kind)")
    trt.add_argument("--out", help="where to write the reconstruction")
    trt.add_argument("--json", action="store_true", help="print the figures as JSON")
    trt.set_defaults(func=_cmd_roundtrip)
    return tok
