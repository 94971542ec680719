// CPU linear scan, vectorised along time.
//
// A row is a serial dependency chain, so instead of one multiply-add per step the kernel loads W
// consecutive steps into a SIMD register and scans the affine maps h -> a*h + x inside it
// (log2(W) shift-and-compose steps: (A1, X1) then (A2, X2) = (A1*A2, A2*X1 + X2)). The row's
// carry then enters with one multiply-add per vector: y = A_incl * h + X_incl, h = y[last lane].
// Only that multiply-add and a lane broadcast sit on the loop-carried chain, so a core retires W
// steps in a few cycles. Rows are split across OpenMP threads; tiny problems stay on the caller.
//
// ISA: AVX-512 (W = 16 floats / 8 doubles), AVX2 (8 / 4) or SSE2 (4 / 2), picked at run time.
// 16-bit storage (bf16, fp16) takes a scalar path that widens to fp32.
//
// Time-major arrays ([T, B]) need no in-register scan: each step is a contiguous row of B
// independent recurrences, so the kernel sweeps t and vectorises the multiply-add across columns.
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "scan/linear_scan.h"

#include "common/cpu_features.h"

namespace metakern {
namespace {

constexpr int64_t kSerialBelow = 1 << 15;  // elements: below this a thread team costs more than it saves
constexpr int64_t kColBlock = 1024;        // columns per block in the time-major kernels

template <typename S, int W> struct Vec {
  typedef S type __attribute__((vector_size(sizeof(S) * W)));
};

// Lane i of the result is v[i - K] (forward) or v[i + K] (reverse); lanes shifted in come from `fill`.
template <typename V, int W, int K, bool Rev, std::size_t... I>
inline __attribute__((always_inline)) V shift_in(V v, V fill, std::index_sequence<I...>) {
  if constexpr (!Rev) {
    return __builtin_shufflevector(fill, v, (I < K ? int(I) : int(W + I - K))...);
  } else {
    return __builtin_shufflevector(fill, v, (I + K < W ? int(W + I + K) : int(I))...);
  }
}

// Inclusive scan of the W affine maps held lane-wise in (A, X), in time order.
template <typename V, int W, bool Rev, int K = 1>
inline __attribute__((always_inline)) void scan_lanes(V& A, V& X, V one, V zero) {
  if constexpr (K < W) {
    const V As = shift_in<V, W, K, Rev>(A, one, std::make_index_sequence<W>{});
    const V Xs = shift_in<V, W, K, Rev>(X, zero, std::make_index_sequence<W>{});
    X = A * Xs + X;
    A = A * As;
    scan_lanes<V, W, Rev, K * 2>(A, X, one, zero);
  }
}

template <typename S, int W>
inline __attribute__((always_inline)) void scan_row_vec(const S* __restrict x, const S* __restrict a,
                                                        S* __restrict y, S h, int64_t T, bool reverse) {
  using V = typename Vec<S, W>::type;
  const V one = V{} + S(1);
  const V zero = V{};
  if (!reverse) {
    int64_t t = 0;
    for (; t + W <= T; t += W) {
      V A, X;
      std::memcpy(&A, a + t, sizeof A);
      std::memcpy(&X, x + t, sizeof X);
      scan_lanes<V, W, false>(A, X, one, zero);
      const V Y = A * h + X;
      std::memcpy(y + t, &Y, sizeof Y);
      h = Y[W - 1];
    }
    for (; t < T; ++t) y[t] = h = a[t] * h + x[t];
  } else {
    int64_t t = T;
    for (; t - W >= 0; t -= W) {
      V A, X;
      std::memcpy(&A, a + t - W, sizeof A);
      std::memcpy(&X, x + t - W, sizeof X);
      scan_lanes<V, W, true>(A, X, one, zero);
      const V Y = A * h + X;
      std::memcpy(y + t - W, &Y, sizeof Y);
      h = Y[0];
    }
    for (--t; t >= 0; --t) y[t] = h = a[t] * h + x[t];
  }
}

// Time-major: columns [b0, b1) of [T, B] arrays, whose carries h[0 .. b1-b0) are updated in place.
// The inner loop is a plain multiply-add over contiguous columns, which the compiler vectorises.
template <typename S>
inline __attribute__((always_inline)) void scan_cols(const S* __restrict x, const S* __restrict a,
                                                     S* __restrict y, S* __restrict h, int64_t B,
                                                     int64_t T, int64_t b0, int64_t b1, bool reverse) {
  const int64_t n = b1 - b0;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t row = (reverse ? T - 1 - s : s) * B + b0;
    const S* __restrict xr = x + row;
    const S* __restrict ar = a + row;
    S* __restrict yr = y + row;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      h[j] = ar[j] * h[j] + xr[j];
      yr[j] = h[j];
    }
  }
}

using RowFn32 = void (*)(const float*, const float*, float*, float, int64_t, bool);
using RowFn64 = void (*)(const double*, const double*, double*, double, int64_t, bool);

#define METAKERN_ROW_KERNEL(NAME, ISA, S, W)                                                   \
  __attribute__((target(ISA))) void NAME(const S* x, const S* a, S* y, S h, int64_t T,        \
                                         bool reverse) {                                       \
    scan_row_vec<S, W>(x, a, y, h, T, reverse);                                                \
  }
METAKERN_ROW_KERNEL(row_f32_avx512, "avx512f,fma", float, 16)
METAKERN_ROW_KERNEL(row_f64_avx512, "avx512f,fma", double, 8)
METAKERN_ROW_KERNEL(row_f32_avx2, "avx2,fma", float, 8)
METAKERN_ROW_KERNEL(row_f64_avx2, "avx2,fma", double, 4)
METAKERN_ROW_KERNEL(row_f32_sse2, "sse2", float, 4)
METAKERN_ROW_KERNEL(row_f64_sse2, "sse2", double, 2)
#undef METAKERN_ROW_KERNEL

using ColFn32 = void (*)(const float*, const float*, float*, float*, int64_t, int64_t, int64_t, int64_t, bool);
using ColFn64 = void (*)(const double*, const double*, double*, double*, int64_t, int64_t, int64_t, int64_t,
                         bool);

#define METAKERN_COL_KERNEL(NAME, ISA, S)                                                       \
  __attribute__((target(ISA))) void NAME(const S* x, const S* a, S* y, S* h, int64_t B,         \
                                         int64_t T, int64_t b0, int64_t b1, bool reverse) {     \
    scan_cols<S>(x, a, y, h, B, T, b0, b1, reverse);                                            \
  }
METAKERN_COL_KERNEL(col_f32_avx512, "avx512f,fma", float)
METAKERN_COL_KERNEL(col_f64_avx512, "avx512f,fma", double)
METAKERN_COL_KERNEL(col_f32_avx2, "avx2,fma", float)
METAKERN_COL_KERNEL(col_f64_avx2, "avx2,fma", double)
METAKERN_COL_KERNEL(col_f32_sse2, "sse2", float)
METAKERN_COL_KERNEL(col_f64_sse2, "sse2", double)
#undef METAKERN_COL_KERNEL

// One column block [b0, b1) of time-major GAE (see run_gae_cols).
template <typename S>
inline __attribute__((always_inline)) void gae_block(const S* __restrict r, const S* __restrict v,
                                                     const S* __restrict cont, const S* __restrict cut,
                                                     const S* __restrict boot, S* __restrict adv, S* __restrict ret,
                                                     int64_t B, int64_t T, int64_t b0, int64_t b1, S gamma, S gl) {
  const int64_t n = b1 - b0;
  alignas(64) S A[kColBlock];
  alignas(64) S nv[kColBlock];
  for (int64_t j = 0; j < n; ++j) {
    A[j] = S(0);
    nv[j] = boot ? boot[b0 + j] : S(0);
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * B + b0;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const S c = cont ? cont[o + j] : S(1);
      const S extra = cut ? cut[o + j] : S(0);
      const S vj = v[o + j];
      A[j] = r[o + j] + gamma * (c * nv[j] + extra) - vj + gl * c * A[j];
      adv[o + j] = A[j];
      ret[o + j] = A[j] + vj;
      nv[j] = vj;
    }
  }
}

template <typename S>
using GaeColFn = void (*)(const S*, const S*, const S*, const S*, const S*, S*, S*, int64_t, int64_t, int64_t,
                          int64_t, S, S);

#define METAKERN_GAE_KERNEL(NAME, ISA, S)                                                              \
  __attribute__((target(ISA))) void NAME(const S* r, const S* v, const S* cont, const S* cut, const S* boot, \
                                         S* adv, S* ret, int64_t B, int64_t T, int64_t b0, int64_t b1, S g,  \
                                         S gl) {                                                         \
    gae_block<S>(r, v, cont, cut, boot, adv, ret, B, T, b0, b1, g, gl);                                  \
  }
METAKERN_GAE_KERNEL(gae_f32_avx512, "avx512f,fma", float)
METAKERN_GAE_KERNEL(gae_f64_avx512, "avx512f,fma", double)
METAKERN_GAE_KERNEL(gae_f32_avx2, "avx2,fma", float)
METAKERN_GAE_KERNEL(gae_f64_avx2, "avx2,fma", double)
METAKERN_GAE_KERNEL(gae_f32_sse2, "sse2", float)
METAKERN_GAE_KERNEL(gae_f64_sse2, "sse2", double)
#undef METAKERN_GAE_KERNEL

struct Kernels {
  RowFn32 row_f32;
  RowFn64 row_f64;
  ColFn32 col_f32;
  ColFn64 col_f64;
  GaeColFn<float> gae_col_f32;
  GaeColFn<double> gae_col_f64;
};

Kernels pick_kernels() {
  if (have_avx512()) {
    return {row_f32_avx512, row_f64_avx512, col_f32_avx512, col_f64_avx512, gae_f32_avx512, gae_f64_avx512};
  }
  if (have_avx2()) {
    return {row_f32_avx2, row_f64_avx2, col_f32_avx2, col_f64_avx2, gae_f32_avx2, gae_f64_avx2};
  }
  return {row_f32_sse2, row_f64_sse2, col_f32_sse2, col_f64_sse2, gae_f32_sse2, gae_f64_sse2};
}

const Kernels& kernels() {
  static const Kernels k = pick_kernels();
  return k;
}

// 16-bit storage: widen to fp32, one step at a time. `stride` is the distance between steps.
template <typename S>
void scan_row_scalar(const S* x, const S* a, S* y, float h, int64_t T, int64_t stride, bool reverse) {
  using St = Storage<S>;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t i = (reverse ? T - 1 - s : s) * stride;
    h = St::load(a + i) * h + St::load(x + i);
    St::store(y + i, h);
  }
}

int team_size(int requested, int64_t B, int64_t T) {
  int nt = requested > 0 ? requested : omp_get_max_threads();
  if (B * T < kSerialBelow) nt = 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, B)));
}

template <typename S, typename RowFn>
void run_rows(RowFn row, const void* xv, const void* av, const void* cv, void* yv, int64_t B,
              int64_t T, bool reverse, int num_threads) {
  const S* x = static_cast<const S*>(xv);
  const S* a = static_cast<const S*>(av);
  const S* c = static_cast<const S*>(cv);
  S* y = static_cast<S*>(yv);
  const int nt = team_size(num_threads, B, T);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t b = 0; b < B; ++b) row(x + b * T, a + b * T, y + b * T, c[b], T, reverse);
}

// Time-major: each thread takes a contiguous slice of kColBlock columns and walks all T steps over
// it, keeping the slice's carries in a small buffer that stays in L1.

template <typename S, typename ColFn>
void run_cols(ColFn col, const void* xv, const void* av, const void* cv, void* yv, int64_t B, int64_t T,
              bool reverse, int num_threads) {
  const S* x = static_cast<const S*>(xv);
  const S* a = static_cast<const S*>(av);
  const S* c = static_cast<const S*>(cv);
  S* y = static_cast<S*>(yv);
  const int64_t blocks = (B + kColBlock - 1) / kColBlock;
  const int nt = static_cast<int>(std::min<int64_t>(team_size(num_threads, B, T), blocks));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t b0 = k * kColBlock;
    const int64_t b1 = std::min(B, b0 + kColBlock);
    alignas(64) S h[kColBlock];
    std::memcpy(h, c + b0, sizeof(S) * (b1 - b0));
    col(x, a, y, h, B, T, b0, b1, reverse);
  }
}

template <typename S>
void run_16bit(const void* xv, const void* av, const void* cv, void* yv, int64_t B, int64_t T,
               bool reverse, bool time_major, int num_threads) {
  const S* x = static_cast<const S*>(xv);
  const S* a = static_cast<const S*>(av);
  const S* c = static_cast<const S*>(cv);
  S* y = static_cast<S*>(yv);
  // Row b starts at b*T with unit steps ([B, T]) or at b with steps of B ([T, B]).
  const int64_t start = time_major ? 1 : T;
  const int64_t stride = time_major ? B : 1;
  const int nt = team_size(num_threads, B, T);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * start;
    scan_row_scalar<S>(x + o, a + o, y + o, Storage<S>::load(c + b), T, stride, reverse);
  }
}

// Backward, batch-major: per row, g at the adjoint's first step is gy there; the other T-1 steps
// are a scan of gy with coefficients a shifted by one (pointer offsets, no copies); then da.
template <typename S, typename RowFn>
void run_rows_backward(RowFn row, const S* gy, const S* a, const S* y, const S* c, S* g, S* da, int64_t B,
                       int64_t T, bool reverse, int num_threads) {
  const int nt = team_size(num_threads, B, T);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * T;
    if (!reverse) {  // adjoint runs t = T-1 .. 0 with coefficient a_{t+1}
      g[o + T - 1] = gy[o + T - 1];
      if (T > 1) row(gy + o, a + o + 1, g + o, gy[o + T - 1], T - 1, true);
      if (da != nullptr) {
        da[o] = g[o] * c[b];
        for (int64_t t = 1; t < T; ++t) da[o + t] = g[o + t] * y[o + t - 1];
      }
    } else {  // adjoint runs t = 0 .. T-1 with coefficient a_{t-1}
      g[o] = gy[o];
      if (T > 1) row(gy + o + 1, a + o, g + o + 1, gy[o], T - 1, false);
      if (da != nullptr) {
        for (int64_t t = 0; t < T - 1; ++t) da[o + t] = g[o + t] * y[o + t + 1];
        da[o + T - 1] = g[o + T - 1] * c[b];
      }
    }
  }
}

// Backward, time-major: the same with whole rows of B columns; column blocks as in run_cols.
template <typename S, typename ColFn>
void run_cols_backward(ColFn col, const S* gy, const S* a, const S* y, const S* c, S* g, S* da, int64_t B,
                       int64_t T, bool reverse, int num_threads) {
  const int64_t blocks = (B + kColBlock - 1) / kColBlock;
  const int nt = static_cast<int>(std::min<int64_t>(team_size(num_threads, B, T), blocks));
  const int64_t first = reverse ? 0 : (T - 1) * B;  // the adjoint's first row: g = gy there
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t b0 = k * kColBlock;
    const int64_t b1 = std::min(B, b0 + kColBlock);
    const int64_t n = b1 - b0;
    alignas(64) S h[kColBlock];
    std::memcpy(h, gy + first + b0, sizeof(S) * n);
    std::memcpy(g + first + b0, gy + first + b0, sizeof(S) * n);
    if (T > 1) {
      if (!reverse) {
        col(gy, a + B, g, h, B, T - 1, b0, b1, true);
      } else {
        col(gy + B, a, g + B, h, B, T - 1, b0, b1, false);
      }
    }
    if (da == nullptr) continue;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = t * B;
      const bool edge = reverse ? t == T - 1 : t == 0;
      const S* other = edge ? c : y + (reverse ? row + B : row - B);  // y_{t+1} or y_{t-1}, else carry
#pragma omp simd
      for (int64_t j = b0; j < b1; ++j) da[row + j] = g[row + j] * other[j];
    }
  }
}

template <typename S, typename RowFn, typename ColFn>
void run_backward(RowFn row, ColFn col, const void* gy, const void* a, const void* y, const void* c, void* g,
                  void* da, int64_t B, int64_t T, bool reverse, bool time_major, int num_threads) {
  auto p = [](const void* v) { return static_cast<const S*>(v); };
  if (time_major) {
    run_cols_backward<S>(col, p(gy), p(a), p(y), p(c), static_cast<S*>(g), static_cast<S*>(da), B, T, reverse,
                         num_threads);
  } else {
    run_rows_backward<S>(row, p(gy), p(a), p(y), p(c), static_cast<S*>(g), static_cast<S*>(da), B, T, reverse,
                         num_threads);
  }
}

// GAE, batch-major: per row, delta and the scan coefficients go to a row buffer (in L1/L2), the
// SIMD row scan turns them into advantages, and the returns follow on the same cache lines.
template <typename S, typename RowFn>
void run_gae_rows(RowFn row, const S* r, const S* v, const S* cont, const S* cut, const S* boot, S* adv, S* ret,
                  int64_t B, int64_t T, S gamma, S gl, int num_threads) {
  const int nt = team_size(num_threads, B, T);
#pragma omp parallel num_threads(nt)
  {
    std::vector<S> buf(2 * static_cast<size_t>(T));
    S* delta = buf.data();
    S* coef = delta + T;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * T;
      const S* rv = r + o;
      const S* vv = v + o;
      for (int64_t t = 0; t < T; ++t) {
        const S nv = t + 1 < T ? vv[t + 1] : (boot ? boot[b] : S(0));
        const S c = cont ? cont[o + t] : S(1);
        const S extra = cut ? cut[o + t] : S(0);
        delta[t] = rv[t] + gamma * (c * nv + extra) - vv[t];
        coef[t] = gl * c;
      }
      row(delta, coef, adv + o, S(0), T, true);
      for (int64_t t = 0; t < T; ++t) ret[o + t] = adv[o + t] + vv[t];
    }
  }
}

// GAE, time-major: each column block sweeps t = T-1 .. 0 with the running advantage and the next
// value in L1 buffers; the inner loop over columns vectorises (ISA picked at run time, as above).
template <typename S>
void run_gae_cols(GaeColFn<S> block, const S* r, const S* v, const S* cont, const S* cut, const S* boot, S* adv,
                  S* ret, int64_t B, int64_t T, S gamma, S gl, int num_threads) {
  const int64_t blocks = (B + kColBlock - 1) / kColBlock;
  const int nt = static_cast<int>(std::min<int64_t>(team_size(num_threads, B, T), blocks));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < blocks; ++k) {
    block(r, v, cont, cut, boot, adv, ret, B, T, k * kColBlock, std::min(B, (k + 1) * kColBlock), gamma, gl);
  }
}

template <typename S, typename RowFn>
void run_gae(RowFn row, GaeColFn<S> col, const void* r, const void* v, const void* cont, const void* cut, const void* boot,
             void* adv, void* ret, int64_t B, int64_t T, double gamma, double lam, bool time_major, int nt) {
  auto p = [](const void* q) { return static_cast<const S*>(q); };
  const S g = static_cast<S>(gamma);
  const S gl = static_cast<S>(gamma * lam);
  if (time_major) {
    run_gae_cols<S>(col, p(r), p(v), p(cont), p(cut), p(boot), static_cast<S*>(adv), static_cast<S*>(ret), B, T, g,
                    gl, nt);
  } else {
    run_gae_rows<S>(row, p(r), p(v), p(cont), p(cut), p(boot), static_cast<S*>(adv), static_cast<S*>(ret), B, T,
                    g, gl, nt);
  }
}

}  // namespace

void gae_cpu(DType dtype, const void* r, const void* v, const void* cont, const void* cut,
             const void* bootstrap, void* adv, void* ret, int64_t B, int64_t T, double gamma,
             double lam, bool time_major, int num_threads) {
  const Kernels& k = kernels();
  switch (dtype) {
    case DType::Float32:
      return run_gae<float>(k.row_f32, k.gae_col_f32, r, v, cont, cut, bootstrap, adv, ret, B, T, gamma, lam, time_major,
                            num_threads);
    case DType::Float64:
      return run_gae<double>(k.row_f64, k.gae_col_f64, r, v, cont, cut, bootstrap, adv, ret, B, T, gamma, lam, time_major,
                             num_threads);
    default:
      throw std::invalid_argument("gae_cpu: float32 and float64 only");
  }
}

void linear_scan_backward_cpu(DType dtype, const void* gy, const void* a, const void* y,
                              const void* carry, void* g, void* da, int64_t B, int64_t T,
                              bool reverse, bool time_major, int num_threads) {
  const Kernels& k = kernels();
  switch (dtype) {
    case DType::Float32:
      return run_backward<float>(k.row_f32, k.col_f32, gy, a, y, carry, g, da, B, T, reverse, time_major,
                                 num_threads);
    case DType::Float64:
      return run_backward<double>(k.row_f64, k.col_f64, gy, a, y, carry, g, da, B, T, reverse, time_major,
                                  num_threads);
    default:
      throw std::invalid_argument("linear_scan_backward_cpu: float32 and float64 only");
  }
}

void linear_scan_cpu(DType dtype, const void* x, const void* a, const void* carry, void* y,
                     int64_t B, int64_t T, bool reverse, bool time_major, int num_threads) {
  const Kernels& k = kernels();
  switch (dtype) {
    case DType::Float32:
      return time_major ? run_cols<float>(k.col_f32, x, a, carry, y, B, T, reverse, num_threads)
                        : run_rows<float>(k.row_f32, x, a, carry, y, B, T, reverse, num_threads);
    case DType::Float64:
      return time_major ? run_cols<double>(k.col_f64, x, a, carry, y, B, T, reverse, num_threads)
                        : run_rows<double>(k.row_f64, x, a, carry, y, B, T, reverse, num_threads);
    case DType::BFloat16:
      return run_16bit<bf16_bits>(x, a, carry, y, B, T, reverse, time_major, num_threads);
    case DType::Float16:
      return run_16bit<f16_bits>(x, a, carry, y, B, T, reverse, time_major, num_threads);
  }
}

}  // namespace metakern
