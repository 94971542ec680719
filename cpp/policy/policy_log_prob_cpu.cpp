// CPU kernels of the softmax policy log-prob ops (see policy_log_prob.h).
//
// Work is cut into units = (task n, chunk of steps); OpenMP spreads the units over threads. A unit
// owns its bins (scatter-adds go there, in step order) and the bins are summed in chunk order
// afterwards, so the reductions never depend on the thread count. Per-row softmax quantities of
// theta are recomputed where needed (A exps per row) instead of being stored as tables.
//
// Tabular kernels are one pass over the indices (memory bound: ~0.2 ms for 204800 int64 steps on
// one core). Linear-softmax kernels are compute bound (F*A multiply-adds and A exps per step): they
// run with SIMD lanes along the steps, with their own vector exp/log, compiled for AVX-512, AVX2
// and SSE2 and picked at run time (so their last bits may differ between machines of different
// ISA, never between thread counts). One core, F = 16, A = 5, float64: about 18 ns per step
// forward, 27 backward (grad W), 37 double backward.
#include "policy/policy_log_prob.h"

#include "common/cpu_features.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace metakern {
namespace {

constexpr int64_t kSerialBelow = 1 << 15;  // work below which a thread team costs more than it saves
constexpr int64_t kMinChunkWork = 1 << 14;  // least work per chunk (its bins are zeroed and reduced once)
constexpr int64_t kMaxChunks = 64;          // most chunks per task
constexpr int64_t kNoBad = std::numeric_limits<int64_t>::max();

int team(int requested, int64_t work, int64_t units) {
  int nt = requested > 0 ? requested : omp_get_max_threads();
  if (work < kSerialBelow) nt = 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, units)));
}

// Chunks of a task's M steps. The length depends only on the sizes (never on the thread count), so
// the order of every floating-point sum is fixed: at least max(kMinChunkWork, bins) work per chunk
// (the bins' zeroing and reduction stay below the scatter work) and at most kMaxChunks chunks.
struct Chunks {
  int64_t len, count;
  int64_t begin(int64_t c) const { return c * len; }
  int64_t end(int64_t c, int64_t M) const { return std::min(M, (c + 1) * len); }
};

Chunks chunking(int64_t M, int64_t bins, int64_t work_per_step) {
  const int64_t least = std::max(kMinChunkWork, bins);
  int64_t len = std::max<int64_t>(1, (least + work_per_step - 1) / work_per_step);
  len = std::max(len, (M + kMaxChunks - 1) / kMaxChunks);
  len = std::min(len, M);
  return {len, (M + len - 1) / len};
}

// Softmax statistics of one row of A logits (nothing is written): pi(x_a) = exp(x_a - mx) / sum, and lse.
template <typename S> struct RowSoftmax {
  S mx, inv_sum, lse;
  RowSoftmax(const S* x, int64_t A) {
    mx = x[0];
    for (int64_t a = 1; a < A; ++a) mx = std::max(mx, x[a]);
    S sum = 0;
    for (int64_t a = 0; a < A; ++a) sum += std::exp(x[a] - mx);
    inv_sum = S(1) / sum;
    lse = mx + std::log(sum);
  }
  S pi(S x) const { return std::exp(x - mx) * inv_sum; }
};

// out[n, k] = sum over chunks c (in order) of bins[(n * count + c) * K + k], for n < N, k < K.
template <typename S> void reduce_bins(const S* bins, S* out, int64_t N, int64_t count, int64_t K, int nt) {
  const int64_t total = N * K;
#pragma omp parallel for num_threads(team(nt, total * count, total)) schedule(static)
  for (int64_t i = 0; i < total; ++i) {
    const int64_t n = i / K, k = i - n * K;
    const S* b = bins + n * count * K + k;
    S acc = 0;
    for (int64_t c = 0; c < count; ++c) acc += b[c * K];
    out[i] = acc;
  }
}

// ---- tabular --------------------------------------------------------------------------------------

template <typename S, typename I>
int64_t tabular_forward(const S* theta, const I* st, const I* ac, S* out, int64_t N, int64_t M, int64_t Sn,
                        int64_t A, int nt) {
  const int64_t rows = N * Sn;
  std::vector<S> logpi(static_cast<size_t>(rows * A));
#pragma omp parallel for num_threads(team(nt, rows * A * 8, rows)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const RowSoftmax<S> sm(theta + r * A, A);
    for (int64_t a = 0; a < A; ++a) logpi[r * A + a] = theta[r * A + a] - sm.lse;
  }
  const Chunks ch = chunking(M, 0, 1);
  const int64_t units = N * ch.count;
  int64_t bad = kNoBad;
#pragma omp parallel for num_threads(team(nt, N * M, units)) schedule(static) reduction(min : bad)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t n = unit / ch.count, c = unit - n * ch.count;
    const S* lp = logpi.data() + n * Sn * A;
    for (int64_t m = ch.begin(c), m1 = ch.end(c, M); m < m1; ++m) {
      const int64_t i = n * M + m;
      const int64_t s = st[i], a = ac[i];
      if (s < 0 || s >= Sn || a < 0 || a >= A) {
        bad = std::min(bad, i);
        out[i] = std::numeric_limits<S>::quiet_NaN();
        continue;
      }
      out[i] = lp[s * A + a];
    }
  }
  return bad == kNoBad ? -1 : bad;
}

template <typename S, typename I>
int64_t tabular_backward(const S* gl, const S* theta, const I* st, const I* ac, S* grad, int64_t N, int64_t M,
                         int64_t Sn, int64_t A, int nt) {
  const int64_t SA = Sn * A;
  const Chunks ch = chunking(M, SA, 1);
  const int64_t units = N * ch.count;
  std::vector<S> bins(static_cast<size_t>(units * SA));
  int64_t bad = kNoBad;
  const int team_n = team(nt, N * M + units * SA, units);
#pragma omp parallel for num_threads(team_n) schedule(static) reduction(min : bad)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t n = unit / ch.count, c = unit - n * ch.count;
    S* b = bins.data() + unit * SA;
    std::fill(b, b + SA, S(0));
    for (int64_t m = ch.begin(c), m1 = ch.end(c, M); m < m1; ++m) {
      const int64_t i = n * M + m;
      const int64_t s = st[i], a = ac[i];
      if (s < 0 || s >= Sn || a < 0 || a >= A) {
        bad = std::min(bad, i);
        continue;
      }
      b[s * A + a] += gl[i];
    }
  }
  reduce_bins(bins.data(), grad, N, ch.count, SA, nt);  // grad = per-(s, a) sums of gl
  const int64_t rows = N * Sn;
#pragma omp parallel for num_threads(team(nt, rows * A * 8, rows)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {  // grad[s, a] -= pi[s, a] * (sum of gl over the visits of s)
    S* g = grad + r * A;
    S visits = 0;
    for (int64_t a = 0; a < A; ++a) visits += g[a];
    if (visits == S(0)) continue;
    const RowSoftmax<S> sm(theta + r * A, A);
    for (int64_t a = 0; a < A; ++a) g[a] -= sm.pi(theta[r * A + a]) * visits;
  }
  return bad == kNoBad ? -1 : bad;
}

template <typename S, typename I>
int64_t tabular_double_backward(const S* gl, const S* theta, const I* st, const I* ac, const S* v, S* u,
                                S* dtheta, int64_t N, int64_t M, int64_t Sn, int64_t A, int nt) {
  const int64_t rows = N * Sn;
  std::vector<S> pv(static_cast<size_t>(rows));  // <pi_s, v_s>
#pragma omp parallel for num_threads(team(nt, rows * A * 8, rows)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const RowSoftmax<S> sm(theta + r * A, A);
    S acc = 0;
    for (int64_t a = 0; a < A; ++a) acc += sm.pi(theta[r * A + a]) * v[r * A + a];
    pv[r] = acc;
  }
  const Chunks ch = chunking(M, dtheta ? Sn : 0, 1);
  const int64_t units = N * ch.count;
  std::vector<S> bins(dtheta ? static_cast<size_t>(units * Sn) : 0);  // per-state sums of gl
  int64_t bad = kNoBad;
#pragma omp parallel for num_threads(team(nt, N * M, units)) schedule(static) reduction(min : bad)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t n = unit / ch.count, c = unit - n * ch.count;
    S* b = dtheta ? bins.data() + unit * Sn : nullptr;
    if (b) std::fill(b, b + Sn, S(0));
    const S* vn = v + n * Sn * A;
    const S* pvn = pv.data() + n * Sn;
    for (int64_t m = ch.begin(c), m1 = ch.end(c, M); m < m1; ++m) {
      const int64_t i = n * M + m;
      const int64_t s = st[i], a = ac[i];
      if (s < 0 || s >= Sn || a < 0 || a >= A) {
        bad = std::min(bad, i);
        if (u) u[i] = std::numeric_limits<S>::quiet_NaN();
        continue;
      }
      if (u) u[i] = vn[s * A + a] - pvn[s];
      if (b) b[s] += gl[i];
    }
  }
  if (dtheta) {
    std::vector<S> visits(static_cast<size_t>(rows));
    reduce_bins(bins.data(), visits.data(), N, ch.count, Sn, nt);
#pragma omp parallel for num_threads(team(nt, rows * A * 8, rows)) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {  // -visits_s (diag pi_s - pi_s pi_s^T) v_s
      S* d = dtheta + r * A;
      if (visits[r] == S(0)) {
        std::fill(d, d + A, S(0));
        continue;
      }
      const RowSoftmax<S> sm(theta + r * A, A);
      for (int64_t a = 0; a < A; ++a) d[a] = -visits[r] * sm.pi(theta[r * A + a]) * (v[r * A + a] - pv[r]);
    }
  }
  return bad == kNoBad ? -1 : bad;
}

// ---- linear-softmax -------------------------------------------------------------------------------
//
// Steps are processed kJ at a time with SIMD lanes along the steps: a block's features are
// transposed into xT[f][j], so that logits, softmax and every product with W are loops over j of
// fixed length kJ (vectorised), and exp / log run on whole vectors (vexp / vlog below) instead of
// one libm call per element. Sums into W's [F, A] bins go to per-lane bins [F, A, kJ], reduced
// over the lanes (in order) at the end of the chunk: no horizontal sums, and deterministic.
// Per-step work that is O(F + A) (index loads, one-hot, transposes) stays scalar.

constexpr int kJ = 16;  // steps per block; a multiple of every vector width used

// The vector helpers below return vector types wider than the default ISA's; they are always
// inlined into functions compiled for that ISA, so the ABI note GCC gives about them is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

template <typename S, int W> struct Vec {
  typedef S type __attribute__((vector_size(sizeof(S) * W)));
};
template <typename S> struct IntOf;
template <> struct IntOf<double> { using type = int64_t; };
template <> struct IntOf<float> { using type = int32_t; };

template <typename S, int W> using VecS = typename Vec<S, W>::type;
template <typename S, int W> using VecI = typename Vec<typename IntOf<S>::type, W>::type;

template <typename S, int W> inline __attribute__((always_inline)) VecS<S, W> vload(const S* p) {
  VecS<S, W> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename S, int W> inline __attribute__((always_inline)) void vstore(S* p, VecS<S, W> v) {
  std::memcpy(p, &v, sizeof v);
}

// exp by range reduction: x = k ln2 + r, |r| <= ln2/2, exp(r) by its Taylor polynomial (degree 13
// for double: truncation < 1e-17 relative; 7 for float), 2^k put into the exponent bits. Inputs
// below lo (exp < 3e-308 / 1.6e-38) are clamped there, which changes only values that are 0 to
// working precision next to the max term of a softmax (the only use here); NaN propagates.
template <typename S> struct ExpConst;
template <> struct ExpConst<double> {
  static constexpr double lo = -708.0, hi = 709.0, magic = 0x1.8p52, log2e = 1.4426950408889634;
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr int shift = 52;
  static constexpr int64_t bias = 1023, mantissa = 0x000fffffffffffffLL, one = 0x3ff0000000000000LL;
  static constexpr int degree = 13;
};
template <> struct ExpConst<float> {
  static constexpr float lo = -87.0f, hi = 88.0f, magic = 0x1.8p23f, log2e = 1.44269504f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr int shift = 23;
  static constexpr int32_t bias = 127, mantissa = 0x007fffff, one = 0x3f800000;
  static constexpr int degree = 7;
};

template <typename S, int W> inline __attribute__((always_inline)) VecS<S, W> vexp(VecS<S, W> x) {
  using C = ExpConst<S>;
  using V = VecS<S, W>;
  using VI = VecI<S, W>;
  const V lo = V{} + C::lo, hi = V{} + C::hi, magic = V{} + C::magic;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V t = x * C::log2e + magic;  // round(x / ln2) in the low mantissa bits
  const V k = t - magic;
  const VI ki = (VI)t - (VI)magic;  // vector casts reinterpret the bits
  const V r = (x - k * C::ln2_hi) - k * C::ln2_lo;
  // Taylor coefficients 1/i!, Horner from the highest degree
  S coef = 1;
  for (int i = 2; i <= C::degree; ++i) coef /= S(i);
  V p = V{} + coef;
  for (int i = C::degree; i >= 1; --i) {
    coef *= S(i);  // 1/(i-1)!
    p = p * r + coef;
  }
  const VI scale = (ki + C::bias) << C::shift;
  return p * (V)scale;
}

// log of positive normal numbers: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f),
// f = (m - 1) / (m + 1), |f| <= 0.172, by its odd series (to f^19 for double, f^11 for float).
template <typename S, int W> inline __attribute__((always_inline)) VecS<S, W> vlog(VecS<S, W> x) {
  using C = ExpConst<S>;
  using V = VecS<S, W>;
  using VI = VecI<S, W>;
  using I = typename IntOf<S>::type;
  const VI b = (VI)x;
  VI e = (b >> C::shift) - C::bias;
  const VI mb = (b & C::mantissa) | C::one;
  V m = (V)mb;  // [1, 2)
  const VI big = m > S(1.4142135623730951);  // -1 where true
  m = big ? m * S(0.5) : m;
  e -= big;
  const V f = (m - S(1)) / (m + S(1));
  const V f2 = f * f;
  const int terms = sizeof(S) == 8 ? 10 : 6;  // 1/1, 1/3, ..., 1/(2 terms - 1)
  V s = V{} + S(1) / S(2 * terms - 1);
  for (int i = terms - 2; i >= 0; --i) s = s * f2 + S(1) / S(2 * i + 1);
  const V ef = __builtin_convertvector(e, V);
  static_assert(sizeof(I) == sizeof(S), "integer lanes match the float lanes");
  return ef * S(C::ln2_hi) + (ef * S(C::ln2_lo) + S(2) * f * s);
}

template <typename S, int W> inline __attribute__((always_inline)) void exp_inplace(S* x, int n) {
  for (int i = 0; i < n; i += W) vstore<S, W>(x + i, vexp<S, W>(vload<S, W>(x + i)));
}

// Lane-wise small matrix products over a block (rows of kJ lanes), with kRB output rows at a time
// so that kRB * kJ / W independent accumulators hide the FMA latency:
//   rows_by_a:  out[a][:] (+)= sum_f Mx[f, a] in[f][:]   (a < A; in has F rows)
//   rows_by_f:  out[f][:] (+)= sum_a Mx[f, a] in[a][:]   (f < F; in has A rows)
// Both are out[r][:] (+)= sum_k Mx[k * ks + r * rs] in[k][:] for r < R, k < K.
constexpr int kRB = 4;

template <typename S, int W, int RB>
inline __attribute__((always_inline)) void rows_block(const S* __restrict Mx, int64_t ks, int64_t rs,
                                                      const S* __restrict in, int64_t K, S* __restrict out,
                                                      int64_t r0, bool add) {
  using V = VecS<S, W>;
  constexpr int NV = kJ / W;
  V acc[RB][NV];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = add ? vload<S, W>(out + (r0 + r) * kJ + v * W) : V{};
  }
  for (int64_t k = 0; k < K; ++k) {
    V x[NV];
    for (int v = 0; v < NV; ++v) x[v] = vload<S, W>(in + k * kJ + v * W);
    for (int r = 0; r < RB; ++r) {
      const V w = V{} + Mx[k * ks + (r0 + r) * rs];
      for (int v = 0; v < NV; ++v) acc[r][v] += w * x[v];
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < NV; ++v) vstore<S, W>(out + (r0 + r) * kJ + v * W, acc[r][v]);
  }
}

template <typename S, int W>
inline __attribute__((always_inline)) void rows_product(const S* __restrict Mx, int64_t ks, int64_t rs,
                                                        const S* __restrict in, int64_t K, S* __restrict out,
                                                        int64_t R, bool add) {
  int64_t r0 = 0;
  for (; r0 + kRB <= R; r0 += kRB) rows_block<S, W, kRB>(Mx, ks, rs, in, K, out, r0, add);
  for (; r0 < R; ++r0) rows_block<S, W, 1>(Mx, ks, rs, in, K, out, r0, add);
}

template <typename S, int W>
inline __attribute__((always_inline)) void rows_by_a(const S* __restrict Mx, const S* __restrict in,
                                                     S* __restrict out, int64_t F, int64_t A, bool add) {
  rows_product<S, W>(Mx, A, 1, in, F, out, A, add);
}

template <typename S, int W>
inline __attribute__((always_inline)) void rows_by_f(const S* __restrict Mx, const S* __restrict in,
                                                     S* __restrict out, int64_t F, int64_t A, bool add) {
  rows_product<S, W>(Mx, 1, A, in, A, out, F, add);
}

template <typename S> struct LinearArgs {
  const S* gl;       // [N, M] (backward modes)
  const S* W;        // [N, F, A]
  const S* X;        // [N, M, F]
  const void* ac;    // [N, M], int64 if idx64 else int32
  bool idx64;
  const S* VW;       // [N, F, A] cotangent (double backward; null = 0)
  const S* VX;       // [N, M, F] cotangent (double backward; null = 0)
  S* out;            // forward: l; double backward: u (null = skip)
  S* dX;             // [N, M, F] (null = skip)
  bool need_w;       // backward modes: accumulate the [F, A] bins
  int64_t M, F, A;
};

inline int64_t scratch_per_thread(int64_t F, int64_t A) { return (3 * F + 8 * A + F * A + 6) * kJ; }

enum LinearMode : int { kForward = 0, kBackward = 1, kDoubleBackward = 2 };

// Steps [m0, m1) of task n. bins (F*A, backward modes with need_w) receive the chunk's sums.
template <typename S, int W, int Mode>
inline __attribute__((always_inline)) int64_t linear_unit(const LinearArgs<S>& L, int64_t n, int64_t m0,
                                                          int64_t m1, S* __restrict bins, S* __restrict scr) {
  using V = VecS<S, W>;
  const int64_t F = L.F, A = L.A, FA = F * A;
  const S* __restrict Wn = L.W + n * FA;
  const S* __restrict VWn = (Mode == kDoubleBackward && L.VW) ? L.VW + n * FA : nullptr;
  const bool has_vx = Mode == kDoubleBackward && L.VX != nullptr;
  const bool need_w = Mode != kForward && L.need_w;
  S* __restrict xT = scr;
  S* __restrict vxT = xT + F * kJ;
  S* __restrict dxT = vxT + F * kJ;
  S* __restrict z = dxT + F * kJ;
  S* __restrict p = z + A * kJ;
  S* __restrict oh = p + A * kJ;
  S* __restrict y = oh + A * kJ;
  S* __restrict c = y + A * kJ;
  S* __restrict q = c + A * kJ;
  S* __restrict lane_bins = q + A * kJ;  // [F, A, kJ]
  S* __restrict g = lane_bins + FA * kJ;
  S* __restrict mx = g + kJ;
  S* __restrict sum = mx + kJ;
  S* __restrict ok = sum + kJ;
  S* __restrict tmp = ok + kJ;
  S* __restrict tmp2 = tmp + kJ;
  int64_t act[kJ];
  const S nan = std::numeric_limits<S>::quiet_NaN();
  if (need_w) std::fill(lane_bins, lane_bins + FA * kJ, S(0));
  int64_t bad = kNoBad;

  for (int64_t mb = m0; mb < m1; mb += kJ) {
    const int nb = static_cast<int>(std::min<int64_t>(kJ, m1 - mb));
    const int64_t i0 = n * L.M + mb;
    for (int j = 0; j < kJ; ++j) {
      int64_t a = 0;
      bool valid = false;
      if (j < nb) {
        a = L.idx64 ? static_cast<const int64_t*>(L.ac)[i0 + j] : static_cast<const int32_t*>(L.ac)[i0 + j];
        valid = a >= 0 && a < A;
        if (!valid) bad = std::min(bad, i0 + j);
      }
      act[j] = valid ? a : 0;
      ok[j] = valid ? S(1) : S(0);
      if (Mode != kForward) g[j] = valid ? L.gl[i0 + j] : S(0);
    }
    std::fill(oh, oh + A * kJ, S(0));
    for (int j = 0; j < kJ; ++j) oh[act[j] * kJ + j] = S(1);
    for (int j = 0; j < nb; ++j) {
      const S* xr = L.X + (i0 + j) * F;
      for (int64_t f = 0; f < F; ++f) xT[f * kJ + j] = xr[f];
      if (has_vx) {
        const S* vr = L.VX + (i0 + j) * F;
        for (int64_t f = 0; f < F; ++f) vxT[f * kJ + j] = vr[f];
      }
    }
    for (int j = nb; j < kJ; ++j) {
      for (int64_t f = 0; f < F; ++f) xT[f * kJ + j] = S(0);
      if (has_vx) {
        for (int64_t f = 0; f < F; ++f) vxT[f * kJ + j] = S(0);
      }
    }
    rows_by_a<S, W>(Wn, xT, z, F, A, false);  // logits z[a][j] = sum_f W[f, a] x[j, f]
    // softmax: p = exp(z - max), sum
    for (int j = 0; j < kJ; j += W) {
      V m = vload<S, W>(z + j);
      for (int64_t a = 1; a < A; ++a) {
        const V za = vload<S, W>(z + a * kJ + j);
        m = za > m ? za : m;
      }
      vstore<S, W>(mx + j, m);
    }
    for (int64_t a = 0; a < A; ++a) {
#pragma omp simd
      for (int j = 0; j < kJ; ++j) p[a * kJ + j] = z[a * kJ + j] - mx[j];
    }
    exp_inplace<S, W>(p, static_cast<int>(A) * kJ);
    std::fill(sum, sum + kJ, S(0));
    for (int64_t a = 0; a < A; ++a) {
#pragma omp simd
      for (int j = 0; j < kJ; ++j) sum[j] += p[a * kJ + j];
    }

    if constexpr (Mode == kForward) {
      std::fill(tmp, tmp + kJ, S(0));  // z at the action
      for (int64_t a = 0; a < A; ++a) {
#pragma omp simd
        for (int j = 0; j < kJ; ++j) tmp[j] += oh[a * kJ + j] * z[a * kJ + j];
      }
      for (int j = 0; j < kJ; j += W) vstore<S, W>(tmp2 + j, vlog<S, W>(vload<S, W>(sum + j)));
      for (int j = 0; j < nb; ++j) L.out[i0 + j] = ok[j] != S(0) ? tmp[j] - mx[j] - tmp2[j] : nan;
      continue;
    } else {
#pragma omp simd
      for (int j = 0; j < kJ; ++j) sum[j] = S(1) / sum[j];
      for (int64_t a = 0; a < A; ++a) {
#pragma omp simd
        for (int j = 0; j < kJ; ++j) {
          const S pj = p[a * kJ + j] * sum[j];
          p[a * kJ + j] = pj;
          c[a * kJ + j] = g[j] * (oh[a * kJ + j] - pj);  // gl (e_a - pi)
        }
      }
      const S* __restrict left = c;  // dX = W left + VW c;  bins += x left^T + vx c^T
      if constexpr (Mode == kDoubleBackward) {
        // y = change of the logits along (VW, VX); u = y[a] - <pi, y>; q = -gl pi (y - <pi, y>)
        if (VWn) {
          rows_by_a<S, W>(VWn, xT, y, F, A, false);
        } else {
          std::fill(y, y + A * kJ, S(0));
        }
        if (has_vx) rows_by_a<S, W>(Wn, vxT, y, F, A, true);
        std::fill(tmp, tmp + kJ, S(0));   // <pi, y>
        std::fill(tmp2, tmp2 + kJ, S(0));  // y at the action
        for (int64_t a = 0; a < A; ++a) {
#pragma omp simd
          for (int j = 0; j < kJ; ++j) {
            tmp[j] += p[a * kJ + j] * y[a * kJ + j];
            tmp2[j] += oh[a * kJ + j] * y[a * kJ + j];
          }
        }
        if (L.out) {
          for (int j = 0; j < nb; ++j) L.out[i0 + j] = ok[j] != S(0) ? tmp2[j] - tmp[j] : nan;
        }
        for (int64_t a = 0; a < A; ++a) {
#pragma omp simd
          for (int j = 0; j < kJ; ++j) q[a * kJ + j] = -g[j] * p[a * kJ + j] * (y[a * kJ + j] - tmp[j]);
        }
        left = q;
      }
      if (L.dX) {
        rows_by_f<S, W>(Wn, left, dxT, F, A, false);
        if (Mode == kDoubleBackward && VWn) rows_by_f<S, W>(VWn, c, dxT, F, A, true);
        for (int j = 0; j < nb; ++j) {
          S* out = L.dX + (i0 + j) * F;
          if (ok[j] != S(0)) {
            for (int64_t f = 0; f < F; ++f) out[f] = dxT[f * kJ + j];
          } else {
            for (int64_t f = 0; f < F; ++f) out[f] = nan;
          }
        }
      }
      if (need_w) {
        for (int64_t f = 0; f < F; ++f) {
          const S* __restrict xr = xT + f * kJ;
          const S* __restrict vr = vxT + f * kJ;
          for (int64_t a = 0; a < A; ++a) {
            S* __restrict br = lane_bins + (f * A + a) * kJ;
            const S* __restrict lr = left + a * kJ;
#pragma omp simd
            for (int j = 0; j < kJ; ++j) br[j] += xr[j] * lr[j];
            if (has_vx) {
              const S* __restrict cr = c + a * kJ;
#pragma omp simd
              for (int j = 0; j < kJ; ++j) br[j] += vr[j] * cr[j];
            }
          }
        }
      }
    }
  }
  if (need_w) {
    for (int64_t k = 0; k < FA; ++k) {
      S acc = 0;
      for (int j = 0; j < kJ; ++j) acc += lane_bins[k * kJ + j];
      bins[k] = acc;
    }
  }
  return bad;
}

template <typename S> using UnitFn = int64_t (*)(const LinearArgs<S>&, int64_t, int64_t, int64_t, S*, S*);

#define METAKERN_LINEAR_UNIT(NAME, ISA, S, W, MODE)                                                  \
  __attribute__((target(ISA))) int64_t NAME(const LinearArgs<S>& L, int64_t n, int64_t m0, int64_t m1, \
                                            S* bins, S* scr) {                                        \
    return linear_unit<S, W, MODE>(L, n, m0, m1, bins, scr);                                          \
  }
#define METAKERN_LINEAR_ISA(SUFFIX, ISA, WD, WF)                               \
  METAKERN_LINEAR_UNIT(fwd_f64_##SUFFIX, ISA, double, WD, kForward)            \
  METAKERN_LINEAR_UNIT(bwd_f64_##SUFFIX, ISA, double, WD, kBackward)           \
  METAKERN_LINEAR_UNIT(dbwd_f64_##SUFFIX, ISA, double, WD, kDoubleBackward)    \
  METAKERN_LINEAR_UNIT(fwd_f32_##SUFFIX, ISA, float, WF, kForward)             \
  METAKERN_LINEAR_UNIT(bwd_f32_##SUFFIX, ISA, float, WF, kBackward)            \
  METAKERN_LINEAR_UNIT(dbwd_f32_##SUFFIX, ISA, float, WF, kDoubleBackward)
METAKERN_LINEAR_ISA(avx512, "avx512f,avx512dq,fma", 8, 16)
METAKERN_LINEAR_ISA(avx2, "avx2,fma", 4, 8)
METAKERN_LINEAR_ISA(sse2, "sse2", 2, 4)
#undef METAKERN_LINEAR_ISA
#undef METAKERN_LINEAR_UNIT

template <typename S> struct LinearKernels {
  UnitFn<S> unit[3];
};

template <typename S> const LinearKernels<S>& linear_kernels();
template <> const LinearKernels<double>& linear_kernels<double>() {
  static const LinearKernels<double> k = [] {
    if (have_avx512()) {
      return LinearKernels<double>{{fwd_f64_avx512, bwd_f64_avx512, dbwd_f64_avx512}};
    }
    if (have_avx2()) {
      return LinearKernels<double>{{fwd_f64_avx2, bwd_f64_avx2, dbwd_f64_avx2}};
    }
    return LinearKernels<double>{{fwd_f64_sse2, bwd_f64_sse2, dbwd_f64_sse2}};
  }();
  return k;
}
template <> const LinearKernels<float>& linear_kernels<float>() {
  static const LinearKernels<float> k = [] {
    if (have_avx512()) {
      return LinearKernels<float>{{fwd_f32_avx512, bwd_f32_avx512, dbwd_f32_avx512}};
    }
    if (have_avx2()) {
      return LinearKernels<float>{{fwd_f32_avx2, bwd_f32_avx2, dbwd_f32_avx2}};
    }
    return LinearKernels<float>{{fwd_f32_sse2, bwd_f32_sse2, dbwd_f32_sse2}};
  }();
  return k;
}

// Runs one mode over all (task, chunk) units; reduces the bins into dW (if need_w).
template <typename S>
int64_t run_linear(int mode, const LinearArgs<S>& L, S* dW, int64_t N, int nt) {
  const int64_t FA = L.F * L.A;
  const bool need_w = mode != kForward && L.need_w;
  const Chunks ch = chunking(L.M, need_w ? FA : 0, FA);
  const int64_t units = N * ch.count;
  std::vector<S> bins(need_w ? static_cast<size_t>(units * FA) : 0);
  const UnitFn<S> fn = linear_kernels<S>().unit[mode];
  const int64_t scratch = scratch_per_thread(L.F, L.A);
  int64_t bad = kNoBad;
#pragma omp parallel num_threads(team(nt, N * L.M * FA * (1 + 2 * mode), units))
  {
    std::vector<S> scr(static_cast<size_t>(scratch));
#pragma omp for schedule(static) reduction(min : bad)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t n = unit / ch.count, c = unit - n * ch.count;
      S* b = need_w ? bins.data() + unit * FA : nullptr;
      bad = std::min(bad, fn(L, n, ch.begin(c), ch.end(c, L.M), b, scr.data()));
    }
  }
  if (need_w) reduce_bins(bins.data(), dW, N, ch.count, FA, nt);
  return bad == kNoBad ? -1 : bad;
}

// Calls fn(S{}, I{}) with the storage and index types of the codes.
template <typename Fn> int64_t dispatch(DType dtype, int index_code, Fn&& fn) {
  if (index_code != 0 && index_code != 1) {
    throw std::invalid_argument("metakern: index code must be 0 (int32) or 1 (int64)");
  }
  if (dtype == DType::Float32) {
    return index_code == 0 ? fn(float{}, int32_t{}) : fn(float{}, int64_t{});
  }
  if (dtype == DType::Float64) {
    return index_code == 0 ? fn(double{}, int32_t{}) : fn(double{}, int64_t{});
  }
  throw std::invalid_argument(std::string("metakern: policy log-prob kernels take float32 or float64, got ") +
                              dtype_name(dtype));
}

template <typename T> const T* cp(const void* p) { return static_cast<const T*>(p); }
template <typename T> T* mp(void* p) { return static_cast<T*>(p); }

}  // namespace

int64_t tabular_log_prob_cpu(DType dtype, int index_code, const void* theta, const void* states,
                             const void* actions, void* out, int64_t N, int64_t M, int64_t S, int64_t A,
                             int num_threads) {
  return dispatch(dtype, index_code, [&](auto s, auto i) {
    using St = decltype(s);
    using It = decltype(i);
    return tabular_forward<St, It>(cp<St>(theta), cp<It>(states), cp<It>(actions), mp<St>(out), N, M, S, A,
                                   num_threads);
  });
}

int64_t tabular_log_prob_backward_cpu(DType dtype, int index_code, const void* gl, const void* theta,
                                      const void* states, const void* actions, void* grad_theta, int64_t N,
                                      int64_t M, int64_t S, int64_t A, int num_threads) {
  return dispatch(dtype, index_code, [&](auto s, auto i) {
    using St = decltype(s);
    using It = decltype(i);
    return tabular_backward<St, It>(cp<St>(gl), cp<St>(theta), cp<It>(states), cp<It>(actions),
                                    mp<St>(grad_theta), N, M, S, A, num_threads);
  });
}

int64_t tabular_log_prob_double_backward_cpu(DType dtype, int index_code, const void* gl, const void* theta,
                                             const void* states, const void* actions, const void* v, void* u,
                                             void* d_theta, int64_t N, int64_t M, int64_t S, int64_t A,
                                             int num_threads) {
  return dispatch(dtype, index_code, [&](auto s, auto i) {
    using St = decltype(s);
    using It = decltype(i);
    return tabular_double_backward<St, It>(cp<St>(gl), cp<St>(theta), cp<It>(states), cp<It>(actions),
                                           cp<St>(v), mp<St>(u), mp<St>(d_theta), N, M, S, A, num_threads);
  });
}

namespace {

// Calls fn(S{}) with the storage type of the code (the linear kernels read either index type).
template <typename Fn> int64_t dispatch_float(DType dtype, int index_code, Fn&& fn) {
  if (index_code != 0 && index_code != 1) {
    throw std::invalid_argument("metakern: index code must be 0 (int32) or 1 (int64)");
  }
  if (dtype == DType::Float32) return fn(float{});
  if (dtype == DType::Float64) return fn(double{});
  throw std::invalid_argument(std::string("metakern: policy log-prob kernels take float32 or float64, got ") +
                              dtype_name(dtype));
}

}  // namespace

int64_t linear_softmax_log_prob_cpu(DType dtype, int index_code, const void* weight, const void* features,
                                    const void* actions, void* out, int64_t N, int64_t M, int64_t F, int64_t A,
                                    int num_threads) {
  return dispatch_float(dtype, index_code, [&](auto s) {
    using St = decltype(s);
    const LinearArgs<St> L{nullptr, cp<St>(weight), cp<St>(features), actions, index_code == 1,
                           nullptr, nullptr, mp<St>(out), nullptr, false, M, F, A};
    return run_linear<St>(kForward, L, nullptr, N, num_threads);
  });
}

int64_t linear_softmax_log_prob_backward_cpu(DType dtype, int index_code, const void* gl, const void* weight,
                                             const void* features, const void* actions, void* grad_weight,
                                             void* grad_features, int64_t N, int64_t M, int64_t F, int64_t A,
                                             int num_threads) {
  return dispatch_float(dtype, index_code, [&](auto s) {
    using St = decltype(s);
    const LinearArgs<St> L{cp<St>(gl), cp<St>(weight), cp<St>(features), actions, index_code == 1,
                           nullptr, nullptr, nullptr, mp<St>(grad_features), grad_weight != nullptr,
                           M, F, A};
    return run_linear<St>(kBackward, L, mp<St>(grad_weight), N, num_threads);
  });
}

int64_t linear_softmax_log_prob_double_backward_cpu(DType dtype, int index_code, const void* gl,
                                                    const void* weight, const void* features, const void* actions,
                                                    const void* v_weight, const void* v_features, void* u,
                                                    void* d_weight, void* d_features, int64_t N, int64_t M,
                                                    int64_t F, int64_t A, int num_threads) {
  return dispatch_float(dtype, index_code, [&](auto s) {
    using St = decltype(s);
    const LinearArgs<St> L{cp<St>(gl), cp<St>(weight), cp<St>(features), actions, index_code == 1,
                           cp<St>(v_weight), cp<St>(v_features), mp<St>(u), mp<St>(d_features),
                           d_weight != nullptr, M, F, A};
    return run_linear<St>(kDoubleBackward, L, mp<St>(d_weight), N, num_threads);
  });
}

}  // namespace metakern
