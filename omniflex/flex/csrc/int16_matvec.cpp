// omniflex::flex16_linear — a frozen flex16 linear layer for one or a few rows (decoding), on
// the integer mantissas: y[m, n] = 2^(ex + ew) * sum_k q(x[m, k]) * w[n, k], where
// q(x) = clamp(round_half_even(x * 2^-ex), -top, top) is x's frozen flex rounding and w holds the
// weight's int16 mantissas (shared exponent ew).
//
// Why: decoding one token multiplies one row by every weight matrix, so the time goes into
// reading the weights. A float32 matvec reads 4 bytes a weight; this kernel reads the 2-byte
// mantissas and multiplies them with the input's mantissas by vpmaddwd (16 int16 products summed
// in pairs to 8 int32 per instruction), converting each pair sum to float32 and accumulating in
// float32 as a float32 matmul does. A pair sum is exact: |m| <= 32767, so |m1 m2 + m3 m4| <=
// 2 * 32767^2 < 2^31. The result differs from the float32 matmul of the decoded values
// (flex16_linear_reference in int16_matvec.py) only in float32 summation rounding.
//
// AVX2 + FMA; int16_matvec.py builds this file only on CPUs that have them. NaN in a row of x
// makes that row's outputs NaN (as the float32 reference); +-inf saturates like any large value.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

// 16 products of int16 pairs, summed in pairs (exact in int32), as 8 floats.
inline __m256 pair_sums(const int16_t* w, __m256i x) {
  __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(wv, x));
}

// dot(x, w) for a K-vector pair; the tail past the last multiple of 16 in scalar code.
inline float dot(const int16_t* x, const int16_t* w, int64_t K) {
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    acc = _mm256_add_ps(acc, pair_sums(w + k, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k))));
  }
  float s = hsum(acc);
  for (; k < K; ++k) s += static_cast<float>(static_cast<int32_t>(x[k]) * w[k]);
  return s;
}

// Four weight rows against one input row: the input is loaded once per 16 columns.
inline void dot4(const int16_t* x, const int16_t* w, int64_t K, float* out) {
  const int16_t *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
    a0 = _mm256_add_ps(a0, pair_sums(w0 + k, xv));
    a1 = _mm256_add_ps(a1, pair_sums(w1 + k, xv));
    a2 = _mm256_add_ps(a2, pair_sums(w2 + k, xv));
    a3 = _mm256_add_ps(a3, pair_sums(w3 + k, xv));
  }
  float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  for (; k < K; ++k) {
    int32_t xk = x[k];
    s0 += static_cast<float>(xk * w0[k]);
    s1 += static_cast<float>(xk * w1[k]);
    s2 += static_cast<float>(xk * w2[k]);
    s3 += static_cast<float>(xk * w3[k]);
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

at::Tensor flex16_linear(
    const at::Tensor& x, const at::Tensor& weight, int64_t x_exponent, int64_t w_exponent,
    int64_t max_mantissa) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "flex16_linear runs on CPU tensors");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "flex16_linear: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == at::kShort && weight.dim() == 2,
              "flex16_linear: weight must be a 2-D int16 mantissa tensor, got ", weight.scalar_type(),
              " with ", weight.dim(), " dims");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "flex16_linear: x has ", x.size(-1),
              " features, the weight takes ", weight.size(1));
  TORCH_CHECK(max_mantissa >= 1 && max_mantissa <= 32767,
              "flex16_linear: max_mantissa must lie in [1, 32767], got ", max_mantissa);
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = weight.contiguous();
  const int64_t N = wc.size(0), K = wc.size(1), M = K == 0 ? 0 : xc.numel() / K;
  std::vector<int64_t> sizes(xc.sizes().begin(), xc.sizes().end());
  sizes.back() = N;
  at::Tensor y = at::empty(sizes, xc.options());
  if (K == 0) return y.zero_();  // empty sums
  if (N == 0 || M == 0) return y;

  // The inputs' mantissas, and which rows hold a NaN.
  std::vector<int16_t> xq(static_cast<size_t>(M * K));
  std::vector<bool> nan_row(static_cast<size_t>(M), false);
  const float inv = std::ldexp(1.0f, static_cast<int>(-x_exponent));
  const float top = static_cast<float>(max_mantissa);
  const float* xp = xc.data_ptr<float>();
  for (int64_t i = 0; i < M * K; ++i) {
    float v = xp[i];
    if (std::isnan(v)) {
      nan_row[static_cast<size_t>(i / K)] = true;
      v = 0.0f;
    }
    xq[static_cast<size_t>(i)] = static_cast<int16_t>(std::clamp(std::nearbyint(v * inv), -top, top));
  }

  const float scale = std::ldexp(1.0f, static_cast<int>(x_exponent + w_exponent));
  const int16_t* wp = wc.data_ptr<int16_t>();
  float* yp = y.data_ptr<float>();
  const int64_t blocks = (N + 3) / 4;
  // ~32 KiB of mantissas per task: small matrices stay on one thread.
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(K, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    float s[4];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = 4 * b;
      for (int64_t m = 0; m < M; ++m) {
        const int16_t* xr = xq.data() + m * K;
        float* yr = yp + m * N;
        if (n + 4 <= N) {
          dot4(xr, wp + n * K, K, s);
          for (int j = 0; j < 4; ++j) yr[n + j] = s[j] * scale;
        } else {
          for (int64_t r = n; r < N; ++r) yr[r] = dot(xr, wp + r * K, K) * scale;
        }
      }
    }
  });
  for (int64_t m = 0; m < M; ++m) {
    if (nan_row[static_cast<size_t>(m)]) {
      std::fill(yp + m * N, yp + (m + 1) * N, std::numeric_limits<float>::quiet_NaN());
    }
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(omniflex, m) {
  m.def("flex16_linear(Tensor x, Tensor weight, int x_exponent, int w_exponent, int max_mantissa) -> Tensor");
}

TORCH_LIBRARY_IMPL(omniflex, CPU, m) {
  m.impl("flex16_linear", &flex16_linear);
}
