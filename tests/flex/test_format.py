"""Bit-exact goldens and properties of the Flexpoint format and its quantiser."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omniflex.flex import AutoflexState, FlexFormat, FlexTensor, FlexTypeError, quantize_reference

F16 = FlexFormat()


def q(values, exponent, fmt=F16):
    return quantize_reference(torch.tensor(values, dtype=torch.float32), exponent, fmt)


def test_default_format_is_flex16_5_with_documented_range():
    assert F16.name == "flex16+5"
    assert F16.max_mantissa == 32767
    assert F16.underflow_mantissa == 16384
    assert (F16.min_exponent, F16.max_exponent) == (-31, 0)
    assert F16.storage_dtype == torch.int16
    assert FlexFormat(8, 5).storage_dtype == torch.int8
    assert FlexFormat.from_name("flex12+5") == FlexFormat(12, 5)


@pytest.mark.parametrize("bad", [{"mantissa_bits": 1}, {"mantissa_bits": 17}, {"exponent_bits": 0}])
def test_format_validation_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FlexFormat(**bad)


def test_saturation_is_symmetric_at_2_15_minus_1():
    out = q([40000.0, -40000.0, 32767.0, -32767.0, 32768.0, -32768.0], 0)
    assert out.mantissa.tolist() == [32767, -32767, 32767, -32767, 32767, -32767]
    assert out.mantissa.dtype == torch.int16


def test_rounding_ties_go_to_even():
    out = q([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 2.4999998, 2.5000002], 0)
    assert out.mantissa.tolist() == [0, 2, 2, 4, 0, -2, -2, 2, 3]


def test_zeros_are_exact_and_not_counted_as_flushes():
    out = q([0.0, -0.0, 0.0], -10)
    assert out.mantissa.tolist() == [0, 0, 0]
    assert out.flushes == 0
    assert out.amax == 0.0


def test_values_below_half_a_step_flush_to_zero_and_are_counted():
    step = 2.0**-10
    out = q([step / 4, step / 2, -step / 2, 0.75 * step, step, 0.0], -10)
    assert out.mantissa.tolist() == [0, 0, 0, 1, 1, 0]
    assert out.flushes == 3  # step/4, +step/2 and -step/2 (ties to even: 0)


def test_exponent_range_ends():
    top = FlexTensor(torch.tensor([32767, -32767], dtype=torch.int16), 0)
    assert top.to_float().tolist() == [32767.0, -32767.0]
    bottom = FlexTensor(torch.tensor([1, 32767], dtype=torch.int16), -31)
    assert bottom.to_float().tolist() == [2.0**-31, 32767 * 2.0**-31]
    for bad in (-32, 1):
        with pytest.raises(ValueError, match="outside flex16\\+5's range"):
            FlexTensor(torch.zeros(2, dtype=torch.int16), bad)


def test_flex_tensor_storage_repr_and_nbytes():
    t = FlexTensor(torch.tensor([[1, -2], [3, 4]], dtype=torch.int16), -3)
    assert t.nbytes == 4 * 2 + 1
    assert t.scale == 0.125
    assert "flex16+5" in repr(t) and "exponent=-3" in repr(t) and "max|mantissa|=4/32767" in repr(t)
    with pytest.raises(FlexTypeError, match="int16"):
        FlexTensor(torch.zeros(2, dtype=torch.int32), 0)


def test_nan_and_inf_propagate_into_amax():
    assert math.isnan(q([1.0, float("nan")], 0).amax)
    assert q([1.0, float("-inf")], 0).amax == math.inf


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=64), st.sampled_from([16, 12, 8]))
def test_round_trip_error_is_at_most_half_a_step(values, bits):
    fmt = FlexFormat(bits, 5)
    x = torch.tensor(values, dtype=torch.float32)
    state = AutoflexState("prop", fmt)
    flex = state.to_flex(x)  # Algorithm 1 picks the exponent
    m = flex.mantissa.to(torch.int32)
    assert int(m.abs().max()) <= fmt.max_mantissa
    err = (flex.to_float().double() - x.double()).abs().max().item()
    assert err <= 0.5 * flex.scale


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=64), st.integers(-31, 0))
def test_mantissas_stay_in_range_at_any_exponent(values, exponent):
    out = quantize_reference(torch.tensor(values, dtype=torch.float32), exponent, F16)
    assert int(out.mantissa.to(torch.int32).abs().max()) <= F16.max_mantissa
