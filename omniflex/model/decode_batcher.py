"""``DecodeBatcher``: the decode steps of every session of one ``Assistant``, run together.

Without it each session's next token is one forward of batch 1, taken under the assistant's lock
one after the other: four sessions decoding at once take four forwards' time per token each. A
tiny model's decode step costs about the same for one row as for several (its time goes to
dispatching ~100 small kernels, not to arithmetic), so one forward over every waiting session
(``CompiledForward.decode_rows``) serves them all in little more than one's time.

How: a session's ``Generator`` hands its one-token step to ``step()``, which queues it and waits.
One worker thread takes everything queued, runs it as one ``decode_rows`` forward under the
assistant's lock, and hands each session its logits. It never waits to fill a batch: a step that
arrives while a forward runs joins the next one, so a lone session pays no delay (a batch of one
is the plain one-token step), and sessions that decode at once share forwards. Prefill chunks are
not batched; they take the lock between batches (``Generator`` locks each chunk), so a long
prompt delays the others by one chunk at a time.

Measured on a 2-core CPU it did not lower concurrent latency end to end (README, Serving: the
sessions also queue for the speech judge, VAD, voice guard and codec), so the server runs it
only with ``--batch-decoding``.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import torch

from omniflex.model.compiled import CompiledForward
from omniflex.model.kv_cache import CacheStorage, KVCache

__all__ = ["DecodeBatcher"]


class DecodeBatcher:
    """Args:
    fast: the ``CompiledForward`` (compiled, or its eager reference) that runs the batches.
    lock: the lock every forward of the model takes (``Assistant.lock``).
    max_rows: the most sessions one forward serves.
    """

    def __init__(self, fast: CompiledForward, lock: threading.RLock, *, max_rows: int = 16) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.fast, self.lock, self.max_rows = fast, lock, max_rows
        self.forwards = 0  # batches run
        self.rows = 0  # steps served
        self.asked = 0  # steps handed in
        self._queue: queue.SimpleQueue[tuple[int, KVCache, Future[torch.Tensor]] | None] = (
            queue.SimpleQueue()
        )
        self._count = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="decode-batcher", daemon=True)
        self._worker.start()

    def step(self, token: int, cache: KVCache) -> torch.Tensor:
        """Append ``token`` after ``cache``'s positions and return the next-token logits
        ``(V,)``, computed in one forward with whatever other steps are waiting."""
        if cache.batch_size != 1 or cache.length < 1:
            raise ValueError(
                "a decode step continues one sequence: run its first forward through the model "
                f"first (got a cache of {cache.batch_size} sequences, {cache.length} positions)"
            )
        done: Future[torch.Tensor] = Future()
        self._queue.put((int(token), cache, done))
        with self._count:
            self.asked += 1  # after the put: ``asked`` steps are in the queue or taken
        return done.result()

    def warm_up(self, storage: CacheStorage = "float32") -> None:
        """Run one batch of one row and one of two over ``storage`` caches, so that the compiled
        graphs of both kinds exist before the first sessions need them (a compilation takes
        minutes on a small CPU)."""
        model = self.fast.model
        caches = []
        for n in (3, 4):
            cache = model.new_cache(storage=storage, max_len=8)
            with self.lock, torch.no_grad():
                model(torch.zeros(1, n, dtype=torch.long), cache=cache, last_only=True)
            caches.append(cache)
        with self.lock:
            self.fast.decode_rows([0], caches[:1])
            self.fast.decode_rows([0, 0], caches)

    def close(self) -> None:
        """Stop the worker (steps already queued are served first)."""
        self._queue.put(None)
        self._worker.join(timeout=10)

    @property
    def mean_rows(self) -> float:
        """Steps served per forward so far (1.0: no two sessions ever decoded together)."""
        return self.rows / self.forwards if self.forwards else 0.0

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._serve(batch)
            if stop:
                return

    def _serve(self, batch: list[tuple[int, KVCache, Future[torch.Tensor]]]) -> None:
        try:
            with self.lock:
                if len(batch) == 1:  # alone: the plain step, without padding and masking
                    token, cache, _ = batch[0]
                    logits = self.fast(torch.tensor([[token]]), cache)[:, 0]
                else:
                    logits = self.fast.decode_rows([t for t, _, _ in batch],
                                                   [c for _, c, _ in batch])  # fmt: skip
        except BaseException as err:  # each waiting session gets the error, none hangs
            for _, _, done in batch:
                done.set_exception(err)
            return
        self.forwards += 1
        self.rows += len(batch)
        for i, (_, _, done) in enumerate(batch):
            done.set_result(logits[i])
