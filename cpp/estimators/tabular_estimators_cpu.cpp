// CPU kernel behind metakern.estimators.tabular (see tabular_estimators.h).
#include "estimators/tabular_estimators.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace metakern {

void tabular_estimator_terms_cpu(int estimator, const double* v, const double* pv, const int64_t* states,
                                 const int64_t* actions, const double* signal, int64_t B, int64_t T, int64_t S,
                                 int64_t A, double gamma, double lam, double* at_g, double* st_g, double* at_y,
                                 double* st_y, double* value, int num_threads) {
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, B)));
  const int64_t SA = S * A;
  // kCopies trajectories are processed together, each with its own copy of the bins.
  constexpr int64_t kCopies = 4;
  const int64_t bins = 2 * SA + 2 * S;       // at_g, at_y, st_g, st_y
  const int64_t width = kCopies * bins + 1;  // ... per copy, then the value
  std::vector<double> partial(static_cast<size_t>(nt) * width, 0.0);
  std::vector<double> discount(T);
  for (int64_t t = 0; t < T; ++t) discount[t] = t == 0 ? 1.0 : discount[t - 1] * gamma;

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    double* mine = partial.data() + static_cast<size_t>(tid) * width;
    double& val = mine[kCopies * bins];
    // bins: at_g [SA], at_y [SA], st_g [S], st_y [S]
    auto add = [&](double* bin, int64_t s, int64_t a, double g, double y) {
      bin[s * A + a] += g;
      bin[SA + s * A + a] += y;
      bin[2 * SA + s] += g;
      bin[2 * SA + S + s] += y;
    };
    // kCopies trajectories advance in lock-step, so their serial sums over time overlap; each
    // adds into its own copy of the bins.
    std::vector<double> w(kCopies * T), u(kCopies * T), pre(kCopies * T);
    const int64_t per = (B + nt - 1) / nt;
    const int64_t b0 = tid * per, b1 = std::min(B, b0 + per);
    for (int64_t blk = b0; blk < b1; blk += kCopies) {
      const int64_t R = std::min<int64_t>(kCopies, b1 - blk);
      const int64_t* st[kCopies];
      const int64_t* ac[kCopies];
      for (int64_t r = 0; r < R; ++r) {
        st[r] = states + (blk + r) * T;
        ac[r] = actions + (blk + r) * T;
        const double* sig = signal + (blk + r) * T;
        for (int64_t t = 0; t < T; ++t) {
          w[r * T + t] = discount[t] * sig[t];
          u[r * T + t] = v[st[r][t] * A + ac[r][t]] - pv[st[r][t]];
        }
      }
      if (estimator == 0) {  // dice: forward prefix of u, then reverse sums
        double U[kCopies] = {0, 0, 0, 0}, g[kCopies] = {0, 0, 0, 0}, y[kCopies] = {0, 0, 0, 0};
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t r = 0; r < R; ++r) pre[r * T + t] = (U[r] += u[r * T + t]);
        }
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t r = 0; r < R; ++r) {
            g[r] += w[r * T + t];
            y[r] += w[r * T + t] * pre[r * T + t];
            add(mine + r * bins, st[r][t], ac[r][t], g[r], y[r]);
          }
        }
        for (int64_t r = 0; r < R; ++r) val += g[r];  // g at t = 0 is the trajectory's sum of w
      } else if (estimator == 1) {  // loaded dice: F forward, R reverse
        double F[kCopies] = {0, 0, 0, 0}, Rs[kCopies] = {0, 0, 0, 0};
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t r = 0; r < R; ++r) pre[r * T + t] = (F[r] = lam * F[r] + u[r * T + t]);
        }
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t r = 0; r < R; ++r) {
            const double wt = w[r * T + t];
            const double wu = wt * u[r * T + t];
            Rs[r] = wu + lam * Rs[r];
            add(mine + r * bins, st[r][t], ac[r][t], wt, wt * pre[r * T + t] + Rs[r] - wu);
          }
        }
      } else {  // lvc
        double sum[kCopies] = {0, 0, 0, 0};
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t r = 0; r < R; ++r) {
            const double wt = w[r * T + t];
            sum[r] += wt;
            add(mine + r * bins, st[r][t], ac[r][t], wt, wt * u[r * T + t]);
          }
        }
        for (int64_t r = 0; r < R; ++r) val += sum[r];
      }
    }
  }
  std::fill(at_g, at_g + SA, 0.0);
  std::fill(at_y, at_y + SA, 0.0);
  std::fill(st_g, st_g + S, 0.0);
  std::fill(st_y, st_y + S, 0.0);
  *value = 0.0;
  for (int k = 0; k < nt; ++k) {  // threads and copies in a fixed order: deterministic
    const double* mine = partial.data() + static_cast<size_t>(k) * width;
    for (int64_t c = 0; c < kCopies; ++c) {
      const double* p = mine + c * bins;
      for (int64_t i = 0; i < SA; ++i) at_g[i] += p[i];
      for (int64_t i = 0; i < SA; ++i) at_y[i] += p[SA + i];
      for (int64_t i = 0; i < S; ++i) st_g[i] += p[2 * SA + i];
      for (int64_t i = 0; i < S; ++i) st_y[i] += p[2 * SA + S + i];
    }
    *value += mine[kCopies * bins];
  }
}

}  // namespace metakern
