// CPU kernel behind metakern.estimators.tabular (see tabular_estimators.h).
#include "estimators/tabular_estimators.h"

#include "common/cpu_features.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace metakern {

namespace {

constexpr int kCopies = 4;  // trajectories in lock-step, each adding into its own copy of the bins

struct Scratch {
  int32_t* sa;  // flat (s, a) index per step
  double *q0, *q1, *q2;
};

// RR trajectories in lock-step (their serial chains overlap), adding (g_t, y_t) into bin[2 (s_t, a_t) + {0, 1}]
// of their own bin copies. The passes are store-lean: the bins are the only stores of dice and lvc.
// DiCE's pass 1 for one trajectory with AVX-512, eight steps per iteration: vector loads of the indices
// and the signal, a gather of u = gu[s, a], the prefix sum U of u inside the vector (three shifted
// adds) plus the carry. Same outputs as the scalar pass 1 (sums in another order: equal to rounding).
template <typename I>
__attribute__((target("avx512f"))) void dice_pass1_avx512(const I* st, const I* ac, const double* sig,
                                                          const double* disc, const double* gu,
                                                          int64_t T, int64_t S, int64_t A, int64_t flat0,
                                                          int64_t& bad, int32_t* sa, double* qp) {
  const __m512i Sv = _mm512_set1_epi64(S), Av = _mm512_set1_epi64(A);
  const __m512i sh1 = _mm512_set_epi64(6, 5, 4, 3, 2, 1, 0, 0), sh2 = _mm512_set_epi64(5, 4, 3, 2, 1, 0, 0, 0);
  const __m512i sh4 = _mm512_set_epi64(3, 2, 1, 0, 0, 0, 0, 0), last = _mm512_set1_epi64(7);
  const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0), hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
  __m512d carry = _mm512_setzero_pd();
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) {
    __m512i s, a;
    if constexpr (sizeof(I) == 8) {
      s = _mm512_loadu_si512(st + t);
      a = _mm512_loadu_si512(ac + t);
    } else {
      s = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(st + t)));
      a = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ac + t)));
    }
    const __mmask8 ok = _mm512_cmplt_epu64_mask(s, Sv) & _mm512_cmplt_epu64_mask(a, Av);
    if (ok != 0xFF) {  // record the first out-of-range step; read (0, 0) there instead
      for (int j = 0; j < 8; ++j) {
        if (!((ok >> j) & 1) && (bad < 0 || flat0 + t + j < bad)) bad = flat0 + t + j;
      }
      s = _mm512_maskz_mov_epi64(ok, s);
      a = _mm512_maskz_mov_epi64(ok, a);
    }
    const __m512i i = _mm512_add_epi64(_mm512_mul_epu32(s, Av), a);
    __m512d u = _mm512_i64gather_pd(i, gu, 8);
    const __m512d w = _mm512_mul_pd(_mm512_loadu_pd(disc + t), _mm512_loadu_pd(sig + t));
    u = _mm512_add_pd(u, _mm512_maskz_permutexvar_pd(0xFE, sh1, u));
    u = _mm512_add_pd(u, _mm512_maskz_permutexvar_pd(0xFC, sh2, u));
    u = _mm512_add_pd(u, _mm512_maskz_permutexvar_pd(0xF0, sh4, u));
    const __m512d U = _mm512_add_pd(u, carry);
    carry = _mm512_permutexvar_pd(last, U);
    const __m512d wU = _mm512_mul_pd(w, U);  // stored as (w_t, w_t U_t) pairs
    _mm512_storeu_pd(qp + 2 * t, _mm512_permutex2var_pd(w, lo, wU));
    _mm512_storeu_pd(qp + 2 * t + 8, _mm512_permutex2var_pd(w, hi, wU));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sa + t), _mm512_cvtepi64_epi32(i));
  }
  double U = _mm512_cvtsd_f64(carry);
  for (; t < T; ++t) {
    int64_t s_t = static_cast<int64_t>(st[t]), a_t = static_cast<int64_t>(ac[t]);
    if (static_cast<uint64_t>(s_t) >= static_cast<uint64_t>(S) ||
        static_cast<uint64_t>(a_t) >= static_cast<uint64_t>(A)) {
      if (bad < 0 || flat0 + t < bad) bad = flat0 + t;
      s_t = a_t = 0;
    }
    const int64_t i = s_t * A + a_t;
    const double w = disc[t] * sig[t];
    U += gu[i];
    sa[t] = static_cast<int32_t>(i);
    qp[2 * t] = w;
    qp[2 * t + 1] = w * U;
  }
}

template <int E, int RR, typename I>
void rows(const I* states, const I* actions, const double* signal, const double* discount, const double* gu,
          int64_t row0, int64_t T, int64_t S, int64_t A, double lam, int64_t bins, double* bin0,
          double& val, int64_t& bad, const Scratch& q) {
  const I* st[RR];
  const I* ac[RR];
  const double* sig[RR];
  for (int r = 0; r < RR; ++r) {
    st[r] = states + (row0 + r) * T;
    ac[r] = actions + (row0 + r) * T;
    sig[r] = signal + (row0 + r) * T;
  }
  // Step t of row r: its flat (s, a) index (range-checked), w_t = gamma^t signal_t, u_t = grad l_t . v.
  auto step = [&](int r, int64_t t, int64_t& i, double& w, double& u) {
    int64_t s_t = static_cast<int64_t>(st[r][t]), a_t = static_cast<int64_t>(ac[r][t]);
    if (static_cast<uint64_t>(s_t) >= static_cast<uint64_t>(S) ||
        static_cast<uint64_t>(a_t) >= static_cast<uint64_t>(A)) {
      if (bad < 0 || (row0 + r) * T + t < bad) bad = (row0 + r) * T + t;
      s_t = a_t = 0;  // keep reading in bounds; the caller raises
    }
    i = s_t * A + a_t;
    w = discount[t] * sig[r][t];
    u = gu[i];
  };
  if (E == 2) {  // lvc: g_t = w_t, y_t = w_t u_t: one pass, nothing stored but the bins
    double sum[RR] = {};
    for (int64_t t = 0; t < T; ++t) {
      for (int r = 0; r < RR; ++r) {
        int64_t i;
        double w, u;
        step(r, t, i, w, u);
        double* bin = bin0 + r * bins + 2 * i;
        bin[0] += w;
        bin[1] += w * u;
        sum[r] += w;
      }
    }
    for (int r = 0; r < RR; ++r) val += sum[r];
    return;
  }
  // dice and loaded dice: pass 1 forward (U or F need the earlier steps) stores per step what pass 2 (reverse:
  // G or R need the later ones) adds into the bins.
  double F[RR] = {};
  const bool vector_pass = E == 0 && have_avx512();
  if (vector_pass) {
    for (int r = 0; r < RR; ++r) {
      dice_pass1_avx512(st[r], ac[r], sig[r], discount, gu, T, S, A, (row0 + r) * T, bad, q.sa + r * T,
                        q.q0 + 2 * r * T);
    }
  }
  for (int64_t t = 0; t < T && !vector_pass; ++t) {
    for (int r = 0; r < RR; ++r) {
      int64_t i;
      double w, u;
      step(r, t, i, w, u);
      const int64_t k = r * T + t;
      q.sa[k] = static_cast<int32_t>(i);
      if (E == 0) {  // U_t = sum_{k<=t} u_k; q0 holds (w_t, w_t U_t) pairs
        F[r] += u;
        q.q0[2 * k] = w;
        q.q0[2 * k + 1] = w * F[r];
      } else {  // F_t = lam F_{t-1} + u_t; q1 = w_t u_t, q2 = w_t (F_t - u_t)
        q.q0[k] = w;
        q.q1[k] = w * u;
        q.q2[k] = w * (lam * F[r]);
        F[r] = lam * F[r] + u;
      }
    }
  }
  if (E == 0) {  // (g_t, y_t) = (G_t, Y_t) = sum_{k>=t} (w_k, w_k U_k): one 2-wide add and bin update per step
    __m128d GY[RR];
    for (int r = 0; r < RR; ++r) GY[r] = _mm_setzero_pd();
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int r = 0; r < RR; ++r) {
        const int64_t k = r * T + t;
        double* bin = bin0 + r * bins + 2 * static_cast<int64_t>(q.sa[k]);
        GY[r] = _mm_add_pd(GY[r], _mm_loadu_pd(q.q0 + 2 * k));
        _mm_storeu_pd(bin, _mm_add_pd(_mm_loadu_pd(bin), GY[r]));
      }
    }
    for (int r = 0; r < RR; ++r) val += _mm_cvtsd_f64(GY[r]);  // G_0: the sum of w, the objective
    return;
  }
  double Rs[RR] = {};
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int r = 0; r < RR; ++r) {
      const int64_t k = r * T + t;
      double* bin = bin0 + r * bins + 2 * static_cast<int64_t>(q.sa[k]);
      {  // g_t = w_t, y_t = w_t (F_t - u_t) + R_t, R_t = w_t u_t + lam R_{t+1}
        Rs[r] = q.q1[k] + lam * Rs[r];
        bin[0] += q.q0[k];
        bin[1] += q.q2[k] + Rs[r];
      }
    }
  }
}

template <int E, typename I>
void all_rows(const I* states, const I* actions, const double* signal, const double* discount, const double* gu,
              int64_t b0, int64_t b1, int64_t T, int64_t S, int64_t A, double lam, int64_t bins,
              double* mine, double& val, int64_t& bad, const Scratch& q) {
  int64_t b = b0;
  for (; b + kCopies <= b1; b += kCopies) {
    rows<E, kCopies>(states, actions, signal, discount, gu, b, T, S, A, lam, bins, mine, val, bad, q);
  }
  for (; b < b1; ++b) rows<E, 1>(states, actions, signal, discount, gu, b, T, S, A, lam, bins, mine, val, bad, q);
}

template <typename I>
int64_t terms(int estimator, const double* theta, const double* v, const I* states, const I* actions,
              const double* signal, int64_t B, int64_t T, int64_t S, int64_t A, double gamma, double lam,
              double* grad, double* hvp, double* value, int num_threads) {
  // pi = softmax(theta) per state and pv[s] = <pi_s, v_s>.
  std::vector<double> pi(static_cast<size_t>(S * A)), pv(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    const double* th = theta + s * A;
    double m = th[0], z = 0, d = 0;
    for (int64_t a = 1; a < A; ++a) m = std::max(m, th[a]);
    for (int64_t a = 0; a < A; ++a) z += (pi[s * A + a] = std::exp(th[a] - m));
    for (int64_t a = 0; a < A; ++a) d += (pi[s * A + a] /= z) * v[s * A + a];
    pv[s] = d;
  }
  std::vector<double> gu(static_cast<size_t>(S * A));  // u at (s, a): grad l . v = v[s, a] - <pi_s, v_s>
  for (int64_t i = 0; i < S * A; ++i) gu[i] = v[i] - pv[i / A];
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, B)));
  const int64_t SA = S * A;
  // A bin holds the sums of g and y at one (s, a) side by side (one cache line per step); the per-state
  // sums are the bins' sums over a, formed at the end.
  const int64_t bins = 2 * SA;
  const int64_t width = (kCopies * bins + 1 + 15) / 8 * 8;  // per copy, then the value; whole cache lines apart
  std::vector<double> partial(static_cast<size_t>(nt) * width, 0.0);
  std::vector<int64_t> bad(nt, -1);  // per thread: first out-of-range step
  std::vector<double> discount(T);
  for (int64_t t = 0; t < T; ++t) discount[t] = t == 0 ? 1.0 : discount[t - 1] * gamma;

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    double* mine = partial.data() + static_cast<size_t>(tid) * width;
    std::vector<int32_t> sa(kCopies * T);
    std::vector<double> q0(2 * kCopies * T), q1(kCopies * T), q2(kCopies * T);  // q0: DiCE's pairs
    const Scratch q{sa.data(), q0.data(), q1.data(), q2.data()};
    const int64_t per = (B + nt - 1) / nt;
    const int64_t b0 = std::min(B, tid * per), b1 = std::min(B, b0 + per);
    double& val = mine[kCopies * bins];
    int64_t& bad_here = bad[tid];
    if (estimator == 0) {
      all_rows<0>(states, actions, signal, discount.data(), gu.data(), b0, b1, T, S, A, lam, bins, mine, val,
                  bad_here, q);
    } else if (estimator == 1) {
      all_rows<1>(states, actions, signal, discount.data(), gu.data(), b0, b1, T, S, A, lam, bins, mine, val,
                  bad_here, q);
    } else {
      all_rows<2>(states, actions, signal, discount.data(), gu.data(), b0, b1, T, S, A, lam, bins, mine, val,
                  bad_here, q);
    }
  }
  std::vector<double> at_g(static_cast<size_t>(SA), 0.0), at_y(static_cast<size_t>(SA), 0.0);
  double total = 0.0;
  for (int k = 0; k < nt; ++k) {  // threads and copies in a fixed order: deterministic
    const double* mine = partial.data() + static_cast<size_t>(k) * width;
    for (int64_t c = 0; c < kCopies; ++c) {
      const double* p = mine + c * bins;
      for (int64_t i = 0; i < SA; ++i) {
        at_g[i] += p[2 * i];
        at_y[i] += p[2 * i + 1];
      }
    }
    total += mine[kCopies * bins];
  }
  // sum_t c_t grad l_t = (sum of c at (s, a)) - pi_s (sum of c over the visits of s); the HVP adds
  // -sum_t g_t (grad^2 l_t) v = -st_g[s] pi_s (v_s - <pi_s, v_s>).
  const double inv = 1.0 / static_cast<double>(B);
  for (int64_t s = 0; s < S; ++s) {
    double st_g = 0, st_y = 0;
    for (int64_t a = 0; a < A; ++a) {
      st_g += at_g[s * A + a];
      st_y += at_y[s * A + a];
    }
    for (int64_t a = 0; a < A; ++a) {
      const int64_t i = s * A + a;
      grad[i] = (at_g[i] - st_g * pi[i]) * inv;
      hvp[i] = (at_y[i] - st_y * pi[i] - st_g * pi[i] * (v[i] - pv[s])) * inv;
    }
  }
  *value = total * inv;
  for (int64_t b : bad) {  // threads own increasing row ranges: the first flagged one is the first
    if (b >= 0) return b;
  }
  return -1;
}

}  // namespace

int64_t tabular_estimator_derivatives_cpu(int estimator, const double* theta, const double* v, const void* states,
                                          const void* actions, bool idx32, const double* signal, int64_t B,
                                          int64_t T, int64_t S, int64_t A, double gamma, double lam, double* grad,
                                          double* hvp, double* value, int num_threads) {
  if (idx32) {
    return terms(estimator, theta, v, static_cast<const int32_t*>(states), static_cast<const int32_t*>(actions),
                 signal, B, T, S, A, gamma, lam, grad, hvp, value, num_threads);
  }
  return terms(estimator, theta, v, static_cast<const int64_t*>(states), static_cast<const int64_t*>(actions),
               signal, B, T, S, A, gamma, lam, grad, hvp, value, num_threads);
}

}  // namespace metakern
