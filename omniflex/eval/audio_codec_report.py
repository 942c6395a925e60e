"""Measured figures of an audio codec on the corpus's held-out test speech (JSON-able dict).

Quality: speaker similarity and mel-cepstral distortion between each test utterance and its
reconstruction, separately for the preset voices (the model's own output voices) and for the
held-out input voices (unseen speakers, augmented with noise, reverberation and pitch shifts).
Speed: streaming decode and encode one code frame (40 ms) per call on one CPU thread.
Latency: measured by feeding one sample at a time through streaming encode + decode.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniflex.data.shards import read_shard
from omniflex.eval.audio_metrics import mel_cepstral_distortion, speaker_similarity
from omniflex.media.audio import read_audio
from omniflex.tokenizers.audio import AudioCodec

__all__ = ["audio_codec_report", "measure_latency", "measure_stream_speed", "test_utterances"]


def test_utterances(corpus_dir: str | Path, n: int = 40) -> list[tuple[str, str, np.ndarray]]:
    """``(voice, role, audio)`` for the first ``n`` test-split WAVs, alternating roles."""
    shards = sorted(Path(corpus_dir).glob("test-*.tar"))
    if not shards:
        raise FileNotFoundError(
            f"no test shards in {corpus_dir}; build the corpus: "
            f"`omniflex data build --size tiny --out {corpus_dir}`"
        )
    by_role: dict[str, list[tuple[str, str, np.ndarray]]] = {"user": [], "assistant": []}
    for shard in shards:
        for sample in read_shard(shard):
            for message in sample.conversation["messages"]:
                for part in message["content"]:
                    if part.get("type") != "audio" or len(by_role[message["role"]]) >= n:
                        continue
                    audio = read_audio(sample.file(part["file"]), name=part["file"])
                    if len(audio) >= 16_000 // 2:
                        by_role[message["role"]].append((part["voice"], message["role"], audio))
    return by_role["assistant"][: n // 2] + by_role["user"][: n - n // 2]


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {
        "mean": round(float(arr.mean()), 4),
        "p10": round(float(np.percentile(arr, 10)), 4),
        "min": round(float(arr.min()), 4),
    }


def measure_latency(codec: AudioCodec, seconds: float = 0.3) -> float:
    """Worst wait, in seconds, between an input sample arriving and its reconstruction leaving,
    feeding one sample per call (algorithmic latency: compute time excluded)."""
    n = int(seconds * codec.sample_rate)
    audio = torch.randn(1, n) * 0.1
    produced = worst = 0  # output samples so far; worst (arrival -> departure) in samples
    with torch.inference_mode(), codec.streaming():
        for i in range(n):  # sample i has just arrived
            codes = codec.encode(audio[:, i : i + 1])
            out = codec.decode(codes).shape[-1] if codes.shape[-1] else 0
            if out:  # samples produced..produced+out leave now; the oldest waited longest
                worst = max(worst, i - produced)
                produced += out
    return worst / codec.sample_rate


def measure_stream_speed(codec: AudioCodec, seconds: float = 8.0) -> dict[str, float]:
    """Real-time factors (audio seconds per compute second) of streaming encode and decode,
    one code frame per call, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spf = codec.config.samples_per_frame
        audio = torch.randn(1, int(seconds * codec.sample_rate) // spf * spf) * 0.1
        with torch.inference_mode():
            codes = codec.encode(audio)
            with codec.streaming():  # warm-up
                codec.decode(codes[..., :4])
            start = time.perf_counter()
            with codec.streaming():
                for i in range(0, audio.shape[-1], spf):
                    codec.encode(audio[:, i : i + spf])
            enc = time.perf_counter() - start
            start = time.perf_counter()
            with codec.streaming():
                for f in range(codes.shape[-1]):
                    codec.decode(codes[..., f : f + 1])
                codec.flush()
            dec = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {
        "encode_x_realtime": round(seconds / enc, 1),
        "decode_x_realtime": round(seconds / dec, 1),
    }


def audio_codec_report(
    codec: AudioCodec, corpus_dir: str | Path, n: int = 40, speed: bool = True
) -> dict[str, Any]:
    """Quality, latency and speed of ``codec`` on ``n`` held-out test utterances."""
    codec.eval()
    rows: dict[str, dict[str, list[float]]] = {}
    by_voice: dict[str, list[np.ndarray]] = {}
    for voice, role, audio in test_utterances(corpus_dir, n):
        by_voice.setdefault(voice, []).append(audio)
        with torch.inference_mode():
            recon = codec.decode(codec.encode(audio))[0].numpy()[: len(audio)]
        group = "preset_voices" if role == "assistant" else "held_out_input_voices"
        bucket = rows.setdefault(group, {"speaker_similarity": [], "mcd_db": []})
        bucket["speaker_similarity"].append(speaker_similarity(audio, recon))
        bucket["mcd_db"].append(mel_cepstral_distortion(audio, recon))
    everything = {
        k: [v for group in rows.values() for v in group[k]]
        for k in ("speaker_similarity", "mcd_db")
    }
    # Context for the similarity figure: two *different* utterances of the same voice.
    same_speaker = [
        speaker_similarity(clips[0], clips[1]) for clips in by_voice.values() if len(clips) >= 2
    ]
    cfg = codec.config
    report: dict[str, Any] = {
        "utterances": sum(len(r["mcd_db"]) for r in rows.values()),
        "speaker_similarity": _summary(everything["speaker_similarity"]),
        "mcd_db": _summary(everything["mcd_db"]),
        "by_group": {
            g: {k: _summary(v) for k, v in r.items()} | {"utterances": len(r["mcd_db"])}
            for g, r in rows.items()
        },
        "same_speaker_different_utterance_similarity": (
            _summary(same_speaker) | {"voices": len(same_speaker)} if same_speaker else None
        ),
        "frame_rate_hz": cfg.frame_rate,
        "codebooks": cfg.codebooks,
        "cardinality": codec.cardinality,
        "tokens_per_second": cfg.frame_rate * cfg.codebooks,
        "bits_per_second": round(cfg.frame_rate * cfg.codebooks * np.log2(codec.cardinality), 1),
        "latency_ms_config": round(cfg.latency_seconds * 1000, 1),
        "latency_ms_measured": round(measure_latency(codec) * 1000, 1),
        "parameters": sum(p.numel() for p in codec.parameters()),
    }
    if speed:
        report.update(measure_stream_speed(codec))
    return report
