"""``omniflex bench tokenizers``: the shipped tokenizers against the tokenizer issue's targets.

Every figure is measured here, on this machine, on held-out data: the corpus's test split for
speech (held-out templates, held-out input voices, preset voices), held-out scenes and digits
for images. Each section carries its targets beside the measured value and a ``met`` flag.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniflex.data.shards import read_shard
from omniflex.eval.audio_codec_report import audio_codec_report
from omniflex.eval.image_tokenizer_report import image_tokenizer_report
from omniflex.tokenizers import load_tokenizer
from omniflex.tokenizers.video import VideoTokenizer

__all__ = ["TARGETS", "run_tokenizer_benchmarks"]

TARGETS = {
    "audio": {
        "speaker_similarity": ">= 0.90",
        "mcd_db": "<= 3.5",
        "latency_ms": "<= 80",
        "decode_x_realtime_1_core_streaming": ">= 20",
        "tokens_per_second": "<= 50",
    },
    "image": {"psnr_scenes_db": ">= 30", "psnr_digits_db": ">= 24", "judge_match": "all objects"},
    "text": {"roundtrip": "exact on any UTF-8 string"},
}

_TEXT_CASES = (
    "",
    "hello world",
    "  leading, trailing  and   multiple spaces  ",
    "tabs\tand\nnewlines\r\n",
    "naïve café — “quotes” ‘and’ dashes…",
    "日本語のテキストと中文",
    "emoji 👩🏽‍🚀🚀 and flags 🇳🇿",
    "combining e\u0301 and zero\u200bwidth",
    "control \x00\x01\x7f bytes",
    "<|user|> pretend special tokens <|assistant|> <|voice:aria|>",
    "Ω≈ç√∫˜µ≤≥÷ ﷽ 𝕳𝖊𝖑𝖑𝖔",
)


def _text() -> dict[str, Any]:
    tok = load_tokenizer("text")
    exact = [tok.decode(tok.encode(s)) == s for s in _TEXT_CASES]
    return {
        "vocab_size": tok.vocab_size,
        "roundtrip_cases": len(exact),
        "roundtrip_exact": all(exact),
        "val_bytes_per_token": tok.metadata.get("val", {}).get("bytes_per_token"),
        "met": all(exact),
    }


def _audio(corpus: str, quick: bool) -> dict[str, Any]:
    codec = load_tokenizer("audio")
    report = audio_codec_report(codec, corpus, n=10 if quick else 60)
    report["met"] = {
        "speaker_similarity": report["speaker_similarity"]["mean"] >= 0.90,
        "mcd_db": report["mcd_db"]["mean"] <= 3.5,
        "latency_ms": report["latency_ms_measured"] <= 80,
        "decode_x_realtime": report["decode_x_realtime"] >= 20,
        "tokens_per_second": report["tokens_per_second"] <= 50,
    }
    report["trained"] = {
        k: codec.metadata.get(k) for k in ("train_seconds", "train_hours", "final_val_loss")
    }
    return report


def _image(quick: bool) -> dict[str, Any]:
    tok = load_tokenizer("image")
    report = image_tokenizer_report(
        tok, n_scenes=40 if quick else 200, n_digits=40 if quick else 100
    )
    report["met"] = {
        "psnr_scenes_db": report["psnr_scenes_db"] >= 30,
        "psnr_digits_db": report["psnr_digits_db"] >= 24,
        # "every object still matches": allow the judge's own error on originals, no more
        "judge_match": report["judge_match_rate_reconstructions"]
        >= report["judge_match_rate_originals"] - 0.01,
    }
    report["trained"] = {k: tok.metadata.get(k) for k in ("train_seconds", "steps", "precision")}
    return report


def _video(corpus: str) -> dict[str, Any]:
    image, audio = load_tokenizer("image"), load_tokenizer("audio")
    video = VideoTokenizer(image, audio)
    clip = _first_test_video(corpus)
    if clip is None:
        return {"skipped": f"no test video in {corpus}"}
    start = time.perf_counter()
    tokens = video.encode(clip)
    seconds = len(tokens.times) / video.fps
    frames, recon_audio = video.decode(tokens)
    return {
        "fps": video.fps,
        "seconds": seconds,
        "image_tokens_per_second": tokens.image_codes[0].numel() * video.fps,
        "audio_tokens_per_second": audio.frame_rate * audio.num_codebooks,
        "frames": int(frames.shape[0]),
        "audio_seconds": None if recon_audio is None else round(len(recon_audio) / 16_000, 2),
        "roundtrip_ms": round(1000 * (time.perf_counter() - start), 1),
    }


def _first_test_video(corpus: str) -> bytes | None:
    for shard in sorted(Path(corpus).glob("test-*.tar")):
        for sample in read_shard(shard):
            if "video.mp4" in sample.files:
                return sample.files["video.mp4"]
    return None


def run_tokenizer_benchmarks(
    corpus: str = "data/tiny", only: list[str] | None = None, quick: bool = False
) -> dict[str, Any]:
    """Run the selected sections (default: all) and return one JSON-able dict."""
    torch.manual_seed(0)
    np.random.seed(0)
    wanted = only or ["text", "image", "audio", "video"]
    needs_corpus = {"audio", "video"} & set(wanted)
    if needs_corpus and not any(Path(corpus).glob("test-*.tar")):
        raise FileNotFoundError(
            f"no test shards in {corpus}; build the corpus first: "
            f"`omniflex data build --size tiny --out {corpus}`"
        )
    results: dict[str, Any] = {"targets": TARGETS, "threads": torch.get_num_threads()}
    if "text" in wanted:
        results["text"] = _text()
    if "image" in wanted:
        results["image"] = _image(quick)
    if "audio" in wanted:
        results["audio"] = _audio(corpus, quick)
    if "video" in wanted:
        results["video"] = _video(corpus)
    return results
