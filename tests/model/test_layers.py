"""SelfAttention's paths: flex training takes the blocked flex attention, which matches the
written-out reference; every other case keeps the reference."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

import omniflex.model.layers as layers
from omniflex.flex import FlexConfig, convert_to_flex, flex_disabled, flex_states, set_flex_frozen
from omniflex.model.transformer import OmniModel
from tests.model import MICRO_LAYOUT, micro_config

V = MICRO_LAYOUT.size


def _ids(B: int = 2, T: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _flex_model(**overrides) -> OmniModel:
    return OmniModel.build(micro_config(precision="flex16+5", **overrides), seed=0)


@pytest.fixture
def blocked_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the layers' calls of the blocked flex attention."""
    calls: list[int] = []
    real = layers.flex_causal_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "flex_causal_attention", counted)
    yield calls


@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_flex_training_steps_match_the_reference_path(n_kv_heads, blocked_calls) -> None:
    blocked = _flex_model(n_kv_heads=n_kv_heads)
    reference = copy.deepcopy(blocked)
    reference.set_attention_impl("reference")
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (blocked, reference)]
    for i in range(3):
        ids, targets = _ids(seed=i), _ids(seed=10 + i)
        losses = []
        for model, opt in zip((blocked, reference), opts, strict=True):
            opt.zero_grad()
            loss = model(ids, targets).loss
            loss.backward()
            opt.step()
            losses.append(loss.item())
        # The two paths differ by float32 summation order only (omniflex.flex.attention).
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert len(blocked_calls) == 3 * blocked.config.n_layers
    got = {s.name: s for s in flex_states(blocked)}
    want = {s.name: s for s in flex_states(reference)}
    assert sorted(got) == sorted(want)
    for name, state in want.items():
        assert got[name].exponent == state.exponent, name
        assert got[name].updates == state.updates, name


def test_cached_chunks_match_the_reference_path(blocked_calls) -> None:
    model = _flex_model(n_kv_heads=1)
    reference = copy.deepcopy(model)
    reference.set_attention_impl("reference")
    ids = _ids(T=20)
    outputs = []
    for m in (model, reference):
        cache = m.new_cache(2)
        chunks = [m(ids[:, s:e], cache=cache).logits for s, e in ((0, 9), (9, 17), (17, 20))]
        outputs.append(torch.cat(chunks, 1))
    assert blocked_calls  # the chunks after cached positions took the blocked path
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


def test_the_reference_path_is_kept_where_blocks_do_not_apply(blocked_calls) -> None:
    ids = _ids()
    model = _flex_model()
    model(ids[:, :1])  # one query: nothing to block
    model.set_attention_impl("reference")
    model(ids)
    model.set_attention_impl("auto")
    with flex_disabled(model):  # float32 matmuls
        model(ids)
    set_flex_frozen(model, True)
    with torch.no_grad():  # frozen inference: fixed exponents, its own path
        model(ids)
    set_flex_frozen(model, False)
    dropout = _flex_model(dropout=0.1).train()
    dropout(ids)
    stochastic = OmniModel.build(micro_config(), seed=0)
    convert_to_flex(stochastic, config=FlexConfig(rounding="stochastic"))
    stochastic(ids)
    assert blocked_calls == []
    dropout.eval()(ids)  # no dropout at evaluation: blocks apply again
    assert len(blocked_calls) == dropout.config.n_layers
