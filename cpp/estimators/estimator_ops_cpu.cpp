// CPU kernel of the magic-box estimator ops (see estimator_ops.h): blocks of 8 trajectory rows advance
// through time in lock-step, one row per SIMD lane (estimator_block.inc), blocks split across OpenMP
// threads; three O(T) passes at most, each a loop with the estimator fixed at compile time; an
// L1/L2-sized scratch per thread. An AVX-512 build and a portable one; METAKERN_DISABLE_AVX512=1
// forces the portable one.
#include "estimators/estimator_ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

template <typename S>
void run_scalar(int kind, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
         S* g, S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
  switch (kind) {
    case kMaml: return run_kind<kMaml>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, num_threads);
    case kDice: return run_kind<kDice>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, num_threads);
    case kDiceBaseline:
      return run_kind<kDiceBaseline>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, num_threads);
    case kLoadedDice:
      return run_kind<kLoadedDice>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, num_threads);
    case kLvc: return run_kind<kLvc>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, num_threads);
    default: return run_kind<kOffPolicy>(l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, num_threads);
  }
}


// The AVX-512 kernel: the block's 8 rows in the lanes of one vector (8 doubles, or 8 floats with
// AVX-512VL).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx2,fma")
namespace avx512 {
#include "estimators/estimator_block.inc"
}  // namespace avx512
#pragma GCC pop_options

template <typename S>
void run(int kind, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
         S* g, S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  const int64_t blocks = (B + kLanes - 1) / kLanes;  // kLanes = kLanes = 8
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, blocks)));
  if (B * T < 32768) nt = 1;  // small problems: thread start-up costs more than it saves
  if (have_avx512()) {
    avx512::run_simd<S>(kind, l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
  } else {
    run_scalar<S>(kind, l, sig, val, beh, dn, u, value, g, y, B, T, gamma, lam, cap, nt);
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
