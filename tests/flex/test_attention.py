"""Blocked flex attention against attention written out through two ``flex_matmul`` calls."""

import math

import pytest
import torch

from omniflex.flex import FlexConfig, FlexNonFiniteError, FlexOp, flex_matmul
from omniflex.flex.attention import blocked_attention_applies, flex_causal_attention


def written_out(q, k, v, qk: FlexOp, av: FlexOp) -> torch.Tensor:
    """The reference: ``SelfAttention.reference_attention``'s flex ops, causal with offset."""
    T, S = q.shape[2], k.shape[2]
    scores = flex_matmul(q, k.transpose(-1, -2), qk)  # (B, H, T, S)
    rows = torch.arange(T).unsqueeze(1) + S - T
    mask = torch.zeros(T, S).masked_fill_(torch.arange(S).unsqueeze(0) > rows, float("-inf"))
    return flex_matmul(torch.softmax(scores + mask, dim=-1), v, av)


def ops(config: FlexConfig | None = None) -> tuple[FlexOp, FlexOp]:
    return FlexOp("attn.qk", config), FlexOp("attn.av", config)


def inputs(B, H, T, S, D, *, seed, scale=1.0, grads=(True, True, True)):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=gen) for n in (T, S, S))
    q = q * (scale / math.sqrt(D))
    return [t.requires_grad_(g) for t, g in zip((q, k, v), grads, strict=True)]


def step(fn, q, k, v, seed):
    q, k, v = (t.detach().clone().requires_grad_(t.requires_grad) for t in (q, k, v))
    y = fn(q, k, v)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)))
    return y.detach(), q.grad, k.grad, v.grad


def assert_states_match(blocked: FlexOp, reference: FlexOp) -> None:
    assert blocked.clock == reference.clock
    assert sorted(blocked.states) == sorted(reference.states)
    for role, ref in reference.states.items():
        got, want = blocked.states[role].state_dict(), ref.state_dict()
        where = f"{reference.name}.{role}"
        for key in ("exponent", "initialized", "last_exponent", "last_clock", "updates",
                    "overflows", "saturations", "elements"):  # fmt: skip
            assert got[key] == want[key], f"{where} {key}: {got[key]} != {want[key]}"
        # Maxima of a gradient summed block by block may move by float32 rounding.
        assert got["history"] == pytest.approx(want["history"], rel=1e-5), where
        assert got["last_amax"] == pytest.approx(want["last_amax"], rel=1e-5), where
        # So may a value on the edge of rounding to zero: a few flushes, of many elements.
        assert abs(got["flushes"] - want["flushes"]) <= 2 + want["elements"] * 1e-6, where


def assert_close_on_grid(got, want, exponent, name):
    """Equal, but for values one flex step apart where float32 summation order moved a
    result across a rounding boundary (rarely: at most 0.1% of them)."""
    if want is None:
        assert got is None, name
        return
    step = math.ldexp(1.0, exponent)
    diff = (got - want).abs()
    assert diff.max() <= step, f"{name}: off by {diff.max() / step:.1f} steps"
    assert (diff > 0).float().mean() <= 1e-3, f"{name}: {(diff > 0).sum()} values differ"


@pytest.mark.parametrize(
    ("H", "T", "S", "block"),
    [
        (2, 40, 40, 16),  # self-attention over T, a partial last block
        (2, 40, 40, 64),  # one block
        (2, 24, 56, 8),  # a chunk after 32 cached positions
        (2, 1, 9, 4),  # one query (decoding)
    ],
)
def test_blocked_equals_written_out_over_steps(H, T, S, block):
    blocked, reference = ops(), ops()
    for i in range(4):  # step 0 initialises every state (Algorithm 1): the blocks run again
        q, k, v = inputs(2, H, T, S, 8, seed=i, scale=1.0 + i)
        got = step(lambda q, k, v: flex_causal_attention(q, k, v, *blocked, block), q, k, v, i)
        want = step(lambda q, k, v: written_out(q, k, v, *reference), q, k, v, i)
        exponents = (
            blocked[1].states["output"].last_exponent,
            blocked[0].states["grad_a"].last_exponent,
            blocked[0].states["grad_b"].last_exponent,
            blocked[1].states["grad_b"].last_exponent,
        )
        for name, g, w, e in zip(("y", "dq", "dk", "dv"), got, want, exponents, strict=True):
            assert_close_on_grid(g, w, e, f"step {i} {name}")
        for b, r in zip(blocked, reference, strict=True):
            assert_states_match(b, r)


def test_overflow_recompute_runs_the_blocks_again_as_the_reference_does():
    blocked, reference = ops(), ops()
    for i, scale in enumerate([1.0, 1.0, 1.0, 50.0]):  # a spike in the scores at step 3
        q, k, v = inputs(2, 2, 32, 32, 8, seed=i, scale=scale)
        got = step(lambda q, k, v: flex_causal_attention(q, k, v, *blocked, 8), q, k, v, i)
        want = step(lambda q, k, v: written_out(q, k, v, *reference), q, k, v, i)
        assert_close_on_grid(got[0], want[0], blocked[1].states["output"].last_exponent, "y")
    assert reference[0].states["output"].overflows == 1  # the case under test happened
    for b, r in zip(blocked, reference, strict=True):
        assert_states_match(b, r)


@pytest.mark.parametrize(
    "grads", [(True, False, False), (False, True, False), (False, False, True)]
)
def test_only_the_gradients_asked_for_are_computed_and_quantised(grads):
    blocked, reference = ops(), ops()
    q, k, v = inputs(1, 2, 16, 16, 8, seed=0, grads=grads)
    got = step(lambda q, k, v: flex_causal_attention(q, k, v, *blocked, 4), q, k, v, 0)
    want = step(lambda q, k, v: written_out(q, k, v, *reference), q, k, v, 0)
    for g, w in zip(got[1:], want[1:], strict=True):
        assert (g is None) == (w is None)
    for b, r in zip(blocked, reference, strict=True):
        assert_states_match(b, r)


def test_unquantised_outputs_follow_the_config():
    config = FlexConfig(quantize_outputs=False)
    blocked, reference = ops(config), ops(config)
    q, k, v = inputs(1, 2, 16, 16, 8, seed=0)
    got = step(lambda q, k, v: flex_causal_attention(q, k, v, *blocked, 4), q, k, v, 0)
    want = step(lambda q, k, v: written_out(q, k, v, *reference), q, k, v, 0)
    assert "output" not in blocked[0].states and "output" not in blocked[1].states
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    for b, r in zip(blocked, reference, strict=True):
        assert_states_match(b, r)


def test_earlier_outputs_take_no_gradient_from_later_keys():
    q, k, v = inputs(1, 2, 12, 20, 8, seed=0)  # 8 cached positions: query i sees keys <= 8 + i
    y = flex_causal_attention(q, k, v, *ops(), 4)
    y[:, :, :5].sum().backward()  # queries 0..4 see keys 0..12
    assert k.grad[:, :, 13:].abs().max() == 0 and v.grad[:, :, 13:].abs().max() == 0
    assert k.grad[:, :, 12].abs().max() > 0 and v.grad[:, :, 12].abs().max() > 0
    assert q.grad[:, :, 5:].abs().max() == 0


def test_non_finite_inputs_raise_the_named_error():
    q, k, v = inputs(1, 1, 8, 8, 4, seed=0)
    with pytest.raises(FlexNonFiniteError, match=r"attn\.qk\.input_a"):
        flex_causal_attention(q.detach() * math.nan, k, v, *ops(), 4)
    k_inf = k.detach().clone()
    k_inf[0, 0, 7, 0] = math.inf  # a masked key: the written-out path quantises it too
    with pytest.raises(FlexNonFiniteError, match=r"attn\.qk\.input_b"):
        flex_causal_attention(q, k_inf, v, *ops(), 4)


def test_applies_to_round_to_nearest_training_only():
    assert blocked_attention_applies(*ops())
    assert not blocked_attention_applies(*ops(FlexConfig(rounding="stochastic")))
    qk, av = ops()
    qk.frozen = av.frozen = True
    assert blocked_attention_applies(qk, av)  # autograd on: frozen ops train as usual
    with torch.no_grad():
        assert not blocked_attention_applies(qk, av)


def test_bad_shapes_are_named():
    q, k, v = inputs(1, 2, 8, 4, 4, seed=0)
    with pytest.raises(ValueError, match="T must be <= S"):
        flex_causal_attention(q, k, v, *ops())
    with pytest.raises(ValueError, match=r"q \(B, H, T, D\)"):
        flex_causal_attention(q, k[:, :1], v, *ops())


def test_segments_mask_other_documents_as_the_written_out_path_does():
    """Packed documents: the blocked path with ``segments`` equals attention written out with
    a block-diagonal causal mask — values, gradients and Autoflex states."""
    B, H, T, D = 2, 2, 40, 8
    segments = torch.tensor([[0] * 13 + [1] * 20 + [-1] * 7, [0] * 40])  # (B, T)

    def reference(q, k, v, qk, av):
        scores = flex_matmul(q, k.transpose(-1, -2), qk)  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        allowed = causal & (segments.unsqueeze(2) == segments.unsqueeze(1))  # (B, T, T)
        bias = torch.zeros(B, 1, T, T).masked_fill_(~allowed.unsqueeze(1), float("-inf"))
        return flex_matmul(torch.softmax(scores + bias, dim=-1), v, av)

    blocked, written = ops(), ops()
    for i in range(3):
        q, k, v = inputs(B, H, T, T, D, seed=10 + i, scale=1.0 + i)
        got = step(
            lambda q, k, v: flex_causal_attention(q, k, v, *blocked, 16, segments=segments),
            q, k, v, i,
        )  # fmt: skip
        want = step(lambda q, k, v: reference(q, k, v, *written), q, k, v, i)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        for name, g, w in zip(("k", "v"), got[2:], want[2:], strict=True):
            op = blocked[0] if name == "k" else blocked[1]
            assert_close_on_grid(g, w, op.states["grad_b"].exponent, name)
    assert_states_match(blocked[0], written[0])
    assert_states_match(blocked[1], written[1])
    # and a query never reads another document: change document 0, document 1 is the same
    q, k, v = inputs(B, H, T, T, D, seed=99)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[0, :, :13] += 3.0
    v2[0, :, :13] -= 2.0
    a = flex_causal_attention(q, k, v, *ops(), 16, segments=segments)
    b = flex_causal_attention(q, k2, v2, *ops(), 16, segments=segments)
    assert not torch.equal(a[0, :, :13], b[0, :, :13])
    assert torch.allclose(a[0, :, 13:], b[0, :, 13:], atol=1e-3)


def test_segments_must_match_the_keys():
    q, k, v = inputs(1, 1, 4, 4, 8, seed=0)
    with pytest.raises(ValueError, match=r"segments must be \(B, S\)"):
        flex_causal_attention(q, k, v, *ops(), segments=torch.zeros(1, 3, dtype=torch.long))
