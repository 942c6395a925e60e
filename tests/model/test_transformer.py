"""OmniModel: shapes, loss, causality, SDPA vs reference, precisions, goldens.

Golden files (``tests/assets/model/golden_micro.safetensors``): a seeded micro model's weights,
an input and the logits of float32 and flex16+5 runs. Regenerate after an intended numerical
change with::

    python -m tests.model.test_transformer

and say why in the commit.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from omniflex.flex import FlexWeight, flex_disabled
from omniflex.model.config import ModelConfig
from omniflex.model.transformer import OmniModel
from tests.model import MICRO_LAYOUT, micro_config

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "model" / "golden_micro.safetensors"
V = MICRO_LAYOUT.size


def _ids(B: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=gen)


def _model(**overrides) -> OmniModel:
    return OmniModel.build(micro_config(**overrides), seed=0)


# ---------------------------------------------------------------------- forward and loss
def test_forward_shapes_and_last_only() -> None:
    model = _model()
    ids = _ids()
    out = model(ids)
    assert out.logits.shape == (2, 12, V) and out.logits.dtype == torch.float32
    assert out.loss is None
    last = model(ids, last_only=True).logits
    torch.testing.assert_close(last, out.logits[:, -1:])


def test_loss_is_mean_over_masked_positions_ignoring_minus_100() -> None:
    model = _model()
    ids = _ids()
    targets = _ids(seed=2)
    targets[0, :3] = -100
    mask = torch.zeros_like(ids)
    mask[:, 5:] = 1
    mask[0, 2] = 1  # masked in, but its target is -100: still ignored
    out = model(ids, targets, mask)
    logits = out.logits
    keep = (mask == 1) & (targets != -100)
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)
    # no position selected: zero, and backward still works
    zero = model(ids, targets, torch.zeros_like(ids)).loss
    assert zero.item() == 0.0
    zero.backward()


def test_input_errors_name_the_fix() -> None:
    model = _model()
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        model(_ids(), _ids()[:, :3])
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_tied_embeddings_share_one_parameter() -> None:
    for precision in ("float32", "flex16+5"):
        model = _model(precision=precision)
        assert model.lm_head.weight is model.tok_emb.weight
    untied = _model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight


# ---------------------------------------------------------------------- causality
@pytest.mark.parametrize("impl", ["reference", "sdpa"])
@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_later_tokens_never_change_earlier_logits(impl: str, n_kv_heads: int | None) -> None:
    model = _model(n_kv_heads=n_kv_heads)
    model.set_attention_impl(impl)
    ids = _ids()
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % V
    a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_flex_model_is_causal_once_autoflex_predicts() -> None:
    """Flexpoint shares one exponent per tensor, but Autoflex predicts it from *past* maxima:
    once initialised (first call), later positions cannot reach earlier ones (barring an
    overflow, which would recompute the exponent from the current tensor)."""
    model = _model(precision="flex16+5")
    ids = _ids()
    for _ in range(3):
        model(ids)
    twin = copy.deepcopy(model)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % V
    a, b = model(ids).logits, twin(changed).logits
    assert torch.equal(a[:, :7], b[:, :7])


def test_sdpa_equals_reference() -> None:
    for n_kv_heads in (None, 1):
        model = _model(n_kv_heads=n_kv_heads)
        ids = _ids()
        model.set_attention_impl("reference")
        ref = model(ids).logits
        model.set_attention_impl("sdpa")
        torch.testing.assert_close(model(ids).logits, ref, atol=1e-5, rtol=1e-5)
        # with a cache: a chunk after cached positions (offset causal mask) and one token
        for impl in ("reference", "sdpa"):
            model.set_attention_impl(impl)
            cache = model.new_cache(2)
            parts = [model(ids[:, s:e], cache=cache).logits for s, e in ((0, 5), (5, 11), (11, 12))]
            torch.testing.assert_close(torch.cat(parts, 1), ref, atol=1e-5, rtol=1e-5)


def test_sdpa_is_refused_for_converted_attention() -> None:
    model = _model(precision="flex16+5")
    model.set_attention_impl("sdpa")
    with pytest.raises(ValueError, match="reference"):
        model(_ids())


# ---------------------------------------------------------------------- precisions
def test_flex_forward_backward_and_loss_close_to_float32() -> None:
    base = OmniModel(micro_config())  # float32 weights, seeded by the autouse fixture
    flex_cfg = micro_config(precision="flex16+5")
    flex = copy.deepcopy(base)
    flex.config = flex_cfg
    flex.apply_precision()
    assert isinstance(flex.lm_head.weight, FlexWeight)
    ids, targets = _ids(), _ids(seed=3)
    loss32 = base(ids, targets).loss
    loss16 = flex(ids, targets).loss
    loss16.backward()
    assert abs(loss16.item() / loss32.item() - 1) < 2e-3
    grads = [p.grad for p in flex.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with flex_disabled(flex):  # exact flex weights in float32 arithmetic
        assert abs(flex(ids, targets).loss.item() / loss32.item() - 1) < 1e-3


def test_flex_weights_take_about_half_the_bytes() -> None:
    float_bytes = _model().weight_nbytes()
    flex_bytes = _model(precision="flex16+5").weight_nbytes()
    assert flex_bytes <= 0.52 * float_bytes


def test_bfloat16_emulation_runs_and_stays_close() -> None:
    base = OmniModel(micro_config())
    emulated = copy.deepcopy(base)
    emulated.config = micro_config(precision="bfloat16")
    emulated.apply_precision()
    ids, targets = _ids(), _ids(seed=3)
    loss = emulated(ids, targets).loss
    loss.backward()
    assert abs(loss.item() / base(ids, targets).loss.item() - 1) < 2e-2


def test_flex_state_dict_round_trip_gives_identical_logits() -> None:
    model = _model(precision="flex16+5")
    ids = _ids()
    model(ids)  # initialise Autoflex states
    clone = _model(precision="flex16+5")
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone(ids).logits, model(ids).logits)


def test_apply_precision_twice_is_refused() -> None:
    model = _model(precision="flex16+5")
    with pytest.raises(ValueError, match="already converted"):
        model.apply_precision()


def test_explicit_positions_equal_the_default() -> None:
    model = _model()
    ids = _ids()
    default = model(ids[:, 5:], cache=model.new_cache(2)).logits  # positions 0..6
    explicit = model(ids[:, 5:], positions=torch.arange(7)).logits
    torch.testing.assert_close(explicit, default)
    per_row = model(ids[:, 5:], positions=torch.arange(7).expand(2, 7)).logits
    torch.testing.assert_close(per_row, default)


def test_memory_benchmark_runs_and_unknown_names_are_refused() -> None:
    from omniflex.model.bench import run_model_benchmarks

    result = run_model_benchmarks(["memory"], layout=MICRO_LAYOUT)
    assert result["memory"]["met"] and result["memory"]["ratio_total"] <= 0.52
    with pytest.raises(ValueError, match="decode"):
        run_model_benchmarks(["speed"])


# ---------------------------------------------------------------------- goldens
def _golden_config(precision: str) -> ModelConfig:
    return micro_config(precision=precision, n_kv_heads=1)


def _golden_input() -> torch.Tensor:
    return _ids(B=1, T=16, seed=7)


def write_golden(path: Path = GOLDEN) -> None:
    """Regenerate the golden file (weights of a seed-0 micro model, an input, its logits)."""
    model = OmniModel.build(_golden_config("float32"), seed=0)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    ids = _golden_input()
    tensors = {f"weight.{k}": v for k, v in weights.items()}
    tensors["input_ids"] = ids
    with torch.no_grad():
        tensors["logits.float32"] = model(ids).logits.contiguous()
        flex = _load_golden_model("flex16+5", weights)
        tensors["logits.flex16+5"] = flex(ids).logits.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def _load_golden_model(precision: str, weights: dict[str, torch.Tensor]) -> OmniModel:
    model = OmniModel(_golden_config(precision))
    model.load_state_dict(weights)  # float weights first: conversion quantises them
    return model.apply_precision()


@pytest.mark.parametrize(("precision", "atol"), [("float32", 1e-5), ("flex16+5", 1e-3)])
def test_golden_logits(precision: str, atol: float) -> None:
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing; run `python -m tests.model.test_transformer`")
    stored = load_file(str(GOLDEN))
    weights = {k.removeprefix("weight."): v for k, v in stored.items() if k.startswith("weight.")}
    model = _load_golden_model(precision, weights)
    with torch.no_grad():
        logits = model(stored["input_ids"]).logits
    torch.testing.assert_close(logits, stored[f"logits.{precision}"], atol=atol, rtol=0)


if __name__ == "__main__":
    write_golden()
    print(f"wrote {GOLDEN}")


@pytest.mark.parametrize(
    ("precision", "impl"),
    [
        ("float32", "auto"),
        ("float32", "reference"),
        ("flex16+5", "auto"),
        ("flex16+5", "reference"),
    ],
)
def test_packed_documents_see_only_themselves(precision: str, impl: str) -> None:
    """Two documents in one row (``segments``, positions restarting): the second one's logits
    are those it gets alone, whatever the first one holds — no token attends across."""
    torch.manual_seed(0)
    model = _model(precision=precision).eval()
    model.set_attention_impl(impl)
    a, b = _ids(1, 7, seed=3), _ids(1, 9, seed=4)
    other = _ids(1, 7, seed=5)
    segments = torch.tensor([[0] * 7 + [1] * 9])
    positions = torch.cat([torch.arange(7), torch.arange(9)]).unsqueeze(0)
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), positions=positions, segments=segments).logits
        swapped = model(torch.cat([other, b], 1), positions=positions, segments=segments).logits
        alone = model(b).logits
        causal = model(torch.cat([a, b], 1)).logits  # without segments, b reads a
    tol = 1e-5 if precision == "float32" else 0.05  # flex: per-tensor exponents follow the row
    assert torch.allclose(packed[:, 7:], alone, atol=tol)
    assert torch.allclose(packed[:, 7:], swapped[:, 7:], atol=tol)
    assert not torch.allclose(causal[:, 7:], alone, atol=tol)
    with pytest.raises(ValueError, match="segments"):
        model(b, segments=torch.zeros(1, 8, dtype=torch.long))
