// CPU kernel of the magic-box estimator ops (see estimator_ops.h): one trajectory row per iteration,
// rows split across OpenMP threads; three O(T) passes per row at most, a T-long scratch per thread.
#include "estimators/estimator_ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace metakern {
namespace {

template <typename S>
void row(int kind, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
         S* g, S* y, int64_t T, S gamma, S lam, S cap, S* h, S* e) {
  // Forward: discount, value, and the per-step inputs of h (before the reverse sums) and e.
  const bool cumulative = kind == kDice || kind == kDiceBaseline || kind == kOffPolicy;
  S total = 0, d = 1, c = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (t > 0) {
      const bool cont = !(dn && dn[t - 1]);
      d = cont ? gamma * d : S(1);
      if (!cont) c = 0;
    }
    S ht = 0, et = 0;
    switch (kind) {
      case kMaml:
        total += d * sig[t] * l[t];
        ht = d * sig[t];  // g (h is 0 for this kind)
        break;
      case kDice:
        ht = d * sig[t];
        total += ht;
        break;
      case kDiceBaseline:
        ht = d * sig[t];
        total += ht;
        et = -d * val[t];
        break;
      case kLoadedDice:
        ht = d * sig[t];
        break;
      case kLvc:
        ht = d * sig[t];
        total += ht;
        break;
      case kOffPolicy: {
        c += l[t] - beh[t];
        const bool clamped = c > cap;
        const S w = std::exp(clamped ? cap : c) * d * sig[t];
        total += w;
        ht = clamped ? S(0) : w;
        break;
      }
    }
    h[t] = ht;
    e[t] = et;
  }
  if (value) *value = total;
  if (!g && !y) return;
  // Reverse: h (reverse sums within episodes for the cumulative kinds), g = h + e, and R into y.
  const S lam_in = kind == kLoadedDice ? lam : (cumulative ? S(1) : S(0));
  S acc = 0, R = 0;
  for (int64_t t = T - 1; t >= 0; --t) {
    const bool cont = !(dn && dn[t]) && t + 1 < T;  // does step t+1 continue step t's episode?
    if (cumulative) {
      acc = h[t] + (cont ? acc : S(0));
      h[t] = acc;
    }
    if (g) g[t] = h[t] + e[t];
    if (y) {
      if (kind == kMaml) {
        y[t] = 0;
      } else {
        R = h[t] * u[t] + (cont ? lam_in * R : S(0));
        y[t] = R;
      }
    }
  }
  if (!y || kind == kMaml) return;
  // Forward: F and (H u)_j = h_j (F_j - u_j) + R_j + e_j u_j.
  S F = 0;
  for (int64_t t = 0; t < T; ++t) {
    const bool cont = t > 0 && !(dn && dn[t - 1]);
    F = (cont ? lam_in * F : S(0)) + u[t];
    y[t] = h[t] * (F - u[t]) + y[t] + e[t] * u[t];
  }
}

template <typename S>
void run(int kind, const S* l, const S* sig, const S* val, const S* beh, const uint8_t* dn, const S* u, S* value,
         S* g, S* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads) {
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, B)));
#pragma omp parallel num_threads(nt)
  {
    std::vector<S> h(static_cast<size_t>(T)), e(static_cast<size_t>(T));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * T;
      row<S>(kind, l + o, sig + o, val ? val + o : nullptr, beh ? beh + o : nullptr, dn ? dn + o : nullptr,
             u ? u + o : nullptr, value ? value + b : nullptr, g ? g + o : nullptr, y ? y + o : nullptr, T,
             static_cast<S>(gamma), static_cast<S>(lam), static_cast<S>(cap), h.data(), e.data());
    }
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
