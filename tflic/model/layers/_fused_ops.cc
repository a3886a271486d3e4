// Fused CPU kernels of the training path (fused_ops.py is the API), forward and
// backward: LayerNorm over the last axis, bias + exact GELU, window attention's bias +
// split into heads and its softmax over logits plus position bias plus mask, on float32 or
// bfloat16 tensors with float32 arithmetic and statistics; and the latent rate, the
// log-probability of tfc.NoisyNormal (a Gaussian convolved with unit uniform noise),
// float32 in and out with double arithmetic.
//
// Each replaces a chain of TensorFlow elementwise ops (casts, moments, normalization,
// bias add, erf, exp) that each read and write the whole tensor: here a row is read
// once, its statistics and outputs computed while it is in cache. The loops are written
// so that GCC vectorises them (fixed-width partial sums instead of one float
// accumulator; branch-free exp and erf), and compiled for AVX-512, AVX2 and baseline
// x86-64 (target_clones), chosen at load time: TensorFlow's own elementwise kernels are
// built for AVX only.
//
// erf is Eigen's rational approximation (what tf.math.erf computes on CPUs), exp a
// Cephes-style polynomial (within 2 ulp); bfloat16 outputs are rounded to nearest even,
// as TensorFlow's casts round.
//
// The rate kernels replace tensorflow-probability's log_ndtr composite (erfc, log, exp and
// many selects: some 800 passes over the tensor, forward and gradient); see the section
// "Noisy Gaussian log-probability" for their numerics.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/threadpool.h"

namespace tflic {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
namespace errors = ::tensorflow::errors;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TFLIC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TFLIC_CLONES
#endif

// Storage types: float, or bfloat16 as its 16 raw bits.
inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline void Store(float* p, int64_t i, float v) { p[i] = v; }
inline void Store(uint16_t* p, int64_t i, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  // Round to nearest even; a NaN stays a (quiet) NaN.
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  p[i] = static_cast<uint16_t>(v != v ? 0x7fc0u : rounded);
}

template <typename T>
struct StorageOf;
template <>
struct StorageOf<float> {
  using type = float;
};
template <>
struct StorageOf<Eigen::bfloat16> {
  using type = uint16_t;
};

template <typename T>
const typename StorageOf<T>::type* Data(const Tensor& t) {
  return reinterpret_cast<const typename StorageOf<T>::type*>(t.flat<T>().data());
}
template <typename T>
typename StorageOf<T>::type* Data(Tensor* t) {
  return reinterpret_cast<typename StorageOf<T>::type*>(t->flat<T>().data());
}

constexpr int kLanes = 16;  // partial sums per reduction: vectorisable without -ffast-math

inline float Sum(const float* v, int64_t n) {
  float acc[kLanes] = {0.0f};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += v[i + k];
  }
  float total = 0.0f;
  for (; i < n; ++i) total += v[i];
  for (int k = 0; k < kLanes; ++k) total += acc[k];
  return total;
}

inline float SumProduct(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {0.0f};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float total = 0.0f;
  for (; i < n; ++i) total += a[i] * b[i];
  for (int k = 0; k < kLanes; ++k) total += acc[k];
  return total;
}

inline float Max(const float* v, int64_t n) {
  float acc[kLanes];
  for (int k = 0; k < kLanes; ++k) acc[k] = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) acc[k] = v[i + k] > acc[k] ? v[i + k] : acc[k];
  }
  float top = -INFINITY;
  for (; i < n; ++i) top = v[i] > top ? v[i] : top;
  for (int k = 0; k < kLanes; ++k) top = acc[k] > top ? acc[k] : top;
  return top;
}

// exp(x) for x <= 0 (the Gaussian's), 0 below -87 (where 2^m would be subnormal).
inline float ExpNonPositive(float x) {
  const float clamped = x < -87.0f ? -87.0f : x;
  const float m = std::floor(clamped * 1.44269504088896341f + 0.5f);
  float r = clamped - m * 0.693359375f;
  r = r + m * 2.12194440e-4f;
  const float r2 = r * r;
  float p_even = r2 * 1.37449637986719608306884765625e-3f + 4.166965186595916748046875e-2f;
  const float p_odd = r2 * 8.36894474923610687255859375e-3f + 0.16666518151760101318359375f;
  p_even = r2 * p_even + 0.49999988079071044921875f;
  float y = r * p_odd + p_even;
  y = r2 * y + (r + 1.0f);
  const int32_t exponent = (static_cast<int32_t>(m) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent, 4);
  return x < -87.0f ? 0.0f : y * scale;
}

// Eigen's generic_fast_erf_float (tf.math.erf on CPUs).
inline float Erf(float x) {
  const float x2 = x * x;
  float p = x2 * 0.00022905065861350646f + 0.0034082910107109506f;
  p = x2 * p + 0.050955695062380861f;
  p = x2 * p + 0.18520832239976145f;
  p = x2 * p + 1.128379143519084f;
  p = x * p;
  float q = x2 * -1.1791602954361697e-7f + 0.000023547966471313185f;
  q = x2 * q + 0.0010179625278914885f;
  q = x2 * q + 0.014070470171167667f;
  q = x2 * q + 0.11098505178285362f;
  q = x2 * q + 0.49746925110067538f;
  q = x2 * q + 1.0f;
  const float sign = x < 0.0f ? -1.0f : 1.0f;
  return std::fabs(x) >= 3.832506856900711f ? sign : p / q;
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// ---------------------------------------------------------------------------------------
// Noisy Gaussian log-probability: the numerics.
//
// log p(u) = log(Phi((u + 1/2)/s) - Phi((u - 1/2)/s)) is the log-density of u under a
// Gaussian of scale s convolved with unit uniform noise. Training meets it from p ~ 1
// (tiny scales, u near 0) through p ~ 1/(s sqrt(2 pi)) (s = 256: a difference of two CDFs
// that agree to 3 digits) to far tails (log p ~ -1e5), where both CDFs underflow even in
// double. One closed form covers all of these. p is even in u, so the kernels work at
// -|u|, in the lower tail, where Phi(z) = erfc(-z/sqrt2)/2, and write erfc through the
// scaled erfcx(x) = exp(x^2) erfc(x), which neither underflows nor loses digits. With
//   xa = (|u| + 1/2)/(s sqrt2) > xb = (|u| - 1/2)/(s sqrt2),  xa^2 - xb^2 = |u|/s^2 = d:
//   xb >= 0:  p = exp(-xb^2)/2 * (erfcx(xb) - exp(-d) erfcx(xa))
//   xb < 0:   p = 1 - exp(-xb^2)/2 * (erfcx(-xb) + exp(-d) erfcx(xa))
// (the second from erfc(-x) = 2 - erfc(x)). The exponent -xb^2 is added in log space,
// and the Gaussian densities over p that the gradients need come from the same terms.
// Double arithmetic (cheap here: no memory traffic to save) keeps the cancellation at
// large scales well below float32's rounding, where the float32 composite loses ~1e-5.
// exp, log and erfcx are polynomial and branch-free so that the loops vectorise.

// exp(x) in double for x <= 0, 0 below -708 (where it would be subnormal): Cody-Waite
// reduction by ln 2, then Taylor to degree 13 (error < 1e-17 on |r| <= ln2/2).
inline double ExpNonPositiveDouble(double x) {
  const double clamped = x < -708.0 ? -708.0 : x;
  const double m = std::floor(clamped * 1.4426950408889634 + 0.5);
  const double r = (clamped - m * 6.93147180369123816490e-01) - m * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r * r + r + 1.0;
  // 2^m from its bits; m >= -1021 keeps it normal. m is read from the low bits of
  // m + 1.5 * 2^52 (AVX2 has no double-to-int64 conversion: a cast would not vectorise).
  const double shifted = m + 6755399441055744.0;
  uint64_t exponent;
  std::memcpy(&exponent, &shifted, 8);
  exponent = (exponent + 1023) << 52;
  double scale;
  std::memcpy(&scale, &exponent, 8);
  return x < -708.0 ? 0.0 : p * scale;
}

// log(x) in double for normal x > 0: x = 2^e m with m in [sqrt(1/2), sqrt2), and
// log m = 2 atanh(t), t = (m - 1)/(m + 1), |t| < 0.172, by its series to t^21 (error
// < 1e-18).
inline double LogPositiveDouble(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, 8);
  // The biased exponent as the mantissa of 2^52 + it (no int64-to-double cast, as above).
  const uint64_t exponent_bits = (bits >> 52) | 0x4330000000000000ull;
  double exponent;
  std::memcpy(&exponent, &exponent_bits, 8);
  exponent -= 4503599627371519.0;  // 2^52 + 1023
  bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
  double m;
  std::memcpy(&m, &bits, 8);
  const bool high = m > 1.4142135623730951;
  m = high ? 0.5 * m : m;
  const double e = high ? exponent + 1.0 : exponent;
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = t * t;
  double p = 1.0 / 21.0;
  p = p * t2 + 1.0 / 19.0;
  p = p * t2 + 1.0 / 17.0;
  p = p * t2 + 1.0 / 15.0;
  p = p * t2 + 1.0 / 13.0;
  p = p * t2 + 1.0 / 11.0;
  p = p * t2 + 1.0 / 9.0;
  p = p * t2 + 1.0 / 7.0;
  p = p * t2 + 1.0 / 5.0;
  p = p * t2 + 1.0 / 3.0;
  const double log_m = 2.0 * t + 2.0 * t * t2 * p;
  return e * 6.93147180369123816490e-01 + (e * 1.90821492927058770002e-10 + log_m);
}

// Chebyshev coefficients of (1 + 2x) erfcx(x) in t = (x - 3.75)/(x + 3.75), which maps
// [0, inf) onto [-1, 1) (the form of Shepherd & Laframboise, Math. Comp. 36, 1981):
// interpolated at 80 Chebyshev nodes with mpmath at 50 digits, the first halved, those
// above 1e-16 kept. Erfcx below is within 3 ulp of mpmath's on [0, 1e7].
constexpr double kErfcxChebyshev[] = {
    1.1775789345674017,     -0.004590054580646478,  -0.08424913336651792,
    0.05920993999819189,    -0.026658668435305753,  0.009074997670705265,
    -0.002413163540417608,  0.0004907758365258086,  -6.916973302501207e-05,
    4.13902798607301e-06,   7.74038306619849e-07,   -2.1886401049234397e-07,
    1.076499946567091e-08,  4.521959811218287e-09,  -7.754400208831351e-10,
    -6.318088340886684e-11, 2.86879501093067e-11,   1.9455868545777347e-13,
    -9.65469674843344e-13,  3.25254814814874e-14,   3.3478119482868056e-14,
    -1.864562880419313e-15, -1.2507950530688648e-15,
};
constexpr int kErfcxTerms = sizeof(kErfcxChebyshev) / sizeof(kErfcxChebyshev[0]);

// erfcx(x) = exp(x^2) erfc(x) for x >= 0, by Clenshaw's recurrence.
inline double Erfcx(double x) {
  const double t = (x - 3.75) / (x + 3.75);
  const double two_t = 2.0 * t;
  double b1 = 0.0, b2 = 0.0;
#pragma GCC unroll 32
  for (int k = kErfcxTerms - 1; k >= 1; --k) {
    const double b = two_t * b1 - b2 + kErfcxChebyshev[k];
    b2 = b1;
    b1 = b;
  }
  return (t * b1 - b2 + kErfcxChebyshev[0]) / (1.0 + 2.0 * x);
}

// The terms of p(u) at scale s (see above) that the value and the gradients share.
struct NoisyNormalTerms {
  double xa, xb;
  double decay;     // exp(-d) = exp(-xa^2) / exp(-xb^2)
  double gauss_b;   // exp(-xb^2)
  bool tail;        // xb >= 0
  double mass;      // p / (exp(-xb^2)/2) in the tail, else p
};

inline NoisyNormalTerms NoisyNormal(double u, double s) {
  NoisyNormalTerms terms;
  const double a = std::fabs(u);
  const double k = 0.70710678118654752 / s;
  terms.xa = (a + 0.5) * k;
  terms.xb = (a - 0.5) * k;
  terms.decay = ExpNonPositiveDouble(-a / (s * s));
  terms.gauss_b = ExpNonPositiveDouble(-terms.xb * terms.xb);
  terms.tail = terms.xb >= 0.0;
  const double erfcx_b = Erfcx(std::fabs(terms.xb));
  const double decayed_erfcx_a = terms.decay * Erfcx(terms.xa);
  terms.mass = terms.tail ? erfcx_b - decayed_erfcx_a
                          : 1.0 - 0.5 * terms.gauss_b * (erfcx_b + decayed_erfcx_a);
  return terms;
}

inline double NoisyNormalLogProb(double u, double s) {
  const NoisyNormalTerms terms = NoisyNormal(u, s);
  const double log_factor = terms.tail ? -0.69314718055994531 - terms.xb * terms.xb : 0.0;
  return LogPositiveDouble(terms.mass) + log_factor;
}

// d log p / du and d log p / ds. At -|u| the bin's ends are b = -xb sqrt2 and
// a = -xa sqrt2 (standardised) and log p has derivatives (phi(b) - phi(a)) / (s p) and
// (a phi(a) - b phi(b)) / (s p); phi(b) / p and phi(a) / p = exp(-d) phi(b) / p are
// finite however small p is (both p and phi underflow in the tails).
inline void NoisyNormalLogProbGrad(double u, double s, double* du, double* ds) {
  const NoisyNormalTerms terms = NoisyNormal(u, s);
  const double density_b =
      (terms.tail ? 0.79788456080286536 : 0.39894228040143268 * terms.gauss_b) / terms.mass;
  const double density_a = terms.decay * density_b;
  const double d_minus_abs_u = (density_b - density_a) / s;  // d log p / d(-|u|)
  *du = u > 0.0 ? -d_minus_abs_u : d_minus_abs_u;
  *ds = 1.4142135623730951 * (terms.xb * density_b - terms.xa * density_a) / s;
}

// ---------------------------------------------------------------------------------------
// Row kernels. `buf` holds one row (and a second for the backward passes).

template <typename S>
TFLIC_CLONES void LayerNormRows(const S* x, const float* gamma, const float* beta,
                                float epsilon, int64_t channels, int64_t begin, int64_t end,
                                S* y, float* mean_out, float* inv_std_out) {
  std::vector<float> buf(channels);
  float* row = buf.data();
  for (int64_t r = begin; r < end; ++r) {
    const S* xr = x + r * channels;
    for (int64_t c = 0; c < channels; ++c) row[c] = Load(xr, c);
    const float mean = Sum(row, channels) / channels;
    for (int64_t c = 0; c < channels; ++c) row[c] -= mean;
    const float variance = SumProduct(row, row, channels) / channels;
    const float inv_std = 1.0f / std::sqrt(variance + epsilon);
    S* yr = y + r * channels;
    for (int64_t c = 0; c < channels; ++c) Store(yr, c, row[c] * inv_std * gamma[c] + beta[c]);
    mean_out[r] = mean;
    inv_std_out[r] = inv_std;
  }
}

// dx for rows [begin, end); adds their dgamma and dbeta to `dgamma` and `dbeta`.
template <typename S>
TFLIC_CLONES void LayerNormGradRows(const S* dy, const S* x, const float* gamma,
                                    const float* mean, const float* inv_std,
                                    int64_t channels, int64_t begin, int64_t end, S* dx,
                                    float* dgamma, float* dbeta) {
  std::vector<float> buf(3 * channels);
  float* normed = buf.data();
  float* g = normed + channels;
  float* dyr_f = g + channels;
  for (int64_t r = begin; r < end; ++r) {
    const S* xr = x + r * channels;
    const S* dyr = dy + r * channels;
    const float m = mean[r], s = inv_std[r];
    for (int64_t c = 0; c < channels; ++c) {
      normed[c] = (Load(xr, c) - m) * s;
      dyr_f[c] = Load(dyr, c);
      g[c] = dyr_f[c] * gamma[c];
    }
    const float mean_g = Sum(g, channels) / channels;
    const float mean_gn = SumProduct(g, normed, channels) / channels;
    S* dxr = dx + r * channels;
    for (int64_t c = 0; c < channels; ++c) {
      Store(dxr, c, s * (g[c] - mean_g - normed[c] * mean_gn));
      dgamma[c] += dyr_f[c] * normed[c];
      dbeta[c] += dyr_f[c];
    }
  }
}

template <typename S>
TFLIC_CLONES void BiasGeluRows(const S* x, const float* bias, int64_t channels,
                               int64_t begin, int64_t end, S* y) {
  for (int64_t r = begin; r < end; ++r) {
    const S* xr = x + r * channels;
    S* yr = y + r * channels;
    for (int64_t c = 0; c < channels; ++c) {
      const float h = Load(xr, c) + bias[c];
      Store(yr, c, h * (0.5f * (1.0f + Erf(h * kSqrtHalf))));
    }
  }
}

// dx for rows [begin, end); adds their dbias to `dbias`.
template <typename S>
TFLIC_CLONES void BiasGeluGradRows(const S* dy, const S* x, const float* bias,
                                   int64_t channels, int64_t begin, int64_t end, S* dx,
                                   float* dbias) {
  for (int64_t r = begin; r < end; ++r) {
    const S* xr = x + r * channels;
    const S* dyr = dy + r * channels;
    S* dxr = dx + r * channels;
    for (int64_t c = 0; c < channels; ++c) {
      const float h = Load(xr, c) + bias[c];
      const float cdf = 0.5f * (1.0f + Erf(h * kSqrtHalf));
      const float d = Load(dyr, c) * (cdf + h * (ExpNonPositive(-0.5f * h * h) * kInvSqrt2Pi));
      Store(dxr, c, d);
      dbias[c] += d;
    }
  }
}

// Rows [begin, end) of x [M N, P D] plus bias, scattered to P outputs [M, H, N, D / H]
// (P = 3: q, k and v): TensorFlow's bias add, transpose and unstack (or split) each read
// and write the whole tensor.
template <typename S>
TFLIC_CLONES void SplitHeadsRows(const S* x, const float* bias, int64_t n, int64_t heads,
                                 int64_t head_dim, int64_t begin, int64_t end,
                                 S* const* outs, int64_t parts) {
  const int64_t dim = heads * head_dim;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t m = r / n, token = r % n;
    const S* xr = x + r * parts * dim;
    for (int64_t part = 0; part < parts; ++part) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t c0 = part * dim + h * head_dim;
        S* out = outs[part] + ((m * heads + h) * n + token) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) Store(out, d, Load(xr, c0 + d) + bias[c0 + d]);
      }
    }
  }
}

// The inverse gather for rows [begin, end) of dx; adds them to `dbias` ([P D]).
template <typename S>
TFLIC_CLONES void SplitHeadsGradRows(const S* const* ins, int64_t parts, int64_t n,
                                     int64_t heads, int64_t head_dim, int64_t begin,
                                     int64_t end, S* dx, float* dbias) {
  const int64_t dim = heads * head_dim;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t m = r / n, token = r % n;
    S* dxr = dx + r * parts * dim;
    for (int64_t part = 0; part < parts; ++part) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t c0 = part * dim + h * head_dim;
        const S* in = ins[part] + ((m * heads + h) * n + token) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
          const float g = Load(in, d);
          Store(dxr, c0 + d, g);
          dbias[c0 + d] += g;
        }
      }
    }
  }
}

// Softmax rows of window attention: row r of `logits` ([B', H, N, N] as rows of N) is
// image-window b' = r / (H N), head and query hi = r % (H N); it adds bias[hi] and
// mask[(b' % windows) N + query], whose windows repeat per image. The sum, the max and
// the exponentials stay in float32 (TensorFlow's chain rounds each addition to bfloat16).
template <typename S>
TFLIC_CLONES void WindowSoftmaxRows(const S* logits, const S* bias, const S* mask,
                                    int64_t heads, int64_t n, int64_t windows,
                                    int64_t begin, int64_t end, S* probs) {
  std::vector<float> buf(n);
  float* row = buf.data();
  const int64_t per_window = heads * n;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t hi = r % per_window;
    const int64_t window = (r / per_window) % windows;
    const S* lr = logits + r * n;
    const S* br = bias + hi * n;
    const S* mr = mask + (window * n + hi % n) * n;
    for (int64_t j = 0; j < n; ++j) row[j] = Load(lr, j) + Load(br, j) + Load(mr, j);
    const float top = Max(row, n);
    for (int64_t j = 0; j < n; ++j) row[j] = ExpNonPositive(row[j] - top);
    const float inv_sum = 1.0f / Sum(row, n);
    S* pr = probs + r * n;
    for (int64_t j = 0; j < n; ++j) Store(pr, j, row[j] * inv_sum);
  }
}

// dlogits = p (g - <g, p>) for rows [begin, end); adds them to `dbias` ([H N, N]).
template <typename S>
TFLIC_CLONES void WindowSoftmaxGradRows(const S* dprobs, const S* probs, int64_t heads,
                                        int64_t n, int64_t begin, int64_t end, S* dlogits,
                                        float* dbias) {
  std::vector<float> buf(2 * n);
  float* p = buf.data();
  float* g = p + n;
  const int64_t per_window = heads * n;
  for (int64_t r = begin; r < end; ++r) {
    const S* pr = probs + r * n;
    const S* gr = dprobs + r * n;
    for (int64_t j = 0; j < n; ++j) {
      p[j] = Load(pr, j);
      g[j] = Load(gr, j);
    }
    const float dot = SumProduct(p, g, n);
    S* dr = dlogits + r * n;
    float* db = dbias + (r % per_window) * n;
    for (int64_t j = 0; j < n; ++j) {
      const float d = p[j] * (g[j] - dot);
      Store(dr, j, d);
      db[j] += d;
    }
  }
}

TFLIC_CLONES void NoisyNormalLogProbRange(const float* u, const float* scale, int64_t begin,
                                          int64_t end, float* log_prob) {
  for (int64_t i = begin; i < end; ++i) {
    log_prob[i] = static_cast<float>(NoisyNormalLogProb(u[i], scale[i]));
  }
}

TFLIC_CLONES void NoisyNormalLogProbGradRange(const float* dlog_prob, const float* u,
                                              const float* scale, int64_t begin, int64_t end,
                                              float* du, float* dscale) {
  for (int64_t i = begin; i < end; ++i) {
    double d_u, d_s;
    NoisyNormalLogProbGrad(u[i], scale[i], &d_u, &d_s);
    du[i] = static_cast<float>(dlog_prob[i] * d_u);
    dscale[i] = static_cast<float>(dlog_prob[i] * d_s);
  }
}

// ---------------------------------------------------------------------------------------
// Threading: rows in contiguous shards on TensorFlow's intra-op pool.

::tensorflow::thread::ThreadPool* Pool(OpKernelContext* context) {
  return context->device()->tensorflow_cpu_worker_threads()->workers;
}

// Runs fn(begin, end) over [0, rows) in shards.
template <typename Fn>
void ForRows(OpKernelContext* context, int64_t rows, int64_t channels, Fn fn) {
  Pool(context)->ParallelFor(rows, /*cost_per_unit=*/channels * 8, fn);
}

// Runs fn(begin, end, partial) over [0, rows) in a few shards (at most `max_shards`, if
// given), each adding to a zeroed float[width] of its own; returns their sum (the
// reduction over rows).
template <typename Fn>
std::vector<float> ReduceRows(OpKernelContext* context, int64_t rows, int64_t width,
                              Fn fn, int64_t max_shards = 0) {
  auto* pool = Pool(context);
  int64_t shards = std::min<int64_t>(rows, 4 * pool->NumThreads());
  if (max_shards > 0) shards = std::min(shards, max_shards);
  shards = std::max<int64_t>(1, shards);
  std::vector<float> partial(shards * width, 0.0f);
  const int64_t per_shard = (rows + shards - 1) / shards;
  pool->ParallelFor(shards, /*cost_per_unit=*/per_shard * width * 20,
                    [&](int64_t first, int64_t last) {
                      for (int64_t s = first; s < last; ++s) {
                        const int64_t begin = s * per_shard;
                        const int64_t end = std::min(rows, begin + per_shard);
                        if (begin < end) fn(begin, end, partial.data() + s * width);
                      }
                    });
  std::vector<float> total(width, 0.0f);
  for (int64_t s = 0; s < shards; ++s) {
    for (int64_t c = 0; c < width; ++c) total[c] += partial[s * width + c];
  }
  return total;
}

Status CheckLastAxis(const Tensor& x, const Tensor& vector, const char* name) {
  if (x.dims() < 1) return errors::InvalidArgument("x must have rank >= 1");
  if (vector.dims() != 1 || vector.dim_size(0) != x.dim_size(x.dims() - 1)) {
    return errors::InvalidArgument(name, " must be a vector of x's last axis (",
                                   x.dim_size(x.dims() - 1), "), got shape ",
                                   vector.shape().DebugString());
  }
  return Status();
}

Status CheckSameShape(const Tensor& a, const Tensor& b, const char* names) {
  if (a.shape() != b.shape()) {
    return errors::InvalidArgument(names, " must have one shape, got ", a.shape().DebugString(),
                                   " and ", b.shape().DebugString());
  }
  return Status();
}

TensorShape RowsShape(const Tensor& x) {
  TensorShape shape = x.shape();
  shape.RemoveLastDims(1);
  return shape;
}

// ---------------------------------------------------------------------------------------
// Kernels.

template <typename T>
class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& gamma = context->input(1);
    const Tensor& beta = context->input(2);
    OP_REQUIRES_OK(context, CheckLastAxis(x, gamma, "gamma"));
    OP_REQUIRES_OK(context, CheckLastAxis(x, beta, "beta"));
    Tensor *y, *mean, *inv_std;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(context, context->allocate_output(1, RowsShape(x), &mean));
    OP_REQUIRES_OK(context, context->allocate_output(2, RowsShape(x), &inv_std));
    const int64_t channels = x.dim_size(x.dims() - 1);
    if (x.NumElements() == 0 || channels == 0) return;
    const int64_t rows = x.NumElements() / channels;
    const auto* xs = Data<T>(x);
    auto* ys = Data<T>(y);
    const float* g = gamma.flat<float>().data();
    const float* b = beta.flat<float>().data();
    float* m = mean->flat<float>().data();
    float* s = inv_std->flat<float>().data();
    ForRows(context, rows, channels, [&](int64_t begin, int64_t end) {
      LayerNormRows(xs, g, b, epsilon_, channels, begin, end, ys, m, s);
    });
  }

 private:
  float epsilon_;
};

template <typename T>
class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& dy = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& gamma = context->input(2);
    const Tensor& mean = context->input(3);
    const Tensor& inv_std = context->input(4);
    OP_REQUIRES_OK(context, CheckSameShape(dy, x, "dy and x"));
    OP_REQUIRES_OK(context, CheckLastAxis(x, gamma, "gamma"));
    OP_REQUIRES(context, mean.shape() == RowsShape(x) && inv_std.shape() == RowsShape(x),
                errors::InvalidArgument("mean and inv_std must have x's shape without its "
                                        "last axis"));
    const int64_t channels = x.dim_size(x.dims() - 1);
    Tensor *dx, *dgamma, *dbeta;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(context, context->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(context, context->allocate_output(2, gamma.shape(), &dbeta));
    float* dg = dgamma->flat<float>().data();
    float* db = dbeta->flat<float>().data();
    std::fill(dg, dg + channels, 0.0f);
    std::fill(db, db + channels, 0.0f);
    if (x.NumElements() == 0 || channels == 0) return;
    const int64_t rows = x.NumElements() / channels;
    const auto* dys = Data<T>(dy);
    const auto* xs = Data<T>(x);
    auto* dxs = Data<T>(dx);
    const float* g = gamma.flat<float>().data();
    const float* m = mean.flat<float>().data();
    const float* s = inv_std.flat<float>().data();
    const std::vector<float> sums =
        ReduceRows(context, rows, 2 * channels, [&](int64_t begin, int64_t end, float* part) {
          LayerNormGradRows(dys, xs, g, m, s, channels, begin, end, dxs, part,
                            part + channels);
        });
    std::copy(sums.begin(), sums.begin() + channels, dg);
    std::copy(sums.begin() + channels, sums.end(), db);
  }
};

template <typename T>
class BiasGeluOp : public OpKernel {
 public:
  explicit BiasGeluOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& bias = context->input(1);
    OP_REQUIRES_OK(context, CheckLastAxis(x, bias, "bias"));
    Tensor* y;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    const int64_t channels = x.dim_size(x.dims() - 1);
    if (x.NumElements() == 0 || channels == 0) return;
    const int64_t rows = x.NumElements() / channels;
    const auto* xs = Data<T>(x);
    auto* ys = Data<T>(y);
    const float* b = bias.flat<float>().data();
    ForRows(context, rows, channels, [&](int64_t begin, int64_t end) {
      BiasGeluRows(xs, b, channels, begin, end, ys);
    });
  }
};

template <typename T>
class BiasGeluGradOp : public OpKernel {
 public:
  explicit BiasGeluGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& dy = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& bias = context->input(2);
    OP_REQUIRES_OK(context, CheckSameShape(dy, x, "dy and x"));
    OP_REQUIRES_OK(context, CheckLastAxis(x, bias, "bias"));
    const int64_t channels = x.dim_size(x.dims() - 1);
    Tensor *dx, *dbias;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(context, context->allocate_output(1, bias.shape(), &dbias));
    float* db = dbias->flat<float>().data();
    std::fill(db, db + channels, 0.0f);
    if (x.NumElements() == 0 || channels == 0) return;
    const int64_t rows = x.NumElements() / channels;
    const auto* dys = Data<T>(dy);
    const auto* xs = Data<T>(x);
    auto* dxs = Data<T>(dx);
    const float* b = bias.flat<float>().data();
    const std::vector<float> sums =
        ReduceRows(context, rows, channels, [&](int64_t begin, int64_t end, float* part) {
          BiasGeluGradRows(dys, xs, b, channels, begin, end, dxs, part);
        });
    std::copy(sums.begin(), sums.end(), db);
  }
};

template <typename T>
class SplitHeadsOp : public OpKernel {
 public:
  explicit SplitHeadsOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("num_heads", &heads_));
    OP_REQUIRES_OK(context, context->GetAttr("parts", &parts_));
    OP_REQUIRES(context, heads_ > 0, errors::InvalidArgument("num_heads must be positive"));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& bias = context->input(1);
    OP_REQUIRES(context, x.dims() == 3 && x.dim_size(2) % (parts_ * heads_) == 0,
                errors::InvalidArgument("x must be [windows, N, ", parts_,
                                        " heads head_dim], got ", x.shape().DebugString()));
    OP_REQUIRES_OK(context, CheckLastAxis(x, bias, "bias"));
    const int64_t m = x.dim_size(0), n = x.dim_size(1);
    const int64_t head_dim = x.dim_size(2) / (parts_ * heads_);
    ::tensorflow::OpOutputList heads;
    OP_REQUIRES_OK(context, context->output_list("heads", &heads));
    std::vector<typename StorageOf<T>::type*> outs(parts_);
    for (int64_t part = 0; part < parts_; ++part) {
      Tensor* out;
      OP_REQUIRES_OK(context, heads.allocate(part, TensorShape({m, heads_, n, head_dim}), &out));
      outs[part] = Data<T>(out);
    }
    if (x.NumElements() == 0) return;
    const auto* xs = Data<T>(x);
    const float* b = bias.flat<float>().data();
    ForRows(context, m * n, x.dim_size(2), [&](int64_t begin, int64_t end) {
      SplitHeadsRows(xs, b, n, heads_, head_dim, begin, end, outs.data(), parts_);
    });
  }

 private:
  int64_t heads_;
  int64_t parts_;
};

template <typename T>
class SplitHeadsGradOp : public OpKernel {
 public:
  explicit SplitHeadsGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    ::tensorflow::OpInputList dheads;
    OP_REQUIRES_OK(context, context->input_list("dheads", &dheads));
    const Tensor& first = dheads[0];
    OP_REQUIRES(context, first.dims() == 4,
                errors::InvalidArgument("dheads must be [windows, heads, N, head_dim], got ",
                                        first.shape().DebugString()));
    const int64_t parts = dheads.size();
    std::vector<const typename StorageOf<T>::type*> ins(parts);
    for (int64_t part = 0; part < parts; ++part) {
      OP_REQUIRES_OK(context, CheckSameShape(first, dheads[part], "dheads"));
      ins[part] = Data<T>(dheads[part]);
    }
    const int64_t m = first.dim_size(0), heads = first.dim_size(1), n = first.dim_size(2);
    const int64_t head_dim = first.dim_size(3), width = parts * heads * head_dim;
    Tensor *dx, *dbias;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({m, n, width}), &dx));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({width}), &dbias));
    float* db = dbias->flat<float>().data();
    std::fill(db, db + width, 0.0f);
    if (first.NumElements() == 0) return;
    auto* dxs = Data<T>(dx);
    const std::vector<float> sums =
        ReduceRows(context, m * n, width, [&](int64_t begin, int64_t end, float* part) {
          SplitHeadsGradRows(ins.data(), parts, n, heads, head_dim, begin, end, dxs, part);
        });
    std::copy(sums.begin(), sums.end(), db);
  }
};

// Shapes: logits [B', H, N, N], bias [H, N, N], mask [W, N, N] with W dividing B'.
Status CheckWindowSoftmax(const Tensor& logits, const Tensor& bias, const Tensor& mask) {
  if (logits.dims() != 4 || logits.dim_size(2) != logits.dim_size(3)) {
    return errors::InvalidArgument("logits must be [windows, heads, N, N], got ",
                                   logits.shape().DebugString());
  }
  const int64_t heads = logits.dim_size(1), n = logits.dim_size(2);
  if (bias.dims() != 3 || bias.dim_size(0) != heads || bias.dim_size(1) != n ||
      bias.dim_size(2) != n) {
    return errors::InvalidArgument("bias must be [heads, N, N] = [", heads, ", ", n, ", ", n,
                                   "], got ", bias.shape().DebugString());
  }
  if (mask.dims() != 3 || mask.dim_size(0) < 1 || mask.dim_size(1) != n ||
      mask.dim_size(2) != n || logits.dim_size(0) % mask.dim_size(0) != 0) {
    return errors::InvalidArgument("mask must be [W, N, N] with W dividing the windows (",
                                   logits.dim_size(0), "), got ", mask.shape().DebugString());
  }
  return Status();
}

template <typename T>
class WindowSoftmaxOp : public OpKernel {
 public:
  explicit WindowSoftmaxOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& logits = context->input(0);
    const Tensor& bias = context->input(1);
    const Tensor& mask = context->input(2);
    OP_REQUIRES_OK(context, CheckWindowSoftmax(logits, bias, mask));
    Tensor* probs;
    OP_REQUIRES_OK(context, context->allocate_output(0, logits.shape(), &probs));
    const int64_t heads = logits.dim_size(1), n = logits.dim_size(2);
    if (logits.NumElements() == 0) return;
    const int64_t rows = logits.NumElements() / n;
    const auto* ls = Data<T>(logits);
    const auto* bs = Data<T>(bias);
    const auto* ms = Data<T>(mask);
    auto* ps = Data<T>(probs);
    const int64_t windows = mask.dim_size(0);
    ForRows(context, rows, n, [&](int64_t begin, int64_t end) {
      WindowSoftmaxRows(ls, bs, ms, heads, n, windows, begin, end, ps);
    });
  }
};

template <typename T>
class WindowSoftmaxGradOp : public OpKernel {
 public:
  explicit WindowSoftmaxGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& dprobs = context->input(0);
    const Tensor& probs = context->input(1);
    OP_REQUIRES_OK(context, CheckSameShape(dprobs, probs, "dprobs and probs"));
    OP_REQUIRES(context, probs.dims() == 4 && probs.dim_size(2) == probs.dim_size(3),
                errors::InvalidArgument("probs must be [windows, heads, N, N], got ",
                                        probs.shape().DebugString()));
    const int64_t heads = probs.dim_size(1), n = probs.dim_size(2);
    Tensor *dlogits, *dbias;
    OP_REQUIRES_OK(context, context->allocate_output(0, probs.shape(), &dlogits));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({heads, n, n}), &dbias));
    const int64_t width = heads * n * n;
    auto* db = Data<T>(dbias);
    if (probs.NumElements() == 0) {
      for (int64_t k = 0; k < width; ++k) Store(db, k, 0.0f);
      return;
    }
    const int64_t rows = probs.NumElements() / n;
    const auto* gs = Data<T>(dprobs);
    const auto* ps = Data<T>(probs);
    auto* ds = Data<T>(dlogits);
    // The position bias's gradient is wide (H N^2 floats): on many threads, fewer shards
    // keep its per-shard copies within 8 MB.
    const int64_t max_shards = std::max<int64_t>(1, (int64_t{1} << 21) / width);
    const std::vector<float> sums = ReduceRows(
        context, rows, width,
        [&](int64_t begin, int64_t end, float* part) {
          WindowSoftmaxGradRows(gs, ps, heads, n, begin, end, ds, part);
        },
        max_shards);
    for (int64_t k = 0; k < width; ++k) Store(db, k, sums[k]);
  }
};

// Cycles per element for the thread pool's sharding: ~150 double operations (two erfcx,
// two exp, one log), vectorised.
constexpr int64_t kNoisyNormalCost = 50;

class NoisyNormalLogProbOp : public OpKernel {
 public:
  explicit NoisyNormalLogProbOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& u = context->input(0);
    const Tensor& scale = context->input(1);
    OP_REQUIRES_OK(context, CheckSameShape(u, scale, "u and scale"));
    Tensor* log_prob;
    OP_REQUIRES_OK(context, context->allocate_output(0, u.shape(), &log_prob));
    const float* us = u.flat<float>().data();
    const float* ss = scale.flat<float>().data();
    float* out = log_prob->flat<float>().data();
    Pool(context)->ParallelFor(u.NumElements(), kNoisyNormalCost,
                               [&](int64_t begin, int64_t end) {
                                 NoisyNormalLogProbRange(us, ss, begin, end, out);
                               });
  }
};

class NoisyNormalLogProbGradOp : public OpKernel {
 public:
  explicit NoisyNormalLogProbGradOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& dlog_prob = context->input(0);
    const Tensor& u = context->input(1);
    const Tensor& scale = context->input(2);
    OP_REQUIRES_OK(context, CheckSameShape(u, scale, "u and scale"));
    OP_REQUIRES_OK(context, CheckSameShape(dlog_prob, u, "dlog_prob and u"));
    Tensor *du, *dscale;
    OP_REQUIRES_OK(context, context->allocate_output(0, u.shape(), &du));
    OP_REQUIRES_OK(context, context->allocate_output(1, u.shape(), &dscale));
    const float* ds = dlog_prob.flat<float>().data();
    const float* us = u.flat<float>().data();
    const float* ss = scale.flat<float>().data();
    float* du_out = du->flat<float>().data();
    float* dscale_out = dscale->flat<float>().data();
    Pool(context)->ParallelFor(u.NumElements(), kNoisyNormalCost,
                               [&](int64_t begin, int64_t end) {
                                 NoisyNormalLogProbGradRange(ds, us, ss, begin, end, du_out,
                                                             dscale_out);
                               });
  }
};

// ---------------------------------------------------------------------------------------
// Op registrations.

Status RowsOfFirstInput(InferenceContext* c, int output) {
  ShapeHandle x = c->input(0), rows;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(x, 1, &x));
  TF_RETURN_IF_ERROR(c->Subshape(x, 0, -1, &rows));
  c->set_output(output, rows);
  return Status();
}

REGISTER_OP("TflicLayerNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Output("mean: float")
    .Output("inv_std: float")
    .Attr("T: {float, bfloat16}")
    .Attr("epsilon: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      TF_RETURN_IF_ERROR(RowsOfFirstInput(c, 1));
      return RowsOfFirstInput(c, 2);
    });

REGISTER_OP("TflicLayerNormGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("inv_std: float")
    .Output("dx: T")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return Status();
    });

REGISTER_OP("TflicBiasGelu")
    .Input("x: T")
    .Input("bias: float")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return Status();
    });

REGISTER_OP("TflicBiasGeluGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("bias: float")
    .Output("dx: T")
    .Output("dbias: float")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return Status();
    });

REGISTER_OP("TflicSplitHeads")
    .Input("x: T")
    .Input("bias: float")
    .Output("heads: parts * T")
    .Attr("T: {float, bfloat16}")
    .Attr("num_heads: int >= 1")
    .Attr("parts: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      int64_t heads, parts;
      TF_RETURN_IF_ERROR(c->GetAttr("num_heads", &heads));
      TF_RETURN_IF_ERROR(c->GetAttr("parts", &parts));
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      ::tensorflow::shape_inference::DimensionHandle head_dim;
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(x, 2), parts * heads, /*evenly_divisible=*/true,
                                   &head_dim));
      ShapeHandle out = c->MakeShape({c->Dim(x, 0), c->MakeDim(heads), c->Dim(x, 1), head_dim});
      for (int64_t i = 0; i < parts; ++i) c->set_output(i, out);
      return Status();
    });

REGISTER_OP("TflicSplitHeadsGrad")
    .Input("dheads: parts * T")
    .Output("dx: T")
    .Output("dbias: float")
    .Attr("T: {float, bfloat16}")
    .Attr("parts: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      int64_t parts;
      TF_RETURN_IF_ERROR(c->GetAttr("parts", &parts));
      ShapeHandle dq;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &dq));
      ::tensorflow::shape_inference::DimensionHandle width;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(dq, 1), c->Dim(dq, 3), &width));
      TF_RETURN_IF_ERROR(c->Multiply(width, parts, &width));
      c->set_output(0, c->MakeShape({c->Dim(dq, 0), c->Dim(dq, 2), width}));
      c->set_output(1, c->Vector(width));
      return Status();
    });

REGISTER_OP("TflicWindowSoftmax")
    .Input("logits: T")
    .Input("bias: T")
    .Input("mask: T")
    .Output("probs: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return Status();
    });

REGISTER_OP("TflicWindowSoftmaxGrad")
    .Input("dprobs: T")
    .Input("probs: T")
    .Output("dlogits: T")
    .Output("dbias: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle probs, bias;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &probs));
      TF_RETURN_IF_ERROR(c->Subshape(probs, 1, &bias));
      c->set_output(0, probs);
      c->set_output(1, bias);
      return Status();
    });

REGISTER_OP("TflicNoisyNormalLogProb")
    .Input("u: float")
    .Input("scale: float")
    .Output("log_prob: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle shape;
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &shape));
      c->set_output(0, shape);
      return Status();
    });

REGISTER_OP("TflicNoisyNormalLogProbGrad")
    .Input("dlog_prob: float")
    .Input("u: float")
    .Input("scale: float")
    .Output("du: float")
    .Output("dscale: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle shape;
      TF_RETURN_IF_ERROR(c->Merge(c->input(1), c->input(2), &shape));
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), shape, &shape));
      c->set_output(0, shape);
      c->set_output(1, shape);
      return Status();
    });

REGISTER_KERNEL_BUILDER(Name("TflicNoisyNormalLogProb").Device(DEVICE_CPU),
                        NoisyNormalLogProbOp);
REGISTER_KERNEL_BUILDER(Name("TflicNoisyNormalLogProbGrad").Device(DEVICE_CPU),
                        NoisyNormalLogProbGradOp);

#define TFLIC_REGISTER(T)                                                                \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicLayerNorm").Device(DEVICE_CPU).TypeConstraint<T>("T"), LayerNormOp<T>); \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicLayerNormGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),              \
      LayerNormGradOp<T>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicBiasGelu").Device(DEVICE_CPU).TypeConstraint<T>("T"), BiasGeluOp<T>);   \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicBiasGeluGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),               \
      BiasGeluGradOp<T>);                                                                \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicWindowSoftmax").Device(DEVICE_CPU).TypeConstraint<T>("T"),              \
      WindowSoftmaxOp<T>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicWindowSoftmaxGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),          \
      WindowSoftmaxGradOp<T>);                                                           \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicSplitHeads").Device(DEVICE_CPU).TypeConstraint<T>("T"), SplitHeadsOp<T>); \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("TflicSplitHeadsGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),             \
      SplitHeadsGradOp<T>);

TFLIC_REGISTER(float)
TFLIC_REGISTER(Eigen::bfloat16)

#undef TFLIC_REGISTER

}  // namespace
}  // namespace tflic
