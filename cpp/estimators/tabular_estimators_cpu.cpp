// CPU kernel behind metakern.estimators.tabular (see tabular_estimators.h).
#include "estimators/tabular_estimators.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace metakern {

namespace {

template <typename I>
int64_t terms(int estimator, const double* v, const double* pv, const I* states, const I* actions,
              const double* signal, int64_t B, int64_t T, int64_t S, int64_t A, double gamma, double lam,
              double* at_g, double* st_g, double* at_y, double* st_y, double* value, int num_threads) {
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, B)));
  const int64_t SA = S * A;
  // kCopies trajectories are processed together, each adding into its own copy of the bins. A bin holds
  // the sums of g and y at one (s, a) side by side (one cache line per step); the per-state sums are the
  // bins' sums over a, formed at the end.
  constexpr int64_t kCopies = 4;
  const int64_t bins = 2 * SA;
  const int64_t width = kCopies * bins + 1;  // ... per copy, then the value
  std::vector<double> partial(static_cast<size_t>(nt) * width, 0.0);
  std::vector<int64_t> bad(nt, -1);  // per thread: first out-of-range step
  std::vector<double> discount(T);
  for (int64_t t = 0; t < T; ++t) discount[t] = t == 0 ? 1.0 : discount[t - 1] * gamma;

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    double* mine = partial.data() + static_cast<size_t>(tid) * width;
    double& val = mine[kCopies * bins];
    int64_t& bad_here = bad[tid];
    // Pass 1 (forward) reads a trajectory once: the flat (s, a) index, w_t = gamma^t signal_t, the
    // gathered u_t and the forward recurrence; pass 2 (reverse) runs the reverse sums and fills the bins.
    std::vector<int32_t> sa(kCopies * T);
    std::vector<double> q0(kCopies * T), q1(kCopies * T), q2(kCopies * T);
    const int64_t per = (B + nt - 1) / nt;
    const int64_t b0 = tid * per, b1 = std::min(B, b0 + per);
    for (int64_t blk = b0; blk < b1; blk += kCopies) {
      const int64_t R = std::min<int64_t>(kCopies, b1 - blk);
      for (int64_t r = 0; r < R; ++r) {
        const I* st = states + (blk + r) * T;
        const I* ac = actions + (blk + r) * T;
        const double* sig = signal + (blk + r) * T;
        int32_t* idx = sa.data() + r * T;
        double *w = q0.data() + r * T, *x = q1.data() + r * T;
        for (int64_t t = 0; t < T; ++t) {  // independent steps: no serial chain here
          int64_t s_t = static_cast<int64_t>(st[t]), a_t = static_cast<int64_t>(ac[t]);
          if (static_cast<uint64_t>(s_t) >= static_cast<uint64_t>(S) ||
              static_cast<uint64_t>(a_t) >= static_cast<uint64_t>(A)) {
            if (bad_here < 0) bad_here = (blk + r) * T + t;
            s_t = a_t = 0;  // keep reading in bounds; the caller raises
          }
          const int64_t i = s_t * A + a_t;
          idx[t] = static_cast<int32_t>(i);
          w[t] = discount[t] * sig[t];
          x[t] = v[i] - pv[s_t];  // u_t
        }
      }
      // The forward recurrences, kCopies trajectories in lock-step so that their chains overlap.
      double acc[kCopies] = {0, 0, 0, 0};
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t r = 0; r < R; ++r) {
          const int64_t k = r * T + t;
          const double u = q1[k], w = q0[k];
          if (estimator == 0) {  // dice: x = w_t U_t, U_t = sum_{k<=t} u_k
            acc[r] += u;
            q1[k] = w * acc[r];
          } else if (estimator == 1) {  // loaded dice: x = w_t u_t, z = w_t (F_t - u_t), F_t = lam F_{t-1} + u_t
            q2[k] = w * (lam * acc[r]);
            acc[r] = lam * acc[r] + u;
            q1[k] = w * u;
          } else {  // lvc: y_t = w_t u_t
            q1[k] = w * u;
          }
        }
      }
      if (estimator == 0) {  // g_t = sum_{k>=t} w_k, y_t = sum_{k>=t} w_k U_k
        double g[kCopies] = {0, 0, 0, 0}, y[kCopies] = {0, 0, 0, 0};
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t r = 0; r < R; ++r) {
            g[r] += q0[r * T + t];
            y[r] += q1[r * T + t];
            double* bin = mine + r * bins + 2 * static_cast<int64_t>(sa[r * T + t]);
            bin[0] += g[r];
            bin[1] += y[r];
          }
        }
        for (int64_t r = 0; r < R; ++r) val += g[r];  // g at t = 0 is the trajectory's sum of w
      } else if (estimator == 1) {  // g_t = w_t, y_t = w_t (F_t - u_t) + R_t, R_t = w_t u_t + lam R_{t+1}
        double Rs[kCopies] = {0, 0, 0, 0};
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t r = 0; r < R; ++r) {
            Rs[r] = q1[r * T + t] + lam * Rs[r];
            double* bin = mine + r * bins + 2 * static_cast<int64_t>(sa[r * T + t]);
            bin[0] += q0[r * T + t];
            bin[1] += q2[r * T + t] + Rs[r];
          }
        }
      } else {
        for (int64_t r = 0; r < R; ++r) {
          double sum = 0;
          for (int64_t t = 0; t < T; ++t) {
            double* bin = mine + r * bins + 2 * static_cast<int64_t>(sa[r * T + t]);
            bin[0] += q0[r * T + t];
            bin[1] += q1[r * T + t];
            sum += q0[r * T + t];
          }
          val += sum;
        }
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
      for (int64_t i = 0; i < SA; ++i) {
        at_g[i] += p[2 * i];
        at_y[i] += p[2 * i + 1];
      }
    }
    *value += mine[kCopies * bins];
  }
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t a = 0; a < A; ++a) {
      st_g[s] += at_g[s * A + a];
      st_y[s] += at_y[s * A + a];
    }
  }
  for (int64_t b : bad) {  // threads own increasing row ranges: the first flagged one is the first
    if (b >= 0) return b;
  }
  return -1;
}

}  // namespace

int64_t tabular_estimator_terms_cpu(int estimator, const double* v, const double* pv, const void* states,
                                    const void* actions, bool idx32, const double* signal, int64_t B, int64_t T,
                                    int64_t S, int64_t A, double gamma, double lam, double* at_g, double* st_g,
                                    double* at_y, double* st_y, double* value, int num_threads) {
  if (idx32) {
    return terms(estimator, v, pv, static_cast<const int32_t*>(states), static_cast<const int32_t*>(actions),
                 signal, B, T, S, A, gamma, lam, at_g, st_g, at_y, st_y, value, num_threads);
  }
  return terms(estimator, v, pv, static_cast<const int64_t*>(states), static_cast<const int64_t*>(actions), signal,
               B, T, S, A, gamma, lam, at_g, st_g, at_y, st_y, value, num_threads);
}

}  // namespace metakern
