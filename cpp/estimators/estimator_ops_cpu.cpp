// CPU kernel of the magic-box estimator ops (see estimator_ops.h): blocks of 8 trajectory rows advance
// through time in lock-step, one row per SIMD lane on AVX-512, blocks split across OpenMP
// threads; three O(T) passes at most, each a loop with the estimator fixed at compile time; an
// L1/L2-sized scratch per thread. An AVX-512 build and a portable one; METAKERN_MAX_ISA=avx2 (or sse2)
// forces the portable one (common/cpu_features.h).
#include "estimators/estimator_ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "common/cpu_features.h"
#include "common/simd_transpose.h"

namespace metakern {
namespace {

constexpr int kLanes = 8;  // trajectory rows per SIMD vector (a block)
#define EST_INLINE inline __attribute__((always_inline))

// The portable kernel: scalar code, the block's rows interleaved so that their serial chains overlap.
// (The SIMD kernel built for SSE2 or AVX2, where 8-lane vectors of doubles span several registers,
// ran 2-6x slower than this.)

// Rows [0, R) of a block (R <= kLanes), all of length T, at row stride T. Passes over time: forward
// (discount, value, per-step inputs of h and e), reverse (h's episode sums, g, R), forward (F, y).
template <int KIND, typename S>
void block(int R, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
           S* g, S* y, int64_t T, S gamma, S lam, S cap, S* h, S* e) {
  constexpr bool cumulative = KIND == kDice || KIND == kDiceBaseline || KIND == kOffPolicy;
  S total[kLanes] = {}, d[kLanes], c[kLanes] = {};
  for (int r = 0; r < kLanes; ++r) d[r] = 1;
  for (int64_t t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) {
      const int64_t k = r * T + t;
      if (t > 0) {
        const bool cont = !(dn && dn[k - 1]);
        d[r] = cont ? gamma * d[r] : S(1);
        if (KIND == kOffPolicy && !cont) c[r] = 0;
      }
      S ht = d[r] * sig[k];
      if (KIND == kMaml) {
        total[r] += ht * l[k];
      } else if (KIND == kOffPolicy) {
        c[r] += l[k] - beh[k];
        const bool clamped = c[r] > cap;
        const S w = std::exp(clamped ? cap : c[r]) * ht;
        total[r] += w;
        ht = clamped ? S(0) : w;
      } else if (KIND != kLoadedDice) {
        total[r] += ht;
      }
      h[k] = ht;
      if (KIND == kDiceBaseline) e[k] = -d[r] * val[k];
      if (!cumulative) {  // maml, loaded dice, lvc: g = h; maml and lvc also have H u in closed form here
        if (g) g[k] = ht;
        if (y && KIND == kMaml) y[k] = 0;
        if (y && KIND == kLvc) y[k] = ht * u[k];  // lam = 0: (H u)_t = h_t u_t
      }
    }
  }
  if (value) {
    for (int r = 0; r < R; ++r) value[r] = total[r];
  }
  if (KIND == kMaml || KIND == kLvc || (KIND == kLoadedDice && !y)) return;  // one pass was enough
  if (!g && !y) return;
  const S lam_in = KIND == kLoadedDice ? lam : (cumulative ? S(1) : S(0));
  S acc[kLanes] = {}, Rs[kLanes] = {};
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int r = 0; r < R; ++r) {
      const int64_t k = r * T + t;
      const bool cont = t + 1 < T && !(dn && dn[k]);  // does step t+1 continue step t's episode?
      if (cumulative) {
        acc[r] = h[k] + (cont ? acc[r] : S(0));
        h[k] = acc[r];
      }
      if (g && cumulative) g[k] = KIND == kDiceBaseline ? h[k] + e[k] : h[k];
      if (y) {
        if (KIND == kMaml) {
          y[k] = 0;
        } else {
          Rs[r] = h[k] * u[k] + (cont ? lam_in * Rs[r] : S(0));
          y[k] = Rs[r];
        }
      }
    }
  }
  if (!y || KIND == kMaml || KIND == kLvc) return;  // lvc: lam = 0, so (H u)_t = R_t = h_t u_t
  S F[kLanes] = {};
  for (int64_t t = 0; t < T; ++t) {
    for (int r = 0; r < R; ++r) {
      const int64_t k = r * T + t;
      const bool cont = t > 0 && !(dn && dn[k - 1]);
      F[r] = (cont ? lam_in * F[r] : S(0)) + u[k];
      S yt = h[k] * (F[r] - u[k]) + y[k];
      if (KIND == kDiceBaseline) yt += e[k] * u[k];
      y[k] = yt;
    }
  }
}

template <int KIND, typename S>
void run_kind(const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value, S* g,
              S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
  const int nt = num_threads;
  const int64_t blocks = (B + kLanes - 1) / kLanes;
#pragma omp parallel num_threads(nt)
  {
    std::vector<S> h(static_cast<size_t>(kLanes * T)), e(KIND == kDiceBaseline ? static_cast<size_t>(kLanes * T) : 0);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t b = blk * kLanes;
      const int R = static_cast<int>(std::min<int64_t>(kLanes, B - b));
      const int64_t o = b * T;
      block<KIND, S>(R, l + o, sig + o, val ? val + o : nullptr, beh ? beh + o : nullptr, dn ? dn + o : nullptr,
                     u ? u + o : nullptr, value ? value + b : nullptr, g ? g + o : nullptr, y ? y + o : nullptr, T,
                     static_cast<S>(gamma), static_cast<S>(lam), static_cast<S>(cap), h.data(), e.data());
    }
  }
}

// The AVX-512 kernel: the block's 8 rows in the lanes of one vector (8 doubles, or 8 floats with
// AVX-512VL).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx2,fma")
namespace avx512 {

// Inputs stay [B, T] row-major: each pass walks time in tiles of 8 steps, transposing an 8 x 8 tile of
// the block's rows in registers (loads) or back (stores). Per lane, every statement is the scalar
// recurrence of block() above in the same order; the off-policy weights' exponential is vexp below.
// Scratch: h (and e, and the HVP's intermediate R) as T vectors per thread.

// 1/k! for k = 0..N, at compile time.
template <typename S, int N>
struct InvFactorials {
  S v[N + 1];
  constexpr InvFactorials() : v() {
    v[0] = 1;
    for (int k = 1; k <= N; ++k) v[k] = v[k - 1] / S(k);
  }
};

template <typename S>
struct Vec;
template <>
struct Vec<double> {
  typedef double V __attribute__((vector_size(kLanes * sizeof(double))));
  typedef long long M __attribute__((vector_size(kLanes * sizeof(long long))));
  static constexpr int kTaylor = 13;  // e^r on |r| <= ln2/2: truncation below 5e-18
  static constexpr double kLow = -708.0, kOverflow = 709.782712893384;  // e^kOverflow ~ the largest double
  static constexpr double kMaxExp = 1023.0;
  static constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  static constexpr double kBias = 4503599627370496.0 + 1023.0;
  static constexpr int kMantissa = 52;
};
template <>
struct Vec<float> {
  typedef float V __attribute__((vector_size(kLanes * sizeof(float))));
  typedef int M __attribute__((vector_size(kLanes * sizeof(int))));
  static constexpr int kTaylor = 7;  // truncation below 6e-9 relative, under float's 6e-8
  static constexpr float kLow = -87.0f, kOverflow = 88.72283f;  // e^kOverflow ~ the largest float
  static constexpr float kMaxExp = 127.0f;
  static constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  static constexpr float kBias = 8388608.0f + 127.0f;
  static constexpr int kMantissa = 23;
};

// e^x lane-wise: x = n ln2 + r, |r| <= ln2/2 (ln2 split in two for an exact reduction), e^r by its
// Taylor series, 2^n written into the exponent bits (n = kMaxExp + 1, just below the overflow
// threshold, as 2 * 2^kMaxExp). Above kOverflow: +inf, as std::exp. Below kLow the result is e^kLow
// (~3e-308 in double, ~2e-38 in float: below any tolerance next to 0) rather than a subnormal.
template <typename S>
EST_INLINE typename Vec<S>::V vexp(typename Vec<S>::V x) {
  using T = Vec<S>;
  using V = typename T::V;
  using M = typename T::M;
  const V low = V{} + T::kLow, high = V{} + T::kOverflow;
  const M over = x > high;
  x = x < low ? low : x;
  x = over ? high : x;
  const V shifted = x * S(1.4426950408889634) + T::kMagic;
  const V n = shifted - T::kMagic;
  const V r = (x - n * S(6.93147180369123816490e-01)) - n * S(1.90821492927058770002e-10);
  constexpr InvFactorials<S, T::kTaylor> c{};
  V p = V{} + c.v[T::kTaylor];
  for (int k = T::kTaylor - 1; k >= 0; --k) p = p * r + c.v[k];
  const V top = V{} + T::kMaxExp;
  const V n1 = n > top ? top : n;  // n - n1 is 0 or 1
  const V biased = n1 + T::kBias;
  const M bits = reinterpret_cast<const M&>(biased) << T::kMantissa;
  const V e = (p * (S(1) + (n - n1))) * reinterpret_cast<const V&>(bits);
  return over ? V{} + std::numeric_limits<S>::infinity() : e;
}

// One block: rows [0, R) (R <= kLanes; lanes past R repeat row R - 1 and are not written), at row
// stride T. tile[j][r] = x[r, t0 + j] for the n = min(kLanes, T - t0) steps of the tile (0 past them).
template <typename S>
struct Block {
  using V = typename Vec<S>::V;
  using M = typename Vec<S>::M;
  int R;
  int64_t T;

  template <typename P>
  EST_INLINE const P* row(const P* x, int r) const {
    return x + std::min(r, R - 1) * T;
  }

  EST_INLINE void load(const S* x, int64_t t0, int n, V* tile) const {
    V rows[kLanes];
    for (int r = 0; r < kLanes; ++r) {
      const S* p = row(x, r) + t0;
      if (n == kLanes) {
        std::memcpy(&rows[r], p, sizeof(V));
      } else {
        rows[r] = V{};
        for (int j = 0; j < n; ++j) rows[r][j] = p[j];
      }
    }
    transpose8(rows, tile);
  }

  EST_INLINE void store(S* x, int64_t t0, int n, const V* tile) const {
    V rows[kLanes];
    transpose8(tile, rows);
    for (int r = 0; r < R; ++r) {
      S* p = x + r * T + t0;
      if (n == kLanes) {
        std::memcpy(p, &rows[r], sizeof(V));
      } else {
        for (int j = 0; j < n; ++j) p[j] = rows[r][j];
      }
    }
  }

  // done[j] = lanes where dones[r, t0 + j] != 0 (all false without dones).
  EST_INLINE void load_done(const uint8_t* dn, int64_t t0, int n, M* done) const {
    for (int j = 0; j < kLanes; ++j) done[j] = M{};
    if (!dn) return;
    for (int r = 0; r < kLanes; ++r) {
      const uint8_t* p = row(dn, r) + t0;
      for (int j = 0; j < n; ++j) done[j][r] = p[j] ? -1 : 0;
    }
  }
};

// Vector t of a [T, kLanes] scratch array (plain allocation: unaligned moves, as fast on aligned data).
template <typename V, typename S>
EST_INLINE V get(const S* a, int64_t t) {
  V x;
  std::memcpy(&x, a + t * kLanes, sizeof(V));
  return x;
}
template <typename V, typename S>
EST_INLINE void put(S* a, int64_t t, const V& x) {
  std::memcpy(a + t * kLanes, &x, sizeof(V));
}

template <int KIND, typename S>
EST_INLINE void block_simd(int R, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u,
                           S* value, S* g, S* y, int64_t T, S gamma, S lam, S cap, S* h, S* e, S* ys) {
  using V = typename Vec<S>::V;
  using M = typename Vec<S>::M;
  constexpr bool cumulative = KIND == kDice || KIND == kDiceBaseline || KIND == kOffPolicy;
  const Block<S> blk{R, T};
  const V zero = V{}, one = V{} + S(1), capv = V{} + cap;
  // Forward: discount d, value, h (and e); g and, for maml and lvc, y in closed form.
  V total = zero, d = one, c = zero;
  M prev_done = M{};  // done at the step before
  for (int64_t t0 = 0; t0 < T; t0 += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, T - t0));
    V L[kLanes], SG[kLanes], X[kLanes], UU[kLanes], G[kLanes], Y[kLanes];
    M D[kLanes];
    if (KIND == kMaml || KIND == kOffPolicy) blk.load(l, t0, n, L);
    blk.load(sig, t0, n, SG);
    if (KIND == kDiceBaseline) blk.load(val, t0, n, X);
    if (KIND == kOffPolicy) blk.load(beh, t0, n, X);
    if (y && KIND == kLvc) blk.load(u, t0, n, UU);
    blk.load_done(dn, t0, n, D);
    for (int j = 0; j < n; ++j) {
      const int64_t t = t0 + j;
      if (t > 0) {
        d = prev_done ? one : gamma * d;
        if (KIND == kOffPolicy) c = prev_done ? zero : c;
      }
      prev_done = D[j];
      V ht = d * SG[j];
      if (KIND == kMaml) {
        total += ht * L[j];
      } else if (KIND == kOffPolicy) {
        c += L[j] - X[j];
        const M clamped = c > capv;
        const V w = vexp<S>(clamped ? capv : c) * ht;
        total += w;
        ht = clamped ? zero : w;
      } else if (KIND != kLoadedDice) {
        total += ht;
      }
      put(h, t, ht);
      if (KIND == kDiceBaseline) put(e, t, V(-d * X[j]));
      if (!cumulative) {
        G[j] = ht;
        if (KIND == kMaml) Y[j] = zero;
        if (KIND == kLvc && y) Y[j] = ht * UU[j];  // lam = 0: (H u)_t = h_t u_t
      }
    }
    if (!cumulative && g) blk.store(g, t0, n, G);
    if ((KIND == kMaml || KIND == kLvc) && y) blk.store(y, t0, n, Y);
  }
  if (value) {
    for (int r = 0; r < R; ++r) value[r] = total[r];
  }
  if (KIND == kMaml || KIND == kLvc || (KIND == kLoadedDice && !y)) return;  // one pass was enough
  if (!g && !y) return;
  // Reverse: h's episode sums (cumulative kinds), g, and R_t = h_t u_t + lam R_{t+1} into ys.
  const V lam_in = V{} + (KIND == kLoadedDice ? lam : (cumulative ? S(1) : S(0)));
  V acc = zero, Rs = zero;
  const int64_t last_tile = (T - 1) / kLanes * kLanes;
  for (int64_t t0 = last_tile; t0 >= 0; t0 -= kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, T - t0));
    V UU[kLanes], G[kLanes];
    M D[kLanes];
    if (y) blk.load(u, t0, n, UU);
    blk.load_done(dn, t0, n, D);
    for (int j = n - 1; j >= 0; --j) {
      const int64_t t = t0 + j;
      const bool more = t + 1 < T;  // does step t+1 exist? (it continues step t's episode unless done)
      V ht = get<V>(h, t);
      if (cumulative) {
        acc = more ? ht + (D[j] ? zero : acc) : ht;
        ht = acc;
        put(h, t, ht);
      }
      if (g && cumulative) G[j] = KIND == kDiceBaseline ? ht + get<V>(e, t) : ht;
      if (y) {
        const V prod = ht * UU[j];
        Rs = more ? prod + (D[j] ? zero : lam_in * Rs) : prod;
        put(ys, t, Rs);
      }
    }
    if (g && cumulative) blk.store(g, t0, n, G);
  }
  if (!y) return;
  // Forward: F_t = lam F_{t-1} + u_t and (H u)_t = h_t (F_t - u_t) + R_t (+ e_t u_t).
  V F = zero;
  prev_done = M{};
  for (int64_t t0 = 0; t0 < T; t0 += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, T - t0));
    V UU[kLanes], Y[kLanes];
    M D[kLanes];
    blk.load(u, t0, n, UU);
    blk.load_done(dn, t0, n, D);
    for (int j = 0; j < n; ++j) {
      const int64_t t = t0 + j;
      F = (t > 0 ? (prev_done ? zero : lam_in * F) : zero) + UU[j];
      prev_done = D[j];
      V yt = get<V>(h, t) * (F - UU[j]) + get<V>(ys, t);
      if (KIND == kDiceBaseline) yt += get<V>(e, t) * UU[j];
      Y[j] = yt;
    }
    blk.store(y, t0, n, Y);
  }
}

template <int KIND, typename S>
void run_kind_simd(const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
                   S* g, S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int nt) {
  const int64_t blocks = (B + kLanes - 1) / kLanes;
#pragma omp parallel num_threads(nt)
  {
    const bool two_pass_y = y && KIND != kMaml && KIND != kLvc;
    const size_t n = static_cast<size_t>(T) * kLanes;
    std::vector<S> h(n), e(KIND == kDiceBaseline ? n : 0), ys(two_pass_y ? n : 0);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * kLanes, o = r0 * T;
      const int R = static_cast<int>(std::min<int64_t>(kLanes, B - r0));
      block_simd<KIND, S>(R, l + o, sig + o, val ? val + o : nullptr, beh ? beh + o : nullptr, dn ? dn + o : nullptr,
                          u ? u + o : nullptr, value ? value + r0 : nullptr, g ? g + o : nullptr, y ? y + o : nullptr,
                          T, static_cast<S>(gamma), static_cast<S>(lam), static_cast<S>(cap), h.data(), e.data(),
                          ys.data());
    }
  }
}

}  // namespace avx512
#pragma GCC pop_options

template <int KIND, typename S>
void run_kind_any(const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
                  S* g, S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int nt) {
  if (have_avx512()) {
    avx512::run_kind_simd<KIND, S>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
  } else {
    run_kind<KIND, S>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
  }
}

template <typename S>
void run(int kind, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
         S* g, S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  const int64_t blocks = (B + kLanes - 1) / kLanes;
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, blocks)));
  if (B * T < 32768) nt = 1;  // small problems: thread start-up costs more than it saves
  switch (kind) {
    case kMaml: return run_kind_any<kMaml>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
    case kDice: return run_kind_any<kDice>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
    case kDiceBaseline:
      return run_kind_any<kDiceBaseline>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
    case kLoadedDice:
      return run_kind_any<kLoadedDice>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
    case kLvc: return run_kind_any<kLvc>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
    default: return run_kind_any<kOffPolicy>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
  }
}

}  // namespace

void estimator_terms_cpu(DType dtype, int kind, const void* logp, const void* signal, const void* values,
                         const void* behaviour, const uint8_t* dones, const void* u, void* value, void* g,
                         void* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
  if (kind < kMaml || kind > kOffPolicy) throw std::invalid_argument("metakern: unknown estimator kind");
  if (kind == kDiceBaseline && !values) throw std::invalid_argument("metakern: dice_baseline needs values");
  if (kind == kOffPolicy && !behaviour) throw std::invalid_argument("metakern: off_policy_dice needs behaviour");
  if (y && !u) throw std::invalid_argument("metakern: the Hessian-vector product needs u");
  if (dtype == DType::Float64) {
    run<double>(kind, static_cast<const double*>(logp), static_cast<const double*>(signal),
                static_cast<const double*>(values), static_cast<const double*>(behaviour), dones,
                static_cast<const double*>(u), static_cast<double*>(value), static_cast<double*>(g),
                static_cast<double*>(y), B, T, gamma, lam, cap, num_threads);
  } else if (dtype == DType::Float32) {
    run<float>(kind, static_cast<const float*>(logp), static_cast<const float*>(signal),
               static_cast<const float*>(values), static_cast<const float*>(behaviour), dones,
               static_cast<const float*>(u), static_cast<float*>(value), static_cast<float*>(g),
               static_cast<float*>(y), B, T, gamma, lam, cap, num_threads);
  } else {
    throw std::invalid_argument("metakern: estimator ops take float32 or float64");
  }
}

}  // namespace metakern
