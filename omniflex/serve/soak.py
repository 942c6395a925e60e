"""``omniflex bench soak``: mixed REST and Realtime traffic against one server for a while, to see
that nothing grows that should not.

The server runs in-process (uvicorn in a thread on a free loopback port, as ``omniflex bench
realtime`` does) with the voice guard on. ``rest`` client loops send typed chat completions
(some streamed, some with a spoken answer asked for) through the official ``openai`` client;
``sessions`` Realtime loops each open a websocket, speak ``turns_per_session`` held-out-voice
questions, and close it, then open a new one. After a warm-up phase (compilation, first loads),
the process's resident memory, open file descriptors and threads are read at the start and at
the end of the timed phase.

Reported (JSON): requests, errors and answers cut short (``incomplete``, by reason: the voice
guard's ``content_filter`` or the token cap; served, not errors) per kind, latency p50/p99
(REST: request -> whole answer; Realtime: speech_stopped -> first audio), and ``resources`` at
start and end with their growth. ``flat`` is true when memory grew by under 10% (and under 64
MB), and file descriptors and threads came back to within a few of where they started: a server
that leaks a socket, a thread or a session's cache per request fails it within minutes.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from omniflex.model.assistant import Assistant
from omniflex.serve.bench import (
    Question,
    load_questions,
    spoken_session,
    start_in_thread,
    stats,
)
from omniflex.serve.settings import ServeSettings

__all__ = ["resources", "run_soak"]

_TYPED = (
    "What is two plus three?", "What colour is the sky?", "Name a fruit.",
    "How many legs does a cat have?", "What is four minus one?", "Say hello.",
)  # fmt: skip
#: What "flat" allows between the start and the end of the timed phase.
RSS_GROWTH_FRACTION, RSS_GROWTH_MB, FD_SLACK, THREAD_SLACK = 0.10, 64.0, 4, 2


def resources() -> dict[str, float | int]:
    """This process's resident memory (MB), open file descriptors and live threads."""
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    return {
        "rss_mb": round(rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
    }


async def _rest_loop(client: AsyncOpenAI, model: str, until: float, i: int,
                     log: list[dict[str, Any]]) -> None:  # fmt: skip
    n = 0
    while time.perf_counter() < until:
        prompt = _TYPED[(i + n) % len(_TYPED)]
        kind = ("plain", "stream", "spoken")[n % 3]
        messages: Any = [{"role": "user", "content": prompt}]
        t0 = time.perf_counter()
        try:
            if kind == "stream":
                stream = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=24, stream=True
                )
                async for _ in stream:
                    pass
            elif kind == "spoken":
                await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=120,
                    modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"},
                )  # fmt: skip
            else:
                await client.chat.completions.create(model=model, messages=messages, max_tokens=24)
            log.append({"kind": f"rest_{kind}", "ms": (time.perf_counter() - t0) * 1000})
        except Exception as err:  # counted, not raised: a soak reports what fails
            log.append({"kind": f"rest_{kind}", "error": f"{type(err).__name__}: {err}"})
        n += 1


async def _realtime_loop(url: str, model: str, questions: list[Question], until: float,
                         turns: int, log: list[dict[str, Any]]) -> None:  # fmt: skip
    n = 0
    while time.perf_counter() < until:
        batch = [questions[(n + j) % len(questions)] for j in range(turns)]
        try:
            for turn in await spoken_session(url, model, batch, 4.0, "aria"):
                entry: dict[str, Any] = {"kind": "realtime_turn"}
                if "latency_ms" in turn:
                    entry["ms"] = turn["latency_ms"]
                if turn.get("status") == "incomplete" and "error" not in turn:
                    # a served answer cut short (the voice guard's content_filter, or the token
                    # cap): counted, but not a server error
                    entry["incomplete"] = turn.get("reason", "unknown")
                elif "error" in turn or turn.get("status") not in ("completed", "cancelled"):
                    entry["error"] = turn.get("error") or f"status {turn.get('status')}"
                log.append(entry)
        except Exception as err:
            log.append({"kind": "realtime_turn", "error": f"{type(err).__name__}: {err}"})
        n += turns


async def _traffic(url: str, model: str, questions: list[Question], seconds: float, rest: int,
                   sessions: int, turns: int) -> list[dict[str, Any]]:  # fmt: skip
    client = AsyncOpenAI(api_key="soak", base_url=url + "/v1", max_retries=0, timeout=300)
    until = time.perf_counter() + seconds
    log: list[dict[str, Any]] = []
    jobs = [_rest_loop(client, model, until, i, log) for i in range(rest)]
    jobs += [_realtime_loop(url, model, questions, until, turns, log) for _ in range(sessions)]
    await asyncio.gather(*jobs)
    await client.close()
    return log


def _summary(log: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({e["kind"] for e in log}):
        rows = [e for e in log if e["kind"] == kind]
        ms = [e["ms"] for e in rows if "ms" in e and "error" not in e]
        errors = [e["error"] for e in rows if "error" in e]
        s = stats(ms)
        cut = [e["incomplete"] for e in rows if "incomplete" in e]
        out[kind] = {"requests": len(rows), "errors": len(errors),
                     "incomplete": {r: cut.count(r) for r in sorted(set(cut))}, "p50_ms": s["p50"],
                     "p99_ms": None if not ms else round(float(np.percentile(ms, 99)), 1),
                     "first_errors": sorted(set(errors))[:3]}  # fmt: skip
    return out


def run_soak(
    *,
    minutes: float = 1.0,
    model: str = "tiny",
    precision: str | None = None,
    rest: int = 2,
    sessions: int = 2,
    turns_per_session: int = 2,
    warmup_seconds: float = 20.0,
    corpus: str = "data/tiny",
) -> dict[str, Any]:
    """Soak the server for ``minutes`` after ``warmup_seconds`` of the same traffic; returns the
    JSON-ready report."""
    if not minutes > 0 or rest < 0 or sessions < 0 or rest + sessions < 1:
        raise ValueError("minutes must be > 0 and at least one REST or Realtime client given")
    assistant = Assistant.from_pretrained(model, precision=precision)
    settings = ServeSettings(
        model=model, precision=precision, api_key=None, voice_guard=True,
        max_sessions=max(1, sessions), max_requests=max(4, rest * 2),
    )  # fmt: skip
    questions = load_questions(corpus, 8)
    server, thread, url = start_in_thread(assistant, settings)
    name = server.config.app.state.server.model_name
    try:
        warm = asyncio.run(_traffic(url, name, questions, warmup_seconds, rest, sessions,
                                    turns_per_session))  # fmt: skip
        start = resources()
        t0 = time.perf_counter()
        log = asyncio.run(_traffic(url, name, questions, minutes * 60, rest, sessions,
                                   turns_per_session))  # fmt: skip
        seconds = time.perf_counter() - t0
        time.sleep(1.0)  # let the last closed connections' threads finish
        end = resources()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    growth = {k: round(end[k] - start[k], 1) for k in start}
    flat = (
        growth["rss_mb"] <= max(0.0, min(RSS_GROWTH_MB, RSS_GROWTH_FRACTION * start["rss_mb"]))
        and growth["fds"] <= FD_SLACK
        and growth["threads"] <= THREAD_SLACK
    )
    return {
        "model": name, "precision": precision or "as trained", "minutes": round(seconds / 60, 2),
        "clients": {"rest": rest, "realtime_sessions": sessions,
                    "turns_per_session": turns_per_session},
        "warmup": {"seconds": warmup_seconds, "requests": len(warm)},
        "requests": len(log), "errors": sum("error" in e for e in log),
        "by_kind": _summary(log),
        "resources": {"start": start, "end": end, "growth": growth},
        "flat": flat,
        "flat_means": f"rss growth <= min({RSS_GROWTH_MB:g} MB, {RSS_GROWTH_FRACTION:.0%}), "
                      f"fds <= +{FD_SLACK}, threads <= +{THREAD_SLACK}",
    }  # fmt: skip
