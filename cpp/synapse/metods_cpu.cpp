// CPU kernels of the MetODS dynamic-synapse op (math, memory and determinism: metods.h).
//
// One sequence is one unit of work: OpenMP spreads sequences (forward) or fixed groups of sequences
// (backward) over threads. Every N x N pass walks rows with the inner loop along a row, written as
// plain loops the compiler vectorizes; the per-sequence functions are compiled for AVX-512, AVX2+FMA
// and baseline x86-64 and picked on first use (common/cpu_features.h), so last bits may differ between
// machines of different ISA, never between runs or thread counts.
#include "synapse/metods.h"

#include "common/cpu_features.h"
#include "common/fast_math.h"
#include "common/work_claims.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace metakern {
namespace {

#define MK_ALWAYS_INLINE inline __attribute__((always_inline))
#define MK_SIMD _Pragma("omp simd")
// Short loops over inner steps inside vector loops: unrolled, or the vector loop is not vectorized.
#define MK_UNROLL _Pragma("GCC unroll 16")
#define MK_PRAGMA(x) _Pragma(#x)
#define MK_SIMD_SUM(v) MK_PRAGMA(omp simd reduction(+ : v))

constexpr int kMaxS = 16;        // Python refuses larger S (stack arrays below)
constexpr int64_t kGroups = 64;  // fixed reduction groups of the backward (metods.h)

template <typename R> MK_ALWAYS_INLINE R act(int kind, R p) {
  if (kind == static_cast<int>(SynapseActivation::Tanh)) return tanh_any(p);
  if (kind == static_cast<int>(SynapseActivation::Relu)) return p > R(0) ? p : R(0);
  return p;
}

// h = sigma(p) over n values, with the activation chosen outside the loop so that it vectorizes.
template <typename R> MK_ALWAYS_INLINE void apply_act(int kind, const R* p, R* h, int64_t n) {
  if (kind == static_cast<int>(SynapseActivation::Tanh)) {
    MK_SIMD
    for (int64_t i = 0; i < n; ++i) h[i] = act(static_cast<int>(SynapseActivation::Tanh), p[i]);
  } else if (kind == static_cast<int>(SynapseActivation::Relu)) {
    MK_SIMD
    for (int64_t i = 0; i < n; ++i) h[i] = p[i] > R(0) ? p[i] : R(0);
  } else {
    std::copy(p, p + n, h);
  }
}

// sigma'(p) given h = sigma(p).
template <typename R> MK_ALWAYS_INLINE R act_grad(int kind, R p, R h) {
  if (kind == static_cast<int>(SynapseActivation::Tanh)) return R(1) - h * h;
  if (kind == static_cast<int>(SynapseActivation::Relu)) return p > R(0) ? R(1) : R(0);
  return R(1);
}

// Per-call constants of one op: sizes and the coefficient tables. KS > 0 fixes S at compile time
// (so the short sums over inner steps unroll inside the vector loops); KS = 0 reads it at run time.
template <typename R, int KS> struct Params {
  int64_t N;
  int S_, activation;
  const R* alpha;   // [N, N]
  const R* alphaT;  // [N, N], alpha transposed
  const R* kappa;   // [S, S+1]
  const R* gamma;   // [S+1]
  const R* coef;    // [S+1, S]
  MK_ALWAYS_INLINE int S() const { return KS > 0 ? KS : S_; }
  const R* k(int s) const { return kappa + (s - 1) * (S() + 1); }  // row of inner step s
  const R* c(int s) const { return coef + s * S(); }
};

// Every N x N pass below is written in "axpy form": row i of a matrix, scaled by a per-row number,
// is added into an N-vector accumulator, so the vector loops run along rows with no horizontal
// reductions (a per-row dot product would end in a chain of dependent scalar adds that costs more
// than the row itself at N = 64). This is why the forward keeps W transposed (X = W^T: the read W x is
// then sum_k x_k X[k, :]) and the backward carries dW and dW^T, and why alpha^T is kept next to alpha.
// Rows go in blocks of RB = 4 so that each accumulator is loaded and stored once per block.
constexpr int kRowBlock = 4;

// dst = gamma[S] src + A * sum_{j<S} coef[S, j] v_j v_j^T (dst may be src); A is alpha for W and
// alpha^T for X = W^T (v_j v_j^T is symmetric).
template <typename R, int KS>
MK_ALWAYS_INLINE void write_pass(const Params<R, KS>& P, const R* A, const R* src, R* dst, const R* v) {
  const int64_t N = P.N;
  const int S = P.S();
  const R g = P.gamma[S];
  const R* cS = P.c(S);
  R d[kMaxS];
  for (int64_t i = 0; i < N; ++i) {
    for (int j = 0; j < S; ++j) d[j] = cS[j] * v[j * N + i];
    const R* Ai = A + i * N;
    const R* Si = src + i * N;
    R* Di = dst + i * N;
    MK_SIMD
    for (int64_t k = 0; k < N; ++k) {
      R z = 0;
      MK_UNROLL
      for (int j = 0; j < S; ++j) z += d[j] * v[j * N + k];
      Di[k] = g * Si[k] + Ai[k] * z;
    }
  }
}

// Forward read of inner step s over rows [k0, k0 + RB) of X and alpha^T:
//   q += sum_k x_k X[k, :],   a_j += sum_k u_j,k alpha^T[k, :]   (so q = W x, a_j = alpha u_j).
template <int RB, typename R>
MK_ALWAYS_INLINE void read_rows(int64_t N, int64_t k0, const R* X, const R* AT, const R* x, const R* u, int nj, R* q,
                                R* a) {
  R xr[RB];
  for (int r = 0; r < RB; ++r) xr[r] = x[k0 + r];
  const R* Xk = X + k0 * N;
  MK_SIMD
  for (int64_t i = 0; i < N; ++i) {
    R acc = 0;
    for (int r = 0; r < RB; ++r) acc += xr[r] * Xk[r * N + i];
    q[i] += acc;
  }
  const R* Ak = AT + k0 * N;
  for (int j = 0; j < nj; ++j) {
    R ur[RB];
    for (int r = 0; r < RB; ++r) ur[r] = u[j * N + k0 + r];
    R* aj = a + j * N;
    MK_SIMD
    for (int64_t i = 0; i < N; ++i) {
      R acc = 0;
      for (int r = 0; r < RB; ++r) acc += ur[r] * Ak[r * N + i];
      aj[i] += acc;
    }
  }
}

// One forward step in place on X = W_in^T. v: (S+1) N with v_0 filled; fills v_1..v_S and p [S N].
// tmp: (2 S + 1) N scratch.
template <typename R, int KS>
MK_ALWAYS_INLINE void step_forward(const Params<R, KS>& P, R* X, R* v, R* p, R* tmp) {
  const int64_t N = P.N;
  const int S = P.S();
  R* u = tmp;           // (S-1) N: v_j * x
  R* a = u + S * N;     // (S-1) N: alpha u_j
  R* q = a + S * N;     // N: W x
  for (int s = 1; s <= S; ++s) {
    const R* x = v + (s - 1) * N;
    const int nj = s - 1;
    for (int j = 0; j < nj; ++j) {
      const R* vj = v + j * N;
      MK_SIMD
      for (int64_t k = 0; k < N; ++k) u[j * N + k] = vj[k] * x[k];
    }
    std::fill(q, q + N, R(0));
    std::fill(a, a + nj * N, R(0));
    int64_t k0 = 0;
    for (; k0 + kRowBlock <= N; k0 += kRowBlock) read_rows<kRowBlock>(N, k0, X, P.alphaT, x, u, nj, q, a);
    for (; k0 < N; ++k0) read_rows<1>(N, k0, X, P.alphaT, x, u, nj, q, a);
    const R g = P.gamma[s - 1];
    const R* cs = P.c(s - 1);
    const R* ks = P.k(s);
    R* ps = p + (s - 1) * N;
    R* vs = v + s * N;
    MK_SIMD
    for (int64_t i = 0; i < N; ++i) {
      R pi = g * q[i];
      for (int j = 0; j < nj; ++j) pi += cs[j] * v[j * N + i] * a[j * N + i];
      ps[i] = pi;
    }
    apply_act(P.activation, ps, q, N);
    MK_SIMD
    for (int64_t i = 0; i < N; ++i) {
      R val = ks[s] * q[i];
      for (int l = 0; l < s; ++l) val += ks[l] * v[l * N + i];
      vs[i] = val;
    }
  }
  write_pass(P, P.alphaT, X, X, v);
}

// Shared-gradient accumulators of one group.
template <typename R> struct Grads {
  R* dalpha;  // [N, N]
  R* dkappa;  // [S, S+1]
  R* dgamma;  // [S+1]
  R* dcoef;   // [S+1, S]
};

// Phase 0 of the adjoint (the write W_out = gamma[S] W_in + alpha * sum_j coef[S, j] v_j v_j^T), rows
// [i0, i0 + RB), with M = alpha * dW:  z_j += sum_i v_j,i M[i, :] (= M^T v_j),
// y_j += sum_i v_j,i (alpha^T * dW^T)[i, :] (= M v_j),  g += dW * W_in (summed over rows).
template <int RB, typename R, int KS>
MK_ALWAYS_INLINE void write_adjoint_rows(const Params<R, KS>& P, int64_t i0, const R* Win, const R* dW, const R* dWT,
                                         const R* v, R* y, R* z, R* g) {
  const int64_t N = P.N;
  const int S = P.S();
  const R* A = P.alpha + i0 * N;
  const R* AT = P.alphaT + i0 * N;
  const R* D = dW + i0 * N;
  const R* DT = dWT + i0 * N;
  const R* Wr = Win + i0 * N;
  MK_SIMD
  for (int64_t k = 0; k < N; ++k) {
    R acc = 0;
    for (int r = 0; r < RB; ++r) acc += D[r * N + k] * Wr[r * N + k];
    g[k] += acc;
  }
  for (int j = 0; j < S; ++j) {
    R vr[RB];
    for (int r = 0; r < RB; ++r) vr[r] = v[j * N + i0 + r];
    R* yj = y + j * N;
    R* zj = z + j * N;
    MK_SIMD
    for (int64_t k = 0; k < N; ++k) {
      R ay = 0, az = 0;
      for (int r = 0; r < RB; ++r) {
        az += vr[r] * (A[r * N + k] * D[r * N + k]);
        ay += vr[r] * (AT[r * N + k] * DT[r * N + k]);
      }
      yj[k] += ay;
      zj[k] += az;
    }
  }
}

// Inner step s >= 2 of the adjoint, rows [i0, i0 + RB): r += sum_i dp_i W_in[i, :] (= W_in^T dp),
// a_j += sum_i u_j,i alpha^T[i, :] (= alpha u_j), b_j += sum_i (v_j,i dp_i) alpha[i, :] (= alpha^T (v_j * dp)).
template <int RB, typename R, int KS>
MK_ALWAYS_INLINE void read_adjoint_rows(const Params<R, KS>& P, int64_t i0, int nj, const R* Win, const R* dp,
                                        const R* v, const R* u, R* r, R* a, R* b) {
  const int64_t N = P.N;
  const R* Wr = Win + i0 * N;
  const R* A = P.alpha + i0 * N;
  const R* AT = P.alphaT + i0 * N;
  R dpr[RB];
  for (int q = 0; q < RB; ++q) dpr[q] = dp[i0 + q];
  MK_SIMD
  for (int64_t k = 0; k < N; ++k) {
    R acc = 0;
    for (int q = 0; q < RB; ++q) acc += dpr[q] * Wr[q * N + k];
    r[k] += acc;
  }
  for (int j = 0; j < nj; ++j) {
    R ur[RB], wr[RB];
    for (int q = 0; q < RB; ++q) {
      ur[q] = u[j * N + i0 + q];
      wr[q] = v[j * N + i0 + q] * dpr[q];
    }
    R* aj = a + j * N;
    R* bj = b + j * N;
    MK_SIMD
    for (int64_t k = 0; k < N; ++k) {
      R sa = 0, sb = 0;
      for (int q = 0; q < RB; ++q) {
        sa += ur[q] * AT[q * N + k];
        sb += wr[q] * A[q * N + k];
      }
      aj[k] += sa;
      bj[k] += sb;
    }
  }
}

// Adjoint of one step. Win: the step's input matrix (W orientation); v: (S+1) N (all filled); p: S N;
// dvS: N (or null: zero); dW, dWT: in, the gradient w.r.t. the step's W_out and its transpose; out,
// w.r.t. its W_in. Writes dv_0 to dv0 and accumulates the shared gradients into G.
// work: step_work(S) N scratch.
template <typename R, int KS>
MK_ALWAYS_INLINE void step_backward(const Params<R, KS>& P, const R* Win, const R* v, const R* p, const R* dvS, R* dW,
                                    R* dWT, R* dv0, const Grads<R>& G, R* work) {
  const int64_t N = P.N;
  const int S = P.S();
  const int npairs = S * (S - 1) / 2;
  R* dv = work;              // (S+1) N
  R* dp = dv + (S + 1) * N;  // S N
  R* y = dp + S * N;         // S N: M v_j (the write's adjoint)
  R* z = y + S * N;          // S N: M^T v_j
  R* a = z + S * N;          // S N: alpha u_j (an inner step's adjoint)
  R* b = a + S * N;          // S N: alpha^T (v_j * dp)
  R* u = b + S * N;          // npairs N: v_j * v_{s-1} for s = 2..S, j < s - 1
  R* r = u + npairs * N;     // N
  R* g = r + N;              // N
  std::fill(dv, dv + (S + 1) * N, R(0));
  if (dvS) std::copy(dvS, dvS + N, dv + S * N);
  auto pair_index = [](int s, int j) { return (s - 1) * (s - 2) / 2 + j; };
  for (int s = 2; s <= S; ++s) {
    for (int j = 0; j < s - 1; ++j) {
      R* uj = u + pair_index(s, j) * N;
      const R* vj = v + j * N;
      const R* x = v + (s - 1) * N;
      MK_SIMD
      for (int64_t k = 0; k < N; ++k) uj[k] = vj[k] * x[k];
    }
  }

  // Inner step s, before its read's adjoint: v_s = sum_{l<s} kappa v_l + kappa[s-1, s] sigma(p_s) gives
  // dkappa, dv_l (l < s) and dp_s. Needs dv_s complete.
  auto inner_head = [&](int s) {
    const R* ks = P.k(s);
    R* dks = G.dkappa + (s - 1) * (S + 1);
    const R* dvs = dv + s * N;
    const R* ps = p + (s - 1) * N;
    R* dps = dp + (s - 1) * N;
    apply_act(P.activation, ps, g, N);
    R acc = 0;
    MK_SIMD_SUM(acc)
    for (int64_t i = 0; i < N; ++i) {
      acc += dvs[i] * g[i];
      dps[i] = ks[s] * dvs[i] * act_grad(P.activation, ps[i], g[i]);
    }
    dks[s] += acc;
    for (int l = 0; l < s; ++l) {
      const R* vl = v + l * N;
      R* dvl = dv + l * N;
      R dk = 0;
      MK_SIMD_SUM(dk)
      for (int64_t k = 0; k < N; ++k) {
        dk += dvs[k] * vl[k];
        dvl[k] += ks[l] * dvs[k];
      }
      dks[l] += dk;
    }
  };
  // The read pass of inner step s >= 2 over rows [i0, i0 + RB) (r, a, b zeroed beforehand).
  auto inner_rows = [&](int s, int64_t i0, auto rb) {
    constexpr int RB = decltype(rb)::value;
    read_adjoint_rows<RB>(P, i0, s - 1, Win, dp + (s - 1) * N, v, u + pair_index(s, 0) * N, r, a, b);
  };
  // After the read pass of step s >= 2: p_s = gamma[s-1] W_in x + sum_{j<s-1} coef[s-1, j] v_j * a_j.
  auto inner_tail = [&](int s) {
    const int nj = s - 1;
    const R* x = v + (s - 1) * N;
    const R* dps = dp + (s - 1) * N;
    const R gs = P.gamma[s - 1];
    R* dx = dv + (s - 1) * N;
    R dgs = 0;
    MK_SIMD_SUM(dgs)
    for (int64_t k = 0; k < N; ++k) {
      dgs += r[k] * x[k];
      dx[k] += gs * r[k];
    }
    G.dgamma[s - 1] += dgs;
    const R* cs = P.c(s - 1);
    for (int j = 0; j < nj; ++j) {
      const R* vj = v + j * N;
      const R* aj = a + j * N;
      const R* bj = b + j * N;
      R* dvj = dv + j * N;
      const R c = cs[j];
      R dc = 0;
      MK_SIMD_SUM(dc)
      for (int64_t k = 0; k < N; ++k) {
        dc += dps[k] * vj[k] * aj[k];
        dvj[k] += c * (dps[k] * aj[k] + x[k] * bj[k]);
        dx[k] += c * vj[k] * bj[k];
      }
      G.dcoef[(s - 1) * S + j] += dc;
    }
  };
  auto zero_inner = [&](int s) {
    std::fill(r, r + N, R(0));
    std::fill(a, a + (s - 1) * N, R(0));
    std::fill(b, b + (s - 1) * N, R(0));
  };
  using One = std::integral_constant<int, 1>;
  using Block = std::integral_constant<int, kRowBlock>;

  // dv_S is complete from the start (the write only reaches v_0..v_{S-1}), so inner step S's read
  // pass shares one row loop with the adjoint of the write W_out = gamma[S] W_in + alpha * sum_j
  // coef[S, j] v_j v_j^T (M = alpha * dW): both read W_in and alpha rows once.
  inner_head(S);
  const R* cS = P.c(S);
  {
    std::fill(y, y + S * N, R(0));
    std::fill(z, z + S * N, R(0));
    std::fill(g, g + N, R(0));
    if (S >= 2) zero_inner(S);
    int64_t i0 = 0;
    for (; i0 + kRowBlock <= N; i0 += kRowBlock) {
      write_adjoint_rows<kRowBlock>(P, i0, Win, dW, dWT, v, y, z, g);
      if (S >= 2) inner_rows(S, i0, Block{});
    }
    for (; i0 < N; ++i0) {
      write_adjoint_rows<1>(P, i0, Win, dW, dWT, v, y, z, g);
      if (S >= 2) inner_rows(S, i0, One{});
    }
    R dg = 0;
    for (int64_t k = 0; k < N; ++k) dg += g[k];
    G.dgamma[S] += dg;
    for (int j = 0; j < S; ++j) {
      const R* vj = v + j * N;
      const R* yj = y + j * N;
      const R* zj = z + j * N;
      R* dvj = dv + j * N;
      R dc = 0;
      MK_SIMD_SUM(dc)
      for (int64_t k = 0; k < N; ++k) {
        dc += vj[k] * yj[k];
        dvj[k] += cS[j] * (yj[k] + zj[k]);
      }
      G.dcoef[S * S + j] += dc;
    }
    if (S >= 2) inner_tail(S);
  }

  // The other inner steps, last first. Step s = 1 has no alpha term: its read (r = W_in^T dp_1) is
  // fused into the final pass below.
  for (int s = S - 1; s >= 1; --s) {
    inner_head(s);
    if (s == 1) break;
    zero_inner(s);
    int64_t i0 = 0;
    for (; i0 + kRowBlock <= N; i0 += kRowBlock) inner_rows(s, i0, Block{});
    for (; i0 < N; ++i0) inner_rows(s, i0, One{});
    inner_tail(s);
  }

  // One pass for the rest, row i:
  //   r        += dp_1,i W_in[i, :]                    (step s = 1's read; dv_0 += r)
  //   dalpha_i += dW_i * sum_j coef[S, j] v_j,i v_j + sum_{s, j<s-1} coef[s-1, j] v_j,i dp_s,i (v_j * v_{s-1})
  //   dW_i      = gamma[S] dW_i + sum_s gamma[s-1] dp_s,i v_{s-1}
  //   dW^T_i    = gamma[S] dW^T_i + sum_s gamma[s-1] v_{s-1},i dp_s
  const R gS = P.gamma[S];
  std::fill(r, r + N, R(0));
  for (int64_t i = 0; i < N; ++i) {
    R e[kMaxS], h[kMaxS], ht[kMaxS], f[kMaxS * (kMaxS - 1) / 2];
    for (int j = 0; j < S; ++j) e[j] = cS[j] * v[j * N + i];
    for (int s = 1; s <= S; ++s) {
      h[s - 1] = P.gamma[s - 1] * dp[(s - 1) * N + i];
      ht[s - 1] = P.gamma[s - 1] * v[(s - 1) * N + i];
    }
    for (int s = 2; s <= S; ++s) {
      const R* cs = P.c(s - 1);
      for (int j = 0; j < s - 1; ++j) f[pair_index(s, j)] = cs[j] * v[j * N + i] * dp[(s - 1) * N + i];
    }
    const R dp1 = dp[i];
    const R* Wi = Win + i * N;
    R* dAi = G.dalpha + i * N;
    R* dWi = dW + i * N;
    R* dWTi = dWT + i * N;
    MK_SIMD
    for (int64_t k = 0; k < N; ++k) {
      R zc = 0, zp = 0, zw = 0, zt = 0;
      MK_UNROLL
      for (int j = 0; j < S; ++j) zc += e[j] * v[j * N + k];
      MK_UNROLL
      for (int q = 0; q < npairs; ++q) zp += f[q] * u[q * N + k];
      MK_UNROLL
      for (int s = 0; s < S; ++s) {
        zw += h[s] * v[s * N + k];
        zt += ht[s] * dp[s * N + k];
      }
      r[k] += dp1 * Wi[k];
      dAi[k] += dWi[k] * zc + zp;
      dWi[k] = gS * dWi[k] + zw;
      dWTi[k] = gS * dWTi[k] + zt;
    }
  }
  const R g0 = P.gamma[0];
  R dg0 = 0;
  MK_SIMD_SUM(dg0)
  for (int64_t k = 0; k < N; ++k) {
    dg0 += r[k] * v[k];
    dv0[k] = dv[k] + g0 * r[k];
  }
  G.dgamma[0] += dg0;
}

int64_t step_work(int S) { return 6 * S + 3 + S * (S - 1) / 2; }  // vectors of N in step_backward

template <typename R> MK_ALWAYS_INLINE void transpose(const R* src, R* dst, int64_t N) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t k = 0; k < N; ++k) dst[k * N + i] = src[i * N + k];
}

template <typename R> struct Call {
  const MetodsArgs& a;
  const R* alpha;
  const R* alphaT;
  const R* kappa;
  const R* gamma;
  const R* coef;
  const R* v0;
  const R* W0;
  const uint8_t* reset;
  template <int KS> Params<R, KS> params() const {
    return Params<R, KS>{a.N, a.S, a.activation, alpha, alphaT, kappa, gamma, coef};
  }
  const R* w0(int64_t b) const { return W0 + (a.w0_batched ? b * a.N * a.N : 0); }
  bool resets(int64_t b, int64_t t) const { return t > 0 && reset && reset[b * a.T + t]; }
};

// Forward over sequence b. V: (S+1) N, Pv: S N, tmp: (2 S + 1) N, X: N^2 scratch.
template <typename R, int KS>
MK_ALWAYS_INLINE void forward_sequence(const Call<R>& c, int64_t b, R* vS, R* WT, R* vs, R* ps, R* ckpt, R* V,
                                       R* Pv, R* tmp, R* X) {
  const Params<R, KS> P = c.template params<KS>();
  const int64_t N = P.N, T = c.a.T, NN = N * N, C = c.a.checkpoint_every;
  const int S = P.S();
  transpose(c.w0(b), X, N);
  for (int64_t t = 0; t < T; ++t) {
    if (c.resets(b, t)) transpose(c.w0(b), X, N);
    if (vs && t > 0 && t % C == 0) transpose(X, ckpt + (b * ((T + C - 1) / C - 1) + t / C - 1) * NN, N);
    const int64_t bt = b * T + t;
    std::copy(c.v0 + bt * N, c.v0 + (bt + 1) * N, V);
    step_forward(P, X, V, Pv, tmp);
    std::copy(V + S * N, V + (S + 1) * N, vS + bt * N);
    if (vs) {
      std::copy(V + N, V + (S + 1) * N, vs + bt * S * N);
      std::copy(Pv, Pv + S * N, ps + bt * S * N);
    }
  }
  transpose(X, WT + b * NN, N);
}

template <typename R> struct BackwardCall {
  const Call<R>& c;
  const R* gvS;
  const R* gWT;
  const R* vs;
  const R* ps;
  const R* ckpt;
  R* dv0;
  R* dW0;  // dW0 [B, N, N] when W0 is batched (else null: accumulated per group)
};

// Assembles v_0..v_S of step t: v_0 from the input, v_1..v_S saved by the forward.
template <typename R> MK_ALWAYS_INLINE void load_vectors(const BackwardCall<R>& k, int64_t b, int64_t t, R* V) {
  const int64_t N = k.c.a.N, bt = b * k.c.a.T + t;
  const int S = k.c.a.S;
  std::copy(k.c.v0 + bt * N, k.c.v0 + (bt + 1) * N, V);
  std::copy(k.vs + bt * S * N, k.vs + (bt + 1) * S * N, V + N);
}


// Sub-checkpoint stride inside a segment of C steps: a segment of up to kSingleLevel steps is
// recomputed in one go (one write pass per step, C matrices of scratch); a longer one (a user asking
// for few checkpoints) first recomputes every C2-th matrix, then each sub-segment (two passes per
// step, ceil(C / C2) + C2 matrices).
constexpr int64_t kSingleLevel = 64;
int64_t sub_stride(int64_t C) {
  return C <= kSingleLevel ? C : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(C))));
}

// Backward over sequence b, accumulating shared gradients into G (and dW0 of a shared W0 into dW0g).
// scratch: (ceil(C / C2) + C2 + 2) N^2 + (S+1) N + step_work(S) N.
template <typename R, int KS>
MK_ALWAYS_INLINE void backward_sequence(const BackwardCall<R>& k, int64_t b, const Grads<R>& G, R* dW0g, R* scratch) {
  const Call<R>& c = k.c;
  const Params<R, KS> P = c.template params<KS>();
  const int64_t N = P.N, T = c.a.T, NN = N * N, C = c.a.checkpoint_every;
  const int S = P.S();
  const int64_t C2 = sub_stride(C);
  const int64_t nsub_max = (C + C2 - 1) / C2;
  const int64_t K = (T + C - 1) / C;
  R* sub = scratch;
  R* seg = sub + nsub_max * NN;
  R* dW = seg + C2 * NN;
  R* dWT = dW + NN;
  R* V = dWT + NN;
  R* work = V + (S + 1) * N;
  if (k.gWT) {
    std::copy(k.gWT + b * NN, k.gWT + (b + 1) * NN, dW);
    transpose(dW, dWT, N);
  } else {
    std::fill(dW, dW + NN, R(0));
    std::fill(dWT, dWT + NN, R(0));
  }
  R* dW0b = k.dW0 ? k.dW0 + b * NN : dW0g;
  if (k.dW0) std::fill(dW0b, dW0b + NN, R(0));
  // W_in of step t + 1 from W_in of step t (into dst).
  auto advance = [&](const R* src, R* dst, int64_t t) {
    if (c.resets(b, t + 1)) {
      std::copy(c.w0(b), c.w0(b) + NN, dst);
      return;
    }
    load_vectors(k, b, t, V);
    write_pass(P, P.alpha, src, dst, V);
  };
  for (int64_t seg_i = K - 1; seg_i >= 0; --seg_i) {
    const int64_t t0 = seg_i * C, t1 = std::min(T, t0 + C);
    const R* start = seg_i == 0 ? c.w0(b) : k.ckpt + (b * (K - 1) + seg_i - 1) * NN;
    const int64_t nsub = (t1 - t0 + C2 - 1) / C2;
    std::copy(start, start + NN, sub);
    for (int64_t m = 1; m < nsub; ++m) {
      R* dst = sub + m * NN;
      std::copy(sub + (m - 1) * NN, sub + m * NN, dst);
      for (int64_t t = t0 + (m - 1) * C2; t < t0 + m * C2; ++t) advance(dst, dst, t);
    }
    for (int64_t m = nsub - 1; m >= 0; --m) {
      const int64_t ta = t0 + m * C2, tb = std::min(t1, ta + C2);
      std::copy(sub + m * NN, sub + (m + 1) * NN, seg);
      for (int64_t t = ta; t + 1 < tb; ++t) advance(seg + (t - ta) * NN, seg + (t - ta + 1) * NN, t);
      for (int64_t t = tb - 1; t >= ta; --t) {
        load_vectors(k, b, t, V);
        const int64_t bt = b * T + t;
        step_backward(P, seg + (t - ta) * NN, V, k.ps + bt * S * N, k.gvS ? k.gvS + bt * N : nullptr, dW,
                      dWT, k.dv0 + bt * N, G, work);
        if (t == 0 || c.resets(b, t)) {
          for (int64_t e = 0; e < NN; ++e) dW0b[e] += dW[e];
          std::fill(dW, dW + NN, R(0));
          std::fill(dWT, dWT + NN, R(0));
        }
      }
    }
  }
}

// The per-sequence work, compiled once per ISA (see the file comment) and per common S; the call
// takes the variant of isa_level() (common/cpu_features.h: the CPU's, or the one METAKERN_MAX_ISA caps
// it to, so that the tests reach every variant on one machine).
#define MK_SWITCH_S(S, CALL) \
  switch (S) {               \
    case 1: CALL(1); break;  \
    case 2: CALL(2); break;  \
    case 3: CALL(3); break;  \
    case 4: CALL(4); break;  \
    default: CALL(0); break; \
  }

#define MK_SEQUENCE_VARIANT(R, SUFFIX, ATTR)                                                                    \
  ATTR void forward_sequence_##SUFFIX(const Call<R>& c, int64_t b, R* vS, R* WT, R* vs, R* ps, R* ckpt, R* V, \
                                      R* Pv, R* tmp, R* X) {                                                   \
    using Real = R;                                                                                            \
    MK_SWITCH_S(c.a.S, MK_FWD_CALL)                                                                            \
  }                                                                                                            \
  ATTR void backward_sequence_##SUFFIX(const BackwardCall<R>& k, int64_t b, const Grads<R>& G, R* dW0g,       \
                                       R* scratch) {                                                           \
    using Real = R;                                                                                            \
    MK_SWITCH_S(k.c.a.S, MK_BWD_CALL)                                                                          \
  }
#define MK_SEQUENCE_FUNCTIONS(R, SUFFIX)                                                                          \
  MK_SEQUENCE_VARIANT(R, SUFFIX##_v4, METAKERN_ISA_V4)                                                            \
  MK_SEQUENCE_VARIANT(R, SUFFIX##_v3, METAKERN_ISA_V3)                                                            \
  MK_SEQUENCE_VARIANT(R, SUFFIX##_v1, METAKERN_ISA_V1)                                                            \
  void forward_sequence_any(const Call<R>& c, int64_t b, R* vS, R* WT, R* vs, R* ps, R* ckpt, R* V, R* Pv,        \
                            R* tmp, R* X) {                                                                       \
    static const auto fn = METAKERN_ISA_PICK(forward_sequence_##SUFFIX);                                          \
    fn(c, b, vS, WT, vs, ps, ckpt, V, Pv, tmp, X);                                                                \
  }                                                                                                               \
  void backward_sequence_any(const BackwardCall<R>& k, int64_t b, const Grads<R>& G, R* dW0g, R* scratch) {      \
    static const auto fn = METAKERN_ISA_PICK(backward_sequence_##SUFFIX);                                         \
    fn(k, b, G, dW0g, scratch);                                                                                   \
  }
#define MK_FWD_CALL(KS) forward_sequence<Real, KS>(c, b, vS, WT, vs, ps, ckpt, V, Pv, tmp, X)
#define MK_BWD_CALL(KS) backward_sequence<Real, KS>(k, b, G, dW0g, scratch)
MK_SEQUENCE_FUNCTIONS(float, f32)
MK_SEQUENCE_FUNCTIONS(double, f64)
#undef MK_FWD_CALL
#undef MK_BWD_CALL
#undef MK_SEQUENCE_FUNCTIONS
#undef MK_SEQUENCE_VARIANT
#undef MK_SWITCH_S

// Threads for a call: one below ~2^18 multiply-adds (a thread team's start and barrier cost more than
// it saves, and collapse when another process holds a core: the acting step at small B).
constexpr int64_t kSerialBelow = 1 << 18;
int team(const MetodsArgs& a, int64_t units) {
  if (a.B * a.T * a.N * a.N * a.S < kSerialBelow) return 1;
  const int nt = a.num_threads > 0 ? a.num_threads : omp_get_max_threads();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, units)));
}

void check(const MetodsArgs& a) {
  if (a.B <= 0 || a.T <= 0 || a.N <= 0 || a.S <= 0 || a.S > kMaxS || a.checkpoint_every <= 0 || a.activation < 0 ||
      a.activation > 2) {
    throw std::invalid_argument("metakern: metods: bad sizes (B, T, N, checkpoint_every >= 1; 1 <= S <= 16)");
  }
}

// alphaT: storage for alpha transposed (filled here).
template <typename R>
Call<R> make_call(const MetodsArgs& a, const void* v0, const void* W0, const void* alpha, const void* kappa,
                  const void* gamma, const void* coef, const uint8_t* reset, std::vector<R>& alphaT) {
  alphaT.resize(static_cast<size_t>(a.N * a.N));
  transpose(static_cast<const R*>(alpha), alphaT.data(), a.N);
  return Call<R>{a,
                 static_cast<const R*>(alpha),
                 alphaT.data(),
                 static_cast<const R*>(kappa),
                 static_cast<const R*>(gamma),
                 static_cast<const R*>(coef),
                 static_cast<const R*>(v0),
                 static_cast<const R*>(W0),
                 reset};
}

template <typename R>
void forward(const MetodsArgs& a, const void* v0, const void* W0, const void* alpha, const void* kappa,
             const void* gamma, const void* coef, const uint8_t* reset, void* vS, void* WT, void* vs, void* ps,
             void* ckpt) {
  std::vector<R> alphaT;
  const Call<R> c = make_call<R>(a, v0, W0, alpha, kappa, gamma, coef, reset, alphaT);
  const int64_t N = a.N, S = a.S;
  const int threads = team(a, a.B);
  WorkClaims claims(a.B, threads);  // static ranges, with stealing from a slowed thread
#pragma omp parallel num_threads(threads)
  {
    std::vector<R> buf(static_cast<size_t>((4 * S + 2) * N + N * N));
    R* V = buf.data();
    R* Pv = V + (S + 1) * N;
    R* tmp = Pv + S * N;
    R* X = tmp + (2 * S + 1) * N;
    const int t = omp_get_thread_num();
    for (int64_t b; (b = claims.claim(t)) >= 0;) {
      forward_sequence_any(c, b, static_cast<R*>(vS), static_cast<R*>(WT), static_cast<R*>(vs),
                           static_cast<R*>(ps), static_cast<R*>(ckpt), V, Pv, tmp, X);
    }
  }
}

template <typename R>
void backward(const MetodsArgs& a, const void* gvS, const void* gWT, const void* v0, const void* W0, const void* alpha,
              const void* kappa, const void* gamma, const void* coef, const uint8_t* reset, const void* vs,
              const void* ps, const void* ckpt, void* dv0, void* dW0, void* dalpha, void* dkappa, void* dgamma,
              void* dcoef) {
  std::vector<R> alphaT;
  const Call<R> c = make_call<R>(a, v0, W0, alpha, kappa, gamma, coef, reset, alphaT);
  const BackwardCall<R> k{c,
                          static_cast<const R*>(gvS),
                          static_cast<const R*>(gWT),
                          static_cast<const R*>(vs),
                          static_cast<const R*>(ps),
                          static_cast<const R*>(ckpt),
                          static_cast<R*>(dv0),
                          a.w0_batched ? static_cast<R*>(dW0) : nullptr};
  const int64_t N = a.N, NN = N * N, S = a.S, C = a.checkpoint_every;
  const int64_t ns = S * (S + 1) + (S + 1) + (S + 1) * S;  // kappa, gamma, coef
  const int64_t G = std::min<int64_t>(a.B, kGroups);
  const bool shared_w0 = !a.w0_batched;
  const int64_t per_group = NN * (shared_w0 ? 2 : 1) + ns;
  std::vector<R> acc(static_cast<size_t>(G * per_group), R(0));
  const int64_t C2 = sub_stride(C);
  const int64_t scratch = ((C + C2 - 1) / C2 + C2 + 2) * NN + (S + 1) * N + step_work(a.S) * N;
#pragma omp parallel num_threads(team(a, G))
  {
    std::vector<R> buf(static_cast<size_t>(scratch));
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < G; ++g) {
      R* base = acc.data() + g * per_group;
      R* dW0g = shared_w0 ? base + NN : nullptr;
      R* sc = base + NN * (shared_w0 ? 2 : 1);
      const Grads<R> grads{base, sc, sc + S * (S + 1), sc + S * (S + 1) + (S + 1)};
      for (int64_t b = g * a.B / G; b < (g + 1) * a.B / G; ++b) backward_sequence_any(k, b, grads, dW0g, buf.data());
    }
  }
  // Groups in group order: the sums never depend on the thread count.
  auto reduce = [&](int64_t offset, int64_t n, R* out) {
#pragma omp parallel for num_threads(team(a, n / 4096 + 1)) schedule(static)
    for (int64_t e = 0; e < n; ++e) {
      R s = 0;
      for (int64_t g = 0; g < G; ++g) s += acc[g * per_group + offset + e];
      out[e] = s;
    }
  };
  reduce(0, NN, static_cast<R*>(dalpha));
  if (shared_w0) reduce(NN, NN, static_cast<R*>(dW0));
  const int64_t so = NN * (shared_w0 ? 2 : 1);
  reduce(so, S * (S + 1), static_cast<R*>(dkappa));
  reduce(so + S * (S + 1), S + 1, static_cast<R*>(dgamma));
  reduce(so + S * (S + 1) + S + 1, (S + 1) * S, static_cast<R*>(dcoef));
}

}  // namespace

void metods_forward_cpu(DType dt, const MetodsArgs& a, const void* v0, const void* W0, const void* alpha,
                        const void* kappa, const void* gamma, const void* coef, const uint8_t* reset, void* vS,
                        void* WT, void* vs, void* ps, void* ckpt) {
  check(a);
  if (dt == DType::Float32) {
    forward<float>(a, v0, W0, alpha, kappa, gamma, coef, reset, vS, WT, vs, ps, ckpt);
  } else if (dt == DType::Float64) {
    forward<double>(a, v0, W0, alpha, kappa, gamma, coef, reset, vS, WT, vs, ps, ckpt);
  } else {
    throw std::invalid_argument("metakern: metods computes in float32 or float64");
  }
}

void metods_backward_cpu(DType dt, const MetodsArgs& a, const void* gvS, const void* gWT, const void* v0,
                         const void* W0, const void* alpha, const void* kappa, const void* gamma, const void* coef,
                         const uint8_t* reset, const void* vs, const void* ps, const void* ckpt, void* dv0, void* dW0,
                         void* dalpha, void* dkappa, void* dgamma, void* dcoef) {
  check(a);
  if (dt == DType::Float32) {
    backward<float>(a, gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, dv0, dW0, dalpha, dkappa,
                    dgamma, dcoef);
  } else if (dt == DType::Float64) {
    backward<double>(a, gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, dv0, dW0, dalpha, dkappa,
                     dgamma, dcoef);
  } else {
    throw std::invalid_argument("metakern: metods computes in float32 or float64");
  }
}

}  // namespace metakern
