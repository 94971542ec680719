// CPU kernel of the exact tabular oracle's K-step MAML meta-gradient (see tabular_oracle.h).
// Tasks are packed 8 to a SIMD vector (structure of arrays): every arithmetic statement below acts
// on 8 tasks at once. Groups of 8 tasks are independent and split across OpenMP threads; a group's
// working set (P: S*A*S vectors, the LU factors and K evaluations) stays in L2.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "oracle/tabular_oracle.h"

namespace metakern {
namespace {

constexpr int kLanes = 8;
// Declared with 8-byte alignment (and may_alias): loads and stores are unaligned moves over plain
// double storage, so no buffer needs over-aligned allocation.
typedef double vd __attribute__((vector_size(kLanes * sizeof(double)), aligned(8), may_alias));

// n vectors of kLanes doubles, zero-initialised.
struct VBuf {
  std::vector<double> raw;
  explicit VBuf(size_t n = 0) : raw(n * kLanes, 0.0) {}
  void resize(size_t n) { raw.assign(n * kLanes, 0.0); }
  vd* data() { return reinterpret_cast<vd*>(raw.data()); }
  const vd* data() const { return reinterpret_cast<const vd*>(raw.data()); }
  vd& operator[](size_t i) { return data()[i]; }
  const vd& operator[](size_t i) const { return data()[i]; }
};

// Everything a group runs is force-inlined into the ISA-specific entry points below, so that it is
// compiled for AVX-512 / AVX2 there rather than for the baseline ISA.
#define MK_INLINE inline __attribute__((always_inline))

MK_INLINE vd splat(double x) { return vd{} + x; }

typedef long long vl __attribute__((vector_size(kLanes * sizeof(long long)), aligned(8), may_alias));

// e^x lane-wise for x <= 0 (softmax arguments), to about one ulp: x = n ln2 + r with |r| <= ln2/2
// (n rounded with the 1.5 * 2^52 trick, ln2 split in two for an exact reduction), e^r by its Taylor
// series to degree 13 (truncation error below 1e-17), and 2^n written into the exponent bits.
// Arguments below -708 return e^-708 ~ 3e-308 instead of a subnormal or 0 (invisible next to the
// softmax's largest term, which is 1).
MK_INLINE vd exp_nonpositive(vd x) {
  const vd low = splat(-708.0);
  x = x < low ? low : x;
  const vd n = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;
  const vd r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  constexpr double inv_fact[] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                 1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,      1.0 / 720.0,
                                 1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,         0.5,
                                 1.0,                1.0};
  vd p = splat(inv_fact[0]);
  for (int k = 1; k < 14; ++k) p = p * r + inv_fact[k];
  const vl bits = reinterpret_cast<const vl&>(static_cast<const vd&>(n + (4503599627370496.0 + 1023.0))) << 52;
  return p * reinterpret_cast<const vd&>(bits);
}

// Exact evaluation of one group's policies: what the reverse pass needs again.
struct Evaluation {
  VBuf pi, lu, V, Q, adv, d;  // [S*A], [S*S], [S], [S*A], [S*A], [S]
  vd J;
};

struct Group {
  int64_t S, A;
  double gamma;
  VBuf P, R, init;  // [S*A*S], [S*A], [S]

  MK_INLINE void resize(Evaluation& e) const {
    e.pi.resize(S * A);
    e.lu.resize(S * S);
    e.V.resize(S);
    e.Q.resize(S * A);
    e.adv.resize(S * A);
    e.d.resize(S);
  }

  // The routines below take raw pointers first: the vector type may alias anything, so indexing the
  // VBufs directly would make the compiler reload their data pointers after every store.

  // sum_{j in [j0, j1)} row[j * stride] x[j], with four partial sums (loads only, short chains).
  MK_INLINE vd dot(const vd* row, int64_t stride, const vd* x, int64_t j0, int64_t j1) const {
    vd a0 = splat(0.0), a1 = splat(0.0), a2 = splat(0.0), a3 = splat(0.0);
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
      a0 += row[j * stride] * x[j];
      a1 += row[(j + 1) * stride] * x[j + 1];
      a2 += row[(j + 2) * stride] * x[j + 2];
      a3 += row[(j + 3) * stride] * x[j + 3];
    }
    for (; j < j1; ++j) a0 += row[j * stride] * x[j];
    return (a0 + a1) + (a2 + a3);
  }

  // x = M b, with M = (LU)^{-1} (L unit lower, U upper, stored together in lu).
  MK_INLINE void solve(const vd* lu, const vd* b, vd* x) const {
    for (int64_t i = 0; i < S; ++i) x[i] = b[i] - dot(lu + i * S, 1, x, 0, i);
    for (int64_t i = S - 1; i >= 0; --i) x[i] = (x[i] - dot(lu + i * S, 1, x, i + 1, S)) / lu[i * S + i];
  }

  // x = M^T b: (LU)^T = U^T L^T, so solve with U^T (lower, non-unit) then L^T (upper, unit).
  MK_INLINE void solve_transposed(const vd* lu, const vd* b, vd* x) const {
    for (int64_t i = 0; i < S; ++i) x[i] = (b[i] - dot(lu + i, S, x, 0, i)) / lu[i * S + i];
    for (int64_t i = S - 1; i >= 0; --i) x[i] = x[i] - dot(lu + i, S, x, i + 1, S);
  }

  // out[s*A + a] = sum_t P[s, a, t] x[t] for all (s, a): contiguous rows of P, four partial sums
  // per row so that the multiply-add chains are short.
  MK_INLINE void apply_P(const vd* x, vd* out) const {
    const vd* Pd = P.data();
    const int64_t SA = S * A;
    for (int64_t i = 0; i < SA; ++i) {
      const vd* Pr = Pd + i * S;
      vd a0 = splat(0.0), a1 = splat(0.0), a2 = splat(0.0), a3 = splat(0.0);
      int64_t t = 0;
      for (; t + 4 <= S; t += 4) {
        a0 += Pr[t] * x[t];
        a1 += Pr[t + 1] * x[t + 1];
        a2 += Pr[t + 2] * x[t + 2];
        a3 += Pr[t + 3] * x[t + 3];
      }
      for (; t < S; ++t) a0 += Pr[t] * x[t];
      out[i] = (a0 + a1) + (a2 + a3);
    }
  }

  // out[t] = scale * sum_a w[a] P_rows[a, t] over the A rows of one state, four columns at a time in
  // registers so that each output is stored once.
  MK_INLINE void combine_rows(const vd* w, const vd* P_rows, double scale, vd* out) const {
    int64_t t = 0;
    for (; t + 4 <= S; t += 4) {
      vd a0 = splat(0.0), a1 = splat(0.0), a2 = splat(0.0), a3 = splat(0.0);
      for (int64_t i = 0; i < A; ++i) {
        const vd wi = w[i];
        const vd* Pr = P_rows + i * S + t;
        a0 += wi * Pr[0];
        a1 += wi * Pr[1];
        a2 += wi * Pr[2];
        a3 += wi * Pr[3];
      }
      out[t] = scale * a0;
      out[t + 1] = scale * a1;
      out[t + 2] = scale * a2;
      out[t + 3] = scale * a3;
    }
    for (; t < S; ++t) {
      vd acc = splat(0.0);
      for (int64_t i = 0; i < A; ++i) acc += w[i] * P_rows[i * S + t];
      out[t] = scale * acc;
    }
  }

  MK_INLINE void evaluate(const vd* theta, Evaluation& e, vd* r_pi) const {
    const vd* Pd = P.data();
    const vd* Rd = R.data();
    const vd* init_d = init.data();
    vd* pi = e.pi.data();
    vd* lu = e.lu.data();
    vd* V = e.V.data();
    vd* Q = e.Q.data();
    vd* adv = e.adv.data();
    for (int64_t s = 0; s < S; ++s) {  // softmax over actions
      vd m = theta[s * A];
      for (int64_t a = 1; a < A; ++a) m = theta[s * A + a] > m ? theta[s * A + a] : m;
      vd total = splat(0.0);
      for (int64_t a = 0; a < A; ++a) {
        const vd z = exp_nonpositive(theta[s * A + a] - m);
        pi[s * A + a] = z;
        total += z;
      }
      const vd inv = 1.0 / total;
      for (int64_t a = 0; a < A; ++a) pi[s * A + a] *= inv;
    }
    for (int64_t s = 0; s < S; ++s) {  // I - gamma P_pi and r_pi
      const vd* ps = pi + s * A;
      const vd* Ps = Pd + s * A * S;
      combine_rows(ps, Ps, -gamma, lu + s * S);
      lu[s * S + s] += 1.0;
      vd r = splat(0.0);
      for (int64_t a = 0; a < A; ++a) r += ps[a] * Rd[s * A + a];
      r_pi[s] = r;
    }
    // LU without pivoting (diagonally dominant), row by row: every entry is computed once from a
    // dot product of the finished rows above it (loads only, no read-modify-write per step).
    for (int64_t i = 0; i < S; ++i) {
      vd* row = lu + i * S;
      for (int64_t j = 0; j < i; ++j) row[j] = (row[j] - dot(lu + j, S, row, 0, j)) / lu[j * S + j];
      for (int64_t j = i; j < S; ++j) row[j] -= dot(lu + j, S, row, 0, i);
    }
    solve(lu, r_pi, V);
    solve_transposed(lu, init_d, e.d.data());
    apply_P(V, Q);
    vd J = splat(0.0);
    for (int64_t s = 0; s < S; ++s) {
      J += init_d[s] * V[s];
      for (int64_t a = 0; a < A; ++a) {
        const vd q = Rd[s * A + a] + gamma * Q[s * A + a];
        Q[s * A + a] = q;
        adv[s * A + a] = q - V[s];
      }
    }
    e.J = J;
  }

  MK_INLINE void gradient(const Evaluation& e, vd* g) const {
    const vd* pi = e.pi.data();
    const vd* adv = e.adv.data();
    const vd* d = e.d.data();
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t a = 0; a < A; ++a) g[s * A + a] = d[s] * pi[s * A + a] * adv[s * A + a];
    }
  }

  // out = H v at the evaluated policy; work needs 4*S + 2*S*A vectors.
  MK_INLINE void hvp(const Evaluation& e, const vd* v, vd* out, vd* work) const {
    const vd* Pd = P.data();
    const vd* pi = e.pi.data();
    const vd* Q = e.Q.data();
    const vd* adv = e.adv.data();
    const vd* d = e.d.data();
    const vd* lu = e.lu.data();
    vd* dpi = work;
    vd* pdv = dpi + S * A;
    vd* u = pdv + S * A;
    vd* dV = u + S;
    vd* rhs = dV + S;
    vd* dd = rhs + S;
    for (int64_t s = 0; s < S; ++s) {
      vd mean = splat(0.0);
      for (int64_t a = 0; a < A; ++a) mean += pi[s * A + a] * v[s * A + a];
      vd us = splat(0.0);
      for (int64_t a = 0; a < A; ++a) {
        const vd x = pi[s * A + a] * (v[s * A + a] - mean);
        dpi[s * A + a] = x;
        us += x * Q[s * A + a];
      }
      u[s] = us;
    }
    solve(lu, u, dV);
    // One pass over P for both products: pdv = P dV and rhs = gamma (dP_pi)^T d, i.e. the sum over
    // (s, a) of gamma d[s] dpi[s, a] P[s, a, :] (P streams from L2; dV and rhs stay in L1).
    for (int64_t t = 0; t < S; ++t) rhs[t] = splat(0.0);
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t a = 0; a < A; ++a) {
        const int64_t i = s * A + a;
        const vd* Pr = Pd + i * S;
        const vd w = gamma * d[s] * dpi[i];
        vd acc0 = splat(0.0), acc1 = splat(0.0);
        int64_t t = 0;
        for (; t + 2 <= S; t += 2) {
          const vd p0 = Pr[t], p1 = Pr[t + 1];
          acc0 += p0 * dV[t];
          acc1 += p1 * dV[t + 1];
          rhs[t] += w * p0;
          rhs[t + 1] += w * p1;
        }
        for (; t < S; ++t) {
          acc0 += Pr[t] * dV[t];
          rhs[t] += w * Pr[t];
        }
        pdv[i] = acc0 + acc1;
      }
    }
    solve_transposed(lu, rhs, dd);
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t a = 0; a < A; ++a) {
        const int64_t i = s * A + a;
        const vd dA = gamma * pdv[i] - dV[s];
        out[i] = dd[s] * pi[i] * adv[i] + d[s] * (dpi[i] * adv[i] + pi[i] * dA);
      }
    }
  }
};

// Lane l of a group holds task min(first + l, B - 1): the tail group repeats the last task and
// its extra lanes are not written back.
template <typename F>
MK_INLINE void for_lanes(int64_t first, int64_t B, F&& f) {
  for (int l = 0; l < kLanes; ++l) f(l, std::min(first + l, B - 1));
}

// dst[i][l] = task (first + l)'s src[i], i < n: 8x8 blocks transposed in registers (three rounds of
// shuffles), the remainder lane by lane.
MK_INLINE void gather(vd* dst, const double* src, int64_t first, int64_t B, int64_t n) {
  const double* rows[kLanes];
  for_lanes(first, B, [&](int l, int64_t b) { rows[l] = src + b * n; });
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    vd r[kLanes];
    for (int l = 0; l < kLanes; ++l) std::memcpy(&r[l], rows[l] + i, sizeof(vd));
    vd t[kLanes], u[kLanes];
    for (int k = 0; k < kLanes; k += 2) {
      t[k] = __builtin_shufflevector(r[k], r[k + 1], 0, 8, 2, 10, 4, 12, 6, 14);
      t[k + 1] = __builtin_shufflevector(r[k], r[k + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    }
    for (int k = 0; k < kLanes; k += 4) {
      u[k] = __builtin_shufflevector(t[k], t[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[k + 2] = __builtin_shufflevector(t[k], t[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
      u[k + 1] = __builtin_shufflevector(t[k + 1], t[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
      u[k + 3] = __builtin_shufflevector(t[k + 1], t[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int k = 0; k < 4; ++k) {  // column k and column k + 4
      dst[i + k] = __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
      dst[i + k + 4] = __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
  }
  for (; i < n; ++i) {
    for (int l = 0; l < kLanes; ++l) dst[i][l] = rows[l][i];
  }
}

MK_INLINE void scatter(double* dst, const vd* src, int64_t first, int64_t B, int64_t n) {
  for (int l = 0; l < kLanes && first + l < B; ++l) {
    double* p = dst + (first + l) * n;
    for (int64_t i = 0; i < n; ++i) p[i] = src[i][l];
  }
}

// Buffers of one thread, sized once for (S, A, K) and reused for every group it runs.
struct Workspace {
  Group g;
  VBuf theta, v, hv, work, r_pi;
  std::vector<Evaluation> evals;

  Workspace(int64_t S, int64_t A, int64_t K, double gamma)
      : g{S, A, gamma, VBuf(S * A * S), VBuf(S * A), VBuf(S)},
        theta((K + 1) * S * A),
        v(S * A),
        hv(S * A),
        work(4 * S + 2 * S * A),
        r_pi(S),
        evals(K + 1) {
    for (auto& e : evals) g.resize(e);
  }
};

MK_INLINE void run_group(Workspace& ws, const double* P, const double* R, const double* init, const double* theta0,
                         int64_t B, double alpha, int64_t K, double* meta_grad, double* objective, double* thetas,
                         int64_t first) {
  Group& g = ws.g;
  const int64_t S = g.S, SA = g.S * g.A;
  gather(g.P.data(), P, first, B, SA * S);
  gather(g.R.data(), R, first, B, SA);
  gather(g.init.data(), init, first, B, S);
  vd* theta = ws.theta.data();
  vd* v = ws.v.data();
  gather(theta, theta0, first, B, SA);
  for (int64_t k = 0; k < K; ++k) {  // inner steps with exact gradients
    g.evaluate(theta + k * SA, ws.evals[k], ws.r_pi.data());
    g.gradient(ws.evals[k], v);
    for (int64_t i = 0; i < SA; ++i) theta[(k + 1) * SA + i] = theta[k * SA + i] + alpha * v[i];
  }
  g.evaluate(theta + K * SA, ws.evals[K], ws.r_pi.data());
  g.gradient(ws.evals[K], v);
  vd* hv = ws.hv.data();
  for (int64_t k = K - 1; k >= 0; --k) {  // reverse pass of exact HVPs
    g.hvp(ws.evals[k], v, hv, ws.work.data());
    for (int64_t i = 0; i < SA; ++i) v[i] += alpha * hv[i];
  }
  scatter(meta_grad, v, first, B, SA);
  scatter(objective, &ws.evals[K].J, first, B, 1);
  for (int64_t k = 0; k <= K; ++k) scatter(thetas + k * B * SA, theta + k * SA, first, B, SA);
}

#define METAKERN_ORACLE_KERNEL(NAME, ISA)                                                                  \
  __attribute__((target(ISA))) void NAME(Workspace& ws, const double* P, const double* R, const double* init, \
                                         const double* theta0, int64_t B, double alpha, int64_t K,            \
                                         double* meta_grad, double* objective, double* thetas, int64_t first) { \
    run_group(ws, P, R, init, theta0, B, alpha, K, meta_grad, objective, thetas, first);                      \
  }
METAKERN_ORACLE_KERNEL(group_avx512, "avx512f,fma")
METAKERN_ORACLE_KERNEL(group_avx2, "avx2,fma")
METAKERN_ORACLE_KERNEL(group_sse2, "sse2")
#undef METAKERN_ORACLE_KERNEL

using GroupFn = void (*)(Workspace&, const double*, const double*, const double*, const double*, int64_t, double,
                         int64_t, double*, double*, double*, int64_t);

GroupFn pick_group_kernel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return group_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return group_avx2;
  return group_sse2;
}

}  // namespace

void oracle_maml_meta_gradient_cpu(const double* P, const double* R, const double* init,
                                   const double* theta0, int64_t B, int64_t S, int64_t A,
                                   double gamma, double alpha, int64_t K, double* meta_grad,
                                   double* objective, double* thetas, int num_threads) {
  static const GroupFn group = pick_group_kernel();
  const int64_t groups = (B + kLanes - 1) / kLanes;
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, groups)));
#pragma omp parallel num_threads(nt)
  {
    Workspace ws(S, A, K, gamma);
#pragma omp for schedule(static)
    for (int64_t gi = 0; gi < groups; ++gi) {
      group(ws, P, R, init, theta0, B, alpha, K, meta_grad, objective, thetas, gi * kLanes);
    }
  }
}

}  // namespace metakern
