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


def test_steps_waiting_together_share_one_forward() -> None:
    model = _micro()
    fast = CompiledForward(model, compile=False)
    lock = threading.RLock()
    batcher = DecodeBatcher(fast, lock)
    caches = [_prefilled(model, n, i) for i, n in enumerate((3, 7, 5))]
    want = [fast(torch.tensor([[4]]), _prefilled(model, n, i))[0, 0]
            for i, n in enumerate((3, 7, 5))]  # fmt: skip
    got: dict[int, torch.Tensor] = {}

    def step(i: int) -> None:
        got[i] = batcher.step(4, caches[i])

    threads = [threading.Thread(target=step, args=(i,)) for i in range(3)]
    with lock:  # the worker cannot run a forward until all three steps are handed in
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while batcher.asked < 3 and time.time() < deadline:
            time.sleep(0.005)
    for t in threads:
        t.join(timeout=10)
    # The worker took the first step (and any already queued) before it waited for the lock;
    # the rest went together into the next forward: three steps in at most two forwards.
    assert batcher.rows == 3 and batcher.forwards <= 2 and batcher.mean_rows >= 1.5
    for i in range(3):
        assert (got[i] - want[i]).abs().max() < 1e-5
        assert caches[i].length == (3, 7, 5)[i] + 1
    batcher.close()


def test_an_error_reaches_every_waiting_step() -> None:
    model = _micro()
    batcher = DecodeBatcher(CompiledForward(model, compile=False), threading.RLock())
    with pytest.raises(ValueError, match="first forward"):
        batcher.step(1, model.new_cache())  # an empty cache cannot be continued
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
