"""``omniflex bench realtime``: speech-to-speech latency through the official ``openai`` client.

The server runs in-process (uvicorn in a thread, on a free loopback port). Each client session
streams spoken questions in *held-out* voices (the corpus's test split: ``spoken_qa`` in lia and
moss; else espeak-ng) as ``input_audio_buffer.append`` chunks of 40 ms, paced at ``speed`` x real
time, followed by silence, and lets server VAD end the turn. At the client we time
``input_audio_buffer.speech_stopped`` -> first ``response.output_audio.delta``.

Reported (JSON):

* ``latency_ms``: min / p50 / p90 / mean / max over the single-session turns;
* ``floor_ms``: the compute floor of the same turns, measured in the server process: the rest
  of the prefill (``end_user_audio``) + the answer up to its first decoded audio chunk;
  ``ratio_p50_to_floor`` = p50 latency / p50 floor;
* ``concurrent``: ``sessions`` sessions at once, their p90 against the single-session p90;
* ``rtf``: compute seconds per second of output audio (single session, whole answers);
* ``capacity``: one session over the limit gets an ``error`` event, and how fast.

Targets (issue 8): p50 <= 320 ms, min <= 232 ms, p50 <= 1.5 x floor, concurrent p90 <= 2 x
single p90, RTF <= 0.5.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from omniflex.common.voices import voice
from omniflex.data.shards import read_shard
from omniflex.data.speech import synthesize
from omniflex.media.audio import read_audio
from omniflex.model.answer_shape import AnswerShape
from omniflex.model.assistant import Assistant, AudioDelta
from omniflex.serve.audio import WIRE_RATE, float_to_pcm16, resample
from omniflex.serve.server import make_server
from omniflex.serve.settings import ServeSettings

__all__ = [
    "Question",
    "load_questions",
    "run_realtime_bench",
    "spoken_session",
    "start_in_thread",
    "stats",
]

log = logging.getLogger("omniflex.serve")

HELD_OUT = ("lia", "moss")
_FALLBACK_QUESTIONS = (
    "what is two plus three?", "what colour is the sky?", "how many legs does a cat have?",
    "what is four minus one?", "which is bigger, a dog or a mouse?",
)  # fmt: skip
CHUNK_MS = 40
TRAILING_SILENCE_S = 0.9


@dataclass(frozen=True)
class Question:
    samples: np.ndarray  # (N,) float32, 16 kHz
    voice: str
    text: str


def load_questions(corpus: str | Path = "data/tiny", limit: int = 20) -> list[Question]:
    """Spoken questions in held-out voices: the corpus's test ``spoken_qa`` samples, else
    espeak-ng (``omniflex.data.speech``) reading a few fixed questions."""
    out: list[Question] = []
    for shard in sorted(glob.glob(str(Path(corpus) / "test-*.tar"))):
        for sample in read_shard(shard):
            conv = sample.conversation
            if conv.get("task") != "spoken_qa":
                continue
            part = conv["messages"][0]["content"][0]
            if part.get("type") != "audio" or part.get("voice") not in HELD_OUT:
                continue
            x = read_audio(sample.file(part["file"]))
            out.append(Question(x, part["voice"], part.get("transcript", "")))
            if len(out) >= limit:
                return out
    if out:
        return [out[i % len(out)] for i in range(limit)]

    for i in range(limit):
        text, name = _FALLBACK_QUESTIONS[i % len(_FALLBACK_QUESTIONS)], HELD_OUT[i % 2]
        out.append(Question(synthesize(text, voice(name)).astype(np.float32), name, text))
    return out


def start_in_thread(assistant: Any, settings: Any) -> tuple[Any, threading.Thread, str]:
    """uvicorn in a daemon thread on a free loopback port: (server, thread, http URL)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = replace(settings, host="127.0.0.1", port=port)
    server = make_server(settings, assistant, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True, name="omniflex-serve")
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def _pcm24_chunks(x16: np.ndarray) -> list[str]:
    x24 = resample(x16, 16_000, WIRE_RATE)
    n = WIRE_RATE * CHUNK_MS // 1000
    return [base64.b64encode(float_to_pcm16(x24[i : i + n])).decode()
            for i in range(0, len(x24), n)]  # fmt: skip


async def spoken_session(url: str, model: str, questions: list[Question], speed: float,
                   voice: str) -> list[dict[str, Any]]:  # fmt: skip
    """One client session: each question in turn; per turn the client-side timings."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        api_key="bench",
        base_url=url + "/v1",
        websocket_base_url=url.replace("http", "ws") + "/v1",
        max_retries=0,
    )
    results: list[dict[str, Any]] = []
    silence = np.zeros(int(16_000 * TRAILING_SILENCE_S), np.float32)
    async with client.realtime.connect(model=model) as conn:
        await conn.session.update(session={
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500,
                                                   "prefix_padding_ms": 300}},
                      "output": {"voice": voice}},
        })  # fmt: skip
        events: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()

        async def receive() -> None:
            async for event in conn:
                await events.put((time.perf_counter(), event))

        receiver = asyncio.create_task(receive())
        try:
            for q in questions:
                chunks = _pcm24_chunks(np.concatenate([q.samples, silence]))
                turn: dict[str, Any] = {"voice": q.voice, "audio_s": q.samples.size / 16_000}
                t0 = time.perf_counter()
                for i, chunk in enumerate(chunks):
                    await conn.input_audio_buffer.append(audio=chunk)
                    wait = t0 + (i + 1) * CHUNK_MS / 1000 / speed - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                while True:
                    t, event = await asyncio.wait_for(events.get(), timeout=120)
                    kind = event.type
                    if kind == "input_audio_buffer.speech_stopped":
                        turn["stopped"] = t
                    elif kind == "response.output_audio.delta" and "first_audio" not in turn:
                        turn["first_audio"] = t
                    elif kind == "error":
                        turn["error"] = event.error.message
                    elif kind == "response.done":
                        turn["status"] = event.response.status
                        details = event.response.status_details
                        if details is not None and details.reason:
                            turn["reason"] = details.reason
                        break
                if "stopped" in turn and "first_audio" in turn:
                    turn["latency_ms"] = (turn["first_audio"] - turn["stopped"]) * 1000
                results.append(turn)
        finally:
            receiver.cancel()
    return results


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "min": None, "p50": None, "p90": None, "mean": None, "max": None}
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": int(v.size),
        "min": round(float(v.min()), 1),
        "p50": round(float(np.percentile(v, 50)), 1),
        "p90": round(float(np.percentile(v, 90)), 1),
        "mean": round(float(v.mean()), 1),
        "max": round(float(v.max()), 1),
    }


async def _over_capacity(url: str, model: str, open_sessions: int) -> dict[str, Any]:
    """Hold ``open_sessions`` connections, then open one more: how is it refused, how fast."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        api_key="bench",
        base_url=url + "/v1",
        websocket_base_url=url.replace("http", "ws") + "/v1",
        max_retries=0,
    )
    managers = [client.realtime.connect(model=model) for _ in range(open_sessions)]
    held = [await m.__aenter__() for m in managers]
    try:
        for conn in held:
            await conn.recv()  # session.created: admitted
        t0 = time.perf_counter()
        async with client.realtime.connect(model=model) as extra:
            event = await asyncio.wait_for(extra.recv(), timeout=10)
        return {"refused_with": event.type,
                "code": getattr(getattr(event, "error", None), "code", None),
                "ms": round((time.perf_counter() - t0) * 1000, 1)}  # fmt: skip
    finally:
        for m in managers:
            await m.__aexit__(None, None, None)


def _isolated_floor(assistant: Any, questions: list[Question], voice: str) -> list[float]:
    """Per question, alone in a fresh session: end_user_audio + first audio chunk (ms)."""
    out = []
    for q in questions:
        session = assistant.session()
        session.begin_user_audio()
        spf = 640
        session.push_user_audio(q.samples[: q.samples.size // spf * spf])
        t0 = time.perf_counter()
        session.push_user_audio(q.samples[q.samples.size // spf * spf :])
        session.end_user_audio()
        for event in session.respond(voice=voice, modalities=("text", "audio"),
                                     max_new_tokens=400):  # fmt: skip
            if isinstance(event, AudioDelta):
                out.append((time.perf_counter() - t0) * 1000)
                break
    return out


def run_realtime_bench(
    *,
    model: str = "tiny",
    precision: str | None = None,
    turns: int = 20,
    sessions: int = 4,
    speed: float = 1.0,
    corpus: str = "data/tiny",
    force_speech: bool = False,
    compile: bool = False,
    batch_decoding: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready results (``compile``: the compiled forward,
    compiled by the server's warm-up before any timing; ``batch_decoding``: concurrent
    sessions share decode forwards, as ``omniflex serve --batch-decoding`` does)."""
    import torch

    if turns < 1 or sessions < 1 or not speed > 0:
        raise ValueError("turns and sessions must be >= 1 and speed > 0")
    torch.set_num_threads(1)
    assistant: Any = Assistant.from_pretrained(
        model, precision=precision, compile=compile, batch_decoding=batch_decoding
    )
    batcher = assistant.batcher
    if force_speech:
        assistant = assistant.with_answer_shape(AnswerShape())
    settings = ServeSettings(model=model, precision=precision, max_sessions=sessions,
                             api_key=None, voice_guard=True, compile=compile,
                             batch_decoding=batch_decoding)  # fmt: skip
    questions = load_questions(corpus, turns)
    voice = assistant.voices[0]
    server, thread, url = start_in_thread(assistant, settings)
    state = server.config.app.state.server
    name = state.model_name
    try:
        state.turn_log.clear()
        single = asyncio.run(spoken_session(url, name, questions, speed, voice))
        single_log = list(state.turn_log)
        per = max(1, -(-turns // sessions))

        async def concurrent() -> list[list[dict[str, Any]]]:
            jobs = [spoken_session(url, name, [questions[(i * per + j) % len(questions)]
                                         for j in range(per)], speed, voice)
                    for i in range(sessions)]  # fmt: skip
            return await asyncio.gather(*jobs)

        before = (batcher.forwards, batcher.rows) if batcher is not None else (0, 0)
        multi = [t for s in asyncio.run(concurrent()) for t in s]
        after = (batcher.forwards, batcher.rows) if batcher is not None else (0, 0)
        capacity = asyncio.run(_over_capacity(url, name, sessions))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    lat = [t["latency_ms"] for t in single if "latency_ms" in t]
    lat_multi = [t["latency_ms"] for t in multi if "latency_ms" in t]
    floor = [1000 * ((e["end_user_audio_s"] or 0.0) + e["first_audio_compute_s"])
             for e in single_log if e.get("first_audio_compute_s") is not None]  # fmt: skip
    rtf = [e["compute_s"] / e["audio_s"] for e in single_log if e.get("audio_s")]
    isolated = _isolated_floor(assistant, questions[: min(10, len(questions))], voice)
    s_lat, s_floor, s_multi = stats(lat), stats(floor), stats(lat_multi)
    ratio = (s_lat["p50"] / s_floor["p50"]) if lat and floor else None
    conc = (s_multi["p90"] / s_lat["p90"]) if lat and lat_multi else None
    rtf_p50 = float(np.median(rtf)) if rtf else None
    return {
        "model": name, "precision": precision or "as trained", "compiled": compile,
        "force_speech": force_speech, "voice_guard": state.settings.voice_guard,
        "turns": len(single), "turns_with_audio": len(lat), "speed_x_realtime": speed,
        "held_out_voices": sorted({q.voice for q in questions}),
        "latency_ms": s_lat, "floor_ms": s_floor,
        "floor_isolated_ms": stats(isolated),
        "ratio_p50_to_floor": None if ratio is None else round(ratio, 2),
        "concurrent": {"sessions": sessions, "turns": len(multi), "latency_ms": s_multi,
                       "p90_ratio_to_single": None if conc is None else round(conc, 2),
                       "batch_decoding": batcher is not None,
                       "decode_rows_per_forward": (round((after[1] - before[1])
                                                         / (after[0] - before[0]), 2)
                                                   if after[0] > before[0] else None)},
        "rtf": {"p50": None if rtf_p50 is None else round(rtf_p50, 3),
                "max": round(max(rtf), 3) if rtf else None},
        "capacity": capacity,
        "statuses": sorted({t.get("status", "none") for t in single + multi}),
        "targets": {"p50_ms": 320, "min_ms": 232, "ratio_p50_to_floor": 1.5,
                    "concurrent_p90_ratio": 2.0, "rtf": 0.5},
        "pass": {
            "p50": bool(lat) and s_lat["p50"] <= 320, "min": bool(lat) and s_lat["min"] <= 232,
            "ratio": ratio is not None and ratio <= 1.5,
            "concurrent": conc is not None and conc <= 2,
            "rtf": rtf_p50 is not None and rtf_p50 <= 0.5,
        },
    }  # fmt: skip
