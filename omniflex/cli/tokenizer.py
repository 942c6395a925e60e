"""``omniflex tokenizer train|roundtrip`` and ``omniflex bench tokenizers``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["print_report", "roundtrip", "train"]


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
