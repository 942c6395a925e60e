"""The compiled and in-place quantisers equal the reference bit for bit; stochastic rounding is
unbiased."""

import math

import pytest
import torch

from omniflex.flex import FlexFormat, quantize_reference, quantize_tensor
from omniflex.flex.kernels import cxx_compiler_found, requantize_


@pytest.mark.skipif(not cxx_compiler_found(), reason="no C++ compiler for torch.compile")
@pytest.mark.parametrize("fmt", [FlexFormat(16, 5), FlexFormat(8, 5)])
def test_compiled_kernel_matches_reference_bit_for_bit(fmt):
    x = torch.randn(1 << 16) * 50
    x[::7] = 0.0
    x[::13] *= 1e-7  # some flush
    x[5] = 1e9  # saturates
    for exponent in (fmt.min_exponent, -12, fmt.max_exponent):
        ref = quantize_reference(x, exponent, fmt, want_values=True)
        fast = quantize_tensor(x, exponent, fmt, want_values=True, kernel="compiled")
        assert torch.equal(ref.mantissa, fast.mantissa)
        assert torch.equal(ref.values, fast.values)
        assert (ref.amax, ref.flushes) == (fast.amax, fast.flushes)


def test_stochastic_rounding_is_unbiased_and_stays_on_the_grid():
    x = torch.full((200_000,), 0.3)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    out = quantize_reference(x, 0, FlexFormat(), noise=noise, want_values=True)
    assert set(out.mantissa.unique().tolist()) == {0, 1}
    assert abs(out.values.mean().item() - 0.3) < 0.005
    nearest = quantize_reference(x, 0, FlexFormat(), want_values=True)
    assert nearest.values.mean().item() == 0.0  # what stochastic rounding rescues


def test_values_equal_mantissa_times_scale():
    x = torch.randn(1000)
    out = quantize_reference(x, -10, FlexFormat(), want_values=True)
    assert torch.equal(out.values, out.mantissa.float() * 2.0**-10)


def test_empty_tensor():
    out = quantize_reference(torch.empty(0, 3), -4, FlexFormat(), want_values=True)
    assert out.mantissa.shape == (0, 3) and out.amax == 0.0 and out.flushes == 0


@pytest.mark.skipif(not cxx_compiler_found(), reason="no C++ compiler for torch.compile")
def test_compiled_flush_count_and_maximum_with_zeros_nan_and_inf():
    fmt = FlexFormat()
    x = torch.randn(1 << 16)
    x[::5] = 0.0
    x[1::5] = -0.0
    x[2::11] *= 1e-9  # flush at exponent -12
    for special in (None, float("inf"), float("nan")):
        if special is not None:
            x[3] = special
        ref = quantize_reference(x, -12, fmt)
        fast = quantize_tensor(x, -12, fmt, kernel="compiled")
        assert ref.flushes == fast.flushes > 0
        assert ref.amax == fast.amax or (math.isnan(ref.amax) and math.isnan(fast.amax))


@pytest.mark.parametrize(
    "kernel",
    [
        "eager",
        pytest.param(
            "compiled",
            marks=pytest.mark.skipif(not cxx_compiler_found(), reason="no C++ compiler"),
        ),
    ],
)
@pytest.mark.parametrize("stochastic", [False, True])
def test_requantize_in_place_equals_the_quantized_values(kernel, stochastic):
    fmt = FlexFormat()
    x = torch.randn(4, 1 << 14) * 50
    x[0, ::7] = 0.0
    x[1, 5] = 1e9  # saturates
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) if stochastic else None
    for exponent in (fmt.min_exponent, -12, fmt.max_exponent):
        ref = quantize_reference(x, exponent, fmt, noise=noise, want_values=True)
        y = x.clone()
        out = requantize_(y, exponent, fmt, noise=noise, kernel=kernel)
        assert out is y
        assert torch.equal(y, ref.values)


def test_requantize_refuses_a_strided_tensor():
    with pytest.raises(ValueError, match="contiguous float32"):
        requantize_(torch.randn(8, 4).t(), 0, FlexFormat())
