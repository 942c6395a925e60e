"""The int16 matvec kernel against its float32 reference."""

import os
import subprocess
import sys

import pytest
import torch

from omniflex.flex import int16_matvec
from omniflex.flex.int16_matvec import MAX_MANTISSA, flex16_linear, flex16_linear_reference

pytestmark = pytest.mark.skipif(
    not int16_matvec.available(), reason="the int16 matvec kernel needs x86 AVX2 and a compiler"
)


def _close(a: torch.Tensor, b: torch.Tensor, K: int) -> None:
    """Equal up to float32 summation order: K terms, each rounding at most half an ulp of the
    largest partial sum (bounded by the sum of |products|)."""
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
    assert torch.isnan(a).equal(torch.isnan(b))
    ok = ~torch.isnan(a)
    assert torch.allclose(a[ok], b[ok], rtol=0, atol=K * 2**-23 * b[ok].abs().max().item() + 1e-30)


@pytest.mark.parametrize(
    "shape",
    [(1, 768, 256), (1, 4491, 256), (1, 256, 704), (3, 5, 37), (2, 7, 16), (1, 1, 15), (4, 6, 33)],
)
def test_matches_reference(shape: tuple[int, int, int]) -> None:
    M, N, K = shape
    gen = torch.Generator().manual_seed(sum(shape))
    w = torch.randint(-MAX_MANTISSA, MAX_MANTISSA + 1, (N, K), dtype=torch.int16, generator=gen)
    x = torch.randn(M, K, generator=gen) * 4
    y = flex16_linear(x, -12, w, -15)
    _close(y, flex16_linear_reference(x, -12, w, -15), K)


def test_batch_dims_and_extremes() -> None:
    """Leading dims kept; inputs beyond the grid saturate, ties round to even, and the largest
    mantissas (pair sums near 2^31) do not overflow."""
    K = 64
    w = torch.full((8, K), MAX_MANTISSA, dtype=torch.int16)
    w[1::2] = -MAX_MANTISSA
    x = torch.full((2, 3, K), 1e9)  # far past the top: every input is +MAX_MANTISSA
    x[1, :, ::2] = -1e9
    x[0, 2] = torch.tensor([0.5, 1.5, 2.5, -0.5] * (K // 4))  # ties, exponent 0
    y = flex16_linear(x, 0, w, 0)
    ref = flex16_linear_reference(x, 0, w, 0)
    assert y.shape == (2, 3, 8)
    _close(y, ref, K)
    exact = K * MAX_MANTISSA**2  # no int32 overflow: within float32 rounding of the exact sum
    assert abs(y[0, 0, 0].item() - exact) <= exact * 2**-20
    assert y[0, 2, 0].item() == (0 + 2 + 2 + 0) * (K // 4) * MAX_MANTISSA  # half to even


def test_nan_rows_and_max_mantissa() -> None:
    w = torch.ones(5, 16, dtype=torch.int16)
    x = torch.arange(32, dtype=torch.float32).reshape(2, 16)
    x[1, 3] = float("nan")
    y = flex16_linear(x, 0, w, 0, max_mantissa=7)
    _close(y, flex16_linear_reference(x, 0, w, 0, max_mantissa=7), 16)
    assert torch.isnan(y[1]).all() and y[0, 0].item() == sum(min(i, 7) for i in range(16))


def test_empty_operands() -> None:
    no_features = flex16_linear(torch.zeros(2, 0), 0, torch.zeros(3, 0, dtype=torch.int16), 0)
    assert no_features.equal(torch.zeros(2, 3))  # empty sums
    no_rows = flex16_linear(torch.zeros(0, 4), 0, torch.ones(3, 4, dtype=torch.int16), 0)
    assert no_rows.shape == (0, 3)


def test_bad_operands_name_the_problem() -> None:
    w = torch.zeros(4, 8, dtype=torch.int16)
    with pytest.raises(RuntimeError, match="features"):
        flex16_linear(torch.zeros(1, 9), 0, w, 0)
    with pytest.raises(RuntimeError, match="int16 mantissa"):
        flex16_linear(torch.zeros(1, 8), 0, w.float(), 0)
    with pytest.raises(RuntimeError, match="float32"):
        flex16_linear(torch.zeros(1, 8, dtype=torch.float64), 0, w, 0)
    with pytest.raises(RuntimeError, match="max_mantissa"):
        flex16_linear(torch.zeros(1, 8), 0, w, 0, max_mantissa=40000)


def test_inside_a_compiled_graph() -> None:
    """The fake implementation lets inductor call the kernel inside a graph (C++ wrapper)."""
    gen = torch.Generator().manual_seed(1)
    w = torch.randint(-999, 1000, (48, 32), dtype=torch.int16, generator=gen)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.ops.omniflex.flex16_linear(x * 2, w, -6, -3, MAX_MANTISSA)) + 1

    x = torch.randn(1, 1, 32, generator=gen)
    compiled = torch.compile(f, fullgraph=True, options={"cpp_wrapper": True})
    assert torch.equal(compiled(x), f(x))


def test_switched_off_by_environment() -> None:
    env = dict(os.environ, OMNIFLEX_INT16_MATVEC="off")
    code = "from omniflex.flex import int16_matvec as m; print(m.available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    code = (
        "import torch; from omniflex.flex.int16_matvec import flex16_linear as f\n"
        "f(torch.zeros(1, 8), 0, torch.zeros(2, 8, dtype=torch.int16), 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "not available" in out.stderr


def test_a_stale_build_lock_is_removed(tmp_path, monkeypatch) -> None:
    """A build killed mid-way leaves a lock that cpp_extension would wait on for ever."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    build = int16_matvec._build_directory()
    assert build.parent == tmp_path and build.is_dir()
    lock = build / "lock"
    lock.touch()
    int16_matvec._build_directory()
    assert lock.exists()  # a build in progress: kept
    old = lock.stat().st_mtime - int16_matvec.STALE_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    int16_matvec._build_directory()
    assert not lock.exists()
