"""KVCache: cached decoding equals full recompute, chunked prefill, truncation, flex16 storage."""

from __future__ import annotations

import pytest
import torch

from omniflex.flex import FlexFormat
from omniflex.model.kv_cache import KVCache, flex16_decode, flex16_encode
from omniflex.model.transformer import OmniModel
from tests.model import MICRO_LAYOUT, micro_config

V = MICRO_LAYOUT.size
# flex16 keys/values carry a relative error <= 2**-16 of their block's largest magnitude; through
# two layers and the head this moves the micro model's logits (|logit| < 1) by well under 1e-4.
FLEX16_LOGIT_ATOL = 1e-4


def _ids(T: int = 20, B: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _decode(model: OmniModel, ids: torch.Tensor, storage: str, chunks: list[int]) -> torch.Tensor:
    """Logits of ``ids`` fed through a cache in chunks of the given lengths."""
    cache = model.new_cache(ids.shape[0], storage=storage)
    out, start = [], 0
    for n in chunks:
        out.append(model(ids[:, start : start + n], cache=cache).logits)
        start += n
    assert cache.length == ids.shape[1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_token_by_token_decoding_equals_full_recompute(n_kv_heads: int | None) -> None:
    model = OmniModel.build(micro_config(n_kv_heads=n_kv_heads), seed=0)
    ids = _ids(B=2)
    full = model(ids).logits
    stepwise = _decode(model, ids, "float32", [1] * 20)
    torch.testing.assert_close(stepwise, full, atol=1e-5, rtol=1e-5)
    flex = _decode(model, ids, "flex16", [1] * 20)
    assert (flex - full).abs().max() < FLEX16_LOGIT_ATOL


@pytest.mark.parametrize("storage", ["float32", "flex16"])
def test_incremental_prefill_in_chunks_equals_one_prefill(storage: str) -> None:
    model = OmniModel.build(micro_config(), seed=0)
    ids = _ids()
    once = _decode(model, ids, storage, [20])
    chunked = _decode(model, ids, storage, [3, 1, 7, 2, 7])  # audio arriving in pieces
    torch.testing.assert_close(chunked, once, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("storage", ["float32", "flex16"])
def test_truncate_then_continue_equals_fresh_prefill(storage: str) -> None:
    model = OmniModel.build(micro_config(), seed=0)
    ids = _ids()
    other = _ids(seed=9)
    cache = model.new_cache(storage=storage)
    model(ids, cache=cache)  # the answer the user interrupted
    cache.truncate(8)
    resumed = model(other[:, :6], cache=cache).logits
    fresh_cache = model.new_cache(storage=storage)
    model(ids[:, :8], cache=fresh_cache)
    fresh = model(other[:, :6], cache=fresh_cache).logits
    torch.testing.assert_close(resumed, fresh, atol=1e-6, rtol=1e-6)


def test_flex_model_cached_decoding_is_close_to_full_recompute() -> None:
    """Flex activations take per-call exponents, so a cached decode is not bit-equal to one
    full pass; it stays within flex16 rounding of it."""
    model = OmniModel.build(micro_config(precision="flex16+5"), seed=0)
    ids = _ids()
    with torch.no_grad():
        full = model(ids).logits
        for storage in ("float32", "flex16"):
            stepwise = _decode(model, ids, storage, [4] + [1] * 16)
            assert (stepwise - full).abs().max() < 2e-3


def test_flex16_cache_is_about_half_of_float32() -> None:
    shape = dict(n_layers=6, n_kv_heads=4, head_dim=64, max_len=1024)
    f32, f16 = KVCache(**shape), KVCache(**shape, storage="flex16")
    assert f16.nbytes <= 0.52 * f32.nbytes
    # the micro model's small blocks (Hkv * D = 32) still fit the bound
    model = OmniModel.build(micro_config(), seed=0)
    ratio = model.new_cache(storage="flex16").nbytes / model.new_cache().nbytes
    assert ratio <= 0.52


def test_flex16_encode_is_exact_to_a_half_step_and_never_saturates() -> None:
    fmt = FlexFormat(16, 5)
    x = torch.randn(2, 3, 5, 8) * torch.logspace(-4, 2, 5).view(1, 1, 5, 1)  # mixed magnitudes
    x[0, :, 1] = 0.0  # an all-zero block
    m, e = flex16_encode(x, fmt, reduce_dims=(1, 3))
    assert m.dtype == torch.int16 and e.dtype == torch.int8 and e.shape == (2, 5)
    assert int(m.abs().max()) <= fmt.max_mantissa
    y = flex16_decode(m, e[:, None, :, None])
    step = torch.exp2(e.float())[:, None, :, None]
    assert ((y - x).abs() <= step / 2).all()
    # each block uses its top bit: the largest magnitude needs >= 2**14 of the mantissa range
    top = m.abs().amax(dim=(1, 3))
    assert (top[x.abs().amax(dim=(1, 3)) > 0] >= 2**14).all()
    assert torch.equal(y[0, :, 1], torch.zeros_like(y[0, :, 1]))


def test_protocol_errors_are_named() -> None:
    cache = KVCache(2, 1, 4, max_len=8)
    k = torch.zeros(1, 1, 5, 4)
    cache.update(0, k, k)
    cache.update(1, k, k)
    cache.advance(5)
    with pytest.raises(ValueError, match="full"):
        cache.update(0, k, k)
    with pytest.raises(ValueError, match="batch_size"):
        cache.update(0, torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))
    with pytest.raises(ValueError, match="truncate"):
        cache.truncate(6)
    cache.truncate(2)
    assert len(cache) == 2
    cache.update(0, k[:, :, :1], k[:, :, :1])
    with pytest.raises(ValueError, match="layer 0 wrote 1"):
        cache.update(1, k[:, :, :2], k[:, :, :2])
    with pytest.raises(ValueError, match="storage"):
        KVCache(1, 1, 4, 8, storage="int8")  # type: ignore[arg-type]


def test_model_rejects_batch_mismatch_and_overflow_with_a_fix() -> None:
    model = OmniModel.build(micro_config(), seed=0)
    cache = model.new_cache(batch_size=1, max_len=10)
    with pytest.raises(ValueError, match="for_model"):
        model(_ids(B=2, T=3), cache=cache)
    assert cache.length == 0  # a failed forward appends nothing
    model(_ids(T=8), cache=cache)
    with pytest.raises(ValueError, match="truncate"):
        model(_ids(T=3), cache=cache)
    assert cache.length == 8


def test_frozen_flex_model_decodes_as_it_recomputes_and_is_causal() -> None:
    """Frozen (inference) flex ops round at fixed exponents, so every position is quantised on
    its own: a cached decode matches a full pass up to float32 summation order (which can move
    a value across a rounding boundary: one flex16 step), and later tokens never reach earlier
    logits — from the first call on, no warm-up needed."""
    from omniflex.flex import set_flex_frozen

    model = OmniModel.build(micro_config(precision="flex16+5"), seed=0)
    ids = _ids()
    with torch.no_grad():
        model(ids)  # trained states: initialise every Autoflex exponent once
        set_flex_frozen(model, True)
        full = model(ids).logits
        stepwise = _decode(model, ids, "float32", [4] + [1] * 16)
        changed = ids.clone()
        changed[:, 9:] = (changed[:, 9:] + 5) % MICRO_LAYOUT.size
        other = model(changed).logits
    assert (stepwise - full).abs().max() < FLEX16_LOGIT_ATOL  # 20x tighter than unfrozen
    assert (stepwise == full).float().mean() > 0.99
    assert (other[:, :9] - full[:, :9]).abs().max() < FLEX16_LOGIT_ATOL
    assert not torch.allclose(other[:, 9:], full[:, 9:])
