"""CompiledForward: its eager reference equals the model bit for bit; compiled, it stays within
flex rounding of the reference; generation through it answers as the eager path does."""

from __future__ import annotations

import copy

import pytest
import torch

from omniflex.flex import set_flex_frozen
from omniflex.flex.int16_matvec import available as int16_matvec_available
from omniflex.model.compiled import CompiledForward, FastPathUnsupported
from omniflex.model.kv_cache import KVCache, flex16_decode
from omniflex.model.transformer import OmniModel
from tests.model import MICRO_LAYOUT, micro_config

V = MICRO_LAYOUT.size
CHUNKS = [6, 1, 1, 3, 1, 1]  # a prompt, decode steps, a chunk of streamed input, more steps


def _model(precision: str, n_kv_heads: int | None = None) -> OmniModel:
    model = OmniModel.build(micro_config(precision=precision, n_kv_heads=n_kv_heads), seed=0)
    model.eval()
    if precision != "float32":
        set_flex_frozen(model, True)
        with torch.no_grad():  # the first forward initialises every flex state
            model(_ids(), cache=model.new_cache())
    return model


def _ids(T: int = sum(CHUNKS), seed: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(seed))


def _cache_state(cache: KVCache) -> list[torch.Tensor]:
    n = cache.length
    out = [cache.k[:, :, :, :n], cache.v[:, :, :, :n]]
    if cache.storage == "flex16":
        out += [cache.k_exponent[:, :, :n], cache.v_exponent[:, :, :n]]
    return out


def _run_eager(model: OmniModel, ids: torch.Tensor, storage: str) -> tuple[list, KVCache]:
    cache = model.new_cache(storage=storage)
    logits, start = [], 0
    with torch.no_grad():
        for n in CHUNKS:
            chunk = ids[:, start : start + n]
            logits.append(model(chunk, cache=cache, last_only=True).logits)
            start += n
    return logits, cache


def _run_fast(fast: CompiledForward, ids: torch.Tensor, storage: str) -> tuple[list, KVCache]:
    cache = fast.model.new_cache(storage=storage)
    logits, start, before = [], 0, []
    for n in CHUNKS:
        logits.append(fast(ids[:, start : start + n], cache))
        # Append-only: what was cached before this call is untouched by it (causality).
        for old, now in zip(before, _cache_state(cache), strict=False):  # none on the 1st call
            prefix = now[:, :, :, :start] if now.dim() == 5 else now[:, :, :start]
            assert torch.equal(old, prefix)
        before = [t.clone() for t in _cache_state(cache)]
        start += n
    return logits, cache


@pytest.mark.parametrize("storage", ["float32", "flex16"])
@pytest.mark.parametrize(
    ("precision", "n_kv_heads"), [("float32", None), ("flex16+5", None), ("flex16+5", 1)]
)
def test_reference_equals_the_model_bit_for_bit(
    precision: str, n_kv_heads: int | None, storage: str
) -> None:
    model = _model(precision, n_kv_heads)
    ids = _ids()
    want, want_cache = _run_eager(model, ids, storage)
    got, got_cache = _run_fast(CompiledForward(model, compile=False), ids, storage)
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(_cache_state(want_cache), _cache_state(got_cache), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("precision", "storage", "int16_matvec"),
    [("float32", "float32", None), ("flex16+5", "flex16", None), ("flex16+5", "flex16", False)],
)
def test_compiled_stays_within_rounding_of_the_reference(
    precision: str, storage: str, int16_matvec: bool | None
) -> None:
    """Compiled (flex16 decode steps on the int16 mantissas where the kernel is available, and
    with it switched off) against the eager reference."""
    model = _model(precision)
    ids = _ids()
    want, want_cache = _run_fast(CompiledForward(model, compile=False), ids, storage)
    fast = CompiledForward(model, int16_matvec=int16_matvec)
    assert fast.int16_matvec == (int16_matvec is None and int16_matvec_available())
    got, got_cache = _run_fast(fast, ids, storage)
    # Fused reductions round differently in the last float32 bit; a flex operand on a rounding
    # boundary then moves one flex step (2**-15 of its range). Logits here are below 1.
    tol = 1e-5 if precision == "float32" else 1e-3
    for a, b in zip(want, got, strict=True):
        assert (a - b).abs().max() < tol
    for a, b in zip(want_cache.past_values(), got_cache.past_values(), strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_generator_and_assistant_answer_the_same_through_the_compiled_forward() -> None:
    from omniflex.model.assistant import Assistant
    from omniflex.model.sampling import GREEDY

    eager = Assistant.from_pretrained("tiny")
    fast = Assistant(eager.model, eager.template, info=eager.info, compile=True)
    texts = []
    for assistant in (eager, fast):
        session = assistant.session()
        session.add_text("What is two plus three?")
        first = session.answer(modalities=("text",), sampling=GREEDY, max_new_tokens=24)
        session.add_text("And what colour is the sky?")  # a chunk after cached positions
        second = session.answer(modalities=("text",), sampling=GREEDY, max_new_tokens=24)
        texts.append((first.text, second.text, first.tokens, second.tokens))
    assert texts[0] == texts[1]
    assert fast.fast is not None and fast.fast.ready


def test_not_ready_until_every_flex_state_has_run() -> None:
    model = OmniModel.build(micro_config(precision="flex16+5"), seed=0).eval()
    set_flex_frozen(model, True)
    fast = CompiledForward(model, compile=False)
    assert not fast.ready
    cache = model.new_cache()
    first = fast(_ids(5), cache)  # eager: initialises the states
    assert first.shape == (1, 1, V) and cache.length == 5
    assert fast.ready


def test_models_it_cannot_run_are_refused_with_the_fix() -> None:
    live = OmniModel.build(micro_config(precision="flex16+5"), seed=0).eval()
    with pytest.raises(FastPathUnsupported, match="set_flex_frozen"):
        CompiledForward(live)
    emulated = OmniModel.build(micro_config(precision="bfloat16"), seed=0).eval()
    with pytest.raises(FastPathUnsupported, match="decode eagerly"):
        CompiledForward(emulated)
    with pytest.raises(FastPathUnsupported, match="eval"):
        CompiledForward(OmniModel.build(micro_config(), seed=0).train())
    model = _model("float32")
    fast = CompiledForward(model, compile=False)
    with pytest.raises(ValueError, match="batch, time"):
        fast(torch.zeros(3, dtype=torch.long), model.new_cache())
    small = model.new_cache(max_len=4)
    with pytest.raises(ValueError, match="full"):
        fast(_ids(5), small)
    assert small.length == 0


def test_append_layers_and_past_values() -> None:
    model = _model("float32")
    cfg = model.config
    shape = (cfg.n_layers, 1, cfg.kv_heads, 3, cfg.head_dim)
    cache = model.new_cache(storage="flex16")
    m = torch.randint(-100, 100, shape, dtype=torch.int16)
    e = torch.randint(-12, -4, (cfg.n_layers, 1, 3), dtype=torch.int8)
    cache.append_layers(m, m, e, e)
    assert cache.length == 3
    k, v = cache.past_values()
    assert torch.equal(k, flex16_decode(m, e[:, :, None, :, None])) and torch.equal(k, v)
    with pytest.raises(ValueError, match="exponents go with a flex16 cache"):
        cache.append_layers(m, m)
    with pytest.raises(ValueError, match="shape"):
        cache.append_layers(m[:, :, :, :, :2], m, e, e)
    plain = model.new_cache(max_len=4)
    with pytest.raises(ValueError, match="takes"):
        plain.append_layers(m, m)
    plain.append_layers(m.float(), m.float())
    with pytest.raises(ValueError, match="full"):
        plain.append_layers(m.float(), m.float())
    assert plain.length == 3
    k, v = plain.past_values()
    assert torch.equal(k, m.float())
    twin = copy.deepcopy(plain)
    twin.truncate(1)
    assert twin.past_values()[0].shape[3] == 1


def _prefilled(fast: CompiledForward, lengths: list[int], storage: str) -> list[KVCache]:
    caches = []
    for i, n in enumerate(lengths):
        cache = fast.model.new_cache(storage=storage)
        with torch.no_grad():
            fast.model(_ids(n, seed=10 + i), cache=cache, last_only=True)
        caches.append(cache)
    return caches


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize(
    ("precision", "storage", "n_kv_heads"),
    [("float32", "float32", None), ("flex16+5", "flex16", None), ("flex16+5", "float32", 1)],
)
def test_rows_of_different_lengths_decode_together_as_alone(
    precision: str, storage: str, n_kv_heads: int | None, compile: bool
) -> None:
    """``decode_rows`` (one forward for several sequences: what batches a server's sessions)
    against each sequence's own one-token steps, over three steps, rows of 3, 9 and 5 positions;
    its cache entries are each row's own, and a row's result does not depend on the others."""
    model = _model(precision, n_kv_heads)
    fast = CompiledForward(model, compile=compile, int16_matvec=False)
    alone, together = _prefilled(fast, [3, 9, 5], storage), _prefilled(fast, [3, 9, 5], storage)
    tol = 1e-5 if precision == "float32" else 1e-3  # summation order over the padding
    for step in range(3):
        ids = [(7 * step + 3 * i) % V for i in range(3)]
        want = torch.cat(
            [fast(torch.tensor([[t]]), c)[:, 0] for t, c in zip(ids, alone, strict=True)]
        )
        got = fast.decode_rows(ids, together)
        assert got.shape == want.shape and (got - want).abs().max() < tol
    for a, b in zip(alone, together, strict=True):
        assert a.length == b.length
        for x, y in zip(a.past_values(), b.past_values(), strict=True):
            torch.testing.assert_close(x, y, atol=tol, rtol=tol)
    # Causality across rows: a row's logits are the same whoever it is batched with.
    first = _prefilled(fast, [3], storage)
    with_others = _prefilled(fast, [3, 9], storage)
    a = fast.decode_rows([5], first)
    b = fast.decode_rows([5, 6], with_others)[:1]
    assert (a - b).abs().max() < tol


def test_decode_rows_refuses_what_it_cannot_continue() -> None:
    fast = CompiledForward(_model("float32"), compile=False)
    with pytest.raises(ValueError, match="one cache per id"):
        fast.decode_rows([1, 2], _prefilled(fast, [3], "float32"))
    with pytest.raises(ValueError, match="first forward"):
        fast.decode_rows([1], [fast.model.new_cache()])
