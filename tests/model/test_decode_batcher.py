"""DecodeBatcher: steps that wait together share one forward; sessions decoding at the same time
answer as they do alone; an error reaches every waiting session."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from omniflex.model.assistant import Assistant
from omniflex.model.compiled import CompiledForward
from omniflex.model.decode_batcher import DecodeBatcher
from omniflex.model.transformer import OmniModel
from tests.model import MICRO_LAYOUT, micro_config

QUESTIONS = ["What is three plus four?", "What is the capital of France?", "Hello there."]


def _micro() -> OmniModel:
    return OmniModel.build(micro_config(precision="float32"), seed=0).eval()


def _prefilled(model: OmniModel, n: int, seed: int):
    cache = model.new_cache()
    ids = torch.randint(0, MICRO_LAYOUT.size, (1, n), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model(ids, cache=cache, last_only=True)
    return cache


def _wait(condition, seconds: float = 10.0) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.002)
    assert condition()


def _held_then_together(batcher: DecodeBatcher, lock, first, rest) -> None:
    """Run step ``first`` alone, then the steps ``rest`` as one batch: the worker takes ``first``
    and waits for ``lock``, which this thread holds until all of ``rest`` are queued."""
    threads = [threading.Thread(target=f) for f in (first, *rest)]
    with lock:
        threads[0].start()
        _wait(lambda: batcher.asked == 1 and batcher._queue.qsize() == 0)  # taken, waiting
        for t in threads[1:]:
            t.start()
        _wait(lambda: batcher._queue.qsize() == len(rest))
    for t in threads:
        t.join(timeout=10)


def test_steps_waiting_together_share_one_forward() -> None:
    model = _micro()
    fast = CompiledForward(model, compile=False)
    lock = threading.RLock()
    batcher = DecodeBatcher(fast, lock)
    caches = [_prefilled(model, n, i) for i, n in enumerate((3, 7, 5))]
    want = [fast(torch.tensor([[4]]), _prefilled(model, n, i))[0, 0]
            for i, n in enumerate((3, 7, 5))]  # fmt: skip
    got: dict[int, torch.Tensor] = {}

    def step(i: int):
        return lambda: got.__setitem__(i, batcher.step(4, caches[i]))

    _held_then_together(batcher, lock, step(0), [step(1), step(2)])
    assert batcher.forwards == 2 and batcher.rows == 3 and batcher.mean_rows == 1.5
    for i in range(3):
        assert (got[i] - want[i]).abs().max() < 1e-5
        assert caches[i].length == (3, 7, 5)[i] + 1
    batcher.close()


def test_an_error_reaches_every_waiting_step() -> None:
    model = _micro()
    lock = threading.RLock()
    batcher = DecodeBatcher(CompiledForward(model, compile=False), lock)
    with pytest.raises(ValueError, match="first forward"):
        batcher.step(1, model.new_cache())  # an empty cache cannot be continued
    # Two steps that cannot share a forward (caches of two storage kinds): both get the error.
    flex = model.new_cache(storage="flex16")
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), cache=flex, last_only=True)
    caches = [_prefilled(model, 3, 0), _prefilled(model, 4, 1), flex]
    errors: dict[int, BaseException] = {}

    def step(i: int):
        def run() -> None:
            try:
                batcher.step(1, caches[i])
            except ValueError as err:
                errors[i] = err

        return run

    _held_then_together(batcher, lock, step(0), [step(1), step(2)])
    assert set(errors) == {1, 2} and all("storage" in str(e) for e in errors.values())
    assert batcher.step(1, _prefilled(model, 3, 0)).shape == (MICRO_LAYOUT.size,)  # still serving
    batcher.close()


@pytest.fixture(scope="module")
def assistants() -> tuple[Assistant, Assistant]:
    alone = Assistant.from_pretrained("tiny", precision="float32", threads=1)
    together = Assistant.from_pretrained("tiny", precision="float32", batch_decoding=True)
    return alone, together


def test_sessions_answering_at_once_answer_as_alone(assistants) -> None:
    alone, together = assistants
    want = [alone.answer({"messages": [{"role": "user", "content": q}]}, modalities=("text",),
                         max_new_tokens=24).text for q in QUESTIONS]  # fmt: skip
    got: dict[int, str] = {}

    def ask(i: int) -> None:
        answer = together.answer({"messages": [{"role": "user", "content": QUESTIONS[i]}]},
                                 modalities=("text",), max_new_tokens=24)  # fmt: skip
        got[i] = answer.text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [got[i] for i in range(len(QUESTIONS))] == want
    assert together.batcher is not None and together.batcher.rows > 0
