"""Model work off the event loop, and answers that pass the ``OutputGuard``.

``guarded_respond`` wraps ``Session.respond``: every audio chunk and the growing text go through
the guard first; a refusal ends the answer with a ``Blocked`` event. ``iterate_in_thread`` runs
such a blocking generator in an executor thread and hands its items to the event loop as they
come, so one slow answer never stalls other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from omniflex.model.assistant import AudioDelta, Event, Session, TextDelta
from omniflex.serve.guard import OutputGuard

__all__ = ["Blocked", "TurnTiming", "guarded_respond", "iterate_in_thread", "run_sync"]

T = TypeVar("T")


@dataclass(frozen=True)
class Blocked:
    """The guard stopped the answer; ``reason`` says why."""

    reason: str


@dataclass
class TurnTiming:
    """In-process compute times of one answer (seconds), for logs and the benchmark."""

    start: float = field(default_factory=time.perf_counter)
    first_audio: float | None = None  # from start to the first audio chunk, decoded
    audio_seconds: float = 0.0
    compute_seconds: float = 0.0  # the whole answer


def guarded_respond(
    session: Session,
    guard: OutputGuard,
    timing: TurnTiming | None = None,
    *,
    user_text: str | Sequence[str] | None = None,
    user_audio: Sequence[np.ndarray] = (),
    **options: Any,
) -> Iterator[Event | Blocked]:
    """``session.respond(**options)`` with each event checked by ``guard`` before it is yielded.

    The request is moderated first: ``user_text`` (the user's typed words: one text, or each
    message's) and what the guard hears in ``user_audio`` (the last turn's speech, 16 kHz
    mono), each on its own. A flagged request is not generated at all; the guard's refusal is
    recorded as the assistant's turn and yielded as text."""
    guard.start(options.get("voice"))
    timing = timing or TurnTiming()
    texts = [user_text] if isinstance(user_text, str) else list(user_text or ())
    requests = [t for t in (*texts, guard.hear(user_audio)) if t]
    if any(not guard.check_input(t).allowed for t in requests):
        session.add_message({"messages": [{"role": "assistant", "content": guard.refusal}]})
        timing.compute_seconds = time.perf_counter() - timing.start
        yield TextDelta(guard.refusal)
        return
    text = {False: "", True: ""}
    try:
        for event in session.respond(**options):
            if isinstance(event, TextDelta):
                text[event.spoken] += event.text
                decision = guard.check_text(text[event.spoken])
            elif isinstance(event, AudioDelta):
                decision = guard.check_audio(event.samples)
                if timing.first_audio is None:
                    timing.first_audio = time.perf_counter() - timing.start
                timing.audio_seconds += event.samples.size / event.sample_rate
            else:
                decision = guard.check_text(text[False])
            if not decision.allowed:
                yield Blocked(decision.reason)
                return
            yield event
    finally:
        timing.compute_seconds = time.perf_counter() - timing.start


_DONE = object()


async def iterate_in_thread(
    make: Callable[[], Iterator[T]], executor: Executor | None = None
) -> AsyncIterator[T]:
    """Run the blocking iterator ``make()`` in ``executor`` and yield its items on the loop.

    The caller stops the work early by making the iterator stop (e.g. a cancel event): leaving
    the ``async for`` does not kill the thread.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()

    def put(item: Any, err: BaseException | None = None) -> None:
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, (item, err))

    def work() -> None:
        try:
            for item in make():
                put(item)
        except BaseException as err:
            put(_DONE, err)
        else:
            put(_DONE)

    future = loop.run_in_executor(executor, work)
    while True:
        item, err = await queue.get()
        if item is _DONE:
            await future
            if err is not None:
                raise err
            return
        yield item


def run_sync(fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> Any:
    """``await run_sync(fn, ...)``: ``fn(*args)`` in ``executor`` (default: the loop's pool)."""
    return asyncio.get_running_loop().run_in_executor(executor, fn, *args)
