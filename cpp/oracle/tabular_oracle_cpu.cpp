// CPU kernel of the exact tabular oracle's K-step MAML meta-gradient (see tabular_oracle.h).
// Tasks are packed 8 to a SIMD vector (structure of arrays): every arithmetic statement below acts
// on 8 tasks at once. Groups of 8 tasks are independent and split across OpenMP threads (static
// ranges with stealing, common/work_claims.h); every lane is computed by the same instructions
// whatever the thread count or the thread that runs it, so results are bit-for-bit reproducible.
//   * Fixed sizes (S, A known at compile time; AVX-512): the fast path, below "Fixed sizes".
//   * Any other size or ISA: the generic kernel (runtime S and A; AVX-512, AVX2 or SSE2).
#include <omp.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "oracle/tabular_oracle.h"

#include "common/cpu_features.h"
#include "common/simd_transpose.h"
#include "common/work_claims.h"

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

// Lane l of a group holds task min(first + l, B - 1): the tail group repeats the last task and
// its extra lanes are not written back.
template <typename F>
MK_INLINE void for_lanes(int64_t first, int64_t B, F&& f) {
  for (int l = 0; l < kLanes; ++l) f(l, std::min(first + l, B - 1));
}

// dst[i][l] = task (first + l)'s src[i], i < n: 8x8 blocks transposed in registers, the remainder
// lane by lane.
MK_INLINE void gather(vd* dst, const double* src, int64_t first, int64_t B, int64_t n) {
  const double* rows[kLanes];
  for_lanes(first, B, [&](int l, int64_t b) { rows[l] = src + b * n; });
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    vd r[kLanes], c[kLanes];
    for (int l = 0; l < kLanes; ++l) std::memcpy(&r[l], rows[l] + i, sizeof(vd));
    transpose8(r, c);
    for (int k = 0; k < kLanes; ++k) dst[i + k] = c[k];
  }
  for (; i < n; ++i) {
    for (int l = 0; l < kLanes; ++l) dst[i][l] = rows[l][i];
  }
}

// The inverse of gather, for the lanes that hold tasks (first + l < B).
MK_INLINE void scatter(double* dst, const vd* src, int64_t first, int64_t B, int64_t n) {
  const int lanes = static_cast<int>(std::min<int64_t>(kLanes, B - first));
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    vd c[kLanes], r[kLanes];
    for (int k = 0; k < kLanes; ++k) c[k] = src[i + k];
    transpose8(c, r);
    for (int l = 0; l < lanes; ++l) std::memcpy(dst + (first + l) * n + i, &r[l], sizeof(vd));
  }
  for (; i < n; ++i) {
    for (int l = 0; l < lanes; ++l) dst[(first + l) * n + i] = src[i][l];
  }
}

// ---- Generic sizes ---------------------------------------------------------------------------------
// A group's working set (P: S*A*S vectors, the LU factors and K + 1 evaluations) stays in L2.

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
  if (thetas) {
    for (int64_t k = 0; k <= K; ++k) scatter(thetas + k * B * SA, theta + k * SA, first, B, SA);
  }
}


// ---- Fixed sizes, AVX-512 -------------------------------------------------------------------------
// The same algorithm with S and A known at compile time, so that the loops over states and actions
// unroll and what a step needs at once (a row of the LU factors, a solve's unknowns, the accumulators
// of a pass over P) lives in registers; compiled for AVX-512 only (the entry point checks the CPU).
// A group's P (S*A*S vectors, 125 KiB at S=20, A=5) does not fit in L1, so the passes over it are
// what the work is organised around: per group, one gather, one pass per evaluation and one per HVP.
//   evaluation k (state by state): Q_k(s, :) = R + gamma P(s) V_k, the step to theta_{k+1}(s, :),
//     pi_{k+1}(s, :), row s of I - gamma P_pi_{k+1} (P(s) is still in L1) and its elimination by the
//     finished rows above it, in registers, so that each row of the LU factors is stored once; the
//     next state's Q (which does not depend on this state) is computed alongside the row;
//   HVP k: P dV and gamma (dP_pi)^T d in one pass.
// Work per task (S=20, A=5, K=3): 44k multiply-adds (forming P_pi, Q and the two HVP products are
// S^2 A each per step, an LU about S^3/3, a solve S^2) and 400 exponentials. The next group's inputs and this group's
// meta-gradient are prefetched into L2 while the group computes; the thetas are written with
// streaming stores. Measured on a 2-core Zen 4 (one thread, rdtsc per phase): 24.5 us per group
// with all data in cache (27 us at B=1024), of which the evaluation passes take ~45%, the HVP passes
// ~17%, the gather and scatter ~12%, step 0's factorisation ~10% and the 14 triangular solves ~10%.
// That is about 2 core cycles per multiply-add against the core's one 512-bit multiply-add per cycle
// (3.6 G/s in a register-only loop): nearly every multiply-add also loads P or a factor, and the
// elimination and solve chains are serial. The Crout form (unit U) made the whole kernel 2-3%
// faster than a unit-L LU; gathering P two states at a time inside step 0's factorisation gained
// nothing measurable. Groups are shared by static ranges with stealing (work_claims.h): on a quiet
// machine as fast as schedule(static), and on this shared VM faster (B=1024: median 2.27 vs 2.37 ms
// over 6 alternating process pairs; 2.85-3.06 vs 3.91-6.19 ms with a process busy half of the time
// on one of the two cores). At B=1024 a group takes about 10% longer than when its inputs sit in
// L2 (sources cycled over two groups), and the prefetch of the next group wins back only a few %.
// Tried against that, none kept: gathering the next group's P tile by tile inside this group's
// passes, into a second buffer (8-12% slower: the transposes do not fit in the passes' idle slots);
// prefetching two groups ahead, or with other locality hints; 2 MiB pages for the workspace (all
// within the noise).
// What the phases cost, from removing one at a time (one thread, the two builds timed in
// alternating rounds, 2026-11-22; the results are then wrong, only the times matter): the P gather
// 11% at B=1024; the 3 HVP passes 16%, and dropping one of their two products (6k multiply-adds)
// changes nothing, so they are bound by moving P from L2 (~2.5 cycles per 64-byte line, where a
// plain stream of 125 KiB takes ~2), not by arithmetic; all 4 LU eliminations (10k multiply-adds)
// ~10%; the 400 exponentials ~6%. Tried then, none kept: the V and d solves of an evaluation
// interleaved in one function (10% slower: 40 unknowns spill); step 0 prefetching the next state's
// slab of P into L1, all at once or spread over the row's loop (1-4% slower); every other HVP pass
// running over the states backwards, to start on the slabs the last pass left in L1, or prefetching
// the next slab into L1 (no change); the gather's last transpose round done by 256-bit loads and
// inserts (16 shuffles per 8x8 block instead of 24: 1% faster with P in cache, 5% slower at
// B=1024); -mtune=znver4 (no change). 8 passes over P (one per evaluation, one per HVP, one for
// step 0's factors) are the fewest this order of work allows.
// Where the rest goes (one thread, B=1024, rdtsc per phase, 2026-11-22): with P's slabs made
// L1-resident (results wrong, timing only) the forward passes get 2% faster and the HVP passes 8%,
// so streaming P is not what bounds the forward passes: a state that forms a row issues about 440
// operations to the multiply-add pipes (200 on P, ~124 eliminating, ~55 in 5 exponentials) in ~450
// TSC ticks (~620 core cycles). The reverse pass's solves take ~1.5x an evaluation's (640 against
// 420 ticks): their factors (400 lines) come back from L2, where the evaluation's were just written.
// Tried then, none kept: 4 tasks per vector (256-bit, AVX-512VL: half the working set, so the L1
// holds a row's slabs and the factors; 1.5-2.3% slower per task, the serial chains are as long);
// prefetching the slab after next into L1 in the forward passes (10% slower at either width); the
// next state's softmax moved between a row's formation and its elimination, or step 0's softmaxes
// all computed first (2-5% slower); row-oriented triangular solves (no change); gathering P two
// states at a time inside step 0's factorisation, again (5-8% slower); the gather's transpose by
// unpacks and immediate 128-bit lane shuffles, without index vectors (no change).
#pragma GCC push_options
#pragma GCC target("avx512f,fma,prfchw")

typedef double v8 __attribute__((vector_size(kLanes * sizeof(double))));  // 64-byte aligned
typedef long long v8l __attribute__((vector_size(kLanes * sizeof(long long))));

MK_INLINE v8 splat8(double x) { return v8{} + x; }

// e^x lane-wise for x <= 0: x = (16 m + j) ln2/16 + r with |r| <= ln2/32 (ln2 split in two for an
// exact reduction), e^r by its Taylor series to degree 7 (truncation error below 2e-18),
// 2^(j/16) from a 16-entry table held in two registers (one two-source permute), and 2^m added into
// the exponent bits. Arguments below -708 return about e^-708, as exp_nonpositive does.
MK_INLINE v8 exp_nonpositive_table(v8 x) {
  const v8 low = splat8(-708.0);
  x = x < low ? low : x;
  const v8 shifted = x * 23.083120654223414 + 6755399441055744.0;  // x 16/ln2, rounded to an integer
  const v8 k = shifted - 6755399441055744.0;
  const v8 r = (x - k * (6.93147180369123816490e-01 / 16)) - k * (1.90821492927058770002e-10 / 16);
  constexpr double inv_fact[] = {1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
  v8 p = splat8(inv_fact[0]);
  for (int i = 1; i < 8; ++i) p = p * r + inv_fact[i];
  const __m512d lo = _mm512_set_pd(0x1.5ab07dd485429p+0, 0x1.4bfdad5362a27p+0, 0x1.3dea64c123422p+0,
                                   0x1.306fe0a31b715p+0, 0x1.2387a6e756238p+0, 0x1.172b83c7d517bp+0,
                                   0x1.0b5586cf9890fp+0, 0x1.0000000000000p+0);
  const __m512d hi = _mm512_set_pd(0x1.ea4afa2a490dap+0, 0x1.d5818dcfba487p+0, 0x1.c199bdd85529cp+0,
                                   0x1.ae89f995ad3adp+0, 0x1.9c49182a3f090p+0, 0x1.8ace5422aa0dbp+0,
                                   0x1.7a11473eb0187p+0, 0x1.6a09e667f3bcdp+0);
  const v8l bits = reinterpret_cast<v8l>(shifted);  // k in the low bits: j = k mod 16
  const v8l table = reinterpret_cast<v8l>(_mm512_permutex2var_pd(lo, reinterpret_cast<__m512i>(bits), hi));
  const v8l scale = table + ((bits << 48) & static_cast<long long>(0xFFF0000000000000ull));  // (k >> 4) << 52
  return p * reinterpret_cast<v8>(scale);
}

// Hides where p points, so that loads through the result are not merged with earlier loads through
// p (which would keep a whole slab of P live, in spilled registers, between two uses).
template <typename T>
MK_INLINE T* launder(T* p) {
  asm("" : "+r"(p));
  return p;
}

// Software prefetch of a few address ranges (into L2; with write intent for outputs), a fixed number
// of cache lines per call.
struct Prefetcher {
  static constexpr int kMaxRanges = 16;
  const char* begin[kMaxRanges];
  const char* end[kMaxRanges];
  bool write[kMaxRanges];
  int n = 0, cur = 0;
  const char* p = nullptr;
  int64_t lines = 0;

  void add(const void* b, int64_t bytes, bool for_write) {
    if (bytes <= 0 || n == kMaxRanges) return;
    begin[n] = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(b) & ~uintptr_t{63});
    end[n] = static_cast<const char*>(b) + bytes;
    write[n] = for_write;
    lines += (end[n] - begin[n] + 63) / 64;
    if (n++ == 0) p = begin[0];
  }
  MK_INLINE void step(int64_t count) {
    for (; count > 0 && cur < n; --count) {
      if (write[cur]) {
        __builtin_prefetch(p, 1, 2);
      } else {
        __builtin_prefetch(p, 0, 2);
      }
      p += 64;
      if (p >= end[cur] && ++cur < n) p = begin[cur];
    }
  }
};

template <int S, int A>
struct Fixed {
  static constexpr int SA = S * A;

  // What the reverse pass needs of step k's evaluation.
  struct Step {
    // Crout factors of I - gamma P_pi = L U, row-major: L lower (with the diagonal), U unit upper
    // (strictly upper part stored). Without the unit diagonal on L's side, eliminating a row needs
    // no multiplier l = a / u_kk: each step of its serial chain is one multiply-add.
    v8 lu[S * S];
    v8 rinv[S];  // 1 / L[i][i]
    v8 pi[SA];
    v8 adv[SA];
    v8 d[S];
  };
  struct Work {
    v8 P[SA * S];
    v8 R[SA];
    v8 init[S];
    v8 r_pi[S];
    v8 V[S];
    v8 v[SA];
    v8 hv[SA];
    v8 dpi[SA];
    v8 u[S];
    v8 dV[S];
    v8 rhs[S];
  };

  // pi = softmax(theta) over one state's A actions.
  static MK_INLINE void softmax(const v8* theta, v8* pi) {
    v8 m = theta[0];
    for (int a = 1; a < A; ++a) m = theta[a] > m ? theta[a] : m;
    v8 z[A], total = splat8(0.0);
    for (int a = 0; a < A; ++a) {
      z[a] = exp_nonpositive_table(theta[a] - m);
      total += z[a];
    }
    const v8 inv = 1.0 / total;
    for (int a = 0; a < A; ++a) pi[a] = z[a] * inv;
  }

  // q[a] = P(s, a, :) . V for one state's slab Ps.
  static MK_INLINE void q_part(const v8* __restrict Ps, const v8* __restrict V, v8* __restrict q) {
    v8 acc[A];
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) acc[a] = splat8(0.0);
#pragma GCC unroll 64
    for (int t = 0; t < S; ++t) {
      const v8 vt = V[t];
#pragma GCC unroll 16
      for (int a = 0; a < A; ++a) acc[a] += Ps[a * S + t] * vt;
    }
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) q[a] = acc[a];
  }

  // Row s of I - gamma P_pi (and r_pi[s]) from pi(s, :), eliminated in registers by the finished
  // rows k < s of the Crout factors, then stored once (L's part as is, U's scaled by 1 / L[s][s]).
  // With kQ, the next state's q_part (slab Pq) is computed alongside the row, so that streaming that
  // slab from L2 overlaps this state's work.
  template <bool kQ>
  static MK_INLINE void form_and_eliminate(int s, const v8* __restrict pi, const v8* Ps, const v8* __restrict Rs,
                                           double gamma, v8* __restrict lu, v8* __restrict rinv,
                                           v8* __restrict r_pi, const v8* __restrict Pq, const v8* __restrict V,
                                           v8* __restrict q) {
    v8 w[A];
    v8 r = splat8(0.0);
    for (int a = 0; a < A; ++a) {
      w[a] = -gamma * pi[a];
      r += pi[a] * Rs[a];
    }
    r_pi[s] = r;
    Ps = launder(Ps);
    v8 row[S], acc[A];
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) acc[a] = splat8(0.0);
#pragma GCC unroll 64
    for (int t = 0; t < S; ++t) {
      v8 x = w[0] * Ps[t];
#pragma GCC unroll 16
      for (int a = 1; a < A; ++a) x += w[a] * Ps[a * S + t];
      row[t] = x;
      if (kQ) {
        const v8 vt = V[t];
#pragma GCC unroll 16
        for (int a = 0; a < A; ++a) acc[a] += Pq[a * S + t] * vt;
      }
    }
    if (kQ) {
#pragma GCC unroll 16
      for (int a = 0; a < A; ++a) q[a] = acc[a];
    }
    // The identity's 1 is added to L[s][s] after the elimination: the columns left of s do not
    // depend on it.
#pragma GCC unroll 64
    for (int k = 0; k < S; ++k) {
      if (k >= s) break;
      const v8 l = row[k];
#pragma GCC unroll 64
      for (int j = k + 1; j < S; ++j) row[j] -= l * lu[k * S + j];
    }
    v8* out = lu + s * S;
    const v8 diag = row[s] + 1.0;
    const v8 inv = 1.0 / diag;
#pragma GCC unroll 64
    for (int t = 0; t < S; ++t) {
      if (t < s) out[t] = row[t];
      else if (t == s) out[t] = diag;
      else out[t] = row[t] * inv;
    }
    rinv[s] = inv;
  }

  // x = M b = U^{-1} L^{-1} b, by columns, the unknowns in registers.
  // (The solves are called from two places each and are not inlined: less code, as fast.)
  static __attribute__((noinline)) void solve(const v8* __restrict lu, const v8* __restrict rinv,
                                              const v8* __restrict b, v8* __restrict x_out) {
    v8 x[S];
#pragma GCC unroll 64
    for (int i = 0; i < S; ++i) x[i] = b[i];
#pragma GCC unroll 64
    for (int k = 0; k < S; ++k) {
      x[k] *= rinv[k];
#pragma GCC unroll 64
      for (int i = k + 1; i < S; ++i) x[i] -= lu[i * S + k] * x[k];
    }
#pragma GCC unroll 64
    for (int k = S - 1; k >= 0; --k) {
#pragma GCC unroll 64
      for (int i = 0; i < k; ++i) x[i] -= lu[i * S + k] * x[k];
    }
#pragma GCC unroll 64
    for (int i = 0; i < S; ++i) x_out[i] = x[i];
  }

  // y = M^T c = L^{-T} U^{-T} c.
  static __attribute__((noinline)) void solve_transposed(const v8* __restrict lu, const v8* __restrict rinv,
                                                         const v8* __restrict c, v8* __restrict y_out) {
    v8 y[S];
#pragma GCC unroll 64
    for (int i = 0; i < S; ++i) y[i] = c[i];
#pragma GCC unroll 64
    for (int k = 0; k < S; ++k) {
#pragma GCC unroll 64
      for (int i = k + 1; i < S; ++i) y[i] -= lu[k * S + i] * y[k];
    }
#pragma GCC unroll 64
    for (int k = S - 1; k >= 0; --k) {
      y[k] *= rinv[k];
#pragma GCC unroll 64
      for (int i = 0; i < k; ++i) y[i] -= lu[k * S + i] * y[k];
    }
#pragma GCC unroll 64
    for (int i = 0; i < S; ++i) y_out[i] = y[i];
  }

  // dpi(s, :) = pi (v - <pi, v>) and u[s] = <dpi, adv> (= <dpi, Q>, as dpi sums to 0) for one state.
  static MK_INLINE void hvp_direction(int s, const Step& st, const v8* __restrict v, v8* __restrict dpi,
                                      v8* __restrict u) {
    const v8* pi = st.pi + s * A;
    v8 mean = splat8(0.0);
    for (int a = 0; a < A; ++a) mean += pi[a] * v[s * A + a];
    v8 us = splat8(0.0);
    for (int a = 0; a < A; ++a) {
      const v8 x = pi[a] * (v[s * A + a] - mean);
      dpi[s * A + a] = x;
      us += x * st.adv[s * A + a];
    }
    u[s] = us;
  }

  // State by state: Q_k(s, :), the gradient step to theta_{k+1}(s, :) and, when nx is given,
  // pi_{k+1}(s, :) and row s of step k + 1's LU factors (else grad J(theta_k) into w.v).
  static MK_INLINE void forward_pass(Work& w, Step& st, Step* nx, const v8* __restrict th, v8* __restrict th_next,
                                     double gamma, double alpha, Prefetcher& pf, int64_t pf_step) {
    const v8* __restrict Pw = w.P;
    const v8* __restrict Rw = w.R;
    const v8* __restrict V = w.V;
    v8 q[A];
    q_part(Pw, V, q);
#pragma GCC unroll 1
    for (int s = 0; s < S; ++s) {
      pf.step(pf_step);
      const v8* __restrict Ps = Pw + s * SA;
      const v8 Vs = V[s];
      const v8 ds = st.d[s];
      for (int a = 0; a < A; ++a) {
        const v8 adv = (Rw[s * A + a] + gamma * q[a]) - Vs;
        st.adv[s * A + a] = adv;
        const v8 g = ds * st.pi[s * A + a] * adv;
        if (nx) {
          th_next[s * A + a] = th[s * A + a] + alpha * g;
        } else {
          w.v[s * A + a] = g;
        }
      }
      if (nx) {
        softmax(th_next + s * A, nx->pi + s * A);
        if (s + 1 < S) {
          form_and_eliminate<true>(s, nx->pi + s * A, Ps, Rw + s * A, gamma, nx->lu, nx->rinv, w.r_pi, Ps + SA, V,
                                   q);
        } else {
          form_and_eliminate<false>(s, nx->pi + s * A, Ps, Rw + s * A, gamma, nx->lu, nx->rinv, w.r_pi, nullptr,
                                    nullptr, nullptr);
        }
      } else if (s + 1 < S) {
        q_part(Ps + SA, V, q);
      }
    }
  }

  // One pass over P for the HVP at step st: pdv = P dV and rhs = gamma (dP_pi)^T d, the sum over
  // (s, a) of gamma d[s] dpi[s, a] P[s, a, :]; then the terms of H v that do not need dd = M^T rhs,
  // into w.hv.
  static MK_INLINE void hvp_pass(Work& w, const Step& st, double gamma, Prefetcher& pf, int64_t pf_step) {
    const v8* __restrict Pw = w.P;
    const v8* __restrict dV = w.dV;
    v8 rhs[S];
#pragma GCC unroll 64
    for (int t = 0; t < S; ++t) rhs[t] = splat8(0.0);
#pragma GCC unroll 1
    for (int s = 0; s < S; ++s) {
      pf.step(pf_step);
      const v8* __restrict Ps = Pw + s * SA;
      const v8 gd = gamma * st.d[s];
      v8 wa[A], pdv[A];
      for (int a = 0; a < A; ++a) {
        wa[a] = gd * w.dpi[s * A + a];
        pdv[a] = splat8(0.0);
      }
#pragma GCC unroll 64
      for (int t = 0; t < S; ++t) {
        const v8 vt = dV[t];
#pragma GCC unroll 16
        for (int a = 0; a < A; ++a) {
          v8 p = Ps[a * S + t];
          asm("" : "+v"(p));  // one load for both uses (not a memory operand of each multiply-add)
          pdv[a] += p * vt;
          rhs[t] += wa[a] * p;
        }
      }
      const v8 dVs = dV[s];
      const v8 ds = st.d[s];
      for (int a = 0; a < A; ++a) {
        const int i = s * A + a;
        const v8 dA = gamma * pdv[a] - dVs;
        w.hv[i] = ds * (w.dpi[i] * st.adv[i] + st.pi[i] * dA);
      }
    }
#pragma GCC unroll 64
    for (int t = 0; t < S; ++t) w.rhs[t] = rhs[t];
  }

  // Non-temporal output (thetas). A full group's rows of one output (8 tasks x SA doubles) are contiguous; when
  // they start on a cache line they are SA whole lines, written here with streaming stores of whole
  // lines (no line is read before it is written, and none stays in the caches). SA % 8 is 0 or 4: a
  // row starts on a line or half way through one (odd rows then straddle lines, written from the
  // upper half of one transposed chunk and the lower half of the next).
  static constexpr bool kStreamable = SA % 8 == 0 || SA % 8 == 4;

  static bool streamable(const double* dst, int64_t count) {
    return kStreamable && count == kLanes && reinterpret_cast<uintptr_t>(dst) % 64 == 0;
  }

  static MK_INLINE void stream(double* dst, v8 x) { _mm512_stream_pd(dst, reinterpret_cast<__m512d>(x)); }

  // dst[l * SA + i] = src[i][l] for the 8 lanes l (the scatter of a full group), streamed.
  static MK_INLINE void stream_rows(double* dst, const v8* src) {
    constexpr int kChunks = SA / 8;
    v8 prev[kLanes], head[kLanes];  // (SA % 8 == 4) odd rows: the last chunk, and chunk 0
    for (int c = 0; c < kChunks; ++c) {
      v8 t[kLanes];
      transpose8(reinterpret_cast<const vd*>(src + 8 * c), reinterpret_cast<vd*>(t));
      for (int l = 0; l < kLanes; ++l) {
        if (SA % 8 == 0 || l % 2 == 0) {
          stream(dst + l * SA + 8 * c, t[l]);
        } else {
          if (c == 0) {
            head[l] = t[l];
          } else {
            stream(dst + l * SA + 8 * c - 4, __builtin_shufflevector(prev[l], t[l], 4, 5, 6, 7, 8, 9, 10, 11));
          }
          prev[l] = t[l];
        }
      }
    }
    if (SA % 8 == 4) {  // the rows' last 4 elements
      const v8 zero = splat8(0.0);
      const v8 in[kLanes] = {src[SA - 4], src[SA - 3], src[SA - 2], src[SA - 1], zero, zero, zero, zero};
      v8 tail[kLanes];
      transpose8(reinterpret_cast<const vd*>(in), reinterpret_cast<vd*>(tail));
      for (int l = 0; l < kLanes; l += 2) {
        // even row l's last 4 and odd row l + 1's first 4; then odd row l + 1's last 12
        stream(dst + l * SA + SA - 4, __builtin_shufflevector(tail[l], head[l + 1], 0, 1, 2, 3, 8, 9, 10, 11));
        stream(dst + (l + 1) * SA + SA - 8,
               __builtin_shufflevector(prev[l + 1], tail[l + 1], 4, 5, 6, 7, 8, 9, 10, 11));
      }
    }
  }

  static MK_INLINE void write_rows(double* dst, const v8* src, int64_t first, int64_t B) {
    double* block = dst + first * SA;
    if (streamable(block, std::min<int64_t>(kLanes, B - first))) {
      stream_rows(block, src);
    } else {
      scatter(dst, reinterpret_cast<const vd*>(src), first, B, SA);
    }
  }

  static MK_INLINE void run(Work& w, Step* steps, v8* thetas, const double* P, const double* R, const double* init,
                            const double* theta0, int64_t B, double gamma, double alpha, int64_t K, double* meta_grad,
                            double* objective, double* thetas_out, int64_t first) {
    const int64_t count = std::min<int64_t>(kLanes, B - first);
    Prefetcher pf;
    if (first + kLanes < B) {  // the next group's inputs (this thread's next claim, unless another took it)
      const int64_t next = first + kLanes, n = std::min<int64_t>(kLanes, B - next);
      pf.add(R + next * SA, n * SA * 8, false);
      pf.add(theta0 + next * SA, n * SA * 8, false);
      pf.add(init + next * S, n * S * 8, false);
      pf.add(P + next * SA * S, n * SA * S * 8, false);
    }
    // This group's outputs, unless they are streamed (the thetas; the meta-gradient, which a caller
    // uses next, is written through the caches).
    pf.add(meta_grad + first * SA, count * SA * 8, true);
    for (int64_t k = 0; k <= K && thetas_out; ++k) {
      double* out = thetas_out + (k * B + first) * SA;
      if (!streamable(out, count)) pf.add(out, count * SA * 8, true);
    }
    const int64_t pf_step = pf.lines / (S * (2 * K + 2)) + 1;  // spread over the passes' iterations

    gather(reinterpret_cast<vd*>(w.R), R, first, B, SA);
    gather(reinterpret_cast<vd*>(w.init), init, first, B, S);
    gather(reinterpret_cast<vd*>(thetas), theta0, first, B, SA);
    const v8* __restrict Pw = w.P;
    const v8* __restrict Rw = w.R;
    gather(reinterpret_cast<vd*>(w.P), P, first, B, SA * S);
    // Step 0's policy and LU factors.
#pragma GCC unroll 1
    for (int s = 0; s < S; ++s) {
      pf.step(pf_step);
      softmax(thetas + s * A, steps[0].pi + s * A);
      form_and_eliminate<false>(s, steps[0].pi + s * A, Pw + s * SA, Rw + s * A, gamma, steps[0].lu,
                                steps[0].rinv, w.r_pi, nullptr, nullptr, nullptr);
    }
    v8 J = splat8(0.0);
    for (int64_t k = 0; k <= K; ++k) {
      Step& st = steps[k];
      solve(st.lu, st.rinv, w.r_pi, w.V);
      solve_transposed(st.lu, st.rinv, w.init, st.d);
      const v8* __restrict V = w.V;
      const v8* th = thetas + k * SA;
      v8* th_next = thetas + (k + 1) * SA;
      Step* nx = k < K ? &steps[k + 1] : nullptr;
      forward_pass(w, st, nx, th, th_next, gamma, alpha, pf, pf_step);
      if (!nx) {
        for (int s = 0; s < S; ++s) J += w.init[s] * V[s];
      }
    }
    // Reverse pass: v <- v + alpha H(theta_k) v, from v = grad J(theta_K).
    if (K > 0) {
#pragma GCC unroll 1
      for (int s = 0; s < S; ++s) hvp_direction(s, steps[K - 1], w.v, w.dpi, w.u);
    }
    for (int64_t k = K - 1; k >= 0; --k) {
      const Step& st = steps[k];
      solve(st.lu, st.rinv, w.u, w.dV);
      hvp_pass(w, st, gamma, pf, pf_step);
      v8 dd[S];
      solve_transposed(st.lu, st.rinv, w.rhs, dd);
#pragma GCC unroll 1
      for (int s = 0; s < S; ++s) {
        for (int a = 0; a < A; ++a) {
          const int i = s * A + a;
          w.v[i] += alpha * (w.hv[i] + dd[s] * st.pi[i] * st.adv[i]);
        }
        if (k > 0) hvp_direction(s, steps[k - 1], w.v, w.dpi, w.u);
      }
    }
    scatter(meta_grad, reinterpret_cast<const vd*>(w.v), first, B, SA);
    scatter(objective, reinterpret_cast<const vd*>(&J), first, B, 1);
    if (!thetas_out) return;  // the caller did not ask for theta_0 .. theta_K
    double* theta0_out = thetas_out + first * SA;  // theta_0: a copy of the group's rows of theta0
    if (streamable(theta0_out, count)) {
      const double* in = theta0 + first * SA;
      for (int m = 0; m < SA; ++m) stream(theta0_out + 8 * m, reinterpret_cast<v8>(_mm512_loadu_pd(in + 8 * m)));
    } else {
      std::memcpy(theta0_out, theta0 + first * SA, count * SA * sizeof(double));
    }
    for (int64_t k = 1; k <= K; ++k) write_rows(thetas_out + k * B * SA, thetas + k * SA, first, B);
  }
};

// Scratch memory of the calling thread, 64-byte aligned, kept between calls and grown on demand, so
// that a call does not fault its workspace in afresh (a few hundred KiB per OpenMP thread).
inline char* thread_scratch(size_t bytes) {
  struct Scratch {
    char* p = nullptr;
    size_t n = 0;
    ~Scratch() { std::free(p); }
  };
  static thread_local Scratch s;
  if (s.n < bytes) {
    std::free(s.p);
    s.n = (bytes + 63) / 64 * 64;
    s.p = static_cast<char*>(std::aligned_alloc(64, s.n));
    if (s.p == nullptr) {
      s.n = 0;
      throw std::bad_alloc();
    }
  }
  return s.p;
}

template <int S, int A>
void fixed_kernel(const double* P, const double* R, const double* init, const double* theta0, int64_t B,
                  double gamma, double alpha, int64_t K, double* meta_grad, double* objective, double* thetas,
                  int nt) {
  using F = Fixed<S, A>;
  const int64_t groups = (B + kLanes - 1) / kLanes;
  WorkClaims claims(groups, nt);
#pragma omp parallel num_threads(nt)
  {
    const size_t steps_bytes = (K + 1) * sizeof(typename F::Step);
    char* mem = thread_scratch(sizeof(typename F::Work) + steps_bytes + (K + 1) * F::SA * sizeof(v8));
    auto* w = reinterpret_cast<typename F::Work*>(mem);
    auto* steps = reinterpret_cast<typename F::Step*>(mem + sizeof(typename F::Work));
    auto* th = reinterpret_cast<v8*>(mem + sizeof(typename F::Work) + steps_bytes);
    const int t = omp_get_thread_num();
    for (int64_t gi; (gi = claims.claim(t)) >= 0;) {
      F::run(*w, steps, th, P, R, init, theta0, B, gamma, alpha, K, meta_grad, objective, thetas, gi * kLanes);
    }
    _mm_sfence();  // the streamed outputs are complete before the threads join
  }
}

#pragma GCC pop_options

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
  if (have_avx512()) return group_avx512;
  if (have_avx2()) return group_avx2;
  return group_sse2;
}

using FixedFn = void (*)(const double*, const double*, const double*, const double*, int64_t, double, double,
                         int64_t, double*, double*, double*, int);

// The fixed-size kernel for (S, A), or nullptr: more sizes can be added to the list.
FixedFn pick_fixed_kernel(int64_t S, int64_t A) {
  if (!have_avx512()) return nullptr;
  if (S == 20 && A == 5) return fixed_kernel<20, 5>;  // the gradient-bias study's MDPs
  return nullptr;
}

}  // namespace

void oracle_maml_meta_gradient_cpu(const double* P, const double* R, const double* init,
                                   const double* theta0, int64_t B, int64_t S, int64_t A,
                                   double gamma, double alpha, int64_t K, double* meta_grad,
                                   double* objective, double* thetas, int num_threads) {
  const int64_t groups = (B + kLanes - 1) / kLanes;
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, groups)));
  if (const FixedFn fixed = pick_fixed_kernel(S, A)) {
    fixed(P, R, init, theta0, B, gamma, alpha, K, meta_grad, objective, thetas, nt);
    return;
  }
  static const GroupFn group = pick_group_kernel();
  WorkClaims claims(groups, nt);
#pragma omp parallel num_threads(nt)
  {
    Workspace ws(S, A, K, gamma);
    const int t = omp_get_thread_num();
    for (int64_t gi; (gi = claims.claim(t)) >= 0;) {
      group(ws, P, R, init, theta0, B, alpha, K, meta_grad, objective, thetas, gi * kLanes);
    }
  }
}

}  // namespace metakern
